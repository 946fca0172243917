//! End-to-end: `mcp push`/`mcp pull` under `<srv-root>/<service>/`, `mcp node`
//! and `mcp service show|edit|export`, with the real binaries and podman.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, Agent, Operator, Podman, TEST_IMAGE};
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;
/// The agent's resident memory must stay below this during transfers.
const MEMORY_LIMIT_KIB: u64 = 64 * 1024;

/// A podman, an agent whose srv root is a temp dir, and an operator whose
/// definition of `data` runs on that agent's node.
struct Setup {
    _podman: Podman,
    agent: Agent,
    operator: Operator,
    /// Holds `srv/` (the agent's srv root), `outside/` and `local/`.
    tmp: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let podman = Podman::start();
        let tmp = tempfile::Builder::new()
            .prefix("mcp-files-")
            .tempdir()
            .unwrap();
        for d in ["srv/data", "outside", "local"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        let srv = tmp.path().join("srv");
        let agent = Agent::start_with(
            &podman,
            "n1",
            None,
            &["--auth", "local", "--srv-root", srv.to_str().unwrap()],
        );
        let operator = Operator::new(&[&agent]);
        operator.define("data", &definition("data", &srv, "sleep 3600"));
        Setup {
            _podman: podman,
            agent,
            operator,
            tmp,
        }
    }

    fn srv(&self) -> PathBuf {
        self.tmp.path().join("srv")
    }

    fn service_dir(&self) -> PathBuf {
        self.srv().join("data")
    }

    fn local(&self, name: &str) -> PathBuf {
        self.tmp.path().join("local").join(name)
    }
}

/// A two-component definition; `api` mounts `<srv>/<name>` read-only.
fn definition(name: &str, srv: &Path, sleep: &str) -> String {
    let srv = srv.display();
    format!(
        r#"name = "{name}"
node = "n1"
active = true

[[components]]
name    = "api"
image   = "{TEST_IMAGE}"
restart = "unless-stopped"
cmd     = ["/bin/busybox", "sh", "-c", "{sleep}"]
env     = {{ MODE = "a \"quoted\" value", LEVEL = "2" }}
volumes = ["{srv}/{name}:/srv/{name}:ro"]

[[components]]
name  = "worker"
image = "{TEST_IMAGE}"
cmd   = ["/bin/busybox", "sleep", "3600"]
"#
    )
}

/// Writes `size` pseudo-random bytes (xorshift, not compressible) to `path`;
/// returns their SHA-256.
fn random_file(path: &Path, size: u64) -> String {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ size;
    let mut block = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(MIB) as usize;
        hasher.update(&block[..n]);
        file.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
    hex::encode(hasher.finalize())
}

fn sha256_of(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hex::encode(hasher.finalize())
}

