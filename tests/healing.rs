//! End-to-end tests of what the agent does on its own, with the real
//! binaries against a real podman: recovery after a reboot or lost storage,
//! the boot sequence, `mcp-agent recover`, reconciliation, and health after
//! the deploy.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{eventually, Agent, Operator, Podman, TEST_IMAGE};
use serde_json::Value;

/// Every event of the node, oldest first.
fn events(operator: &Operator) -> Vec<Value> {
    let answer = operator
        .ok(&["events", "--limit", "1000", "-o", "json"])
        .json();
    let mut all = answer.as_array().cloned().unwrap_or_default();
    all.sort_by_key(|e| e["id"].as_i64());
    all
}

/// The id of the first event of `kind` about `service/component` (or of the
/// node, with both empty), if any.
fn event_id(all: &[Value], service: &str, component: &str, kind: &str) -> Option<i64> {
    all.iter()
        .find(|e| e["service"] == service && e["component"] == component && e["kind"] == kind)
        .and_then(|e| e["id"].as_i64())
}

fn count(all: &[Value], service: &str, kind: &str) -> usize {
    all.iter()
        .filter(|e| e["service"] == service && e["kind"] == kind)
        .count()
}

/// Waits until `ready` holds for the node's events; returns them.
fn wait_events(operator: &Operator, what: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = std::time::Instant::now();
    loop {
        let all = events(operator);
        if ready(&all) {
            return all;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}; events:\n{}",
            brief(&all)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn brief(all: &[Value]) -> String {
    all.iter()
        .map(|e| {
            format!(
                "{}/{}:{}({})",
                e["service"], e["component"], e["kind"], e["detail"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn sleeper(name: &str, active: bool) -> String {
    format!(
        "name = \"{name}\"\nnode = \"n1\"\nactive = {active}\n\n[[components]]\nname = \"main\"\n\
         image = \"{TEST_IMAGE}\"\ncmd = [\"/bin/busybox\", \"sleep\", \"3600\"]\n"
    )
}

/// `web`: `db`, and `app` which depends on it.
fn ordered() -> String {
    format!(
        "name = \"web\"\nnode = \"n1\"\n\n\
         [[components]]\nname = \"app\"\nimage = \"{TEST_IMAGE}\"\n\
         cmd = [\"/bin/busybox\", \"sleep\", \"3600\"]\ndepends_on = [\"db\"]\n\n\
         [[components]]\nname = \"db\"\nimage = \"{TEST_IMAGE}\"\n\
         cmd = [\"/bin/busybox\", \"sleep\", \"3600\"]\n"
    )
}

/// When podman says container `name` last started (RFC 3339, sortable
/// within one run).
fn started_at(podman: &Podman, name: &str) -> String {
    podman
        .inspect(name, "{{.State.StartedAt}}")
        .unwrap_or_default()
}

/// The node rebooted: every container stopped, the agent started again.
fn reboot(podman: &Podman, agent: &mut Agent) {
    let (status, _) = agent.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", agent.log());
    let stop = podman
        .cmd()
        .args(["stop", "--all", "--time", "0"])
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    agent.spawn(&podman.socket);
}

#[test]
fn after_a_reboot_what_should_run_comes_back_in_order() {
    let podman = Podman::start();
    let mut agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    operator.define("web", &ordered());
    operator.define("solo", &sleeper("solo", true));
    operator.define("idle", &sleeper("idle", true));
    for service in ["web", "solo", "idle"] {
        operator.ok(&["deploy", service]);
    }
    operator.ok(&["stop", "idle"]);
    // A container made by hand, not MCP's: ignored, left as it is.
    let hand = podman
        .cmd()
        .args([
            "run",
            "-d",
            "--name",
            "by-hand",
            TEST_IMAGE,
            "/bin/busybox",
            "sleep",
            "3600",
        ])
        .output()
        .unwrap();
    assert!(hand.status.success());
    let db_before = started_at(&podman, "web-db");

    reboot(&podman, &mut agent);

    let all = wait_events(&operator, "three components recovered", |all| {
        count(all, "web", "recovered") == 2 && count(all, "solo", "recovered") == 1
    });
    for name in ["web-db", "web-app", "solo-main"] {
        assert_eq!(podman.state_of(name).as_deref(), Some("running"), "{name}");
    }
    assert_eq!(podman.state_of("idle-main").as_deref(), Some("exited"));
    assert_eq!(podman.state_of("by-hand").as_deref(), Some("exited"));
    assert_eq!(count(&all, "idle", "recovered"), 0, "{}", brief(&all));
    // db before app, which depends on it.
    let db = event_id(&all, "web", "db", "recovered").unwrap();
    let app = event_id(&all, "web", "app", "recovered").unwrap();
    assert!(db < app, "{}", brief(&all));
    let (db_at, app_at) = (
        started_at(&podman, "web-db"),
        started_at(&podman, "web-app"),
    );
    assert!(db_at > db_before && db_at <= app_at, "{db_at} {app_at}");
    let solo = all
        .iter()
        .find(|e| e["service"] == "solo" && e["kind"] == "recovered")
        .unwrap();
    assert_eq!(solo["by"], "mcp-agent");
    assert!(
        solo["detail"].as_str().unwrap().contains("exited"),
        "{solo}"
    );

    // `mcp status` says how the recovery went.
    let status = operator.ok(&["status"]);
    assert!(
        status.stdout.contains("recovery at start finished")
            && status.stdout.contains("3 recovered"),
        "{}",
        status.stdout
    );
}

#[test]
fn after_storage_is_lost_containers_are_re_created_and_files_stay() {
    let podman = Podman::start();
    let srv = tempfile::tempdir().unwrap();
    let srv_root = srv.path().display().to_string();
    let mut agent = Agent::start_with(
        &podman,
        "n1",
        None,
        &["--auth", "local", "--srv-root", &srv_root],
    );
    let operator = Operator::new(&[&agent]);
    let data = srv.path().join("solo/data");
    std::fs::create_dir_all(&data).unwrap();
    operator.define(
        "solo",
        &format!(
            "{}volumes = [\"{}:/data\"]\nenv = {{ KEPT = \"yes\" }}\n",
            sleeper("solo", true),
            data.display()
        ),
    );
    operator.ok(&["deploy", "solo"]);
    let local = srv.path().join("note.txt");
    std::fs::write(&local, "kept\n").unwrap();
    operator.ok(&[
        "push",
        "solo",
        &local.display().to_string(),
        "data/note.txt",
    ]);
    let old = podman.id_of("solo-main").unwrap();

    let (status, _) = agent.terminate(Duration::from_secs(30));
    assert!(status.success());
    let rm = podman
        .cmd()
        .args(["rm", "--all", "--force", "--time", "0"])
        .output()
        .unwrap();
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    agent.spawn(&podman.socket);

    let all = wait_events(&operator, "solo recovered", |all| {
        count(all, "solo", "recovered") == 1
    });
    let detail = all.iter().find(|e| e["kind"] == "recovered").unwrap()["detail"].to_string();
    assert!(
        detail.contains("gone") && detail.contains("re-created"),
        "{detail}"
    );
    let new = podman.id_of("solo-main").unwrap();
    assert_ne!(new, old);
    assert_eq!(podman.state_of("solo-main").as_deref(), Some("running"));
    let env = podman.inspect("solo-main", "{{.Config.Env}}").unwrap();
    assert!(env.contains("KEPT=yes"), "{env}");
    let read = podman
        .cmd()
        .args(["exec", "solo-main", "/bin/busybox", "cat", "/data/note.txt"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&read.stdout), "kept\n");
}

/// `first`: healthy only some seconds after it starts (its health check
/// looks for a file in /dev/shm, which a restart empties).
fn slow_to_be_healthy() -> String {
    format!(
        "name = \"first\"\nnode = \"n1\"\n\n[[components]]\nname = \"main\"\nimage = \"{TEST_IMAGE}\"\n\
         cmd = [\"/bin/sh\", \"-c\", \"sleep 3; echo ok > /dev/shm/ready; exec /bin/busybox sleep 3600\"]\n\n\
         [components.health]\ncmd = [\"/bin/sh\", \"-c\", \"test -f /dev/shm/ready\"]\n\
         interval = \"200ms\"\nretries = 100\n"
    )
}

#[test]
fn a_boot_stage_starts_only_when_the_previous_one_is_healthy() {
    let podman = Podman::start();
    let config =
        "[[boot.sequence]]\nname = \"base\"\nservices = [\"first\"]\ntimeout = \"60s\"\n\n\
                  [[boot.sequence]]\nname = \"apps\"\nservices = [\"second\"]\ntimeout = \"60s\"\n";
    let mut agent = Agent::start_with_config(&podman, "n1", Some(config));
    let operator = Operator::new(&[&agent]);
    operator.define("first", &slow_to_be_healthy());
    operator.define("second", &sleeper("second", true));
    operator.ok(&["deploy", "first"]);
    operator.ok(&["deploy", "second"]);

    reboot(&podman, &mut agent);

    let all = wait_events(&operator, "both stages", |all| {
        count(all, "", "boot-stage-ready") == 2 && count(all, "second", "recovered") == 1
    });
    let first = event_id(&all, "first", "main", "recovered").unwrap();
    let base = all
        .iter()
        .find(|e| e["kind"] == "boot-stage-ready" && e["detail"].as_str().unwrap().contains("base"))
        .unwrap();
    let second = event_id(&all, "second", "main", "recovered").unwrap();
    assert!(first < base["id"].as_i64().unwrap(), "{}", brief(&all));
    assert!(base["id"].as_i64().unwrap() < second, "{}", brief(&all));
    // The gate waited for the check: about three seconds.
    let waited: f64 = base["detail"]
        .as_str()
        .unwrap()
        .rsplit("after ")
        .next()
        .and_then(|s| s.trim_end_matches('s').parse().ok())
        .unwrap();
    assert!(waited >= 2.5, "{base}");
    assert!(started_at(&podman, "second-main") > started_at(&podman, "first-main"));
}

#[test]
fn mcp_agent_recover_says_what_it_would_do_then_does_it() {
    let podman = Podman::start();
    let mut agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    operator.define("solo", &sleeper("solo", true));
    operator.ok(&["deploy", "solo"]);
    let state_dir = agent.state_dir();
    let recover = |dry_run: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-agent"));
        cmd.args(["recover", "--node", "n1", "--state-dir"])
            .arg(&state_dir)
            .arg("--runtime-socket")
            .arg(&podman.socket)
            .env("MCP_LOG", "warn");
        if dry_run {
            cmd.arg("--dry-run");
        }
        cmd.output().unwrap()
    };
    // Not while the agent runs.
    let refused = recover(true);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("another mcp-agent is running"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let (status, _) = agent.terminate(Duration::from_secs(30));
    assert!(status.success());
    let stop = podman
        .cmd()
        .args(["stop", "--time", "0", "solo-main"])
        .output()
        .unwrap();
    assert!(stop.status.success());

    let dry = recover(true);
    let said = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        said.contains("solo/main: its container was exited") && said.contains("would start it"),
        "{said}"
    );
    assert_eq!(podman.state_of("solo-main").as_deref(), Some("exited"));

    let done = recover(false);
    let said = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        said.contains("solo/main: its container was exited") && said.contains("started"),
        "{said}"
    );
    assert_eq!(podman.state_of("solo-main").as_deref(), Some("running"));
    let again = recover(false);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("everything that should run is running")
    );
}

fn alerting(alerts: &Path, extra: &str) -> String {
    format!(
        "[watch]\nflap_exits = 3\nflap_window_secs = 600\n{extra}\n\
         [alert]\ncommand = [\"/bin/sh\", \"-c\", \"echo \\\"$MCP_ALERT_KIND $MCP_ALERT_SERVICE/$MCP_ALERT_COMPONENT\\\" >> {}\"]\n\
         rate_limit_secs = 600\ntimeout_secs = 5\n",
        alerts.display()
    )
}

fn alert_lines(alerts: &Path) -> Vec<String> {
    std::fs::read_to_string(alerts)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn reconciliation_undoes_a_kill_and_a_removal_and_gives_up_on_a_crash_loop() {
    let podman = Podman::start();
    let scratch = tempfile::tempdir().unwrap();
    let alerts = scratch.path().join("alerts");
    let _agent =
        Agent::start_with_config(&podman, "n1", Some(&alerting(&alerts, "reconcile = true")));
    let operator = Operator::new(&[&_agent]);
    operator.define("solo", &sleeper("solo", true));
    operator.ok(&["deploy", "solo"]);

    let killed = podman.cmd().args(["kill", "solo-main"]).output().unwrap();
    assert!(killed.status.success());
    wait_events(&operator, "reconciled after the kill", |all| {
        count(all, "solo", "reconciled") == 1
    });
    assert_eq!(podman.state_of("solo-main").as_deref(), Some("running"));

    let old = podman.id_of("solo-main").unwrap();
    let removed = podman
        .cmd()
        .args(["rm", "--force", "--time", "0", "solo-main"])
        .output()
        .unwrap();
    assert!(removed.status.success());
    let all = wait_events(&operator, "reconciled after the removal", |all| {
        count(all, "solo", "reconciled") == 2
    });
    assert_eq!(podman.state_of("solo-main").as_deref(), Some("running"));
    assert_ne!(podman.id_of("solo-main").unwrap(), old);
    let last = all
        .iter()
        .rev()
        .find(|e| e["kind"] == "reconciled")
        .unwrap();
    assert_eq!(last["by"], "mcp-agent");
    assert!(
        last["detail"].as_str().unwrap().contains("re-created"),
        "{last}"
    );

    // A component that dies a second after each start.
    operator.define(
        "loop",
        &format!(
            "name = \"loop\"\nnode = \"n1\"\n\n[[components]]\nname = \"main\"\nimage = \"{TEST_IMAGE}\"\n\
             cmd = [\"/bin/sh\", \"-c\", \"sleep 1; exit 3\"]\n"
        ),
    );
    operator.ok(&["deploy", "loop"]);
    let all = wait_events(&operator, "the crash loop given up", |all| {
        count(all, "loop", "reconcile-gave-up") == 1 && count(all, "loop", "alert-sent") == 1
    });
    let times: Vec<i64> = all
        .iter()
        .filter(|e| e["service"] == "loop" && (e["kind"] == "died" || e["kind"] == "reconciled"))
        .map(|e| e["ts_ms"].as_i64().unwrap())
        .collect();
    // died, reconciled, died, reconciled, died: each wait longer than the last.
    assert!(times.len() >= 4, "{}", brief(&all));
    assert!(times[3] - times[2] > times[1] - times[0], "{times:?}");
    assert_eq!(alert_lines(&alerts), ["reconcile-gave-up loop/main"]);
    // Left alone: a scan later it is still exited, and nothing more was tried.
    operator.ok(&["ps"]);
    assert_eq!(podman.state_of("loop-main").as_deref(), Some("exited"));
    let after = events(&operator);
    assert_eq!(
        count(&after, "loop", "reconciled"),
        count(&all, "loop", "reconciled")
    );
}

#[test]
fn without_reconciliation_drift_is_reported_and_nothing_is_touched() {
    let podman = Podman::start();
    let scratch = tempfile::tempdir().unwrap();
    let alerts = scratch.path().join("alerts");
    let _agent = Agent::start_with_config(&podman, "n1", Some(&alerting(&alerts, "")));
    let operator = Operator::new(&[&_agent]);
    operator.define("solo", &sleeper("solo", true));
    operator.ok(&["deploy", "solo"]);
    let killed = podman.cmd().args(["kill", "solo-main"]).output().unwrap();
    assert!(killed.status.success());
    // The watch's decision is recorded with the drift's alert.
    let all = wait_events(&operator, "the drift alert", |all| {
        count(all, "solo", "alert-sent") == 1
    });
    let sent = all.iter().find(|e| e["kind"] == "alert-sent").unwrap();
    assert!(
        sent["detail"]
            .as_str()
            .unwrap()
            .contains("reconcile is off"),
        "{sent}"
    );
    operator.ok(&["ps"]);
    assert_eq!(podman.state_of("solo-main").as_deref(), Some("exited"));
    assert_eq!(count(&events(&operator), "solo", "reconciled"), 0);
}

/// `checked`: healthy while /dev/shm/broken does not exist.
fn breakable(on_unhealthy: &str) -> String {
    format!(
        "name = \"checked\"\nnode = \"n1\"\n\n[[components]]\nname = \"main\"\nimage = \"{TEST_IMAGE}\"\n\
         cmd = [\"/bin/busybox\", \"sleep\", \"3600\"]\n\n\
         [components.health]\ncmd = [\"/bin/sh\", \"-c\", \"test ! -f /dev/shm/broken\"]\n\
         interval = \"300ms\"\nretries = 2\non_unhealthy = \"{on_unhealthy}\"\n"
    )
}

fn break_it(podman: &Podman) {
    let broke = podman
        .cmd()
        .args([
            "exec",
            "checked-main",
            "/bin/sh",
            "-c",
            "echo > /dev/shm/broken",
        ])
        .output()
        .unwrap();
    assert!(
        broke.status.success(),
        "{}",
        String::from_utf8_lossy(&broke.stderr)
    );
}

fn health_of(operator: &Operator) -> String {
    operator
        .ps_row("checked-main")
        .and_then(|r| r["health"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn a_health_check_failing_after_the_deploy_is_reported_and_alerted() {
    let podman = Podman::start();
    let scratch = tempfile::tempdir().unwrap();
    let alerts = scratch.path().join("alerts");
    let _agent = Agent::start_with_config(&podman, "n1", Some(&alerting(&alerts, "")));
    let operator = Operator::new(&[&_agent]);
    operator.define("checked", &breakable("alert"));
    operator.ok(&["deploy", "checked"]);
    eventually("healthy in ps", Duration::from_secs(30), || {
        (health_of(&operator) == "healthy").then_some(())
    });
    break_it(&podman);
    let all = wait_events(&operator, "unhealthy and alerted", |all| {
        count(all, "checked", "unhealthy") == 1 && count(all, "checked", "alert-sent") == 1
    });
    let unhealthy = all.iter().find(|e| e["kind"] == "unhealthy").unwrap();
    assert!(
        unhealthy["detail"]
            .as_str()
            .unwrap()
            .contains("exited with 1"),
        "{unhealthy}"
    );
    assert_eq!(alert_lines(&alerts), ["unhealthy checked/main"]);
    assert_eq!(health_of(&operator), "unhealthy");
    let table = operator.ok(&["ps"]).stdout;
    assert!(
        table.contains("HEALTH") && table.contains("unhealthy"),
        "{table}"
    );
    // Still running: alerting is all it does.
    assert_eq!(podman.state_of("checked-main").as_deref(), Some("running"));
}

#[test]
fn with_on_unhealthy_restart_the_container_is_restarted_and_recovers() {
    let podman = Podman::start();
    let _agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&_agent]);
    operator.define("checked", &breakable("restart"));
    operator.ok(&["deploy", "checked"]);
    eventually("healthy in ps", Duration::from_secs(30), || {
        (health_of(&operator) == "healthy").then_some(())
    });
    let id = podman.id_of("checked-main").unwrap();
    let before = started_at(&podman, "checked-main");
    break_it(&podman);
    let all = wait_events(&operator, "restarted and healthy again", |all| {
        count(all, "checked", "unhealthy-restarted") == 1 && count(all, "checked", "healthy") == 1
    });
    let restarted = all
        .iter()
        .find(|e| e["kind"] == "unhealthy-restarted")
        .unwrap();
    assert_eq!(restarted["by"], "mcp-agent");
    assert_eq!(
        podman.id_of("checked-main").unwrap(),
        id,
        "the same container"
    );
    assert!(started_at(&podman, "checked-main") > before);
    eventually("healthy in ps again", Duration::from_secs(30), || {
        (health_of(&operator) == "healthy").then_some(())
    });
}
