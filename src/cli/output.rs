//! Human tables and `--output json` for the CLI's commands.

use comfy_table::{presets, Table};
use serde::Serialize;

use crate::proto;

/// println! that reports a closed stdout (`mcp ps | head`) as an error
/// instead of panicking; main treats that error as a normal exit.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}
use crate::registry::now_ms;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    /// A table with more columns (`mcp ps -o wide`: the image ids).
    Wide,
    Json,
}

impl OutputFormat {
    /// A table, wide or not: for people rather than programs.
    pub fn is_table(self) -> bool {
        self != OutputFormat::Json
    }
}

/// `sha256:0123456789abcdef...` as `0123456789ab`, as podman shows ids.
pub fn short_image_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    if hex.is_empty() {
        "-".to_string()
    } else {
        hex.chars().take(12).collect()
    }
}

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.iter().map(|h| h.to_uppercase()));
    t
}

pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    out!("{}", serde_json::to_string_pretty(value)?);
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

/// One node's answer to a read command, or why there is none. In JSON the
/// answer is itself, and a failure is `{"node": ..., "error": ...}`.
#[derive(Serialize)]
#[serde(untagged)]
pub enum NodeAnswer<T> {
    Answered(T),
    Failed(NodeFailure),
}

#[derive(Clone, Debug, Serialize)]
pub struct NodeFailure {
    /// The node's name in the CLI's config.
    pub node: String,
    pub error: String,
    /// No answer at all (connection refused, TLS, timeout), as opposed to an
    /// error the agent answered with.
    #[serde(skip)]
    pub unreachable: bool,
    /// The agent answered NOT_FOUND (it does not know what was asked about).
    #[serde(skip)]
    pub not_found: bool,
}

impl NodeFailure {
    /// `error`'s message, without the "node NAME: " its text starts with.
    pub fn new(node: &crate::names::Name, unreachable: bool, error: &anyhow::Error) -> Self {
        let text = format!("{error:#}");
        let prefix = format!("node {node}: ");
        NodeFailure {
            node: node.to_string(),
            error: text.strip_prefix(&prefix).unwrap_or(&text).to_string(),
            unreachable,
            not_found: false,
        }
    }
}

impl std::fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.unreachable {
            "UNREACHABLE"
        } else {
            "FAILED"
        };
        write!(f, "node {}: {what} ({})", self.node, self.error)
    }
}

/// The answers of the nodes that answered.
pub fn answered<T>(answers: &[NodeAnswer<T>]) -> impl Iterator<Item = &T> {
    answers.iter().filter_map(|a| match a {
        NodeAnswer::Answered(v) => Some(v),
        NodeAnswer::Failed(_) => None,
    })
}

/// Why the others did not.
pub fn failures<T>(answers: &[NodeAnswer<T>]) -> impl Iterator<Item = &NodeFailure> {
    answers.iter().filter_map(|a| match a {
        NodeAnswer::Answered(_) => None,
        NodeAnswer::Failed(f) => Some(f),
    })
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
    out!("{t}");
    Ok(())
}

pub fn print_list(
    answers: &[NodeAnswer<proto::ListServicesResponse>],
    format: OutputFormat,
) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        return print_json(&answers);
    }
    let responses: Vec<_> = answered(answers).collect();
    if responses.is_empty() {
        return Ok(());
    }
    let mut t = table(&[
        "component",
        "desired",
        "observed",
        "drift",
        "image",
        "image id",
        "deployed",
        "observed at",
        "routes",
    ]);
    for r in &responses {
        for s in &r.services {
            for c in &s.components {
                t.add_row(vec![
                    format!("{}/{}/{}", r.node, s.name, c.name),
                    c.desired_state.clone(),
                    c.observed_state.clone(),
                    if c.drift_since_ms > 0 {
                        format!("DRIFT {}", ago(c.drift_since_ms))
                    } else {
                        "-".to_string()
                    },
                    if c.image.is_empty() {
                        "-".to_string()
                    } else {
                        c.image.clone()
                    },
                    short_image_id(&c.image_id),
                    ago(c.deployed_at_ms),
                    ago(c.observed_at_ms),
                    routes_cell(&c.routes),
                ]);
            }
        }
    }
    out!("{t}");
    Ok(())
}

pub fn print_ps(
    answers: &[NodeAnswer<proto::PsResponse>],
    format: OutputFormat,
) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        return print_json(&answers);
    }
    let responses: Vec<_> = answered(answers).collect();
    if responses.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = responses
        .iter()
        .flat_map(|r| r.containers.iter().map(move |c| (r.node.as_str(), c)))
        .collect();
    out!("{}", containers_table(&rows, format == OutputFormat::Wide));
    Ok(())
}

