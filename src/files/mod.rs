//! File transfer under `<srv-root>/<service>/`: the policy (which paths, which
//! modes, how large) and the mechanics (temp file, fsync, checksum, atomic
//! rename), independent of gRPC. `src/grpc/files.rs` drives it from streams.
//!
//! - The service directory is `<srv-root>/<service>`; the service name is a
//!   [`Name`], so it is one plain path component. The srv root is trusted
//!   (the operator's); the service directory entry itself must not be a
//!   symlink; everything below it is resolved by [`resolve`] without leaving
//!   it (symlinks that stay inside are followed, those that lead out are
//!   refused) and never enters the agent's own state directory.
//! - A push goes to `.mcp-push-<random>.tmp` in the destination's directory
//!   (created with `O_EXCL | O_NOFOLLOW`, mode 0600), is fsynced, checked
//!   against the announced size and SHA-256, gets its mode, and is renamed
//!   over the destination with `renameat` on the directory's descriptor. Any
//!   error, or the writer being dropped (a client that went away), removes the
//!   temp file ([`TempFile`]). Only a crash of the agent itself (SIGKILL, power
//!   loss) can leave a `.mcp-push-*.tmp` behind; the destination is never
//!   half-written, and the agent's first push into that directory removes
//!   such leftovers (temp files last written before this agent process wrote
//!   any).
//! - Modes: bits outside 0o7777 are refused; setuid and setgid are stripped
//!   (and the result says which mode the file got); sticky is kept.
//! - A pull hashes the file first (the header carries the SHA-256), then
//!   streams the same descriptor from the start.

pub mod resolve;

use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{
    fchmod, fstat, fsync, openat, renameat, unlinkat, AtFlags, FileType, Mode, OFlags,
};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::names::Name;
pub use resolve::RelPath;
use resolve::{Location, Missing};

/// Data bytes per streamed message, both directions.
pub const CHUNK_SIZE: usize = 256 * 1024;
/// Default `--max-file-size`.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 4 * 1024 * 1024 * 1024;
/// Mode bits a pushed file may carry: permissions and sticky, no setuid/setgid.
pub const ALLOWED_MODE_BITS: u32 = 0o1777;
/// Prefix of push temp files.
pub const TEMP_PREFIX: &str = ".mcp-push-";

/// Why a transfer was refused or failed. The message is for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// Malformed request: bad name, path, mode, checksum.
    #[error("{0}")]
    Invalid(String),
    /// A path that would leave the service directory, or one the agent must not touch.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TooLarge(String),
    /// The data did not match what was announced (size or SHA-256).
    #[error("{0}")]
    Mismatch(String),
    #[error("{0}")]
    Io(String),
}

/// Where files go and how large they may be; from `mcp-agent serve` flags.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// `--srv-root` (default /srv): service directories are `<srv_root>/<service>`.
    pub srv_root: PathBuf,
    /// `--max-file-size`: larger pushes are refused.
    pub max_file_size: u64,
    /// Directories the transfers must never enter (the agent's state
    /// directory, the registry's directory). Those that do not exist are skipped.
    pub protected: Vec<PathBuf>,
}

/// The service directories of one node, with the transfer policy.
#[derive(Debug)]
pub struct FileRoot {
    srv_root: PathBuf,
    max_file_size: u64,
    protected: Vec<(u64, u64)>,
}

/// What a push announces in its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRequest {
    pub service: String,
    pub path: String,
    pub mode: u32,
    pub size: u64,
    pub sha256: String,
}

/// A completed push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushDone {
    pub service: String,
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub mode: u32,
}

/// "4GiB", "512MiB", "10M", "1000" (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 4GiB, 512MiB, 1000000)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// "1.5 GiB" for messages.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn check_sha256(s: &str) -> Result<String, FileError> {
    if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(FileError::Invalid(format!(
            "sha256 {s:?} is not 64 hexadecimal digits"
        )))
    }
}

/// The mode a pushed file gets: bits outside 0o7777 are refused, setuid and
/// setgid are stripped.
pub fn effective_mode(mode: u32) -> Result<u32, FileError> {
    if mode & !0o7777 != 0 {
        return Err(FileError::Invalid(format!(
            "mode {mode:o} is not a permission mode (0..=7777 octal)"
        )));
    }
    Ok(mode & ALLOWED_MODE_BITS)
}

fn io_error(what: &str, e: impl std::fmt::Display) -> FileError {
    FileError::Io(format!("{what}: {e}"))
}

