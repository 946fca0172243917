//! The agent for real as a non-root user with rootless podman, the way a node
//! runs it (BRIEF sections 1 and 8): `podman system service` and `mcp-agent`
//! both run as the unprivileged user `mcp-e2e` (made by scripts/setup.sh),
//! and the real `mcp` CLI drives the agent from root.
//!
//! Needs root (to act as `mcp-e2e` through `runuser`), which CI has. Without
//! root or without the user it fails and says how to fix that; it never
//! passes without having run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, free_port, http_get, podman_ps_rows, Operator, TEST_IMAGE};

const USER: &str = "mcp-e2e";
const NODE: &str = "rl";

/// `mcp-e2e`'s uid and home, or a panic that says how to get them.
fn test_user() -> (u32, PathBuf) {
    let euid = capture(Command::new("id").arg("-u"));
    assert!(
        euid.trim() == "0",
        "tests/rootless.rs acts as user {USER} through runuser and so must run as root \
         (CI does); it runs as uid {}. Run it as root after scripts/setup.sh.",
        euid.trim()
    );
    let id = Command::new("id").args(["-u", USER]).output().unwrap();
    assert!(
        id.status.success(),
        "user {USER} does not exist: run scripts/setup.sh (as root or with sudo) to create it"
    );
    let uid: u32 = String::from_utf8_lossy(&id.stdout).trim().parse().unwrap();
    for f in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{USER}:"))),
            "{f} has no range for {USER}, which rootless podman needs: run scripts/setup.sh"
        );
    }
    (uid, PathBuf::from(format!("/home/{USER}")))
}

fn capture(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chown(path: &Path, uid: u32) {
    capture(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{uid}"))
            .arg(path),
    );
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Everything of one rootless node under one directory owned by the user:
/// podman's storage, runtime dir and socket, a copy of the agent binary, the
/// agent's state. Drop removes the containers, stops the agent, the podman
/// service and podman's pause process, then the directory.
struct RootlessNode {
    dir: tempfile::TempDir,
    home: PathBuf,
    podman_service: Option<Daemon>,
    agent: Option<Daemon>,
    port: u16,
}

/// A process started through runuser. `runuser` forks the real process; the
/// real process writes its pid to `pid_file` before it execs, so it can be
/// signalled by id.
struct Daemon {
    runuser: Child,
    pid_file: PathBuf,
    what: &'static str,
}

impl Daemon {
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }

    fn stop(mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .output();
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.runuser.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM: killing it", self.what);
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .output();
        }
        let _ = self.runuser.kill();
        let _ = self.runuser.wait();
    }
}

impl RootlessNode {
    fn start() -> RootlessNode {
        let (uid, home) = test_user();
        // Under /tmp (mode 1777): the user can reach it whatever the
        // permissions of the repository and target directories.
        let dir = tempfile::Builder::new()
            .prefix("mcp-rootless-")
            .tempdir_in("/tmp")
            .unwrap();
        let base = dir.path();
        for sub in ["run", "storage", "runroot", "tmp", "state", "bin"] {
            std::fs::create_dir(base.join(sub)).unwrap();
        }
        std::fs::copy(common::containers_conf(), base.join("containers.conf")).unwrap();
        std::fs::copy(common::test_image_tarball(), base.join("image.tar")).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_mcp-agent"), base.join("bin/mcp-agent")).unwrap();
        chown(base, uid);
        chmod(base, 0o700);
        chmod(&base.join("run"), 0o700);
        chmod(&base.join("state"), 0o700);
        chmod(&base.join("bin/mcp-agent"), 0o755);

        let mut node = RootlessNode {
            dir,
            home,
            podman_service: None,
            agent: None,
            port: free_port(),
        };
        node.podman_ok(&["import", "--quiet", &node.path("image.tar"), TEST_IMAGE]);
        let socket = node.socket();
        node.podman_service = Some(node.daemon(
            "podman system service",
            node.podman_args(&[
                "system",
                "service",
                "--time=0",
                &format!("unix://{}", socket.display()),
            ]),
        ));
        eventually(
            "the rootless podman socket",
            Duration::from_secs(20),
            || {
                std::os::unix::net::UnixStream::connect(&socket)
                    .ok()
                    .map(|_| ())
            },
        );
        let mut agent = vec![node.path("bin/mcp-agent")];
        agent.extend(
            [
                "serve",
                "--node",
                NODE,
                "--listen",
                &format!("127.0.0.1:{}", node.port),
                "--state-dir",
                &node.path("state"),
                "--runtime-socket",
                &socket.display().to_string(),
                "--auth",
                "local",
                "--stop-timeout",
                "1",
            ]
            .map(String::from),
        );
        node.agent = Some(node.daemon("mcp-agent", agent));
        let (ca, port) = (node.ca(), node.port);
        eventually(
            "the rootless agent to listen",
            Duration::from_secs(20),
            || {
                (ca.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
                    .then_some(())
            },
        );
        node
    }

    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("podman.sock")
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("state/tls/ca.pem")
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("state/token")
    }

