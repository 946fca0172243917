//! Harness for the end-to-end tests: a real podman API service on a private
//! storage root, the real `mcp-agent` binary against it, and the real `mcp`
//! binary driving the agent. Each test gets its own of all three.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The image the tests run: busybox-static in an otherwise empty file system.
pub const TEST_IMAGE: &str = "localhost/mcp-test-busybox:latest";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn containers_conf() -> PathBuf {
    repo_root().join("scripts/containers.conf")
}

/// A tarball of the test image's root file system, built once per test binary.
fn image_tarball() -> &'static Path {
    static TARBALL: OnceLock<PathBuf> = OnceLock::new();
    TARBALL.get_or_init(|| {
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "/bin/busybox is missing: install busybox-static (scripts/setup.sh does)"
        );
        let dir = repo_root().join("target/test-image");
        std::fs::create_dir_all(&dir).unwrap();
        let work = tempfile::tempdir_in(&dir).unwrap();
        let rootfs = work.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::create_dir_all(rootfs.join("www")).unwrap();
        std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
        for tool in ["sh", "httpd", "sleep", "echo", "cat", "ls", "true", "false"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool)).unwrap();
        }
        std::fs::write(rootfs.join("www/index.html"), "hello from mcp\n").unwrap();
        let tar = work.path().join("busybox.tar");
        run_ok(
            // Byte-identical every time: another test binary renaming its
            // copy over this one mid-import changes nothing podman reads.
            Command::new("tar")
                .args([
                    "--sort=name",
                    "--mtime=@0",
                    "--owner=0",
                    "--group=0",
                    "--numeric-owner",
                    "--mode=go-w",
                ])
                .arg("-C")
                .arg(&rootfs)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        );
        // Renamed into place whole, so a concurrent test binary never reads half a file.
        let target = dir.join("busybox.tar");
        std::fs::rename(&tar, &target).unwrap();
        target
    })
}

/// The test image's root file system as a tarball (for `podman import`).
pub fn test_image_tarball() -> PathBuf {
    image_tarball().to_path_buf()
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A podman API service over its own storage, so tests never see each
/// other's (or the machine's) containers.
pub struct Podman {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    service: Option<Child>,
    /// Environment of every podman command and the service (for example
    /// CONTAINERS_REGISTRIES_CONF).
    env: Vec<(String, String)>,
}

impl Podman {
    pub fn start() -> Podman {
        Podman::start_with_env(&[])
    }

    /// [`Podman::start`] with these environment variables for podman.
    pub fn start_with_env(env: &[(&str, &str)]) -> Podman {
        assert!(
            Command::new("podman").arg("--version").output().is_ok(),
            "podman is not installed: run scripts/setup.sh"
        );
        let dir = tempfile::Builder::new()
            .prefix("mcp-podman-")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("podman.sock");
        let mut podman = Podman {
            dir,
            socket,
            service: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        podman
            .cmd()
            .args(["import", "--quiet"])
            .arg(image_tarball())
            .arg(TEST_IMAGE)
            .output()
            .map(|o| {
                assert!(
                    o.status.success(),
                    "podman import: {}",
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap();
        podman.start_service();
        podman
    }

    /// `podman` with this instance's storage and configuration.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", containers_conf())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .arg("--tmpdir")
            .arg(self.dir.path().join("tmp"));
        cmd
    }

    pub fn start_service(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::File::create(self.dir.path().join("service.log")).unwrap();
        let child = self
            .cmd()
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", self.socket.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("podman system service");
        self.service = Some(child);
        let socket = self.socket.clone();
        wait_for("the podman API socket", Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
    }

    pub fn stop_service(&mut self) {
        if let Some(mut child) = self.service.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `podman ps -a` as (name, id, state) sorted by name.
    pub fn containers(&self) -> Vec<(String, String, String)> {
        let out = run_ok(self.cmd().args(["ps", "-a", "--format", "json"]));
        podman_ps_rows(&out.stdout)
    }

    pub fn state_of(&self, name: &str) -> Option<String> {
        self.containers()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, s)| s)
    }

    /// `podman inspect --format FORMAT NAME`, trimmed; None when there is
    /// no such container.
    pub fn inspect(&self, name: &str, format: &str) -> Option<String> {
        let out = self
            .cmd()
            .args(["inspect", "--format", format, name])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn id_of(&self, name: &str) -> Option<String> {
        self.containers()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, id, _)| id)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Remove the containers first so no mount outlives the storage.
        let _ = self
            .cmd()
            .args(["rm", "--all", "--force", "--time", "0"])
            .output();
        self.stop_service();
    }
}

/// Runs `cmd` with `umask`.
pub fn with_umask(cmd: &mut Command, umask: u32) {
    with_limits(cmd, None, Some(umask));
}

/// Runs `cmd` with its descriptor limit (soft and hard) and umask set.
fn with_limits(cmd: &mut Command, nofile: Option<u64>, umask: Option<u32>) {
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if let Some(n) = nofile {
                let limit = rustix::process::Rlimit {
                    current: Some(n),
                    maximum: Some(n),
                };
                rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)?;
            }
            if let Some(mask) = umask {
                rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask));
            }
            Ok(())
        });
    }
}

