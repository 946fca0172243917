//! `mcp push`, `mcp pull` and `mcp node`: file transfer under a service's
//! directory on its node, and node resources.
//!
//! Push reads the local file twice: once to compute its SHA-256 (the
//! header, sent first, carries it, so the agent can refuse a mismatch before
//! renaming anything into place), then again to send it in 256 KiB chunks. A
//! file that changes in between is refused by the agent's checksum check.
//! Pull writes to a temp file next to the destination, hashes while writing,
//! and renames into place only when size and SHA-256 match the agent's header.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context as _, Result};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::client::describe_status;
use super::context::{node_of, Context};
use super::output::{print_json, OutputFormat};
use crate::files::{human_size, ALLOWED_MODE_BITS, CHUNK_SIZE};
use crate::grpc::files::MAX_FILES_MESSAGE_BYTES;
use crate::names::Name;
use crate::proto;
use crate::proto::files_client::FilesClient;
use crate::proto::{pull_chunk, push_chunk};

/// Transfers larger than this get a progress bar (when stderr is a terminal).
pub const PROGRESS_THRESHOLD: u64 = 4 * 1024 * 1024;

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// The service whose directory (/srv/SERVICE/ on its node) receives the file.
    pub service: Name,
    /// The local file.
    pub local: PathBuf,
    /// Path relative to the service directory (default: LOCAL's file name;
    /// ending in '/': a directory, LOCAL's file name is appended).
    pub remote: Option<String>,
    /// Node to send to (default: the node in the service's definition).
    #[arg(long)]
    pub node: Option<Name>,
}

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// The service whose directory (/srv/SERVICE/ on its node) holds the file.
    pub service: Name,
    /// Path relative to the service directory.
    pub remote: String,
    /// Where to write (default: REMOTE's file name in the current directory;
    /// an existing directory: REMOTE's file name in it).
    pub local: Option<PathBuf>,
    /// Node to fetch from (default: the node in the service's definition).
    #[arg(long)]
    pub node: Option<Name>,
}

fn progress(total: u64, message: &'static str) -> ProgressBar {
    if total <= PROGRESS_THRESHOLD || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

/// What `-o json` prints for a push or a pull.
#[derive(Debug, Serialize)]
pub struct TransferReport {
    pub direction: &'static str,
    pub node: String,
    pub service: String,
    /// Relative to the service directory, as the agent resolved it.
    pub remote: String,
    pub local: String,
    pub size: u64,
    pub sha256: String,
    /// Octal, e.g. "0644".
    pub mode: String,
}

fn print_report(report: &TransferReport, format: OutputFormat) -> Result<()> {
    if format == OutputFormat::Json {
        return print_json(report);
    }
    let (arrow, from, to) = match report.direction {
        "push" => (
            "->",
            report.local.clone(),
            format!("{}:{}/{}", report.node, report.service, report.remote),
        ),
        _ => (
            "->",
            format!("{}:{}/{}", report.node, report.service, report.remote),
            report.local.clone(),
        ),
    };
    writeln!(
        std::io::stdout().lock(),
        "{}ed {from} {arrow} {to} ({}, mode {}, sha256 {})",
        report.direction,
        human_size(report.size),
        report.mode,
        report.sha256
    )?;
    Ok(())
}

/// SHA-256 of a file, read in chunks (on a blocking thread).
async fn hash_file(path: PathBuf, size: u64) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let bar = progress(size, "hashing");
        let mut file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK_SIZE];
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bar.inc(n as u64);
        }
        bar.finish_and_clear();
        Ok(hex::encode(hasher.finalize()))
    })
    .await?
}

