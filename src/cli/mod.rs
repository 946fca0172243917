//! `mcp`: the operator's CLI. It reads local definitions and config, talks to
//! the agents, and prints. No database, no daemon, no decisions about
//! containers: those are the agent's.

pub mod apply;
pub mod client;
pub mod config;
pub mod context;
pub mod deploy;
pub mod docs;
pub mod exec;
pub mod files;
pub mod lifecycle_cmd;
pub mod logs;
pub mod node_cmd;
pub mod output;
pub mod routes_cmd;
pub mod secret_cmd;
pub mod service_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::grpc::convert::service_to_proto;
use crate::names::{Name, Target};
use crate::proto;
use config::{load_config, load_definition, Paths};
use context::{across_nodes, across_nodes_seeking, exit_code, Context};
use lifecycle_cmd::{lifecycle, LifecycleCall};
use output::{NodeAnswer, OperationReport, OutputFormat};

/// Examples and where the files are, after the commands in `mcp --help`.
const AFTER_HELP: &str = "\
Examples:
  mcp diff metacrypt                 what a deploy would change
  mcp deploy metacrypt               push metacrypt.toml, replace its containers
  mcp deploy metacrypt/web           only the web component
  mcp ps                             what runs on every node
  mcp routes                         every route's host port, hostname and mode
  mcp status metacrypt               drift and recent events
  mcp logs metacrypt --since 10m -f  recent output of every component, then new lines
  mcp events -f                      what happens, as it happens
  mcp push metacrypt ./app.toml config/app.toml
  mcp secret set metacrypt db-password < pw.txt   a secret, kept on the node only
  mcp completions bash > ~/.local/share/bash-completion/completions/mcp

Definitions live in $XDG_CONFIG_HOME/mcp/services/<service>.toml; nodes in \
$XDG_CONFIG_HOME/mcp/mcp.toml; the token in MCP_TOKEN or $XDG_CONFIG_HOME/mcp/token, \
or per node in the file its `token_file` names. `mcp help COMMAND` tells more.";

