//! Human tables and `--output json` for the CLI's commands.

use comfy_table::{presets, Table};
use serde::Serialize;

use crate::proto;
use crate::registry::now_ms;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.iter().map(|h| h.to_uppercase()));
    t
}

pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// "3m ago" for a Unix-ms time; "-" for none.
pub fn ago(ms: i64) -> String {
    if ms <= 0 {
        return "-".to_string();
    }
    let secs = (now_ms() - ms).max(0) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Results of deploy/start/stop, one line per component.
#[derive(Serialize)]
pub struct OperationReport<'a> {
    pub node: &'a str,
    pub service: &'a str,
    pub results: &'a [proto::ComponentResult],
}

pub fn print_results(report: &OperationReport<'_>, format: OutputFormat) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        return print_json(report);
    }
    let mut t = table(&["component", "result", "state", "container", "detail"]);
    for r in report.results {
        t.add_row(vec![
            format!("{}/{}/{}", report.node, report.service, r.component),
            if r.ok { "ok" } else { "FAILED" }.to_string(),
            r.observed_state.clone(),
            short_id(&r.container_id).to_string(),
            r.detail.clone(),
        ]);
    }
    println!("{t}");
    Ok(())
}

pub fn print_list(
    responses: &[proto::ListServicesResponse],
    format: OutputFormat,
) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        return print_json(&responses);
    }
    if responses.is_empty() {
        return Ok(());
    }
    let mut t = table(&[
        "component",
        "desired",
        "observed",
        "image",
        "deployed",
        "observed at",
    ]);
    for r in responses {
        for s in &r.services {
            for c in &s.components {
                t.add_row(vec![
                    format!("{}/{}/{}", r.node, s.name, c.name),
                    c.desired_state.clone(),
                    c.observed_state.clone(),
                    if c.image.is_empty() {
                        "-".to_string()
                    } else {
                        c.image.clone()
                    },
                    ago(c.deployed_at_ms),
                    ago(c.observed_at_ms),
                ]);
            }
        }
    }
    println!("{t}");
    Ok(())
}

pub fn print_ps(responses: &[proto::PsResponse], format: OutputFormat) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        return print_json(&responses);
    }
    if responses.is_empty() {
        return Ok(());
    }
    let mut t = table(&[
        "container",
        "component",
        "image",
        "state",
        "status",
        "desired",
        "id",
    ]);
    for r in responses {
        for c in &r.containers {
            let component = if c.service.is_empty() {
                "-".to_string()
            } else {
                format!("{}/{}/{}", r.node, c.service, c.component)
            };
            t.add_row(vec![
                c.name.clone(),
                component,
                if c.image.is_empty() {
                    "-".to_string()
                } else {
                    c.image.clone()
                },
                c.state.clone(),
                if c.status.is_empty() {
                    "-".to_string()
                } else {
                    c.status.clone()
                },
                c.desired_state.clone(),
                if c.id.is_empty() {
                    "-".to_string()
                } else {
                    short_id(&c.id).to_string()
                },
            ]);
        }
    }
    println!("{t}");
    Ok(())
}
