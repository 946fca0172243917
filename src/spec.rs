//! Service definitions: the operator's intent, one TOML file per service
//! (BRIEF section 2). Every field is validated while it is deserialised, so a
//! bad value is reported with the file, line and column it came from.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::names::Name;

mod routes;
pub use routes::{env_var_for, Hostname, RouteDef, RouteMode, RouteName, RoutePort, Routes};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceDef {
    pub name: Name,
    pub node: Name,
    pub active: bool,
    /// Whether the agent puts drifting components back on its own
    /// (`reconcile = true`); None: the agent's default (`[watch] reconcile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<bool>,
    pub components: Vec<ComponentDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentDef {
    pub name: Name,
    pub image: Image,
    #[serde(default)]
    pub restart: Restart,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// `[[components.routes]]`: ports published on host ports the agent
    /// allocates (see [`RouteDef`]).
    #[serde(default, skip_serializing_if = "Routes::is_empty")]
    pub routes: Routes,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: Env,
    /// Environment variables whose values are secrets of the service
    /// (`mcp secret set`), by name: the agent reads the values from its
    /// store when it creates the container. Specs, labels and the registry
    /// hold these names, never the values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<EnvKey, SecretName>,
    /// Secrets given to the container as read-only files, at these paths.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_files: BTreeMap<SecretName, SecretFilePath>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// Replaces the image's entrypoint (`cmd` then gives its arguments).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// The working directory of the container's process (else the image's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<ContainerPath>,
    /// The root file system mounted read-only; `tmpfs` gives writable places.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// `path[:options]`: a tmpfs mounted at each container path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<TmpfsMount>,
    /// Memory limit: bytes, or with a binary suffix (`512M`, `1G`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemorySize>,
    /// CPU limit in CPUs (`1.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    /// Most processes (and threads) the container may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<PidsLimit>,
    /// Capabilities taken from the runtime's default set (`ALL` for every one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<Capability>,
    /// Capabilities added to it; each must be in the node's `[policy] allow_caps`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<Capability>,
    /// The signal that asks the container to stop (else the image's, or SIGTERM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<Signal>,
    /// How long a stop waits after the signal before killing (whole
    /// seconds); else the agent's `--stop-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<StopTimeout>,
    /// The container's labels (`mcp.` is MCP's own prefix and refused).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<LabelKey, String>,
    /// How a deploy knows the new container works; see [`HealthCheck`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// Components of the same service this one starts after, once they run
    /// and pass their health checks (in deploys, starts and recovery).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Name>,
    /// When a deploy pulls the image: see [`PullPolicy`].
    #[serde(default, skip_serializing_if = "PullPolicy::is_default")]
    pub pull: PullPolicy,
}

/// `pull = "missing" | "always" | "never"`, as compose's `pull_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Only when the node does not have the image.
    #[default]
    Missing,
    /// At every deploy, so a moving tag is followed.
    Always,
    /// Never: the image must be on the node already.
    Never,
}

impl PullPolicy {
    pub const ALL: [PullPolicy; 3] = [PullPolicy::Missing, PullPolicy::Always, PullPolicy::Never];

    fn is_default(&self) -> bool {
        *self == PullPolicy::default()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
            PullPolicy::Never => "never",
        }
    }
}

impl FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PullPolicy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown pull {s:?}: expected missing, always or never"))
    }
}

/// What a running container says of itself in a definition's terms: the
/// runtime's inspect less its image's defaults (what `mcp adopt` records,
/// so that export shows it and `start` can re-create it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunningSpec {
    pub image: String,
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `ip:host:container/proto`.
    pub ports: Vec<String>,
    /// `source:target[:options]`.
    pub volumes: Vec<String>,
    pub network: Option<String>,
    pub user: Option<String>,
    /// `no`, `always`, ...; None: the runtime's default (`no`).
    pub restart: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub read_only: bool,
    /// `path[:options]`.
    pub tmpfs: Vec<String>,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids: Option<i64>,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    /// A signal's name or number.
    pub stop_signal: Option<String>,
    pub stop_timeout_secs: Option<i64>,
}

impl ComponentDef {
    /// The definition of component `name` that runs what `running` says;
    /// Err names the field a definition cannot express.
    pub fn from_running(name: Name, running: RunningSpec) -> Result<ComponentDef, String> {
        let field = |what: &'static str| move |e: String| format!("{what}: {e}");
        Ok(ComponentDef {
            name,
            image: running.image.parse().map_err(field("image"))?,
            restart: running
                .restart
                .map(|r| r.parse())
                .transpose()
                .map_err(field("restart"))?
                .unwrap_or_default(),
            ports: running
                .ports
                .iter()
                .map(|p| p.parse())
                .collect::<Result<_, _>>()
                .map_err(field("ports"))?,
            // Routes are MCP's own: a container made elsewhere has none.
            routes: Routes::default(),
            volumes: running
                .volumes
                .iter()
                .map(|v| v.parse())
                .collect::<Result<_, _>>()
                .map_err(field("volumes"))?,
            env: running
                .env
                .into_iter()
                .map(|(k, v)| Ok((k.parse()?, v)))
                .collect::<Result<_, String>>()
                .map_err(field("env"))?,
            cmd: running.cmd,
            entrypoint: running.entrypoint,
            network: running
                .network
                .map(|n| n.parse())
                .transpose()
                .map_err(field("network"))?,
            user: running
                .user
                .map(|u| u.parse())
                .transpose()
                .map_err(field("user"))?,
            labels: running
                .labels
                .into_iter()
                .map(|(k, v)| Ok((k.parse()?, v)))
                .collect::<Result<_, String>>()
                .map_err(field("labels"))?,
            workdir: running
                .workdir
                .map(|w| w.parse())
                .transpose()
                .map_err(field("workdir"))?,
            read_only: running.read_only,
            tmpfs: running
                .tmpfs
                .iter()
                .map(|t| t.parse())
                .collect::<Result<_, _>>()
                .map_err(field("tmpfs"))?,
            memory: running
                .memory_bytes
                .map(MemorySize::from_bytes)
                .transpose()
                .map_err(field("memory"))?,
            cpus: running
                .nano_cpus
                .map(Cpus::from_nanos)
                .transpose()
                .map_err(field("cpus"))?,
            pids: running
                .pids
                .map(PidsLimit::try_from)
                .transpose()
                .map_err(field("pids"))?,
            cap_drop: running
                .cap_drop
                .iter()
                .map(|c| c.parse())
                .collect::<Result<_, _>>()
                .map_err(field("cap_drop"))?,
            cap_add: running
                .cap_add
                .iter()
                .map(|c| c.parse())
                .collect::<Result<_, _>>()
                .map_err(field("cap_add"))?,
            stop_signal: running
                .stop_signal
                .map(|s| Signal::from_runtime(&s))
                .transpose()
                .map_err(field("stop_signal"))?,
            stop_timeout: running
                .stop_timeout_secs
                .map(|s| format!("{s}s").parse())
                .transpose()
                .map_err(field("stop_timeout"))?,
            // Values the container holds are not the definition's: a
            // secret is named in a definition, never read back from one.
            secrets: BTreeMap::new(),
            secret_files: BTreeMap::new(),
            health: None,
            depends_on: Vec::new(),
            pull: PullPolicy::default(),
        })
    }