impl FileRoot {
    pub fn new(config: &FilesConfig) -> FileRoot {
        let protected = config
            .protected
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            })
            .collect();
        FileRoot {
            srv_root: config.srv_root.clone(),
            max_file_size: config.max_file_size,
            protected,
        }
    }

    pub fn srv_root(&self) -> &Path {
        &self.srv_root
    }

    pub fn max_file_size(&self) -> u64 {
        self.max_file_size
    }

    /// The service directory, opened without following a symlink; created
    /// (0755 less umask) when `create` and missing.
    fn service_dir(&self, service: &str, create: bool) -> Result<(Name, OwnedFd), FileError> {
        let name = Name::parse(service).map_err(|e| FileError::Invalid(format!("service: {e}")))?;
        let srv = std::fs::File::open(&self.srv_root).map_err(|e| {
            FileError::Io(format!(
                "the srv root {} cannot be opened: {e}",
                self.srv_root.display()
            ))
        })?;
        let shown = self.srv_root.join(name.as_str());
        let opened = match resolve::open_dir(srv.as_fd(), name.as_str()) {
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&srv, name.as_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(io_error(&format!("mkdir {}", shown.display()), e)),
                }
                resolve::open_dir(srv.as_fd(), name.as_str())
            }
            other => other,
        };
        let fd = opened.map_err(|e| match e {
            Errno::NOENT => FileError::NotFound(format!(
                "service directory {} does not exist",
                shown.display()
            )),
            Errno::LOOP => FileError::Refused(format!(
                "{} is a symlink: refused (make it a directory or a bind mount)",
                shown.display()
            )),
            Errno::NOTDIR => FileError::Refused(format!("{} is not a directory", shown.display())),
            e => io_error(&format!("open {}", shown.display()), e),
        })?;
        if self.protected.contains(&resolve::identity(fd.as_fd())?) {
            return Err(FileError::Refused(format!(
                "{}: refused: this directory holds the agent's own state, keys or config",
                shown.display()
            )));
        }
        Ok((name, fd))
    }

    /// Checks the header, resolves the destination (creating missing
    /// directories inside the service directory) and opens the temp file.
    pub fn begin_push(&self, req: &PushRequest) -> Result<PushWriter, FileError> {
        let path = RelPath::parse(&req.path)?;
        let mode = effective_mode(req.mode)?;
        let sha256 = check_sha256(&req.sha256)?;
        if req.size > self.max_file_size {
            return Err(FileError::TooLarge(format!(
                "{path}: {} is larger than this agent's limit of {} (mcp-agent --max-file-size)",
                human_size(req.size),
                human_size(self.max_file_size)
            )));
        }
        let (service, root) = self.service_dir(&req.service, true)?;
        let Location {
            dir,
            name,
            file_type,
            display,
        } = resolve::resolve(&root, &path, Missing::Create, &self.protected)?;
        match file_type {
            None | Some(FileType::RegularFile) => {}
            Some(FileType::Directory) => {
                return Err(FileError::Invalid(format!(
                    "{display} is a directory: name the file to write"
                )))
            }
            Some(_) => {
                return Err(FileError::Invalid(format!(
                    "{display} exists and is not a regular file: refused"
                )))
            }
        }
        let temp = TempFile::create(dir)?;
        Ok(PushWriter {
            temp,
            name,
            display,
            service: service.to_string(),
            hasher: Sha256::new(),
            expected_size: req.size,
            expected_sha256: sha256,
            written: 0,
            mode,
        })
    }

    /// Resolves and opens `path` for reading, and hashes it.
    pub fn open_pull(&self, service: &str, path: &str) -> Result<PullReader, FileError> {
        let path = RelPath::parse(path)?;
        let (_, root) = self.service_dir(service, false)?;
        let loc = resolve::resolve(&root, &path, Missing::Fail, &self.protected)?;
        match loc.file_type {
            Some(FileType::RegularFile) => {}
            None => {
                return Err(FileError::NotFound(format!(
                    "{}: no such file",
                    loc.display
                )))
            }
            Some(FileType::Directory) => {
                return Err(FileError::Invalid(format!(
                    "{} is a directory: pull takes a file",
                    loc.display
                )))
            }
            Some(_) => {
                return Err(FileError::Invalid(format!(
                    "{} is not a regular file: refused",
                    loc.display
                )))
            }
        }
        // NONBLOCK: should it have become a FIFO since the stat, the open
        // does not hang; NOFOLLOW: nor has it become a symlink.
        let fd = openat(
            &loc.dir,
            loc.name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP => FileError::Refused(format!(
                "{} changed while the path was resolved: refused",
                loc.display
            )),
            Errno::ACCESS | Errno::PERM => {
                FileError::Refused(format!("{}: permission denied on the node", loc.display))
            }
            e => io_error(&format!("open {}", loc.display), e),
        })?;
        let st = fstat(&fd).map_err(|e| io_error("fstat", e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(FileError::Invalid(format!(
                "{} is not a regular file: refused",
                loc.display
            )));
        }
        let mut file = std::fs::File::from(fd);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK_SIZE];
        let mut size = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| io_error(&format!("read {}", loc.display), e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        file.rewind()
            .map_err(|e| io_error(&format!("seek {}", loc.display), e))?;
        Ok(PullReader {
            file,
            size,
            remaining: size,
            mode: st.st_mode & 0o7777,
            sha256: hex::encode(hasher.finalize()),
            path: loc.display,
        })
    }
}

