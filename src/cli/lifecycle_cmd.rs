//! The commands on what is deployed, by name: `mcp start`, `stop`,
//! `rollback`, `undeploy`, `restart` (with the deploy's progress display)
//! and `purge`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{anyhow, Result};

use super::config::{load_all_definitions, load_definition};
use super::context::{exit_code, Context};
use super::output::{self, OutputFormat};
use super::{client, report};
use crate::names::{Name, Target};
use crate::proto;

#[derive(Clone, Copy)]
pub(super) enum LifecycleCall {
    Start,
    Stop,
    Rollback,
    Undeploy,
}

/// The node to ask: `--node`, else the one in the service's definition.
pub(super) fn node_of(cx: &Context, target: &Target, node: Option<Name>) -> Result<Name> {
    match node {
        Some(n) => Ok(n),
        None => Ok(load_definition(&cx.paths, &target.service)
            .map_err(|e| anyhow!("{e:#}: pass --node NODE"))?
            .node),
    }
}

fn request_of(target: &Target) -> proto::LifecycleRequest {
    proto::LifecycleRequest {
        service: target.service.to_string(),
        component: target
            .component
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
    }
}

pub(super) async fn lifecycle(
    cx: &Context,
    target: Target,
    node: Option<Name>,
    call: LifecycleCall,
) -> Result<ExitCode> {
    let node = node_of(cx, &target, node)?;
    let mut client = cx.client(&node).await?;
    let request = request_of(&target);
    let response = match call {
        LifecycleCall::Start => client.start(request).await,
        LifecycleCall::Stop => client.stop(request).await,
        LifecycleCall::Rollback => client.rollback(request).await,
        LifecycleCall::Undeploy => client.undeploy(request).await,
    }
    .map_err(|s| client::describe_status(&node, &s))?
    .into_inner();
    report(cx, node.as_str(), &response.service, &response.results)
}

/// `mcp restart SVC[/COMP]`: stop then start, health checks included; live
/// lines per component on a terminal, like a deploy's.
pub(super) async fn restart(cx: &Context, target: Target, node: Option<Name>) -> Result<ExitCode> {
    let node = node_of(cx, &target, node)?;
    let mut client = cx.client(&node).await?;
    let updates = client
        .restart(request_of(&target))
        .await
        .map_err(|s| client::describe_status(&node, &s))?
        .into_inner();
    let components: Vec<String> = match &target.component {
        Some(c) => vec![c.to_string()],
        None => load_definition(&cx.paths, &target.service)
            .map(|d| d.components.iter().map(|c| c.name.to_string()).collect())
            .unwrap_or_default(),
    };
    let live = cx.format.is_table() && std::io::stderr().is_terminal();
    let shown = if live { components } else { Vec::new() };
    let done = super::deploy::follow_progress(updates, &node, &target.service, &shown, "restarted")
        .await
        .map_err(|s| client::describe_status(&node, &s))?
        .ok_or_else(|| {
            anyhow!(
                "node {node}: the restart stream ended without a result: its outcome is \
                     unknown; `mcp status {}` shows what runs",
                target.service
            )
        })?;
    report(cx, node.as_str(), &done.service, &done.results)
}

/// What the local definitions for `node` name: `svc` and `svc/comp`.
fn defined_on(cx: &Context, node: &Name) -> Result<Vec<String>> {
    let mut defined = Vec::new();
    for def in load_all_definitions(&cx.paths)?
        .into_iter()
        .filter(|d| &d.node == node)
    {
        defined.extend(
            def.components
                .iter()
                .map(|c| format!("{}/{}", def.name, c.name)),
        );
        defined.push(def.name.to_string());
    }
    Ok(defined)
}

/// `mcp purge [SVC[/COMP]] [--dry-run]`: each node forgets what is gone (no
/// container) and in no local definition; exits 1 when a node refuses
/// anything (a container still exists) or cannot be asked.
pub(super) async fn purge(
    cx: &Context,
    target: Option<Target>,
    node: Option<Name>,
    dry_run: bool,
) -> Result<ExitCode> {
    let nodes = match node {
        Some(n) => vec![n],
        None => cx.all_nodes(),
    };
    let calls = nodes.iter().map(|node| {
        let target = target.clone();
        async move {
            let request = proto::PurgeRequest {
                service: target
                    .as_ref()
                    .map(|t| t.service.to_string())
                    .unwrap_or_default(),
                component: target
                    .as_ref()
                    .and_then(|t| t.component.as_ref())
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                defined: defined_on(cx, node)?,
                dry_run,
            };
            let mut client = cx.client(node).await?;
            match client.purge(request).await {
                Ok(reply) => Ok(Some(reply.into_inner())),
                // A named service lives on one node: the others do not know it.
                Err(s) if s.code() == tonic::Code::NotFound && target.is_some() => Ok(None),
                Err(s) => Err(client::describe_status(node, &s)),
            }
        }
    });
    let mut failed = false;
    let mut reports = Vec::new();
    for answer in futures::future::join_all(calls).await {
        match answer {
            Ok(Some(report)) => reports.push(report),
            Ok(None) => {}
            Err(e) => {
                eprintln!("mcp: {e:#}");
                failed = true;
            }
        }
    }
    if let (Some(t), true, false) = (&target, reports.is_empty(), failed) {
        anyhow::bail!("service {} is known to no node", t.service);
    }
    print_purge(&reports, cx.format)?;
    let refused = reports.iter().any(|r| !r.refused.is_empty());
    Ok(exit_code(failed || refused))
}

fn print_purge(reports: &[proto::PurgeResponse], format: OutputFormat) -> Result<()> {
    if format == OutputFormat::Json {
        return output::print_json(&reports);
    }
    let mut t = output::table(&["node", "entry", "result"]);
    for r in reports {
        let done = if r.dry_run { "would purge" } else { "purged" };
        for p in &r.purged {
            t.add_row(vec![r.node.clone(), p.clone(), done.to_string()]);
        }
        for why in &r.refused {
            let (entry, reason) = why.split_once(": ").unwrap_or((why.as_str(), ""));
            t.add_row(vec![
                r.node.clone(),
                entry.to_string(),
                format!("refused: {reason}"),
            ]);
        }
    }
    if reports
        .iter()
        .all(|r| r.purged.is_empty() && r.refused.is_empty())
    {
        println!("nothing to purge");
    } else {
        println!("{t}");
    }
    if reports.iter().any(|r| r.dry_run) {
        eprintln!("dry run: nothing was purged");
    }
    Ok(())
}
