//! MCP's benchmark harness (issue 7): MCP against its peers, on this machine,
//! in one run. `scripts/bench.sh` is the one command that runs it and puts
//! the table into BENCHMARKS.md; `cargo bench --bench mcp` runs it alone and
//! writes the table to `target/bench/results.md` (or `$MCP_BENCH_OUT`).
//!
//! Everything runs against one private podman API service (its own storage
//! root, run root and tmp dir, like the e2e harness in tests/common), which
//! every peer shares: the agent through the socket, `podman` and
//! `podman-compose` through the same `--root/--runroot/--tmpdir` flags, the
//! floor client through the socket.
//!
//! Sections: 1 deploy, 2 list, 3 ps, 4 watch, 5 drift, 7 recovery after a
//! reboot, 8 health probes, 9 declarative sync of 20 services, 6 scale
//! (last: it replaces the agent).
//!
//! Knobs (environment): MCP_BENCH_RUNS (deploy runs per peer, default 7),
//! MCP_BENCH_WATCH_SECS (default 60), MCP_BENCH_QUICK=1 (few iterations, a
//! smoke test of the harness), MCP_BENCH_ONLY=2,5 (only these sections; 3's
//! containers are always deployed), MCP_BENCH_HOLD_SECS (pause with the
//! 1,000-service agent up, to profile the CLI from another shell),
//! MCP_BENCH_COMPOSE (podman-compose, default
//! target/bench-venv/bin/podman-compose), MCP_BENCH_OUT.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, KillContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use bollard::{ClientVersion, Docker};
use futures::StreamExt;

const IMAGE: &str = "localhost/mcp-bench-busybox:latest";
const HTTPD: [&str; 7] = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"];
const NODE: &str = "bench";
/// Components of the deployed service.
const COMPONENTS: usize = 5;
const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn mcp_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcp")
}

fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-agent")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn quick() -> bool {
    std::env::var("MCP_BENCH_QUICK").is_ok_and(|v| v == "1")
}

/// How many iterations: `full` normally, `small` with MCP_BENCH_QUICK=1.
fn iters(full: usize, small: usize) -> usize {
    if quick() {
        small
    } else {
        full
    }
}

fn log(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------- statistics

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s
}

fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile.
fn percentile(v: &[f64], p: f64) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