    /// Every secret the component needs, once each, by name.
    pub fn secret_names(&self) -> std::collections::BTreeSet<&SecretName> {
        self.secrets
            .values()
            .chain(self.secret_files.keys())
            .collect()
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `[components.health]`: exactly one probe (`cmd` run in the container,
/// `http` GET of a URL, or `tcp` connect from the agent's host) with its
/// timing. A deploy waits until the probe passes; a component that never
/// does is rolled back to its previous deployed spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<HostPort>,
    /// Between probes.
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// One probe's limit.
    #[serde(default = "default_interval")]
    pub timeout: HumanDuration,
    /// Consecutive failures, after the start period, that make it unhealthy.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Failures during this time after start do not count.
    #[serde(default = "default_start_period")]
    pub start_period: HumanDuration,
    /// What the agent does when the check fails while the component runs
    /// (it keeps probing after the deploy).
    #[serde(default, skip_serializing_if = "OnUnhealthy::is_default")]
    pub on_unhealthy: OnUnhealthy,
}

/// `on_unhealthy`: what a health check failing after the deploy leads to.
/// Every transition is an event either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnhealthy {
    /// Restart the container (with the reconciliation's backoff and limit).
    Restart,
    /// Run the alert command.
    #[default]
    Alert,
    /// Record the event only.
    None,
}

impl OnUnhealthy {
    pub const ALL: [OnUnhealthy; 3] = [OnUnhealthy::Restart, OnUnhealthy::Alert, OnUnhealthy::None];

    fn is_default(&self) -> bool {
        *self == OnUnhealthy::default()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OnUnhealthy::Restart => "restart",
            OnUnhealthy::Alert => "alert",
            OnUnhealthy::None => "none",
        }
    }
}

impl FromStr for OnUnhealthy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        OnUnhealthy::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown on_unhealthy {s:?}: expected restart, alert or none"))
    }
}

/// Probes never run more often than this, so a definition cannot turn the
/// agent into a load generator.
pub const MIN_HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// Consecutive failures a check may wait for; the deploy's deadline bounds
/// the whole anyway.
pub const MAX_HEALTH_RETRIES: u32 = 100;

fn default_interval() -> HumanDuration {
    HumanDuration("2s".to_string())
}

fn default_retries() -> u32 {
    3
}

fn default_start_period() -> HumanDuration {
    HumanDuration("0s".to_string())
}

impl HealthCheck {
    fn probes(&self) -> usize {
        usize::from(!self.cmd.is_empty())
            + usize::from(self.http.is_some())
            + usize::from(self.tcp.is_some())
    }
}

impl ServiceDef {
    pub fn component(&self, name: &Name) -> Option<&ComponentDef> {
        self.components.iter().find(|c| &c.name == name)
    }

    /// Checks that span fields: at least one component, unique component names,
    /// no host port published twice. Returns the offending component's index.
    pub fn check(&self) -> Result<(), (Option<usize>, String)> {
        if self.components.is_empty() {
            return Err((
                None,
                format!(
                    "service {} has no components: add at least one [[components]] table",
                    self.name
                ),
            ));
        }
        let mut names = HashSet::new();
        let mut host_ports = HashSet::new();
        for (i, c) in self.components.iter().enumerate() {
            if let Some(h) = &c.health {
                if h.probes() != 1 {
                    return Err((
                        Some(i),
                        format!(
                            "component {}: health needs exactly one of cmd, http or tcp",
                            c.name
                        ),
                    ));
                }
                if h.retries == 0 || h.retries > MAX_HEALTH_RETRIES {
                    return Err((
                        Some(i),
                        format!(
                            "component {}: health.retries must be 1 to {MAX_HEALTH_RETRIES}",
                            c.name
                        ),
                    ));
                }
                for (field, d) in [("interval", &h.interval), ("timeout", &h.timeout)] {
                    if d.get() < MIN_HEALTH_INTERVAL {
                        return Err((
                            Some(i),
                            format!(
                                "component {}: health.{field} {d:?} is below the floor of {}ms",
                                c.name,
                                MIN_HEALTH_INTERVAL.as_millis()
                            ),
                        ));
                    }
                }
            }
            if c.cap_add.iter().any(Capability::is_all) {
                return Err((
                    Some(i),
                    format!(
                        "component {}: cap_add cannot be \"ALL\": name each capability to add",
                        c.name
                    ),
                ));
            }
            let mut mounted: HashSet<&str> =
                c.volumes.iter().map(VolumeMount::container_path).collect();
            for t in &c.tmpfs {
                if !mounted.insert(t.path()) {
                    return Err((
                        Some(i),
                        format!(
                            "component {}: {} is mounted twice (tmpfs and volumes)",
                            c.name,
                            t.path()
                        ),
                    ));
                }
            }
            for (secret, path) in &c.secret_files {
                if !mounted.insert(path.as_str()) {
                    return Err((
                        Some(i),
                        format!(
                            "component {}: secret_files mounts {secret} at {path}, which is \
                             mounted already (secret_files, tmpfs or volumes)",
                            c.name
                        ),
                    ));
                }
            }
            if let Some(key) = c.secrets.keys().find(|k| c.env.contains_key(*k)) {
                return Err((
                    Some(i),
                    format!(
                        "component {}: {key} is in both env and secrets: a variable takes its \
                         value from one of them",
                        c.name
                    ),
                ));
            }
            if !names.insert(&c.name) {
                return Err((Some(i), format!("component name {} is used twice", c.name)));
            }
            for dep in &c.depends_on {
                if dep == &c.name {
                    return Err((Some(i), format!("component {} depends on itself", c.name)));
                }
                if self.component(dep).is_none() {
                    return Err((
                        Some(i),
                        format!(
                            "component {}: depends_on names {dep}, which is not a component of \
                             this service",
                            c.name
                        ),
                    ));
                }
            }
            for r in c.routes.iter() {
                let var = r.env_var();
                if c.env.keys().any(|k| k.as_str() == var) {
                    return Err((
                        Some(i),
                        format!(
                            "component {}: env sets {var}, which route {} sets to its host port",
                            c.name,
                            if r.key().is_empty() {
                                "(unnamed)"
                            } else {
                                r.key()
                            }
                        ),
                    ));
                }
            }
            for p in &c.ports {
                if let Some(host_port) = p.host_port {
                    if !host_ports.insert((p.host_ip, host_port, p.protocol)) {
                        return Err((
                            Some(i),
                            format!("host port {host_port} is published twice in this service"),
                        ));
                    }
                }
            }
        }
        if let Some((i, cycle)) = self.dependency_cycle() {
            return Err((
                Some(i),
                format!("depends_on goes round in a circle: {cycle}"),
            ));
        }
        Ok(())
    }

    /// A cycle among `depends_on` (the index of a component on it, and the
    /// cycle as `a -> b -> a`), if there is one.
    fn dependency_cycle(&self) -> Option<(usize, String)> {
        let deps: BTreeMap<&Name, &[Name]> = self
            .components
            .iter()
            .map(|c| (&c.name, c.depends_on.as_slice()))
            .collect();
        dependency_order(&deps).err().map(|cycle| {
            let first = self
                .components
                .iter()
                .position(|c| Some(&c.name) == cycle.first())
                .unwrap_or(0);
            let text: Vec<&str> = cycle.iter().map(|n| n.as_str()).collect();
            (first, text.join(" -> "))
        })
    }
}

/// The names in an order where each comes after what it depends on
/// (dependencies not among the keys are ignored); Err: a cycle, its first
/// name repeated at its end.
pub fn dependency_order<'a>(
    deps: &BTreeMap<&'a Name, &'a [Name]>,
) -> Result<Vec<&'a Name>, Vec<Name>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        name: &'a Name,
        deps: &BTreeMap<&'a Name, &'a [Name]>,
        marks: &mut BTreeMap<&'a Name, Mark>,
        path: &mut Vec<&'a Name>,
        order: &mut Vec<&'a Name>,
    ) -> Result<(), Vec<Name>> {
        match marks.get(name) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                let start = path.iter().position(|n| *n == name).unwrap_or(0);
                let mut cycle: Vec<Name> = path[start..].iter().map(|n| (*n).clone()).collect();
                cycle.push(name.clone());
                return Err(cycle);
            }
            None => {}
        }
        marks.insert(name, Mark::Visiting);
        path.push(name);
        for dep in deps.get(name).copied().unwrap_or_default() {
            if let Some((known, _)) = deps.get_key_value(dep) {
                visit(known, deps, marks, path, order)?;
            }
        }
        path.pop();
        marks.insert(name, Mark::Done);
        order.push(name);
        Ok(())
    }
    let mut marks = BTreeMap::new();
    let mut order = Vec::with_capacity(deps.len());
    for name in deps.keys() {
        visit(name, deps, &mut marks, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

/// `env = { KEY = "value" }`; keys are checked, values are free text.
pub type Env = BTreeMap<EnvKey, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    #[default]
    No,
    OnFailure,
    Always,
    UnlessStopped,
}

impl Restart {
    pub const ALL: [Restart; 4] = [
        Restart::No,
        Restart::OnFailure,
        Restart::Always,
        Restart::UnlessStopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Restart::No => "no",
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
            Restart::UnlessStopped => "unless-stopped",
        }
    }
}