pub(super) async fn push(cx: &Context, args: PushArgs) -> Result<ExitCode> {
    let node = node_of(cx, &args.service, args.node)?;
    let local = args.local;
    let meta =
        std::fs::metadata(&local).with_context(|| format!("cannot read {}", local.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", local.display());
    }
    let file_name = local
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{} has no usable file name", local.display()))?;
    let remote = match args.remote {
        None => file_name.to_string(),
        Some(r) if r.ends_with('/') => format!("{r}{file_name}"),
        Some(r) => r,
    };
    let size = meta.len();
    let mode = meta.permissions().mode() & 0o7777;
    let sha256 = hash_file(local.clone(), size).await?;

    let mut client = FilesClient::new(cx.channel(&node).await?)
        .max_decoding_message_size(MAX_FILES_MESSAGE_BYTES);
    let file = tokio::fs::File::open(&local)
        .await
        .with_context(|| format!("cannot open {}", local.display()))?;
    let header = proto::PushChunk {
        part: Some(push_chunk::Part::Header(proto::PushHeader {
            service: args.service.to_string(),
            path: remote.clone(),
            mode,
            size,
            sha256: sha256.clone(),
        })),
    };
    let bar = progress(size, "pushing");
    // A local read error ends the stream early (the agent then discards the
    // partial file); the error itself is kept here to report.
    let read_error: Arc<Mutex<Option<std::io::Error>>> = Arc::default();
    let data = futures::stream::unfold(
        (file, size, bar.clone(), read_error.clone()),
        |(mut file, remaining, bar, err)| async move {
            use tokio::io::AsyncReadExt;
            if remaining == 0 {
                return None;
            }
            let mut buf = vec![0u8; (CHUNK_SIZE as u64).min(remaining) as usize];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    bar.inc(n as u64);
                    let chunk = proto::PushChunk {
                        part: Some(push_chunk::Part::Data(buf)),
                    };
                    Some((chunk, (file, remaining - n as u64, bar, err)))
                }
                Err(e) => {
                    if let Ok(mut slot) = err.lock() {
                        *slot = Some(e);
                    }
                    None
                }
            }
        },
    );
    let stream = futures::stream::once(async move { header }).chain(data);
    let outcome = client.push(stream).await;
    bar.finish_and_clear();
    if let Some(e) = read_error.lock().ok().and_then(|mut e| e.take()) {
        return Err(anyhow!(e)).with_context(|| {
            format!(
                "reading {} failed; nothing was written on {node}",
                local.display()
            )
        });
    }
    let result = outcome
        .map_err(|s| describe_status(&node, &s))?
        .into_inner();
    if result.mode != mode {
        eprintln!(
            "mcp: note: {} has mode {mode:04o}; the agent strips setuid/setgid: the copy has {:04o}",
            local.display(),
            result.mode
        );
    }
    print_report(
        &TransferReport {
            direction: "push",
            node: node.to_string(),
            service: result.service,
            remote: result.path,
            local: local.display().to_string(),
            size: result.size,
            sha256: result.sha256,
            mode: format!("{:04o}", result.mode),
        },
        cx.format,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Where a pull writes: LOCAL, LOCAL/<name> for a directory, or ./<name>.
fn pull_destination(remote: &str, local: Option<PathBuf>) -> Result<PathBuf> {
    let name = remote.rsplit('/').next().unwrap_or_default();
    let name_ok = !name.is_empty() && name != "." && name != "..";
    let named = |dir: &Path| -> Result<PathBuf> {
        if !name_ok {
            bail!("{remote:?} does not end in a file name: give LOCAL explicitly");
        }
        Ok(dir.join(name))
    };
    match local {
        None => named(Path::new(".")),
        Some(p) if p.is_dir() || p.as_os_str().to_string_lossy().ends_with('/') => named(&p),
        Some(p) => Ok(p),
    }
}

pub(super) async fn pull(cx: &Context, args: PullArgs) -> Result<ExitCode> {
    let node = node_of(cx, &args.service, args.node)?;
    let dest = pull_destination(&args.remote, args.local)?;
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("pull");
    let mut client = FilesClient::new(cx.channel(&node).await?)
        .max_decoding_message_size(MAX_FILES_MESSAGE_BYTES);
    let mut stream = client
        .pull(proto::PullRequest {
            service: args.service.to_string(),
            path: args.remote.clone(),
        })
        .await
        .map_err(|s| describe_status(&node, &s))?
        .into_inner();
    let header = match stream
        .message()
        .await
        .map_err(|s| describe_status(&node, &s))?
        .and_then(|c| c.part)
    {
        Some(pull_chunk::Part::Header(h)) => h,
        _ => bail!("node {node}: the agent's answer did not start with a header"),
    };

    // The temp file is removed when dropped: on any error, and on Ctrl-C.
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}.mcp-pull-"))
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
    let mut out = tokio::fs::File::from_std(
        temp.as_file()
            .try_clone()
            .context("cannot reopen the temp file")?,
    );
    let bar = progress(header.size, "pulling");
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let receive = async {
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| describe_status(&node, &s))?
        {
            let Some(pull_chunk::Part::Data(data)) = chunk.part else {
                bail!("node {node}: a second header in the data");
            };
            received += data.len() as u64;
            if received > header.size {
                bail!(
                    "node {node}: more data than the {} bytes announced",
                    header.size
                );
            }
            hasher.update(&data);
            out.write_all(&data)
                .await
                .with_context(|| format!("cannot write in {}", dir.display()))?;
            bar.inc(data.len() as u64);
        }
        out.flush().await?;
        Ok(())
    };
    tokio::select! {
        r = receive => r?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted: nothing was written"),
    }
    bar.finish_and_clear();
    if received != header.size {
        bail!(
            "node {node}: the transfer ended after {received} of {} bytes: nothing was written",
            header.size
        );
    }
    let sha256 = hex::encode(hasher.finalize());
    if sha256 != header.sha256 {
        bail!(
            "node {node}: SHA-256 mismatch: received data hashes to {sha256}, the agent announced {} \
             (did the file change on the node while it was sent?): nothing was written",
            header.sha256
        );
    }
    let mode = header.mode & ALLOWED_MODE_BITS;
    let file = temp.as_file();
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .context("cannot set the file's mode")?;
    file.sync_all().context("fsync")?;
    temp.persist(&dest)
        .with_context(|| format!("cannot rename into {}", dest.display()))?;
    print_report(
        &TransferReport {
            direction: "pull",
            node: node.to_string(),
            service: args.service.to_string(),
            remote: header.path,
            local: dest.display().to_string(),
            size: received,
            sha256,
            mode: format!("{mode:04o}"),
        },
        cx.format,
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_destinations() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(
            pull_destination("conf/app.toml", None).unwrap(),
            Path::new("./app.toml")
        );
        assert_eq!(
            pull_destination("conf/app.toml", Some(tmp.path().to_path_buf())).unwrap(),
            tmp.path().join("app.toml")
        );
        assert_eq!(
            pull_destination("conf/app.toml", Some("x/y.toml".into())).unwrap(),
            Path::new("x/y.toml")
        );
        assert_eq!(
            pull_destination("a", Some("newdir/".into())).unwrap(),
            Path::new("newdir/a")
        );
        assert!(pull_destination("conf/..", None).is_err());
        assert!(pull_destination("conf/", None).is_err());
        assert!(pull_destination("conf/", Some("out".into())).is_ok());
    }
}
