//! The agent's optional config file (`--config`): settings that do not fit
//! flags (lists, sections).
//!
//! ```toml
//! [watch]
//! scan_interval_secs = 60     # full scan, besides the event stream
//! flap_exits = 3              # this many exits ...
//! flap_window_secs = 600      # ... within this window is flapping
//! reconcile = false           # put drifting components back (a definition's `reconcile` wins)
//! reconcile_grace_secs = 1    # drift lasts this long before the first attempt
//! health_probes = true        # keep probing health checks after the deploy
//! restart_unhealthy = true    # honour on_unhealthy = "restart" (off: alert instead)
//!
//! [recovery]                  # what the agent does at start
//! at_start = true             # start (or re-create) what should run and does not
//! finish_interrupted = true   # finish deploys a crash of the agent interrupted
//!
//! [[boot.sequence]]           # recovery's order: stages, one after the other
//! name = "storage"
//! services = ["postgres"]
//! timeout = "60s"             # then the next stage starts anyway (event and alert)
//! tcp = "127.0.0.1:5432"      # the gate; without it: the stage's health checks
//!
//! [registry]                  # how long events are kept; 0 is no limit by that
//! keep_events_days = 30
//! keep_events_per_component = 1000   # the newest, per service and component
//! prune_interval_secs = 3600  # pruned at start and this often (both limits 0: never)
//!
//! [alert]
//! command = ["/usr/local/bin/page-ops", "--team", "infra"]   # no shell
//! rate_limit_secs = 600       # at most one alert per component per window
//! timeout_secs = 10           # then the command is killed and recorded as failed
//!
//! [limits]                    # what one client may hold of the agent
//! max_connections = 512       # at the cap, handshaking then idle connections are closed
//! handshake_timeout_secs = 10 # a TLS handshake must complete within this
//! idle_timeout_secs = 300     # a connection without a request in flight is closed after this
//! keepalive_interval_secs = 60
//! keepalive_timeout_secs = 20
//! max_transfers = 16          # file pushes and pulls at once
//!
//! [policy]                    # what a definition may make this node do
//! volume_roots = ["/srv/shared"]   # host paths mountable besides <srv-root>/<service>/
//! allow_host_network = false
//! require_pinned_images = false    # true: refuse images with no tag or the tag latest
//! allow_caps = ["NET_BIND_SERVICE"]  # capabilities a definition's cap_add may name (none by default)
//!
//! [[registries]]              # a login for pulls from this registry host
//! host = "registry.example:5000"
//! username = "deploy"
//! password_file = "/etc/mcp/registry-password"   # read at start; never mountable
//! # or, instead of username and password_file: the caller's name and MCIAS token
//! # use_caller_token = true
//!
//! [images]
//! prune = false               # remove images no deployed spec or rollback history references
//! prune_interval_secs = 3600  # checked at start and this often
//!
//! [routes]                    # host ports for [[components.routes]]
//! port_range = [10000, 60000] # allocated from here, kept across redeploys
//! address = "127.0.0.1"       # published on this address (loopback: only a local proxy reaches them)
//! hook = ["/usr/local/bin/route-hook", "--proxy", "edge"]   # optional, no shell: run with the
//!                             # route as JSON on stdin ("action": "add" | "remove") when one is
//!                             # allocated or released; without it, no hook runs
//! hook_timeout_secs = 10      # then the hook is killed and recorded as failed
//!
//! [networks]
//! create = true               # create a network a definition names when the runtime lacks it
//!
//! [auth]                      # with --auth mcias: who gets which level (the defaults)
//! operate_roles = ["admin", "user"]   # every RPC
//! read_roles = ["viewer"]             # list, ps, status, events, logs, node, export, pull, whoami
//! operate_accounts = []               # accounts by username or subject (system accounts have no roles)
//! read_accounts = []
//! deny_roles = ["guest"]              # a token with any of these gets nothing
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde::Deserialize;

