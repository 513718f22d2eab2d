//! `bitnet-tests`: parity tests of the whole model against fixtures written by
//! `tests/fixtures/make_fixtures.py`, and helpers to read those fixtures.