impl FromStr for Restart {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Restart::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown restart {s:?}: expected one of no, on-failure, always, unless-stopped"
                )
            })
    }
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares a string newtype that is validated on parse and (de)serialises as
/// its original text, so a deployed spec exports back exactly as written.
macro_rules! checked_string {
    ($(#[$doc:meta])* $ty:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $check(s).map(|()| $ty(s.to_string()))
            }
        }
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $check(&s).map(|()| $ty(s))
            }
        }
        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
/// Also for `spec/routes.rs`.
pub(crate) use checked_string;

fn plain_token(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{what} {s:?} contains white space or control characters"
        ));
    }
    Ok(())
}

fn check_image(s: &str) -> Result<(), String> {
    plain_token("image", s)
}

fn check_env_key(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "environment variable name {s:?} must be letters, digits and '_' and not start with a digit"
        ))
    }
}

fn check_label_key(s: &str) -> Result<(), String> {
    let ok = s.len() <= 255
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'));
    if !ok {
        return Err(format!(
            "label {s:?} must match [A-Za-z0-9][A-Za-z0-9._/-]* (at most 255 characters)"
        ));
    }
    if s.starts_with(crate::runtime::LABEL_PREFIX) {
        return Err(format!(
            "label {s:?}: the prefix {:?} is MCP's own",
            crate::runtime::LABEL_PREFIX
        ));
    }
    Ok(())
}

fn check_network(s: &str) -> Result<(), String> {
    let ok = s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "network {s:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (e.g. \"mcp\", \"host\", \"none\")"
        ))
    }
}

fn check_user(s: &str) -> Result<(), String> {
    plain_token("user", s)
}

checked_string!(
    /// An image reference such as `localhost/metacrypt:v1.4.0`.
    Image,
    check_image
);
checked_string!(EnvKey, check_env_key);

impl Image {
    /// The registry host of the reference (`registry.example:5000` in
    /// `registry.example:5000/app:1`), when its first part names one.
    pub fn registry(&self) -> Option<&str> {
        let (first, _) = self.as_str().split_once('/')?;
        (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
    }

    /// The tag, when the reference has one (`1.4` in `app:1.4`).
    pub fn tag(&self) -> Option<&str> {
        let name = self.as_str().split('@').next().unwrap_or_default();
        let last = name.rsplit('/').next().unwrap_or(name);
        last.split_once(':').map(|(_, tag)| tag)
    }

    /// Why the reference may name different images over time (no tag, or
    /// `latest`); None when it is pinned by a tag or a digest.
    pub fn unpinned(&self) -> Option<&'static str> {
        if self.as_str().contains('@') {
            return None;
        }
        match self.tag() {
            None => Some("has no tag (podman takes it as latest)"),
            Some("latest") => Some("has the tag latest"),
            Some(_) => None,
        }
    }
}
checked_string!(
    /// A label's key: `[A-Za-z0-9][A-Za-z0-9._/-]*`, not in MCP's own `mcp.`.
    LabelKey,
    check_label_key
);
checked_string!(
    /// A duration as people write it: `500ms`, `2s`, `1m 30s`.
    HumanDuration,
    check_duration
);
checked_string!(
    /// An `http://` URL to probe.
    HttpUrl,
    check_http_url
);
checked_string!(
    /// `host:port` to connect to.
    HostPort,
    check_host_port
);

impl HumanDuration {
    pub fn get(&self) -> std::time::Duration {
        humantime::parse_duration(&self.0).unwrap_or_default()
    }
}

fn check_duration(s: &str) -> Result<(), String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("duration {s:?}: {e} (write e.g. \"500ms\", \"2s\", \"1m\")"))?;
    if d > std::time::Duration::from_secs(3600) {
        return Err(format!("duration {s:?} is longer than an hour"));
    }
    Ok(())
}

fn check_http_url(s: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("URL {s:?}: {e}"))?;
    if url.scheme() != "http" || url.host().is_none() {
        return Err(format!("URL {s:?}: the probe takes http://host:port/path"));
    }
    Ok(())
}

fn check_host_port(s: &str) -> Result<(), String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            plain_token("host", host)
        }
        _ => Err(format!("{s:?}: expected host:port")),
    }
}
checked_string!(NetworkName, check_network);

/// Networks the runtime provides itself (its default, the host's, none):
/// never created by the agent, and no alias is set on them.
const BUILTIN_NETWORKS: &[&str] = &[
    "host",
    "none",
    "bridge",
    "podman",
    "default",
    "private",
    "slirp4netns",
    "pasta",
];

impl NetworkName {
    /// A network of the operator's (`backend`), not one of the runtime's own.
    pub fn is_user_defined(&self) -> bool {
        !BUILTIN_NETWORKS.contains(&self.0.as_str())
    }
}
checked_string!(
    /// `user` as podman takes it: `name`, `uid`, or `uid:gid`.
    User,
    check_user
);

checked_string!(
    /// `memory`: a byte count, optionally with a binary unit (`b`, `k`, `M`
    /// or `G`, either case), as podman's `--memory` takes it.
    MemorySize,
    check_memory
);

/// Docker's floor; runc cannot start a container in much less.
pub const MIN_MEMORY: u64 = 6 << 20;

/// `memory`'s number of bytes: digits with an optional binary unit.
fn parse_size(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => 0,
    };
    if digits.is_empty() || factor == 0 {
        return Err(format!(
            "memory {s:?}: expected a number of bytes, optionally with a unit k, M or G \
             (e.g. \"512M\")"
        ));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or_else(|| format!("memory {s:?} is too large"))
}

fn check_memory(s: &str) -> Result<(), String> {
    if parse_size(s)? < MIN_MEMORY {
        return Err(format!("memory {s:?} is below the runtime's floor of 6M"));
    }
    Ok(())
}

impl MemorySize {
    pub fn bytes(&self) -> i64 {
        parse_size(&self.0)
            .ok()
            .and_then(|n| i64::try_from(n).ok())
            .unwrap_or_default()
    }

    /// The size in the largest unit that divides it (a runtime reports bytes).
    pub fn from_bytes(bytes: i64) -> Result<MemorySize, String> {
        let text = [("G", 1i64 << 30), ("M", 1 << 20), ("k", 1 << 10)]
            .into_iter()
            .find(|(_, f)| bytes > 0 && bytes % f == 0)
            .map_or_else(|| bytes.to_string(), |(u, f)| format!("{}{u}", bytes / f));
        text.parse()
    }
}

/// `cpus`: a CPU limit in CPUs, kept in billionths (podman's NanoCpus) so
/// a definition compares exactly; written as a TOML number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Cpus {
    nanos: i64,
}

/// The kernel's CFS quota is at least 1 ms per 100 ms period.
pub const MIN_CPUS: f64 = 0.01;
/// Far beyond any node, and small enough that billionths stay exact in f64.
pub const MAX_CPUS: f64 = 65536.0;

impl Cpus {
    pub fn nano_cpus(self) -> i64 {
        self.nanos
    }

    pub fn from_nanos(nanos: i64) -> Result<Cpus, String> {
        Cpus::try_from(nanos as f64 / 1e9)
    }
}

impl TryFrom<f64> for Cpus {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        if !v.is_finite() || !(MIN_CPUS..=MAX_CPUS).contains(&v) {
            return Err(format!(
                "cpus {v}: must be a number of CPUs from {MIN_CPUS} to {MAX_CPUS} (e.g. 1.5, 0.5)"
            ));
        }
        Ok(Cpus {
            nanos: (v * 1e9).round() as i64,
        })
    }
}

