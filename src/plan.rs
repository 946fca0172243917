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

/// What deploying `local` over `deployed` would change, restricted to
/// `only` when given.
pub fn diff(deployed: &[ComponentDef], local: &ServiceDef, only: Option<&Name>) -> Vec<Change> {
    let mut changes = Vec::new();
    let wanted = |name: &Name| only.is_none_or(|o| o == name);
    for new in local.components.iter().filter(|c| wanted(&c.name)) {
        let Some(old) = deployed.iter().find(|d| d.name == new.name) else {
            changes.push(Change {
                component: new.name.to_string(),
                field: "component".into(),
                deployed: "-".into(),
                local: format!("new ({})", new.image),
            });
            continue;
        };
        let component = new.name.to_string();
        let mut field = |name: &str, old: String, new: String| {
            if old != new {
                changes.push(Change {
                    component: component.clone(),
                    field: name.to_string(),
                    deployed: old,
                    local: new,
                });
            }
        };
        // Field order as in the definition file.
        field("image", show(&old.image), show(&new.image));
        field("restart", show(&old.restart), show(&new.restart));
        field("ports", show(&old.ports), show(&new.ports));
        field("volumes", show(&old.volumes), show(&new.volumes));
        field("env", show(&old.env), show(&new.env));
        field("cmd", show(&old.cmd), show(&new.cmd));
        field("network", show(&old.network), show(&new.network));
        field("user", show(&old.user), show(&new.user));
        field("health", show(&old.health), show(&new.health));
    }
    for gone in deployed
        .iter()
        .filter(|d| wanted(&d.name) && local.component(&d.name).is_none())
    {
        changes.push(Change {
            component: gone.name.to_string(),
            field: "component".into(),
            deployed: gone.image.to_string(),
            local: "not in the definition (left running)".into(),
        });
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
        let changes = diff(&old.components, &new, None);
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
        assert_eq!(changes[0].deployed, "img:1");
        assert_eq!(changes[0].local, "img:2");
        assert!(diff(&new.components, &new, None).is_empty());
        let app = Name::parse("app").unwrap();
        assert_eq!(diff(&old.components, &new, Some(&app)).len(), 2);
    }
}
