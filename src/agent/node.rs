//! What `serve` and `recover` both open before the actor tree starts: the
//! state directory (locked: one agent per state directory), the config, the
//! registry and the runtime, and the settings the actors share.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::config::AgentConfig;
use super::{node_name, NodeArgs};
use crate::actors::AgentSettings;
use crate::grpc::tls;
use crate::names::Name;
use crate::registry::Registry;
use crate::runtime::{default_socket, podman::PodmanRuntime};
use crate::secrets::SecretStore;

pub struct Node {
    pub name: Name,
    pub config: AgentConfig,
    pub db_path: PathBuf,
    pub registry: Registry,
    pub socket: String,
    pub runtime: Arc<PodmanRuntime>,
    /// The agent's own files (state, registry, keys, config): no definition
    /// may mount them, no transfer may enter them.
    pub secrets: Vec<PathBuf>,
    pub settings: AgentSettings,
    /// Held while the process lives.
    _lock: std::fs::File,
}

impl Node {
    /// `tls_files`: a certificate and key given by flag (secrets too).
    pub fn open(args: &NodeArgs, tls_files: &[PathBuf]) -> Result<Node> {
        let name = node_name(args.node.as_deref())?;
        let config = match &args.config {
            Some(path) => AgentConfig::load(path)?,
            None => AgentConfig::default(),
        };
        // The state directory holds the token, the keys and the registry.
        tls::private_dir(&args.state_dir)?;
        let lock = lock_state_dir(&args.state_dir)?;
        let db_path = args
            .db
            .clone()
            .unwrap_or_else(|| args.state_dir.join("mcp.db"));
        let registry = Registry::open(&db_path)
            .with_context(|| format!("cannot open the registry {}", db_path.display()))?;
        let socket = args.runtime_socket.clone().unwrap_or_else(default_socket);
        if !Path::new(socket.trim_start_matches("unix://")).exists() {
            tracing::warn!(socket = %socket, "container runtime socket not found; runtime calls will fail until it appears");
        }
        let runtime = Arc::new(PodmanRuntime::new(socket.clone()));
        let secrets: Vec<PathBuf> = [Some(args.state_dir.clone()), Some(db_path.clone())]
            .into_iter()
            .chain(tls_files.iter().cloned().map(Some))
            .chain([args.config.clone()])
            .chain(config.registries.iter().map(|r| r.password_file.clone()))
            .flatten()
            .map(|p| std::path::absolute(&p).unwrap_or(p))
            .collect();
        let policy = crate::policy::NodePolicy {
            srv_root: args.srv_root.clone(),
            volume_roots: config.policy.volume_roots.clone(),
            allow_host_network: config.policy.allow_host_network,
            require_pinned_images: config.policy.require_pinned_images,
            allow_caps: config.policy.allowed_caps(),
            protected: secrets.clone(),
        };
        let settings = AgentSettings {
            node: name.to_string(),
            stop_timeout: Duration::from_secs(args.stop_timeout),
            watch: config.watch_settings(),
            policy: Arc::new(policy),
            recovery: config.recovery_settings(),
            registries: Arc::new(config.registry_logins()?),
            secrets: Arc::new(SecretStore::new(&args.state_dir.join("secrets"))),
            routes: Arc::new(config.route_settings()),
            create_networks: config.networks.create,
        };
        Ok(Node {
            name,
            config,
            db_path,
            registry,
            socket,
            runtime,
            secrets,
            settings,
            _lock: lock,
        })
    }
}

/// One agent (or `mcp-agent recover`) per state directory at a time: two
/// would act on the same containers with two views of them.
fn lock_state_dir(dir: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    use rustix::fs::{flock, FlockOperation};
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => bail!(
            "another mcp-agent is running on the state directory {} (it holds {}); stop it \
             first (systemctl stop mcp-agent), or give this one its own --state-dir",
            dir.display(),
            path.display()
        ),
        Err(e) => {
            Err(std::io::Error::from(e)).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}
