//! `mcp node [NODE]`: each node's resources (CPUs, load, memory, disk of
//! the srv root), its containers by state, its agent (version, uptime,
//! TLS certificate) and the networks the agent created, from every node at
//! once.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Result};

use super::context::{across_nodes, exit_code, Context};
use super::output::{answered, print_json, NodeAnswer, OutputFormat};
use crate::files::human_size;
use crate::names::Name;
use crate::proto;
use crate::proto::node_client::NodeClient;

pub(super) async fn run(cx: &Context, node: Option<Name>) -> Result<ExitCode> {
    let nodes = match node {
        Some(n) => vec![n],
        None => cx.all_nodes(),
    };
    if nodes.is_empty() {
        bail!("no nodes in {}", cx.paths.config.display());
    }
    // Like the other read commands: each node connects and answers within
    // the timeout; one that does not is reported and the others still print.
    let (answers, failed) = across_nodes(cx, &nodes, |ch| async move {
        Ok(NodeClient::new(ch)
            .info(proto::NodeInfoRequest {})
            .await?
            .into_inner())
    })
    .await;
    print_nodes(&answers, cx.format)?;
    Ok(exit_code(failed))
}

fn containers_cell(info: &proto::NodeInfo) -> String {
    if !info.containers_error.is_empty() {
        return "? (runtime unavailable)".to_string();
    }
    if info.containers.is_empty() {
        return "none".to_string();
    }
    info.containers
        .iter()
        .map(|c| format!("{} {}", c.count, c.state))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table of the nodes that answered, or JSON of every node's answer
/// (`{"node", "error"}` for those that did not).
pub fn print_nodes(answers: &[NodeAnswer<proto::NodeInfo>], format: OutputFormat) -> Result<()> {
    if format == OutputFormat::Json {
        return print_json(&answers);
    }
    let infos: Vec<&proto::NodeInfo> = answered(answers).collect();
    if infos.is_empty() {
        return Ok(());
    }
    let mut t = super::output::table(&[
        "node",
        "cpus",
        "load 1/5/15",
        "memory avail/total",
        "disk free/total",
        "containers",
        "images",
        "agent",
        "agent up",
        "system up",
        "tls cert expires",
        "networks",
    ]);
    for i in &infos {
        t.add_row(vec![
            i.node.clone(),
            i.cpus.to_string(),
            format!("{:.2} {:.2} {:.2}", i.load1, i.load5, i.load15),
            format!(
                "{} / {}",
                human_size(i.memory_available_bytes),
                human_size(i.memory_total_bytes)
            ),
            format!(
                "{} / {} ({})",
                human_size(i.disk_free_bytes),
                human_size(i.disk_total_bytes),
                i.disk_path
            ),
            containers_cell(i),
            if i.containers_error.is_empty() {
                format!("{} ({})", i.images, human_size(i.images_bytes))
            } else {
                "?".to_string()
            },
            i.agent_version.clone(),
            uptime(i.agent_uptime_secs),
            uptime(i.system_uptime_secs),
            cert_expiry(i.tls_not_after_ms),
            networks_cell(&i.networks),
        ]);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{t}")?;
    for i in infos.iter().filter(|i| !i.containers_error.is_empty()) {
        writeln!(
            out,
            "node {}: containers unknown: {}",
            i.node, i.containers_error
        )?;
    }
    Ok(())
}

/// The networks the agent created: `backend (bridge 10.89.0.0/24, dns on)`.
fn networks_cell(networks: &[proto::NetworkInfo]) -> String {
    if networks.is_empty() {
        return "-".to_string();
    }
    networks
        .iter()
        .map(|n| {
            let subnet = if n.subnet.is_empty() {
                String::new()
            } else {
                format!(" {}", n.subnet)
            };
            format!("{} ({}{subnet}, dns {})", n.name, n.driver, n.dns)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// "2027-11-30 (in 364d)", flagged when 30 days or less remain.
fn cert_expiry(not_after_ms: i64) -> String {
    if not_after_ms <= 0 {
        return "-".to_string();
    }
    let date = super::output::timestamp(not_after_ms);
    let date = date.split('T').next().unwrap_or(&date).to_string();
    let days = (not_after_ms - crate::registry::now_ms()) / 86_400_000;
    match days {
        d if d < 0 => format!("{date} (EXPIRED)"),
        d if d <= crate::grpc::tls::EXPIRY_WARNING_DAYS => {
            format!("{date} (in {d}d: mcp-agent init --renew)")
        }
        d => format!("{date} (in {d}d)"),
    }
}

/// "3d 4h", "5h 2m", "7m 3s", "12s".
fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes() {
        assert_eq!(uptime(12), "12s");
        assert_eq!(uptime(7 * 60 + 3), "7m 3s");
        assert_eq!(uptime(5 * 3600 + 120), "5h 2m");
        assert_eq!(uptime(3 * 86400 + 4 * 3600 + 5), "3d 4h");
    }
}
