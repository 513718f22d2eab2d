//! `bitnet-worker`: one tensor-parallel rank (today: the whole model on one rank).
