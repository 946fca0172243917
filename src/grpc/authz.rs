//! Authorization: which level each RPC needs, and which level an
//! authenticated account gets. The auth layer (auth.rs) calls [`authorize`]
//! after the token checks out, before any service code runs.
//!
//! Two levels: `read` (look, pull files, export specs, whoami) and `operate`
//! (everything that changes the node); operate implies read. The table is
//! keyed by the full gRPC path; a method missing from it is refused, and a
//! test below fails when a method of `proto/mcp/v1/*.proto` is missing.

use std::collections::BTreeSet;

use super::auth::{AuthError, Identity};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Read,
    Operate,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Operate => "operate",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every RPC the agent serves and the level it needs. The health service
/// (`/grpc.health.v1.Health/`) is not here: it answers without a token.
pub const METHODS: &[(&str, Level)] = &[
    ("/mcp.v1.Agent/Deploy", Level::Operate),
    ("/mcp.v1.Agent/DeployWatch", Level::Operate),
    ("/mcp.v1.Agent/Stop", Level::Operate),
    ("/mcp.v1.Agent/Start", Level::Operate),
    ("/mcp.v1.Agent/Rollback", Level::Operate),
    ("/mcp.v1.Agent/Restart", Level::Operate),
    ("/mcp.v1.Agent/Undeploy", Level::Operate),
    ("/mcp.v1.Agent/Purge", Level::Operate),
    // A command inside a container can do anything the container can.
    ("/mcp.v1.Agent/Exec", Level::Operate),
    ("/mcp.v1.Agent/ListServices", Level::Read),
    ("/mcp.v1.Agent/Ps", Level::Read),
    ("/mcp.v1.Agent/Status", Level::Read),
    ("/mcp.v1.Agent/Sync", Level::Operate),
    ("/mcp.v1.Agent/Adopt", Level::Operate),
    ("/mcp.v1.Agent/Events", Level::Read),
    ("/mcp.v1.Agent/WhoAmI", Level::Read),
    // What a deploy would change: nothing is recorded or touched.
    ("/mcp.v1.Agent/Plan", Level::Read),
    // The routes and their host ports, from the registry.
    ("/mcp.v1.Agent/Routes", Level::Read),
    ("/mcp.v1.Files/Push", Level::Operate),
    ("/mcp.v1.Files/Pull", Level::Read),
    ("/mcp.v1.Node/Info", Level::Read),
    ("/mcp.v1.Specs/Export", Level::Read),
    ("/mcp.v1.Logs/Stream", Level::Read),
    // Names and dates only: a value never comes back out.
    ("/mcp.v1.Secrets/List", Level::Read),
    ("/mcp.v1.Secrets/Set", Level::Operate),
    ("/mcp.v1.Secrets/Remove", Level::Operate),
];

/// The level `path` needs; `None` for a method not in the table.
pub fn required_level(path: &str) -> Option<Level> {
    METHODS.iter().find(|(p, _)| *p == path).map(|(_, l)| *l)
}

/// Lets `identity` call `path`, or says why not: the method, the level it
/// needs, and the caller's name, roles and level (never the token).
pub fn authorize(path: &str, identity: Identity) -> Result<Identity, AuthError> {
    let Some(needed) = required_level(path) else {
        return Err(AuthError::PermissionDenied(format!(
            "{path} is not in the agent's authorization table: refused"
        )));
    };
    if identity.level.is_some_and(|l| l >= needed) {
        return Ok(identity);
    }
    let roles = if identity.roles.is_empty() {
        "no roles".to_string()
    } else {
        format!("roles {}", identity.roles.join(", "))
    };
    let has = identity
        .level
        .map_or("no access".to_string(), |l| format!("level {l} only"));
    Err(AuthError::PermissionDenied(format!(
        "{path} needs level {needed}; {} ({roles}) has {has}",
        identity.name()
    )))
}

/// Which roles and accounts get which level (`[auth]` in agent.toml, see
/// src/agent/config.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub operate_roles: BTreeSet<String>,
    pub read_roles: BTreeSet<String>,
    /// Accounts by username or subject: system accounts carry no roles.
    pub operate_accounts: BTreeSet<String>,
    pub read_accounts: BTreeSet<String>,
    /// A token with any of these roles gets nothing, whatever else it has.
    pub deny_roles: BTreeSet<String>,
}

