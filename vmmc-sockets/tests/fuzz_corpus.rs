//! Replays the `ring` fuzz corpus on the stable toolchain.

use std::path::Path;

#[test]
fn ring_corpus_replays_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ring");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        vmmc_sockets::fuzzing::ring_ops(&data);
        n += 1;
    }
    assert!(n >= 6, "the corpus in {} is missing", dir.display());
}
