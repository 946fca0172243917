//! What every command that talks to agents needs: the operator's files
//! (config, token, definitions), connections to nodes within the timeout,
//! and the same call on several nodes at once.

use std::process::ExitCode;

use anyhow::{Context as _, Result};

use super::client::{self, AuthedChannel};
use super::config::{self, load_config, load_definition, load_token, CliConfig, Paths};
use super::output::{self, NodeAnswer, OutputFormat};
use super::Cli;
use crate::names::Name;

/// Everything a command needs from the operator's files.
pub struct Context {
    pub paths: Paths,
    pub config: CliConfig,
    /// `MCP_TOKEN` or the token file ("" when there is none and every node
    /// has a `token_file`). Nodes with a `token_file` use theirs: see
    /// [`Context::token_for`].
    token: String,
    /// Why `token` is empty, for a node that would need it.
    token_error: Option<String>,
    pub format: OutputFormat,
    /// Per node: connect, and for the read commands connect + call.
    pub timeout: std::time::Duration,
}

impl Context {
    pub fn load(cli: &Cli) -> Result<Self> {
        let paths = Paths::new(cli.config.clone(), cli.services_dir.clone());
        let config = load_config(&paths.config)?;
        let (token, token_error) = match load_token(&paths) {
            Ok(t) => (t, None),
            // Fail early, as before, unless every node has its own token.
            Err(e) if config.nodes.values().all(|n| n.token_file.is_some()) => {
                (String::new(), Some(format!("{e:#}")))
            }
            Err(e) => return Err(e),
        };
        let secs = cli
            .timeout
            .or(config.timeout_secs)
            .unwrap_or(config::DEFAULT_TIMEOUT_SECS);
        Ok(Context {
            paths,
            config,
            token,
            token_error,
            format: cli.output,
            timeout: std::time::Duration::from_secs(secs),
        })
    }

    /// A channel to `node`'s agent with the node's token, for any of its
    /// services; connect and TLS handshake bounded by the timeout (a peer
    /// that accepts TCP and says nothing must not hang the command).
    pub async fn channel(&self, node: &Name) -> Result<AuthedChannel> {
        let config = self.config.node(node, &self.paths.config)?;
        tokio::time::timeout(self.timeout, self.connect(node))
            .await
        .map_err(|_| {
            anyhow::anyhow!(
                "node {node}: cannot reach the agent at {}: timed out after {}s (is mcp-agent running there?)",
                config.address,
                self.timeout.as_secs()
            )
        })?
    }

    /// Connects to `node`; only the TCP connect is bounded (callers bound
    /// the whole).
    async fn connect(&self, node: &Name) -> Result<AuthedChannel> {
        let config = self.config.node(node, &self.paths.config)?;
        let token = self.token_for(node)?;
        client::authed_channel(node, config, &token, self.timeout).await
    }

    /// A client of `node`'s `Agent` service (see [`Context::channel`]).
    pub async fn client(&self, node: &Name) -> Result<client::Client> {
        Ok(client::agent(self.channel(node).await?))
    }

    /// The bearer token for `node`: its `token_file`, else the global one.
    pub fn token_for(&self, node: &Name) -> Result<String> {
        let config = self.config.node(node, &self.paths.config)?;
        let global = match &self.token_error {
            None => Ok(self.token.clone()),
            Some(e) => Err(e.clone()),
        };
        config::node_token(node, config, &global)
    }

    pub fn all_nodes(&self) -> Vec<Name> {
        self.config.nodes.keys().cloned().collect()
    }

    /// The node of `service`'s definition, or every node when there is no
    /// service or no local definition for it.
    pub fn nodes_for(&self, service: Option<&Name>) -> Vec<Name> {
        service
            .and_then(|s| load_definition(&self.paths, s).ok())
            .map(|def| vec![def.node])
            .unwrap_or_else(|| self.all_nodes())
    }
}

pub fn exit_code(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs `call` against `nodes` concurrently, each node's connect + call
/// bounded by the timeout. One answer per node, in node order: what it said,
/// or why it said nothing (also told on stderr); and whether any node failed.
pub async fn across_nodes<T, F, Fut>(
    cx: &Context,
    nodes: &[Name],
    call: F,
) -> (Vec<NodeAnswer<T>>, bool)
where
    F: Fn(AuthedChannel) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    across_nodes_seeking(cx, nodes, false, call).await
}

/// [`across_nodes`] for something that may be on any of them (a service
/// with no local definition): when a node has it, the others' NOT_FOUND is
/// no failure; when none has it, each says so and the command fails.
pub async fn across_nodes_seeking<T, F, Fut>(
    cx: &Context,
    nodes: &[Name],
    seeking: bool,
    call: F,
) -> (Vec<NodeAnswer<T>>, bool)
where
    F: Fn(AuthedChannel) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let calls = nodes.iter().map(|name| {
        let call = &call;
        async move {
            let work = async {
                let channel = cx
                    .connect(name)
                    .await
                    .map_err(|e| output::NodeFailure::new(name, true, &e))?;
                call(channel).await.map_err(|s| output::NodeFailure {
                    not_found: s.code() == tonic::Code::NotFound,
                    ..output::NodeFailure::new(name, false, &client::describe_status(name, &s))
                })
            };
            match tokio::time::timeout(cx.timeout, work).await {
                Ok(Ok(v)) => NodeAnswer::Answered(v),
                Ok(Err(failure)) => NodeAnswer::Failed(failure),
                Err(_) => NodeAnswer::Failed(output::NodeFailure {
                    node: name.to_string(),
                    error: format!("timed out after {}s", cx.timeout.as_secs()),
                    unreachable: true,
                    not_found: false,
                }),
            }
        }
    });
    let mut answers = futures::future::join_all(calls).await;
    if seeking && output::answered(&answers).next().is_some() {
        answers.retain(|a| !matches!(a, NodeAnswer::Failed(f) if f.not_found));
    }
    let mut failed = false;
    for failure in output::failures(&answers) {
        eprintln!("mcp: {failure}");
        failed = true;
    }
    if cx.config.nodes.is_empty() {
        eprintln!("mcp: no nodes in {}", cx.paths.config.display());
        failed = true;
    }
    (answers, failed)
}

/// `--node`, else the node of the service's definition.
pub fn node_of(cx: &Context, service: &Name, node: Option<Name>) -> Result<Name> {
    match node {
        Some(n) => Ok(n),
        None => load_definition(&cx.paths, service)
            .map(|d| d.node)
            .with_context(|| format!("which node runs {service}? pass --node NODE")),
    }
}
