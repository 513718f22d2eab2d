//! `bitnet-coordinator`: tokenizer, generation driver and the command line.
