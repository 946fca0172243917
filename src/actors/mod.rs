//! The agent's supervision tree (see ARCHITECTURE.md):
//!
//! ```text
//! System
//!  ├─ RegistryActor     sole owner of the SQLite connection, on its own thread
//!  ├─ RuntimeActor      sole owner of the container runtime client
//!  ├─ WatchActor        live scans of the runtime -> observed state
//!  ├─ ServiceDirectory  name -> ServiceActor, created on first use
//!  │    └─ ServiceActor (one per service)    queues operations on its service
//!  │         └─ ComponentActor (one per component)  pull -> stop/remove -> create -> start -> verify
//!  ├─ EventPruner       event retention (pruner.rs; started by the agent)
//!  └─ Heartbeat         systemd's watchdog (heartbeat.rs; started by the agent under it)
//! ```
//!
//! Every actor but the RegistryActor runs under `supervisor::supervise`,
//! which restarts it on the same mailbox when it panics or stops; the
//! RegistryActor recovers from a panic by reopening the database, and asks
//! the agent to exit when it cannot.

pub mod component;
pub mod directory;
pub mod health;
pub mod heartbeat;
pub mod images;
pub mod operations;
pub mod pruner;
pub mod recovery;
pub mod registry;
pub mod runtime;
pub mod service;
pub mod supervisor;
pub mod watch;

#[cfg(test)]
mod healing_tests;
#[cfg(test)]
mod routes_tests;
#[cfg(test)]
mod supervision_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod watch_tests;

use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, SyncArbiter};

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

impl From<crate::secrets::SecretError> for AgentError {
    fn from(e: crate::secrets::SecretError) -> Self {
        use crate::secrets::SecretError;
        match e {
            SecretError::Invalid(m) => AgentError::InvalidArgument(m),
            SecretError::NotFound(m) => AgentError::NotFound(m),
            SecretError::Missing(m) => AgentError::FailedPrecondition(m),
            SecretError::Io(m) => AgentError::Internal(m),
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
    /// What the agent does at start (`[recovery]`, `[[boot.sequence]]`).
    pub recovery: recovery::RecoverySettings,
    /// Logins for image pulls (`[[registries]]`).
    pub registries: Arc<crate::runtime::registries::RegistryLogins>,
    /// The services' secrets (`<state-dir>/secrets`).
    pub secrets: Arc<crate::secrets::SecretStore>,
    /// Where routes get their host ports, and the route hook (`[routes]`).
    pub routes: Arc<crate::routes::RouteSettings>,
    /// Create a network a definition names when the runtime lacks it
    /// (`[networks] create`).
    pub create_networks: bool,
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
    /// Operations in progress: the services' queues and the components'
    /// leases, shared across actor restarts.
    pub ops: Arc<operations::Operations>,
    pub settings: AgentSettings,
    pub fatal: supervisor::Fatal,
    /// Records an actor's restart (an event of the node).
    pub on_restart: supervisor::OnRestart,
}

impl Peers {
    /// Starts `actor` supervised, as every actor of the tree is.
    pub fn supervise<A>(&self, kind: &'static str, actor: A) -> Addr<A>
    where
        A: actix::Actor<Context = actix::Context<A>> + actix::Supervised,
    {
        supervisor::supervise(
            kind,
            self.fatal.clone(),
            Some(self.on_restart.clone()),
            actor,
        )
    }
}

/// Addresses of the top of the tree, for the gRPC layer.
#[derive(Clone)]
pub struct AgentHandles {
    pub peers: Peers,
    pub directory: Addr<ServiceDirectory>,
    /// Cancelled when the agent starts shutting down: streams that would go
    /// on forever (`events --follow`, `logs --follow`) end at once.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// What the recovery at start is doing (`mcp status`).
    pub recovery: recovery::RecoveryProgress,
}

/// Starts the tree, every actor supervised (supervisor.rs). Must run inside
/// an actix System. The caller opens the registry so that a bad database
/// fails start-up, not the first request.
pub fn start(
    registry: crate::registry::Registry,
    db_path: std::path::PathBuf,
    runtime: Arc<dyn Runtime>,
    settings: AgentSettings,
    fatal: supervisor::Fatal,
) -> AgentHandles {
    let (events, _) = tokio::sync::broadcast::channel(EVENT_BUFFER);
    let registry_actor = RegistryActor::new(
        registry,
        db_path,
        settings.node.clone(),
        events,
        fatal.clone(),
    );
    // One worker thread, so SyncArbiter calls the factory once: the
    // RegistryActor recovers from panics itself (registry.rs).
    let first = std::sync::Mutex::new(Some(registry_actor));
    let registry = SyncArbiter::start(1, move || {
        first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| unreachable!("a SyncArbiter of one thread starts one actor"))
    });
    // Each restart is an event of the node, with its reason.
    let events_to = registry.clone();
    let on_restart: supervisor::OnRestart = Arc::new(move |kind, why| {
        events_to.do_send(registry::AddEvent {
            service: String::new(),
            component: String::new(),
            kind: "actor-restarted".to_string(),
            detail: format!("{why} ({kind} restarted)"),
            by: crate::registry::AGENT.to_string(),
        });
    });
    let runtime = supervisor::supervise(
        "RuntimeActor",
        fatal.clone(),
        Some(on_restart.clone()),
        RuntimeActor::new(runtime),
    );
    let ops = Arc::new(operations::Operations::default());
    let watch = supervisor::supervise(
        "WatchActor",
        fatal.clone(),
        Some(on_restart.clone()),
        WatchActor::new(
            registry.clone(),
            runtime.clone(),
            ops.clone(),
            settings.node.clone(),
            settings.watch.clone(),
        ),
    );
    let peers = Peers {
        registry,
        runtime,
        watch,
        ops,
        settings,
        fatal: fatal.clone(),
        on_restart: on_restart.clone(),
    };
    let directory = peers.supervise("ServiceDirectory", ServiceDirectory::new(peers.clone()));
    let handles = AgentHandles {
        peers,
        directory,
        shutdown: Default::default(),
        recovery: Default::default(),
    };
    handles
        .peers
        .watch
        .do_send(watch::AttachDirectory(handles.directory.clone()));
    let at_start = handles.peers.settings.recovery.clone();
    actix::spawn(recovery::at_start(handles.clone(), at_start));
    handles
}