/// The real `mcp-agent`, serving on a free loopback port.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub node: String,
    extra_args: Vec<String>,
    child: Option<Child>,
    /// Soft and hard limit on open descriptors for the agent process.
    pub nofile: Option<u64>,
    /// The umask the agent process starts with (default: the test's).
    pub umask: Option<u32>,
    /// The CA clients trust (default: the one the agent generates).
    pub ca: Option<PathBuf>,
    /// Environment variables set for the agent process.
    env: Vec<(String, String)>,
}

impl Agent {
    pub fn start(podman: &Podman, node: &str) -> Agent {
        Agent::start_with_config(podman, node, None)
    }

    /// Starts with `config` (TOML) as the agent's --config file.
    pub fn start_with_config(podman: &Podman, node: &str, config: Option<&str>) -> Agent {
        Agent::start_with(podman, node, config, &["--auth", "local"])
    }

    /// Starts with an optional --config file and the given auth flags
    /// (and any other extra flags).
    pub fn start_with(podman: &Podman, node: &str, config: Option<&str>, extra: &[&str]) -> Agent {
        let mut agent = Agent::new(node, config, extra);
        agent.spawn(&podman.socket);
        agent
    }

    /// An agent ready to `spawn` (its directory, port, config and flags),
    /// for tests that set its process limits first or run it without a
    /// runtime.
    pub fn new(node: &str, config: Option<&str>, extra: &[&str]) -> Agent {
        Agent::new_in(&std::env::temp_dir(), node, config, extra)
    }

    /// [`Agent::new`] with the agent's directory (and so its state) in `parent`.
    pub fn new_in(parent: &Path, node: &str, config: Option<&str>, extra: &[&str]) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("mcp-agent-")
            .tempdir_in(parent)
            .unwrap();
        let mut extra_args = Vec::new();
        if let Some(config) = config {
            let path = dir.path().join("agent.toml");
            std::fs::write(&path, config).unwrap();
            extra_args.push("--config".to_string());
            extra_args.push(path.display().to_string());
        }
        extra_args.extend(extra.iter().map(|a| a.to_string()));
        Agent {
            dir,
            port: free_port(),
            node: node.to_string(),
            extra_args,
            child: None,
            nofile: None,
            umask: None,
            ca: None,
            env: Vec::new(),
        }
    }

    /// Sets an environment variable of the agent process, before it is spawned.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// More flags for `mcp-agent serve`, before it is spawned.
    pub fn add_args(&mut self, args: &[&str]) {
        self.extra_args.extend(args.iter().map(|a| a.to_string()));
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `mcp-agent serve` with this agent's flags and process limits, not started.
    pub fn serve_command(&self, socket: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-agent"));
        with_limits(&mut cmd, self.nofile, self.umask);
        cmd.arg("serve")
            .args(["--node", &self.node])
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--runtime-socket")
            .arg(socket)
            .args(if self.extra_args.iter().any(|a| a == "--stop-timeout") {
                &[][..]
            } else {
                &["--stop-timeout", "1"][..]
            })
            .args(&self.extra_args)
            .env("MCP_LOG", "info")
            // Tests run under systemd must not notify it as the agent.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub fn spawn(&mut self, socket: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = self
            .serve_command(socket)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mcp-agent");
        self.child = Some(child);
        let port = self.port;
        let ca = self.ca_path();
        wait_for("the agent to listen", Duration::from_secs(20), || {
            ca.exists() && TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// The local-mode token ("" when the agent is not in local mode).
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.state_dir().join("token"))
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.ca
            .clone()
            .unwrap_or_else(|| self.state_dir().join("tls/ca.pem"))
    }

    /// The agent process's id, while it runs (for /proc/<pid>/status).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `limit` for the exit; the exit status and
    /// how long it took. Panics if the agent is still running after `limit`.
    pub fn terminate(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("the agent is running");
        let start = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the agent did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{}", self.log());
        }
    }
}

