//! `mcp service show|edit|export SVC`: the local definition, validated; an
//! editing session that writes only a valid file; and the agent's deployed
//! spec back as TOML.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _, Result};

use super::client::describe_status;
use super::config::Paths;
use super::context::node_of;
use super::output::{print_json, OutputFormat};
use super::{Cli, Context};
use crate::grpc::convert::service_from_proto;
use crate::names::Name;
use crate::proto;
use crate::proto::specs_client::SpecsClient;
use crate::spec::{parse_service, to_toml};

#[derive(clap::Subcommand, Debug)]
pub enum ServiceCommand {
    /// Print the local definition, after validating it (errors name file:line:column).
    Show { service: Name },
    /// Edit the local definition in $EDITOR (default vi) on a copy; the file is
    /// written, atomically, only when the edit is valid.
    Edit { service: Name },
    /// Print the spec deployed on the node as TOML (parses back to the same definition).
    Export {
        service: Name,
        /// Node to ask (default: the node in the service's definition).
        #[arg(long)]
        node: Option<Name>,
    },
}

impl ServiceCommand {
    /// Show and edit work on local files only: no config, token or agent needed.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            ServiceCommand::Show { .. } | ServiceCommand::Edit { .. }
        )
    }
}

fn definition_path(paths: &Paths, service: &Name) -> PathBuf {
    paths.services.join(format!("{service}.toml"))
}

fn read_definition(path: &Path, service: &Name) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no definition for service {service}: expected {}",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// `service show` and `service edit`.
pub fn run_local(cli: &Cli, command: &ServiceCommand) -> Result<ExitCode> {
    let paths = Paths::new(cli.config.clone(), cli.services_dir.clone());
    match command {
        ServiceCommand::Show { service } => show(&paths, service, cli.output),
        ServiceCommand::Edit { service } => {
            let path = definition_path(&paths, service);
            let stdin_is_terminal = std::io::stdin().is_terminal();
            let outcome = edit(&path, &mut |copy| run_editor(copy), &mut |error| {
                ask_again(error, stdin_is_terminal)
            })?;
            match outcome {
                EditOutcome::Unchanged => eprintln!("{}: no changes", path.display()),
                EditOutcome::Written => eprintln!("{}: written", path.display()),
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Export { .. } => bail!("service export needs the agent"),
    }
}

fn show(paths: &Paths, service: &Name, format: OutputFormat) -> Result<ExitCode> {
    let path = definition_path(paths, service);
    let text = read_definition(&path, service)?;
    let def = parse_service(&path, &text)?;
    if format == OutputFormat::Json {
        print_json(&def)?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditOutcome {
    Unchanged,
    Written,
}

/// The editing loop: copy, edit, validate; on an invalid edit, ask whether to
/// edit again (the copy keeps the edit) or give up without writing. The
/// definition is replaced atomically (temp file + rename, mode kept) only
/// with a valid text. `editor` edits the copy in place; `again` gets the
/// error and answers whether to re-open the editor.
pub fn edit(
    path: &Path,
    editor: &mut dyn FnMut(&Path) -> Result<()>,
    again: &mut dyn FnMut(&str) -> Result<bool>,
) -> Result<EditOutcome> {
    let service = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| Name::parse(s).ok())
        .ok_or_else(|| anyhow!("{} is not named <service>.toml", path.display()))?;
    let original = read_definition(path, &service)?;
    // The copy has the definition's file name, for the editor's syntax
    // highlighting and the name check.
    let dir = tempfile::Builder::new()
        .prefix("mcp-edit-")
        .tempdir()
        .context("cannot create a temp directory for the copy")?;
    let copy = dir.path().join(format!("{service}.toml"));
    std::fs::write(&copy, &original).context("cannot write the copy")?;
    loop {
        editor(&copy)?;
        let text = std::fs::read_to_string(&copy).context("cannot read the edited copy")?;
        if text == original {
            return Ok(EditOutcome::Unchanged);
        }
        match parse_service(path, &text) {
            Ok(_) => {
                write_atomically(path, &text)?;
                return Ok(EditOutcome::Written);
            }
            Err(e) => {
                let error = format!("{e} (in your edited copy)");
                if !again(&error)? {
                    bail!("{error}\n{} was not changed", path.display());
                }
            }
        }
    }
}

/// Runs `$EDITOR COPY`; `$EDITOR` is split on white space (like git, for
/// "code --wait"); default `vi`.
fn run_editor(copy: &Path) -> Result<()> {
    let editor = std::env::var("EDITOR")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string());
    let mut words = editor.split_whitespace();
    let program = words.next().unwrap_or("vi");
    let status = std::process::Command::new(program)
        .args(words)
        .arg(copy)
        .status()
        .with_context(|| format!("cannot run the editor {editor:?} (set EDITOR)"))?;
    if !status.success() {
        bail!("the editor {editor:?} failed ({status}): nothing was written");
    }
    Ok(())
}

/// Prints the error and asks "edit again? [Y/n]" on the terminal. Without a
/// terminal on stdin nobody can answer: no.
fn ask_again(error: &str, stdin_is_terminal: bool) -> Result<bool> {
    if !stdin_is_terminal {
        return Ok(false);
    }
    let mut err = std::io::stderr().lock();
    writeln!(err, "mcp: {error}")?;
    write!(err, "edit again? [Y/n] ")?;
    err.flush()?;
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer)? == 0 {
        return Ok(false);
    }
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "" | "y" | "yes"
    ))
}

