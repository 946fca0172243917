//! The agent's supervision tree (see ARCHITECTURE.md):
//!
//! ```text
//! System
//!  ├─ RegistryActor     sole owner of the SQLite connection, on its own thread
//!  ├─ RuntimeActor      sole owner of the container runtime client
//!  ├─ WatchActor        live scans of the runtime -> observed state
//!  └─ ServiceDirectory  name -> ServiceActor, created on first use, re-created if dead
//!       └─ ServiceActor (one per service)    serialises operations on its service
//!            └─ ComponentActor (one per component)  pull -> stop/remove -> create -> start -> verify
//! ```

pub mod component;
pub mod directory;
pub mod health;
pub mod registry;
pub mod runtime;
pub mod service;
pub mod watch;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod watch_tests;

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, SyncArbiter};

use crate::registry::RegistryError;
use crate::runtime::{Runtime, RuntimeError};

pub use component::ComponentOutcome;
pub use directory::{ServiceDirectory, ServiceFor};
pub use registry::RegistryActor;
pub use runtime::RuntimeActor;
pub use service::{Deploy, Lifecycle, LifecycleAction, ServiceActor};
pub use watch::{AlertSettings, Observe, WatchActor, WatchSettings};

/// Why an operation failed, in terms the gRPC layer maps to status codes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// A container that started but did not pass its health check.
    #[error("{0}")]
    Unhealthy(String),
    /// The node's policy refuses the definition.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request cannot apply here (a definition for another node).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The operation's deadline passed.
    #[error("{0}")]
    DeadlineExceeded(String),
}

impl From<RegistryError> for AgentError {
    fn from(e: RegistryError) -> Self {
        AgentError::Internal(e.to_string())
    }
}

impl From<RuntimeError> for AgentError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Unavailable { .. } => AgentError::Unavailable(e.to_string()),
            RuntimeError::NotFound { .. } => AgentError::NotFound(e.to_string()),
            other => AgentError::Internal(other.to_string()),
        }
    }
}

impl From<actix::MailboxError> for AgentError {
    fn from(e: actix::MailboxError) -> Self {
        AgentError::Internal(format!("agent actor unavailable: {e}"))
    }
}

/// Events buffered for a slow `mcp events --follow` before it misses some.
const EVENT_BUFFER: usize = 1024;

/// Settings the actors share.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// This node's name, as events and responses carry it.
    pub node: String,
    /// How long a container gets to stop before it is killed.
    pub stop_timeout: Duration,
    pub watch: WatchSettings,
    /// What definitions may make this node do (`[policy]`).
    pub policy: Arc<crate::policy::NodePolicy>,
}

impl AgentSettings {
    /// Refuses a definition for another node, or one the policy refuses.
    pub fn admit(&self, def: &crate::spec::ServiceDef) -> Result<(), AgentError> {
        if def.node.as_str() != self.node {
            return Err(AgentError::FailedPrecondition(format!(
                "this agent is node {}; the definition of {} names node {}: send it to that \
                 node, or change `node` in {}.toml",
                self.node, def.name, def.node, def.name
            )));
        }
        let refusals = self.policy.check(def);
        if refusals.is_empty() {
            Ok(())
        } else {
            Err(AgentError::PermissionDenied(crate::policy::describe(
                &refusals,
            )))
        }
    }
}

/// The long-lived actors every service and component actor talks to.
#[derive(Clone)]
pub struct Peers {
    pub registry: Addr<RegistryActor>,
    pub runtime: Addr<RuntimeActor>,
    pub watch: Addr<WatchActor>,
    pub settings: AgentSettings,
}

/// Addresses of the top of the tree, for the gRPC layer.
#[derive(Clone)]
pub struct AgentHandles {
    pub peers: Peers,
    pub directory: Addr<ServiceDirectory>,
}

/// Starts the tree. Must run inside an actix System. The caller opens the
/// registry so that a bad database fails start-up, not the first request.
pub fn start(
    registry: crate::registry::Registry,
    db_path: std::path::PathBuf,
    runtime: Arc<dyn Runtime>,
    settings: AgentSettings,
) -> AgentHandles {
    // SyncArbiter wants a factory: the first call takes the open registry,
    // a restart after a crash of that thread reopens the file.
    let first = std::sync::Mutex::new(Some(registry));
    let node = settings.node.clone();
    let (events, _) = tokio::sync::broadcast::channel(EVENT_BUFFER);
    let registry = SyncArbiter::start(1, move || {
        let taken = first.lock().ok().and_then(|mut r| r.take());
        match taken
            .map(Ok)
            .unwrap_or_else(|| crate::registry::Registry::open(&db_path))
        {
            Ok(reg) => RegistryActor::new(reg, node.clone(), events.clone()),
            Err(e) => panic!("cannot reopen the registry {}: {e}", db_path.display()),
        }
    });
    let runtime = RuntimeActor::new(runtime).start();
    let watch = WatchActor::new(
        registry.clone(),
        runtime.clone(),
        settings.node.clone(),
        settings.watch.clone(),
    )
    .start();
    let peers = Peers {
        registry,
        runtime,
        watch,
        settings,
    };
    let directory = ServiceDirectory::new(peers.clone()).start();
    AgentHandles { peers, directory }
}
