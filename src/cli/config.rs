//! The CLI's files: `mcp.toml` (nodes), the token, and the service definitions,
//! all under `$XDG_CONFIG_HOME/mcp` (default `~/.config/mcp`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::names::Name;
use crate::spec::{load_service, ServiceDef};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// host:port of the node's agent.
    pub address: String,
    /// The CA that signed the agent's certificate (PEM).
    pub ca: PathBuf,
    /// Name to verify in the agent's certificate (default: the address's host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// This node's token, read from this file (mode 0600), instead of the
    /// global token (`MCP_TOKEN` or the token file) for this node only: for
    /// nodes in local auth mode, each with its own token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl NodeConfig {
    pub fn host(&self) -> &str {
        let host = match self.address.rsplit_once(':') {
            Some((host, _)) => host,
            None => &self.address,
        };
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// Seconds a node gets to answer a read command (`list`, `ps`, `status`,
/// `events`) and to accept a connection, when neither `--timeout` nor
/// `timeout_secs` says otherwise.
pub const DEFAULT_TIMEOUT_SECS: u64 = 5;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// Per-node bound on connect + call of the read commands, in seconds
    /// (default 5); `--timeout` overrides it.
    #[serde(default, deserialize_with = "positive_secs")]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub nodes: BTreeMap<Name, NodeConfig>,
    /// Where `mcp login` gets a token.
    #[serde(default)]
    pub mcias: Option<McIasConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McIasConfig {
    /// https://host:port of the identity service.
    pub url: String,
    /// The CA that signed its certificate (PEM).
    pub ca: PathBuf,
    #[serde(default = "default_login_path")]
    pub login_path: String,
    /// Sent with the login, as the platform's services do.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Sent with the login (omitted when empty).
    #[serde(default)]
    pub tags: Vec<String>,
}

fn positive_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let secs = u64::deserialize(d)?;
    if secs == 0 {
        return Err(serde::de::Error::custom(
            "timeout_secs must be at least 1 (seconds)",
        ));
    }
    Ok(Some(secs))
}

fn default_service_name() -> String {
    "mcp".to_string()
}

fn default_login_path() -> String {
    crate::mcias::DEFAULT_LOGIN_PATH.to_string()
}

pub fn config_home() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("mcp");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".config/mcp")
}

/// Where everything the CLI reads lives; each can be overridden.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config: PathBuf,
    pub services: PathBuf,
    pub token: PathBuf,
}

impl Paths {
    pub fn new(config: Option<PathBuf>, services: Option<PathBuf>) -> Self {
        let home = config_home();
        Paths {
            config: config.unwrap_or_else(|| home.join("mcp.toml")),
            services: services.unwrap_or_else(|| home.join("services")),
            token: home.join("token"),
        }
    }
}

pub fn load_config(path: &Path) -> Result<CliConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no CLI config at {}: create it with a [nodes.NAME] table (address = \"host:9444\", ca = \"/path/ca.pem\")",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    Ok(crate::spec::parse_toml(path, &text)?)
}

impl CliConfig {
    pub fn node(&self, name: &Name, config_path: &Path) -> Result<&NodeConfig> {
        self.nodes.get(name).ok_or_else(|| {
            anyhow!(
                "node {name} is not in {}: add [nodes.{name}] with address and ca",
                config_path.display()
            )
        })
    }
}

/// The operator's token: `MCP_TOKEN`, else the token file.
pub fn load_token(paths: &Paths) -> Result<String> {
    if let Ok(t) = std::env::var("MCP_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    if !paths.token.exists() {
        bail!(
            "no token: set MCP_TOKEN or write the token to {} (mode 0600)",
            paths.token.display()
        );
    }
    read_token_file(&paths.token)
}

/// A token file's token. Like ssh with private keys, a file that group or
/// others may read is refused: the token is as good as the operator.
pub fn read_token_file(path: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "the token file {} is readable by others (mode {:04o}): a token is as good as \
             your password; run `chmod 600 {}`",
            path.display(),
            mode & 0o7777,
            path.display()
        );
    }
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    if token.trim().is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token.trim().to_string())
}

/// The token for one node: its `token_file` when it has one, else `global`
/// (`MCP_TOKEN` or the token file, as [`load_token`] found it, or why not).
pub fn node_token(
    name: &Name,
    node: &NodeConfig,
    global: &Result<String, String>,
) -> Result<String> {
    match &node.token_file {
        Some(path) => read_token_file(path).with_context(|| format!("node {name}")),
        None => global.clone().map_err(|e| anyhow!(e)),
    }
}

/// The definition of `service`: `<services dir>/<service>.toml`.
pub fn load_definition(paths: &Paths, service: &Name) -> Result<ServiceDef> {
    let path = paths.services.join(format!("{service}.toml"));
    if !path.exists() {
        bail!(
            "no definition for service {service}: expected {}",
            path.display()
        );
    }
    Ok(load_service(&path)?)
}

/// Every definition in the services directory, each validated; one bad file
/// fails them all, so a sync never pushes half of the operator's intent.
pub fn load_all_definitions(paths: &Paths) -> Result<Vec<ServiceDef>> {
    let entries = match std::fs::read_dir(&paths.services) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", paths.services.display()))
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| load_service(p).map_err(anyhow::Error::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CliConfig, crate::spec::SpecError> {
        crate::spec::parse_toml(Path::new("mcp.toml"), text)
    }

    #[test]
    fn timeout_and_per_node_token_file() {
        let config = parse(
            "timeout_secs = 2\n\n[nodes.n1]\naddress = \"a:1\"\nca = \"/ca.pem\"\n\n\
             [nodes.n2]\naddress = \"b:1\"\nca = \"/ca2.pem\"\ntoken_file = \"/t2\"\n",
        )
        .unwrap();
        assert_eq!(config.timeout_secs, Some(2));
        let n1: Name = "n1".parse().unwrap();
        let n2: Name = "n2".parse().unwrap();
        assert_eq!(config.nodes[&n1].token_file, None);
        assert_eq!(
            config.nodes[&n2].token_file.as_deref(),
            Some(Path::new("/t2"))
        );
        assert_eq!(parse("").unwrap().timeout_secs, None);
    }

    #[test]
    fn a_zero_timeout_is_refused_with_its_place() {
        let err = parse("timeout_secs = 0\n").unwrap_err().to_string();
        assert!(err.contains("at least 1"), "{err}");
        assert!(err.contains("mcp.toml:1:"), "{err}");
    }

    #[test]
    fn a_node_token_file_wins_over_the_global_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "node-token\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let name: Name = "n1".parse().unwrap();
        let mut node = NodeConfig {
            address: "a:1".into(),
            ca: "/ca.pem".into(),
            server_name: None,
            token_file: Some(file.clone()),
        };
        let global = Ok("global".to_string());
        assert_eq!(node_token(&name, &node, &global).unwrap(), "node-token");
        std::fs::write(&file, " \n").unwrap();
        let err = format!("{:#}", node_token(&name, &node, &global).unwrap_err());
        assert!(err.contains("is empty"), "{err}");
        std::fs::write(&file, "node-token\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = format!("{:#}", node_token(&name, &node, &global).unwrap_err());
        assert!(err.contains("chmod 600"), "{err}");
        node.token_file = None;
        assert_eq!(node_token(&name, &node, &global).unwrap(), "global");
        let missing = Err("no token: set MCP_TOKEN".to_string());
        let err = node_token(&name, &node, &missing).unwrap_err().to_string();
        assert!(err.contains("no token"), "{err}");
    }
}