/// The operator's side: a config home with mcp.toml and service definitions,
/// and the real `mcp` binary.
pub struct Operator {
    pub home: tempfile::TempDir,
    token: String,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl Operator {
    pub fn new(agents: &[&Agent]) -> Operator {
        let home = tempfile::Builder::new()
            .prefix("mcp-operator-")
            .tempdir()
            .unwrap();
        let mcp = home.path().join("mcp");
        std::fs::create_dir_all(mcp.join("services")).unwrap();
        let mut config = String::new();
        for a in agents {
            config.push_str(&format!(
                "[nodes.{}]\naddress = \"127.0.0.1:{}\"\nca = \"{}\"\n\n",
                a.node,
                a.port,
                a.ca_path().display()
            ));
        }
        std::fs::write(mcp.join("mcp.toml"), config).unwrap();
        Operator {
            home,
            token: agents.first().map(|a| a.token()).unwrap_or_default(),
        }
    }

    /// Like [`Operator::new`], but each node gets its own token through a
    /// `token_file` in its `[nodes.X]` table (agents in local mode each have
    /// their own token), and there is no global token (`MCP_TOKEN` is empty
    /// and there is no token file).
    pub fn with_node_tokens(agents: &[&Agent]) -> Operator {
        let operator = Operator::new(&[]);
        let mcp = operator.home.path().join("mcp");
        for a in agents {
            let token_file = mcp.join(format!("token-{}", a.node));
            std::fs::write(&token_file, a.token()).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
            operator.add_node(
                &a.node,
                &format!("127.0.0.1:{}", a.port),
                &a.ca_path(),
                Some(&token_file),
            );
        }
        operator
    }

    /// Appends a `[nodes.NAME]` table to `mcp.toml`, with `token_file` if given.
    pub fn add_node(&self, name: &str, address: &str, ca: &Path, token_file: Option<&Path>) {
        let mut config = std::fs::read_to_string(self.config_path()).unwrap_or_default();
        config.push_str(&format!(
            "[nodes.{name}]\naddress = \"{address}\"\nca = \"{}\"\n",
            ca.display()
        ));
        if let Some(t) = token_file {
            config.push_str(&format!("token_file = \"{}\"\n", t.display()));
        }
        config.push('\n');
        std::fs::write(self.config_path(), config).unwrap();
    }

    /// The same operator with `token` as its MCP_TOKEN.
    pub fn with_token(mut self, token: &str) -> Operator {
        self.token = token.to_string();
        self
    }

    /// `mcp.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.home.path().join("mcp/mcp.toml")
    }

    pub fn services_dir(&self) -> PathBuf {
        self.home.path().join("mcp/services")
    }

    pub fn define(&self, service: &str, toml: &str) {
        std::fs::write(self.services_dir().join(format!("{service}.toml")), toml).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.program(env!("CARGO_BIN_EXE_mcp"), args)
    }

    /// `program` with this operator's environment (config home, token), for
    /// a program that runs `mcp` itself.
    pub fn program(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("XDG_CONFIG_HOME", self.home.path())
            .env("MCP_TOKEN", &self.token)
            .env_remove("MCP_CONFIG")
            .env_remove("MCP_SERVICES_DIR");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().expect("mcp");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `mcp ps -o json` of the first node: its name, and (name, id, state)
    /// of the containers that exist, sorted.
    /// The first node's `mcp ps -o json` row of container `name`, if any.
    pub fn ps_row(&self, name: &str) -> Option<serde_json::Value> {
        let ps = self.ok(&["ps", "-o", "json"]).json();
        ps[0]["containers"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
    }

    pub fn ps_rows(&self) -> (String, Vec<(String, String, String)>) {
        let ps = self.ok(&["ps", "-o", "json"]).json();
        let mut rows: Vec<_> = ps[0]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["state"] != "absent")
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["id"].as_str().unwrap().to_string(),
                    c["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        rows.sort();
        (ps[0]["node"].as_str().unwrap_or_default().to_string(), rows)
    }

    /// Runs and requires a failure whose stderr contains `says`.
    pub fn fails(&self, args: &[&str], says: &str) -> Run {
        let run = self.run(args);
        assert_ne!(run.code, 0, "mcp {args:?} succeeded:\n{}", run.stdout);
        assert!(
            run.stderr.contains(says),
            "mcp {args:?}: {says:?} not in\n{}",
            run.stderr
        );
        run
    }

    /// Runs and requires success.
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(
            run.code, 0,
            "mcp {args:?} failed:\n{}\n{}",
            run.stdout, run.stderr
        );
        run
    }
}

/// `podman ps -a --format json` output as (name, id, state), sorted by name.
pub fn podman_ps_rows(json: &[u8]) -> Vec<(String, String, String)> {
    let list: serde_json::Value = serde_json::from_slice(json).unwrap();
    let mut rows: Vec<_> = list
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["Names"][0].as_str().unwrap_or_default().to_string(),
                c["Id"].as_str().unwrap_or_default().to_string(),
                c["State"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// GET `path` from 127.0.0.1:`port`; the status code and body. Retries until
/// the server answers (a fresh container needs a moment to bind).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let start = Instant::now();
    loop {
        if let Some(answer) = try_http_get(port, path) {
            return answer;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing serves HTTP on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn try_http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Polls `check` until it returns Some, or panics after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