    fn log_path(&self, what: &str) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", what.replace(' ', "-")))
    }

    /// `runuser -u mcp-e2e -- env -i <the user's environment> argv...`,
    /// run in the node's directory.
    fn as_user(&self, argv: &[String]) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.current_dir(self.dir.path())
            .args(["-u", USER, "--", "env", "-i"])
            .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .arg(format!("HOME={}", self.home.display()))
            .arg(format!("USER={USER}"))
            .arg(format!("LOGNAME={USER}"))
            .arg(format!("XDG_RUNTIME_DIR={}", self.path("run")))
            .arg(format!("CONTAINERS_CONF={}", self.path("containers.conf")))
            .arg("MCP_LOG=info")
            .args(argv);
        cmd
    }

    /// `podman` with the node's storage, as argv.
    fn podman_args(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            "podman".to_string(),
            "--root".into(),
            self.path("storage"),
            "--runroot".into(),
            self.path("runroot"),
            "--tmpdir".into(),
            self.path("tmp"),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    /// The user's podman, on the node's storage.
    fn podman(&self, args: &[&str]) -> Output {
        self.as_user(&self.podman_args(args))
            .output()
            .expect("runuser podman")
    }

    fn podman_ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(
            out.status.success(),
            "podman {args:?} as {USER} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `argv` as the user in the background; it writes its pid first.
    fn daemon(&self, what: &'static str, argv: Vec<String>) -> Daemon {
        let pid_file = self
            .dir
            .path()
            .join(format!("{}.pid", what.replace(' ', "-")));
        let log = std::fs::File::create(self.log_path(what)).unwrap();
        let mut script = vec![
            "/bin/sh".to_string(),
            "-c".into(),
            r#"echo $$ >"$0" && exec "$@""#.into(),
            pid_file.display().to_string(),
        ];
        script.extend(argv);
        let runuser = self
            .as_user(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("runuser {what}: {e}"));
        let daemon = Daemon {
            runuser,
            pid_file,
            what,
        };
        eventually(
            &format!("the pid of {what}"),
            Duration::from_secs(10),
            || daemon.pid(),
        );
        daemon
    }

    fn agent_pid(&self) -> u32 {
        self.agent.as_ref().and_then(Daemon::pid).unwrap()
    }

    fn log(&self, what: &str) -> String {
        std::fs::read_to_string(self.log_path(what)).unwrap_or_default()
    }

    /// `podman ps -a` of the user, as (name, id, state), sorted.
    fn containers(&self) -> Vec<(String, String, String)> {
        podman_ps_rows(self.podman_ok(&["ps", "-a", "--format", "json"]).as_bytes())
    }
}

impl Drop for RootlessNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- rootless agent log ----\n{}", self.log("mcp-agent"));
            eprintln!(
                "---- rootless podman service log ----\n{}",
                self.log("podman system service")
            );
        }
        if let Some(agent) = self.agent.take() {
            agent.stop();
        }
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        if let Some(service) = self.podman_service.take() {
            service.stop();
        }
        // Rootless podman keeps its user namespace alive with a pause process.
        if let Some(pid) = std::fs::read_to_string(self.dir.path().join("tmp/pause.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .output();
        }
        // The storage holds files of the user's subordinate uids; root removes
        // them with the directory (TempDir's own drop).
    }
}

