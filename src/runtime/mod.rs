//! The container runtime, behind one trait: `podman` talks to podman's (or
//! Docker's) API socket through bollard; `fake` is an in-memory stand-in for
//! unit tests of the actors.

/// Test support only: not compiled into the release library.
#[cfg(test)]
pub mod fake;
pub mod libpod;
pub mod logs;
pub mod podman;
pub mod registries;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::names::Name;
use crate::spec::ComponentDef;
pub use logs::{LogChunk, LogOptions, LogStream};

/// The prefix of MCP's own labels; definitions may not use it.
pub const LABEL_PREFIX: &str = "mcp.";
/// Labels MCP puts on the containers it creates, so a scan can tell which
/// service and component a container belongs to.
pub const LABEL_SERVICE: &str = "mcp.service";
pub const LABEL_COMPONENT: &str = "mcp.component";
/// The component spec (JSON) the container was created from, so the
/// container itself says what it runs, even if the agent died before it
/// could record that.
pub const LABEL_SPEC: &str = "mcp.spec";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    /// The id of the image the container was created from (`sha256:...`):
    /// what the image reference named at create time.
    pub image_id: String,
    /// created, running, paused, restarting, exited, dead, ...
    pub state: String,
    /// The runtime's status line ("Up 5 minutes").
    pub status: String,
    pub labels: HashMap<String, String>,
}

impl ContainerInfo {
    /// (service, component) when MCP created this container.
    pub fn owner(&self) -> Option<(&str, &str)> {
        Some((
            self.labels.get(LABEL_SERVICE)?.as_str(),
            self.labels.get(LABEL_COMPONENT)?.as_str(),
        ))
    }
}

/// One container event from the runtime's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    pub container_id: String,
    pub name: String,
    /// create, start, die, kill, oom, stop, remove, restart, pause, unpause, ...
    pub action: String,
    /// With `die`: the process's exit code.
    pub exit_code: Option<i64>,
    pub labels: HashMap<String, String>,
    /// When it happened, in Unix nanoseconds: the watch tells an
    /// operation's own events from later ones by it, so milliseconds are
    /// too coarse.
    pub time_ns: i64,
}

/// Now, in Unix nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

impl RuntimeEvent {
    pub fn time_ms(&self) -> i64 {
        self.time_ns / 1_000_000
    }

    /// The container state this event leaves behind, for actions that change it.
    pub fn resulting_state(&self) -> Option<&'static str> {
        Some(match self.action.as_str() {
            "create" => "created",
            "start" | "restart" | "unpause" => "running",
            "die" | "stop" => "exited",
            "pause" => "paused",
            "remove" => "absent",
            _ => return None,
        })
    }

    pub fn owner(&self) -> Option<(&str, &str)> {
        Some((
            self.labels.get(LABEL_SERVICE)?.as_str(),
            self.labels.get(LABEL_COMPONENT)?.as_str(),
        ))
    }

    /// The spec MCP created the container from, per its label (the runtime
    /// passes a container's labels along with its events).
    pub fn created_from(&self) -> Option<ComponentDef> {
        spec_label(&self.labels)
    }
}

impl ContainerInfo {
    /// The spec MCP created this container from, per its label.
    pub fn created_from(&self) -> Option<ComponentDef> {
        spec_label(&self.labels)
    }
}

fn spec_label(labels: &HashMap<String, String>) -> Option<ComponentDef> {
    serde_json::from_str(labels.get(LABEL_SPEC)?).ok()
}

/// What to create: a component of a service, under its container name.
#[derive(Debug, Clone)]
pub struct CreateRequest<'a> {
    pub service: &'a Name,
    pub component: &'a ComponentDef,
    pub container_name: String,
    /// The values of the secrets `component` names, read from the store
    /// for this create only (its Debug shows names only).
    pub secrets: &'a crate::secrets::ResolvedSecrets,
    /// The host ports of its routes to publish, and their variables.
    pub routes: &'a [crate::routes::Published],
    /// Other names it answers to on its network (a user-defined one).
    pub aliases: &'a [String],
}

/// A network as the runtime has it, after [`Runtime::ensure_network`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFacts {
    /// This call created it.
    pub created: bool,
    pub driver: String,
    /// Comma-separated subnets.
    pub subnet: String,
    /// Whether its containers resolve each other's names; None: unknown.
    pub dns: Option<bool>,
}

/// The label MCP puts on the networks it creates.
pub const LABEL_CREATED_BY: &str = "mcp.created-by";

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("container runtime at {endpoint} is unavailable: {detail} (is `podman system service` running there? set --runtime-socket)")]
    Unavailable { endpoint: String, detail: String },
    #[error("image {image} is not present locally and pulling it failed: {detail}")]
    Pull { image: String, detail: String },
    #[error("{what} not found in the runtime")]
    NotFound { what: String },
    #[error("runtime refused {action}: {detail}")]
    Api { action: String, detail: String },
    /// A create whose name another container holds (possibly one still
    /// being created by a request of an agent that has since died).
    #[error("runtime refused create: {detail}")]
    NameInUse { detail: String },
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// A registry login for pulls (`[[registries]]` in agent.toml).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryLogin({}, password hidden)", self.username)
    }
}

