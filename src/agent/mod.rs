//! `mcp-agent`: start-up and shutdown. Opens the registry, prepares TLS and
//! authentication, starts the actor tree on its own thread (an actix System)
//! and serves gRPC on a multi-threaded tokio runtime.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::actors;

pub mod config;
mod node;
mod notify;
mod recover;
use crate::grpc::{self, auth, tls};
use crate::names::Name;
use crate::registry::Registry;

#[derive(Parser, Debug)]
#[command(
    name = "mcp-agent",
    version,
    about = "MCP node agent: runs a node's containers for the mcp CLI"
)]
pub struct AgentCli {
    #[command(subcommand)]
    pub command: AgentCommand,
}

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Serve the agent API (gRPC over TLS) until SIGTERM or Ctrl-C.
    Serve(Box<ServeArgs>),
    /// Create the agent's private CA and server certificate (if missing) and
    /// print the CA's path and fingerprint for the CLI's node config.
    Init(InitArgs),
    /// Copy the registry to DEST with SQLite's online backup API; safe while
    /// the agent runs.
    Backup(BackupArgs),
    /// Start what should run and does not (what the agent does at start),
    /// now, with the agent stopped: finish interrupted deploys, then start
    /// or re-create every component whose desired state is running, in the
    /// boot sequence's order. `--dry-run` only says what it would do.
    Recover(RecoverArgs),
}

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// Where the agent keeps its registry.
    #[arg(long, env = "MCP_AGENT_STATE_DIR", default_value = "/srv/mcp")]
    pub state_dir: PathBuf,
    /// The registry database (default: <state-dir>/mcp.db).
    #[arg(long, env = "MCP_AGENT_DB")]
    pub db: Option<PathBuf>,
    /// The copy to write (replaced atomically when complete).
    pub dest: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// One random token, created at first start in <state-dir>/token (mode 0600).
    /// For a single machine or a demo: anyone who can read that file is the operator.
    Local,
    /// Bearer tokens are MCIAS's (the platform's identity service), verified as
    /// --mcias-verify says; [auth] in the agent config says who may do what.
    Mcias,
}

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Where the agent keeps its registry, TLS material and token.
    #[arg(long, env = "MCP_AGENT_STATE_DIR", default_value = "/srv/mcp")]
    pub state_dir: PathBuf,
    /// This node's name (default: the host name); it goes into the certificate.
    #[arg(long, env = "MCP_AGENT_NODE")]
    pub node: Option<String>,
    /// The address the agent will listen on; its IP goes into the certificate.
    #[arg(long, env = "MCP_AGENT_LISTEN", default_value = "127.0.0.1:9444")]
    pub listen: SocketAddr,
    /// Extra DNS names or IPs for the certificate (repeatable).
    #[arg(long = "tls-name")]
    pub tls_names: Vec<String>,
    /// Issue a new server certificate (1 year) from the existing CA: the CLIs
    /// keep trusting the agent. Restart the agent to serve it.
    #[arg(long)]
    pub renew: bool,
    /// The CA key to renew with (default: <state-dir>/tls/ca.key).
    #[arg(long, requires = "renew")]
    pub ca_key: Option<PathBuf>,
}

