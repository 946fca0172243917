//! `scripts/check-deploy-files.sh`, which checks the systemd unit and the
//! NixOS module in the test command: a checker it cannot install is a
//! failure, never a skip. And what the agent's notifications need of both
//! (tests/systemd.rs shows the agent's side).

use std::path::Path;
use std::process::Command;

#[test]
fn a_checker_that_cannot_be_installed_fails_the_check() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // apt on this PATH knows no package and installs nothing.
    let shims = tempfile::tempdir().unwrap();
    for (tool, script) in [
        ("apt-get", "#!/bin/sh\n[ \"$1\" = update ] || exit 100\n"),
        ("apt-cache", "#!/bin/sh\necho '  Candidate: (none)'\n"),
    ] {
        let path = shims.path().join(tool);
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        shims.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(repo.join("scripts/check-deploy-files.sh"))
        .env("PATH", path)
        .env("NIX_INSTANTIATE", "nix-instantiate-that-is-not-installed")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("could not install nix-bin"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("SKIP"));
}

/// Both deployments run the agent as `Type=notify` with a watchdog, and
/// let only its main process notify (not the alert commands it runs).
#[test]
fn both_units_wait_for_ready_and_watch_the_agent() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |path: &str| std::fs::read_to_string(repo.join(path)).unwrap();
    let unit = read("systemd/mcp-agent.service");
    let unit_lines: Vec<&str> = unit.lines().map(str::trim).collect();
    let module = read("nix/module.nix");
    let module_lines: Vec<&str> = module.lines().map(str::trim).collect();
    for (key, value) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("WatchdogSec", "30s"),
    ] {
        let line = format!("{key}={value}");
        assert!(unit_lines.contains(&line.as_str()), "unit: no {line}");
        let line = format!("{key} = \"{value}\";");
        assert!(module_lines.contains(&line.as_str()), "module: no {line}");
    }
    // One Type each.
    assert_eq!(
        unit_lines.iter().filter(|l| l.starts_with("Type=")).count(),
        1
    );
    assert_eq!(
        module_lines
            .iter()
            .filter(|l| l.starts_with("Type = "))
            .count(),
        1
    );
}
