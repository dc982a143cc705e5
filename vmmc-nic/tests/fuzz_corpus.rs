//! Replays the `tcp_frame` fuzz corpus, so every input the fuzzer ever kept (and every crash
//! it found, once fixed and added) stays a regression test without nightly or cargo-fuzz.

use std::path::Path;

#[test]
fn tcp_frame_corpus_replays_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/tcp_frame");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 16,
        "the corpus in {} is missing",
        dir.display()
    );
    for path in inputs {
        let data = std::fs::read(&path).unwrap();
        vmmc_nic::fuzzing::tcp_frames(&data);
        vmmc_nic::fuzzing::tcp_frames_after_import(&data);
    }
}