/// A component's routes as `127.0.0.1:10000->8080`, comma separated; "-"
/// for none.
pub fn routes_cell(routes: &[proto::Route]) -> String {
    if routes.is_empty() {
        return "-".to_string();
    }
    routes
        .iter()
        .map(|r| format!("{}->{}", host_address(r), r.container_port))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `address:port` of a route, IPv6 in brackets.
pub fn host_address(r: &proto::Route) -> String {
    if r.address.contains(':') {
        format!("[{}]:{}", r.address, r.host_port)
    } else {
        format!("{}:{}", r.address, r.host_port)
    }
}

fn dash(s: &str) -> String {
    dash_or(s)
}

/// `s`, or "-" when it is empty.
pub fn dash_or(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

fn containers_table(rows: &[(&str, &proto::ContainerInfo)], wide: bool) -> Table {
    let mut columns = vec![
        "container",
        "component",
        "image",
        "state",
        "health",
        "status",
        "desired",
        "id",
        "routes",
    ];
    if wide {
        columns.push("image id");
    }
    let mut t = table(&columns);
    for (node, c) in rows {
        let component = if c.service.is_empty() {
            "-".to_string()
        } else {
            format!("{node}/{}/{}", c.service, c.component)
        };
        let mut row = vec![
            c.name.clone(),
            component,
            dash(&c.image),
            c.state.clone(),
            dash(&c.health),
            dash(&c.status),
            c.desired_state.clone(),
            dash(short_id(&c.id)),
            routes_cell(&c.routes),
        ];
        if wide {
            row.push(short_image_id(&c.image_id));
        }
        t.add_row(row);
    }
    t
}

pub fn print_status(
    answers: &[NodeAnswer<proto::StatusResponse>],
    format: OutputFormat,
) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        return print_json(&answers);
    }
    for r in answered(answers) {
        if let Some(line) = r.recovery.as_ref().and_then(recovery_line) {
            out!("node {}: {line}", r.node);
        }
        if r.drift.is_empty() {
            out!("node {}: no drift", r.node);
        } else {
            out!("node {}: {} component(s) drifting", r.node, r.drift.len());
            let mut t = table(&["component", "desired", "observed", "since", "detail"]);
            for d in &r.drift {
                t.add_row(vec![
                    format!("{}/{}/{}", r.node, d.service, d.component),
                    d.desired_state.clone(),
                    d.observed_state.clone(),
                    ago(d.since_ms),
                    d.detail.clone(),
                ]);
            }
            out!("{t}");
        }
        let rows: Vec<_> = r.containers.iter().map(|c| (r.node.as_str(), c)).collect();
        if !rows.is_empty() {
            out!(
                "\n{}",
                containers_table(&rows, format == OutputFormat::Wide)
            );
        }
        if !r.events.is_empty() {
            out!("\nrecent events on {}:", r.node);
            let mut printer = EventPrinter::new(OutputFormat::Table, false);
            for e in &r.events {
                printer.event(e.clone())?;
            }
            printer.finish()?;
        }
    }
    Ok(())
}

/// What `status` says of the recovery at start: while it runs, and for an
/// hour after it finished (or that it is off).
fn recovery_line(r: &proto::RecoveryStatus) -> Option<String> {
    if r.in_progress {
        let stage = if r.stage.is_empty() {
            String::new()
        } else {
            format!(", boot stage {}", r.stage)
        };
        return Some(format!(
            "recovery in progress{stage}: {} of {} component(s) looked at, {} recovered, {} failed",
            r.done, r.total, r.recovered, r.failed
        ));
    }
    if !r.detail.is_empty() {
        return Some(r.detail.clone());
    }
    let finished = r.finished_at_ms;
    let recent = finished > 0 && now_ms() - finished < 3_600_000;
    (recent && r.recovered + r.failed > 0).then(|| {
        format!(
            "recovery at start finished {}: {} recovered, {} failed",
            ago(finished),
            r.recovered,
            r.failed
        )
    })
}

pub fn print_sync(reports: &[proto::SyncResponse], format: OutputFormat) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        return print_json(&reports);
    }
    for r in reports {
        let synced = if r.synced.is_empty() {
            "nothing".to_string()
        } else {
            r.synced.join(", ")
        };
        out!(
            "node {}: desired state of {synced} recorded (no container touched)",
            r.node
        );
        if !r.prunable.is_empty() {
            if r.pruned {
                out!(
                    "node {}: pruned from the registry (containers left as they are): {}",
                    r.node,
                    r.prunable.join(", ")
                );
            } else {
                out!(
                    "node {}: not in any definition, would be pruned by `mcp sync --prune`: {}",
                    r.node,
                    r.prunable.join(", ")
                );
            }
        }
    }
    Ok(())
}