/// An image the runtime holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    /// `registry/repo:tag` references; empty for a dangling image.
    pub tags: Vec<String>,
    pub size_bytes: u64,
}

/// A command to run attached in a container (`mcp exec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    /// Attach the command's standard input.
    pub stdin: bool,
    /// Give it a terminal (stdout and stderr then arrive as one stream).
    pub tty: bool,
}

/// What an attached command writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(bytes::Bytes),
    Stderr(bytes::Bytes),
}

/// A command running attached: its output until it exits, and its input.
pub struct ExecSession {
    /// The runtime's id of the exec, for resizes and the exit code.
    pub id: String,
    pub output: BoxStream<'static, Result<ExecOutput>>,
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

impl std::fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExecSession({})", self.id)
    }
}

#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Where the runtime is reached (a socket path), for messages.
    fn endpoint(&self) -> String;
    /// The id of the image `image` names on the node; None when absent.
    async fn image_id(&self, image: &str) -> Result<Option<String>>;
    /// Pulls `image` (with `login` for its registry, when given).
    async fn pull_image(&self, image: &str, login: Option<&RegistryLogin>) -> Result<()>;
    /// Every image the runtime holds.
    async fn list_images(&self) -> Result<Vec<ImageInfo>>;
    /// Removes an image by id; an image a container uses is refused.
    async fn remove_image(&self, id: &str) -> Result<()>;
    /// A container by name or id; None when there is none.
    async fn inspect(&self, name_or_id: &str) -> Result<Option<ContainerInfo>>;
    /// What a container runs, as a definition would say it (for adopt);
    /// None when there is no such container.
    async fn inspect_spec(
        &self,
        name_or_id: &str,
    ) -> Result<Option<(ContainerInfo, crate::spec::RunningSpec)>>;
    /// Makes sure network `name` exists: when missing it is created as a
    /// bridge (the runtime turns its DNS on where it can).
    async fn ensure_network(&self, name: &str) -> Result<NetworkFacts>;
    /// Creates (does not start) a container; returns its id.
    async fn create(&self, request: CreateRequest<'_>) -> Result<String>;
    async fn start(&self, id: &str) -> Result<()>;
    async fn stop(&self, id: &str, timeout: Duration) -> Result<()>;
    /// Removes a container, stopping it first if needed.
    async fn remove(&self, id: &str) -> Result<()>;
    /// Every container on the node, running or not.
    async fn list(&self) -> Result<Vec<ContainerInfo>>;
    /// Runs `cmd` in the running container `id`; its exit code. Output is
    /// discarded (health probes only need the code).
    async fn exec(&self, id: &str, cmd: &[String]) -> Result<i64>;
    /// Starts `request` in the running container `id`, attached.
    async fn exec_attached(&self, id: &str, request: ExecRequest) -> Result<ExecSession>;
    /// Resizes the terminal of an exec started with `tty`.
    async fn exec_resize(&self, exec_id: &str, rows: u16, cols: u16) -> Result<()>;
    /// The exit code of an exec; None while it runs.
    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>>;
    /// Container events from the instant of the call on, so a listing made
    /// after the call and the stream together miss nothing. The stream ends
    /// (or yields an error) when the runtime goes away; the caller reconnects.
    async fn events(&self) -> Result<BoxStream<'static, Result<RuntimeEvent>>>;
    /// The output of container `name_or_id`, one item per line, oldest
    /// first; with `options.follow`, then new lines as they are written.
    /// `NotFound` (here, not in the stream) when there is no such container.
    async fn logs(
        &self,
        name_or_id: &str,
        options: LogOptions,
    ) -> Result<BoxStream<'static, Result<LogChunk>>>;
}

/// Labels of a container created for `service/component` from `spec`: the
/// definition's own, and MCP's.
pub fn labels_for(service: &Name, spec: &ComponentDef) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    labels.extend([
        (LABEL_SERVICE.to_string(), service.to_string()),
        (LABEL_COMPONENT.to_string(), spec.name.to_string()),
        (
            LABEL_SPEC.to_string(),
            serde_json::to_string(spec).unwrap_or_default(),
        ),
    ]);
    labels
}

/// Default socket of the runtime: the agent user's rootless podman socket,
/// then the system podman socket, then Docker's.
pub fn default_socket() -> String {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        candidates.push(std::path::PathBuf::from(dir).join("podman/podman.sock"));
    }
    // SAFETY-free way to get our uid: the owner of /proc/self.
    if let Ok(meta) = std::fs::metadata("/proc/self") {
        use std::os::unix::fs::MetadataExt;
        candidates.push(format!("/run/user/{}/podman/podman.sock", meta.uid()).into());
    }
    candidates.push("/run/podman/podman.sock".into());
    candidates.push("/var/run/docker.sock".into());
    candidates
        .iter()
        .find(|p| p.exists())
        .unwrap_or(&candidates[0])
        .display()
        .to_string()
}
