//! `mcp routes [NODE]`: every route of every node (or one): where its host
//! port is, which container port it reaches, and what a proxy needs
//! (hostname, mode), from the agents' registries.

use std::process::ExitCode;

use anyhow::{bail, Result};

use super::client;
use super::context::{across_nodes, exit_code, Context};
use super::output::{answered, dash_or, host_address, print_json, table, NodeAnswer, OutputFormat};
use crate::names::Name;
use crate::proto;

pub(super) async fn run(cx: &Context, node: Option<Name>) -> Result<ExitCode> {
    let nodes = match node {
        Some(n) => vec![n],
        None => cx.all_nodes(),
    };
    if nodes.is_empty() {
        bail!("no nodes in {}", cx.paths.config.display());
    }
    let (answers, failed) = across_nodes(cx, &nodes, |ch| async move {
        let mut c = client::agent(ch);
        Ok(c.routes(proto::RoutesRequest::default())
            .await?
            .into_inner())
    })
    .await;
    print_routes(&answers, cx.format)?;
    Ok(exit_code(failed))
}

/// A table of the routes of the nodes that answered, or JSON of every
/// node's answer.
pub fn print_routes(
    answers: &[NodeAnswer<proto::RoutesResponse>],
    format: OutputFormat,
) -> Result<()> {
    if format == OutputFormat::Json {
        return print_json(&answers);
    }
    let mut t = table(&[
        "node",
        "component",
        "name",
        "host",
        "container port",
        "hostname",
        "mode",
        "env",
    ]);
    let mut any = false;
    for r in answered(answers) {
        for route in &r.routes {
            any = true;
            t.add_row(vec![
                r.node.clone(),
                format!("{}/{}", route.service, route.component),
                dash_or(&route.name),
                host_address(route),
                route.container_port.to_string(),
                dash_or(&route.hostname),
                route.mode.clone(),
                route.env.clone(),
            ]);
        }
    }
    if any {
        use std::io::Write;
        writeln!(std::io::stdout().lock(), "{t}")?;
    }
    Ok(())
}