impl Default for Policy {
    /// The platform's: `admin` and `user` operate, `viewer` reads, `guest`
    /// gets nothing; accounts without roles get nothing unless named.
    fn default() -> Self {
        let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        Policy {
            operate_roles: set(&["admin", "user"]),
            read_roles: set(&["viewer"]),
            operate_accounts: BTreeSet::new(),
            read_accounts: BTreeSet::new(),
            deny_roles: set(&["guest"]),
        }
    }
}

impl Policy {
    /// The level of an account; `None`: nothing. Roles not named anywhere
    /// grant nothing.
    pub fn level_for(
        &self,
        subject: &str,
        username: Option<&str>,
        roles: &[String],
    ) -> Option<Level> {
        if roles.iter().any(|r| self.deny_roles.contains(r)) {
            return None;
        }
        let named = |accounts: &BTreeSet<String>| {
            accounts.contains(subject) || username.is_some_and(|u| accounts.contains(u))
        };
        if roles.iter().any(|r| self.operate_roles.contains(r)) || named(&self.operate_accounts) {
            Some(Level::Operate)
        } else if roles.iter().any(|r| self.read_roles.contains(r)) || named(&self.read_accounts) {
            Some(Level::Read)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/pkg.Service/Method` for every rpc of every service in the protos.
    fn methods_in_protos() -> Vec<String> {
        let protos = [
            include_str!("../../proto/mcp/v1/agent.proto"),
            include_str!("../../proto/mcp/v1/files.proto"),
            include_str!("../../proto/mcp/v1/logs.proto"),
            include_str!("../../proto/mcp/v1/secrets.proto"),
        ];
        let mut methods = Vec::new();
        for text in protos {
            // Comments could hold the words service and rpc.
            let code: String = text
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            let package = code
                .split(';')
                .find_map(|s| s.trim().strip_prefix("package "))
                .expect("a package")
                .trim()
                .to_string();
            let mut words = code
                .split(|c: char| c.is_whitespace() || "(){};".contains(c))
                .filter(|w| !w.is_empty());
            let mut service = None;
            while let Some(w) = words.next() {
                match w {
                    "service" => service = words.next().map(str::to_string),
                    "message" | "enum" => service = None,
                    "rpc" => {
                        let s = service.as_ref().expect("an rpc outside a service");
                        let m = words.next().expect("an rpc name");
                        methods.push(format!("/{package}.{s}/{m}"));
                    }
                    _ => {}
                }
            }
        }
        methods
    }

    /// The protos include this build's services: the file list above must
    /// follow build.rs.
    #[test]
    fn every_method_of_every_service_is_in_the_table_and_nothing_else() {
        let build = include_str!("../../build.rs");
        for proto in ["agent.proto", "files.proto", "logs.proto", "secrets.proto"] {
            assert!(build.contains(proto), "{proto} is no longer built");
        }
        assert_eq!(
            build.matches(".proto\"").count(),
            4,
            "build.rs compiles a proto this test does not read"
        );
        let methods = methods_in_protos();
        assert!(
            methods.len() >= 16,
            "the parser missed methods: {methods:?}"
        );
        for m in &methods {
            assert!(
                required_level(m).is_some(),
                "{m} is not in the authorization table"
            );
        }
        for (path, _) in METHODS {
            assert!(
                methods.iter().any(|m| m == path),
                "{path} is in the table but in no proto"
            );
        }
        let unique: BTreeSet<_> = METHODS.iter().map(|(p, _)| p).collect();
        assert_eq!(
            unique.len(),
            METHODS.len(),
            "a method is in the table twice"
        );
    }

    #[test]
    fn the_generated_services_use_the_paths_of_the_table() {
        use crate::proto::{
            agent_server, files_server, logs_server, node_server, secrets_server, specs_server,
        };
        for (name, service) in [
            ("mcp.v1.Agent", agent_server::SERVICE_NAME),
            ("mcp.v1.Files", files_server::SERVICE_NAME),
            ("mcp.v1.Node", node_server::SERVICE_NAME),
            ("mcp.v1.Specs", specs_server::SERVICE_NAME),
            ("mcp.v1.Logs", logs_server::SERVICE_NAME),
            ("mcp.v1.Secrets", secrets_server::SERVICE_NAME),
        ] {
            assert_eq!(name, service);
        }
    }

    fn identity(level: Option<Level>, roles: &[&str]) -> Identity {
        Identity {
            subject: "u-1".into(),
            username: Some("bob".into()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            expires_at: None,
            level,
        }
    }

    #[test]
    fn an_unknown_method_is_refused_even_with_full_rights() {
        for path in [
            "/mcp.v1.Agent/Nope",
            "/mcp.v1.Agent/deploy",
            "/",
            "",
            "/grpc.health.v1.Health/Check",
        ] {
            match authorize(path, identity(Some(Level::Operate), &["admin"])) {
                Err(AuthError::PermissionDenied(m)) => assert!(m.contains("not in"), "{m}"),
                other => panic!("{path}: {other:?}"),
            }
        }
    }

    #[test]
    fn levels_against_methods() {
        let read = identity(Some(Level::Read), &["viewer"]);
        assert!(authorize("/mcp.v1.Agent/ListServices", read.clone()).is_ok());
        assert!(authorize("/mcp.v1.Files/Pull", read.clone()).is_ok());
        // A reader sees which secrets there are, and changes none.
        assert!(authorize("/mcp.v1.Secrets/List", read.clone()).is_ok());
        for path in ["/mcp.v1.Secrets/Set", "/mcp.v1.Secrets/Remove"] {
            assert!(authorize(path, read.clone()).is_err(), "{path}");
        }
        match authorize("/mcp.v1.Agent/Deploy", read) {
            Err(AuthError::PermissionDenied(m)) => assert_eq!(
                m,
                "/mcp.v1.Agent/Deploy needs level operate; bob (roles viewer) has level read only"
            ),
            other => panic!("{other:?}"),
        }
        let none = identity(None, &[]);
        match authorize("/mcp.v1.Agent/ListServices", none) {
            Err(AuthError::PermissionDenied(m)) => {
                assert!(m.ends_with("bob (no roles) has no access"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        let operate = identity(Some(Level::Operate), &[]);
        for (path, _) in METHODS {
            assert!(authorize(path, operate.clone()).is_ok(), "{path}");
        }
    }

    #[test]
    fn the_default_policy_is_the_platforms() {
        let p = Policy::default();
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            p.level_for("u", None, &roles(&["admin"])),
            Some(Level::Operate)
        );
        assert_eq!(
            p.level_for("u", None, &roles(&["user"])),
            Some(Level::Operate)
        );
        assert_eq!(
            p.level_for("u", None, &roles(&["viewer"])),
            Some(Level::Read)
        );
        assert_eq!(
            p.level_for("u", None, &roles(&["viewer", "user"])),
            Some(Level::Operate)
        );
        assert_eq!(p.level_for("u", None, &roles(&["guest"])), None);
        assert_eq!(p.level_for("u", None, &roles(&["user", "guest"])), None);
        assert_eq!(p.level_for("u", None, &roles(&["auditor"])), None);
        assert_eq!(p.level_for("svc", Some("ci"), &[]), None);
    }

    #[test]
    fn system_accounts_by_username_or_subject() {
        let mut p = Policy::default();
        p.operate_accounts.insert("ci-deployer".into());
        p.read_accounts.insert("0b5e-monitor".into());
        assert_eq!(
            p.level_for("0a1f", Some("ci-deployer"), &[]),
            Some(Level::Operate)
        );
        assert_eq!(p.level_for("ci-deployer", None, &[]), Some(Level::Operate));
        assert_eq!(
            p.level_for("0b5e-monitor", Some("monitor"), &[]),
            Some(Level::Read)
        );
        assert_eq!(p.level_for("0c00", Some("someone"), &[]), None);
        // A deny role wins over a name.
        assert_eq!(
            p.level_for("0a1f", Some("ci-deployer"), &["guest".to_string()]),
            None
        );
    }
}