/// (VmRSS, VmHWM) of a process, KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Runs `child` to completion while sampling `pid`'s VmRSS; returns its
/// output and the highest VmRSS seen (KiB).
fn run_watching_memory(child: Child, pid: u32) -> (std::process::Output, u64) {
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                if let Some((rss, _)) = memory_kib(pid) {
                    peak = peak.max(rss);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let output = child.wait_with_output().unwrap();
    done.store(true, Ordering::Relaxed);
    (output, sampler.join().unwrap())
}

fn assert_ok(output: &std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every path under `dir`, relative, sorted (symlinks not followed).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if path.symlink_metadata().unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn temp_files(dir: &Path) -> Vec<String> {
    tree(dir)
        .into_iter()
        .filter(|p| p.contains(".mcp-push-"))
        .collect()
}

#[test]
fn a_200_mib_push_and_pull_round_trip_in_bounded_memory() {
    let s = Setup::new();
    let pid = s.agent.pid().unwrap();
    let big = s.local("big.bin");
    let sha = random_file(&big, 200 * MIB);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o640)).unwrap();

    let push = s
        .operator
        .command(&[
            "push",
            "data",
            big.to_str().unwrap(),
            "blobs/",
            "-o",
            "json",
        ])
        .spawn()
        .unwrap();
    let (output, push_peak) = run_watching_memory(push, pid);
    assert_ok(&output, "push");
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["remote"], "blobs/big.bin");
    assert_eq!(result["sha256"], sha);
    assert_eq!(result["size"], 200 * MIB);
    assert_eq!(result["mode"], "0640");
    let remote = s.service_dir().join("blobs/big.bin");
    assert_eq!(sha256_of(&remote), sha);
    assert_eq!(
        std::fs::metadata(&remote).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    assert!(temp_files(&s.service_dir()).is_empty());

    let back = s.local("back.bin");
    let pull = s
        .operator
        .command(&[
            "pull",
            "data",
            "blobs/big.bin",
            back.to_str().unwrap(),
            "-o",
            "json",
        ])
        .spawn()
        .unwrap();
    let (output, pull_peak) = run_watching_memory(pull, pid);
    assert_ok(&output, "pull");
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["sha256"], sha);
    assert_eq!(sha256_of(&back), sha);
    assert_eq!(
        std::fs::metadata(&back).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    // No temp file left next to the destination.
    assert_eq!(tree(&s.tmp.path().join("local")), ["back.bin", "big.bin"]);

    let (_, hwm) = memory_kib(pid).unwrap();
    eprintln!("agent VmRSS peak: push {push_peak} KiB, pull {pull_peak} KiB; VmHWM {hwm} KiB");
    assert!(push_peak > 0 && pull_peak > 0, "memory was not sampled");
    for (what, kib) in [("push", push_peak), ("pull", pull_peak), ("VmHWM", hwm)] {
        assert!(
            kib < MEMORY_LIMIT_KIB,
            "{what}: the agent's resident memory reached {kib} KiB (limit {MEMORY_LIMIT_KIB} KiB)"
        );
    }
}

/// A raw gRPC client for what the CLI cannot send (a NUL byte in a path:
/// command-line arguments are C strings) or would not do (drop a stream
/// half-way).
mod raw {
    use super::*;
    use mcp::proto;
    use mcp::proto::files_client::FilesClient;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};

    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    pub async fn client(agent: &Agent) -> FilesClient<Channel> {
        let ca = std::fs::read(agent.ca_path()).unwrap();
        let channel = Channel::from_shared(format!("https://127.0.0.1:{}", agent.port))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name("localhost"),
            )
            .unwrap()
            .connect()
            .await
            .unwrap();
        FilesClient::new(channel)
    }

    pub fn authed<T>(agent: &Agent, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", agent.token()).parse().unwrap(),
        );
        request
    }

    pub fn header(path: &str, size: u64, sha256: &str) -> proto::PushChunk {
        proto::PushChunk {
            part: Some(proto::push_chunk::Part::Header(proto::PushHeader {
                service: "data".into(),
                path: path.into(),
                mode: 0o644,
                size,
                sha256: sha256.into(),
            })),
        }
    }

    pub fn data(bytes: Vec<u8>) -> proto::PushChunk {
        proto::PushChunk {
            part: Some(proto::push_chunk::Part::Data(bytes)),
        }
    }
}

#[test]
fn traversals_are_refused_and_write_nothing_outside() {
    let s = Setup::new();
    std::os::unix::fs::symlink("/etc", s.service_dir().join("etc")).unwrap();
    std::os::unix::fs::symlink("../../outside", s.service_dir().join("out")).unwrap();
    let payload = s.local("payload.txt");
    std::fs::write(&payload, "payload\n").unwrap();
    let marker = "mcp-files-test-marker";
    let before = tree(s.tmp.path());

    let cases = [
        ("../x", "'..' is refused"),
        ("/etc/passwd", "absolute paths are refused"),
        ("etc/passwd", "symlink to /etc"),
        (&format!("etc/{marker}") as &str, "symlink to /etc"),
        ("out/x", "leads outside the service directory"),
    ];
    for (path, why) in cases {
        let push = s
            .operator
            .run(&["push", "data", payload.to_str().unwrap(), path]);
        assert_ne!(push.code, 0, "push to {path:?} succeeded");
        assert!(push.stderr.contains(why), "push {path:?}: {}", push.stderr);
        let target = s.local("pulled");
        let pull = s
            .operator
            .run(&["pull", "data", path, target.to_str().unwrap()]);
        assert_ne!(pull.code, 0, "pull of {path:?} succeeded");
        assert!(pull.stderr.contains(why), "pull {path:?}: {}", pull.stderr);
        assert!(!target.exists());
    }

    // A NUL byte cannot be on a command line: a raw client sends it.
    let rt = raw::runtime();
    rt.block_on(async {
        let mut client = raw::client(&s.agent).await;
        let sha = hex::encode(Sha256::digest(b"x"));
        let stream =
            futures::stream::iter(vec![raw::header("a\0b", 1, &sha), raw::data(b"x".to_vec())]);
        let status = client
            .push(raw::authed(&s.agent, stream))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("NUL byte"),
            "{}",
            status.message()
        );
        let status = client
            .pull(raw::authed(
                &s.agent,
                mcp::proto::PullRequest {
                    service: "data".into(),
                    path: "etc\0/passwd".into(),
                },
            ))
            .await
            .unwrap_err();
        assert!(
            status.message().contains("NUL byte"),
            "{}",
            status.message()
        );
        // And no token, no transfer.
        let stream =
            futures::stream::iter(vec![raw::header("x", 1, &sha), raw::data(b"x".to_vec())]);
        let status = client.push(stream).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    });

    assert_eq!(tree(s.tmp.path()), before, "something was written");
    assert!(!Path::new("/etc").join(marker).exists());

    // The same paths inside are fine.
    s.operator
        .ok(&["push", "data", payload.to_str().unwrap(), "x"]);
    assert_eq!(
        std::fs::read(s.service_dir().join("x")).unwrap(),
        b"payload\n"
    );
}

