//! Resolving a client's relative path beneath a service directory, without
//! ever leaving it.
//!
//! The walk is done on directory file descriptors, one component at a time,
//! like the kernel's `openat2(RESOLVE_BENEATH)` but in user space (so it needs
//! no recent kernel and no seccomp allowance):
//!
//! - every directory is opened with `O_NOFOLLOW | O_DIRECTORY` relative to the
//!   descriptor of its parent, so a component swapped for a symlink between
//!   our `fstatat` and our `openat` fails the open instead of being followed;
//! - a symlink is read with `readlinkat` and its target spliced into the
//!   components still to walk; an absolute target, or a `..` that would climb
//!   above the service directory, is refused;
//! - `..` in a link target pops the stack of descriptors we hold, so it means
//!   "the directory we came from", whatever was renamed meanwhile;
//! - the caller gets the final component as (descriptor of its directory,
//!   name), and opens or renames it relative to that descriptor, with
//!   `O_NOFOLLOW` (see `super`).
//!
//! What remains (documented in ARCHITECTURE.md): a bind mount inside the
//! service directory is crossed like any directory (only root can make one);
//! a hard link to a file outside can be pulled (with the kernel's default
//! `fs.protected_hardlinks = 1`, only files the linking user owns can be
//! linked).

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{fstat, mkdirat, openat, readlinkat, statat, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::FileError;

/// Longest path a client may send, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest single component (the usual NAME_MAX).
pub const MAX_COMPONENT_LEN: usize = 255;
/// Symlinks followed in one resolution before giving up (as the kernel's ELOOP).
const MAX_SYMLINKS: usize = 40;

/// A client's path, checked: relative, no `..`, no NUL byte, naming a file.
/// Empty and `.` components (`a//b`, `./a`) are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPath {
    components: Vec<String>,
}

impl RelPath {
    pub fn parse(s: &str) -> Result<RelPath, FileError> {
        let invalid = |why: &str| Err(FileError::Invalid(format!("path {s:?}: {why}")));
        if s.is_empty() {
            return invalid("the path is empty");
        }
        if s.contains('\0') {
            return invalid("the path contains a NUL byte");
        }
        if s.len() > MAX_PATH_LEN {
            return invalid("the path is longer than 4096 bytes");
        }
        if s.starts_with('/') {
            return invalid(
                "absolute paths are refused: paths are relative to the service directory",
            );
        }
        if s.ends_with('/') {
            return invalid("the path ends with '/': name a file");
        }
        let mut components = Vec::new();
        for c in s.split('/') {
            match c {
                "" | "." => continue,
                ".." => return invalid("'..' is refused: paths stay inside the service directory"),
                c if c.len() > MAX_COMPONENT_LEN => {
                    return invalid("a path component is longer than 255 bytes")
                }
                c => components.push(c.to_string()),
            }
        }
        if components.is_empty() {
            return invalid("the path names the service directory itself, not a file");
        }
        Ok(RelPath { components })
    }

    pub fn components(&self) -> &[String] {
        &self.components
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.components.join("/"))
    }
}

/// Where a path ends: the directory that holds the final component (a
/// descriptor), its name, and what is there now (None: nothing).
#[derive(Debug)]
pub struct Location {
    pub dir: OwnedFd,
    pub name: String,
    pub file_type: Option<FileType>,
    /// The resolved path relative to the service directory, for messages.
    pub display: String,
}

/// What the walk does with missing directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// A missing directory is an error (pull).
    Fail,
    /// Missing directories are created, mode 0755 less the umask (push).
    Create,
}

/// (device, inode) of directories the walk must never enter: the agent's
/// own state directory, for instance.
pub type Protected = [(u64, u64)];

pub fn identity(fd: BorrowedFd<'_>) -> Result<(u64, u64), FileError> {
    let st = fstat(fd).map_err(|e| FileError::Io(format!("fstat: {e}")))?;
    Ok((st.st_dev, st.st_ino))
}

fn check_protected(
    fd: BorrowedFd<'_>,
    display: &str,
    protected: &Protected,
) -> Result<(), FileError> {
    if protected.contains(&identity(fd)?) {
        return Err(FileError::Refused(format!(
            "{display}: refused: this directory holds the agent's own state, keys or config"
        )));
    }
    Ok(())
}

