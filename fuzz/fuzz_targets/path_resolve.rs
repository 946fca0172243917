//! Transfer paths: whatever the client sends, a pull only ever opens a file
//! inside the service directory. The tree holds a symlink to /etc, one that
//! climbs out with `..`, one to an absolute path and one that stays inside;
//! a file next to the service directory plays the secret.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcp::files::{FileRoot, FilesConfig};

const INSIDE: [&str; 2] = ["inside-a\n", "inside-b\n"];

fn root() -> &'static (FileRoot, PathBuf) {
    static ROOT: OnceLock<(FileRoot, PathBuf)> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("mcp-fuzz-{}", std::process::id()));
        let srv = base.join("srv");
        let svc = srv.join("svc");
        std::fs::create_dir_all(svc.join("d")).unwrap();
        std::fs::write(svc.join("a.txt"), INSIDE[0]).unwrap();
        std::fs::write(svc.join("d/b.txt"), INSIDE[1]).unwrap();
        std::fs::write(srv.join("secret"), "OUTSIDE\n").unwrap();
        std::fs::write(base.join("secret"), "OUTSIDE\n").unwrap();
        let link = |target: &str, name: &str| {
            let _ = std::os::unix::fs::symlink(target, svc.join(name));
        };
        link("d", "in");
        link("/etc", "out");
        link("../..", "up");
        link("../secret", "sib");
        link(&base.join("secret").display().to_string(), "abs");
        let config = FilesConfig {
            srv_root: srv,
            max_file_size: 1 << 20,
            protected: Vec::new(),
        };
        (FileRoot::new(&config), base)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let (files, _) = root();
    if let Ok(mut reader) = files.open_pull("svc", path) {
        let mut content = String::new();
        let mut buf = [0u8; 64];
        loop {
            let n = reader.read_chunk(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            content.push_str(std::str::from_utf8(&buf[..n]).unwrap_or("<binary>"));
        }
        assert!(INSIDE.contains(&content.as_str()), "{path:?} opened {content:?}");
    }
    // Services are names, never paths.
    assert!(files.open_pull("..", path).is_err());
    assert!(files.open_pull("svc/..", path).is_err());
});