#[test]
fn interrupted_pushes_leave_nothing() {
    let s = Setup::new();
    let dir = s.service_dir();

    // 1. The mcp process is killed half-way through.
    let big = s.local("big.bin");
    random_file(&big, 200 * MIB);
    let mut push = s
        .operator
        .command(&["push", "data", big.to_str().unwrap(), "big.bin"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let temp = eventually(
        "a push temp file with data",
        Duration::from_secs(60),
        || {
            std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| e.ok())
                .find(|e| {
                    e.file_name().to_string_lossy().starts_with(".mcp-push-")
                        && e.metadata().is_ok_and(|m| m.len() > 16 * MIB)
                })
                .map(|e| e.path())
        },
    );
    push.kill().unwrap();
    push.wait().unwrap();
    eventually("the temp file to go", Duration::from_secs(20), || {
        (!temp.exists()).then_some(())
    });
    assert!(tree(&dir).is_empty(), "left behind: {:?}", tree(&dir));

    // 2. A client whose stream ends early, and one that goes away mid-stream.
    let rt = raw::runtime();
    rt.block_on(async {
        let mut client = raw::client(&s.agent).await;
        let data = vec![5u8; 1024 * 1024];
        let sha = hex::encode(Sha256::digest(&data));
        let stream = futures::stream::iter(vec![
            raw::header("short.bin", data.len() as u64, &sha),
            raw::data(data[..300_000].to_vec()),
        ]);
        let status = client
            .push(raw::authed(&s.agent, stream))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::DataLoss);
        assert!(
            status
                .message()
                .contains("ended after 300000 of 1048576 bytes"),
            "{}",
            status.message()
        );
    });
    // A client that stalls half-way, then goes away (its runtime, and so its
    // connection, is dropped).
    let rt = raw::runtime();
    rt.block_on(async {
        use futures::StreamExt;
        let mut client = raw::client(&s.agent).await;
        let data = vec![5u8; 1024 * 1024];
        let sha = hex::encode(Sha256::digest(&data));
        let stream = futures::stream::iter(vec![
            raw::header("dropped.bin", data.len() as u64, &sha),
            raw::data(data[..500_000].to_vec()),
        ])
        .chain(futures::stream::pending());
        let call = client.push(raw::authed(&s.agent, stream));
        assert!(tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .is_err());
        assert_eq!(
            temp_files(&dir).len(),
            1,
            "the stalled push's temp file is there"
        );
    });
    drop(rt);
    eventually(
        "the dropped push to be cleaned up",
        Duration::from_secs(20),
        || temp_files(&dir).is_empty().then_some(()),
    );
    assert!(tree(&dir).is_empty(), "left behind: {:?}", tree(&dir));
    eventually(
        "the agent to log the abandoned push",
        Duration::from_secs(10),
        || s.agent.log().contains("push abandoned").then_some(()),
    );
}

