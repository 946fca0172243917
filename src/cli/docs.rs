//! `mcp completions SHELL` and `mcp man`: shell completion scripts and man
//! pages, generated from the clap definitions of both binaries, so they
//! never disagree with `--help`. Neither needs a config or a token.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::CommandFactory;

use super::Cli;
use crate::agent::AgentCli;

/// Writes the completion script of `mcp` for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut Cli::command(), "mcp", out);
}

/// Writes the man pages of `mcp` and `mcp-agent` into `dir` (created if
/// missing): `mcp.1`, one `mcp-<command>.1` per subcommand (`mcp-service-show.1`
/// for nested ones), and the same for `mcp-agent`. Returns the files written.
pub fn man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for cmd in [Cli::command(), AgentCli::command()] {
        clap_mangen::generate_to(cmd, dir)
            .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    }
    let mut written = pages_in(dir)?;
    written.sort();
    Ok(written)
}

/// The `mcp*.1` files in `dir`.
fn pages_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut pages = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("mcp") && name.ends_with(".1") {
            pages.push(path);
        }
    }
    Ok(pages)
}

pub(super) fn run_completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    completions(shell, &mut out);
    std::io::Write::flush(&mut out)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run_man(dir: &Path) -> Result<ExitCode> {
    let written = man_pages(dir)?;
    eprintln!(
        "wrote {} man pages into {} (read one with `man -l {}`)",
        written.len(),
        dir.display(),
        dir.join("mcp.1").display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(shell: clap_complete::Shell) -> String {
        let mut out = Vec::new();
        completions(shell, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn completion_scripts_name_the_subcommands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let script = script(shell);
            for sub in ["deploy", "logs", "events", "completions", "man", "service"] {
                assert!(script.contains(sub), "{shell}: no {sub} in\n{script}");
            }
        }
    }

    #[test]
    fn man_pages_for_every_command_of_both_binaries() {
        let dir = tempfile::tempdir().unwrap();
        let written = man_pages(dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for page in [
            "mcp.1",
            "mcp-deploy.1",
            "mcp-logs.1",
            "mcp-service-show.1",
            "mcp-agent.1",
            "mcp-agent-serve.1",
        ] {
            assert!(names.iter().any(|n| n == page), "{page} not in {names:?}");
        }
        let top = std::fs::read_to_string(dir.path().join("mcp.1")).unwrap();
        assert!(top.contains(".TH mcp 1"), "{top}");
    }
}