/// What `serve` and `recover` share: the node, its state and its runtime.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// This node's name (default: the host name).
    #[arg(long, env = "MCP_AGENT_NODE")]
    pub node: Option<String>,
    /// Where the agent keeps its registry, TLS material and token.
    #[arg(long, env = "MCP_AGENT_STATE_DIR", default_value = "/srv/mcp")]
    pub state_dir: PathBuf,
    /// The registry database (default: <state-dir>/mcp.db).
    #[arg(long, env = "MCP_AGENT_DB")]
    pub db: Option<PathBuf>,
    /// The container runtime's API socket (default: the agent user's rootless
    /// podman socket, then /run/podman/podman.sock, then /var/run/docker.sock).
    #[arg(long, env = "MCP_AGENT_RUNTIME_SOCKET")]
    pub runtime_socket: Option<String>,
    /// Seconds a container gets to stop before it is killed.
    #[arg(long, env = "MCP_AGENT_STOP_TIMEOUT", default_value_t = 10)]
    pub stop_timeout: u64,
    /// Agent config file: watch, alert, recovery, limits, policy, auth (see
    /// src/agent/config.rs and README). Without it, the defaults apply and
    /// no alert command runs.
    #[arg(long, env = "MCP_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Root of the service directories `mcp push`/`mcp pull` reach: `<srv-root>/<service>/`.
    #[arg(long, env = "MCP_AGENT_SRV_ROOT", default_value = "/srv")]
    pub srv_root: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub on: NodeArgs,
    /// Say what would be started or re-created, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (TLS only; there is no plaintext listener).
    #[arg(long, env = "MCP_AGENT_LISTEN", default_value = "127.0.0.1:9444")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub on: NodeArgs,
    /// How bearer tokens are checked. Required: there is no silent default.
    #[arg(long, env = "MCP_AGENT_AUTH", value_enum)]
    pub auth: AuthMode,
    /// MCIAS base URL (https://host:port), with --auth mcias.
    #[arg(long, env = "MCP_AGENT_MCIAS_URL", required_if_eq("auth", "mcias"))]
    pub mcias_url: Option<String>,
    /// CA certificate (PEM) that signed MCIAS's certificate, with --auth mcias.
    #[arg(long, env = "MCP_AGENT_MCIAS_CA", required_if_eq("auth", "mcias"))]
    pub mcias_ca: Option<PathBuf>,
    /// Path of MCIAS's token validation endpoint.
    #[arg(long, env = "MCP_AGENT_MCIAS_VALIDATE_PATH", default_value = crate::mcias::DEFAULT_VALIDATE_PATH)]
    pub mcias_validate_path: String,
    /// How MCIAS tokens are checked: `local` verifies their EdDSA signature
    /// with MCIAS's published key (no call per request; works while MCIAS is
    /// down), `online` asks MCIAS's validation endpoint, `auto` is local while
    /// a key is held and online when none could be fetched.
    #[arg(
        long,
        env = "MCP_AGENT_MCIAS_VERIFY",
        value_enum,
        default_value = "auto"
    )]
    pub mcias_verify: crate::mcias::VerifyMode,
    /// Path of MCIAS's public signing key (a JWK or a JWKS). A guess: see
    /// src/mcias/mod.rs.
    #[arg(long, env = "MCP_AGENT_MCIAS_KEYS_PATH", default_value = crate::mcias::DEFAULT_KEYS_PATH)]
    pub mcias_keys_path: String,
    /// The `iss` that locally verified tokens must carry (not checked when
    /// not given).
    #[arg(long, env = "MCP_AGENT_MCIAS_ISSUER")]
    pub mcias_issuer: Option<String>,
    /// Deprecated: use `operate_roles` in the [auth] section of the agent
    /// config. When given, it replaces operate_roles with this one role.
    #[arg(long, env = "MCP_AGENT_MCIAS_ROLE")]
    pub mcias_role: Option<String>,
    /// Server certificate (PEM). Without it, a private CA and certificate are
    /// created in <state-dir>/tls on first start.
    #[arg(long, env = "MCP_AGENT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Server key (PEM), with --tls-cert.
    #[arg(long, env = "MCP_AGENT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Extra DNS names or IPs for the generated certificate (repeatable).
    #[arg(long = "tls-name")]
    pub tls_names: Vec<String>,
    /// Seconds that in-flight operations get to finish after SIGTERM before
    /// they are abandoned (keep it below systemd's TimeoutStopSec).
    #[arg(long, env = "MCP_AGENT_SHUTDOWN_GRACE", default_value_t = 20)]
    pub shutdown_grace: u64,
    /// Largest file `mcp push` may write (bytes, or 512MiB, 4GiB, ...).
    #[arg(long, env = "MCP_AGENT_MAX_FILE_SIZE", default_value = "4GiB", value_parser = crate::files::parse_size)]
    pub max_file_size: u64,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn node_name(explicit: Option<&str>) -> Result<Name> {
    let candidate = match explicit {
        Some(n) => n.to_string(),
        None => host_name()
            .split('.')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase(),
    };
    Name::parse(&candidate).with_context(|| {
        format!("node name {candidate:?} is not usable: pass --node with a valid name")
    })
}

/// Crates whose debug and trace output holds what the runtime is sent or
/// answers: bollard logs request and response bodies, and a container's
/// environment holds the values of its secrets.
const QUIET_TARGETS: &[&str] = &["bollard"];

