//! `mcp logs SVC[/COMP]`: container output streamed from the service's node
//! (the `mcp.v1.Logs` service of proto/mcp/v1/logs.proto). When several
//! components are shown, each line starts with its component's name.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use super::client::describe_status;
use super::config::load_definition;
use super::output::OutputFormat;
use super::Context;
use crate::names::{Name, Target};
use crate::proto;
use crate::proto::logs_client::LogsClient;
use crate::spec::ServiceDef;

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// SERVICE (every component, merged) or SERVICE/COMPONENT.
    pub target: Target,
    /// Keep streaming new lines as the containers write them (until Ctrl-C,
    /// or until the containers stop).
    #[arg(long, short)]
    pub follow: bool,
    /// Only lines written in the last DURATION: 30s, 10m, 1h, 2days.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// Only the last N lines of each container (0 with --follow: only new lines).
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<u32>,
    /// Start each line with the time the runtime received it.
    #[arg(long, short = 't')]
    pub timestamps: bool,
    /// Node to ask (default: the node in the service's definition).
    #[arg(long)]
    pub node: Option<Name>,
    /// Print the containers' bytes as they are. By default, on a terminal,
    /// control characters (escape sequences that could move the cursor,
    /// retitle the window or fake a prompt) are shown escaped: `\x1b[31m`.
    #[arg(long)]
    pub raw: bool,
}

/// `text` with control characters but tab written as `\xNN` escapes, so a
/// container's output cannot drive the operator's terminal.
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        // Control characters (Unicode Cc) are all below U+00A0.
        if c.is_control() && c != '\t' {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// How a line is printed: with its component's name or not.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prefix {
    show: bool,
    /// Names are padded to this width, so the lines start in one column.
    width: usize,
}

impl Prefix {
    /// No prefix when one component is asked for, or the service's
    /// definition has only one; otherwise (several, or no definition to
    /// tell) every line carries its component.
    fn for_target(target: &Target, definition: Option<&ServiceDef>) -> Prefix {
        match (&target.component, definition) {
            (Some(_), _) => Prefix {
                show: false,
                width: 0,
            },
            (None, Some(def)) => Prefix {
                show: def.components.len() != 1,
                width: def
                    .components
                    .iter()
                    .map(|c| c.name.as_str().len())
                    .max()
                    .unwrap_or(0),
            },
            (None, None) => Prefix {
                show: true,
                width: 0,
            },
        }
    }

    fn format(&mut self, line: &proto::LogLine, timestamps: bool, escape: bool) -> String {
        let mut text = String::new();
        if self.show {
            // A component the definition does not name (adopted) widens it.
            self.width = self.width.max(line.component.len());
            text.push_str(&format!("{:<w$} | ", line.component, w = self.width));
        }
        if timestamps {
            if line.ts_ms > 0 {
                text.push_str(&super::output::timestamp(line.ts_ms));
            } else {
                text.push('-');
            }
            text.push(' ');
        }
        if escape {
            text.push_str(&escape_controls(&line.line));
        } else {
            text.push_str(&line.line);
        }
        text
    }
}

pub(super) async fn logs(cx: &Context, args: LogsArgs) -> Result<ExitCode> {
    let service = &args.target.service;
    let node = super::context::node_of(cx, service, args.node.clone())?;
    let definition = load_definition(&cx.paths, service).ok();
    let mut prefix = Prefix::for_target(&args.target, definition.as_ref());
    let escape = !args.raw && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let channel = cx.channel(&node).await?;
    let mut client =
        LogsClient::new(channel).max_decoding_message_size(crate::grpc::MAX_MESSAGE_BYTES);
    let request = proto::LogsRequest {
        service: service.to_string(),
        component: args
            .target
            .component
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        follow: args.follow,
        // Whole seconds, rounded up: `--since 1500ms` keeps 2s.
        since_secs: args
            .since
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
        tail: args.tail,
    };
    let mut stream = client
        .stream(request)
        .await
        .map_err(|s| describe_status(&node, &s))?
        .into_inner();
    // Buffered, and flushed after each message while following, so a line
    // shows as soon as it arrives but a long history is not a write per line.
    let mut out = std::io::BufWriter::new(std::io::stdout());
    loop {
        let next = stream.message().await;
        let line = match next {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(status) => {
                out.flush()?;
                return Err(describe_status(&node, &status));
            }
        };
        match cx.format {
            OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(&line)?)?,
            OutputFormat::Table | OutputFormat::Wide => {
                writeln!(out, "{}", prefix.format(&line, args.timestamps, escape))?
            }
        }
        if args.follow {
            out.flush()?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(component: &str, text: &str, ts_ms: i64) -> proto::LogLine {
        proto::LogLine {
            component: component.to_string(),
            stream: "stdout".to_string(),
            line: text.to_string(),
            ts_ms,
        }
    }

    fn def(components: &[&str]) -> ServiceDef {
        let mut toml = "name = \"svc\"\nnode = \"n1\"\n".to_string();
        for c in components {
            toml.push_str(&format!(
                "[[components]]\nname = \"{c}\"\nimage = \"i:1\"\n"
            ));
        }
        crate::spec::parse_service(std::path::Path::new("svc.toml"), &toml).unwrap()
    }

    #[test]
    fn prefixes_only_when_several_components_show() {
        let one: Target = "svc/api".parse().unwrap();
        let all: Target = "svc".parse().unwrap();
        let two = def(&["api", "worker"]);
        let single = def(&["api"]);

        let mut p = Prefix::for_target(&one, Some(&two));
        assert_eq!(p.format(&line("api", "hello", 0), false, false), "hello");

        let mut p = Prefix::for_target(&all, Some(&single));
        assert_eq!(p.format(&line("api", "hello", 0), false, false), "hello");

        let mut p = Prefix::for_target(&all, Some(&two));
        assert_eq!(
            p.format(&line("api", "hello", 0), false, false),
            "api    | hello"
        );
        assert_eq!(
            p.format(&line("worker", "hi", 0), false, false),
            "worker | hi"
        );

        let mut p = Prefix::for_target(&all, None);
        assert_eq!(
            p.format(&line("api", "hello", 0), false, false),
            "api | hello"
        );
    }

    #[test]
    fn timestamps_before_the_text() {
        let mut p = Prefix::for_target(&"svc/api".parse().unwrap(), None);
        assert_eq!(
            p.format(&line("api", "hello", 1_000), true, false),
            "1970-01-01T00:00:01Z hello"
        );
        assert_eq!(p.format(&line("api", "hello", 0), true, false), "- hello");
    }

    #[test]
    fn control_characters_are_escaped_unless_raw() {
        let mut p = Prefix::for_target(&"svc/api".parse().unwrap(), None);
        let evil = "red \x1b[31mtext\x1b]0;owned\x07 bell\r\tok \u{9b}";
        assert_eq!(
            p.format(&line("api", evil, 0), false, true),
            "red \\x1b[31mtext\\x1b]0;owned\\x07 bell\\x0d\tok \\x9b"
        );
        assert_eq!(p.format(&line("api", evil, 0), false, false), evil);
        assert_eq!(escape_controls("plain"), "plain");
    }
}
