//! Cross-service scenarios live in `tests/it/`; this crate has no library code of its own.
#![forbid(unsafe_code)]