/// A temp file in the destination's directory, removed on drop unless
/// renamed into place.
#[derive(Debug)]
pub struct TempFile {
    dir: OwnedFd,
    name: String,
    file: std::fs::File,
    armed: bool,
}

/// When this process first wrote a temp file (roughly: when it started
/// pushing). Temp files last modified before it belong to an earlier agent
/// process that crashed; this one's are all written after it.
static FIRST_PUSH: std::sync::LazyLock<std::time::SystemTime> =
    std::sync::LazyLock::new(std::time::SystemTime::now);
/// File systems stamp times from a coarse clock that can lag `now` a little.
const STAMP_SLACK: std::time::Duration = std::time::Duration::from_secs(2);

/// Directories (device, inode) already swept by this process: leftovers
/// come only from earlier processes, so once per directory is enough.
static SWEPT: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<(u64, u64)>>> =
    std::sync::LazyLock::new(Default::default);

/// Removes the temp files a crashed agent left in `dir`, the first time this
/// process pushes into it. Best effort: a failure is logged, never fails the
/// push.
fn sweep_crash_leftovers(dir: &OwnedFd) {
    let Some(cutoff) = FIRST_PUSH.checked_sub(STAMP_SLACK) else {
        return;
    };
    let Ok(st) = fstat(dir) else {
        return;
    };
    let first_time = SWEPT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((st.st_dev, st.st_ino));
    if !first_time {
        return;
    }
    let entries = match rustix::fs::Dir::read_from(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::debug!("cannot list a push directory for leftovers: {e}");
            return;
        }
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if !(name.starts_with(TEMP_PREFIX) && name.ends_with(".tmp")) {
            continue;
        }
        let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let modified = std::time::UNIX_EPOCH
            + std::time::Duration::new(st.st_mtime.max(0) as u64, st.st_mtime_nsec as u32);
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || modified >= cutoff {
            continue;
        }
        match unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) => tracing::info!(temp = name, "removed a crashed push's temp file"),
            Err(e) => tracing::warn!(temp = name, "cannot remove a crashed push's temp file: {e}"),
        }
    }
}