#[derive(Parser, Debug)]
#[command(
    name = "mcp",
    version,
    about = "Operate containers on your nodes from service definitions",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// CLI config (default: $XDG_CONFIG_HOME/mcp/mcp.toml).
    #[arg(long, global = true, env = "MCP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of service definitions (default: $XDG_CONFIG_HOME/mcp/services).
    #[arg(long, global = true, env = "MCP_SERVICES_DIR")]
    pub services_dir: Option<PathBuf>,
    /// Seconds each node gets to connect and answer `list`, `ps`, `status`
    /// and `events` (without --follow); a node that does not is shown as
    /// unreachable. Other commands use it for the connection only.
    /// Default: `timeout_secs` in mcp.toml, else 5.
    #[arg(long, global = true, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Push a definition and replace its containers: `mcp deploy metacrypt` or `mcp deploy metacrypt/web`.
    Deploy {
        /// SERVICE or SERVICE/COMPONENT.
        target: Target,
        /// Show what would change, component by component, and stop there.
        #[arg(long)]
        dry_run: bool,
        /// Keep a component that does not become healthy instead of rolling it back.
        #[arg(long)]
        no_rollback: bool,
        /// Recreate components whose spec did not change (by default they keep their container).
        #[arg(long)]
        force: bool,
        /// Leave running the components that the definition no longer names
        /// (by default the deploy of a whole service undeploys them).
        #[arg(long)]
        keep_removed: bool,
        /// Pull every component's image, whatever its `pull` policy says.
        #[arg(long)]
        pull: bool,
        /// How long components may pull and wait for their health check
        /// before the deploy gives up and rolls them back (at most 9m; the
        /// global --timeout is the connection's).
        #[arg(long, default_value = "5m", value_parser = parse_deadline)]
        deadline: std::time::Duration,
    },
    /// What a deploy would change against the agent's deployed spec: `mcp diff metacrypt`.
    Diff {
        /// SERVICE or SERVICE/COMPONENT.
        target: Target,
    },
    /// Return components to their previous deployed spec: `mcp rollback metacrypt/web`.
    Rollback {
        target: Target,
        /// Node to ask (default: the node in the service's definition).
        #[arg(long)]
        node: Option<Name>,
    },
    /// Set desired state `stopped` and stop the containers: `mcp stop metacrypt[/web]`.
    Stop {
        target: Target,
        /// Node to ask (default: the node in the service's definition).
        #[arg(long)]
        node: Option<Name>,
    },
    /// Set desired state `running` and start the containers: `mcp start metacrypt[/web]`.
    Start {
        target: Target,
        /// Node to ask (default: the node in the service's definition).
        #[arg(long)]
        node: Option<Name>,
    },
    /// Stop then start the containers, health checks included: `mcp restart metacrypt[/web]`.
    Restart {
        target: Target,
        /// Node to ask (default: the node in the service's definition).
        #[arg(long)]
        node: Option<Name>,
    },
    /// Stop and remove the containers, keep the history and /srv/<service>: `mcp undeploy metacrypt[/web]`.
    Undeploy {
        target: Target,
        /// Node to ask (default: the node in the service's definition).
        #[arg(long)]
        node: Option<Name>,
    },
    /// Forget registry entries that have no container and no local definition: `mcp purge [metacrypt] --dry-run`.
    Purge {
        /// SERVICE or SERVICE/COMPONENT (default: everything on every node).
        target: Option<Target>,
        /// Only this node (default: every configured node).
        #[arg(long)]
        node: Option<Name>,
        /// Show what would be forgotten and stop there.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run a command in a component's container: `mcp exec metacrypt/web -it -- sh`.
    Exec(exec::ExecArgs),
    /// What the agents' registries say: services, desired and last observed state (no runtime query): `mcp list`.
    List,
    /// What really runs now, on every node (live query; updates observed state): `mcp ps`.
    Ps,
    /// What needs attention: live query, drift and recent events: `mcp status [metacrypt]`.
    Status {
        /// Only this service (default: all services on all nodes).
        service: Option<Name>,
        /// How many recent events to show.
        #[arg(long, default_value_t = 20)]
        events: u32,
    },
    /// Push every local definition as desired state, without deploying: `mcp sync [--prune]`;
    /// with --apply, make every node run what the definitions say: `mcp sync --apply`.
    Sync {
        /// Also forget services and components that no definition has (their
        /// containers are not touched). Without it, they are only listed.
        #[arg(long, conflicts_with = "apply")]
        prune: bool,
        /// Deploy new and changed definitions and undeploy services no
        /// definition has, on every node, after showing the plan.
        #[arg(long)]
        apply: bool,
        /// With --apply: show the plan and stop there.
        #[arg(long, requires = "apply")]
        dry_run: bool,
        /// With --apply: apply without asking.
        #[arg(long, short, requires = "apply")]
        yes: bool,
    },
    /// Manage a container that no service claims: `mcp adopt nginx --as proxy/web`.
    Adopt {
        /// Container name or id, as `mcp ps` shows it.
        container: String,
        /// SERVICE/COMPONENT to manage it as (default: the container name split at its first '-').
        #[arg(long = "as")]
        target: Option<Target>,
        /// Node the container is on (default: the only configured node).
        #[arg(long)]
        node: Option<Name>,
    },
    /// Copy a local file into the service's directory on its node: `mcp push metacrypt ./app.toml config/app.toml`.
    Push(files::PushArgs),
    /// Copy a file from the service's directory on its node: `mcp pull metacrypt config/app.toml [./app.toml]`.
    Pull(files::PullArgs),
    /// Node resources: CPUs, load, memory, disk of /srv, containers, agent: `mcp node [NODE]`.
    Node {
        /// Only this node (default: every configured node).
        node: Option<Name>,
    },
    /// Every route and its host port, hostname and mode: `mcp routes [NODE]`.
    Routes {
        /// Only this node (default: every configured node).
        node: Option<Name>,
    },
    /// Service definitions: `mcp service show|edit|export SVC`.
    Service {
        #[command(subcommand)]
        command: service_cmd::ServiceCommand,
    },
    /// Secrets kept on a service's node, named by its definitions: `mcp secret set|list|rm SVC [NAME]`.
    Secret {
        #[command(subcommand)]
        command: secret_cmd::SecretCommand,
    },
    /// Get a token from MCIAS and keep it for the other commands: `mcp login [--username me]`.
    Login {
        /// Default: $USER. The password (and a TOTP code, when MCIAS asks
        /// for one) is asked on the terminal without echo, or read from the
        /// first (and second) line of standard input when that is not a
        /// terminal.
        #[arg(long)]
        username: Option<String>,
    },
    /// Who each node's agent takes you to be: name, roles, level, token expiry: `mcp whoami [NODE]`.
    Whoami {
        /// Only this node (default: every configured node).
        node: Option<Name>,
    },
    /// Event history, and with --follow new events as they happen: `mcp events [metacrypt] -f`.
    Events {
        /// Only this service.
        service: Option<Name>,
        /// Keep streaming new events.
        #[arg(long, short)]
        follow: bool,
        /// How many past events to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only the events this account caused (the BY column: a user, or
        /// mcp-agent for what the agent did on its own).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
    /// Container output of a service's components, merged, or of one: `mcp logs metacrypt/api --since 10m -f`.
    Logs(logs::LogsArgs),
    /// Print a shell completion script: `mcp completions bash > ~/.local/share/bash-completion/completions/mcp`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages of mcp and mcp-agent, one per command: `mcp man --dir ~/.local/share/man/man1`.
    Man {
        /// Directory to write mcp.1, mcp-<command>.1, mcp-agent.1, ... into (created if missing).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    // Validate local input before anything goes over the wire.
    let deploy_def = match &cli.command {
        Command::Deploy { target, .. } | Command::Diff { target } => {
            let paths = Paths::new(cli.config.clone(), cli.services_dir.clone());
            let def = load_definition(&paths, &target.service)?;
            if let Some(c) = &target.component {
                if def.component(c).is_none() {
                    let known: Vec<_> = def.components.iter().map(|c| c.name.as_str()).collect();
                    anyhow::bail!(
                        "service {} has no component {c} (components: {})",
                        def.name,
                        known.join(", ")
                    );
                }
            }
            Some(def)
        }
        _ => None,
    };
    if let Command::Login { username } = &cli.command {
        return login(&cli, username.clone()).await;
    }
    // Generated from the clap definitions: no config, no token.
    match &cli.command {
        Command::Completions { shell } => return docs::run_completions(*shell),
        Command::Man { dir } => return docs::run_man(dir),
        _ => {}
    }
    if let Command::Service { command } = &cli.command {
        if command.is_local() {
            return service_cmd::run_local(&cli, command);
        }
    }
    let cx = Context::load(&cli)?;
    match cli.command {
        Command::Deploy {
            target,
            dry_run,
            no_rollback,
            force,
            keep_removed,
            pull,
            deadline,
        } => {
            let def = deploy_def.ok_or_else(|| anyhow::anyhow!("definition not loaded"))?;
            let options = deploy::DeployOptions {
                dry_run,
                no_rollback,
                force,
                keep_removed,
                pull,
                deadline,
            };
            deploy::run_deploy(&cx, def, target, options).await
        }
        Command::Diff { target } => {
            let def = deploy_def.ok_or_else(|| anyhow::anyhow!("definition not loaded"))?;
            deploy::run_diff(&cx, def, target).await
        }
        Command::Rollback { target, node } => {
            lifecycle(&cx, target, node, LifecycleCall::Rollback).await
        }
        Command::Stop { target, node } => lifecycle(&cx, target, node, LifecycleCall::Stop).await,
        Command::Start { target, node } => lifecycle(&cx, target, node, LifecycleCall::Start).await,
        Command::Restart { target, node } => lifecycle_cmd::restart(&cx, target, node).await,
        Command::Undeploy { target, node } => {
            lifecycle(&cx, target, node, LifecycleCall::Undeploy).await
        }
        Command::Purge {
            target,
            node,
            dry_run,
        } => lifecycle_cmd::purge(&cx, target, node, dry_run).await,
        Command::Exec(args) => exec::run(&cx, args).await,
        Command::List => {
            let (responses, failed) = across_nodes(&cx, &cx.all_nodes(), |ch| async move {
                let mut c = client::agent(ch);
                Ok(c.list_services(proto::ListServicesRequest {})
                    .await?
                    .into_inner())
            })
            .await;
            output::print_list(&responses, cx.format)?;
            Ok(exit_code(failed))
        }
        Command::Ps => {
            let (responses, failed) = across_nodes(&cx, &cx.all_nodes(), |ch| async move {
                let mut c = client::agent(ch);
                Ok(c.ps(proto::PsRequest {}).await?.into_inner())
            })
            .await;
            output::print_ps(&responses, cx.format)?;
            Ok(exit_code(failed))
        }
        Command::Status { service, events } => {
            let nodes = cx.nodes_for(service.as_ref());
            let seeking = service.is_some() && nodes.len() > 1;
            let service = service.map(|s| s.to_string()).unwrap_or_default();
            let (responses, failed) = across_nodes_seeking(&cx, &nodes, seeking, |ch| {
                let mut c = client::agent(ch);
                let request = proto::StatusRequest {
                    service: service.clone(),
                    events,
                };
                async move { Ok(c.status(request).await?.into_inner()) }
            })
            .await;
            output::print_status(&responses, cx.format)?;
            Ok(exit_code(failed))
        }
        Command::Sync {
            apply: true,
            dry_run,
            yes,
            ..
        } => apply::run(&cx, dry_run, yes).await,
        Command::Sync { prune, .. } => sync(&cx, prune).await,
        Command::Adopt {
            container,
            target,
            node,
        } => adopt(&cx, container, target, node).await,
        Command::Events {
            service,
            follow,
            limit,
            by,
        } => events(&cx, service, follow, limit, by).await,
        Command::Push(args) => files::push(&cx, args).await,
        Command::Pull(args) => files::pull(&cx, args).await,
        Command::Node { node } => node_cmd::run(&cx, node).await,
        Command::Routes { node } => routes_cmd::run(&cx, node).await,
        Command::Service { command } => service_cmd::run_remote(&cx, command).await,
        Command::Secret { command } => secret_cmd::run(&cx, command).await,
        Command::Logs(args) => logs::logs(&cx, args).await,
        Command::Whoami { node } => {
            let nodes = node.map_or_else(|| cx.all_nodes(), |n| vec![n]);
            let (answers, failed) = across_nodes(&cx, &nodes, |ch| async move {
                let mut c = client::agent(ch);
                Ok(c.who_am_i(proto::WhoAmIRequest {}).await?.into_inner())
            })
            .await;
            output::print_whoami(&answers, cx.format)?;
            Ok(exit_code(failed))
        }
        Command::Login { .. } | Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("handled before the context is loaded")
        }
    }
}

async fn login(cli: &Cli, username: Option<String>) -> Result<ExitCode> {
    use crate::mcias::{LoginOutcome, LoginRequest};
    let paths = Paths::new(cli.config.clone(), cli.services_dir.clone());
    let config = load_config(&paths.config)?;
    let Some(mcias) = config.mcias else {
        anyhow::bail!(
            "no [mcias] in {}: add url = \"https://...\" and ca = \"/path/ca.pem\"",
            paths.config.display()
        );
    };
    let username = match username.or_else(|| std::env::var("USER").ok()) {
        Some(u) if !u.is_empty() => u,
        _ => anyhow::bail!("no username: pass --username"),
    };
    let password = read_secret(&format!("MCIAS password for {username}: "))?;
    let endpoints = crate::mcias::Endpoints {
        login: mcias.login_path.clone(),
        ..Default::default()
    };
    let client = crate::mcias::McIasClient::new(&mcias.url, &mcias.ca, endpoints)?;
    let mut request = LoginRequest {
        username: &username,
        password: &password,
        service_name: &mcias.service_name,
        tags: &mcias.tags,
        totp_code: None,
    };
    let mut outcome = client.login(&request).await?;
    let code;
    if outcome == LoginOutcome::TotpRequired {
        code = read_secret("TOTP code: ")?;
        if code.trim().is_empty() {
            anyhow::bail!("MCIAS wants a TOTP code for {username}, and none was given");
        }
        request.totp_code = Some(code.trim());
        outcome = client.login(&request).await?;
    }
    let (token, expires_at) = match outcome {
        LoginOutcome::LoggedIn { token, expires_at } => (token, expires_at),
        LoginOutcome::TotpRequired => {
            anyhow::bail!("login refused: the TOTP code was not accepted")
        }
        LoginOutcome::BadCredentials if request.totp_code.is_some() => {
            anyhow::bail!("login refused: bad username, password or TOTP code")
        }
        LoginOutcome::BadCredentials => anyhow::bail!("login refused: bad username or password"),
        LoginOutcome::Refused(Some(reason)) => anyhow::bail!("login refused by policy: {reason}"),
        LoginOutcome::Refused(None) => {
            anyhow::bail!("login refused by policy (MCIAS gave no reason)")
        }
    };
    if let Some(dir) = paths.token.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::grpc::tls::write_private(&paths.token, token.as_bytes(), 0o600)?;
    let expiry = match expires_at {
        Some(secs) => format!("; it expires at {}", output::expiry(secs)),
        None => "; MCIAS did not say when it expires".to_string(),
    };
    eprintln!(
        "logged in as {username}; token stored in {} (mode 0600){expiry}",
        paths.token.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A secret from the terminal without echo, else the next line of stdin.
fn read_secret(prompt: &str) -> Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return Ok(rpassword::prompt_password(prompt)?);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

async fn sync(cx: &Context, prune: bool) -> Result<ExitCode> {
    let defs = config::load_all_definitions(&cx.paths)?;
    // Every configured node is told its full set, so a node whose last
    // definition was deleted reports its services as prunable.
    let mut by_node: std::collections::BTreeMap<Name, Vec<proto::ServiceSpec>> = cx
        .all_nodes()
        .into_iter()
        .map(|n| (n, Vec::new()))
        .collect();
    for def in &defs {
        by_node
            .get_mut(&def.node)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "service {} names node {}, which is not in {}",
                    def.name,
                    def.node,
                    cx.paths.config.display()
                )
            })?
            .push(service_to_proto(def));
    }
    let calls = by_node.into_iter().map(|(node, services)| async move {
        let mut client = cx.client(&node).await?;
        let reply = client
            .sync(proto::SyncRequest { services, prune })
            .await
            .map_err(|s| client::describe_status(&node, &s))?;
        Ok::<_, anyhow::Error>(reply.into_inner())
    });
    let mut failed = false;
    let mut reports = Vec::new();
    for r in futures::future::join_all(calls).await {
        match r {
            Ok(report) => reports.push(report),
            Err(e) => {
                eprintln!("mcp: {e:#}");
                failed = true;
            }
        }
    }
    output::print_sync(&reports, cx.format)?;
    Ok(exit_code(failed))
}

