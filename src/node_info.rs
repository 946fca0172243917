//! Node resources for `mcp node`, read from the system directly: `/proc`
//! (CPUs, load, memory, uptime) and `statvfs` (the disk holding the srv root).
//! The parsers are separate from the reads so they can be tested on text.

use std::path::{Path, PathBuf};

/// What the node has. Byte counts are bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStats {
    pub cpus: u32,
    pub load: [f64; 3],
    pub memory_total: u64,
    pub memory_available: u64,
    /// The path whose file system was measured (the srv root, or its
    /// nearest existing parent).
    pub disk_path: PathBuf,
    pub disk_total: u64,
    /// Available to unprivileged users (f_bavail), as `df` shows it.
    pub disk_free: u64,
    pub system_uptime_secs: u64,
}

/// Reads everything; a part that cannot be read stays 0 and is logged, so
/// one missing file does not hide the rest.
pub fn read(srv_root: &Path) -> NodeStats {
    let mut stats = NodeStats {
        cpus: cpu_count(),
        ..Default::default()
    };
    match std::fs::read_to_string("/proc/loadavg").map(|t| parse_loadavg(&t)) {
        Ok(Some(load)) => stats.load = load,
        other => tracing::warn!("cannot read /proc/loadavg: {other:?}"),
    }
    match std::fs::read_to_string("/proc/meminfo").map(|t| parse_meminfo(&t)) {
        Ok(Some((total, available))) => {
            stats.memory_total = total;
            stats.memory_available = available;
        }
        other => tracing::warn!("cannot read /proc/meminfo: {other:?}"),
    }
    match std::fs::read_to_string("/proc/uptime").map(|t| parse_uptime(&t)) {
        Ok(Some(secs)) => stats.system_uptime_secs = secs,
        other => tracing::warn!("cannot read /proc/uptime: {other:?}"),
    }
    let path = nearest_existing(srv_root);
    match rustix::fs::statvfs(&path) {
        Ok(vfs) => {
            stats.disk_total = vfs.f_blocks.saturating_mul(vfs.f_frsize);
            stats.disk_free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        }
        Err(e) => tracing::warn!(path = %path.display(), "statvfs: {e}"),
    }
    stats.disk_path = path;
    stats
}

/// Online CPUs (`/sys/devices/system/cpu/online`, e.g. "0-3,6"), else what
/// the process may use.
pub fn cpu_count() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|t| parse_cpu_list(&t))
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .map(|n| n.get() as u32)
        })
        .unwrap_or(0)
}

/// "0-3,6,8-9" -> 7.
pub fn parse_cpu_list(text: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                n += b.checked_sub(a)? + 1;
            }
            None => {
                part.parse::<u32>().ok()?;
                n += 1;
            }
        }
    }
    (n > 0).then_some(n)
}

/// "0.52 0.58 0.59 1/467 12345" -> [0.52, 0.58, 0.59].
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// (MemTotal, MemAvailable) in bytes.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let mut parts = rest.split_whitespace();
            let value: u64 = parts.next()?.parse().ok()?;
            match parts.next() {
                Some("kB") => Some(value * 1024),
                None => Some(value),
                Some(_) => None,
            }
        })
    };
    Some((field("MemTotal")?, field("MemAvailable")?))
}

/// "12345.67 23456.78" -> 12345.
pub fn parse_uptime(text: &str) -> Option<u64> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(secs as u64)
}

/// `path`, or its nearest ancestor that exists (the srv root may not exist
/// yet on a fresh node; its parent's file system is where it will be).
pub fn nearest_existing(path: &Path) -> PathBuf {
    let mut p = path;
    loop {
        if p.exists() {
            return p.to_path_buf();
        }
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => return PathBuf::from("/"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(parse_cpu_list("0-3\n"), Some(4));
        assert_eq!(parse_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(
            parse_loadavg("0.52 0.58 1.59 1/467 12345\n"),
            Some([0.52, 0.58, 1.59])
        );
        assert_eq!(parse_loadavg("0.52 x"), None);
        let meminfo =
            "MemTotal:       24576000 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            Some((24_576_000 * 1024, 20_000_000 * 1024))
        );
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_uptime("12345.67 23456.78\n"), Some(12345));
        assert_eq!(parse_uptime(""), None);
    }

    #[test]
    fn reads_this_machine() {
        let tmp = tempfile::tempdir().unwrap();
        let stats = read(&tmp.path().join("not/yet/there"));
        assert!(stats.cpus >= 1);
        assert!(stats.memory_total > 0 && stats.memory_available <= stats.memory_total);
        assert_eq!(stats.disk_path, tmp.path());
        assert!(stats.disk_total > 0 && stats.disk_free <= stats.disk_total);
        assert!(stats.load.iter().all(|l| *l >= 0.0));
    }
}
