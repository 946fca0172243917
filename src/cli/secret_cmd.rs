//! `mcp secret set|list|rm`: a service's secrets in its node's store. A
//! value goes to the agent and never comes back: `list` shows names and
//! dates only.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};

use super::client::describe_status;
use super::context::node_of;
use super::output::{self, print_json, OutputFormat};
use super::Context;
use crate::names::Name;
use crate::proto;
use crate::proto::secrets_client::SecretsClient;
use crate::secrets::MAX_SECRET_BYTES;
use crate::spec::SecretName;

#[derive(clap::Subcommand, Debug)]
pub enum SecretCommand {
    /// Store a secret of a service on its node: `mcp secret set shop db-password < file`.
    /// The value is read from standard input (one trailing newline dropped;
    /// asked without echo on a terminal), or --from-file byte for byte.
    /// Containers created from then on get it; `mcp deploy --force` gives
    /// it to running ones.
    Set {
        service: Name,
        /// The name definitions use (`secrets`, `secret_files`).
        name: SecretName,
        /// Read the value from this file, exactly as it is.
        #[arg(long, value_name = "PATH")]
        from_file: Option<PathBuf>,
        /// Node to store it on (default: the node in the service's definition).
        #[arg(long)]
        node: Option<Name>,
    },
    /// A service's secrets on its node: names and when each was set, never values.
    List {
        service: Name,
        /// Node to ask (default: the node in the service's definition).
        #[arg(long)]
        node: Option<Name>,
    },
    /// Remove a secret: `mcp secret rm shop db-password`. Running containers
    /// keep what they were given.
    Rm {
        service: Name,
        name: SecretName,
        /// Node to ask (default: the node in the service's definition).
        #[arg(long)]
        node: Option<Name>,
    },
}

/// A value from standard input: asked without echo on a terminal; piped,
/// read whole with one trailing newline dropped (`echo pw | mcp secret set`).
fn value_from_stdin(name: &SecretName) -> Result<Vec<u8>> {
    if std::io::stdin().is_terminal() {
        let typed = rpassword::prompt_password(format!("value of secret {name}: "))?;
        return Ok(typed.into_bytes());
    }
    let mut value = Vec::new();
    // One byte more than allowed tells "too large" without reading it all.
    std::io::stdin()
        .take(MAX_SECRET_BYTES as u64 + 2)
        .read_to_end(&mut value)
        .context("cannot read the value from standard input")?;
    Ok(strip_newline(value))
}

/// One trailing newline (`\n` or `\r\n`) less.
fn strip_newline(mut value: Vec<u8>) -> Vec<u8> {
    if value.last() == Some(&b'\n') {
        value.pop();
        if value.last() == Some(&b'\r') {
            value.pop();
        }
    }
    value
}

fn value_from_file(path: &PathBuf) -> Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut value = Vec::new();
    file.take(MAX_SECRET_BYTES as u64 + 1)
        .read_to_end(&mut value)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(value)
}

fn check_value(name: &SecretName, value: &[u8]) -> Result<()> {
    if value.is_empty() {
        bail!("secret {name}: the value is empty");
    }
    if value.len() > MAX_SECRET_BYTES {
        bail!(
            "secret {name}: the value is larger than {} KiB",
            MAX_SECRET_BYTES / 1024
        );
    }
    Ok(())
}

pub async fn run(cx: &Context, command: SecretCommand) -> Result<ExitCode> {
    match command {
        SecretCommand::Set {
            service,
            name,
            from_file,
            node,
        } => {
            // The value first: nothing goes over the wire for a bad one.
            let value = match &from_file {
                Some(path) => value_from_file(path)?,
                None => value_from_stdin(&name)?,
            };
            check_value(&name, &value)?;
            let node = node_of(cx, &service, node)?;
            let mut client = SecretsClient::new(cx.channel(&node).await?);
            let reply = client
                .set(proto::SetSecretRequest {
                    service: service.to_string(),
                    name: name.to_string(),
                    value,
                })
                .await
                .map_err(|s| describe_status(&node, &s))?
                .into_inner();
            if cx.format == OutputFormat::Json {
                print_json(&reply)?;
            } else {
                eprintln!(
                    "{node}/{service}: secret {name} set; containers created from now on get \
                     it (`mcp deploy --force {service}` gives it to running ones)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SecretCommand::List { service, node } => {
            let node = node_of(cx, &service, node)?;
            let mut client = SecretsClient::new(cx.channel(&node).await?);
            let reply = client
                .list(proto::ListSecretsRequest {
                    service: service.to_string(),
                })
                .await
                .map_err(|s| describe_status(&node, &s))?
                .into_inner();
            if cx.format == OutputFormat::Json {
                print_json(&reply)?;
            } else if reply.secrets.is_empty() {
                eprintln!("{node}/{service}: no secrets");
            } else {
                let mut t = output::table(&["name", "updated"]);
                for s in &reply.secrets {
                    t.add_row(vec![
                        s.name.clone(),
                        format!(
                            "{} ({})",
                            output::timestamp(s.updated_at_ms),
                            output::ago(s.updated_at_ms)
                        ),
                    ]);
                }
                use std::io::Write as _;
                writeln!(std::io::stdout().lock(), "{t}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SecretCommand::Rm {
            service,
            name,
            node,
        } => {
            let node = node_of(cx, &service, node)?;
            let mut client = SecretsClient::new(cx.channel(&node).await?);
            let reply = client
                .remove(proto::RemoveSecretRequest {
                    service: service.to_string(),
                    name: name.to_string(),
                })
                .await
                .map_err(|s| describe_status(&node, &s))?
                .into_inner();
            if cx.format == OutputFormat::Json {
                print_json(&reply)?;
            } else {
                eprintln!("{node}/{service}: secret {name} removed");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_dropped() {
        assert_eq!(strip_newline(b"pw\n".to_vec()), b"pw");
        assert_eq!(strip_newline(b"pw\r\n".to_vec()), b"pw");
        assert_eq!(strip_newline(b"pw\n\n".to_vec()), b"pw\n");
        assert_eq!(strip_newline(b"pw".to_vec()), b"pw");
        assert_eq!(strip_newline(b"\n".to_vec()), b"");
    }

    #[test]
    fn empty_and_oversized_values_are_refused_before_sending() {
        let name: SecretName = "db".parse().unwrap();
        assert!(check_value(&name, b"").is_err());
        assert!(check_value(&name, &vec![0; MAX_SECRET_BYTES + 1]).is_err());
        assert!(check_value(&name, &vec![0; MAX_SECRET_BYTES]).is_ok());
    }
}