impl From<Cpus> for f64 {
    fn from(c: Cpus) -> f64 {
        c.nanos as f64 / 1e9
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", f64::from(*self))
    }
}

/// `pids`: the most processes (threads count) the container may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct PidsLimit(i64);

impl PidsLimit {
    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for PidsLimit {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        if n < 1 {
            return Err(format!(
                "pids {n}: must be at least 1 (leave it out for the runtime's default)"
            ));
        }
        Ok(PidsLimit(n))
    }
}

impl From<PidsLimit> for i64 {
    fn from(p: PidsLimit) -> i64 {
        p.0
    }
}

fn check_container_path(s: &str) -> Result<(), String> {
    if s.chars().any(|c| c.is_control()) {
        return Err(format!("container path {s:?} contains control characters"));
    }
    if !s.starts_with('/') {
        return Err(format!(
            "container path {s:?} must be absolute (start with /)"
        ));
    }
    if Path::new(s)
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!("container path {s:?} must not contain '..'"));
    }
    Ok(())
}

checked_string!(
    /// An absolute path inside the container (`workdir`).
    ContainerPath,
    check_container_path
);

fn check_secret_name(s: &str) -> Result<(), String> {
    Name::parse(s).map(|_| ()).map_err(|e| {
        format!(
            "secret name {s:?}: {} (secret names match ^[a-z0-9][a-z0-9-]{{0,62}}$)",
            e.reason
        )
    })
}

checked_string!(
    /// The name of a secret of a service (`mcp secret set SVC NAME`). It
    /// names a file in the agent's secret store, so it is held to the rule
    /// of service names.
    SecretName,
    check_secret_name
);

fn check_secret_file_path(s: &str) -> Result<(), String> {
    check_container_path(s)?;
    if s.ends_with('/') {
        return Err(format!(
            "secret file path {s:?} must name a file, not a directory"
        ));
    }
    // The runtime takes a bind as `source:target:options`.
    if s.contains(':') {
        return Err(format!("secret file path {s:?} must not contain ':'"));
    }
    Ok(())
}

checked_string!(
    /// Where a secret is mounted in the container (`secret_files`): an
    /// absolute file path.
    SecretFilePath,
    check_secret_file_path
);

/// `tmpfs`: `container_path[:options]`, the options as mount(8) takes them
/// for a tmpfs (`size=64m,mode=1777,noexec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TmpfsMount {
    text: String,
}

impl TmpfsMount {
    pub fn path(&self) -> &str {
        self.text.split_once(':').map_or(&self.text, |(p, _)| p)
    }

    /// The mount options ("" for the runtime's defaults).
    pub fn options(&self) -> &str {
        self.text.split_once(':').map_or("", |(_, o)| o)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The flags a tmpfs takes without a value.
const TMPFS_FLAGS: &[&str] = &[
    "ro",
    "rw",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "notmpcopyup",
];

fn check_tmpfs_option(whole: &str, o: &str) -> Result<(), String> {
    let digits = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit());
    let ok = match o.split_once('=') {
        None => TMPFS_FLAGS.contains(&o),
        // The kernel's own units (k, m, g) or a share of memory (%).
        Some(("size", v)) => {
            let number = v.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', '%']);
            digits(number) && v.len() - number.len() <= 1
        }
        Some(("mode", v)) => {
            (3..=4).contains(&v.len()) && v.chars().all(|c| ('0'..='7').contains(&c))
        }
        Some(("uid" | "gid", v)) => digits(v),
        Some(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tmpfs {whole:?}: option {o:?} is not one of {}, size=64m, mode=1777, uid=N, gid=N",
            TMPFS_FLAGS.join(", ")
        ))
    }
}

impl FromStr for TmpfsMount {
    type Err = String;
    fn from_str(whole: &str) -> Result<Self, String> {
        let (path, options) = match whole.split_once(':') {
            Some((p, o)) => (p, Some(o)),
            None => (whole, None),
        };
        check_container_path(path).map_err(|e| format!("tmpfs {whole:?}: {e}"))?;
        if path.trim_end_matches('/').is_empty() {
            return Err(format!(
                "tmpfs {whole:?}: the root file system cannot be a tmpfs"
            ));
        }
        if let Some(options) = options {
            for o in options.split(',') {
                check_tmpfs_option(whole, o)?;
            }
        }
        Ok(TmpfsMount {
            text: whole.to_string(),
        })
    }
}

impl TryFrom<String> for TmpfsMount {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<TmpfsMount> for String {
    fn from(t: TmpfsMount) -> String {
        t.text
    }
}

/// Linux's signals by number (x86 and arm numbering, 1 to 31).
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];
const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// The number of a signal's name (`SIGTERM`, `TERM`, `SIGRTMIN+3`, any case).
fn signal_number(name: &str) -> Option<i32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = SIGNALS.iter().find(|(s, _)| *s == bare) {
        return Some(n);
    }
    let offset = |rest: &str| -> Option<i32> {
        match rest {
            "" => Some(0),
            _ if rest.len() <= 2 && rest.chars().all(|c| c.is_ascii_digit()) => rest.parse().ok(),
            _ => None,
        }
    };
    // Podman's names for the real-time signals: RTMIN+1..15, RTMAX-14..1.
    if let Some(rest) = bare.strip_prefix("RTMIN") {
        let n = match rest.strip_prefix('+') {
            Some(r) => offset(r).filter(|n| (1..=15).contains(n))?,
            None => offset(rest).filter(|n| *n == 0)?,
        };
        return Some(SIGRTMIN + n);
    }
    if let Some(rest) = bare.strip_prefix("RTMAX") {
        let n = match rest.strip_prefix('-') {
            Some(r) => offset(r).filter(|n| (1..=14).contains(n))?,
            None => offset(rest).filter(|n| *n == 0)?,
        };
        return Some(SIGRTMAX - n);
    }
    None
}

fn check_signal(s: &str) -> Result<(), String> {
    signal_number(s).map(|_| ()).ok_or_else(|| {
        format!(
            "unknown signal {s:?}: write a signal's name, e.g. SIGTERM, TERM, SIGQUIT, SIGRTMIN+3"
        )
    })
}

checked_string!(
    /// `stop_signal`: a signal's name, with or without `SIG`.
    Signal,
    check_signal
);

impl Signal {
    pub fn number(&self) -> i32 {
        signal_number(&self.0).unwrap_or(15)
    }

    /// What a runtime reports (a name, or a number as podman does) as a name.
    pub fn from_runtime(s: &str) -> Result<Signal, String> {
        let Ok(n) = s.parse::<i32>() else {
            return s.parse();
        };
        let name = match SIGNALS.iter().find(|(_, number)| *number == n) {
            Some((name, _)) => format!("SIG{name}"),
            None if n == SIGRTMIN => "SIGRTMIN".to_string(),
            None if n == SIGRTMAX => "SIGRTMAX".to_string(),
            None if (SIGRTMIN + 1..=SIGRTMIN + 15).contains(&n) => {
                format!("SIGRTMIN+{}", n - SIGRTMIN)
            }
            None if (SIGRTMAX - 14..SIGRTMAX).contains(&n) => format!("SIGRTMAX-{}", SIGRTMAX - n),
            None => return Err(format!("unknown signal number {n}")),
        };
        name.parse()
    }
}

fn check_stop_timeout(s: &str) -> Result<(), String> {
    check_duration(s)?;
    if humantime::parse_duration(s).is_ok_and(|d| d.subsec_nanos() != 0) {
        return Err(format!(
            "stop_timeout {s:?}: the runtime counts whole seconds (e.g. \"20s\", \"1m\")"
        ));
    }
    Ok(())
}

checked_string!(
    /// `stop_timeout`: a duration in whole seconds, at most an hour.
    StopTimeout,
    check_stop_timeout
);

