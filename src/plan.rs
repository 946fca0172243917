//! A deploy's plan: what deploying a definition would change against what a
//! node has deployed, field by field. The agent computes it (it knows the
//! deployed specs and its policy); `mcp diff` and `mcp deploy` print it.

use serde::Serialize;

use crate::names::Name;
use crate::spec::{ComponentDef, ServiceDef};

/// One difference between what runs and what the definition says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub component: String,
    /// A field name, or `component` for a component added or gone.
    pub field: String,
    pub deployed: String,
    pub local: String,
}

fn show<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Null) => "-".to_string(),
        Ok(serde_json::Value::String(s)) => s,
        Ok(v) => v.to_string(),
        Err(_) => "?".to_string(),
    }
}

/// What a node has of a service: its `active`, and each component's
/// deployed spec and, when it has not passed its checks, why.
#[derive(Debug, Clone, Default)]
pub struct Deployed {
    /// None: the node does not know the service.
    pub active: Option<bool>,
    pub components: Vec<DeployedComponent>,
}

#[derive(Debug, Clone)]
pub struct DeployedComponent {
    pub spec: ComponentDef,
    /// Why the deployed spec is not verified (an interrupted deploy, a
    /// failed health check kept); None when it is.
    pub unverified: Option<String>,
    /// Undeployed: desired stopped and no container.
    pub undeployed: bool,
    /// The id of the image its container was created from, when known.
    pub image_id: Option<String>,
}

impl Deployed {
    /// Only deployed specs, all verified (tests, and nodes that know no more).
    pub fn verified(specs: &[ComponentDef]) -> Self {
        Deployed {
            active: None,
            components: specs
                .iter()
                .map(|spec| DeployedComponent {
                    spec: spec.clone(),
                    unverified: None,
                    undeployed: false,
                    image_id: None,
                })
                .collect(),
        }
    }
}

/// `sha256:0123456789abcdef...` as `0123456789ab`.
fn short_id(id: &str) -> String {
    id.strip_prefix("sha256:")
        .unwrap_or(id)
        .chars()
        .take(12)
        .collect()
}

/// The fields of a spec, as written in a definition, in its order.
fn fields(spec: &ComponentDef) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(spec) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

/// What deploying `local` over `deployed` would change, restricted to
/// `only` when given: the service's `active`, each field that differs (in
/// definition order), components new or gone, and components whose deployed
/// spec is unverified (a deploy checks them again, even unchanged). Gone
/// components are undeployed by the deploy unless `keep_removed`.
/// `images_now` maps image references to the ids they name on the node
/// now: a tag that names another image than the container's is a change.
pub fn plan(
    deployed: &Deployed,
    local: &ServiceDef,
    only: Option<&Name>,
    keep_removed: bool,
    images_now: &std::collections::BTreeMap<String, String>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    if let Some(active) = deployed.active.filter(|a| *a != local.active) {
        changes.push(Change {
            component: String::new(),
            field: "active".into(),
            deployed: active.to_string(),
            local: local.active.to_string(),
        });
    }
    let wanted = |name: &Name| only.is_none_or(|o| o == name);
    for new in local.components.iter().filter(|c| wanted(&c.name)) {
        match deployed.components.iter().find(|d| d.spec.name == new.name) {
            Some(old) => changes.extend(component_changes(old, new, images_now)),
            None => changes.push(Change {
                component: new.name.to_string(),
                field: "component".into(),
                deployed: "-".into(),
                local: format!("new ({})", new.image),
            }),
        }
    }
    let fate = if keep_removed {
        "not in the definition (kept: --keep-removed)"
    } else {
        "removed: undeployed by the deploy"
    };
    for gone in deployed
        .components
        .iter()
        .filter(|d| only.is_none() && !d.undeployed && local.component(&d.spec.name).is_none())
    {
        changes.push(Change {
            component: gone.spec.name.to_string(),
            field: "component".into(),
            deployed: gone.spec.image.to_string(),
            local: fate.into(),
        });
    }
    changes
}

