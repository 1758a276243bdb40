//! Every committed fuzz corpus input (`fuzz/corpus/<target>/`), seeds and
//! the inputs of fixed crashes alike, through the same checks the fuzz
//! targets run (`fuzz/src/lib.rs`), on stable Rust: a regression found by
//! fuzzing stays fixed without libFuzzer or nightly.

#[path = "../../fuzz/src/lib.rs"]
#[expect(
    unreachable_pub,
    reason = "the fuzz crate's public entry points, compiled here as a module"
)]
mod harness;

use std::path::Path;

#[test]
fn every_corpus_input_passes_its_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, run) in harness::TARGETS {
        let dir = corpus.join(target);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{}: no seed inputs", dir.display());
        for input in inputs {
            let data = std::fs::read(&input).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
            if let Err(panic) = std::panic::catch_unwind(|| run(&data)) {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("panic");
                panic!("{target} on {}: {why}", input.display());
            }
        }
    }
    harness::remove_scratch_files();
}