impl StopTimeout {
    pub fn get(&self) -> std::time::Duration {
        humantime::parse_duration(&self.0).unwrap_or_default()
    }
}

/// Linux's capabilities, without their `CAP_` prefix.
pub const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// `CAP_NET_ADMIN` for `net_admin`, `NET_ADMIN` or `CAP_NET_ADMIN`; `ALL`
/// for `all`; None for anything else.
fn canonical_capability(s: &str) -> Option<String> {
    let upper = s.to_ascii_uppercase();
    if upper == "ALL" {
        return Some(upper);
    }
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITIES.contains(&bare).then(|| format!("CAP_{bare}"))
}

fn check_capability(s: &str) -> Result<(), String> {
    canonical_capability(s).map(|_| ()).ok_or_else(|| {
        format!(
            "unknown capability {s:?}: write a Linux capability such as NET_ADMIN or \
             CAP_NET_BIND_SERVICE (ALL only in cap_drop)"
        )
    })
}

checked_string!(
    /// A Linux capability (`NET_ADMIN`, `CAP_NET_ADMIN`), or `ALL`.
    Capability,
    check_capability
);

impl Capability {
    /// `CAP_NET_ADMIN` however it was written; `ALL` for all.
    pub fn canonical(&self) -> String {
        canonical_capability(&self.0).unwrap_or_else(|| self.0.clone())
    }

    pub fn is_all(&self) -> bool {
        self.0.eq_ignore_ascii_case("ALL")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// `[ip:][host_port:]container_port[/tcp|/udp]`, as compose and podman take it.
/// IPv6 host addresses are written in brackets: `[::1]:8080:80`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortMapping {
    pub host_ip: Option<IpAddr>,
    /// None: the runtime picks a free port.
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub protocol: Protocol,
    text: String,
}

impl PortMapping {
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn parse_port(what: &str, s: &str, whole: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "port mapping {whole:?}: {what} {s:?} is not a port number (1-65535)"
        )),
    }
}

impl FromStr for PortMapping {
    type Err = String;
    fn from_str(whole: &str) -> Result<Self, String> {
        let (rest, protocol) = match whole.rsplit_once('/') {
            None => (whole, Protocol::Tcp),
            Some((rest, "tcp")) => (rest, Protocol::Tcp),
            Some((rest, "udp")) => (rest, Protocol::Udp),
            Some((_, p)) => {
                return Err(format!(
                    "port mapping {whole:?}: protocol {p:?} must be tcp or udp"
                ))
            }
        };
        let (ip_text, ports) = if let Some(v6) = rest.strip_prefix('[') {
            let (ip, ports) = v6.split_once("]:").ok_or_else(|| {
                format!("port mapping {whole:?}: expected [ipv6]:host_port:container_port")
            })?;
            (Some(ip), ports)
        } else {
            match rest.matches(':').count() {
                0 | 1 => (None, rest),
                2 => {
                    let (ip, ports) = rest.split_once(':').unwrap_or(("", rest));
                    (Some(ip), ports)
                }
                _ => {
                    return Err(format!(
                        "port mapping {whole:?}: expected [ip:][host_port:]container_port"
                    ))
                }
            }
        };
        let host_ip = match ip_text {
            None | Some("") => None,
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| format!("port mapping {whole:?}: {ip:?} is not an IP address"))?,
            ),
        };
        let (host_port, container_port) = match ports.split_once(':') {
            None => (None, parse_port("container port", ports, whole)?),
            Some(("", c)) => (None, parse_port("container port", c, whole)?),
            Some((h, c)) => (
                Some(parse_port("host port", h, whole)?),
                parse_port("container port", c, whole)?,
            ),
        };
        Ok(PortMapping {
            host_ip,
            host_port,
            container_port,
            protocol,
            text: whole.to_string(),
        })
    }
}

impl TryFrom<String> for PortMapping {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<PortMapping> for String {
    fn from(p: PortMapping) -> String {
        p.text
    }
}

/// `host_path_or_volume:container_path[:options]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VolumeMount {
    text: String,
}

impl VolumeMount {
    /// The bind as podman takes it (identical to what was written).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Where it is mounted in the container.
    pub fn container_path(&self) -> &str {
        self.text.split(':').nth(1).unwrap_or_default()
    }

    /// The host path of a bind mount; None for a named volume.
    pub fn host_path(&self) -> Option<&Path> {
        let source = self.text.split(':').next()?;
        source.starts_with('/').then(|| Path::new(source))
    }

    /// The options that change the host path itself: `U` (chown to the
    /// container's user) and `Z` (private SELinux label).
    pub fn host_changing_options(&self) -> impl Iterator<Item = &str> {
        self.text
            .split(':')
            .nth(2)
            .into_iter()
            .flat_map(|o| o.split(','))
            .filter(|o| matches!(*o, "U" | "Z"))
    }
}

fn check_mount_path(whole: &str, what: &str, p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!(
            "volume {whole:?}: {what} {p:?} must be an absolute path"
        ));
    }
    if Path::new(p)
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!(
            "volume {whole:?}: {what} {p:?} must not contain '..'"
        ));
    }
    Ok(())
}

impl FromStr for VolumeMount {
    type Err = String;
    fn from_str(whole: &str) -> Result<Self, String> {
        if whole.chars().any(|c| c.is_control()) {
            return Err(format!("volume {whole:?} contains control characters"));
        }
        let parts: Vec<&str> = whole.split(':').collect();
        let (source, target, options) = match parts.as_slice() {
            [s, t] => (*s, *t, None),
            [s, t, o] => (*s, *t, Some(*o)),
            _ => {
                return Err(format!(
                    "volume {whole:?}: expected host_path:container_path[:options]"
                ))
            }
        };
        if source.starts_with('/') {
            check_mount_path(whole, "host path", source)?;
        } else {
            check_network(source).map_err(|_| {
                format!(
                    "volume {whole:?}: source {source:?} must be an absolute host path or a volume name"
                )
            })?;
        }
        check_mount_path(whole, "container path", target)?;
        if let Some(options) = options {
            for o in options.split(',') {
                if !matches!(o, "ro" | "rw" | "z" | "Z" | "U" | "nocopy") {
                    return Err(format!(
                        "volume {whole:?}: unknown option {o:?} (ro, rw, z, Z, U, nocopy)"
                    ));
                }
            }
        }
        Ok(VolumeMount {
            text: whole.to_string(),
        })
    }
}

impl TryFrom<String> for VolumeMount {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<VolumeMount> for String {
    fn from(v: VolumeMount) -> String {
        v.text
    }
}

/// A definition file that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<Name>,
    node: Name,
    #[serde(default = "default_active")]
    active: bool,
    #[serde(default)]
    reconcile: Option<bool>,
    #[serde(default)]
    components: Vec<Spanned<ComponentDef>>,
}

fn default_active() -> bool {
    true
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Deserialises any TOML file; errors name the file, line and column.
pub fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, SpecError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = line_column(text, e.span().map_or(0, |s| s.start));
        SpecError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })
}

/// Parses a definition; `path` names the file in errors, and its stem must be
/// the service's name.
pub fn parse_service(path: &Path, text: &str) -> Result<ServiceDef, SpecError> {
    let invalid = |offset: usize, message: String| {
        let (line, column) = line_column(text, offset);
        SpecError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    };
    let raw: RawService = parse_toml(path, text)?;
    let name_offset = raw.name.span().start;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if stem != raw.name.get_ref().as_str() {
        return Err(invalid(
            name_offset,
            format!(
                "name {:?} must match the file name (expected {stem}.toml to hold name = {stem:?})",
                raw.name.get_ref().as_str()
            ),
        ));
    }
    let component_offsets: Vec<usize> = raw.components.iter().map(|c| c.span().start).collect();
    let def = ServiceDef {
        name: raw.name.into_inner(),
        node: raw.node,
        active: raw.active,
        reconcile: raw.reconcile,
        components: raw
            .components
            .into_iter()
            .map(Spanned::into_inner)
            .collect(),
    };
    def.check().map_err(|(index, message)| {
        invalid(index.map_or(name_offset, |i| component_offsets[i]), message)
    })?;
    Ok(def)
}

