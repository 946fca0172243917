//! End-to-end tests of the watch: drift, flapping alerts, unmanaged
//! containers, adopt, sync, events, and runtime outages, with the real
//! binaries against a real podman.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{eventually, Agent, Operator, Podman, TEST_IMAGE};
use serde_json::Value;

/// Watch settings for tests: no periodic scan (so what is seen comes from
/// the event stream), and an alert command that appends a line to `alerts`.
fn agent_config(alerts: &Path) -> String {
    format!(
        r#"[watch]
scan_interval_secs = 3600
flap_exits = 2
flap_window_secs = 60

[alert]
command = ["/bin/sh", "-c", "echo \"$MCP_ALERT_KIND $MCP_ALERT_NODE/$MCP_ALERT_SERVICE/$MCP_ALERT_COMPONENT\" >> {}"]
rate_limit_secs = 600
timeout_secs = 5
"#,
        alerts.display()
    )
}

fn setup() -> (Podman, Agent, Operator, tempfile::TempDir) {
    let podman = Podman::start();
    let scratch = tempfile::tempdir().unwrap();
    let alerts = scratch.path().join("alerts.log");
    let agent = Agent::start_with_config(&podman, "n1", Some(&agent_config(&alerts)));
    let operator = Operator::new(&[&agent]);
    (podman, agent, operator, scratch)
}