/// Replaces `path` with `text` through a temp file in the same directory
/// (the real file's, when `path` is a symlink), keeping its mode.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".mcp-edit-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
    temp.write_all(text.as_bytes())?;
    if let Ok(meta) = std::fs::metadata(&target) {
        temp.as_file().set_permissions(meta.permissions())?;
    }
    temp.as_file().sync_all()?;
    temp.persist(&target)
        .with_context(|| format!("cannot replace {}", target.display()))?;
    Ok(())
}

/// `service export`.
pub(super) async fn run_remote(cx: &Context, command: ServiceCommand) -> Result<ExitCode> {
    let ServiceCommand::Export { service, node } = command else {
        bail!("this service command works on local files");
    };
    let node = node_of(cx, &service, node)?;
    let mut client = SpecsClient::new(cx.channel(&node).await?);
    let response = client
        .export(proto::ExportRequest {
            service: service.to_string(),
        })
        .await
        .map_err(|s| describe_status(&node, &s))?
        .into_inner();
    if cx.format == OutputFormat::Json {
        print_json(&response)?;
        return Ok(ExitCode::SUCCESS);
    }
    let spec = response
        .service
        .ok_or_else(|| anyhow!("node {node}: the agent sent no spec"))?;
    let def = service_from_proto(spec)
        .map_err(|e| anyhow!("node {node}: the agent's spec is not valid: {e}"))?;
    for c in &response.undeployed {
        eprintln!(
            "mcp: note: {service}/{c} was never deployed on {node}: its last pushed spec is shown"
        );
    }
    std::io::stdout()
        .lock()
        .write_all(to_toml(&def).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const GOOD: &str =
        "name = \"web\"\nnode = \"n1\"\n\n[[components]]\nname = \"app\"\nimage = \"img:1\"\n";

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.toml");
        std::fs::write(&path, GOOD).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        (dir, path)
    }

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn a_valid_edit_is_written_atomically_with_the_mode_kept() {
        let (dir, path) = setup();
        let outcome = edit(
            &path,
            &mut |copy| {
                let t = std::fs::read_to_string(copy)?;
                std::fs::write(copy, t.replace("img:1", "img:2"))?;
                Ok(())
            },
            &mut |e| panic!("asked again: {e}"),
        )
        .unwrap();
        assert_eq!(outcome, EditOutcome::Written);
        assert!(std::fs::read_to_string(&path).unwrap().contains("img:2"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(entries(dir.path()), 1, "no temp file left");
    }

    #[test]
    fn unchanged_edits_write_nothing() {
        let (_dir, path) = setup();
        let outcome = edit(&path, &mut |_| Ok(()), &mut |_| Ok(true)).unwrap();
        assert_eq!(outcome, EditOutcome::Unchanged);
    }

    #[test]
    fn an_invalid_edit_is_offered_again_then_fixed() {
        let (_dir, path) = setup();
        let mut round = 0;
        let mut errors = Vec::new();
        let outcome = edit(
            &path,
            &mut |copy| {
                round += 1;
                let t = std::fs::read_to_string(copy)?;
                let t = if round == 1 {
                    t.replace("image", "imag")
                } else {
                    // The copy kept the bad edit: fix it.
                    assert!(t.contains("imag ="), "{t}");
                    t.replace("imag =", "image =").replace("img:1", "img:3")
                };
                std::fs::write(copy, t)?;
                Ok(())
            },
            &mut |e| {
                errors.push(e.to_string());
                Ok(true)
            },
        )
        .unwrap();
        assert_eq!(outcome, EditOutcome::Written);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("web.toml:6:1"), "{}", errors[0]);
        assert!(std::fs::read_to_string(&path).unwrap().contains("img:3"));
    }

    #[test]
    fn an_invalid_edit_not_retried_leaves_the_file_alone() {
        let (dir, path) = setup();
        let err = edit(
            &path,
            &mut |copy| {
                std::fs::write(copy, "name = \"other\"\nnode = \"n1\"\n")?;
                Ok(())
            },
            &mut |_| Ok(false),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("must match the file name"), "{err}");
        assert!(err.contains("was not changed"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), GOOD);
        assert_eq!(entries(dir.path()), 1);
        // No terminal: no question, no.
        assert!(!ask_again("x", false).unwrap());
    }

    #[test]
    fn a_failing_editor_writes_nothing() {
        let (_dir, path) = setup();
        let err = edit(
            &path,
            &mut |copy| {
                std::fs::write(copy, "garbage")?;
                bail!("the editor failed")
            },
            &mut |_| Ok(true),
        )
        .unwrap_err();
        assert!(err.to_string().contains("editor failed"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), GOOD);
    }

    #[test]
    fn editing_through_a_symlink_replaces_the_target() {
        let (dir, path) = setup();
        let link_dir = dir.path().join("links");
        std::fs::create_dir(&link_dir).unwrap();
        let link = link_dir.join("web.toml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        edit(
            &link,
            &mut |copy| {
                let t = std::fs::read_to_string(copy)?;
                std::fs::write(copy, t.replace("img:1", "img:9"))?;
                Ok(())
            },
            &mut |_| Ok(false),
        )
        .unwrap();
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
        assert!(std::fs::read_to_string(&path).unwrap().contains("img:9"));
    }
}
