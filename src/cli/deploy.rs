//! `mcp deploy` (with its plan) and `mcp diff`. The plan (what would
//! change, and what the node's policy refuses) comes from the agent
//! (`Agent.Plan`), before anything runs.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Result};

use super::output::{self, OutputFormat};
use super::{client, report, Context};
use crate::grpc::convert::service_to_proto;
use crate::names::{Name, Target};
use crate::proto;
use crate::spec::ServiceDef;

fn plan_table(changes: &[proto::PlanChange], def: &ServiceDef) -> comfy_table::Table {
    let mut t = output::table(&["component", "field", "deployed", "definition"]);
    for c in changes {
        let what = if c.component.is_empty() {
            format!("{}/{}", def.node, def.name)
        } else {
            format!("{}/{}/{}", def.node, def.name, c.component)
        };
        t.add_row(vec![
            what,
            c.field.clone(),
            c.deployed.clone(),
            c.local.clone(),
        ]);
    }
    t
}

/// The plan on stderr, so that stdout stays the deploy's result.
fn print_plan(plan: &proto::PlanResponse, def: &ServiceDef) {
    if plan.changes.is_empty() {
        eprintln!("{}/{}: no change from what is deployed", def.node, def.name);
    } else {
        eprintln!("plan:\n{}", plan_table(&plan.changes, def));
    }
}

/// A warning on stderr for each image that may name different images over
/// time (no tag, or `latest`).
fn warn_unpinned(def: &ServiceDef, only: Option<&Name>) {
    for c in def
        .components
        .iter()
        .filter(|c| only.is_none_or(|o| o == &c.name))
    {
        if let Some(why) = c.image.unpinned() {
            eprintln!(
                "mcp: warning: {}/{}: image {} {why}: what runs can change without a change to \
                 the definition; pin a version tag or a digest",
                def.name, c.name, c.image
            );
        }
    }
}

/// What the node's policy refuses, on stderr; true when it refuses anything.
fn refused(plan: &proto::PlanResponse, def: &ServiceDef) -> bool {
    for r in &plan.refusals {
        eprintln!("mcp: node {}: refused by its policy: {r}", def.node);
    }
    !plan.refusals.is_empty()
}

pub(super) fn deploy_request(
    def: &ServiceDef,
    target: &Target,
    options: &DeployOptions,
) -> proto::DeployRequest {
    proto::DeployRequest {
        service: Some(service_to_proto(def)),
        component: target
            .component
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        no_rollback: options.no_rollback,
        force: options.force,
        deadline_ms: options.deadline.as_millis().try_into().unwrap_or(u64::MAX),
        keep_removed: options.keep_removed,
        pull: options.pull,
    }
}

async fn plan(
    client: &mut client::Client,
    request: proto::DeployRequest,
    node: &Name,
) -> Result<proto::PlanResponse> {
    Ok(client
        .plan(request)
        .await
        .map_err(|s| client::describe_status(node, &s))?
        .into_inner())
}

/// `mcp diff SVC[/COMP]`: exits 1 when the node's policy refuses the definition.
pub(super) async fn run_diff(cx: &Context, def: ServiceDef, target: Target) -> Result<ExitCode> {
    warn_unpinned(&def, target.component.as_ref());
    let mut client = cx.client(&def.node).await?;
    let request = deploy_request(&def, &target, &DeployOptions::default());
    let plan = plan(&mut client, request, &def.node).await?;
    if cx.format == OutputFormat::Json {
        output::print_json(&plan.changes)?;
    } else if plan.changes.is_empty() {
        println!("{}/{}: no change from what is deployed", def.node, def.name);
    } else {
        println!("{}", plan_table(&plan.changes, &def));
    }
    Ok(super::exit_code(refused(&plan, &def)))
}

/// The switches of `mcp deploy`.
#[derive(Debug, Clone, Copy)]
pub struct DeployOptions {
    pub dry_run: bool,
    pub no_rollback: bool,
    pub force: bool,
    /// Leave running the components the definition no longer names.
    pub keep_removed: bool,
    /// Pull every image, whatever the pull policies say.
    pub pull: bool,
    /// How long components may pull and wait for their health check.
    pub deadline: Duration,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            dry_run: false,
            no_rollback: false,
            force: false,
            keep_removed: false,
            pull: false,
            deadline: crate::grpc::server::DEFAULT_DEPLOY_DEADLINE,
        }
    }
}

