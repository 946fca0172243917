//! `mcp deploy` (with its plan), `mcp diff` and `mcp rollback`. The plan
//! compares the local definition with the spec the agent has deployed
//! (`Specs.Export`), component by component, before anything runs.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use serde::Serialize;

use super::files::{channel, AuthedChannel};
use super::output::{self, OutputFormat};
use super::{client, report, Context};
use crate::grpc::convert::{service_from_proto, service_to_proto};
use crate::names::{Name, Target};
use crate::proto;
use crate::proto::specs_client::SpecsClient;
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

/// The agent's deployed specs of `service` (empty when it has none).
async fn deployed_specs(
    channel: AuthedChannel,
    node: &Name,
    service: &Name,
) -> Result<Vec<ComponentDef>> {
    let mut specs = SpecsClient::new(channel);
    let answer = specs
        .export(proto::ExportRequest {
            service: service.to_string(),
        })
        .await;
    let answer = match answer {
        Ok(a) => a.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(Vec::new()),
        Err(s) => return Err(client::describe_status(node, &s)),
    };
    let Some(spec) = answer.service else {
        return Ok(Vec::new());
    };
    let def = service_from_proto(spec)
        .map_err(|e| anyhow!("node {node}: the agent's spec is not valid: {e}"))?;
    Ok(def
        .components
        .into_iter()
        .filter(|c| !answer.undeployed.contains(&c.name.to_string()))
        .collect())
}

fn plan_table(changes: &[Change], def: &ServiceDef) -> comfy_table::Table {
    let mut t = output::table(&["component", "field", "deployed", "definition"]);
    for c in changes {
        t.add_row(vec![
            format!("{}/{}/{}", def.node, def.name, c.component),
            c.field.clone(),
            c.deployed.clone(),
            c.local.clone(),
        ]);
    }
    t
}

/// The plan on stderr, so that stdout stays the deploy's result.
fn print_plan(changes: &[Change], def: &ServiceDef) {
    if changes.is_empty() {
        eprintln!("{}/{}: no change from what is deployed", def.node, def.name);
    } else {
        eprintln!("plan:\n{}", plan_table(changes, def));
    }
}

/// `mcp diff SVC[/COMP]`.
pub(super) async fn run_diff(cx: &Context, def: ServiceDef, target: Target) -> Result<ExitCode> {
    let deployed = deployed_specs(channel(cx, &def.node).await?, &def.node, &def.name).await?;
    let changes = diff(&deployed, &def, target.component.as_ref());
    if cx.format == OutputFormat::Json {
        output::print_json(&changes)?;
    } else if changes.is_empty() {
        println!("{}/{}: no change from what is deployed", def.node, def.name);
    } else {
        println!("{}", plan_table(&changes, &def));
    }
    Ok(ExitCode::SUCCESS)
}

/// `mcp deploy SVC[/COMP] [--dry-run] [--no-rollback]`: the plan first (on
/// stderr, so stdout stays the result), then the deploy.
/// The switches of `mcp deploy`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeployOptions {
    pub dry_run: bool,
    pub no_rollback: bool,
    pub force: bool,
}

pub(super) async fn run_deploy(
    cx: &Context,
    def: ServiceDef,
    target: Target,
    options: DeployOptions,
) -> Result<ExitCode> {
    // One connection for the plan and the deploy.
    let agent = channel(cx, &def.node).await?;
    let deployed = deployed_specs(agent.clone(), &def.node, &def.name).await?;
    let changes = diff(&deployed, &def, target.component.as_ref());
    if options.dry_run {
        // The plan is the output.
        if cx.format == OutputFormat::Json {
            output::print_json(&changes)?;
        } else {
            print_plan(&changes, &def);
            eprintln!("dry run: nothing was deployed");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if cx.format == OutputFormat::Table {
        print_plan(&changes, &def);
    }
    let mut client = crate::proto::agent_client::AgentClient::new(agent)
        .max_decoding_message_size(crate::grpc::MAX_MESSAGE_BYTES);
    let request = proto::DeployRequest {
        service: Some(service_to_proto(&def)),
        component: target
            .component
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        no_rollback: options.no_rollback,
        force: options.force,
    };
    let response = if cx.format == OutputFormat::Table && std::io::stderr().is_terminal() {
        with_progress(&mut client, request, &def, target.component.as_ref()).await?
    } else {
        client
            .deploy(request)
            .await
            .map_err(|s| client::describe_status(&def.node, &s))?
            .into_inner()
    };
    report(cx, def.node.as_str(), &response.service, &response.results)
}

/// The deploy with one live line per component (pulling, replacing,
/// starting, checking health, ...) on the terminal.
async fn with_progress(
    client: &mut client::Client,
    request: proto::DeployRequest,
    def: &ServiceDef,
    only: Option<&Name>,
) -> Result<proto::DeployResponse> {
    use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
    use proto::deploy_progress::Update;
    let lines = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} {prefix:<28} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bars: Vec<(String, ProgressBar)> = def
        .components
        .iter()
        .filter(|c| only.is_none_or(|o| o == &c.name))
        .map(|c| {
            let bar = lines.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(format!("{}/{}/{}", def.node, def.name, c.name));
            bar.set_message("waiting");
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            (c.name.to_string(), bar)
        })
        .collect();
    let bar_of = |component: &str| bars.iter().find(|(n, _)| n == component).map(|(_, b)| b);
    let mut updates = client
        .deploy_watch(request)
        .await
        .map_err(|s| client::describe_status(&def.node, &s))?
        .into_inner();
    while let Some(update) = updates
        .message()
        .await
        .map_err(|s| client::describe_status(&def.node, &s))?
    {
        match update.update {
            Some(Update::Step(step)) => {
                if let Some(bar) = bar_of(&step.component) {
                    bar.set_message(format!("{} {}", step.phase, step.detail));
                }
            }
            Some(Update::Done(done)) => {
                for r in &done.results {
                    if let Some(bar) = bar_of(&r.component) {
                        let mark = if r.ok { "done" } else { "FAILED" };
                        bar.finish_with_message(format!("{mark}: {}", r.detail));
                    }
                }
                let failed = done.results.iter().filter(|r| !r.ok).count();
                eprintln!(
                    "{} of {} component(s) deployed{}",
                    done.results.len() - failed,
                    done.results.len(),
                    if failed > 0 {
                        format!(", {failed} failed")
                    } else {
                        String::new()
                    }
                );
                return Ok(done);
            }
            None => {}
        }
    }
    Err(anyhow!(
        "node {}: the deploy stream ended without a result",
        def.node
    ))
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
