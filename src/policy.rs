//! The node's policy for definitions (`agent.toml` `[policy]`): what a
//! holder of a token may make this node mount and join. The agent checks
//! every definition against it on deploy, sync and adopt, before anything
//! touches the runtime, and the plan shows the refusals first.
//!
//! - A host path in `volumes` must lie under the service's own directory
//!   (`<srv-root>/<service>/`) or under one of `volume_roots`. Paths are
//!   compared after resolving symlinks (the longest existing prefix), so a
//!   link planted inside an allowed directory does not lead out of it.
//! - The agent's state directory, its TLS files and its config file are
//!   never mountable, nor any directory that holds them, whatever the
//!   policy says.
//! - The volume options that change the host path (`U`: chown, `Z`: private
//!   SELinux label) only apply under the service's own directory.
//! - `network = "host"` needs `allow_host_network = true`.
//! - With `require_pinned_images = true`, an image needs a tag other than
//!   `latest`, or a digest: what runs then changes only with the definition.
//! - Each capability in `cap_add` must be listed in `allow_caps` (none by
//!   default): an added capability widens what the container may do to the
//!   node's kernel. Dropping capabilities is always allowed.
//!
//! Named volumes are podman's own storage and always allowed.

use std::path::{Component, Path, PathBuf};

use crate::names::Name;
use crate::spec::{ComponentDef, ServiceDef};

#[derive(Debug, Clone, Default)]
pub struct NodePolicy {
    /// `--srv-root`: service directories are `<srv_root>/<service>`.
    pub srv_root: PathBuf,
    /// `[policy] volume_roots`: host directories any service may mount from.
    pub volume_roots: Vec<PathBuf>,
    /// `[policy] allow_host_network`.
    pub allow_host_network: bool,
    /// `[policy] require_pinned_images`.
    pub require_pinned_images: bool,
    /// `[policy] allow_caps`, canonical (`CAP_NET_ADMIN`).
    pub allow_caps: Vec<String>,
    /// Never mountable: the state directory, TLS files, config file.
    pub protected: Vec<PathBuf>,
}

/// One field of one component that the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub component: String,
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "component {}: {}: {}",
            self.component, self.field, self.message
        )
    }
}

/// Every refusal of a definition, as one message.
pub fn describe(refusals: &[Refusal]) -> String {
    let lines: Vec<String> = refusals.iter().map(Refusal::to_string).collect();
    format!("refused by this node's policy: {}", lines.join("; "))
}