/// Opens `name` in `dir` as a directory, never following a symlink.
pub fn open_dir(dir: BorrowedFd<'_>, name: &str) -> rustix::io::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn join(names: &[(OwnedFd, String)], last: &str) -> String {
    names
        .iter()
        .map(|(_, n)| n.as_str())
        .chain((!last.is_empty()).then_some(last))
        .collect::<Vec<_>>()
        .join("/")
}

/// Walks `path` beneath `root` (the service directory). See the module docs.
pub fn resolve(
    root: &OwnedFd,
    path: &RelPath,
    missing: Missing,
    protected: &Protected,
) -> Result<Location, FileError> {
    // The directories entered so far, below root, with their names.
    let mut stack: Vec<(OwnedFd, String)> = Vec::new();
    let mut pending: VecDeque<String> = path.components.iter().cloned().collect();
    let mut links = 0usize;
    // The last symlink followed, for messages: (where, target).
    let mut last_link: Option<(String, String)> = None;
    let io = |what: &str, display: &str, e: Errno| -> FileError {
        match e {
            Errno::ACCESS | Errno::PERM => {
                FileError::Refused(format!("{display}: {what}: permission denied on the node"))
            }
            Errno::NAMETOOLONG => FileError::Invalid(format!("{display}: name too long")),
            e => FileError::Io(format!("{display}: {what}: {e}")),
        }
    };

    while let Some(name) = pending.pop_front() {
        let cur: BorrowedFd<'_> = stack.last().map_or(root.as_fd(), |(fd, _)| fd.as_fd());
        // Only link targets bring these: a client's own `..` was refused.
        if name.is_empty() || name == "." {
            continue;
        }
        if name == ".." {
            if stack.pop().is_none() {
                let (link, target) = last_link.unwrap_or_default();
                return Err(FileError::Refused(format!(
                    "{link} is a symlink to {target}, which leads outside the service directory: refused"
                )));
            }
            continue;
        }
        let display = join(&stack, &name);
        let is_last = pending.is_empty();
        let st = match statat(cur, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(io("stat", &display, e)),
        };
        let file_type = st.map(|st| FileType::from_raw_mode(st.st_mode));

        if file_type == Some(FileType::Symlink) {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(FileError::Refused(format!(
                    "{display}: too many levels of symbolic links"
                )));
            }
            let target = readlinkat(cur, name.as_str(), Vec::new())
                .map_err(|e| io("readlink", &display, e))?;
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                return Err(FileError::Refused(format!(
                    "{display} is a symlink to {target}, an absolute path: refused (symlinks must stay inside the service directory)"
                )));
            }
            // A `..` in it that climbs above the root is refused when it is
            // reached (above), with this link named.
            for c in target.split('/').rev() {
                pending.push_front(c.to_string());
            }
            last_link = Some((display, target));
            continue;
        }

        if is_last {
            let dir = match stack.pop() {
                Some((fd, _)) => fd,
                None => root
                    .try_clone()
                    .map_err(|e| FileError::Io(format!("dup: {e}")))?,
            };
            return Ok(Location {
                dir,
                name,
                file_type,
                display,
            });
        }

        match file_type {
            Some(FileType::Directory) => {}
            Some(_) => {
                return Err(FileError::Invalid(format!("{display} is not a directory")));
            }
            None if missing == Missing::Create => {
                match mkdirat(cur, name.as_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(io("mkdir", &display, e)),
                }
            }
            None => return Err(FileError::NotFound(format!("{display}: no such directory"))),
        }
        let fd = open_dir(cur, &name).map_err(|e| match e {
            // Swapped for a symlink or a file since our stat: refuse, do not follow.
            Errno::LOOP | Errno::NOTDIR => FileError::Refused(format!(
                "{display} changed while the path was resolved: refused"
            )),
            e => io("open", &display, e),
        })?;
        check_protected(fd.as_fd(), &display, protected)?;
        stack.push((fd, name));
    }
    // The components ran out on a directory (a link to "." or "sub/..").
    Err(FileError::Invalid(format!(
        "{} is a directory, not a file",
        path
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[test]
    fn parse_refuses_what_it_must() {
        for (bad, why) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("../x", "'..'"),
            ("a/../../x", "'..'"),
            ("a/..", "'..'"),
            ("a\0b", "NUL"),
            ("dir/", "ends with '/'"),
            (".", "service directory itself"),
            ("./", "ends with '/'"),
            ("a//.//", "ends with '/'"),
        ] {
            let err = RelPath::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(RelPath::parse(&"a".repeat(256)).is_err());
        assert!(RelPath::parse(&"a/".repeat(2100)).is_err());
    }

    #[test]
    fn parse_normalises_empty_and_dot_components() {
        assert_eq!(rel("./a//b/./c").to_string(), "a/b/c");
        assert_eq!(rel("..x/y..").to_string(), "..x/y..");
    }

    fn root(dir: &std::path::Path) -> OwnedFd {
        std::fs::File::open(dir).unwrap().into()
    }

    #[test]
    fn resolves_beneath_and_follows_inner_links() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::fs::write(base.join("a/b/f"), "x").unwrap();
        symlink("a/b", base.join("lb")).unwrap();
        symlink("../a/b/f", base.join("a/lf")).unwrap();
        let r = root(base);

        let loc = resolve(&r, &rel("lb/f"), Missing::Fail, &[]).unwrap();
        assert_eq!((loc.display.as_str(), loc.name.as_str()), ("a/b/f", "f"));
        assert_eq!(loc.file_type, Some(FileType::RegularFile));

        let loc = resolve(&r, &rel("a/lf"), Missing::Fail, &[]).unwrap();
        assert_eq!(loc.display, "a/b/f");

        let loc = resolve(&r, &rel("new"), Missing::Fail, &[]).unwrap();
        assert_eq!(loc.file_type, None);

        assert!(matches!(
            resolve(&r, &rel("x/y"), Missing::Fail, &[]),
            Err(FileError::NotFound(_))
        ));
        let loc = resolve(&r, &rel("x/y/z"), Missing::Create, &[]).unwrap();
        assert_eq!(loc.display, "x/y/z");
        assert!(base.join("x/y").is_dir());

        assert!(matches!(
            resolve(&r, &rel("a/b/f/g"), Missing::Create, &[]),
            Err(FileError::Invalid(_))
        ));
    }

    #[test]
    fn refuses_links_that_leave() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("svc");
        std::fs::create_dir_all(base.join("sub")).unwrap();
        symlink("/etc", base.join("etc")).unwrap();
        symlink("/etc/passwd", base.join("passwd")).unwrap();
        symlink("../../outside", base.join("sub/up")).unwrap();
        symlink("..", base.join("parent")).unwrap();
        symlink("loop2", base.join("loop1")).unwrap();
        symlink("loop1", base.join("loop2")).unwrap();
        symlink(".", base.join("here")).unwrap();
        // Lexically "here/.." stays at the root; physically it climbs out.
        symlink("here/../x", base.join("tricky")).unwrap();
        let r = root(&base);
        let err = resolve(&r, &rel("tricky"), Missing::Create, &[]).unwrap_err();
        assert!(err.to_string().contains("leads outside"), "{err}");
        for (path, missing) in [
            ("etc/passwd", Missing::Fail),
            ("etc/new-file", Missing::Create),
            ("passwd", Missing::Fail),
            ("sub/up/x", Missing::Create),
            ("parent/x", Missing::Create),
            ("loop1", Missing::Fail),
        ] {
            let err = resolve(&r, &rel(path), missing, &[]).unwrap_err();
            assert!(matches!(err, FileError::Refused(_)), "{path}: {err}");
        }
        assert!(!tmp.path().join("outside").exists());
        // A link to "." stays inside; it only names a directory.
        assert!(matches!(
            resolve(&r, &rel("here"), Missing::Fail, &[]),
            Err(FileError::Invalid(_))
        ));
        let loc = resolve(&r, &rel("here/here/sub/x"), Missing::Fail, &[]).unwrap();
        assert_eq!(loc.display, "sub/x");
    }

    #[test]
    fn protected_directories_are_never_entered() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("state")).unwrap();
        let state: OwnedFd = std::fs::File::open(tmp.path().join("state"))
            .unwrap()
            .into();
        let id = identity(state.as_fd()).unwrap();
        let r = root(tmp.path());
        let err = resolve(&r, &rel("state/token"), Missing::Fail, &[id]).unwrap_err();
        assert!(err.to_string().contains("the agent's own state"), "{err}");
    }
}
