//! `[[components.routes]]`: container ports the agent publishes on host ports
//! it picks itself (from `[routes] port_range`), keeps across redeploys, and
//! tells the container through `PORT` / `PORT_<NAME>`. Checked while
//! deserialised, like every other field, so errors carry file:line:column.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::checked_string;

/// One route: a container port, and what a front proxy needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDef {
    /// Optional for a component's only route (it then sets `PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<RouteName>,
    /// The port the container listens on.
    pub port: RoutePort,
    /// The name clients use, for a proxy in front (the agent only passes it on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Hostname>,
    #[serde(default, skip_serializing_if = "RouteMode::is_default")]
    pub mode: RouteMode,
}

impl RouteDef {
    /// The route's key among its component's: its name, or "" when unnamed.
    pub fn key(&self) -> &str {
        self.name.as_ref().map_or("", |n| n.as_str())
    }

    /// The variable that tells the container its host port.
    pub fn env_var(&self) -> String {
        env_var_for(self.key())
    }
}

/// `PORT` for the unnamed route, `PORT_<NAME>` (uppercased) for a named one.
pub fn env_var_for(key: &str) -> String {
    if key.is_empty() {
        "PORT".to_string()
    } else {
        format!("PORT_{}", key.to_ascii_uppercase())
    }
}

/// A component's routes: names unique, and an unnamed route only alone (two
/// unnamed routes would both be `PORT`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<RouteDef>", into = "Vec<RouteDef>")]
pub struct Routes(Vec<RouteDef>);

impl Routes {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, RouteDef> {
        self.0.iter()
    }

    pub fn as_slice(&self) -> &[RouteDef] {
        &self.0
    }
}

impl TryFrom<Vec<RouteDef>> for Routes {
    type Error = String;
    fn try_from(routes: Vec<RouteDef>) -> Result<Self, String> {
        let mut names = HashSet::new();
        for r in &routes {
            match &r.name {
                None if routes.len() > 1 => {
                    return Err(format!(
                        "routes: the route to port {} needs a name: a component with several \
                         routes names each (it sets PORT_<NAME>)",
                        r.port
                    ))
                }
                Some(name) if !names.insert(name.as_str()) => {
                    return Err(format!(
                        "routes: route name \"{name}\" is used twice in this component"
                    ))
                }
                _ => {}
            }
        }
        Ok(Routes(routes))
    }
}

impl From<Routes> for Vec<RouteDef> {
    fn from(r: Routes) -> Self {
        r.0
    }
}

/// `mode`: how a proxy in front treats the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteMode {
    /// Plain TCP, passed through.
    #[default]
    L4,
    /// HTTP, routed by hostname.
    L7,
}

impl RouteMode {
    fn is_default(&self) -> bool {
        *self == RouteMode::default()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RouteMode::L4 => "l4",
            RouteMode::L7 => "l7",
        }
    }
}

impl FromStr for RouteMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "l4" => Ok(RouteMode::L4),
            "l7" => Ok(RouteMode::L7),
            _ => Err(format!("unknown route mode {s:?}: expected l4 or l7")),
        }
    }
}

impl fmt::Display for RouteMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container port, 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u16")]
pub struct RoutePort(u16);

impl RoutePort {
    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<i64> for RoutePort {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(RoutePort(p)),
            _ => Err(format!("route port {n} is not a port number (1-65535)")),
        }
    }
}

impl From<RoutePort> for u16 {
    fn from(p: RoutePort) -> u16 {
        p.0
    }
}

impl fmt::Display for RoutePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Route names become part of an environment variable (`PORT_<NAME>`),
/// so they are what a variable name may hold, in lower case.
fn check_route_name(s: &str) -> Result<(), String> {
    let ok = s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "route name {s:?} must match [a-z][a-z0-9_]* (at most 32 characters): it \
             becomes PORT_<NAME>"
        ))
    }
}

/// A DNS name in lower case: labels of letters, digits and inner '-'.
fn check_hostname(s: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if s.len() <= 253 && s.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "hostname {s:?} must be a DNS name in lower case (e.g. \"api.example.com\")"
        ))
    }
}

checked_string!(
    /// `name` of a route: `[a-z][a-z0-9_]*`.
    RouteName,
    check_route_name
);
checked_string!(
    /// `hostname` of a route: a lower-case DNS name.
    Hostname,
    check_hostname
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hostnames_ports_and_modes() {
        for ok in ["http", "grpc2", "admin_api", "a"] {
            assert!(ok.parse::<RouteName>().is_ok(), "{ok}");
        }
        for bad in ["", "Http", "2fa", "admin-api", "a b", &"x".repeat(33)] {
            assert!(bad.parse::<RouteName>().is_err(), "{bad}");
        }
        for ok in ["api.example.com", "localhost", "a-b.c1"] {
            assert!(ok.parse::<Hostname>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "API.example",
            "-a.b",
            "a..b",
            "a_b.c",
            "a.b.",
            "*.example",
        ] {
            assert!(bad.parse::<Hostname>().is_err(), "{bad}");
        }
        assert!(RoutePort::try_from(0).is_err());
        assert!(RoutePort::try_from(65536).is_err());
        assert!(RoutePort::try_from(-1).is_err());
        assert_eq!(RoutePort::try_from(65535).map(RoutePort::get), Ok(65535));
        assert_eq!("l7".parse::<RouteMode>(), Ok(RouteMode::L7));
        assert!("L4".parse::<RouteMode>().is_err());
    }

    #[test]
    fn environment_variables() {
        assert_eq!(env_var_for(""), "PORT");
        assert_eq!(env_var_for("admin_api"), "PORT_ADMIN_API");
    }
}