async fn adopt(
    cx: &Context,
    container: String,
    target: Option<Target>,
    node: Option<Name>,
) -> Result<ExitCode> {
    let target = match target {
        Some(t) => t,
        None => container
            .split_once('-')
            .and_then(|(s, c)| format!("{s}/{c}").parse::<Target>().ok())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "cannot derive SERVICE/COMPONENT from {container:?}: pass --as SERVICE/COMPONENT"
                )
            })?,
    };
    let Some(component) = target.component.clone() else {
        anyhow::bail!("--as needs SERVICE/COMPONENT, not just a service");
    };
    let node = match node {
        Some(n) => n,
        None => match cx.all_nodes().as_slice() {
            [only] => only.clone(),
            _ => anyhow::bail!("several nodes are configured: pass --node NODE"),
        },
    };
    let mut client = cx.client(&node).await?;
    let reply = client
        .adopt(proto::AdoptRequest {
            container,
            service: target.service.to_string(),
            component: component.to_string(),
        })
        .await
        .map_err(|s| client::describe_status(&node, &s))?
        .into_inner();
    output::print_adopted(&reply, cx.format)?;
    Ok(ExitCode::SUCCESS)
}

async fn events(
    cx: &Context,
    service: Option<Name>,
    follow: bool,
    limit: u32,
    by: Option<String>,
) -> Result<ExitCode> {
    use futures::StreamExt;
    let request = proto::EventsRequest {
        service: service.as_ref().map(|s| s.to_string()).unwrap_or_default(),
        limit,
        follow,
        by: by.unwrap_or_default(),
    };
    let nodes = cx.nodes_for(service.as_ref());
    if !follow {
        // Each node's history, read whole within the timeout, then merged
        // in time order.
        let seeking = service.is_some() && nodes.len() > 1;
        let (answers, failed) = across_nodes_seeking(cx, &nodes, seeking, |ch| {
            let mut c = client::agent(ch);
            let request = request.clone();
            async move {
                let mut stream = c.events(request).await?.into_inner();
                let mut events = Vec::new();
                while let Some(e) = stream.message().await? {
                    events.push(e);
                }
                Ok(events)
            }
        })
        .await;
        let mut all: Vec<proto::Event> = output::answered(&answers).flatten().cloned().collect();
        all.sort_by_key(|e| e.ts_ms);
        let keep = if limit == 0 {
            all.len()
        } else {
            limit as usize
        };
        let skip = all.len().saturating_sub(keep);
        let mut printer = output::EventPrinter::new(cx.format, false);
        for e in all.into_iter().skip(skip) {
            printer.event(e)?;
        }
        for failure in output::failures(&answers) {
            printer.failure(failure.clone());
        }
        printer.finish()?;
        return Ok(exit_code(failed));
    }
    // Following: the streams are opened concurrently, each within the timeout.
    let (answers, mut failed) = across_nodes(cx, &nodes, |ch| {
        let mut c = client::agent(ch);
        let request = request.clone();
        async move { Ok(c.events(request).await?.into_inner()) }
    })
    .await;
    let streams: Vec<_> = nodes
        .iter()
        .zip(answers)
        .filter_map(|(node, answer)| match answer {
            NodeAnswer::Answered(stream) => {
                let node = node.clone();
                Some(stream.map(move |e| (node.clone(), e)).boxed())
            }
            NodeAnswer::Failed(_) => None,
        })
        .collect();
    let mut merged = futures::stream::select_all(streams);
    let mut printer = output::EventPrinter::new(cx.format, follow);
    while let Some((node, item)) = merged.next().await {
        match item {
            Ok(event) => printer.event(event)?,
            Err(status) => {
                eprintln!("mcp: {:#}", client::describe_status(&node, &status));
                failed = true;
            }
        }
    }
    printer.finish()?;
    Ok(exit_code(failed))
}

/// `--deadline`: a duration such as `90s` or `5m`, within the agent's bounds.
fn parse_deadline(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 90s, 5m)"))?;
    let max = crate::grpc::server::MAX_DEPLOY_DEADLINE;
    if d < std::time::Duration::from_secs(1) || d > max {
        return Err(format!(
            "{s:?}: a deadline is 1s to {} (the agent bounds every request at 10m)",
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

pub(super) fn report(
    cx: &Context,
    node: &str,
    service: &str,
    results: &[proto::ComponentResult],
) -> Result<ExitCode> {
    output::print_results(
        &OperationReport {
            node,
            service,
            results,
        },
        cx.format,
    )?;
    Ok(exit_code(results.iter().any(|r| !r.ok)))
}
