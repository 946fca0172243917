//! Routes as the agent runs them: a host port per `[[components.routes]]`,
//! picked from `[routes] port_range` (allocate.rs), kept in the registry so
//! it survives redeploys, published on `[routes] address`, told to the
//! container as `PORT` / `PORT_<NAME>`, and announced to the optional route
//! hook (hook.rs).

pub mod allocate;
pub mod hook;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::Serialize;

use crate::spec::RouteMode;

pub use allocate::{NoFreePort, PortPool};

/// `[routes]` in agent.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSettings {
    /// Host ports are allocated from `first..=last`.
    pub first_port: u16,
    pub last_port: u16,
    /// Where routes are published: loopback by default, so only a proxy on
    /// the node reaches them.
    pub address: IpAddr,
    /// Run (argv, no shell) with the route as JSON on stdin when a route is
    /// added or removed; None: no hook.
    pub hook: Option<Vec<String>>,
    /// A hook still running after this is killed and recorded as failed.
    pub hook_timeout: Duration,
}

impl Default for RouteSettings {
    fn default() -> Self {
        RouteSettings {
            first_port: 10000,
            last_port: 60000,
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            hook: None,
            hook_timeout: Duration::from_secs(10),
        }
    }
}

impl RouteSettings {
    /// Where new host ports come from, with a real bind as the probe.
    pub fn pool(&self) -> PortPool {
        PortPool {
            first: self.first_port,
            last: self.last_port,
            address: self.address,
            probe: allocate::bindable,
        }
    }
}

/// A route with its host port, as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub service: String,
    pub component: String,
    /// "" for a component's only, unnamed route.
    pub name: String,
    pub address: String,
    pub host_port: u16,
    pub container_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub mode: RouteMode,
    /// The container's variable that holds the host port.
    pub env: String,
    pub allocated_at_ms: i64,
}

impl Route {
    /// `http 127.0.0.1:10000 -> 8080 (l7, api.example.com)`, for events.
    pub fn describe(&self) -> String {
        let name = if self.name.is_empty() {
            String::new()
        } else {
            format!("{} ", self.name)
        };
        let hostname = self
            .hostname
            .as_ref()
            .map(|h| format!(", {h}"))
            .unwrap_or_default();
        format!(
            "{name}{} -> {} ({}{hostname}, {})",
            self.host_address(),
            self.container_port,
            self.mode,
            self.env
        )
    }

    /// `address:port`, IPv6 in brackets.
    pub fn host_address(&self) -> String {
        match self.address.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{}", self.host_port),
            _ => format!("{}:{}", self.address, self.host_port),
        }
    }
}

/// What a deploy did to a component's routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assigned {
    /// All its routes now, in definition order.
    pub routes: Vec<Route>,
    /// Those allocated by this assignment.
    pub added: Vec<Route>,
    /// Those the definition no longer has, released.
    pub removed: Vec<Route>,
}

/// What the container is created with for one route: the binding and the
/// variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub address: String,
    pub host_port: u16,
    pub container_port: u16,
    pub env: String,
}

impl From<&Route> for Published {
    fn from(r: &Route) -> Self {
        Published {
            address: r.address.clone(),
            host_port: r.host_port,
            container_port: r.container_port,
            env: r.env.clone(),
        }
    }
}
