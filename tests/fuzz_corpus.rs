//! Replays every saved fuzzing input through the fuzz targets' bodies (`jpki_access::fuzzing`), so `cargo test`
//! guards the corpus without the fuzzer: `fuzz/corpus/<target>/*` (minimised by `cargo fuzz cmin`) and
//! `fuzz/regressions/<target>/*` (inputs that once broke a property; kept whatever their coverage). See FUZZING.md.
#![allow(clippy::unwrap_used, clippy::panic)]

use jpki_access::fuzzing::TARGETS;
use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

fn replay(folder: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(folder);
    let mut total = 0;
    for (name, target) in TARGETS {
        for file in inputs(&root.join(name)) {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} broke a property (replay: cargo fuzz run {name} {0})", file.display());
            total += 1;
        }
    }
    total
}

#[test]
fn corpus_replays_without_a_broken_property() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, _) in TARGETS {
        assert!(!inputs(&root.join(name)).is_empty(), "fuzz/corpus/{name} is empty");
    }
    assert!(replay("corpus") > 0);
}

#[test]
fn regressions_replay_without_a_broken_property() {
    replay("regressions");
}
