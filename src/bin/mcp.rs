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
        Err(e) if closed_stdout(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The reader of our output went away (`mcp events | head`): not a failure.
fn closed_stdout(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
