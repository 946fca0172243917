use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = mcp::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(mcp::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mcp: {e:#}");
            ExitCode::FAILURE
        }
    }
}
