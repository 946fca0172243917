//! `mcp sync --apply [--dry-run] [--yes]`: the whole set of local
//! definitions made true on every node. For each node, the plan first (new
//! definitions deployed, changed ones redeployed, definitions gone from
//! the workstation undeployed), printed for all nodes; then, with `--yes`
//! or a confirmation on a terminal, applied: nodes concurrently, and the
//! services of a node concurrently (each through its own actor there).
//! A deploy of a changed service keeps its unchanged components' containers.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use futures::future::join_all;
use serde::Serialize;

use super::client;
use super::context::{exit_code, Context};
use super::deploy::{deploy_request, DeployOptions};
use super::output::{self, OutputFormat};
use crate::names::{Name, Target};
use crate::proto;
use crate::spec::ServiceDef;

/// What applying does to one service.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    /// The node does not have it.
    Create,
    /// What would change, as `mcp diff` shows it.
    Change(Vec<proto::PlanChange>),
    /// No local definition: its containers go, its history and files stay.
    Undeploy,
    /// The node's policy refuses the definition: not applied.
    Refused(Vec<String>),
}

#[derive(Debug, Clone, Serialize)]
struct Step {
    service: String,
    action: Action,
    #[serde(skip)]
    def: Option<ServiceDef>,
}

#[derive(Debug, Serialize)]
struct NodePlan {
    node: String,
    steps: Vec<Step>,
    /// Why the node could not be planned (it is then not applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Outcome {
    node: String,
    service: String,
    ok: bool,
    results: Vec<proto::ComponentResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Whether anything of a listed service is still deployed.
fn deployed(s: &proto::ServiceStatus) -> bool {
    s.components
        .iter()
        .any(|c| c.desired_state == "running" || !c.container_id.is_empty())
}

async fn plan_node(cx: &Context, node: &Name, defs: Vec<ServiceDef>) -> Result<Vec<Step>> {
    let mut client = cx.client(node).await?;
    let listed = client
        .list_services(proto::ListServicesRequest {})
        .await
        .map_err(|s| client::describe_status(node, &s))?
        .into_inner();
    let mut steps = Vec::new();
    for s in listed.services.iter().filter(|s| deployed(s)) {
        if !defs.iter().any(|d| d.name.as_str() == s.name) {
            steps.push(Step {
                service: s.name.clone(),
                action: Action::Undeploy,
                def: None,
            });
        }
    }
    for def in defs {
        let known = listed.services.iter().any(|s| s.name == def.name.as_str());
        let target = Target {
            service: def.name.clone(),
            component: None,
        };
        let request = deploy_request(&def, &target, &DeployOptions::default());
        let plan = client
            .plan(request)
            .await
            .map_err(|s| client::describe_status(node, &s))?
            .into_inner();
        let action = if !plan.refusals.is_empty() {
            Action::Refused(plan.refusals)
        } else if !known {
            Action::Create
        } else if plan.changes.is_empty() {
            continue;
        } else {
            Action::Change(plan.changes)
        };
        steps.push(Step {
            service: def.name.to_string(),
            action,
            def: Some(def),
        });
    }
    steps.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(steps)
}

fn print_plans(plans: &[NodePlan]) {
    let mut t = output::table(&["service", "action", "detail"]);
    for p in plans {
        if let Some(e) = &p.error {
            t.add_row(vec![p.node.clone(), "UNREACHABLE".into(), e.clone()]);
        }
        for s in &p.steps {
            let (action, detail) = match &s.action {
                Action::Create => ("create".to_string(), "new on this node".to_string()),
                Action::Change(changes) => {
                    let what: Vec<String> = changes
                        .iter()
                        .map(|c| {
                            let at = if c.component.is_empty() {
                                String::new()
                            } else {
                                format!("{}: ", c.component)
                            };
                            format!("{at}{} {} -> {}", c.field, c.deployed, c.local)
                        })
                        .collect();
                    ("change".to_string(), what.join("; "))
                }
                Action::Undeploy => (
                    "undeploy".to_string(),
                    "no local definition: containers removed, history and files kept".to_string(),
                ),
                Action::Refused(why) => ("REFUSED".to_string(), why.join("; ")),
            };
            t.add_row(vec![format!("{}/{}", p.node, s.service), action, detail]);
        }
    }
    let nothing = plans
        .iter()
        .all(|p| p.steps.is_empty() && p.error.is_none());
    if nothing {
        eprintln!("every node already runs what the definitions say");
    } else {
        eprintln!("plan:\n{t}");
    }
}

/// Asks on the terminal; anything but y/yes is a no.
fn confirmed() -> Result<bool> {
    use std::io::Write;
    eprint!("apply this plan? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

async fn apply_step(cx: &Context, node: &Name, step: &Step) -> Outcome {
    let done = async {
        let mut client = cx.client(node).await?;
        let response = match (&step.action, &step.def) {
            (Action::Undeploy, _) => {
                client
                    .undeploy(proto::LifecycleRequest {
                        service: step.service.clone(),
                        component: String::new(),
                    })
                    .await
                    .map_err(|s| client::describe_status(node, &s))?
                    .into_inner()
                    .results
            }
            (Action::Create | Action::Change(_), Some(def)) => {
                let target = Target {
                    service: def.name.clone(),
                    component: None,
                };
                let request = deploy_request(def, &target, &DeployOptions::default());
                client
                    .deploy(request)
                    .await
                    .map_err(|s| client::describe_status(node, &s))?
                    .into_inner()
                    .results
            }
            _ => anyhow::bail!("refused by the node's policy: not applied"),
        };
        Ok::<_, anyhow::Error>(response)
    }
    .await;
    match done {
        Ok(results) => Outcome {
            node: node.to_string(),
            service: step.service.clone(),
            ok: results.iter().all(|r| r.ok),
            results,
            error: None,
        },
        Err(e) => Outcome {
            node: node.to_string(),
            service: step.service.clone(),
            ok: false,
            results: Vec::new(),
            error: Some(format!("{e:#}")),
        },
    }
}

fn print_outcomes(outcomes: &[Outcome]) -> Result<()> {
    let mut t = output::table(&["component", "result", "state", "detail"]);
    for o in outcomes {
        if let Some(e) = &o.error {
            t.add_row(vec![
                format!("{}/{}", o.node, o.service),
                "FAILED".into(),
                "-".into(),
                e.clone(),
            ]);
        }
        for r in &o.results {
            t.add_row(vec![
                format!("{}/{}/{}", o.node, o.service, r.component),
                if r.ok { "ok" } else { "FAILED" }.to_string(),
                r.observed_state.clone(),
                r.detail.clone(),
            ]);
        }
    }
    println!("{t}");
    Ok(())
}

/// Each node's definitions; every configured node is there, so a node whose
/// last definition was deleted gets its services undeployed.
fn definitions_by_node(cx: &Context) -> Result<BTreeMap<Name, Vec<ServiceDef>>> {
    let mut by_node: BTreeMap<Name, Vec<ServiceDef>> = cx
        .all_nodes()
        .into_iter()
        .map(|n| (n, Vec::new()))
        .collect();
    for def in super::config::load_all_definitions(&cx.paths)? {
        let Some(list) = by_node.get_mut(&def.node) else {
            anyhow::bail!(
                "service {} names node {}, which is not in {}",
                def.name,
                def.node,
                cx.paths.config.display()
            );
        };
        list.push(def);
    }
    Ok(by_node)
}

/// Every node's plan, planned concurrently; a node that cannot be asked
/// carries its error.
async fn plan_all(cx: &Context, by_node: BTreeMap<Name, Vec<ServiceDef>>) -> Vec<NodePlan> {
    join_all(by_node.into_iter().map(|(node, defs)| async move {
        match plan_node(cx, &node, defs).await {
            Ok(steps) => NodePlan {
                node: node.to_string(),
                steps,
                error: None,
            },
            Err(e) => NodePlan {
                node: node.to_string(),
                steps: Vec::new(),
                error: Some(format!("{e:#}")),
            },
        }
    }))
    .await
}

/// Every step of every node, nodes and their services concurrently.
async fn apply_all(cx: &Context, plans: &[NodePlan]) -> Vec<Outcome> {
    join_all(plans.iter().map(|p| async move {
        match Name::parse(&p.node) {
            Ok(node) => join_all(p.steps.iter().map(|s| apply_step(cx, &node, s))).await,
            Err(_) => Vec::new(),
        }
    }))
    .await
    .into_iter()
    .flatten()
    .collect()
}

/// `--yes`, else a `y` on the terminal; refused without a terminal.
fn agreed(yes: bool) -> Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("not applied: standard input is not a terminal to confirm on; pass --yes");
    }
    confirmed()
}

/// Exits 0 when every node converged: planned, and every step applied.
pub(super) async fn run(cx: &Context, dry_run: bool, yes: bool) -> Result<ExitCode> {
    let plans = plan_all(cx, definitions_by_node(cx)?).await;
    let unplanned = plans.iter().any(|p| p.error.is_some());
    let refused = plans
        .iter()
        .flat_map(|p| &p.steps)
        .any(|s| matches!(s.action, Action::Refused(_)));
    if cx.format.is_table() {
        print_plans(&plans);
    }
    let work = plans
        .iter()
        .flat_map(|p| &p.steps)
        .any(|s| !matches!(s.action, Action::Refused(_)));
    if dry_run || !work {
        if cx.format == OutputFormat::Json {
            output::print_json(&plans)?;
        }
        if dry_run {
            eprintln!("dry run: nothing was applied");
        }
        return Ok(exit_code(unplanned || refused));
    }
    if !agreed(yes)? {
        eprintln!("not applied");
        return Ok(ExitCode::FAILURE);
    }
    let outcomes = apply_all(cx, &plans).await;
    if cx.format == OutputFormat::Json {
        output::print_json(&outcomes)?;
    } else {
        print_outcomes(&outcomes)?;
    }
    let failed = outcomes.iter().any(|o| !o.ok);
    Ok(exit_code(unplanned || refused || failed))
}