/// `path` with symlinks resolved as far as it exists; the rest appended.
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Lexically clean: no `.` and no empty components (the spec already
/// refuses `..`).
fn clean(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

impl NodePolicy {
    /// Every refusal of `def`; empty when the policy allows it.
    pub fn check(&self, def: &ServiceDef) -> Vec<Refusal> {
        def.components
            .iter()
            .flat_map(|c| self.check_component(&def.name, c))
            .collect()
    }

    /// The service's own directory, symlinks in the srv root resolved but
    /// not in the service's entry itself (a symlink there is no service
    /// directory: file transfers refuse it too).
    fn own_dir(&self, service: &Name) -> PathBuf {
        resolve(&self.srv_root).join(service.as_str())
    }

    pub fn check_component(&self, service: &Name, c: &ComponentDef) -> Vec<Refusal> {
        let mut refusals = Vec::new();
        let mut refuse = |field: &'static str, message: String| {
            refusals.push(Refusal {
                component: c.name.to_string(),
                field,
                message,
            })
        };
        if c.network.as_ref().is_some_and(|n| n.as_str() == "host") && !self.allow_host_network {
            refuse(
                "network",
                "\"host\" gives the container the node's own network stack; \
                 set [policy] allow_host_network = true in the agent's config to allow it"
                    .to_string(),
            );
        }
        if let Some(why) = c.image.unpinned().filter(|_| self.require_pinned_images) {
            refuse(
                "image",
                format!(
                    "{} {why}, and this node runs only pinned images: give it a version tag \
                     or a digest (or set [policy] require_pinned_images = false)",
                    c.image
                ),
            );
        }
        for cap in &c.cap_add {
            let canonical = cap.canonical();
            if !self.allow_caps.contains(&canonical) {
                refuse(
                    "cap_add",
                    format!(
                        "{canonical} is not in this node's allow_caps; add \"{}\" to [policy] \
                         allow_caps in the agent's config to allow it",
                        canonical.trim_start_matches("CAP_")
                    ),
                );
            }
        }
        let own = self.own_dir(service);
        let own_is_link = std::fs::symlink_metadata(&own).is_ok_and(|m| m.file_type().is_symlink());
        for v in &c.volumes {
            let Some(source) = v.host_path() else {
                continue;
            };
            let resolved = resolve(&clean(source));
            if let Some(p) = self
                .protected
                .iter()
                .map(|p| resolve(p))
                .find(|p| resolved.starts_with(p) || p.starts_with(&resolved))
            {
                refuse(
                    "volumes",
                    format!(
                        "{} would expose {}, which holds the agent's own secrets (state, TLS \
                         or config) and is never mountable",
                        source.display(),
                        p.display()
                    ),
                );
                continue;
            }
            let in_own = !own_is_link && resolved.starts_with(&own);
            let in_root = self
                .volume_roots
                .iter()
                .any(|r| resolved.starts_with(resolve(r)));
            if !in_own && !in_root {
                refuse(
                    "volumes",
                    format!(
                        "host path {} is outside the service's directory {}/ and every \
                         volume root; add a directory that holds it to [policy] volume_roots \
                         in the agent's config to allow it",
                        source.display(),
                        own.display()
                    ),
                );
                continue;
            }
            for option in v.host_changing_options() {
                if !in_own {
                    refuse(
                        "volumes",
                        format!(
                            "option {option} on {} changes the host path ({}); it is allowed \
                             only under the service's own directory {}/, and no policy key \
                             allows it elsewhere",
                            source.display(),
                            if option == "U" {
                                "chown"
                            } else {
                                "SELinux relabel"
                            },
                            own.display()
                        ),
                    );
                }
            }
        }
        refusals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Node {
        _dir: tempfile::TempDir,
        root: PathBuf,
        policy: NodePolicy,
    }

    /// srv root with service `svc`, a shared root, the state directory
    /// inside the srv root (as by default), and a link out of svc's dir.
    fn node() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let srv = root.join("srv");
        for d in [
            "srv/svc/data",
            "srv/mcp/tls",
            "srv/other",
            "shared/media",
            "etc",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::os::unix::fs::symlink(root.join("shared"), srv.join("svc/escape")).unwrap();
        let policy = NodePolicy {
            srv_root: srv.clone(),
            volume_roots: Vec::new(),
            allow_host_network: false,
            require_pinned_images: false,
            allow_caps: Vec::new(),
            protected: vec![srv.join("mcp"), root.join("etc/agent.toml")],
        };
        Node {
            _dir: dir,
            root,
            policy,
        }
    }

    fn component(volume: &str, network: Option<&str>) -> ComponentDef {
        let mut toml = format!("name = \"api\"\nimage = \"img:1\"\nvolumes = [\"{volume}\"]\n");
        if let Some(n) = network {
            toml.push_str(&format!("network = \"{n}\"\n"));
        }
        toml::from_str(&toml).unwrap()
    }

    fn refusals(n: &Node, volume: &str, network: Option<&str>) -> Vec<String> {
        let svc = Name::parse("svc").unwrap();
        n.policy
            .check_component(&svc, &component(volume, network))
            .iter()
            .map(Refusal::to_string)
            .collect()
    }

    #[test]
    fn the_default_policy_allows_only_the_service_directory() {
        let n = node();
        let r = n.root.display().to_string();
        assert!(refusals(&n, &format!("{r}/srv/svc:/data"), None).is_empty());
        assert!(refusals(&n, &format!("{r}/srv/svc/data/new:/data:U"), None).is_empty());
        assert!(refusals(&n, "named:/data", None).is_empty());
        for (volume, says) in [
            ("/:/host".to_string(), "never mountable"),
            (format!("{r}/srv/other:/x"), "[policy] volume_roots"),
            (format!("{r}/srv/svc/escape:/x"), "[policy] volume_roots"),
            (format!("{r}/srv/mcp:/state"), "never mountable"),
            (format!("{r}/srv/mcp/tls:/tls"), "never mountable"),
            (format!("{r}/srv:/srv"), "never mountable"),
            (format!("{r}/etc:/etc"), "never mountable"),
            (format!("{r}/srv/./svc/../mcp:/x"), "never mountable"),
        ] {
            let volume = volume.replace("/svc/../", "/");
            let got = refusals(&n, &volume, None);
            assert_eq!(got.len(), 1, "{volume}: {got:?}");
            assert!(got[0].contains(says), "{volume}: {got:?}");
            assert!(got[0].starts_with("component api: volumes: "), "{got:?}");
        }
        let got = refusals(&n, "named:/data", Some("host"));
        assert!(got[0].contains("allow_host_network = true"), "{got:?}");
    }

    #[test]
    fn volume_roots_and_host_network_when_the_policy_allows_them() {
        let mut n = node();
        let r = n.root.display().to_string();
        n.policy.volume_roots = vec![n.root.join("shared"), PathBuf::from("/")];
        n.policy.allow_host_network = true;
        assert!(refusals(&n, &format!("{r}/shared/media:/m:ro"), Some("host")).is_empty());
        // `/` holds the state directory: still refused.
        assert!(refusals(&n, "/:/host", None)[0].contains("never mountable"));
        assert!(refusals(&n, &format!("{r}/srv/mcp:/s"), None)[0].contains("never mountable"));
        // U outside the service's own directory: no key allows it.
        let got = refusals(&n, &format!("{r}/shared/media:/m:U"), None);
        assert!(got[0].contains("no policy key"), "{got:?}");
    }

    #[test]
    fn cap_add_needs_allow_caps_and_cap_drop_needs_nothing() {
        let mut n = node();
        let svc = Name::parse("svc").unwrap();
        let c: ComponentDef = toml::from_str(
            "name = \"api\"\nimage = \"img:1\"\ncap_drop = [\"ALL\"]\n\
             cap_add = [\"net_admin\", \"CAP_NET_BIND_SERVICE\"]\n",
        )
        .unwrap();
        let got: Vec<String> = n
            .policy
            .check_component(&svc, &c)
            .iter()
            .map(Refusal::to_string)
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].starts_with("component api: cap_add: CAP_NET_ADMIN is not in")
                && got[0].contains("allow_caps")
                && got[0].contains("\"NET_ADMIN\""),
            "{got:?}"
        );
        n.policy.allow_caps = vec!["CAP_NET_BIND_SERVICE".into()];
        let got = n.policy.check_component(&svc, &c);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].field, "cap_add");
        n.policy.allow_caps.push("CAP_NET_ADMIN".into());
        assert!(n.policy.check_component(&svc, &c).is_empty());
    }
}