pub fn print_adopted(reply: &proto::AdoptResponse, format: OutputFormat) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        return print_json(reply);
    }
    out!(
        "{}/{}/{} now manages container {} ({}); desired state running",
        reply.node,
        reply.service,
        reply.component,
        short_id(&reply.container_id),
        reply.observed_state
    );
    Ok(())
}

/// Prints events: a table (TIME, COMPONENT, KIND, BY, DETAIL) of the
/// history; while following, a line each as they arrive, in the same
/// columns; or JSON (an array at the end, or one object per line when
/// following).
pub struct EventPrinter {
    format: OutputFormat,
    follow: bool,
    collected: Vec<NodeAnswer<proto::Event>>,
}

/// Who caused an event, for the BY column: `-` when it was only observed.
fn by(e: &proto::Event) -> &str {
    if e.by.is_empty() {
        "-"
    } else {
        &e.by
    }
}

fn event_row(e: &proto::Event) -> Vec<String> {
    let component = if e.component.is_empty() {
        format!("{}/{}", e.node, e.service)
    } else {
        format!("{}/{}/{}", e.node, e.service, e.component)
    };
    vec![
        timestamp(e.ts_ms),
        component,
        e.kind.clone(),
        by(e).to_string(),
        e.detail.clone(),
    ]
}

const EVENT_COLUMNS: [&str; 5] = ["time", "component", "kind", "by", "detail"];

impl EventPrinter {
    pub fn new(format: OutputFormat, follow: bool) -> Self {
        EventPrinter {
            format,
            follow,
            collected: Vec::new(),
        }
    }

    pub fn event(&mut self, e: proto::Event) -> anyhow::Result<()> {
        match (self.format, self.follow) {
            (OutputFormat::Json, true) => out!("{}", serde_json::to_string(&e)?),
            (_, true) => out!("{}", event_row(&e).join("  ")),
            (_, false) => self.collected.push(NodeAnswer::Answered(e)),
        }
        Ok(())
    }

    /// A node whose events are missing: an entry with `error` in the JSON
    /// array (the table has said it on stderr already).
    pub fn failure(&mut self, failure: NodeFailure) {
        if self.format == OutputFormat::Json && !self.follow {
            self.collected.push(NodeAnswer::Failed(failure));
        }
    }

    pub fn finish(self) -> anyhow::Result<()> {
        match (self.format, self.follow) {
            (OutputFormat::Json, false) => print_json(&self.collected)?,
            (_, false) => {
                let events: Vec<_> = answered(&self.collected).collect();
                if !events.is_empty() {
                    let mut t = table(&EVENT_COLUMNS);
                    for e in events {
                        t.add_row(event_row(e));
                    }
                    out!("{t}");
                }
            }
            (_, true) => {}
        }
        Ok(())
    }
}

pub fn print_whoami(
    answers: &[NodeAnswer<proto::WhoAmIResponse>],
    format: OutputFormat,
) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        return print_json(&answers);
    }
    let responses: Vec<_> = answered(answers).collect();
    if responses.is_empty() {
        return Ok(());
    }
    let mut t = table(&["node", "name", "subject", "roles", "level", "expires"]);
    for r in responses {
        t.add_row(vec![
            r.node.clone(),
            r.name.clone(),
            r.subject.clone(),
            dash(&r.roles.join(",")),
            r.level.clone(),
            if r.expires_at > 0 {
                expiry(r.expires_at)
            } else {
                "no expiry".to_string()
            },
        ]);
    }
    out!("{t}");
    Ok(())
}

/// A token's expiry (unix seconds): the time, and how far away it is.
pub fn expiry(secs: i64) -> String {
    let left = secs - now_ms().div_euclid(1000);
    let when = timestamp(secs.saturating_mul(1000));
    if left <= 0 {
        return format!("{when} (expired)");
    }
    let span = match left {
        0..=59 => format!("{left}s"),
        60..=3599 => format!("{}m", left / 60),
        3600..=86399 => format!("{}h{}m", left / 3600, left % 3600 / 60),
        _ => format!("{}d", left / 86400),
    };
    format!("{when} (in {span})")
}

pub fn timestamp(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}