use crate::actors::pruner::PruneSettings;
use crate::actors::recovery::{BootStage, Gate, RecoverySettings};
use crate::actors::{AlertSettings, WatchSettings};
use crate::grpc::authz::Policy;
use crate::grpc::listener::ConnectionLimits;
use crate::grpc::ServeLimits;
use crate::names::Name;
use crate::registry::Retention;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub watch: WatchSection,
    #[serde(default)]
    pub registry: RegistrySection,
    #[serde(default)]
    pub alert: Option<AlertSection>,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub policy: PolicySection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub recovery: RecoverySection,
    #[serde(default)]
    pub boot: BootSection,
    #[serde(default)]
    pub registries: Vec<RegistryLoginSection>,
    #[serde(default)]
    pub images: ImagesSection,
    #[serde(default)]
    pub routes: RoutesSection,
    #[serde(default)]
    pub networks: NetworksSection,
}

/// `[routes]`: where routes' host ports come from and go, and the hook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesSection {
    pub port_range: [u16; 2],
    pub address: std::net::IpAddr,
    pub hook: Option<Vec<String>>,
    pub hook_timeout_secs: u64,
}

impl Default for RoutesSection {
    fn default() -> Self {
        let d = crate::routes::RouteSettings::default();
        RoutesSection {
            port_range: [d.first_port, d.last_port],
            address: d.address,
            hook: None,
            hook_timeout_secs: d.hook_timeout.as_secs(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworksSection {
    pub create: bool,
}

impl Default for NetworksSection {
    fn default() -> Self {
        NetworksSection { create: true }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryLoginSection {
    pub host: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub use_caller_token: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesSection {
    pub prune: bool,
    pub prune_interval_secs: u64,
}

impl Default for ImagesSection {
    fn default() -> Self {
        ImagesSection {
            prune: false,
            prune_interval_secs: 3600,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoverySection {
    pub at_start: bool,
    pub finish_interrupted: bool,
}

impl Default for RecoverySection {
    fn default() -> Self {
        let d = RecoverySettings::default();
        RecoverySection {
            at_start: d.at_start,
            finish_interrupted: d.finish_interrupted,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSection {
    #[serde(default)]
    pub sequence: Vec<BootStageSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootStageSection {
    pub name: String,
    pub services: Vec<Name>,
    pub timeout: crate::spec::HumanDuration,
    #[serde(default)]
    pub tcp: Option<crate::spec::HostPort>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub max_connections: usize,
    pub handshake_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub keepalive_interval_secs: u64,
    pub keepalive_timeout_secs: u64,
    pub max_transfers: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let d = ServeLimits::default();
        LimitsSection {
            max_connections: d.connections.max_connections,
            handshake_timeout_secs: d.connections.handshake_timeout.as_secs(),
            idle_timeout_secs: d.connections.idle_timeout.as_secs(),
            keepalive_interval_secs: d.keepalive_interval.as_secs(),
            keepalive_timeout_secs: d.keepalive_timeout.as_secs(),
            max_transfers: d.max_transfers,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    pub volume_roots: Vec<PathBuf>,
    pub allow_host_network: bool,
    pub require_pinned_images: bool,
    /// Checked names, so a typo fails the agent's start with its line.
    pub allow_caps: Vec<crate::spec::Capability>,
}

impl PolicySection {
    /// `allow_caps` as the policy compares them (`CAP_NET_ADMIN`).
    pub fn allowed_caps(&self) -> Vec<String> {
        self.allow_caps.iter().map(|c| c.canonical()).collect()
    }
}

/// Which roles and accounts get which level, in MCIAS mode. Operate implies
/// read; a role not named grants nothing; `deny_roles` wins over everything.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    pub operate_roles: Vec<String>,
    pub read_roles: Vec<String>,
    pub operate_accounts: Vec<String>,
    pub read_accounts: Vec<String>,
    pub deny_roles: Vec<String>,
}

impl Default for AuthSection {
    fn default() -> Self {
        let p = Policy::default();
        let list = |set: std::collections::BTreeSet<String>| set.into_iter().collect();
        AuthSection {
            operate_roles: list(p.operate_roles),
            read_roles: list(p.read_roles),
            operate_accounts: list(p.operate_accounts),
            read_accounts: list(p.read_accounts),
            deny_roles: list(p.deny_roles),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchSection {
    pub scan_interval_secs: u64,
    pub flap_exits: usize,
    pub flap_window_secs: u64,
    pub reconcile: bool,
    pub reconcile_grace_secs: u64,
    pub health_probes: bool,
    pub restart_unhealthy: bool,
}

impl Default for WatchSection {
    fn default() -> Self {
        let d = WatchSettings::default();
        WatchSection {
            scan_interval_secs: d.scan_interval.as_secs(),
            flap_exits: d.flap_exits,
            flap_window_secs: d.flap_window.as_secs(),
            reconcile: d.reconcile,
            reconcile_grace_secs: d.reconcile_grace.as_secs(),
            health_probes: d.health_probes,
            restart_unhealthy: d.restart_unhealthy,
        }
    }
}

/// Event retention; 0 is no limit of that kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    pub keep_events_days: u64,
    pub keep_events_per_component: u64,
    pub prune_interval_secs: u64,
}

impl Default for RegistrySection {
    fn default() -> Self {
        let d = PruneSettings::default();
        RegistrySection {
            keep_events_days: d.retention.max_age_ms.map_or(0, |ms| (ms / DAY_MS) as u64),
            keep_events_per_component: d.retention.per_component.map_or(0, |n| n as u64),
            prune_interval_secs: d.interval.as_secs(),
        }
    }
}

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSection {
    pub command: Vec<String>,
    #[serde(default = "default_rate_limit")]
    pub rate_limit_secs: u64,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_rate_limit() -> u64 {
    600
}

fn default_timeout() -> u64 {
    10
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the agent config {}", path.display()))?;
        let config: AgentConfig = crate::spec::parse_toml(path, &text)?;
        ensure!(
            config.watch.scan_interval_secs > 0,
            "{}: watch.scan_interval_secs must be at least 1",
            path.display()
        );
        ensure!(
            config.watch.flap_exits > 0,
            "{}: watch.flap_exits must be at least 1",
            path.display()
        );
        let limits = &config.limits;
        for (key, value) in [
            ("max_connections", limits.max_connections as u64),
            ("handshake_timeout_secs", limits.handshake_timeout_secs),
            ("idle_timeout_secs", limits.idle_timeout_secs),
            ("keepalive_interval_secs", limits.keepalive_interval_secs),
            ("keepalive_timeout_secs", limits.keepalive_timeout_secs),
            ("max_transfers", limits.max_transfers as u64),
        ] {
            ensure!(
                value > 0,
                "{}: limits.{key} must be at least 1",
                path.display()
            );
        }
        ensure!(
            config.registry.prune_interval_secs > 0,
            "{}: registry.prune_interval_secs must be at least 1",
            path.display()
        );
        // Beyond this (about 25 million years) the age in ms overflows.
        ensure!(
            config.registry.keep_events_days <= (i64::MAX / DAY_MS) as u64,
            "{}: registry.keep_events_days is too large; 0 keeps events for ever",
            path.display()
        );
        ensure!(
            config.images.prune_interval_secs > 0,
            "{}: images.prune_interval_secs must be at least 1",
            path.display()
        );
        for login in &config.registries {
            ensure!(
                !login.host.is_empty() && !login.host.contains('/'),
                "{}: registries: host {:?} must be a registry host such as \
                 registry.example:5000",
                path.display(),
                login.host
            );
            match (
                &login.username,
                &login.password_file,
                login.use_caller_token,
            ) {
                (None, None, true) => {}
                (Some(_), Some(file), false) => ensure!(
                    file.is_absolute(),
                    "{}: registries: password_file {} is not an absolute path",
                    path.display(),
                    file.display()
                ),
                _ => anyhow::bail!(
                    "{}: registries: host {:?} needs either username and password_file, or \
                     use_caller_token = true (not both)",
                    path.display(),
                    login.host
                ),
            }
        }
        for root in &config.policy.volume_roots {
            ensure!(
                root.is_absolute(),
                "{}: policy.volume_roots: {} is not an absolute path",
                path.display(),
                root.display()
            );
        }
        ensure!(
            !config.policy.allow_caps.iter().any(|c| c.is_all()),
            "{}: policy.allow_caps: name each capability a definition may add; \"ALL\" is not allowed",
            path.display()
        );
        if let Some(alert) = &config.alert {
            ensure!(
                !alert.command.is_empty() && !alert.command[0].is_empty(),
                "{}: alert.command must name a program",
                path.display()
            );
            ensure!(
                alert.timeout_secs > 0,
                "{}: alert.timeout_secs must be at least 1",
                path.display()
            );
        }
        let [first, last] = config.routes.port_range;
        ensure!(
            first >= 1 && first <= last,
            "{}: routes.port_range [{first}, {last}] must be two ports, the first 1 or more and \
             not above the second",
            path.display()
        );
        if let Some(hook) = &config.routes.hook {
            ensure!(
                hook.first().is_some_and(|p| !p.is_empty()),
                "{}: routes.hook must name a program",
                path.display()
            );
        }
        ensure!(
            config.routes.hook_timeout_secs > 0,
            "{}: routes.hook_timeout_secs must be at least 1",
            path.display()
        );
        config.auth.check(path)?;
        config.boot.check(path)?;
        Ok(config)
    }

    /// `[routes]`.
    pub fn route_settings(&self) -> crate::routes::RouteSettings {
        let r = &self.routes;
        crate::routes::RouteSettings {
            first_port: r.port_range[0],
            last_port: r.port_range[1],
            address: r.address,
            hook: r.hook.clone(),
            hook_timeout: Duration::from_secs(r.hook_timeout_secs),
        }
    }

    /// What the agent does at start (`[recovery]`, `[[boot.sequence]]`).
    /// The registry logins, their passwords read now: a file that cannot be
    /// read stops the agent at start rather than failing a deploy later.
    pub fn registry_logins(&self) -> Result<crate::runtime::registries::RegistryLogins> {
        use crate::runtime::registries::RegistryAuth;
        let mut logins = Vec::new();
        for r in &self.registries {
            let (Some(username), Some(file)) = (&r.username, &r.password_file) else {
                logins.push((r.host.clone(), RegistryAuth::CallerToken));
                continue;
            };
            let password = std::fs::read_to_string(file).with_context(|| {
                format!(
                    "registries: cannot read the password file of {} ({})",
                    r.host,
                    file.display()
                )
            })?;
            let login = crate::runtime::RegistryLogin {
                username: username.clone(),
                password: password.trim_end_matches(['\r', '\n']).to_string(),
            };
            logins.push((r.host.clone(), RegistryAuth::Node(login)));
        }
        Ok(crate::runtime::registries::RegistryLogins::new(logins))
    }

    pub fn recovery_settings(&self) -> RecoverySettings {
        RecoverySettings {
            at_start: self.recovery.at_start,
            finish_interrupted: self.recovery.finish_interrupted,
            boot: self
                .boot
                .sequence
                .iter()
                .map(|stage| BootStage {
                    name: stage.name.clone(),
                    services: stage.services.clone(),
                    timeout: stage.timeout.get(),
                    gate: match &stage.tcp {
                        Some(target) => Gate::Tcp(target.to_string()),
                        None => Gate::Health,
                    },
                })
                .collect(),
        }
    }

    pub fn serve_limits(&self) -> ServeLimits {
        let l = &self.limits;
        ServeLimits {
            connections: ConnectionLimits {
                max_connections: l.max_connections,
                handshake_timeout: Duration::from_secs(l.handshake_timeout_secs),
                idle_timeout: Duration::from_secs(l.idle_timeout_secs),
            },
            keepalive_interval: Duration::from_secs(l.keepalive_interval_secs),
            keepalive_timeout: Duration::from_secs(l.keepalive_timeout_secs),
            max_transfers: l.max_transfers,
        }
    }

    /// Who gets which level (`[auth]`).
    pub fn auth_policy(&self) -> Policy {
        let set = |v: &[String]| v.iter().cloned().collect();
        Policy {
            operate_roles: set(&self.auth.operate_roles),
            read_roles: set(&self.auth.read_roles),
            operate_accounts: set(&self.auth.operate_accounts),
            read_accounts: set(&self.auth.read_accounts),
            deny_roles: set(&self.auth.deny_roles),
        }
    }

    /// `[registry]`: what the event pruner keeps, and how often it runs.
    pub fn prune_settings(&self) -> PruneSettings {
        let r = &self.registry;
        PruneSettings {
            retention: Retention {
                max_age_ms: (r.keep_events_days > 0)
                    .then(|| (r.keep_events_days as i64).saturating_mul(DAY_MS)),
                per_component: (r.keep_events_per_component > 0)
                    .then(|| usize::try_from(r.keep_events_per_component).unwrap_or(usize::MAX)),
            },
            interval: Duration::from_secs(r.prune_interval_secs),
        }
    }

    pub fn watch_settings(&self) -> WatchSettings {
        WatchSettings {
            scan_interval: Duration::from_secs(self.watch.scan_interval_secs),
            flap_exits: self.watch.flap_exits,
            flap_window: Duration::from_secs(self.watch.flap_window_secs),
            alert: self.alert.as_ref().map(|a| AlertSettings {
                command: a.command.clone(),
                rate_limit: Duration::from_secs(a.rate_limit_secs),
                timeout: Duration::from_secs(a.timeout_secs),
            }),
            reconcile: self.watch.reconcile,
            reconcile_grace: Duration::from_secs(self.watch.reconcile_grace_secs),
            health_probes: self.watch.health_probes,
            restart_unhealthy: self.watch.restart_unhealthy,
        }
    }
}

impl BootSection {
    fn check(&self, path: &Path) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for stage in &self.sequence {
            ensure!(
                !stage.name.trim().is_empty(),
                "{}: a boot.sequence stage has an empty name",
                path.display()
            );
            ensure!(
                !stage.timeout.get().is_zero(),
                "{}: boot.sequence stage {}: timeout must be more than 0s",
                path.display(),
                stage.name
            );
            for service in &stage.services {
                ensure!(
                    seen.insert(service.clone()),
                    "{}: service {service} is in two boot.sequence stages",
                    path.display()
                );
            }
        }
        Ok(())
    }
}

impl AuthSection {
    fn check(&self, path: &Path) -> Result<()> {
        let lists = [
            ("operate_roles", &self.operate_roles),
            ("read_roles", &self.read_roles),
            ("operate_accounts", &self.operate_accounts),
            ("read_accounts", &self.read_accounts),
            ("deny_roles", &self.deny_roles),
        ];
        for (name, list) in lists {
            ensure!(
                list.iter().all(|s| !s.trim().is_empty() && s.trim() == s),
                "{}: auth.{name} holds an empty name or one with spaces around it",
                path.display()
            );
        }
        // A role both granted and denied is a mistake, whichever was meant.
        for role in &self.deny_roles {
            for (name, list) in [
                ("operate_roles", &self.operate_roles),
                ("read_roles", &self.read_roles),
            ] {
                ensure!(
                    !list.contains(role),
                    "{}: role {role:?} is in both auth.deny_roles and auth.{name}",
                    path.display()
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "").unwrap();
        let c = AgentConfig::load(&path).unwrap();
        assert_eq!(c.watch_settings().scan_interval, Duration::from_secs(60));
        assert!(c.watch_settings().alert.is_none());

        std::fs::write(&path, "[alert]\ncommand = [\"/bin/true\"]\n").unwrap();
        let alert = AgentConfig::load(&path)
            .unwrap()
            .watch_settings()
            .alert
            .unwrap();
        assert_eq!(alert.rate_limit, Duration::from_secs(600));

        std::fs::write(&path, "[watch]\nscan_interval = 5\n").unwrap();
        let err = AgentConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("agent.toml:2:1"), "{err}");

        std::fs::write(&path, "[alert]\ncommand = []\n").unwrap();
        assert!(AgentConfig::load(&path).is_err());

        std::fs::write(
            &path,
            "[limits]\nidle_timeout_secs = 3\n[policy]\nvolume_roots = [\"/data\"]\n",
        )
        .unwrap();
        let c = AgentConfig::load(&path).unwrap();
        let limits = c.serve_limits();
        assert_eq!(limits.connections.idle_timeout, Duration::from_secs(3));
        assert_eq!(limits.connections.max_connections, 512);
        assert_eq!(c.policy.volume_roots, [PathBuf::from("/data")]);
        std::fs::write(&path, "[limits]\nmax_connections = 0\n").unwrap();
        assert!(AgentConfig::load(&path).is_err());
        std::fs::write(&path, "[policy]\nvolume_roots = [\"data\"]\n").unwrap();
        let err = AgentConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("not an absolute path"), "{err}");

        std::fs::write(
            &path,
            "[policy]\nallow_caps = [\"NET_BIND_SERVICE\", \"cap_net_admin\"]\n",
        )
        .unwrap();
        let c = AgentConfig::load(&path).unwrap();
        assert_eq!(
            c.policy.allowed_caps(),
            ["CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN"]
        );
        assert!(AgentConfig::default().policy.allowed_caps().is_empty());
        std::fs::write(&path, "[policy]\nallow_caps = [\"NET_ADMN\"]\n").unwrap();
        let err = AgentConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("agent.toml:2:") && err.contains("unknown capability \"NET_ADMN\""),
            "{err}"
        );
        std::fs::write(&path, "[policy]\nallow_caps = [\"ALL\"]\n").unwrap();
        let err = AgentConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("name each capability"), "{err}");
    }

    #[test]
    fn the_routes_and_networks_sections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "").unwrap();
        let c = AgentConfig::load(&path).unwrap();
        assert_eq!(c.route_settings(), crate::routes::RouteSettings::default());
        assert!(c.networks.create);

        std::fs::write(
            &path,
            "[routes]\nport_range = [20000, 20010]\naddress = \"0.0.0.0\"\n\
             hook = [\"/bin/hook\", \"x\"]\nhook_timeout_secs = 3\n[networks]\ncreate = false\n",
        )
        .unwrap();
        let c = AgentConfig::load(&path).unwrap();
        let r = c.route_settings();
        assert_eq!((r.first_port, r.last_port), (20000, 20010));
        assert_eq!(r.address.to_string(), "0.0.0.0");
        assert_eq!(r.hook, Some(vec!["/bin/hook".to_string(), "x".to_string()]));
        assert_eq!(r.hook_timeout, Duration::from_secs(3));
        assert!(!c.networks.create);

        for (text, says) in [
            ("[routes]\nport_range = [20, 10]\n", "routes.port_range"),
            ("[routes]\nport_range = [0, 10]\n", "routes.port_range"),
            ("[routes]\nport_range = [1, 70000]\n", "agent.toml:2:"),
            ("[routes]\nport_range = [1]\n", "agent.toml:2:"),
            ("[routes]\naddress = \"localhost\"\n", "agent.toml:2:"),
            ("[routes]\nhook = []\n", "routes.hook must name a program"),
            ("[routes]\nhook_timeout_secs = 0\n", "hook_timeout_secs"),
            ("[routes]\nrange = [1, 2]\n", "agent.toml:2:1"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", AgentConfig::load(&path).unwrap_err());
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn the_registry_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "").unwrap();
        let p = AgentConfig::load(&path).unwrap().prune_settings();
        assert_eq!(p.retention.max_age_ms, Some(30 * DAY_MS));
        assert_eq!(p.retention.per_component, Some(1000));
        assert_eq!(p.interval, Duration::from_secs(3600));

        std::fs::write(
            &path,
            "[registry]\nkeep_events_per_component = 3\nprune_interval_secs = 1\n",
        )
        .unwrap();
        let p = AgentConfig::load(&path).unwrap().prune_settings();
        assert_eq!(p.retention.max_age_ms, Some(30 * DAY_MS));
        assert_eq!(p.retention.per_component, Some(3));
        assert_eq!(p.interval, Duration::from_secs(1));

        // 0 is no limit by it; both 0 is no pruning.
        std::fs::write(&path, "[registry]\nkeep_events_days = 0\n").unwrap();
        let p = AgentConfig::load(&path).unwrap().prune_settings();
        assert_eq!(p.retention.max_age_ms, None);
        assert!(!p.retention.is_off());
        std::fs::write(
            &path,
            "[registry]\nkeep_events_days = 0\nkeep_events_per_component = 0\n",
        )
        .unwrap();
        assert!(AgentConfig::load(&path)
            .unwrap()
            .prune_settings()
            .retention
            .is_off());

        std::fs::write(&path, "[registry]\nprune_interval_secs = 0\n").unwrap();
        let err = AgentConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("prune_interval_secs"), "{err}");
        std::fs::write(&path, "[registry]\nkeep_events = 30\n").unwrap();
        let err = format!("{:#}", AgentConfig::load(&path).unwrap_err());
        assert!(err.contains("agent.toml:2:1"), "{err}");
    }

    #[test]
    fn the_auth_section() {
        use crate::grpc::authz::Level;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "").unwrap();
        assert_eq!(
            AgentConfig::load(&path).unwrap().auth_policy(),
            Policy::default()
        );

        std::fs::write(
            &path,
            "[auth]\noperate_roles = [\"deployer\"]\noperate_accounts = [\"ci-deployer\"]\n",
        )
        .unwrap();
        let p = AgentConfig::load(&path).unwrap().auth_policy();
        let roles = |r: &str| vec![r.to_string()];
        assert_eq!(
            p.level_for("u", None, &roles("deployer")),
            Some(Level::Operate)
        );
        assert_eq!(p.level_for("u", None, &roles("admin")), None);
        // Unnamed keys keep their defaults.
        assert_eq!(p.level_for("u", None, &roles("viewer")), Some(Level::Read));
        assert_eq!(
            p.level_for("x", Some("ci-deployer"), &[]),
            Some(Level::Operate)
        );

        std::fs::write(&path, "[auth]\nread_role = [\"viewer\"]\n").unwrap();
        let err = format!("{:#}", AgentConfig::load(&path).unwrap_err());
        assert!(err.contains("agent.toml:2:1"), "{err}");
        std::fs::write(&path, "[auth]\noperate_roles = \"admin\"\n").unwrap();
        let err = format!("{:#}", AgentConfig::load(&path).unwrap_err());
        assert!(err.contains("agent.toml:2:"), "{err}");
        std::fs::write(&path, "[auth]\nread_roles = [\"guest\"]\n").unwrap();
        let err = AgentConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("deny_roles"), "{err}");
        std::fs::write(&path, "[auth]\noperate_accounts = [\"\"]\n").unwrap();
        assert!(AgentConfig::load(&path).is_err());
    }
}
