//! Replays every committed fuzz input (fuzz/corpus/<target>/) through the
//! fuzz target bodies, on stable Rust and without libFuzzer, so a crash a
//! fuzzer once found stays fixed. `cargo xtask fuzz` adds to the corpus;
//! `cargo run -p pmtu-tests --example write_fuzz_seeds` rewrites the seeds.

use std::{fs, path::PathBuf};

use pmtu_tests::fuzz::TARGETS;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

#[test]
fn every_corpus_input_runs_clean() {
    for (name, body) in TARGETS {
        let dir = corpus_dir(name);
        let inputs: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(inputs.len() >= 3, "{name}: only {} corpus inputs in {}", inputs.len(), dir.display());
        for input in inputs {
            let data = fs::read(&input).unwrap();
            if std::panic::catch_unwind(|| body(&data)).is_err() {
                panic!("{name} panicked on {}", input.display());
            }
        }
    }
}