fn alerts(scratch: &tempfile::TempDir) -> Vec<String> {
    std::fs::read_to_string(scratch.path().join("alerts.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn sleeper(name: &str, active: bool) -> String {
    format!(
        r#"name = "{name}"
node = "n1"
active = {active}

[[components]]
name  = "main"
image = "{TEST_IMAGE}"
cmd   = ["/bin/busybox", "sleep", "3600"]

[[components]]
name  = "side"
image = "{TEST_IMAGE}"
cmd   = ["/bin/busybox", "sleep", "3600"]
"#
    )
}

/// The registry's row of `service/component`, from `mcp list` (no runtime call).
fn listed(operator: &Operator, service: &str, component: &str) -> Option<Value> {
    let list = operator.ok(&["list", "-o", "json"]).json();
    list[0]["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == service)?["components"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == component)
        .cloned()
}

fn event_kinds(operator: &Operator, service: &str, component: &str) -> Vec<String> {
    let events = operator.ok(&["events", service, "-o", "json"]).json();
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["component"] == component)
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_killed_container_is_drift_within_two_seconds_from_the_event_stream() {
    let (podman, _agent, operator, scratch) = setup();
    operator.define("app", &sleeper("app", true));
    operator.ok(&["deploy", "app"]);

    let killed = Instant::now();
    assert!(podman
        .cmd()
        .args(["kill", "app-main"])
        .status()
        .unwrap()
        .success());
    // `mcp list` reads the registry only, and the periodic scan is off: what
    // shows here came through the event stream.
    let row = eventually("drift in the registry", Duration::from_secs(2), || {
        listed(&operator, "app", "main").filter(|c| c["drift_since_ms"].as_i64() > Some(0))
    });
    let latency = killed.elapsed();
    assert_eq!(row["observed_state"], "exited");
    assert!(latency < Duration::from_secs(2), "{latency:?}");
    assert_eq!(
        listed(&operator, "app", "side").unwrap()["drift_since_ms"],
        0
    );

    let status = operator.ok(&["status", "-o", "json"]).json();
    let drift = status[0]["drift"].as_array().unwrap();
    assert_eq!(drift.len(), 1, "{status}");
    assert_eq!(drift[0]["component"], "main");
    assert_eq!(drift[0]["observed_state"], "exited");
    let table = operator.ok(&["status"]).stdout;
    assert!(table.contains("1 component(s) drifting"), "{table}");

    let kinds = event_kinds(&operator, "app", "main");
    assert!(kinds.contains(&"died".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"drift-detected".to_string()), "{kinds:?}");
    // Drift is alerted once; the deploy itself raised nothing.
    let lines = alerts(&scratch);
    assert_eq!(lines, ["drift-detected n1/app/main"], "{lines:?}");

    // Starting it again clears the drift.
    operator.ok(&["start", "app/main"]);
    eventually("drift cleared", Duration::from_secs(3), || {
        listed(&operator, "app", "main").filter(|c| c["drift_since_ms"] == 0)
    });
    assert!(event_kinds(&operator, "app", "main").contains(&"drift-cleared".to_string()));
}

#[test]
fn a_flapping_container_fires_the_alert_once_per_rate_limit_window() {
    let (_podman, _agent, operator, scratch) = setup();
    operator.define(
        "flappy",
        &format!(
            r#"name = "flappy"
node = "n1"

[[components]]
name    = "crash"
image   = "{TEST_IMAGE}"
restart = "always"
cmd     = ["/bin/sh", "-c", "sleep 1; exit 3"]
"#
        ),
    );
    operator.ok(&["deploy", "flappy"]);
    let kinds = eventually("flapping", Duration::from_secs(20), || {
        let kinds = event_kinds(&operator, "flappy", "crash");
        let exits = kinds.iter().filter(|k| *k == "died").count();
        (kinds.iter().filter(|k| *k == "flapping").count() >= 2 && exits >= 4).then_some(kinds)
    });
    assert!(
        kinds.iter().filter(|k| *k == "flapping").count() >= 2,
        "{kinds:?}"
    );
    // Several flapping (and drift) events, one alert in the window: every
    // alert sent is an event, recorded in order with what caused it.
    let sent = kinds.iter().filter(|k| *k == "alert-sent").count();
    assert_eq!(sent, 1, "{kinds:?}");
    let lines = eventually("the alert command's line", Duration::from_secs(10), || {
        let lines = alerts(&scratch);
        (!lines.is_empty()).then_some(lines)
    });
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].ends_with("n1/flappy/crash"), "{lines:?}");
    operator.ok(&["stop", "flappy"]);
}

#[test]
fn a_hand_made_container_is_ignored_until_adopted() {
    let (podman, _agent, operator, scratch) = setup();
    let run = podman
        .cmd()
        .args([
            "run",
            "-d",
            "--name",
            "stray",
            TEST_IMAGE,
            "/bin/busybox",
            "sleep",
            "3600",
        ])
        .output()
        .unwrap();
    assert!(run.status.success());
    let id = podman.id_of("stray").unwrap();

    let row = eventually("the stray in ps", Duration::from_secs(3), || {
        operator.ps_row("stray")
    });
    assert_eq!(row["desired_state"], "ignore");
    assert_eq!(row["service"], "");

    // It dies: no event, no alert, not touched. The watch records its exit
    // (and anything it would cause) before it shows in ps.
    assert!(podman
        .cmd()
        .args(["kill", "stray"])
        .status()
        .unwrap()
        .success());
    eventually("the stray's exit in ps", Duration::from_secs(10), || {
        operator
            .ps_row("stray")
            .filter(|row| row["state"] == "exited")
    });
    assert!(alerts(&scratch).is_empty(), "{:?}", alerts(&scratch));
    let all = operator.ok(&["events", "-o", "json"]).json();
    assert_eq!(all, serde_json::json!([]), "{all}");
    assert_eq!(podman.state_of("stray").as_deref(), Some("exited"));
    assert_eq!(podman.id_of("stray").as_deref(), Some(id.as_str()));

    // Adopted, it is managed: desired running, and start acts on it.
    let adopted = operator
        .ok(&["adopt", "stray", "--as", "legacy/main", "-o", "json"])
        .json();
    assert_eq!(adopted["container_id"], id.as_str());
    let row = listed(&operator, "legacy", "main").unwrap();
    assert_eq!(row["desired_state"], "running");
    eventually("adopted drift", Duration::from_secs(3), || {
        listed(&operator, "legacy", "main").filter(|c| c["drift_since_ms"].as_i64() > Some(0))
    });
    operator.ok(&["start", "legacy", "--node", "n1"]);
    assert_eq!(podman.state_of("stray").as_deref(), Some("running"));
    assert_eq!(podman.id_of("stray").as_deref(), Some(id.as_str()));
    let row = operator.ps_row("stray").unwrap();
    assert_eq!(row["service"], "legacy");
    assert_eq!(row["desired_state"], "running");
    assert!(event_kinds(&operator, "legacy", "main").contains(&"adopted".to_string()));

    // Adopting what is not there says so.
    operator.fails(
        &["adopt", "nothing-here"],
        "there is no container named nothing-here",
    );
}

#[test]
fn sync_changes_desired_state_without_touching_containers() {
    let (podman, _agent, operator, _scratch) = setup();
    operator.define("keep", &sleeper("keep", true));
    operator.define("gone", &sleeper("gone", true));
    operator.ok(&["deploy", "keep"]);
    operator.ok(&["deploy", "gone"]);
    let before = podman.containers();

    operator.define("keep", &sleeper("keep", false));
    std::fs::remove_file(operator.services_dir().join("gone.toml")).unwrap();
    let sync = operator.ok(&["sync"]);
    assert!(
        sync.stdout
            .contains("would be pruned by `mcp sync --prune`: gone"),
        "{}",
        sync.stdout
    );
    assert_eq!(podman.containers(), before, "sync touched a container");
    for comp in ["main", "side"] {
        assert_eq!(
            listed(&operator, "keep", comp).unwrap()["desired_state"],
            "stopped"
        );
    }
    assert!(
        listed(&operator, "gone", "main").is_some(),
        "pruned without --prune"
    );
    // Running while desired stopped: drift.
    let status = operator.ok(&["status", "keep", "-o", "json"]).json();
    assert_eq!(status[0]["drift"].as_array().unwrap().len(), 2, "{status}");

    let pruned = operator.ok(&["sync", "--prune", "-o", "json"]).json();
    assert_eq!(pruned[0]["pruned"], true);
    assert_eq!(pruned[0]["prunable"], serde_json::json!(["gone"]));
    assert!(listed(&operator, "gone", "main").is_none());
    assert_eq!(podman.containers(), before, "prune touched a container");
    // Its containers are now nobody's.
    let gone_main = operator.ps_row("gone-main").unwrap();
    assert_eq!(gone_main["desired_state"], "ignore");

    // A definition for a node that is not configured is refused whole.
    operator.define(
        "elsewhere",
        &sleeper("elsewhere", true).replace("node = \"n1\"", "node = \"n9\""),
    );
    operator.fails(&["sync"], "names node n9");
}

#[test]
fn events_follow_streams_new_events() {
    let (_podman, _agent, operator, _scratch) = setup();
    operator.define("live", &sleeper("live", true));
    operator.ok(&["deploy", "live/main"]);
    let mut follower = operator
        .command(&["events", "live", "--follow", "-o", "json"])
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Connected: the history (the deploy) comes first.
    let first = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("no history within 5s");
    let event: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(event["kind"], "deployed");
    operator.ok(&["stop", "live/main"]);
    let line = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("no event streamed within 5s");
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["kind"], "stopped");
    assert_eq!(event["service"], "live");
    assert_eq!(event["component"], "main");
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn the_agent_survives_a_runtime_outage_and_resumes_watching() {
    let (mut podman, agent, operator, _scratch) = setup();
    operator.define("app", &sleeper("app", true));
    operator.ok(&["deploy", "app"]);

    podman.stop_service();
    let ps = operator.run(&["ps"]);
    assert_ne!(ps.code, 0);
    let socket = podman.socket.display().to_string();
    assert!(
        ps.stderr.contains(&socket) && ps.stderr.contains("unavailable"),
        "{}",
        ps.stderr
    );
    let deploy = operator.run(&["deploy", "app/side"]);
    assert_ne!(deploy.code, 0);
    assert!(deploy.stdout.contains(&socket), "{}", deploy.stdout);
    // The agent is still up and answers from its registry.
    operator.ok(&["list"]);

    podman.start_service();
    // No operator action: the watch reconnects by itself. A kill after that
    // shows up as drift.
    eventually("the watch to resume", Duration::from_secs(15), || {
        agent
            .log()
            .matches("watching the runtime's events")
            .nth(1)
            .map(|_| ())
    });
    assert!(podman
        .cmd()
        .args(["kill", "app-main"])
        .status()
        .unwrap()
        .success());
    eventually("drift after the outage", Duration::from_secs(5), || {
        listed(&operator, "app", "main").filter(|c| c["drift_since_ms"].as_i64() > Some(0))
    });
    operator.ok(&["ps"]);
}