fn user_of(pid: u32) -> String {
    capture(Command::new("ps").args(["-o", "user=", "-p", &pid.to_string()]))
        .trim()
        .to_string()
}

/// (name, id, state) of `mcp ps -o json`, for containers that exist, sorted.
fn mcp_ps(operator: &Operator) -> Vec<(String, String, String)> {
    let (node, rows) = operator.ps_rows();
    assert_eq!(node, NODE);
    rows
}

#[test]
fn the_agent_runs_as_a_non_root_user_with_rootless_podman() {
    let node = RootlessNode::start();
    let (uid, _) = test_user();

    // The agent and the podman service are the user's processes, and the
    // user's podman is rootless.
    assert_eq!(user_of(node.agent_pid()), USER);
    let service_pid = node.podman_service.as_ref().and_then(Daemon::pid).unwrap();
    assert_eq!(user_of(service_pid), USER);
    assert_eq!(
        node.podman_ok(&["info", "--format", "{{.Host.Security.Rootless}}"])
            .trim(),
        "true"
    );
    // The agent's state belongs to the user.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(node.token_file()).unwrap().uid(), uid);
    assert_eq!(std::fs::metadata(node.ca()).unwrap().uid(), uid);

    let operator = Operator::new(&[]);
    operator.add_node(
        NODE,
        &format!("127.0.0.1:{}", node.port),
        &node.ca(),
        Some(&node.token_file()),
    );
    let port = free_port();
    operator.define(
        "shop",
        &format!(
            r#"name = "shop"
node = "{NODE}"
active = true

[[components]]
name    = "http"
image   = "{TEST_IMAGE}"
restart = "unless-stopped"
ports   = ["127.0.0.1:{port}:8080"]
cmd     = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]

[[components]]
name  = "worker"
image = "{TEST_IMAGE}"
cmd   = ["/bin/busybox", "sleep", "3600"]
"#
        ),
    );

    let deploy = operator.ok(&["deploy", "shop", "-o", "json"]).json();
    assert!(
        deploy["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["ok"] == true),
        "{deploy}"
    );
    assert_eq!(http_get(port, "/"), (200, "hello from mcp\n".to_string()));

    // mcp ps and the user's own podman agree.
    let podman = node.containers();
    assert_eq!(
        podman
            .iter()
            .map(|(n, _, s)| (n.as_str(), s.as_str()))
            .collect::<Vec<_>>(),
        [("shop-http", "running"), ("shop-worker", "running")]
    );
    assert_eq!(mcp_ps(&operator), podman);
    let table = operator.ok(&["ps"]).stdout;
    assert!(
        table.contains("rl/shop/http") && table.contains("rl/shop/worker"),
        "{table}"
    );

    // The containers' processes run as the user on the host: conmon, and the
    // container's root, which rootless podman maps to the user's uid.
    for name in ["shop-http", "shop-worker"] {
        let pids = node.podman_ok(&[
            "inspect",
            "--format",
            "{{.State.Pid}} {{.State.ConmonPid}}",
            name,
        ]);
        for pid in pids.split_whitespace() {
            let pid: u32 = pid.parse().unwrap();
            assert_ne!(pid, 0, "{name} has no process");
            assert_eq!(user_of(pid), USER, "process {pid} of {name}");
        }
    }

    // stop and start, through the agent, on the user's podman.
    operator.ok(&["stop", "shop"]);
    let stopped = node.containers();
    assert!(stopped.iter().all(|(_, _, s)| s == "exited"), "{stopped:?}");
    assert_eq!(mcp_ps(&operator), stopped);
    operator.ok(&["start", "shop/http"]);
    assert_eq!(http_get(port, "/").0, 200);
    operator.ok(&["start", "shop"]);
    let running = eventually("both components running", Duration::from_secs(10), || {
        let rows = node.containers();
        rows.iter().all(|(_, _, s)| s == "running").then_some(rows)
    });
    assert_eq!(mcp_ps(&operator), running);
    let list = operator.ok(&["list", "-o", "json"]).json();
    let comps = list[0]["services"][0]["components"].as_array().unwrap();
    assert!(
        comps.iter().all(|c| c["desired_state"] == "running"),
        "{list}"
    );
}