// ---------------------------------------------------------------- processes

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Runs `cmd` to completion; its wall time (spawn to exit).
fn timed(cmd: &mut Command) -> Result<Duration> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `n` free loopback ports, no two alike.
fn distinct_free_ports(n: usize) -> Result<Vec<u16>> {
    let mut ports = Vec::new();
    while ports.len() < n {
        let p = free_port()?;
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    Ok(ports)
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// One GET of / on 127.0.0.1:`port`: true when it answers 200. A short read
/// timeout: while podman sets a port up, conmon may already hold it and
/// accept without ever answering.
fn serves(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let head = String::from_utf8_lossy(&head[..got]);
    head.starts_with("HTTP/1.") && head.contains(" 200")
}

/// Polls until every port has answered 200 once.
fn wait_serving(ports: &[u16], timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut pending: Vec<u16> = ports.to_vec();
    loop {
        pending.retain(|p| !serves(*p));
        if pending.is_empty() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("ports {pending:?} do not serve HTTP after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---------------------------------------------------------------- podman

/// A podman API service on a private storage root, shared by every peer.
struct Podman {
    dir: tempfile::TempDir,
    socket: PathBuf,
    service: Option<Child>,
}

impl Podman {
    fn start() -> Result<Podman> {
        let dir = tempfile::Builder::new()
            .prefix("mcp-bench-podman-")
            .tempdir()?;
        let socket = dir.path().join("podman.sock");
        let mut podman = Podman {
            dir,
            socket,
            service: None,
        };
        let tarball = podman.image_tarball()?;
        run(podman
            .cmd()
            .args(["import", "--quiet"])
            .arg(&tarball)
            .arg(IMAGE))?;
        let log = std::fs::File::create(podman.dir.path().join("service.log"))?;
        let child = podman
            .cmd()
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", podman.socket.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("podman system service")?;
        podman.service = Some(child);
        let socket = podman.socket.clone();
        wait_until("the podman API socket", Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        })?;
        Ok(podman)
    }

    /// busybox-static in an otherwise empty file system, with /www/index.html.
    fn image_tarball(&self) -> Result<PathBuf> {
        let busybox = Path::new("/bin/busybox");
        ensure!(
            busybox.exists(),
            "/bin/busybox is missing: install busybox-static (scripts/setup.sh does)"
        );
        let rootfs = self.dir.path().join("image-rootfs");
        std::fs::create_dir_all(rootfs.join("bin"))?;
        std::fs::create_dir_all(rootfs.join("www"))?;
        std::fs::copy(busybox, rootfs.join("bin/busybox"))?;
        for tool in ["sh", "httpd", "sleep", "true"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool))?;
        }
        std::fs::write(rootfs.join("www/index.html"), "hello from the bench\n")?;
        let tar = self.dir.path().join("image.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."))?;
        Ok(tar)
    }

    /// Global flags that point podman at this storage.
    fn global_args(&self) -> Vec<String> {
        let p = |s: &str| self.dir.path().join(s).display().to_string();
        vec![
            "--root".into(),
            p("root"),
            "--runroot".into(),
            p("run"),
            "--tmpdir".into(),
            p("tmp"),
        ]
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", containers_conf())
            .args(self.global_args());
        cmd
    }

    fn service_pid(&self) -> Option<u32> {
        self.service.as_ref().map(|c| c.id())
    }

    fn docker(&self) -> Result<Docker> {
        Ok(Docker::connect_with_unix(
            &self.socket.display().to_string(),
            120,
            &API_VERSION,
        )?)
    }

    fn rm_all(&self) -> Result<()> {
        run(self.cmd().args(["rm", "--all", "--force", "--time", "0"]))?;
        Ok(())
    }

    fn count(&self, running_only: bool) -> Result<usize> {
        let mut cmd = self.cmd();
        cmd.args(["ps", "--quiet"]);
        if !running_only {
            cmd.arg("--all");
        }
        Ok(String::from_utf8_lossy(&run(&mut cmd)?.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count())
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .args(["rm", "--all", "--force", "--time", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.service.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Rootful podman bind-mounts its overlay directory onto itself and
        // leaves it mounted, and exiting conmons may hold container mounts
        // for a moment: unmount whatever is left under the storage, deepest
        // first, and remove it, retrying for a few seconds.
        let dir = self.dir.path().to_path_buf();
        for _ in 0..40 {
            let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
                .filter(|m| Path::new(m).starts_with(&dir))
                .collect();
            mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in &mounts {
                let _ = Command::new("umount")
                    .arg(m)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            if std::fs::remove_dir_all(&dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn containers_conf() -> PathBuf {
    repo().join("scripts/containers.conf")
}

// ---------------------------------------------------------------- agent and operator

struct Agent {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Agent {
    /// Prepares the agent's directory (so a registry can be put there
    /// before it starts) without starting it.
    fn prepare() -> Result<Agent> {
        let dir = tempfile::Builder::new()
            .prefix("mcp-bench-agent-")
            .tempdir()?;
        std::fs::create_dir_all(dir.path().join("state"))?;
        // No flapping alerts from the drift benchmark's repeated kills.
        std::fs::write(
            dir.path().join("agent.toml"),
            "[watch]\nflap_exits = 1000\nflap_window_secs = 60\n",
        )?;
        Ok(Agent {
            dir,
            port: free_port()?,
            child: None,
        })
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn db(&self) -> PathBuf {
        self.state_dir().join("mcp.db")
    }

    fn ca(&self) -> PathBuf {
        self.state_dir().join("tls/ca.pem")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    fn token(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.state_dir().join("token"))?
            .trim()
            .to_string())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn start(&mut self, podman: &Podman) -> Result<()> {
        let log = std::fs::File::create(self.log_path())?;
        let child = Command::new(agent_bin())
            .arg("serve")
            .args(["--node", NODE, "--auth", "local"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--runtime-socket")
            .arg(&podman.socket)
            .arg("--config")
            .arg(self.dir.path().join("agent.toml"))
            // Every peer stops containers with a zero timeout (busybox httpd
            // as PID 1 ignores SIGTERM: any timeout would be waited in full).
            .args(["--stop-timeout", "0"])
            .env("MCP_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("mcp-agent")?;
        self.child = Some(child);
        let (ca, port) = (self.ca(), self.port);
        let started = wait_until("the agent to listen", Duration::from_secs(30), || {
            ca.exists() && TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if let Err(e) = started {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            bail!("{e}\nagent log:\n{log}");
        }
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The operator's side: a config home with mcp.toml, definitions, the token.
struct Operator {
    home: tempfile::TempDir,
    token: String,
}

impl Operator {
    fn new(agent: &Agent) -> Result<Operator> {
        let home = tempfile::Builder::new()
            .prefix("mcp-bench-operator-")
            .tempdir()?;
        std::fs::create_dir_all(home.path().join("mcp/services"))?;
        std::fs::write(
            home.path().join("mcp/mcp.toml"),
            format!(
                "[nodes.{NODE}]\naddress = \"127.0.0.1:{}\"\nca = \"{}\"\n",
                agent.port,
                agent.ca().display()
            ),
        )?;
        Ok(Operator {
            home,
            token: agent.token()?,
        })
    }

    fn services_dir(&self) -> PathBuf {
        self.home.path().join("mcp/services")
    }

    fn define(&self, name: &str, toml: &str) -> Result<()> {
        std::fs::write(self.services_dir().join(format!("{name}.toml")), toml)?;
        Ok(())
    }

    fn forget(&self, name: &str) -> Result<()> {
        std::fs::remove_file(self.services_dir().join(format!("{name}.toml")))?;
        Ok(())
    }

    fn mcp(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(mcp_bin());
        cmd.args(args)
            .env("XDG_CONFIG_HOME", self.home.path())
            .env("MCP_TOKEN", &self.token)
            .env_remove("MCP_CONFIG")
            .env_remove("MCP_SERVICES_DIR");
        cmd
    }

    fn ok(&self, args: &[&str]) -> Result<Output> {
        run(&mut self.mcp(args))
    }
}

/// Adds the bearer token to every request.
type Intercept =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;

/// A tonic client of the agent over one TLS channel, as the CLI builds it.
type Rpc = mcp::proto::agent_client::AgentClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Intercept>,
>;

async fn rpc_client(agent: &Agent) -> Result<Rpc> {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(agent.ca())?))
        .domain_name("127.0.0.1");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", agent.port))?
        .tls_config(tls)?
        .connect()
        .await?;
    let header: tonic::metadata::MetadataValue<_> = format!("Bearer {}", agent.token()?).parse()?;
    let intercept: Intercept = Box::new(move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", header.clone());
        Ok(req)
    });
    Ok(
        mcp::proto::agent_client::AgentClient::with_interceptor(channel, intercept)
            .max_decoding_message_size(64 << 20),
    )
}

// ---------------------------------------------------------------- the service, four ways

fn definition(name: &str, ports: &[u16]) -> String {
    let mut s = format!("name = \"{name}\"\nnode = \"{NODE}\"\nactive = true\n");
    for (i, port) in ports.iter().enumerate() {
        let _ = write!(
            s,
            "\n[[components]]\nname = \"c{}\"\nimage = \"{IMAGE}\"\nrestart = \"no\"\nports = [\"127.0.0.1:{port}:8080\"]\ncmd = {:?}\n",
            i + 1,
            HTTPD
        );
    }
    s
}

/// The compose file equivalent to [`definition`]: same image, command,
/// restart policy and port bindings; containers on podman's default network
/// (`network_mode: bridge`) and not in a pod, as MCP's are.
fn compose_file(ports: &[u16]) -> String {
    let mut s = String::from("x-podman:\n  in_pod: false\nservices:\n");
    for (i, port) in ports.iter().enumerate() {
        let _ = write!(
            s,
            "  c{}:\n    image: {IMAGE}\n    command: {:?}\n    restart: \"no\"\n    network_mode: bridge\n    ports: [\"127.0.0.1:{port}:8080\"]\n",
            i + 1,
            HTTPD
        );
    }
    s
}

fn httpd_body(port: u16) -> ContainerCreateBody {
    let mut bindings = HashMap::new();
    bindings.insert(
        "8080/tcp".to_string(),
        Some(vec![PortBinding {
            host_ip: Some("127.0.0.1".to_string()),
            host_port: Some(port.to_string()),
        }]),
    );
    ContainerCreateBody {
        image: Some(IMAGE.to_string()),
        cmd: Some(HTTPD.iter().map(|s| s.to_string()).collect()),
        exposed_ports: Some(vec!["8080/tcp".to_string()]),
        host_config: Some(HostConfig {
            port_bindings: Some(bindings),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn floor_create_start(docker: &Docker, name: String, port: u16) -> Result<()> {
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            httpd_body(port),
        )
        .await?;
    docker.start_container(&name, None).await?;
    Ok(())
}

async fn floor_remove(docker: &Docker, name: &str) -> Result<()> {
    docker
        .stop_container(
            name,
            Some(StopContainerOptions {
                t: Some(0),
                ..Default::default()
            }),
        )
        .await?;
    docker
        .remove_container(
            name,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await?;
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peer {
    Mcp,
    Compose,
    PodmanRun,
    Floor,
}

impl Peer {
    fn label(self) -> &'static str {
        match self {
            Peer::Mcp => "mcp",
            Peer::Compose => "podman-compose",
            Peer::PodmanRun => "podman",
            Peer::Floor => "API floor",
        }
    }

    /// What the peer runs, said in the table.
    fn command(self, redeploy: bool) -> &'static str {
        match (self, redeploy) {
            (Peer::Mcp, false) => "`mcp deploy bench`",
            (Peer::Mcp, true) => "`mcp deploy --force bench/c2`",
            (Peer::Compose, false) => "`podman-compose up -d`",
            (Peer::Compose, true) => "`podman-compose up -d --force-recreate -t 0 c2`",
            (Peer::PodmanRun, false) => "5 sequential `podman run -d`",
            (Peer::PodmanRun, true) => "`podman rm -f -t 0` + `podman run -d`",
            (Peer::Floor, false) => "API floor: 5 concurrent create+start (bollard)",
            (Peer::Floor, true) => "API floor: stop -t 0 + remove, create + start (bollard)",
        }
    }
}

struct DeployBench<'a> {
    podman: &'a Podman,
    operator: &'a Operator,
    rt: &'a tokio::runtime::Runtime,
    docker: Docker,
    ports: Vec<u16>,
    compose: Option<PathBuf>,
    compose_file: PathBuf,
}

const COMPOSE_PROJECT: &str = "mcpbench";

impl DeployBench<'_> {
    fn compose_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.compose.as_ref().expect("podman-compose"));
        cmd.env("CONTAINERS_CONF", containers_conf())
            .arg("--podman-args")
            .arg(self.podman.global_args().join(" "))
            .args(["-p", COMPOSE_PROJECT, "-f"])
            .arg(&self.compose_file)
            .args(args);
        cmd
    }

    fn podman_run_cmd(&self, i: usize) -> Command {
        let mut cmd = self.podman.cmd();
        cmd.args(["run", "-d", "--name", &format!("run-c{}", i + 1)])
            .args(["-p", &format!("127.0.0.1:{}:8080", self.ports[i])])
            .args(["--restart", "no"])
            .arg(IMAGE)
            .args(HTTPD);
        cmd
    }

    /// Deploys the whole service with `peer`: wall time from the command's
    /// start until it has returned and all five ports answer HTTP 200.
    fn deploy(&self, peer: Peer) -> Result<Duration> {
        let start = Instant::now();
        match peer {
            Peer::Mcp => {
                run(&mut self.operator.mcp(&["deploy", "bench"]))?;
            }
            Peer::Compose => {
                run(&mut self.compose_cmd(&["up", "-d"]))?;
            }
            Peer::PodmanRun => {
                for i in 0..COMPONENTS {
                    run(&mut self.podman_run_cmd(i))?;
                }
            }
            Peer::Floor => self.rt.block_on(async {
                let all = (0..COMPONENTS).map(|i| {
                    floor_create_start(&self.docker, format!("floor-c{}", i + 1), self.ports[i])
                });
                futures::future::try_join_all(all).await.map(|_| ())
            })?,
        }
        wait_serving(&self.ports, Duration::from_secs(30))?;
        Ok(start.elapsed())
    }

    /// Replaces component c2 while the other four run: wall time until the
    /// command has returned and c2's port answers again (from the new
    /// container: the old one is gone when the command returns).
    fn redeploy(&self, peer: Peer) -> Result<Duration> {
        let port = [self.ports[1]];
        let name = match peer {
            Peer::Mcp => "bench-c2".to_string(),
            Peer::Compose => format!("{COMPOSE_PROJECT}_c2_1"),
            Peer::PodmanRun => "run-c2".to_string(),
            Peer::Floor => "floor-c2".to_string(),
        };
        let before = self.container_id(&name)?;
        let start = Instant::now();
        match peer {
            Peer::Mcp => {
                // --force: an unchanged component keeps its container
                // otherwise (as with compose without --force-recreate).
                run(&mut self.operator.mcp(&["deploy", "--force", "bench/c2"]))?;
            }
            Peer::Compose => {
                run(&mut self.compose_cmd(&["up", "-d", "--force-recreate", "-t", "0", "c2"]))?;
            }
            Peer::PodmanRun => {
                run(self.podman.cmd().args(["rm", "-f", "-t", "0", "run-c2"]))?;
                run(&mut self.podman_run_cmd(1))?;
            }
            Peer::Floor => self.rt.block_on(async {
                floor_remove(&self.docker, "floor-c2").await?;
                floor_create_start(&self.docker, "floor-c2".to_string(), self.ports[1]).await
            })?,
        }
        wait_serving(&port, Duration::from_secs(30))?;
        let took = start.elapsed();
        let after = self.container_id(&name)?;
        ensure!(
            before != after,
            "{}: {name} was not replaced",
            peer.command(true)
        );
        Ok(took)
    }

    fn container_id(&self, name: &str) -> Result<String> {
        let inspected = self
            .rt
            .block_on(self.docker.inspect_container(name, None))
            .with_context(|| format!("inspect {name}"))?;
        inspected.id.context("a container id")
    }

    /// Removes every container and waits for the ports to be free and the
    /// agent to have seen the removals.
    fn clean(&self) -> Result<()> {
        self.podman.rm_all()?;
        let ports = self.ports.clone();
        wait_until("the ports to be free", Duration::from_secs(20), || {
            ports.iter().all(|p| port_free(*p))
        })?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }
}

// ---------------------------------------------------------------- results

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

struct Row {
    section: &'static str,
    measure: String,
    mcp: String,
    peer: String,
    peer_value: String,
    ratio: String,
    target: String,
    met: Option<bool>,
}

/// `lowest-highest` of `v`, as [`fmt_ms`] writes each.
fn min_max(v: &[f64]) -> String {
    let v = sorted(v);
    match (v.first(), v.last()) {
        (Some(lo), Some(hi)) => format!("{}-{}", fmt_ms(*lo), fmt_ms(*hi)),
        _ => "-".to_string(),
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        section: &'static str,
        measure: impl Into<String>,
        mcp: impl Into<String>,
        peer: impl Into<String>,
        peer_value: impl Into<String>,
        ratio: impl Into<String>,
        target: impl Into<String>,
        met: Option<bool>,
    ) {
        let row = Row {
            section,
            measure: measure.into(),
            mcp: mcp.into(),
            peer: peer.into(),
            peer_value: peer_value.into(),
            ratio: ratio.into(),
            target: target.into(),
            met,
        };
        log(format!(
            "{} | {} | {} | {} {} | {} | {}",
            row.section, row.measure, row.mcp, row.peer, row.peer_value, row.ratio, row.target
        ));
        self.rows.push(row);
    }

    fn markdown(&self, facts: &str) -> String {
        let mut s = String::new();
        s.push_str(facts);
        s.push_str(
            "\n| # | measure | MCP | peer | peer's figure | ratio MCP/peer | target | met |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.section, r.measure, r.mcp, r.peer, r.peer_value, r.ratio, r.target, met
            );
        }
        if !self.notes.is_empty() {
            s.push_str("\nNotes from this run:\n\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }
}

// ---------------------------------------------------------------- /proc

/// Per kill, milliseconds after the kill call was issued.
#[derive(Default)]
struct DriftTimes {
    /// `drift-detected` in the registry (its ts).
    drift: Vec<f64>,
    /// `died` in the registry (its ts).
    died: Vec<f64>,
    /// The die event received on podman's own event stream by an API client.
    stream: Vec<f64>,
    /// The time podman itself gives the die event (when it wrote it).
    recorded: Vec<f64>,
}

struct ProcSample {
    ticks: u64,
    rss_kib: u64,
    hwm_kib: u64,
}

fn proc_sample(pid: u32) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("/proc/pid/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields[11].parse()?;
    let stime: u64 = fields[12].parse()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        ticks: utime + stime,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// Resets VmHWM to the current RSS (Linux >= 4.0; needs write access).
fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

// ---------------------------------------------------------------- main

fn main() {
    // `cargo bench` passes --bench. Without it this is `cargo test
    // --all-targets` checking that benches work: check the pieces that need
    // no podman, quickly, and stop.
    if !std::env::args().any(|a| a == "--bench") {
        if let Err(e) = self_check() {
            eprintln!("bench self-check: FAILED: {e:#}");
            std::process::exit(1);
        }
        println!("benches/mcp.rs: self-check ok; measure with `cargo bench --bench mcp` or scripts/bench.sh");
        return;
    }
    if let Err(e) = bench() {
        eprintln!("bench: FAILED: {e:#}");
        std::process::exit(1);
    }
}

/// What `cargo test` runs: statistics, and the generated definitions parse.
fn self_check() -> Result<()> {
    ensure!(median(&[3.0, 1.0, 2.0]) == 2.0, "median of 3");
    ensure!(median(&[4.0, 1.0, 2.0, 3.0]) == 2.5, "median of 4");
    let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
    ensure!(percentile(&hundred, 99.0) == 99.0, "p99");
    ensure!(percentile(&hundred, 100.0) == 100.0, "max");
    let def = mcp::spec::parse_service(
        Path::new("bench.toml"),
        &definition("bench", &[18081, 18082, 18083, 18084, 18085]),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(def.components.len() == COMPONENTS, "five components");
    ensure!(
        compose_file(&[18081]).contains("127.0.0.1:18081:8080"),
        "compose ports"
    );
    let dir = tempfile::tempdir()?;
    populate(&dir.path().join("mcp.db"), 3, 7)?;
    let registry = mcp::registry::Registry::open(&dir.path().join("mcp.db"))?;
    ensure!(registry.list_services()?.len() == 3, "populated services");
    ensure!(
        registry.events(None, None, 100)?.len() == 7,
        "populated events"
    );
    Ok(())
}

/// Which sections to measure: MCP_BENCH_ONLY="2,5" (default: all). Section 3
/// always deploys its 50 containers, which 4 and 5 watch and kill.
fn enabled(section: u8) -> bool {
    match std::env::var("MCP_BENCH_ONLY") {
        Ok(only) if !only.trim().is_empty() => {
            only.split(',').any(|s| s.trim() == section.to_string())
        }
        _ => true,
    }
}

/// What every section shares: the podman service, the first agent, its
/// operator. Fields drop in order: the agent stops before podman goes.
struct Ctx {
    agent: Agent,
    operator: Operator,
    rt: tokio::runtime::Runtime,
    docker: Docker,
    podman: Podman,
    compose: Option<PathBuf>,
    report: Report,
    /// The agent's CPU (% of a core) watching 50 idle containers (section 4).
    idle_cpu: Option<f64>,
}

fn bench() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    let out_path = std::env::var_os("MCP_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/bench/results.md"));
    let compose = std::env::var_os("MCP_BENCH_COMPOSE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/bench-venv/bin/podman-compose"));
    let compose = compose.exists().then_some(compose);
    if compose.is_none() {
        log("podman-compose not found (run scripts/bench.sh): its rows are skipped");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    log("starting a private podman API service and an agent");
    let load_before = load_average();
    let podman = Podman::start()?;
    // Ctrl-C: the containers' conmon processes would outlive us; remove them.
    let mut rm_all = podman.cmd();
    rm_all.args(["rm", "--all", "--force", "--time", "0"]);
    rt.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            log("interrupted: removing the bench's containers");
            let _ = rm_all.stdout(Stdio::null()).stderr(Stdio::null()).status();
            std::process::exit(130);
        }
    });
    let docker = podman.docker()?;
    let mut agent = Agent::prepare()?;
    agent.start(&podman)?;
    let operator = Operator::new(&agent)?;
    let mut cx = Ctx {
        rt,
        podman,
        docker,
        agent,
        operator,
        compose,
        report: Report::default(),
        idle_cpu: None,
    };
    if enabled(1) {
        section_deploy(&mut cx)?;
    }
    let list_p50 = if enabled(2) {
        Some(section_list(&mut cx)?)
    } else {
        None
    };
    section_ps(&mut cx)?;
    if enabled(4) {
        section_watch(&mut cx)?;
    }
    if enabled(5) {
        section_drift(&mut cx)?;
    }
    if enabled(7) {
        section_recovery(&mut cx)?;
    }
    if enabled(8) {
        section_health(&mut cx)?;
    }
    if enabled(9) {
        section_sync(&mut cx)?;
    }
    if enabled(6) {
        section_scale(&mut cx, list_p50)?;
    }

    let facts = machine_facts(&cx.compose, started.elapsed(), &load_before);
    let md = cx.report.markdown(&facts);
    if let Some(dir) = out_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out_path, &md)?;
    log(format!(
        "done in {:.0} s; table written to {}",
        started.elapsed().as_secs_f64(),
        out_path.display()
    ));
    println!("{md}");
    Ok(())
}

/// Section 1: Deploy of a 5-component service, and redeploy of one component, by
/// each peer in turn.
fn section_deploy(cx: &mut Ctx) -> Result<()> {
    let deploy_runs = env_usize("MCP_BENCH_RUNS", iters(11, 2)).max(1);
    let ports = distinct_free_ports(COMPONENTS)?;
    cx.operator.define("bench", &definition("bench", &ports))?;
    let compose_path = cx.podman.dir.path().join("compose.yml");
    std::fs::write(&compose_path, compose_file(&ports))?;
    let bench = DeployBench {
        podman: &cx.podman,
        operator: &cx.operator,
        rt: &cx.rt,
        docker: cx.docker.clone(),
        ports: ports.clone(),
        compose: cx.compose.clone(),
        compose_file: compose_path,
    };
    let mut peers = vec![Peer::Mcp, Peer::PodmanRun, Peer::Floor];
    if cx.compose.is_some() {
        peers.insert(1, Peer::Compose);
    }
    let mut deploy: HashMap<&'static str, Vec<f64>> = HashMap::new();
    let mut redeploy: HashMap<&'static str, Vec<f64>> = HashMap::new();
    log(format!(
        "1. deploy/redeploy: {} peers x (1 warm-up + {deploy_runs} runs)",
        peers.len()
    ));
    for round in 0..=deploy_runs {
        // Rotate the order each round so no peer always goes first.
        let mut order = peers.clone();
        order.rotate_left(round % peers.len());
        for peer in order {
            bench.clean()?;
            let d = bench
                .deploy(peer)
                .with_context(|| format!("deploy with {}", peer.label()))?;
            let r = bench
                .redeploy(peer)
                .with_context(|| format!("redeploy with {}", peer.label()))?;
            if round > 0 {
                deploy.entry(peer.label()).or_default().push(ms(d));
                redeploy.entry(peer.label()).or_default().push(ms(r));
            }
        }
    }
    bench.clean()?;
    cx.operator.forget("bench")?;
    cx.operator.ok(&["sync", "--prune"])?;
    let med = |m: &HashMap<&'static str, Vec<f64>>, p: Peer| median(&m[p.label()]);
    for (what, data, is_redeploy) in [
        ("deploy 5 components, until all serve HTTP", &deploy, false),
        (
            "redeploy 1 of 5 components, until it serves",
            &redeploy,
            true,
        ),
    ] {
        let mcp = med(data, Peer::Mcp);
        for peer in &peers[1..] {
            let other = med(data, *peer);
            let ratio = mcp / other;
            let (target, met) = match (what.starts_with("deploy"), peer) {
                (true, Peer::Compose) => ("<= 0.5x".to_string(), Some(ratio <= 0.5)),
                (true, Peer::Floor) => ("<= 1.2x".to_string(), Some(ratio <= 1.2)),
                _ => (String::new(), None),
            };
            cx.report.row(
                "1",
                format!("{what} (median of {deploy_runs})"),
                fmt_ms(mcp),
                peer.command(is_redeploy),
                fmt_ms(other),
                format!("{ratio:.2}x"),
                target,
                met,
            );
        }
    }
    for (what, data) in [("Deploy", &deploy), ("Redeploy", &redeploy)] {
        let spread: Vec<String> = peers
            .iter()
            .map(|p| {
                let v = sorted(&data[p.label()]);
                format!("{} {:.0}-{:.0} ms", p.label(), v[0], v[v.len() - 1])
            })
            .collect();
        cx.report
            .notes
            .push(format!("{what} min-max: {}.", spread.join("; ")));
    }
    Ok(())
}

/// Section 2: `mcp list` with 200 services registered by `mcp sync`; returns the CLI p50.
fn section_list(cx: &mut Ctx) -> Result<f64> {
    let services = 200;
    log(format!(
        "2. list: sync {services} definitions, then CLI and RPC"
    ));
    for i in 0..services {
        let name = format!("s{i:03}");
        cx.operator.define(
            &name,
            &format!(
                "name = \"{name}\"\nnode = \"{NODE}\"\nactive = false\n\n[[components]]\nname = \"web\"\nimage = \"{IMAGE}\"\ncmd = {HTTPD:?}\n"
            ),
        )?;
    }
    cx.operator.ok(&["sync", "--prune"])?;
    let listed: serde_json::Value =
        serde_json::from_slice(&cx.operator.ok(&["list", "-o", "json"])?.stdout)?;
    let count = count_services(&listed);
    ensure!(
        count == services,
        "mcp list shows {count} services, expected {services}"
    );
    let cli_runs = iters(200, 20);
    let mut cli = Vec::new();
    for i in 0..cli_runs + 5 {
        let t = timed(&mut cx.operator.mcp(&["list"]))?;
        if i >= 5 {
            cli.push(ms(t));
        }
    }
    let rpc_calls = iters(10_000, 500);
    let agent = &cx.agent;
    let rpc = cx.rt.block_on(async {
        let mut client = rpc_client(agent).await?;
        let mut times = Vec::with_capacity(rpc_calls);
        for i in 0..rpc_calls + 100 {
            let t = Instant::now();
            let answer = client
                .list_services(mcp::proto::ListServicesRequest {})
                .await?
                .into_inner();
            let took = t.elapsed();
            ensure!(answer.services.len() == services, "RPC list: wrong count");
            if i >= 100 {
                times.push(ms(took));
            }
        }
        anyhow::Ok(times)
    })?;
    // A reference CLI on the same machine: podman's own start-up.
    let mut podman_version = Vec::new();
    for _ in 0..iters(30, 5) {
        podman_version.push(ms(timed(cx.podman.cmd().arg("version"))?));
    }
    let (p50, p99) = (median(&cli), percentile(&cli, 99.0));
    let reference = median(&podman_version);
    let report = &mut cx.report;
    report.row(
        "2",
        format!("`mcp list`, {services} services, CLI wall time p50 ({cli_runs} runs)"),
        fmt_ms(p50),
        "`podman version` (reference: a CLI asking its API service for little)",
        fmt_ms(reference),
        format!("{:.2}x", p50 / reference),
        "< 15 ms",
        Some(p50 < 15.0),
    );
    report.row(
        "2",
        format!("`mcp list`, {services} services, CLI wall time p99"),
        fmt_ms(p99),
        "`podman version` p99",
        fmt_ms(percentile(&podman_version, 99.0)),
        "",
        "",
        None,
    );
    let (r50, r99) = (median(&rpc), percentile(&rpc, 99.0));
    report.row(
        "2",
        format!(
            "ListServices RPC, {services} services, in-process p50 ({rpc_calls} calls, one TLS channel)"
        ),
        fmt_ms(r50),
        "",
        "",
        "",
        "< 1 ms",
        Some(r50 < 1.0),
    );
    report.row(
        "2",
        "ListServices RPC p99",
        fmt_ms(r99),
        "",
        "",
        "",
        "",
        None,
    );
    for i in 0..services {
        cx.operator.forget(&format!("s{i:03}"))?;
    }
    cx.operator.ok(&["sync", "--prune"])?;
    Ok(p50)
}

/// Section 3: 50 running containers (10 services x 5 components, deployed by MCP),
/// then `mcp ps` against `podman ps --all`.
fn section_ps(cx: &mut Ctx) -> Result<()> {
    log("3. ps: deploying 50 containers (10 services x 5 components)");
    for s in 0..10 {
        let name = format!("w{s:02}");
        let mut def = format!("name = \"{name}\"\nnode = \"{NODE}\"\nactive = true\n");
        for c in 0..5 {
            let _ = write!(
                def,
                "\n[[components]]\nname = \"c{}\"\nimage = \"{IMAGE}\"\nrestart = \"no\"\ncmd = {HTTPD:?}\n",
                c + 1
            );
        }
        cx.operator.define(&name, &def)?;
    }
    cx.operator.ok(&["sync", "--prune"])?;
    for s in 0..10 {
        cx.operator.ok(&["deploy", &format!("w{s:02}")])?;
    }
    let running = cx.podman.count(true)?;
    ensure!(
        running == 50,
        "expected 50 running containers, podman shows {running}"
    );
    if !enabled(3) {
        return Ok(());
    }
    std::thread::sleep(Duration::from_secs(1));
    let ps_runs = iters(30, 5);
    let (mut mcp_ps, mut podman_ps, mut api_ps) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..ps_runs + 3 {
        let a = timed(&mut cx.operator.mcp(&["ps"]))?;
        let b = timed(cx.podman.cmd().args(["ps", "--all"]))?;
        let docker = &cx.docker;
        let c = cx.rt.block_on(async {
            let t = Instant::now();
            let list = docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    ..Default::default()
                }))
                .await?;
            ensure!(list.len() == 50, "API list: {} containers", list.len());
            anyhow::Ok(t.elapsed())
        })?;
        if i >= 3 {
            mcp_ps.push(ms(a));
            podman_ps.push(ms(b));
            api_ps.push(ms(c));
        }
    }
    let (a, b) = (median(&mcp_ps), median(&podman_ps));
    cx.report.row(
        "3",
        format!("`mcp ps`, 50 running containers, CLI wall time p50 ({ps_runs} runs)"),
        fmt_ms(a),
        "`podman ps --all` (same storage)",
        fmt_ms(b),
        format!("{:.2}x", a / b),
        "<= 1.2x",
        Some(a / b <= 1.2),
    );
    cx.report.notes.push(format!(
        "`ps`: the API's own list call (bollard, in-process, `GET /containers/json?all=1`) takes {} p50; `mcp ps` p99 {}, `podman ps --all` p99 {}.",
        fmt_ms(median(&api_ps)),
        fmt_ms(percentile(&mcp_ps, 99.0)),
        fmt_ms(percentile(&podman_ps, 99.0)),
    ));
    Ok(())
}

/// Section 4: The agent left alone with 50 running containers: memory and CPU time.
fn section_watch(cx: &mut Ctx) -> Result<()> {
    let watch_secs = env_usize("MCP_BENCH_WATCH_SECS", iters(60, 5)) as u64;
    log(format!("4. watch: {watch_secs} s idle with 50 containers"));
    let agent_pid = cx.agent.pid().context("agent pid")?;
    let service_pid = cx.podman.service_pid().context("podman service pid")?;
    std::thread::sleep(Duration::from_secs(2));
    let lifetime_hwm = proc_sample(agent_pid)?.hwm_kib;
    let hwm_reset = reset_hwm(agent_pid) && reset_hwm(service_pid);
    let (a0, s0) = (proc_sample(agent_pid)?, proc_sample(service_pid)?);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(watch_secs));
    let (a1, s1) = (proc_sample(agent_pid)?, proc_sample(service_pid)?);
    let window = t0.elapsed().as_secs_f64();
    let hz = clock_ticks() as f64;
    let cpu = |x: &ProcSample, y: &ProcSample| (y.ticks - x.ticks) as f64 / hz / window * 100.0;
    let mib = |k: u64| k as f64 / 1024.0;
    let (agent_cpu, service_cpu) = (cpu(&a0, &a1), cpu(&s0, &s1));
    cx.idle_cpu = Some(agent_cpu);
    let report = &mut cx.report;
    report.row(
        "4",
        format!("agent resident memory, VmRSS after {watch_secs} s watching 50 containers"),
        format!("{:.1} MiB", mib(a1.rss_kib)),
        "podman API service (serving the agent's event stream)",
        format!("{:.1} MiB", mib(s1.rss_kib)),
        format!("{:.2}x", a1.rss_kib as f64 / s1.rss_kib as f64),
        "< 30 MiB",
        Some(mib(a1.rss_kib) < 30.0),
    );
    report.row(
        "4",
        if hwm_reset {
            "agent peak resident memory in the window, VmHWM"
        } else {
            "agent peak resident memory since start, VmHWM"
        },
        format!("{:.1} MiB", mib(a1.hwm_kib)),
        "podman API service",
        format!("{:.1} MiB", mib(s1.hwm_kib)),
        format!("{:.2}x", a1.hwm_kib as f64 / s1.hwm_kib as f64),
        "< 30 MiB",
        Some(mib(a1.hwm_kib) < 30.0),
    );
    report.row(
        "4",
        format!("agent CPU time over {watch_secs} s, % of one core (utime+stime)"),
        format!("{agent_cpu:.2} %"),
        "podman API service",
        format!("{service_cpu:.2} %"),
        if service_cpu > 0.0 {
            format!("{:.2}x", agent_cpu / service_cpu)
        } else {
            "-".to_string()
        },
        "< 1 %",
        Some(agent_cpu < 1.0),
    );
    report.notes.push(format!(
        "Agent VmHWM over its whole life in this run (everything before the watch window), before the window's reset: {:.1} MiB; CPU ticks are {hz:.0}/s, so {watch_secs} s resolve {:.3} % of a core.",
        mib(lifetime_hwm),
        100.0 / hz / window
    ));
    Ok(())
}

/// Section 5: Drift detection latency over repeated kills of one container.
fn section_drift(cx: &mut Ctx) -> Result<()> {
    let kills = iters(20, 3);
    log(format!("5. drift: {kills} kills of w00-c1"));
    let t = drift_latency(&cx.rt, &cx.docker, &cx.operator, &cx.agent, kills)?;
    let (drift, died, stream) = (&t.drift, &t.died, &t.stream);
    let d50 = median(drift);
    let report = &mut cx.report;
    report.row(
        "5",
        format!("kill -> `drift-detected` event in the registry, median of {kills}"),
        fmt_ms(d50),
        "podman's own event stream (die event received by an API client)",
        fmt_ms(median(stream)),
        format!("{:.2}x", d50 / median(stream)),
        "< 500 ms",
        Some(d50 < 500.0),
    );
    report.row(
        "5",
        format!("kill -> `died` event in the registry, median of {kills}"),
        fmt_ms(median(died)),
        "",
        "",
        "",
        "",
        None,
    );
    report.notes.push(format!(
        "Drift latency min-max {}-{}, `died` max {}, podman event stream min-max {}-{} ({} of {kills} die events seen on the stream); podman's own timestamp of the die event is {} after the kill call (median): the rest is the delay until a reader of podman's event file sees it.",
        fmt_ms(percentile(drift, 0.0)),
        fmt_ms(percentile(drift, 100.0)),
        fmt_ms(percentile(died, 100.0)),
        fmt_ms(percentile(stream, 0.0)),
        fmt_ms(percentile(stream, 100.0)),
        stream.len(),
        fmt_ms(median(&t.recorded)),
    ));
    Ok(())
}

/// Section 6: A second agent started on a registry of 1,000 services and 5,000
/// events written beforehand: `mcp list` and `mcp status`.
fn section_scale(cx: &mut Ctx, list_200: Option<f64>) -> Result<()> {
    log("6. scale: a registry of 1,000 services and 5,000 events");
    cx.agent.stop();
    cx.podman.rm_all()?;
    let mut big = Agent::prepare()?;
    populate(&big.db(), 1000, 5000)?;
    big.start(&cx.podman)?;
    let operator = Operator::new(&big)?;
    std::thread::sleep(Duration::from_secs(2));
    // For profiling the CLI against this registry from another shell.
    let hold = env_usize("MCP_BENCH_HOLD_SECS", 0);
    if hold > 0 {
        log(format!(
            "holding {hold} s: XDG_CONFIG_HOME={} MCP_TOKEN={} {} list",
            operator.home.path().display(),
            operator.token,
            mcp_bin()
        ));
        std::thread::sleep(Duration::from_secs(hold as u64));
    }
    let listed: serde_json::Value =
        serde_json::from_slice(&operator.ok(&["list", "-o", "json"])?.stdout)?;
    ensure!(
        count_services(&listed) == 1000,
        "scale: list shows {} services",
        count_services(&listed)
    );
    let scale_runs = iters(30, 5);
    let (mut list_t, mut status_t) = (Vec::new(), Vec::new());
    for i in 0..scale_runs + 3 {
        let a = timed(&mut operator.mcp(&["list"]))?;
        let b = timed(&mut operator.mcp(&["status"]))?;
        if i >= 3 {
            list_t.push(ms(a));
            status_t.push(ms(b));
        }
    }
    let rpc_big = cx.rt.block_on(async {
        let mut client = rpc_client(&big).await?;
        let mut times = Vec::new();
        for i in 0..iters(500, 50) + 20 {
            let t = Instant::now();
            client
                .list_services(mcp::proto::ListServicesRequest {})
                .await?;
            if i >= 20 {
                times.push(ms(t.elapsed()));
            }
        }
        anyhow::Ok(times)
    })?;
    big.stop();
    let l50 = median(&list_t);
    let report = &mut cx.report;
    let (peer, peer_value, ratio) = match list_200 {
        Some(p) => (
            "`mcp list`, 200 services x 1 component (item 2)",
            fmt_ms(p),
            format!("{:.2}x", l50 / p),
        ),
        None => ("", String::new(), String::new()),
    };
    report.row(
        "6",
        format!("`mcp list`, 1,000 services (2,000 components) / 5,000 events, CLI p50 ({scale_runs} runs)"),
        fmt_ms(l50),
        peer,
        peer_value,
        ratio,
        "< 50 ms",
        Some(l50 < 50.0),
    );
    report.row(
        "6",
        format!("`mcp status`, 1,000 services (2,000 components) / 5,000 events, CLI p50 ({scale_runs} runs)"),
        fmt_ms(median(&status_t)),
        "",
        "",
        "",
        "",
        None,
    );
    report.row(
        "6",
        "ListServices RPC, 1,000 services, in-process p50",
        fmt_ms(median(&rpc_big)),
        "",
        "",
        "",
        "",
        None,
    );
    Ok(())
}

/// How many containers run, as the API lists them.
fn running(cx: &Ctx) -> Result<usize> {
    let docker = &cx.docker;
    cx.rt.block_on(async {
        let mut filters = HashMap::new();
        filters.insert("status".to_string(), vec!["running".to_string()]);
        let list = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        anyhow::Ok(list.len())
    })
}

/// Polls until `n` containers run; how long that took from `since`.
fn until_running(cx: &Ctx, n: usize, since: Instant) -> Result<Duration> {
    loop {
        if running(cx)? >= n {
            return Ok(since.elapsed());
        }
        ensure!(
            since.elapsed() < Duration::from_secs(120),
            "fewer than {n} containers run after 120 s"
        );
    }
}

fn stop_all(cx: &Ctx) -> Result<()> {
    run(cx.podman.cmd().args(["stop", "--all", "--time", "0"]))?;
    ensure!(running(cx)? == 0, "containers still run after stop --all");
    Ok(())
}

/// Section 7: A reboot's recovery: the 50 containers of section 3 stopped
/// (`podman stop --all`), then started again by the agent's recovery at its
/// start, against `podman start --all` on the same containers.
fn section_recovery(cx: &mut Ctx) -> Result<()> {
    let rounds = iters(5, 1);
    log(format!(
        "7. recovery: {rounds} rounds of 50 stopped containers"
    ));
    let (mut agent_t, mut recovery_t, mut podman_t) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        cx.agent.stop();
        stop_all(cx)?;
        let t = Instant::now();
        cx.agent.start(&cx.podman)?;
        agent_t.push(ms(until_running(cx, 50, t)?));
        // The agent's own account of it (`mcp status`).
        let status: serde_json::Value =
            serde_json::from_slice(&cx.operator.ok(&["status", "-o", "json"])?.stdout)?;
        let r = &status[0]["recovery"];
        let (from, to) = (r["started_at_ms"].as_i64(), r["finished_at_ms"].as_i64());
        if let (Some(from), Some(to)) = (from, to) {
            ensure!(r["recovered"].as_u64() == Some(50), "recovery: {r}");
            recovery_t.push((to - from) as f64);
        }
        stop_all(cx)?;
        let t = Instant::now();
        run(cx.podman.cmd().args(["start", "--all"]))?;
        podman_t.push(ms(until_running(cx, 50, t)?));
    }
    let (a, b) = (median(&agent_t), median(&podman_t));
    cx.report.row(
        "7",
        format!("recovery after a reboot: agent start -> 50 stopped containers running (median of {rounds})"),
        fmt_ms(a),
        "`podman start --all` on the same containers",
        fmt_ms(b),
        format!("{:.2}x", a / b),
        "",
        None,
    );
    cx.report.row(
        "7",
        "the agent's recovery alone (its status: started -> finished)",
        fmt_ms(median(&recovery_t)),
        "",
        "",
        "",
        "",
        None,
    );
    cx.report.notes.push(format!(
        "Recovery min-max: agent {}, `podman start --all` {}. The agent's figure includes its own start (TLS, registry) and starts the 10 services concurrently, each service's 5 components concurrently (no depends_on).",
        min_max(&agent_t),
        min_max(&podman_t),
    ));
    Ok(())
}

/// Section 9: the declarative sync of 20 one-component services: `mcp sync
/// --apply --yes` from nothing (and from undeployed) until all 20 serve,
/// against `podman-compose up -d` of one file with the same 20 containers;
/// then the way back, `mcp sync --apply --yes` with no definitions against
/// `podman-compose down -t 0`. A second agent of its own (on the same
/// podman), so the first agent's services are not part of its plan.
fn section_sync(cx: &mut Ctx) -> Result<()> {
    const SERVICES: usize = 20;
    let rounds = iters(5, 1);
    log(format!(
        "9. sync --apply of {SERVICES} services: 1 warm-up + {rounds} rounds"
    ));
    let ports = distinct_free_ports(SERVICES)?;
    let mut agent = Agent::prepare()?;
    agent.start(&cx.podman)?;
    let operator = Operator::new(&agent)?;
    let define_all = || -> Result<()> {
        for (i, port) in ports.iter().enumerate() {
            let name = format!("sync{}", i + 1);
            operator.define(&name, &definition(&name, &[*port]))?;
        }
        Ok(())
    };
    let mut compose_yml = String::from("x-podman:\n  in_pod: false\nservices:\n");
    for (i, port) in ports.iter().enumerate() {
        let _ = write!(
            compose_yml,
            "  sync{}:\n    image: {IMAGE}\n    command: {:?}\n    restart: \"no\"\n    network_mode: bridge\n    ports: [\"127.0.0.1:{port}:8080\"]\n",
            i + 1,
            HTTPD
        );
    }
    let compose_path = cx.podman.dir.path().join("compose-sync.yml");
    std::fs::write(&compose_path, compose_yml)?;
    let compose = |args: &[&str]| -> Option<Command> {
        let mut cmd = Command::new(cx.compose.as_ref()?);
        cmd.env("CONTAINERS_CONF", containers_conf())
            .arg("--podman-args")
            .arg(cx.podman.global_args().join(" "))
            .args(["-p", "mcpsync", "-f"])
            .arg(&compose_path)
            .args(args);
        Some(cmd)
    };
    let (mut up, mut down, mut compose_up, mut compose_down) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..=rounds {
        define_all()?;
        let t = Instant::now();
        operator.ok(&["sync", "--apply", "--yes"])?;
        wait_serving(&ports, Duration::from_secs(60))?;
        let u = t.elapsed();
        for i in 0..SERVICES {
            operator.forget(&format!("sync{}", i + 1))?;
        }
        let t = Instant::now();
        operator.ok(&["sync", "--apply", "--yes"])?;
        let d = t.elapsed();
        ensure!(
            ports.iter().all(|p| !serves(*p)),
            "a service still serves after sync --apply undeployed it"
        );
        if let Some(mut cmd) = compose(&["up", "-d"]) {
            let t = Instant::now();
            run(&mut cmd)?;
            wait_serving(&ports, Duration::from_secs(60))?;
            let cu = t.elapsed();
            let t = Instant::now();
            run(&mut compose(&["down", "-t", "0"]).context("podman-compose")?)?;
            let cd = t.elapsed();
            if round > 0 {
                compose_up.push(ms(cu));
                compose_down.push(ms(cd));
            }
        }
        if round > 0 {
            up.push(ms(u));
            down.push(ms(d));
        }
    }
    agent.stop();
    for (what, mcp, peer, peer_cmd) in [
        (
            "`mcp sync --apply --yes`: 20 services, until all serve",
            &up,
            &compose_up,
            "`podman-compose up -d`, the same 20 containers",
        ),
        (
            "`mcp sync --apply --yes` with no definitions: 20 services undeployed",
            &down,
            &compose_down,
            "`podman-compose down -t 0`",
        ),
    ] {
        let m = median(mcp);
        let (peer_value, ratio) = if peer.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            let p = median(peer);
            (fmt_ms(p), format!("{:.2}x", m / p))
        };
        cx.report.row(
            "9",
            format!("{what} (median of {rounds})"),
            fmt_ms(m),
            peer_cmd,
            peer_value,
            ratio,
            "",
            None,
        );
    }
    cx.report.notes.push(format!(
        "Sync min-max: mcp up {}, down {}. Each MCP round after the first deploys services that are known to the agent but undeployed (the plan says `change`: active false -> true), which is the same container work as `create`.",
        min_max(&up),
        min_max(&down),
    ));
    Ok(())
}

/// Section 8: The agent probing 50 components' HTTP health checks every 2 s:
/// its CPU and memory over the watch window, against section 4's idle agent.
fn section_health(cx: &mut Ctx) -> Result<()> {
    let watch_secs = env_usize("MCP_BENCH_WATCH_SECS", iters(60, 5)) as u64;
    log(format!(
        "8. health: 50 HTTP probes every 2 s, {watch_secs} s"
    ));
    for s in 0..10 {
        let name = format!("w{s:02}");
        let mut def = format!("name = \"{name}\"\nnode = \"{NODE}\"\nactive = true\n");
        for c in 0..5 {
            let port = free_port()?;
            let _ = write!(
                def,
                "\n[[components]]\nname = \"c{}\"\nimage = \"{IMAGE}\"\nrestart = \"no\"\n\
                 ports = [\"127.0.0.1:{port}:8080\"]\ncmd = {HTTPD:?}\n\
                 [components.health]\nhttp = \"http://127.0.0.1:{port}/\"\ninterval = \"2s\"\n",
                c + 1
            );
        }
        cx.operator.define(&name, &def)?;
        cx.operator.ok(&["deploy", &name])?;
    }
    let healthy = || -> Result<usize> {
        let ps: serde_json::Value =
            serde_json::from_slice(&cx.operator.ok(&["ps", "-o", "json"])?.stdout)?;
        Ok(ps[0]["containers"]
            .as_array()
            .map_or(0, |c| c.iter().filter(|c| c["health"] == "healthy").count()))
    };
    let t = Instant::now();
    while healthy()? < 50 {
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "the probes did not find 50 healthy components"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let agent_pid = cx.agent.pid().context("agent pid")?;
    let hwm_reset = reset_hwm(agent_pid);
    let a0 = proc_sample(agent_pid)?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(watch_secs));
    let a1 = proc_sample(agent_pid)?;
    let window = t0.elapsed().as_secs_f64();
    let cpu = (a1.ticks - a0.ticks) as f64 / clock_ticks() as f64 / window * 100.0;
    let still = healthy()?;
    let (peer, peer_value, ratio) = match cx.idle_cpu {
        Some(idle) => (
            "the same agent, 50 containers, no probes (section 4)",
            format!("{idle:.2} %"),
            String::new(),
        ),
        None => ("", String::new(), String::new()),
    };
    cx.report.row(
        "8",
        format!(
            "agent CPU probing 50 HTTP health checks every 2 s, over {watch_secs} s, % of one core"
        ),
        format!("{cpu:.2} %"),
        peer,
        peer_value,
        ratio,
        "",
        None,
    );
    cx.report.row(
        "8",
        if hwm_reset {
            "agent resident memory while probing: VmRSS at the end (VmHWM in the window)"
        } else {
            "agent resident memory while probing: VmRSS at the end (VmHWM since start)"
        },
        format!(
            "{:.1} MiB ({:.1} MiB)",
            a1.rss_kib as f64 / 1024.0,
            a1.hwm_kib as f64 / 1024.0
        ),
        "",
        "",
        "",
        "",
        None,
    );
    cx.report.notes.push(format!(
        "Health: {still} of 50 components healthy at the end of the window; {:.0} probes per second, each an HTTP GET from the agent to a published port. An exec probe (`cmd`) costs podman an exec session (conmon and runc) each, not the agent.",
        50.0 / 2.0
    ));
    Ok(())
}

fn count_services(list: &serde_json::Value) -> usize {
    // `mcp list -o json`: an array of nodes (or one object) with `services`.
    fn walk(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => a.iter().map(walk).sum(),
            serde_json::Value::Object(o) => match o.get("services") {
                Some(serde_json::Value::Array(s)) => s.len(),
                _ => o.values().map(walk).sum(),
            },
            _ => 0,
        }
    }
    walk(list)
}

/// Kills w00-c1 on the API socket `kills` times; for each, the latency from
/// just before the kill call to the `drift-detected` and `died` events in the
/// agent's registry (their ts), and to the die event on podman's own stream.
fn drift_latency(
    rt: &tokio::runtime::Runtime,
    docker: &Docker,
    operator: &Operator,
    agent: &Agent,
    kills: usize,
) -> Result<DriftTimes> {
    use rusqlite::OpenFlags;
    let target = "w00-c1";
    let db = rusqlite::Connection::open_with_flags(agent.db(), OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    db.busy_timeout(Duration::from_secs(5))?;
    let last_id = |db: &rusqlite::Connection| -> Result<i64> {
        Ok(db.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
    };
    // Podman's own stream: die events of the target, with their arrival
    // time and podman's own time of the event (both Unix ms).
    let (tx, rx) = std::sync::mpsc::channel::<(i64, Option<i64>)>();
    let stream_docker = docker.clone();
    let watcher = rt.spawn(async move {
        let filters = HashMap::from([("type".to_string(), vec!["container".to_string()])]);
        let mut events = stream_docker.events(Some(EventsOptions {
            filters: Some(filters),
            ..Default::default()
        }));
        while let Some(Ok(e)) = events.next().await {
            if !matches!(e.action.as_deref(), Some("die" | "died")) {
                continue;
            }
            let at = e.time_nano.map(|n| n / 1_000_000);
            let name = e
                .actor
                .and_then(|a| a.attributes)
                .and_then(|a| a.get("name").cloned())
                .unwrap_or_default();
            if name == target && tx.send((now_ms(), at)).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut t = DriftTimes::default();
    for _ in 0..kills {
        while rx.try_recv().is_ok() {}
        let since = last_id(&db)?;
        let t0 = now_ms();
        rt.block_on(docker.kill_container(target, None::<KillContainerOptions>))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut got_drift, mut got_died) = (None, None);
        while (got_drift.is_none() || got_died.is_none()) && Instant::now() < deadline {
            let mut stmt = db.prepare_cached(
                "SELECT kind, ts FROM events WHERE id > ?1 AND service = 'w00' AND component = 'c1'
                 AND kind IN ('died', 'drift-detected') ORDER BY id",
            )?;
            let rows = stmt
                .query_map([since], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for (kind, ts) in rows {
                match kind.as_str() {
                    "died" if got_died.is_none() => got_died = Some(ts - t0),
                    "drift-detected" if got_drift.is_none() => got_drift = Some(ts - t0),
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok((seen, at)) => {
                t.stream.push((seen - t0) as f64);
                if let Some(at) = at {
                    t.recorded.push((at - t0) as f64);
                }
            }
            Err(_) => log("no die event on podman's own stream within 5 s"),
        }
        t.drift
            .push(got_drift.context("no drift-detected event within 10 s of the kill")? as f64);
        t.died
            .push(got_died.context("no died event within 10 s of the kill")? as f64);
        operator.ok(&["start", "w00/c1"])?;
        std::thread::sleep(Duration::from_millis(500));
    }
    watcher.abort();
    Ok(t)
}

/// A registry with `services` services (two components each, desired
/// stopped, no containers) and `events` events, written before the agent
/// starts, through the crate's own Registry.
fn populate(db: &Path, services: usize, events: usize) -> Result<()> {
    use mcp::registry::{DesiredState, Registry};
    let mut registry = Registry::open(db)?;
    let kinds = ["deployed", "died", "drift-detected", "restarted", "stopped"];
    for i in 0..services {
        let name = format!("svc{i:04}");
        let text = format!(
            "name = \"{name}\"\nnode = \"{NODE}\"\nactive = false\n\n\
             [[components]]\nname = \"api\"\nimage = \"{IMAGE}\"\nports = [\"127.0.0.1:{}:8080\"]\ncmd = {HTTPD:?}\n\n\
             [[components]]\nname = \"web\"\nimage = \"{IMAGE}\"\ncmd = {HTTPD:?}\nenv = {{ MODE = \"bench\" }}\n",
            20000 + i
        );
        let def = mcp::spec::parse_service(Path::new(&format!("{name}.toml")), &text)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        registry.push_definition(&def, None, DesiredState::Stopped)?;
    }
    for e in 0..events {
        let service = format!("svc{:04}", e % services);
        let component = if e % 2 == 0 { "api" } else { "web" };
        registry.add_event(
            NODE,
            &service,
            component,
            kinds[e % kinds.len()],
            "benchmark history",
            "",
        )?;
    }
    Ok(())
}

/// The 1-, 5- and 15-minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine_facts(compose: &Option<PathBuf>, took: Duration, load_before: &str) -> String {
    let sh = |cmd: &str| -> String {
        Command::new("sh")
            .args(["-c", cmd])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let compose_version = compose
        .as_ref()
        .map(|c| {
            let out = Command::new(c).arg("version").output();
            out.map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find(|l| l.contains("podman-compose"))
                    .unwrap_or("?")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
        })
        .unwrap_or_else(|| "not installed".to_string());
    format!(
        "- date: {}\n- machine: {} cores (`nproc`), {}, {}\n- {}, {}, runc {}; rootful: {}\n- mcp {} (release build, commit {})\n- run took {:.0} s; load average (1/5/15 min) {} before, {} after: a busy machine inflates every figure\n",
        sh("date -u '+%Y-%m-%d %H:%M:%S UTC'"),
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'"),
        sh("uname -sr"),
        sh("podman --version"),
        compose_version,
        sh("runc --version | awk 'NR==1{print $3}'"),
        if sh("id -u") == "0" { "yes (running as root)" } else { "no" },
        env!("CARGO_PKG_VERSION"),
        sh(&format!(
            "git -C '{}' rev-parse --short HEAD 2>/dev/null; git -C '{}' diff --quiet HEAD 2>/dev/null || echo '(with uncommitted changes)'",
            repo().display(),
            repo().display()
        ))
        .replace('\n', " "),
        took.as_secs_f64(),
        load_before,
        load_average()
    )
}