/// The agent's log filter: `MCP_LOG` (an `EnvFilter`; None or invalid:
/// `info`), with [`QUIET_TARGETS`] never below info whatever it says.
pub fn log_filter(spec: Option<&str>) -> tracing_subscriber::EnvFilter {
    let mut filter = spec
        .and_then(|s| tracing_subscriber::EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    for target in QUIET_TARGETS {
        // A directive for the same target replaces the one MCP_LOG gave.
        if let Ok(d) = format!("{target}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

pub fn run(cli: AgentCli) -> Result<()> {
    match cli.command {
        AgentCommand::Serve(args) => serve(*args),
        AgentCommand::Init(args) => init(args),
        AgentCommand::Recover(args) => recover::run(args),
        AgentCommand::Backup(args) => {
            let db = args.db.unwrap_or_else(|| args.state_dir.join("mcp.db"));
            let version = Registry::backup(&db, &args.dest)
                .with_context(|| format!("cannot back up {}", db.display()))?;
            println!(
                "backed up {} to {} (schema version {version})",
                db.display(),
                args.dest.display()
            );
            Ok(())
        }
    }
}

/// Names (DNS or IP) the generated server certificate carries.
fn server_names(node: &Name, listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    names.push(host_name());
    names.push(node.to_string());
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names.extend(extra.iter().cloned());
    names.retain(|n| !n.is_empty());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

fn init(args: InitArgs) -> Result<()> {
    let node = node_name(args.node.as_deref())?;
    tls::private_dir(&args.state_dir)?;
    let dir = args.state_dir.join("tls");
    let names = server_names(&node, args.listen, &args.tls_names);
    let existed = dir.join("ca.pem").exists();
    if args.renew {
        tls::renew_server_certificate(&dir, &names, args.ca_key.as_deref())?;
        println!("renewed the server certificate from the existing CA");
    }
    let identity = tls::ensure_generated_identity(&dir, &names)?;
    let ca = identity
        .ca_path
        .ok_or_else(|| anyhow::anyhow!("no CA was generated"))?;
    let fingerprint = tls::fingerprint(&ca)?;
    if existed && !args.renew {
        println!("already initialised; the existing certificate is kept");
    }
    println!("ca          {}", ca.display());
    println!("fingerprint SHA256:{fingerprint}");
    println!("server cert {}", dir.join("server.pem").display());
    println!(
        "valid until {}",
        crate::cli::output::timestamp(tls::not_after_ms(&identity.cert_pem)?)
    );
    println!();
    println!("CLI node config (~/.config/mcp/mcp.toml):");
    println!("[nodes.{node}]");
    println!("address = \"{}:{}\"", node, args.listen.port());
    println!("ca = \"/path/to/a/copy/of/ca.pem\"   # check the fingerprint when you copy it");
    Ok(())
}

/// Raises the soft limit on open descriptors to the hard limit: each client
/// connection holds one. Returns the limit in force.
fn raise_descriptor_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum;
        }
    }
    limit.current
}

/// Work the server's runtime runs beside it.
type Background = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// How bearer tokens are checked (`--auth`), and the task that keeps
/// MCIAS's keys fresh, to run once the server's runtime does.
fn validator(
    args: &ServeArgs,
    config: &config::AgentConfig,
) -> Result<(Arc<dyn auth::TokenValidator>, Option<Background>)> {
    // MCIAS's keys are fetched on the server's runtime, once it runs.
    let mut key_refresh = None;
    let validator: Arc<dyn auth::TokenValidator> = match args.auth {
        AuthMode::Mcias => {
            let (Some(url), Some(ca)) = (&args.mcias_url, &args.mcias_ca) else {
                bail!("--auth mcias needs --mcias-url and --mcias-ca");
            };
            let endpoints = crate::mcias::Endpoints {
                validate: args.mcias_validate_path.clone(),
                keys: args.mcias_keys_path.clone(),
                ..Default::default()
            };
            let client = crate::mcias::McIasClient::new(url, ca, endpoints)?;
            let mut policy = config.auth_policy();
            if let Some(role) = &args.mcias_role {
                tracing::warn!(
                    role = %role,
                    "--mcias-role is deprecated: set operate_roles in the [auth] section of the \
                     agent config; for now it replaces operate_roles with this one role"
                );
                policy.operate_roles = [role.clone()].into();
            }
            tracing::info!(
                mcias = %url,
                verify = ?args.mcias_verify,
                operate_roles = ?policy.operate_roles,
                read_roles = ?policy.read_roles,
                operate_accounts = ?policy.operate_accounts,
                read_accounts = ?policy.read_accounts,
                deny_roles = ?policy.deny_roles,
                "tokens are MCIAS's"
            );
            let verifier = Arc::new(crate::mcias::Verifier::new(
                client,
                args.mcias_verify,
                args.mcias_issuer.clone(),
            ));
            key_refresh = verifier
                .key_refresh()
                .map(|refresh| Box::pin(refresh) as Background);
            Arc::new(auth::McIasValidator::new(verifier, policy))
        }
        AuthMode::Local => {
            let path = args.on.state_dir.join("token");
            let v = auth::LocalTokenValidator::load_or_create(&path)?;
            tracing::warn!(
                token_file = %path.display(),
                "AUTH MODE LOCAL: one shared token, no identity service. Anyone who can read \
                 the token file commands this agent. For a single machine only."
            );
            Arc::new(v)
        }
    };
    Ok((validator, key_refresh))
}

/// The server's certificate: the operator's, or the generated one.
fn identity(args: &ServeArgs, node: &Name) -> Result<tls::ServerIdentity> {
    let identity = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => tls::load_identity(cert, key)?,
        _ => tls::ensure_generated_identity(
            &args.on.state_dir.join("tls"),
            &server_names(node, args.listen, &args.tls_names),
        )?,
    };
    if let Some(ca) = &identity.ca_path {
        tracing::info!(
            ca = %ca.display(),
            fingerprint = %format!("SHA256:{}", tls::fingerprint(ca)?),
            "clients verify this agent with this CA (set `ca` in the CLI's node config)"
        );
    }
    Ok(identity)
}

fn serve(args: ServeArgs) -> Result<()> {
    let tls_files: Vec<PathBuf> = [args.tls_cert.clone(), args.tls_key.clone()]
        .into_iter()
        .flatten()
        .collect();
    let node = node::Node::open(&args.on, &tls_files)?;
    let limits = node.config.serve_limits();
    if let Some(nofile) = raise_descriptor_limit() {
        let needed = limits.connections.max_connections as u64 + 64;
        if nofile < needed {
            tracing::warn!(
                nofile,
                max_connections = limits.connections.max_connections,
                "the descriptor limit is below [limits] max_connections plus the agent's own \
                 files: raise LimitNOFILE (systemd) or lower max_connections"
            );
        }
    }
    let (validator, key_refresh) = validator(&args, &node.config)?;
    let identity = identity(&args, &node.name)?;
    let cert_not_after_ms = tls::not_after_ms(&identity.cert_pem)
        .context("cannot read the server certificate's validity")?;
    warn_if_expiring(cert_not_after_ms);
    // File transfers never enter a directory holding the agent's own state,
    // keys or config.
    let files = crate::files::FilesConfig {
        srv_root: args.on.srv_root.clone(),
        max_file_size: args.max_file_size,
        protected: node
            .secrets
            .iter()
            .map(|p| {
                if p.is_dir() {
                    p.clone()
                } else {
                    p.parent().map(PathBuf::from).unwrap_or_default()
                }
            })
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
    };
    let prune = node.config.prune_settings();
    let prune_images = node
        .config
        .images
        .prune
        .then(|| Duration::from_secs(node.config.images.prune_interval_secs));
    let node::Node {
        name: node_name,
        registry,
        db_path,
        runtime,
        settings,
        socket,
        ..
    } = node;
    let node = node_name;

    // systemd's watchdog (WatchdogSec=) is fed from inside the actor tree.
    let heartbeat = notify::heartbeat_interval();
    // The actor tree runs on its own thread, in an actix System.
    let fatal = crate::actors::supervisor::Fatal::default();
    let tree_fatal = fatal.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let actor_thread = std::thread::Builder::new()
        .name("mcp-actors".into())
        .spawn(move || {
            let system = actix_rt::System::new();
            let handles = system.block_on(async {
                let handles = actors::start(registry, db_path, runtime, settings, tree_fatal);
                actors::pruner::start(&handles.peers, prune);
                if let Some(every) = prune_images {
                    actors::images::start(&handles.peers, every);
                }
                if let Some(every) = heartbeat {
                    tracing::info!(
                        "systemd's watchdog is on: a heartbeat through the actor tree every {every:?}"
                    );
                    actors::heartbeat::start(&handles, every, notify::on_beat());
                }
                handles
            });
            let _ = tx.send((handles, actix_rt::System::current()));
            system.run()
        })?;
    let (handles, system) = rx.recv().context("the actor system did not start")?;

    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = tokio_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let local = listener.local_addr()?;
        tracing::info!(node = %node, runtime = %socket, "listening on https://{local}");
        // The tree (and what it does at start) is running, and connections
        // queue on the bound listener until the server takes them.
        notify::ready(&format!("serving on {local}"));
        if let Some(refresh) = key_refresh {
            tokio::spawn(refresh);
        }
        let watch = handles.peers.watch.clone();
        let followers = handles.shutdown.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut daily = tokio::time::interval(Duration::from_secs(86_400));
            daily.tick().await;
            loop {
                daily.tick().await;
                warn_if_expiring(cert_not_after_ms);
            }
        });
        let front = grpc::FrontDoor {
            identity,
            validator,
            limits,
            files,
        };
        let server = grpc::serve(listener, front, handles, async {
            let _ = stop_rx.await;
        });
        tokio::pin!(server);
        let failed = tokio::select! {
            served = &mut server => return served,
            () = shutdown_signal() => None,
            why = fatal.raised() => Some(why),
        };
        // Stop taking requests and end the streams that would never end
        // (followers); let the operations in flight (deploys included)
        // finish within the grace period, then abandon and record the rest.
        let _ = stop_tx.send(());
        followers.cancel();
        let grace = match failed {
            // The tree cannot carry on: do not wait on it long.
            Some(_) => Duration::from_secs(2),
            None => Duration::from_secs(args.shutdown_grace),
        };
        tracing::info!("waiting up to {grace:?} for operations in flight");
        notify::stopping(&format!(
            "stopping: waiting up to {}s for operations in flight",
            grace.as_secs()
        ));
        let served = match tokio::time::timeout(grace, &mut server).await {
            Ok(served) => served,
            Err(_) => {
                let abandoned = watch
                    .send(crate::actors::watch::Abandon)
                    .await
                    .unwrap_or_default();
                if !abandoned.is_empty() {
                    tracing::warn!(
                        abandoned = abandoned.len(),
                        "grace period over: abandoning {}",
                        abandoned.join(", ")
                    );
                }
                Ok(())
            }
        };
        match failed {
            Some(why) => Err(anyhow::anyhow!("{why}")),
            None => served,
        }
    });
    system.stop();
    if actor_thread.join().is_err() {
        bail!("the actor system panicked");
    }
    tracing::info!("stopped");
    served
}