impl TempFile {
    fn create(dir: OwnedFd) -> Result<TempFile, FileError> {
        sweep_crash_leftovers(&dir);
        for _ in 0..16 {
            let mut random = [0u8; 8];
            getrandom::fill(&mut random).map_err(|e| io_error("random", e))?;
            let name = format!("{TEMP_PREFIX}{}.tmp", hex::encode(random));
            match openat(
                &dir,
                name.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => {
                    return Ok(TempFile {
                        dir,
                        name,
                        file: fd.into(),
                        armed: true,
                    })
                }
                Err(Errno::EXIST) => continue,
                Err(Errno::ACCESS | Errno::PERM | Errno::ROFS) => {
                    return Err(FileError::Refused(
                        "the agent may not write in that directory on the node".into(),
                    ))
                }
                Err(e) => return Err(io_error("create temp file", e)),
            }
        }
        Err(FileError::Io("cannot find a free temp file name".into()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renames the temp file to `name` in the same directory, then fsyncs the directory.
    fn commit(mut self, name: &str) -> Result<(), FileError> {
        renameat(&self.dir, self.name.as_str(), &self.dir, name)
            .map_err(|e| io_error("rename into place", e))?;
        self.armed = false;
        // The rename is done; the directory's fsync makes it durable.
        if let Err(e) = fsync(&self.dir) {
            tracing::warn!("fsync of the directory after a push: {e}");
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = unlinkat(&self.dir, self.name.as_str(), AtFlags::empty()) {
                tracing::warn!(temp = %self.name, "cannot remove an abandoned push's temp file: {e}");
            }
        }
    }
}

/// An open push: data goes to the temp file; [`PushWriter::finish`] checks
/// and renames. Dropping it unfinished removes the temp file.
#[derive(Debug)]
pub struct PushWriter {
    temp: TempFile,
    name: String,
    display: String,
    service: String,
    hasher: Sha256,
    expected_size: u64,
    expected_sha256: String,
    written: u64,
    mode: u32,
}

impl PushWriter {
    pub fn write(&mut self, data: &[u8]) -> Result<(), FileError> {
        let total = self.written + data.len() as u64;
        if total > self.expected_size {
            return Err(FileError::Mismatch(format!(
                "{}: more data than the {} bytes announced",
                self.display, self.expected_size
            )));
        }
        self.temp.file.write_all(data).map_err(|e| {
            if e.raw_os_error() == Some(Errno::NOSPC.raw_os_error()) {
                FileError::Io(format!(
                    "{}: no space left on the node's disk",
                    self.display
                ))
            } else {
                io_error(&format!("write {}", self.display), e)
            }
        })?;
        self.hasher.update(data);
        self.written = total;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// The temp file's name (in the destination's directory).
    pub fn temp_name(&self) -> &str {
        self.temp.name()
    }

    /// Verifies size and SHA-256, sets the mode, fsyncs and renames into place.
    pub fn finish(self) -> Result<PushDone, FileError> {
        if self.written != self.expected_size {
            return Err(FileError::Mismatch(format!(
                "{}: the push ended after {} of {} bytes: nothing was written",
                self.display, self.written, self.expected_size
            )));
        }
        let sha256 = hex::encode(self.hasher.finalize());
        if sha256 != self.expected_sha256 {
            return Err(FileError::Mismatch(format!(
                "{}: SHA-256 mismatch: the data received hashes to {sha256}, the client announced {} \
                 (did the file change while it was sent?): nothing was written",
                self.display, self.expected_sha256
            )));
        }
        fchmod(&self.temp.file, Mode::from_raw_mode(self.mode))
            .map_err(|e| io_error("chmod", e))?;
        self.temp
            .file
            .sync_all()
            .map_err(|e| io_error("fsync", e))?;
        self.temp.commit(&self.name)?;
        Ok(PushDone {
            service: self.service,
            path: self.display,
            size: self.written,
            sha256,
            mode: self.mode,
        })
    }
}

/// An open pull: size, mode and SHA-256 known, data read in chunks.
#[derive(Debug)]
pub struct PullReader {
    file: std::fs::File,
    remaining: u64,
    pub size: u64,
    pub mode: u32,
    pub sha256: String,
    /// Resolved path relative to the service directory.
    pub path: String,
}

impl PullReader {
    /// Reads the next chunk into `buf`; 0 when all `size` bytes were read.
    /// A file that shrank since it was hashed is an error; one that grew is
    /// cut at the hashed size (the client's check catches changed bytes).
    pub fn read_chunk(&mut self, buf: &mut [u8]) -> Result<usize, FileError> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self
            .file
            .read(&mut buf[..want])
            .map_err(|e| io_error(&format!("read {}", self.path), e))?;
        if n == 0 {
            return Err(FileError::Mismatch(format!(
                "{}: the file shrank while it was sent",
                self.path
            )));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    struct Fixture {
        tmp: tempfile::TempDir,
        root: FileRoot,
    }

    impl Fixture {
        fn new(max: u64) -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let srv = tmp.path().join("srv");
            std::fs::create_dir_all(srv.join("mcp")).unwrap();
            let root = FileRoot::new(&FilesConfig {
                srv_root: srv.clone(),
                max_file_size: max,
                protected: vec![srv.join("mcp")],
            });
            Fixture { tmp, root }
        }

        fn svc(&self) -> PathBuf {
            self.tmp.path().join("srv/svc")
        }

        /// Every entry under the temp dir, relative, sorted.
        fn tree(&self) -> Vec<String> {
            fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
                for e in std::fs::read_dir(dir).unwrap() {
                    let p = e.unwrap().path();
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                    if p.symlink_metadata().unwrap().is_dir() {
                        walk(base, &p, out);
                    }
                }
            }
            let mut out = Vec::new();
            walk(self.tmp.path(), self.tmp.path(), &mut out);
            out.sort();
            out
        }
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn request(path: &str, data: &[u8], mode: u32) -> PushRequest {
        PushRequest {
            service: "svc".into(),
            path: path.into(),
            mode,
            size: data.len() as u64,
            sha256: sha(data),
        }
    }

    fn push(f: &Fixture, path: &str, data: &[u8], mode: u32) -> Result<PushDone, FileError> {
        let mut w = f.root.begin_push(&request(path, data, mode))?;
        for chunk in data.chunks(7) {
            w.write(chunk)?;
        }
        w.finish()
    }

    fn pull(f: &Fixture, path: &str) -> Result<(Vec<u8>, PullReader), FileError> {
        let mut r = f.root.open_pull("svc", path)?;
        let mut out = Vec::new();
        let mut buf = [0u8; 5];
        loop {
            let n = r.read_chunk(&mut buf)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        Ok((out, r))
    }

    #[test]
    fn push_then_pull_round_trip_with_mode() {
        let f = Fixture::new(1 << 20);
        let data = b"hello, service directory\n".repeat(100);
        let done = push(&f, "conf/app.toml", &data, 0o640).unwrap();
        assert_eq!(done.path, "conf/app.toml");
        assert_eq!(done.mode, 0o640);
        assert_eq!(done.sha256, sha(&data));
        let on_disk = f.svc().join("conf/app.toml");
        assert_eq!(std::fs::read(&on_disk).unwrap(), data);
        assert_eq!(
            std::fs::metadata(&on_disk).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        let (back, r) = pull(&f, "./conf//app.toml").unwrap();
        assert_eq!(back, data);
        assert_eq!(
            (r.mode, r.size, r.sha256.as_str()),
            (0o640, data.len() as u64, sha(&data).as_str())
        );

        // Overwrite: replaced atomically, new mode.
        push(&f, "conf/app.toml", b"v2", 0o600).unwrap();
        assert_eq!(std::fs::read(&on_disk).unwrap(), b"v2");
        assert_eq!(
            std::fs::metadata(&on_disk).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        // An empty file is a file.
        push(&f, "empty", b"", 0o644).unwrap();
        assert_eq!(pull(&f, "empty").unwrap().0, b"");
    }

    #[test]
    fn setuid_and_setgid_are_stripped_and_bad_modes_refused() {
        let f = Fixture::new(1 << 20);
        let done = push(&f, "tool", b"#!/bin/sh\n", 0o6755).unwrap();
        assert_eq!(done.mode, 0o755);
        assert_eq!(
            std::fs::metadata(f.svc().join("tool"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o755
        );
        assert!(matches!(
            push(&f, "x", b"x", 0o100644),
            Err(FileError::Invalid(_))
        ));
    }

    #[test]
    fn refused_paths_write_nothing_anywhere() {
        let f = Fixture::new(1 << 20);
        std::fs::create_dir_all(f.svc()).unwrap();
        symlink("/etc", f.svc().join("etc")).unwrap();
        symlink("../..", f.svc().join("up")).unwrap();
        std::fs::create_dir_all(f.tmp.path().join("outside")).unwrap();
        let before = f.tree();
        for path in [
            "../x",
            "/etc/passwd",
            "etc/passwd",
            "etc/mcp-test-file",
            "up/outside/x",
            "a\0b",
            "",
            "dir/",
        ] {
            let err = push(&f, path, b"data", 0o644).unwrap_err();
            assert!(
                matches!(err, FileError::Invalid(_) | FileError::Refused(_)),
                "{path:?}: {err:?}"
            );
            assert!(pull(&f, path).is_err(), "{path:?}");
        }
        assert!(!Path::new("/etc/mcp-test-file").exists());
        assert_eq!(f.tree(), before);
    }

    #[test]
    fn bad_service_names_and_the_state_directory_are_refused() {
        let f = Fixture::new(1 << 20);
        for service in ["..", "", "a/b", "Svc", "a\0"] {
            let mut r = request("x", b"x", 0o644);
            r.service = service.into();
            assert!(
                matches!(f.root.begin_push(&r), Err(FileError::Invalid(_))),
                "{service:?}"
            );
        }
        let mut r = request("token", b"x", 0o644);
        r.service = "mcp".into();
        let err = f.root.begin_push(&r).unwrap_err();
        assert!(err.to_string().contains("the agent's own state"), "{err}");
        assert!(f.root.open_pull("mcp", "token").is_err());
        // A service directory that is a symlink is refused.
        symlink("/etc", f.tmp.path().join("srv/etc-svc")).unwrap();
        assert!(matches!(
            f.root.open_pull("etc-svc", "passwd"),
            Err(FileError::Refused(_))
        ));
    }

    #[test]
    fn interrupted_or_wrong_pushes_leave_nothing() {
        let f = Fixture::new(1 << 20);
        std::fs::create_dir_all(f.svc()).unwrap();
        std::fs::write(f.svc().join("keep"), "old").unwrap();
        let before = f.tree();
        let data = vec![7u8; 10_000];

        // Dropped half-way (the client went away).
        let mut w = f.root.begin_push(&request("keep", &data, 0o644)).unwrap();
        w.write(&data[..5000]).unwrap();
        assert!(f.svc().join(w.temp_name()).exists());
        drop(w);
        assert_eq!(f.tree(), before);

        // Ended early.
        let mut w = f.root.begin_push(&request("keep", &data, 0o644)).unwrap();
        w.write(&data[..5000]).unwrap();
        assert!(matches!(w.finish(), Err(FileError::Mismatch(_))));
        // Too much.
        let mut w = f.root.begin_push(&request("keep", &data, 0o644)).unwrap();
        w.write(&data).unwrap();
        assert!(matches!(w.write(b"x"), Err(FileError::Mismatch(_))));
        drop(w);
        // Wrong checksum.
        let mut r = request("keep", &data, 0o644);
        r.sha256 = sha(b"something else");
        let mut w = f.root.begin_push(&r).unwrap();
        w.write(&data).unwrap();
        let err = w.finish().unwrap_err();
        assert!(err.to_string().contains("SHA-256 mismatch"), "{err}");
        // Bad checksum syntax.
        r.sha256 = "xyz".into();
        assert!(matches!(f.root.begin_push(&r), Err(FileError::Invalid(_))));

        assert_eq!(std::fs::read(f.svc().join("keep")).unwrap(), b"old");
        assert_eq!(f.tree(), before);
    }

    #[test]
    fn a_push_removes_what_a_crashed_push_left_in_its_directory() {
        let f = Fixture::new(1 << 20);
        std::fs::create_dir_all(f.svc()).unwrap();
        let leftover = f.svc().join(format!("{TEMP_PREFIX}0123456789abcdef.tmp"));
        std::fs::write(&leftover, "half a file").unwrap();
        let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&leftover)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
        // A push in flight (this process's) is left alone.
        let data = b"new".to_vec();
        let mut in_flight = f.root.begin_push(&request("other", &data, 0o644)).unwrap();
        in_flight.write(&data).unwrap();
        push(&f, "conf", b"x = 1\n", 0o644).unwrap();
        assert!(!leftover.exists());
        assert!(f.svc().join(in_flight.temp_name()).exists());
        in_flight.finish().unwrap();
        assert_eq!(std::fs::read(f.svc().join("other")).unwrap(), b"new");
    }

    #[test]
    fn size_limit_refuses_up_front() {
        let f = Fixture::new(100);
        let data = vec![1u8; 101];
        let err = f
            .root
            .begin_push(&request("big", &data, 0o644))
            .unwrap_err();
        assert!(matches!(err, FileError::TooLarge(_)), "{err:?}");
        assert!(err.to_string().contains("--max-file-size"), "{err}");
        assert!(!f.svc().exists(), "nothing created for a refused push");
        push(&f, "ok", &data[..100], 0o644).unwrap();
    }

    #[test]
    fn pull_refuses_directories_and_missing_files() {
        let f = Fixture::new(100);
        std::fs::create_dir_all(f.svc().join("d")).unwrap();
        assert!(matches!(pull(&f, "d"), Err(FileError::Invalid(_))));
        assert!(matches!(pull(&f, "nope"), Err(FileError::NotFound(_))));
        assert!(matches!(
            f.root.open_pull("other", "x"),
            Err(FileError::NotFound(_))
        ));
        // Push onto a directory is refused too.
        assert!(matches!(
            push(&f, "d", b"x", 0o644),
            Err(FileError::Invalid(_))
        ));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("2GB").unwrap(), 2_000_000_000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(12), "12 B");
    }
}
