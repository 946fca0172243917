//! Transfer paths (see `checks::path_resolve`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcp::files::FileRoot;

fn root() -> &'static FileRoot {
    static ROOT: OnceLock<FileRoot> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("mcp-fuzz-{}", std::process::id()));
        checks::path_resolve_root(&base)
    })
}

fuzz_target!(|data: &[u8]| checks::path_resolve(root(), data));
