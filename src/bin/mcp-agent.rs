use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(mcp::agent::log_filter(
            std::env::var("MCP_LOG").ok().as_deref(),
        ))
        .init();
    let cli = mcp::agent::AgentCli::parse();
    match mcp::agent::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
