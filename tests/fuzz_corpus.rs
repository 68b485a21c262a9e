//! Replays the committed fuzzing corpus (`fuzz/corpus/<target>/`, kept minimal by
//! `FUZZ_MINIMIZE=1 make fuzz`) through the very functions libFuzzer drove, so every input that
//! once found new code, or crashed it, keeps being checked by `make test` without libFuzzer.

#[path = "../fuzz/src/targets.rs"]
mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: the corpus is empty", dir.display());
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("a corpus file");
            catch_unwind(AssertUnwindSafe(|| run(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: these inputs panic: {failed:#?}"
    );
}

#[test]
fn preprocess_corpus_never_panics() {
    replay("preprocess", targets::preprocess);
}

#[test]
fn multipart_corpus_never_panics() {
    replay("multipart", targets::multipart);
}

#[test]
fn token_corpus_never_panics() {
    replay("token", targets::token);
}

#[test]
fn users_corpus_never_panics() {
    replay("users", targets::users);
}

#[test]
fn weights_corpus_never_panics() {
    replay("weights", targets::weights);
}
