//! The fuzz targets' committed corpus (fuzz/corpus/<target>), replayed
//! through the same checks in the normal test run: every input libFuzzer
//! kept stays a regression test without cargo-fuzz or a nightly toolchain.
//! `scripts/fuzz.sh` is what explores further.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} is empty", dir.display());
    inputs
}

/// Runs `check` on every input, naming the one that fails.
fn replay(target: &str, check: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    for (path, data) in corpus(target) {
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{target}: {} fails (see the panic above)", path.display());
        }
    }
}

#[test]
fn spec_parse_corpus() {
    replay("spec_parse", checks::spec_parse);
}

#[test]
fn name_validate_corpus() {
    replay("name_validate", checks::name_validate);
}

#[test]
fn path_resolve_corpus() {
    let base = tempfile::tempdir().unwrap();
    let files = checks::path_resolve_root(base.path());
    replay("path_resolve", |data| checks::path_resolve(&files, data));
}