/// What changes for a component the node has: each field that differs, a
/// tag that now names another image, a spec that was not verified.
fn component_changes(
    old: &DeployedComponent,
    new: &ComponentDef,
    images_now: &std::collections::BTreeMap<String, String>,
) -> Vec<Change> {
    let component = new.name.to_string();
    let change = |field: &str, deployed: String, local: String| Change {
        component: component.clone(),
        field: field.to_string(),
        deployed,
        local,
    };
    let (before, after) = (fields(&old.spec), fields(new));
    let keys = after
        .keys()
        .chain(before.keys().filter(|k| !after.contains_key(*k)))
        .filter(|k| k.as_str() != "name");
    let mut changes: Vec<Change> = keys
        .filter_map(|key| {
            let (was, will) = (before.get(key), after.get(key));
            (was != will).then(|| change(key, show(&was), show(&will)))
        })
        .collect();
    let moved = old
        .image_id
        .as_ref()
        .zip(images_now.get(new.image.as_str()))
        .filter(|(was, now)| was != now && old.spec.image == new.image);
    if let Some((was, now)) = moved {
        changes.push(change(
            "image id",
            short_id(was),
            format!("{} (the tag now names another image)", short_id(now)),
        ));
    }
    if let Some(why) = &old.unverified {
        changes.push(change(
            "verified",
            format!("no: {why}"),
            "checked again by the deploy".into(),
        ));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn def(text: &str) -> ServiceDef {
        crate::spec::parse_service(Path::new("web.toml"), text).unwrap()
    }

    #[test]
    fn image_env_and_components() {
        let old = def("name = \"web\"\nnode = \"n1\"\n[[components]]\nname = \"app\"\nimage = \"img:1\"\n[[components]]\nname = \"gone\"\nimage = \"x:1\"\n");
        let new = def("name = \"web\"\nnode = \"n1\"\n[[components]]\nname = \"app\"\nimage = \"img:2\"\nenv = { A = \"1\" }\n[[components]]\nname = \"fresh\"\nimage = \"y:1\"\n");
        let changes = plan(
            &Deployed::verified(&old.components),
            &new,
            None,
            false,
            &Default::default(),
        );
        let summary: Vec<(&str, &str)> = changes
            .iter()
            .map(|c| (c.component.as_str(), c.field.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("app", "image"),
                ("app", "env"),
                ("fresh", "component"),
                ("gone", "component")
            ]
        );
        assert_eq!(changes[3].local, "removed: undeployed by the deploy");
        assert_eq!(changes[0].deployed, "img:1");
        assert_eq!(changes[0].local, "img:2");
        assert!(plan(
            &Deployed::verified(&new.components),
            &new,
            None,
            false,
            &Default::default()
        )
        .is_empty());
        let app = Name::parse("app").unwrap();
        assert_eq!(
            plan(
                &Deployed::verified(&old.components),
                &new,
                Some(&app),
                false,
                &Default::default()
            )
            .len(),
            2
        );
    }

    #[test]
    fn removed_components_are_kept_on_request_and_undeployed_ones_are_no_change() {
        let old = def("name = \"web\"\nnode = \"n1\"\n[[components]]\nname = \"app\"\nimage = \"img:1\"\n[[components]]\nname = \"gone\"\nimage = \"x:1\"\n");
        let new = def(
            "name = \"web\"\nnode = \"n1\"\n[[components]]\nname = \"app\"\nimage = \"img:1\"\n",
        );
        let mut deployed = Deployed::verified(&old.components);
        let kept = plan(&deployed, &new, None, true, &Default::default());
        assert_eq!(kept.len(), 1);
        assert!(kept[0].local.contains("kept"), "{kept:?}");
        deployed.components[1].undeployed = true;
        assert!(plan(&deployed, &new, None, false, &Default::default()).is_empty());
    }

    #[test]
    fn a_tag_that_names_another_image_is_a_change() {
        let local = def(
            "name = \"web\"\nnode = \"n1\"\n[[components]]\nname = \"app\"\nimage = \"img:1\"\n",
        );
        let mut deployed = Deployed::verified(&local.components);
        deployed.components[0].image_id = Some("sha256:aaaaaaaaaaaaaaaa".into());
        let mut now = std::collections::BTreeMap::new();
        now.insert("img:1".to_string(), "sha256:aaaaaaaaaaaaaaaa".to_string());
        assert!(plan(&deployed, &local, None, false, &now).is_empty());
        now.insert("img:1".to_string(), "sha256:bbbbbbbbbbbbbbbb".to_string());
        let changes = plan(&deployed, &local, None, false, &now);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].field, "image id");
        assert_eq!(changes[0].deployed, "aaaaaaaaaaaa");
        assert!(changes[0].local.starts_with("bbbbbbbbbbbb"));
    }

    #[test]
    fn active_and_unverified_components_are_changes() {
        let local = def("name = \"web\"\nnode = \"n1\"\nactive = false\n[[components]]\nname = \"app\"\nimage = \"img:1\"\n");
        let mut deployed = Deployed::verified(&local.components);
        assert!(plan(&deployed, &local, None, false, &Default::default()).is_empty());
        deployed.active = Some(true);
        deployed.components[0].unverified = Some("interrupted".into());
        let changes = plan(&deployed, &local, None, false, &Default::default());
        let summary: Vec<(&str, &str, &str)> = changes
            .iter()
            .map(|c| (c.component.as_str(), c.field.as_str(), c.local.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("", "active", "false"),
                ("app", "verified", "checked again by the deploy")
            ]
        );
    }

    #[test]
    fn resources_and_hardening_are_plan_changes() {
        let base =
            "name = \"web\"\nnode = \"n1\"\n[[components]]\nname = \"app\"\nimage = \"img:1\"\n";
        let old = def(&format!("{base}memory = \"512M\"\ncpus = 1.5\n"));
        let new = def(&format!(
            "{base}memory = \"1G\"\ncpus = 1.5\ncap_add = [\"NET_RAW\"]\nread_only = true\n"
        ));
        let changes = plan(
            &Deployed::verified(&old.components),
            &new,
            None,
            false,
            &Default::default(),
        );
        let summary: Vec<(&str, &str, &str)> = changes
            .iter()
            .map(|c| (c.field.as_str(), c.deployed.as_str(), c.local.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("read_only", "-", "true"),
                ("memory", "512M", "1G"),
                ("cap_add", "-", "[\"NET_RAW\"]"),
            ]
        );
        // The same definition again plans nothing.
        assert!(plan(
            &Deployed::verified(&new.components),
            &new,
            None,
            false,
            &Default::default()
        )
        .is_empty());
    }
}
