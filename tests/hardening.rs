//! What an attacker can and cannot make the real agent do: a flood of
//! connections that never speak, definitions that try to reach the host,
//! secrets left readable, certificates. The real `mcp-agent` and `mcp`
//! binaries throughout; podman where a definition is deployed.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, Agent, Operator, Podman, Run};

/// Raises this test process's own descriptor limit: it opens over a
/// thousand connections.
fn raise_own_descriptor_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    assert!(
        now >= 4096,
        "the test needs 4096 descriptors; this machine's hard limit is {now}"
    );
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A TLS connection that completes its handshake and the HTTP/2 preface,
/// then never sends a request; resolves to when the agent closed it.
async fn silent_tls_session(port: u16, ca: &Path) -> tokio::task::JoinHandle<Instant> {
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls_pki_types::CertificateDer::from_pem_file(ca).unwrap();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    // The HTTP/2 client preface and an empty SETTINGS frame; then nothing.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tls.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    tls.flush().await.unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
}

/// True once the agent has closed `socket` (end of stream or reset).
fn closed_by_peer(socket: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match socket.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// 1,100 TCP connections that send nothing and 50 TLS sessions that never
/// send a request, against an agent limited to 1,024 descriptors: `mcp list`
/// still answers, and every one of those connections is closed by the
/// agent after its timeout. `limits` is the agent's `[limits]` section.
async fn flood(limits: &str, out_of_descriptors: bool) {
    raise_own_descriptor_limit();
    let config = format!("[limits]\nidle_timeout_secs = 3\n{limits}");
    let mut agent = Agent::new("n1", Some(&config), &["--auth", "local"]);
    agent.nofile = Some(1024);
    let no_runtime = agent.dir.path().join("no-runtime.sock");
    agent.spawn(&no_runtime);
    let pid = agent.pid().unwrap();
    let operator = Operator::new(&[&agent]);

    let started = Instant::now();
    let ticks_before = cpu_ticks(pid);
    let mut sessions = Vec::new();
    for _ in 0..50 {
        sessions.push(silent_tls_session(agent.port, &agent.ca_path()).await);
    }
    let mut silent: Vec<TcpStream> = (0..1100)
        .map(|_| TcpStream::connect(("127.0.0.1", agent.port)).unwrap())
        .collect();
    let descriptors = open_descriptors(pid);
    let flooded = started.elapsed();

    let list = {
        let operator_run = tokio::task::spawn_blocking(move || {
            let run = operator.run(&["list"]);
            (operator, run)
        });
        operator_run.await.unwrap()
    };
    let (operator, list): (Operator, Run) = list;
    let list_took = started.elapsed() - flooded;
    assert_eq!(
        list.code, 0,
        "mcp list failed under the flood: {}",
        list.stderr
    );

    // Every silent connection is closed by the agent (handshake deadline).
    for s in &silent {
        s.set_nonblocking(true).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut open = silent.len();
    while open > 0 {
        open = 0;
        for s in silent.iter_mut() {
            if !closed_by_peer(s) {
                open += 1;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{open} silent connections still open after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let silent_closed = started.elapsed();
    // And every idle TLS session (idle timeout).
    let mut tls_closed = Vec::new();
    for s in sessions {
        let at = tokio::time::timeout(Duration::from_secs(60), s)
            .await
            .expect("an idle TLS session stayed open for 60 s")
            .unwrap();
        tls_closed.push(at.duration_since(started));
    }
    let ticks = cpu_ticks(pid) - ticks_before;
    let elapsed = started.elapsed();
    // SC_CLK_TCK is 100 on Linux.
    let cpu = ticks as f64 / 100.0 / elapsed.as_secs_f64() * 100.0;
    eprintln!(
        "flood ({limits:?}): connections opened in {flooded:?}, the agent then held \
         {descriptors} descriptors; `mcp list` answered {list_took:?} later; silent connections all closed after {silent_closed:?}; \
         idle TLS sessions closed between {:?} and {:?}; agent CPU {cpu:.1}% of a core over \
         {elapsed:?}",
        tls_closed.iter().min().unwrap(),
        tls_closed.iter().max().unwrap(),
    );

    // Still serving, and the log was not flooded.
    operator.ok(&["list"]);
    let log = agent.log();
    let reports = log.matches("cannot accept").count();
    eprintln!("{reports} report(s) of running out of descriptors in the agent's log");
    assert!(reports <= 6, "{reports} accept reports in the log:\n{log}");
    if out_of_descriptors {
        assert!(
            reports >= 1,
            "the agent never ran out of descriptors:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_the_descriptor_limit_leaves_the_operator_a_way_in() {
    // A cap above the descriptor limit, and the default handshake deadline
    // (10 s): the accept loop runs out of descriptors and must back off and
    // close connections still in their handshake.
    flood("max_connections = 4096\n", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_against_the_default_cap_leaves_the_operator_a_way_in() {
    // 1,150 connections against a cap of 512: the oldest handshakes make room.
    flood("handshake_timeout_secs = 2\n", false).await;
}

/// A service directory `svc` in the agent's srv root, a directory outside
/// every root, and a link inside `svc` that leads to it.
struct Ground {
    outside: tempfile::TempDir,
}

fn ground(srv: &Path) -> Ground {
    let outside = tempfile::Builder::new()
        .prefix("mcp-outside-")
        .tempdir()
        .unwrap();
    let svc = srv.join("svc");
    std::fs::create_dir_all(&svc).unwrap();
    std::os::unix::fs::symlink(outside.path(), svc.join("link")).unwrap();
    Ground { outside }
}

fn definition(volume: Option<&str>, network: Option<&str>) -> String {
    let mut text = format!(
        "name = \"svc\"\nnode = \"n1\"\n\n[[components]]\nname = \"main\"\nimage = \"{}\"\n\
         cmd = [\"sleep\", \"600\"]\n",
        common::TEST_IMAGE
    );
    if let Some(v) = volume {
        text.push_str(&format!("volumes = [\"{v}\"]\n"));
    }
    if let Some(n) = network {
        text.push_str(&format!("network = \"{n}\"\n"));
    }
    text
}

/// An agent whose srv root is `srv`, with its state directory in it (as
/// `/srv/mcp` lies in `/srv` by default).
fn policy_agent(podman: &Podman, config: &str, srv: &Path) -> Agent {
    let mut agent = Agent::new_in(srv, "n1", Some(config), &["--auth", "local"]);
    agent.add_args(&["--srv-root", &srv.display().to_string()]);
    agent.spawn(&podman.socket);
    agent
}

#[test]
fn the_node_policy_refuses_escapes_before_anything_is_created() {
    let podman = Podman::start();
    let root = tempfile::Builder::new()
        .prefix("mcp-srv-")
        .tempdir()
        .unwrap();
    let srv_path = root.path().canonicalize().unwrap();
    let agent = policy_agent(&podman, "", &srv_path);
    let operator = Operator::new(&[&agent]);
    let g = ground(&srv_path);
    let srv = srv_path.display().to_string();
    let state = agent.state_dir().display().to_string();
    let outside = g.outside.path().display().to_string();

    let cases: Vec<(String, Option<&str>, &str)> = vec![
        ("/:/host".into(), None, "never mountable"),
        (format!("{state}:/state"), None, "never mountable"),
        (format!("{state}/tls:/tls"), None, "never mountable"),
        (format!("{srv}/svc/link:/x"), None, "[policy] volume_roots"),
        (format!("{outside}:/data"), None, "[policy] volume_roots"),
        (format!("{outside}:/data:U"), None, "[policy] volume_roots"),
        (
            format!("{srv}/svc:/data"),
            Some("host"),
            "allow_host_network = true",
        ),
    ];
    for (volume, network, says) in &cases {
        operator.define("svc", &definition(Some(volume), *network));
        let what = format!("{volume} {network:?}");
        let diff = operator.run(&["diff", "svc"]);
        assert_eq!(diff.code, 1, "{what}: diff did not fail:\n{}", diff.stdout);
        assert!(
            diff.stderr.contains("refused by its policy") && diff.stderr.contains(says),
            "{what}: {}",
            diff.stderr
        );
        let dry = operator.run(&["deploy", "svc", "--dry-run"]);
        assert_eq!(dry.code, 1, "{what}");
        assert!(dry.stderr.contains(says), "{what}: {}", dry.stderr);
        operator.fails(&["deploy", "svc"], says);
        // Straight to the agent, with no plan first: refused there too.
        let sync = operator.fails(&["sync"], says);
        assert!(
            sync.stderr.contains("refused by this node's policy"),
            "{}",
            sync.stderr
        );
        assert_eq!(podman.containers(), [], "{what}: something was created");
    }
    assert!(operator.ok(&["list", "-o", "json"]).json()[0]["services"]
        .as_array()
        .unwrap()
        .is_empty());

    // A permissive node: roots anywhere, the host's network. The agent's own
    // state, and U outside the service's directory, stay refused.
    drop(agent);
    let config = "[policy]\nvolume_roots = [\"/\"]\nallow_host_network = true\n";
    let agent = policy_agent(&podman, config, &srv_path);
    let operator = Operator::new(&[&agent]);
    let state = agent.state_dir().display().to_string();
    for (volume, network, accepted) in [
        (format!("{srv}/svc/link:/x"), None, true),
        (format!("{outside}:/data"), None, true),
        (format!("{srv}/svc:/data"), Some("host"), true),
        ("/:/host".to_string(), None, false),
        (format!("{state}:/state"), None, false),
        (format!("{state}/tls:/tls"), None, false),
        (format!("{outside}:/data:U"), None, false),
    ] {
        operator.define("svc", &definition(Some(&volume), network));
        if accepted {
            operator.ok(&["deploy", "svc"]);
            assert_eq!(
                podman.state_of("svc-main").as_deref(),
                Some("running"),
                "{volume}"
            );
        } else {
            let run = operator.fails(&["deploy", "svc"], "refused");
            assert!(
                run.stderr.contains("never mountable") || run.stderr.contains("no policy key"),
                "{volume}: {}",
                run.stderr
            );
        }
    }
}

#[test]
fn a_definition_for_another_node_is_refused_by_the_agent() {
    let podman = Podman::start();
    let agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[]);
    // The operator's config calls this agent "n2".
    operator.add_node(
        "n2",
        &format!("127.0.0.1:{}", agent.port),
        &agent.ca_path(),
        None,
    );
    let operator = operator.with_token(&agent.token());
    operator.define(
        "svc",
        &definition(None, None).replace("node = \"n1\"", "node = \"n2\""),
    );
    let run = operator.fails(&["deploy", "svc"], "this agent is node n1");
    assert!(run.stderr.contains("names node n2"), "{}", run.stderr);
    assert_eq!(podman.containers(), []);
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Every file and directory under `dir`, with its mode.
fn modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut all = vec![(dir.to_path_buf(), mode(dir))];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(modes(&path));
        } else {
            all.push((path.clone(), mode(&path)));
        }
    }
    all
}

#[test]
fn the_agents_files_are_private_whatever_the_umask() {
    let podman = Podman::start();
    let mut agent = Agent::new("n1", None, &["--auth", "local"]);
    agent.umask = Some(0o022);
    agent.spawn(&podman.socket);
    let operator = Operator::new(&[&agent]);
    operator.define("svc", &definition(None, None));
    operator.ok(&["deploy", "svc"]);

    let backup = agent.dir.path().join("backup.db");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-agent"));
    common::with_umask(&mut cmd, 0o022);
    let out = cmd
        .args(["backup", "--state-dir"])
        .arg(agent.state_dir())
        .arg(&backup)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&backup), 0o600, "the backup");

    let state = agent.state_dir();
    let all = modes(&state);
    let names: Vec<String> = all
        .iter()
        .map(|(p, _)| p.strip_prefix(&state).unwrap().display().to_string())
        .collect();
    for expected in [
        "",
        "tls",
        "token",
        "mcp.db",
        "mcp.db-wal",
        "mcp.db-shm",
        "tls/server.key",
        "tls/ca.key",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "{expected} missing from {names:?}"
        );
    }
    for (path, m) in &all {
        let public = path.extension().is_some_and(|e| e == "pem");
        let expected = if path.is_dir() {
            0o700
        } else if public {
            0o644
        } else {
            0o600
        };
        assert_eq!(*m, expected, "{} is {m:04o}", path.display());
    }

    // A secret left readable by others stops the agent at start.
    agent.kill();
    let token = state.join("token");
    let key = state.join("tls/server.key");
    for (file, what) in [(&token, "the token file"), (&key, "the TLS key")] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = agent.serve_command(&podman.socket).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "the agent started with {what} readable"
        );
        assert!(
            stderr.contains(what) && stderr.contains(&format!("chmod 600 {}", file.display())),
            "{stderr}"
        );
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    agent.spawn(&podman.socket);
    operator.ok(&["list"]);

    // The CLI refuses a token file that others may read, as ssh does.
    let token_file = operator.home.path().join("mcp/token");
    std::fs::write(&token_file, agent.token()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let run = operator
        .command(&["list"])
        .env_remove("MCP_TOKEN")
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 that expires in `days`, in
/// `dir`: (ca.pem, cert.pem, key.pem).
fn short_lived_certificate(dir: &Path, days: i64) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&paths.2, std::fs::Permissions::from_mode(0o600)).unwrap();
    (paths.0, paths.1, paths.2)
}

#[test]
fn certificates_expire_renew_and_are_never_mountable() {
    let podman = Podman::start();
    // The operator's own certificate, expiring in 10 days, in its own directory.
    let keys = tempfile::tempdir().unwrap();
    let (ca, cert, key) = short_lived_certificate(keys.path(), 10);
    let mut agent = Agent::new(
        "n1",
        None,
        &[
            "--auth",
            "local",
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
    );
    agent.ca = Some(ca.clone());
    agent.spawn(&podman.socket);
    let log = eventually("the expiry warning", Duration::from_secs(10), || {
        let log = agent.log();
        log.contains("expires in").then_some(log)
    });
    assert!(log.contains("mcp-agent init --renew"), "{log}");
    let operator = Operator::new(&[&agent]);
    let node = operator.ok(&["node", "-o", "json"]).json();
    let not_after = node[0]["tls_not_after_ms"].as_i64().unwrap();
    let days = (not_after - mcp::registry::now_ms()) / 86_400_000;
    assert!((9..=10).contains(&days), "{node}");
    let table = operator.ok(&["node"]).stdout;
    assert!(table.contains("mcp-agent init --renew"), "{table}");

    // Its key's directory is the agent's secret too.
    operator.define(
        "svc",
        &definition(Some(&format!("{}:/keys", keys.path().display())), None),
    );
    operator.fails(&["deploy", "svc"], "never mountable");

    // A generated identity renews from the same CA: old CLIs keep trusting it.
    let state = tempfile::tempdir().unwrap();
    let init = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-agent"))
            .args(["init", "--node", "n1", "--state-dir"])
            .arg(state.path())
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = init(&[]);
    let fingerprint = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("fingerprint "))
            .unwrap()
            .to_string()
    };
    let server_pem = state.path().join("tls/server.pem");
    let before = std::fs::read(&server_pem).unwrap();
    let renewed = init(&["--renew"]);
    assert!(
        renewed.contains("renewed the server certificate"),
        "{renewed}"
    );
    assert_eq!(fingerprint(&first), fingerprint(&renewed), "the CA changed");
    assert_ne!(std::fs::read(&server_pem).unwrap(), before);
    let valid_until = renewed
        .lines()
        .find_map(|l| l.strip_prefix("valid until "))
        .unwrap();
    let year_from_now = time::OffsetDateTime::now_utc() + time::Duration::days(365);
    assert!(
        valid_until.starts_with(&year_from_now.year().to_string()),
        "{renewed}"
    );
}
