//! The properties the fuzz targets check, one function per target. Shared by
//! the cargo-fuzz targets (`fuzz_targets/*.rs`) and by `tests/fuzz_corpus.rs`,
//! which replays the committed corpus in the normal test run.

// Each fuzz target uses one of these.
#![allow(dead_code)]

use std::path::Path;

use mcp::files::{FileRoot, FilesConfig};

/// Service definitions from arbitrary text: never a panic; whatever parses
/// holds only valid names and survives a round trip through TOML.
pub fn spec_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/defs/svc.toml");
    if let Ok(def) = mcp::spec::parse_service(path, text) {
        assert_eq!(def.name.as_str(), "svc");
        for c in &def.components {
            assert!(mcp::names::Name::parse(c.name.as_str()).is_ok());
        }
        let again = mcp::spec::to_toml(&def);
        let reparsed =
            mcp::spec::parse_service(path, &again).unwrap_or_else(|e| panic!("{again}\n{e}"));
        assert_eq!(reparsed, def);
    }
}

/// Names: accepted exactly when they match ^[a-z0-9][a-z0-9-]{0,62}$, so a
/// name can never be a path or an option.
pub fn name_validate(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let expected = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    assert_eq!(mcp::names::Name::parse(s).is_ok(), expected, "{s:?}");
    if let Ok(target) = s.parse::<mcp::names::Target>() {
        assert!(!target.to_string().contains(".."));
        assert_eq!(target.to_string(), s);
    }
}

/// What the files in the `path_resolve` tree hold inside the service directory.
pub const INSIDE: [&str; 2] = ["inside-a\n", "inside-b\n"];

/// The tree `path_resolve` runs against, under `base`: a service directory
/// holding a symlink to /etc, one that climbs out with `..`, one to an
/// absolute path and one that stays inside; a file next to the service
/// directory plays the secret.
pub fn path_resolve_root(base: &Path) -> FileRoot {
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
    FileRoot::new(&FilesConfig {
        srv_root: srv,
        max_file_size: 1 << 20,
        protected: Vec::new(),
    })
}

/// Transfer paths: whatever the client sends, a pull only ever opens a file
/// inside the service directory.
pub fn path_resolve(files: &FileRoot, data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
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
        assert!(
            INSIDE.contains(&content.as_str()),
            "{path:?} opened {content:?}"
        );
    }
    // Services are names, never paths.
    assert!(files.open_pull("..", path).is_err());
    assert!(files.open_pull("svc/..", path).is_err());
}
