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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
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
    match std::fs::read_to_string(&paths.token) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        Ok(_) => bail!("the token file {} is empty", paths.token.display()),
        Err(_) => bail!(
            "no token: set MCP_TOKEN or write the token to {}",
            paths.token.display()
        ),
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