#[test]
fn size_limit_is_enforced() {
    let podman = Podman::start();
    let srv = tempfile::tempdir().unwrap();
    let agent = Agent::start_with(
        &podman,
        "n1",
        None,
        &[
            "--auth",
            "local",
            "--srv-root",
            srv.path().to_str().unwrap(),
            "--max-file-size",
            "1MiB",
        ],
    );
    let operator = Operator::new(&[&agent]);
    let local = tempfile::tempdir().unwrap();
    let big = local.path().join("big.bin");
    random_file(&big, MIB + 1);
    operator.fails(
        &["push", "data", big.to_str().unwrap(), "--node", "n1"],
        "--max-file-size",
    );
    assert!(tree(srv.path()).is_empty(), "{:?}", tree(srv.path()));
    let ok = local.path().join("ok.bin");
    random_file(&ok, MIB);
    operator.ok(&["push", "data", ok.to_str().unwrap(), "--node", "n1"]);
    assert_eq!(tree(srv.path()), ["data", "data/ok.bin"]);
}

#[test]
fn the_agents_own_files_are_out_of_reach() {
    // The registry's directory inside a service directory: its files must
    // still be unreachable (the state directory is protected the same way).
    let podman = Podman::start();
    let srv = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(srv.path().join("data/registry")).unwrap();
    let db = srv.path().join("data/registry/mcp.db");
    // The agent's config file in another service's directory: protected too.
    std::fs::create_dir_all(srv.path().join("conf/agent")).unwrap();
    let config = srv.path().join("conf/agent/agent.toml");
    std::fs::write(&config, "[watch]\nscan_interval_secs = 60\n").unwrap();
    let agent = Agent::start_with(
        &podman,
        "n1",
        None,
        &[
            "--auth",
            "local",
            "--srv-root",
            srv.path().to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let operator = Operator::new(&[&agent]);
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("mcp.db");
    std::fs::write(&file, "not a database").unwrap();
    // (The registry's own files may come and go: -wal, -shm.)
    let outside_registry = || -> Vec<String> {
        tree(srv.path())
            .into_iter()
            .filter(|p| !p.starts_with("data/registry/"))
            .collect()
    };
    let before = outside_registry();
    operator.fails(
        &[
            "push",
            "data",
            file.to_str().unwrap(),
            "registry/mcp.db",
            "--node",
            "n1",
        ],
        "holds the agent's own state",
    );
    let out = local.path().join("stolen.db");
    operator.fails(
        &[
            "pull",
            "data",
            "registry/mcp.db",
            out.to_str().unwrap(),
            "--node",
            "n1",
        ],
        "holds the agent's own state",
    );
    assert!(!out.exists());
    operator.fails(
        &[
            "pull",
            "conf",
            "agent/agent.toml",
            out.to_str().unwrap(),
            "--node",
            "n1",
        ],
        "holds the agent's own state",
    );
    assert!(!out.exists());
    assert_eq!(outside_registry(), before);
    assert!(tree(srv.path()).iter().all(|p| !p.contains(".mcp-push-")));
    // The rest of the service directory is as usual.
    operator.ok(&[
        "push",
        "data",
        file.to_str().unwrap(),
        "other.db",
        "--node",
        "n1",
    ]);
}

#[test]
fn export_of_a_deployed_service_parses_back_to_the_definition() {
    let s = Setup::new();
    let local_path = s.operator.services_dir().join("data.toml");
    let local = mcp::spec::load_service(&local_path).unwrap();
    s.operator.ok(&["deploy", "data"]);

    let first = s.operator.ok(&["service", "export", "data"]).stdout;
    let exported = mcp::spec::parse_service(Path::new("data.toml"), &first)
        .unwrap_or_else(|e| panic!("{e}\n{first}"));
    assert_eq!(exported, local, "{first}");
    let second = s.operator.ok(&["service", "export", "data"]).stdout;
    assert_eq!(first, second, "export is not byte-for-byte stable");

    // What runs is what is exported: a definition synced but not deployed
    // does not change it.
    s.operator
        .define("data", &definition("data", &s.srv(), "sleep 7200"));
    s.operator.ok(&["sync"]);
    let third = s.operator.ok(&["service", "export", "data"]).stdout;
    assert_eq!(third, first);
    // Deployed, it does.
    s.operator.ok(&["deploy", "data"]);
    let fourth = s.operator.ok(&["service", "export", "data"]).stdout;
    assert!(fourth.contains("sleep 7200"), "{fourth}");
    assert_eq!(
        mcp::spec::parse_service(Path::new("data.toml"), &fourth).unwrap(),
        mcp::spec::load_service(&local_path).unwrap()
    );

    let json = s
        .operator
        .ok(&["service", "export", "data", "-o", "json"])
        .json();
    assert_eq!(json["node"], "n1");
    assert_eq!(json["service"]["components"].as_array().unwrap().len(), 2);
    s.operator.fails(
        &["service", "export", "nothing", "--node", "n1"],
        "not on node n1",
    );
}

#[test]
fn node_shows_sane_numbers() {
    let s = Setup::new();
    s.operator.ok(&["deploy", "data"]);
    let json = s.operator.ok(&["node", "-o", "json"]).json();
    let n = &json[0];
    assert_eq!(n["node"], "n1");
    let num = |k: &str| n[k].as_u64().unwrap_or_else(|| panic!("{k} in {n}"));
    assert!(num("cpus") >= 1);
    assert!(num("memory_total_bytes") > 64 * MIB);
    assert!(num("memory_available_bytes") <= num("memory_total_bytes"));
    assert!(num("disk_total_bytes") > 0);
    assert!(num("disk_free_bytes") <= num("disk_total_bytes"));
    assert_eq!(n["disk_path"], s.srv().display().to_string());
    for k in ["load1", "load5", "load15"] {
        let load = n[k].as_f64().unwrap();
        assert!((0.0..1000.0).contains(&load), "{k} = {load}");
    }
    assert_eq!(n["agent_version"], env!("CARGO_PKG_VERSION"));
    assert!(num("agent_uptime_secs") < 3600);
    assert!(num("system_uptime_secs") >= num("agent_uptime_secs"));
    assert_eq!(n["containers_error"], "");
    let running = n["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["state"] == "running")
        .unwrap_or_else(|| panic!("no running containers in {n}"));
    assert_eq!(running["count"], 2);

    let table = s.operator.ok(&["node", "n1"]).stdout;
    assert!(
        table.contains("n1") && table.contains("2 running"),
        "{table}"
    );
    s.operator.fails(&["node", "n2"], "node n2 is not in");
}

#[test]
fn service_show_and_edit_with_the_real_binary() {
    let operator = Operator::new(&[]);
    operator.define("data", &definition("data", Path::new("/srv"), "sleep 3600"));
    let path = operator.services_dir().join("data.toml");
    let shown = operator.ok(&["service", "show", "data"]).stdout;
    assert_eq!(shown, std::fs::read_to_string(&path).unwrap());
    let json = operator
        .ok(&["service", "show", "data", "-o", "json"])
        .json();
    assert_eq!(json["components"][0]["name"], "api");

    // An editor that makes a valid change; stdin is not a terminal.
    let scripts = tempfile::tempdir().unwrap();
    let editor = |name: &str, body: &str| -> String {
        let p = scripts.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    };
    let good = editor("good", r#"sed -i 's/sleep 3600"/sleep 60"/' "$1""#);
    let out = operator
        .command(&["service", "edit", "data"])
        .env("EDITOR", &good)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ok(&out, "service edit");
    let edited = std::fs::read_to_string(&path).unwrap();
    assert!(edited.contains("sleep 60\""), "{edited}");

    // An invalid edit without a terminal fails and writes nothing. The
    // editor gets extra words from $EDITOR, split on white space.
    let bad = editor(
        "bad",
        r#"test "$1" = "--flag"; sed -i 's/^image /imagee /' "$2""#,
    );
    let out = operator
        .command(&["service", "edit", "data"])
        .env("EDITOR", format!("{bad} --flag"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("data.toml:7:1") && stderr.contains("unknown field"),
        "{stderr}"
    );
    assert!(stderr.contains("was not changed"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);

    // show validates.
    std::fs::write(
        &path,
        edited.replace("restart = \"unless-stopped\"", "restart = \"sometimes\""),
    )
    .unwrap();
    let run = operator.fails(&["service", "show", "data"], "data.toml:8:");
    assert!(run.stdout.is_empty());
}