pub fn load_service(path: &Path) -> Result<ServiceDef, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_service(path, &text)
}

/// The definition as TOML that [`parse_service`] reads back to an equal
/// definition (for a path whose stem is the service's name). Deterministic:
/// the same definition always gives the same bytes (env is a sorted map,
/// everything else keeps its order; `restart` is always written).
pub fn to_toml(def: &ServiceDef) -> String {
    // Every field is a string, bool, sequence or string-keyed map, which
    // TOML can always represent; a failure here is a bug in this crate.
    toml::to_string(def).unwrap_or_else(|e| panic!("service {} has no TOML form: {e}", def.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServiceDef, SpecError> {
        parse_service(Path::new("/defs/metacrypt.toml"), text)
    }

    const GOOD: &str = r#"
name   = "metacrypt"
node   = "rift"
active = true

[[components]]
name    = "api"
image   = "localhost/metacrypt:v1.4.0"
restart = "unless-stopped"
ports   = ["127.0.0.1:8443:8443"]
volumes = ["/srv/metacrypt:/srv/metacrypt"]
env     = { METACRYPT_LOG = "info" }
cmd     = ["metacrypt", "server"]
network = "mcp"

[[components]]
name  = "web"
image = "localhost/metacrypt-web:v1.4.0"
"#;

    fn error_at(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Err(SpecError::Invalid {
                line,
                column,
                message,
                ..
            }) => (line, column, message),
            other => panic!("expected an invalid-spec error, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_brief_example() {
        let def = parse(GOOD).unwrap();
        assert_eq!(def.name.as_str(), "metacrypt");
        assert_eq!(def.components.len(), 2);
        let api = &def.components[0];
        assert_eq!(api.restart, Restart::UnlessStopped);
        assert_eq!(api.ports[0].host_port, Some(8443));
        assert_eq!(def.components[1].restart, Restart::No);
        assert!(def.active);
    }

    #[test]
    fn malformed_toml_names_line_and_column() {
        let (line, column, _) = error_at("name = \"metacrypt\"\nnode = \"rift\nactive = true\n");
        assert_eq!((line, column), (2, 13));
    }

    #[test]
    fn unknown_key_is_refused_where_it_stands() {
        let text = GOOD.replace("network = \"mcp\"", "netwrk = \"mcp\"");
        let (line, column, message) = error_at(&text);
        assert_eq!((line, column), (14, 1));
        assert!(message.contains("unknown field `netwrk`"), "{message}");
    }

    #[test]
    fn bad_restart_is_refused() {
        let text = GOOD.replace("unless-stopped", "sometimes");
        let (line, _, message) = error_at(&text);
        assert_eq!(line, 9);
        assert!(message.contains("sometimes"), "{message}");
    }

    #[test]
    fn bad_names_are_refused() {
        let text = GOOD.replace("name    = \"api\"", "name    = \"API\"");
        let (line, _, message) = error_at(&text);
        assert_eq!(line, 7);
        assert!(message.contains("invalid name"), "{message}");
        let (line, _, message) = error_at(&GOOD.replace("\"metacrypt\"\n", "\"other\"\n"));
        assert_eq!(line, 2);
        assert!(message.contains("must match the file name"), "{message}");
    }

    #[test]
    fn duplicate_components_and_ports_are_refused() {
        let text = GOOD.replace("name  = \"web\"", "name  = \"api\"");
        let (line, _, message) = error_at(&text);
        assert_eq!(line, 16);
        assert!(message.contains("used twice"), "{message}");
        let text = format!("{GOOD}ports = [\"127.0.0.1:8443:80\"]\n");
        assert!(error_at(&text).2.contains("published twice"));
    }

    #[test]
    fn port_mappings() {
        let p: PortMapping = "127.0.0.1:8080:80".parse().unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.container_port),
            (Some([127, 0, 0, 1].into()), Some(8080), 80)
        );
        let p: PortMapping = "[::1]:8080:80/udp".parse().unwrap();
        assert_eq!(p.protocol, Protocol::Udp);
        assert_eq!("8080:80".parse::<PortMapping>().unwrap().host_ip, None);
        assert_eq!("80".parse::<PortMapping>().unwrap().host_port, None);
        for bad in [
            "",
            "x:80",
            "1.2.3:80:80",
            "80:0",
            "70000:80",
            "80/sctp",
            "a:b:c:d",
        ] {
            assert!(bad.parse::<PortMapping>().is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes() {
        for ok in ["/srv/a:/data", "/srv/a:/data:ro", "named:/data:rw,Z"] {
            assert!(ok.parse::<VolumeMount>().is_ok(), "{ok}");
        }
        for bad in [
            "/srv/a",
            "rel/path:/data",
            "/srv/../etc:/data",
            "/a:data",
            "/a:/b:bogus",
        ] {
            assert!(bad.parse::<VolumeMount>().is_err(), "{bad}");
        }
    }

    #[test]
    fn to_toml_round_trips_byte_for_byte() {
        let path = Path::new("/defs/metacrypt.toml");
        let mut def = parse(GOOD).unwrap();
        def.components[1].user = Some("1000:1000".parse().unwrap());
        def.components[1].env.insert(
            "QUOTED".parse().unwrap(),
            "a \"b\" 'c' \\ d\nnew line = [x]".to_string(),
        );
        def.components[1].cmd = vec!["sh".into(), "-c".into(), "echo '$X' \"y\"".into()];
        def.active = false;
        let text = to_toml(&def);
        let back = parse_service(path, &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, def, "{text}");
        assert_eq!(to_toml(&back), text);
        // Only the defaults differ from the hand-written file, and nothing is lost.
        let plain = parse(GOOD).unwrap();
        assert_eq!(parse_service(path, &to_toml(&plain)).unwrap(), plain);
    }

    #[test]
    fn health_checks_have_a_floor_and_a_cap() {
        let with =
            |health: &str| format!("{GOOD}[components.health]\ncmd = [\"true\"]\n{health}\n");
        assert!(parse(&with("interval = \"100ms\"")).is_ok());
        let (_, _, m) = error_at(&with("interval = \"10ms\""));
        assert!(m.contains("below the floor of 100ms"), "{m}");
        let (_, _, m) = error_at(&with("timeout = \"1ms\""));
        assert!(m.contains("health.timeout"), "{m}");
        let (_, _, m) = error_at(&with("retries = 1000"));
        assert!(m.contains("retries must be 1 to 100"), "{m}");
    }

    #[test]
    fn no_components_is_refused() {
        let (_, _, message) = error_at("name = \"metacrypt\"\nnode = \"rift\"\n");
        assert!(message.contains("no components"), "{message}");
    }

    const HARDENED: &str = r#"
name = "metacrypt"
node = "rift"

[[components]]
name = "api"
image = "localhost/metacrypt:v1.4.0"
memory = "512M"
cpus = 1.5
pids = 100
read_only = true
tmpfs = ["/tmp:size=64m,mode=1777", "/run"]
workdir = "/srv/app"
stop_signal = "SIGQUIT"
stop_timeout = "20s"
cap_drop = ["ALL"]
cap_add = ["NET_BIND_SERVICE", "cap_net_raw"]
"#;

    #[test]
    fn resources_and_hardening_fields() {
        let def = parse(HARDENED).unwrap();
        let c = &def.components[0];
        assert_eq!(c.memory.as_ref().map(MemorySize::bytes), Some(512 << 20));
        assert_eq!(c.cpus.map(Cpus::nano_cpus), Some(1_500_000_000));
        assert_eq!(c.pids.map(PidsLimit::get), Some(100));
        assert!(c.read_only);
        assert_eq!(c.tmpfs[0].path(), "/tmp");
        assert_eq!(c.tmpfs[0].options(), "size=64m,mode=1777");
        assert_eq!(c.tmpfs[1].options(), "");
        assert_eq!(c.workdir.as_ref().map(|w| w.as_str()), Some("/srv/app"));
        assert_eq!(c.stop_signal.as_ref().map(Signal::number), Some(3));
        assert_eq!(
            c.stop_timeout.as_ref().map(StopTimeout::get),
            Some(std::time::Duration::from_secs(20))
        );
        assert!(c.cap_drop[0].is_all());
        let added: Vec<String> = c.cap_add.iter().map(Capability::canonical).collect();
        assert_eq!(added, ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]);
        // Written back as they were written, and read back equal.
        let text = to_toml(&def);
        assert!(
            text.contains("cpus = 1.5") && text.contains("memory = \"512M\""),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap(), def);
        assert_eq!(to_toml(&parse(&text).unwrap()), text);
        // A whole number of CPUs may be a TOML integer.
        let whole = parse(&HARDENED.replace("cpus = 1.5", "cpus = 2")).unwrap();
        assert_eq!(
            whole.components[0].cpus.map(Cpus::nano_cpus),
            Some(2_000_000_000)
        );
        assert_eq!(parse(&to_toml(&whole)).unwrap(), whole);
    }

    #[test]
    fn bad_resources_and_hardening_are_refused_where_they_stand() {
        for (from, to, says) in [
            ("\"512M\"", "\"512X\"", "unit k, M or G"),
            ("\"512M\"", "\"M\"", "expected a number of bytes"),
            ("\"512M\"", "\"1k\"", "floor of 6M"),
            ("\"512M\"", "\"99999999999G\"", "too large"),
            ("\"512M\"", "512", "invalid type"),
            ("cpus = 1.5", "cpus = 0", "from 0.01 to 65536"),
            ("cpus = 1.5", "cpus = -1.0", "from 0.01"),
            ("cpus = 1.5", "cpus = nan", "must be a number of CPUs"),
            ("pids = 100", "pids = 0", "at least 1"),
            ("pids = 100", "pids = -1", "at least 1"),
            ("read_only = true", "read_only = \"yes\"", "invalid type"),
            ("\"/run\"]", "\"run\"]", "must be absolute"),
            ("\"/run\"]", "\"/\"]", "root file system"),
            ("\"/run\"]", "\"/run:size=lots\"]", "option \"size=lots\""),
            ("\"/run\"]", "\"/run:suid,bogus\"]", "option \"bogus\""),
            ("\"/run\"]", "\"/x/../run\"]", "'..'"),
            ("\"/srv/app\"", "\"srv/app\"", "must be absolute"),
            ("\"SIGQUIT\"", "\"SIGFOO\"", "unknown signal \"SIGFOO\""),
            ("\"SIGQUIT\"", "\"15\"", "unknown signal"),
            ("\"SIGQUIT\"", "\"RTMIN+16\"", "unknown signal"),
            ("\"20s\"", "\"1500ms\"", "whole seconds"),
            ("\"20s\"", "\"2h\"", "longer than an hour"),
            ("\"20s\"", "\"soon\"", "duration \"soon\""),
            (
                "[\"ALL\"]",
                "[\"NET_ADMN\"]",
                "unknown capability \"NET_ADMN\"",
            ),
            (
                "\"cap_net_raw\"]",
                "\"SYS_EVERYTHING\"]",
                "unknown capability",
            ),
        ] {
            let text = HARDENED.replace(from, to);
            assert_ne!(text, HARDENED, "{from} is not in the example");
            let line = HARDENED
                .lines()
                .position(|l| l.contains(from))
                .map(|i| i + 1)
                .unwrap();
            let (at, column, message) = error_at(&text);
            assert_eq!(at, line, "{to}: {message}");
            assert!(column > 1, "{to}: the value's column, got {column}");
            assert!(message.contains(says), "{to}: {message:?} lacks {says:?}");
        }
        // Checks across fields point at the component.
        let (line, _, m) = error_at(&HARDENED.replace("[\"NET_BIND_SERVICE\"", "[\"ALL\""));
        assert_eq!(line, 5);
        assert!(m.contains("cap_add cannot be \"ALL\""), "{m}");
        let text = format!("{HARDENED}volumes = [\"/srv/metacrypt:/tmp\"]\n");
        let (_, _, m) = error_at(&text);
        assert!(m.contains("/tmp is mounted twice"), "{m}");
    }

    const WITH_SECRETS: &str = r#"
name = "metacrypt"
node = "rift"

[[components]]
name = "api"
image = "localhost/metacrypt:v1.4.0"
env = { LOG = "info" }
secrets = { DB_PASSWORD = "db-password" }
secret_files = { "db-password" = "/run/secrets/db", tls-key = "/etc/tls/key.pem" }
"#;

    #[test]
    fn secrets_and_secret_files_name_secrets() {
        let def = parse(WITH_SECRETS).unwrap();
        let c = &def.components[0];
        assert_eq!(
            c.secrets[&"DB_PASSWORD".parse().unwrap()].as_str(),
            "db-password"
        );
        assert_eq!(
            c.secret_files[&"tls-key".parse().unwrap()].as_str(),
            "/etc/tls/key.pem"
        );
        let names: Vec<&str> = c.secret_names().into_iter().map(|n| n.as_str()).collect();
        assert_eq!(names, ["db-password", "tls-key"]);
        let text = to_toml(&def);
        assert_eq!(parse(&text).unwrap(), def, "{text}");
        assert_eq!(to_toml(&parse(&text).unwrap()), text);
    }

    #[test]
    fn bad_secrets_are_refused_where_they_stand() {
        for (from, to, says) in [
            ("\"db-password\" }", "\"DB\" }", "secret name \"DB\""),
            ("\"db-password\" }", "\"../x\" }", "secret name"),
            ("{ DB_PASSWORD", "{ 1DB", "environment variable name"),
            ("\"/run/secrets/db\"", "\"run/db\"", "must be absolute"),
            ("\"/run/secrets/db\"", "\"/run/\"", "must name a file"),
            (
                "\"/run/secrets/db\"",
                "\"/run/a:b\"",
                "must not contain ':'",
            ),
            ("\"/run/secrets/db\"", "\"/run/../db\"", "'..'"),
            ("tls-key =", "Tls =", "secret name \"Tls\""),
        ] {
            let text = WITH_SECRETS.replace(from, to);
            assert_ne!(text, WITH_SECRETS, "{from} is not in the example");
            let line = WITH_SECRETS
                .lines()
                .position(|l| l.contains(from))
                .map(|i| i + 1)
                .unwrap();
            let (at, _, message) = error_at(&text);
            assert_eq!(at, line, "{to}: {message}");
            assert!(message.contains(says), "{to}: {message:?} lacks {says:?}");
        }
        // Across fields: the component's line.
        let (line, _, m) = error_at(&WITH_SECRETS.replace("LOG = ", "DB_PASSWORD = "));
        assert_eq!(line, 5);
        assert!(m.contains("DB_PASSWORD is in both env and secrets"), "{m}");
        let text = format!("{WITH_SECRETS}volumes = [\"/srv/metacrypt:/run/secrets/db\"]\n");
        let (line, _, m) = error_at(&text);
        assert_eq!(line, 5);
        assert!(m.contains("mounted already"), "{m}");
        let text = format!("{WITH_SECRETS}tmpfs = [\"/etc/tls/key.pem\"]\n");
        assert!(error_at(&text).2.contains("mounted already"));
    }

    const ROUTED: &str = r#"
name = "metacrypt"
node = "rift"

[[components]]
name = "api"
image = "localhost/metacrypt:v1.4.0"

[[components.routes]]
name = "http"
port = 8080
hostname = "api.example.com"
mode = "l7"

[[components.routes]]
name = "grpc"
port = 9090
"#;

    #[test]
    fn routes_parse_and_round_trip() {
        let def = parse(ROUTED).unwrap();
        let routes = def.components[0].routes.as_slice();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].key(), "http");
        assert_eq!(routes[0].port.get(), 8080);
        assert_eq!(routes[0].mode, RouteMode::L7);
        assert_eq!(
            routes[0].hostname.as_ref().map(|h| h.as_str()),
            Some("api.example.com")
        );
        assert_eq!(routes[1].mode, RouteMode::L4);
        assert_eq!(routes[1].env_var(), "PORT_GRPC");
        let text = to_toml(&def);
        assert_eq!(parse(&text).unwrap(), def, "{text}");
        assert_eq!(to_toml(&parse(&text).unwrap()), text);
        // One route may go unnamed: it is PORT.
        let single = "name = \"metacrypt\"\nnode = \"rift\"\n[[components]]\nname = \"api\"\n\
                      image = \"img:1\"\nroutes = [{ port = 8080 }]\n";
        let def = parse(single).unwrap();
        assert_eq!(def.components[0].routes.as_slice()[0].env_var(), "PORT");
        assert_eq!(parse(&to_toml(&def)).unwrap(), def);
    }

    #[test]
    fn bad_routes_are_refused_where_they_stand() {
        for (from, to, says) in [
            (
                "port = 8080",
                "port = 0",
                "route port 0 is not a port number (1-65535)",
            ),
            ("port = 8080", "port = 70000", "not a port number (1-65535)"),
            ("port = 8080", "port = \"8080\"", "invalid type"),
            (
                "\"l7\"",
                "\"l5\"",
                "unknown variant `l5`, expected `l4` or `l7`",
            ),
            ("\"http\"", "\"HTTP\"", "must match [a-z][a-z0-9_]*"),
            (
                "\"api.example.com\"",
                "\"API.example\"",
                "DNS name in lower case",
            ),
            (
                "mode = \"l7\"",
                "mode = \"l7\"\nproto = 1",
                "unknown field `proto`",
            ),
        ] {
            let text = ROUTED.replacen(from, to, 1);
            assert_ne!(text, ROUTED, "{from} is not in the example");
            let line = ROUTED
                .lines()
                .position(|l| l.contains(from))
                .map(|i| i + 1)
                .unwrap();
            let (at, column, message) = error_at(&text);
            assert!(
                at == line || (to.contains('\n') && at == line + 1),
                "{to}: line {at}, expected {line}: {message}"
            );
            assert!(column >= 1);
            assert!(message.contains(says), "{to}: {message:?} lacks {says:?}");
        }
        // Across routes: the error points into the component's routes.
        let (line, _, m) = error_at(&ROUTED.replace("\"grpc\"", "\"http\""));
        assert!(line >= 9, "{line}: {m}");
        assert!(m.contains("route name \"http\" is used twice"), "{m}");
        let (line, _, m) = error_at(&ROUTED.replace("name = \"grpc\"\n", ""));
        assert!(line >= 9, "{line}: {m}");
        assert!(m.contains("the route to port 9090 needs a name"), "{m}");
        // A variable the route sets cannot be set by env too.
        let text = ROUTED.replace(
            "image = \"localhost/metacrypt:v1.4.0\"\n",
            "image = \"localhost/metacrypt:v1.4.0\"\nenv = { PORT_GRPC = \"1\" }\n",
        );
        let (line, _, m) = error_at(&text);
        assert_eq!(line, 5);
        assert!(m.contains("env sets PORT_GRPC"), "{m}");
    }

    #[test]
    fn signals_by_name_and_number() {
        for (name, number) in [
            ("SIGTERM", 15),
            ("TERM", 15),
            ("sigquit", 3),
            ("SIGKILL", 9),
            ("SIGRTMIN", 34),
            ("SIGRTMIN+3", 37),
            ("RTMAX-1", 63),
            ("SIGWINCH", 28),
        ] {
            let s: Signal = name.parse().unwrap();
            assert_eq!(s.number(), number, "{name}");
            assert_eq!(
                Signal::from_runtime(&number.to_string()).unwrap().number(),
                number
            );
        }
        assert_eq!(Signal::from_runtime("3").unwrap().as_str(), "SIGQUIT");
        assert_eq!(Signal::from_runtime("37").unwrap().as_str(), "SIGRTMIN+3");
        assert_eq!(Signal::from_runtime("SIGUSR1").unwrap().number(), 10);
        for bad in ["", "SIG", "RTMIN+0", "RTMAX-15", "RTMIN3", "SIGTERM ", "99"] {
            assert!(Signal::from_runtime(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_and_cpus() {
        for (text, bytes) in [
            ("6M", 6 << 20),
            ("6291456", 6 << 20),
            ("6291456b", 6 << 20),
            ("8192k", 8 << 20),
            ("1g", 1 << 30),
            ("2G", 2 << 30),
        ] {
            assert_eq!(text.parse::<MemorySize>().unwrap().bytes(), bytes, "{text}");
        }
        for bytes in [6 << 20, 1 << 30, (6 << 20) + 1, 7 << 10 << 10] {
            let m = MemorySize::from_bytes(bytes).unwrap();
            assert_eq!(m.bytes(), bytes, "{m}");
        }
        assert_eq!(MemorySize::from_bytes(512 << 20).unwrap().as_str(), "512M");
        assert!(MemorySize::from_bytes(0).is_err());
        for v in [0.01, 0.1, 0.5, 1.0, 1.5, 3.333333333, 65536.0] {
            let c = Cpus::try_from(v).unwrap();
            assert_eq!(f64::from(c), v);
            assert_eq!(Cpus::from_nanos(c.nano_cpus()).unwrap(), c);
        }
        for bad in [0.0, 0.009, 65536.5, f64::INFINITY, f64::NAN] {
            assert!(Cpus::try_from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn capabilities_in_any_spelling() {
        for (text, canonical) in [
            ("NET_ADMIN", "CAP_NET_ADMIN"),
            ("CAP_NET_ADMIN", "CAP_NET_ADMIN"),
            ("net_admin", "CAP_NET_ADMIN"),
            ("cap_checkpoint_restore", "CAP_CHECKPOINT_RESTORE"),
            ("all", "ALL"),
        ] {
            let c: Capability = text.parse().unwrap();
            assert_eq!(c.canonical(), canonical);
            assert_eq!(c.as_str(), text, "kept as written");
        }
        for bad in ["", "CAP_", "NET ADMIN", "CAP_ALL", "SUPERUSER"] {
            assert!(bad.parse::<Capability>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn adopted_resources_become_definition_fields() {
        let running = RunningSpec {
            image: "img:1".into(),
            memory_bytes: Some(512 << 20),
            nano_cpus: Some(1_500_000_000),
            pids: Some(100),
            read_only: true,
            tmpfs: vec!["/tmp:size=64m".into()],
            workdir: Some("/srv".into()),
            stop_signal: Some("3".into()),
            stop_timeout_secs: Some(20),
            cap_drop: vec!["CHOWN".into()],
            cap_add: vec!["CAP_NET_ADMIN".into()],
            ..Default::default()
        };
        let c = ComponentDef::from_running(Name::parse("api").unwrap(), running).unwrap();
        assert_eq!(c.memory.as_ref().map(|m| m.as_str()), Some("512M"));
        assert_eq!(c.cpus.map(f64::from), Some(1.5));
        assert_eq!(c.pids.map(PidsLimit::get), Some(100));
        assert!(c.read_only);
        assert_eq!(c.tmpfs[0].as_str(), "/tmp:size=64m");
        assert_eq!(c.stop_signal.as_ref().map(|s| s.as_str()), Some("SIGQUIT"));
        assert_eq!(c.stop_timeout.as_ref().map(|t| t.as_str()), Some("20s"));
        assert_eq!(c.cap_drop[0].canonical(), "CAP_CHOWN");
        assert_eq!(c.cap_add[0].canonical(), "CAP_NET_ADMIN");
        let bad = RunningSpec {
            image: "img:1".into(),
            memory_bytes: Some(1024),
            ..Default::default()
        };
        let err = ComponentDef::from_running(Name::parse("api").unwrap(), bad).unwrap_err();
        assert!(err.starts_with("memory: "), "{err}");
    }
}
