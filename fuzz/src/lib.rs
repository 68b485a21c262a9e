//! The fuzz targets' bodies. They live in `targets.rs`, which `tests/fuzz_corpus.rs` includes
//! too, so the committed corpus is replayed through exactly the code that was fuzzed.

#[path = "targets.rs"]
pub mod targets;