/// Warns, from 30 days before on, that the server certificate expires.
fn warn_if_expiring(not_after_ms: i64) {
    let left_ms = not_after_ms - crate::registry::now_ms();
    if left_ms < tls::EXPIRY_WARNING_DAYS * 86_400_000 {
        tracing::warn!(
            expires = %crate::cli::output::timestamp(not_after_ms),
            "the agent's TLS certificate expires in {} day(s): run `mcp-agent init --renew` \
             (same CA, so the CLIs keep trusting it) and restart the agent",
            left_ms.max(0) / 86_400_000
        );
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_runtime_clients_bodies_stay_out_of_the_log_at_any_level() {
        for spec in [
            None,
            Some("trace"),
            Some("bollard=trace"),
            Some("debug,bollard=trace"),
            Some("not a filter ==="),
        ] {
            let sink = Sink::default();
            let writer = sink.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_env_filter(super::log_filter(spec))
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::debug!(target: "bollard::docker", "{{\"Env\":[\"A=body\"]}}");
                tracing::trace!(target: "bollard::docker", "request: body");
                tracing::info!(target: "bollard::docker", "kept at info");
                tracing::trace!(target: "mcp::actors", "mcp at trace");
            });
            let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
            assert!(!log.contains("body"), "{spec:?}: {log}");
            assert!(log.contains("kept at info"), "{spec:?}: {log}");
            assert_eq!(
                log.contains("mcp at trace"),
                spec == Some("trace"),
                "{spec:?}: {log}"
            );
        }
    }
}