/// `mcp deploy SVC[/COMP] [--dry-run] [--no-rollback] [--force] [--deadline D]`:
/// the plan first (on stderr, so stdout stays the result), then the deploy,
/// unless the node's policy refuses the definition.
pub(super) async fn run_deploy(
    cx: &Context,
    def: ServiceDef,
    target: Target,
    options: DeployOptions,
) -> Result<ExitCode> {
    warn_unpinned(&def, target.component.as_ref());
    // One connection for the plan and the deploy.
    let mut client = cx.client(&def.node).await?;
    let request = deploy_request(&def, &target, &options);
    let plan = plan(&mut client, request.clone(), &def.node).await?;
    if options.dry_run {
        // The plan is the output.
        if cx.format == OutputFormat::Json {
            output::print_json(&plan.changes)?;
        } else {
            print_plan(&plan, &def);
            eprintln!("dry run: nothing was deployed");
        }
        return Ok(super::exit_code(refused(&plan, &def)));
    }
    if cx.format.is_table() {
        print_plan(&plan, &def);
    }
    if refused(&plan, &def) {
        eprintln!("mcp: nothing was deployed");
        return Ok(ExitCode::FAILURE);
    }
    let response = if cx.format.is_table() && std::io::stderr().is_terminal() {
        with_progress(&mut client, request, &def, target.component.as_ref()).await?
    } else {
        client
            .deploy(request)
            .await
            .map_err(|s| deploy_failed(&def, &s))?
            .into_inner()
    };
    report(cx, def.node.as_str(), &response.service, &response.results)
}

/// A deploy that failed as a whole. When the connection itself was lost,
/// the agent may have done all, part or none of it: say so, and where to
/// look.
fn deploy_failed(def: &ServiceDef, status: &tonic::Status) -> anyhow::Error {
    if std::error::Error::source(status).is_some() {
        anyhow!(
            "node {}: the connection to the agent was lost during the deploy ({}): its outcome \
             is unknown; `mcp status {}` shows what runs",
            def.node,
            status.message(),
            def.name
        )
    } else {
        client::describe_status(&def.node, status)
    }
}

/// The deploy with one live line per component (pulling, replacing,
/// starting, checking health, ...) on the terminal.
async fn with_progress(
    client: &mut client::Client,
    request: proto::DeployRequest,
    def: &ServiceDef,
    only: Option<&Name>,
) -> Result<proto::DeployResponse> {
    let updates = client
        .deploy_watch(request)
        .await
        .map_err(|s| deploy_failed(def, &s))?
        .into_inner();
    let components: Vec<String> = def
        .components
        .iter()
        .filter(|c| only.is_none_or(|o| o == &c.name))
        .map(|c| c.name.to_string())
        .collect();
    follow_progress(updates, &def.node, &def.name, &components, "deployed")
        .await
        .map_err(|s| deploy_failed(def, &s))?
        .ok_or_else(|| {
            anyhow!(
                "node {}: the deploy stream ended without a result: its outcome is unknown; \
                 `mcp status {}` shows what runs",
                def.node,
                def.name
            )
        })
}

/// Shows an operation's progress stream (deploy, restart) as one live line
/// per component; the result, or `None` when the stream ended without one.
pub(super) async fn follow_progress(
    mut updates: tonic::Streaming<proto::DeployProgress>,
    node: &Name,
    service: &Name,
    components: &[String],
    verb: &str,
) -> Result<Option<proto::DeployResponse>, tonic::Status> {
    use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
    use proto::deploy_progress::Update;
    let lines = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} {prefix:<28} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bars: Vec<(String, ProgressBar)> = components
        .iter()
        .map(|c| {
            let bar = lines.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(format!("{node}/{service}/{c}"));
            bar.set_message("waiting");
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            (c.clone(), bar)
        })
        .collect();
    let bar_of = |component: &str| bars.iter().find(|(n, _)| n == component).map(|(_, b)| b);
    while let Some(update) = updates.message().await? {
        match update.update {
            Some(Update::Step(step)) => {
                if let Some(bar) = bar_of(&step.component) {
                    bar.set_message(format!("{} {}", step.phase, step.detail));
                }
            }
            Some(Update::Done(done)) => {
                for (name, bar) in &bars {
                    match done.results.iter().find(|r| &r.component == name) {
                        Some(r) => {
                            let mark = if r.ok { "done" } else { "FAILED" };
                            bar.finish_with_message(format!("{mark}: {}", r.detail));
                        }
                        None => bar.finish_and_clear(),
                    }
                }
                let failed = done.results.iter().filter(|r| !r.ok).count();
                eprintln!(
                    "{} of {} component(s) {verb}{}",
                    done.results.len() - failed,
                    done.results.len(),
                    if failed > 0 {
                        format!(", {failed} failed")
                    } else {
                        String::new()
                    }
                );
                return Ok(Some(done));
            }
            None => {}
        }
    }
    Ok(None)
}
