//! Unit tests of what the agent does on its own: recovery (recovery.rs),
//! dependency order, reconciliation and health after the deploy
//! (watch/healing.rs, watch/health.rs), over the FakeRuntime.

use std::path::Path;
use std::time::Duration;

use super::recovery::{self, BootStage, Gate};
use super::tests::{harness_with, name, Harness};
use super::watch_tests::{alert_lines, brief, count, file_alert, find, settings, DEADLINE};
use super::{LifecycleAction, WatchSettings};
use crate::registry::DesiredState;
use crate::runtime::fake::FakeRuntime;
use crate::runtime::Runtime;
use crate::spec::{parse_service, ServiceDef};

/// `app`: db, then api (needs db), then web (needs api).
fn chain() -> ServiceDef {
    parse_service(
        Path::new("app.toml"),
        "name = \"app\"\nnode = \"n1\"\n\
         [[components]]\nname = \"web\"\nimage = \"web:1\"\ndepends_on = [\"api\"]\n\
         [[components]]\nname = \"api\"\nimage = \"api:1\"\ndepends_on = [\"db\"]\n\
         [[components]]\nname = \"db\"\nimage = \"db:1\"\n",
    )
    .unwrap()
}

fn one(service: &str, image: &str, active: bool, extra: &str) -> ServiceDef {
    parse_service(
        Path::new(&format!("{service}.toml")),
        &format!(
            "name = \"{service}\"\nnode = \"n1\"\nactive = {active}\n{extra}\
             [[components]]\nname = \"main\"\nimage = \"{image}\"\n"
        ),
    )
    .unwrap()
}

/// The order in which containers were started, by name.
fn starts(h: &Harness) -> Vec<String> {
    h.fake
        .calls()
        .into_iter()
        .filter_map(|c| {
            let id = c.strip_prefix("start ")?;
            h.fake
                .container_by_id(id)
                .map(|c| c.name)
                .or(Some(id.to_string()))
        })
        .collect()
}

fn images() -> FakeRuntime {
    FakeRuntime::with_images(&["web:1", "api:1", "db:1", "solo:1", "off:1", "hand:1"])
}

#[actix::test]
async fn deploys_and_starts_follow_depends_on() {
    let h = &harness_with(images(), settings(None));
    let outcomes = h.deploy(chain(), None).await.unwrap();
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    assert_eq!(starts(h), ["app-db", "app-api", "app-web"]);

    // Stopping goes the other way round.
    h.lifecycle("app", LifecycleAction::Stop, None)
        .await
        .unwrap();
    let stops: Vec<String> = h
        .fake
        .calls()
        .into_iter()
        .filter_map(|c| c.strip_prefix("stop ").map(str::to_string))
        .filter_map(|id| h.fake.container_by_id(&id).map(|c| c.name))
        .collect();
    assert_eq!(stops, ["app-web", "app-api", "app-db"]);
}

#[actix::test]
async fn recovery_starts_what_should_run_in_order_and_touches_nothing_else() {
    let h = &harness_with(images(), settings(None));
    h.deploy(chain(), None).await.unwrap();
    h.deploy(one("off", "off:1", false, ""), None)
        .await
        .unwrap();
    h.deploy(one("solo", "solo:1", true, ""), None)
        .await
        .unwrap();
    let hand = h.fake.insert_unmanaged("by-hand", "hand:1");
    h.fake.exit("by-hand", 0);
    // A reboot: everything exited; and one container lost altogether.
    for c in ["app-db", "app-api", "app-web", "solo-main"] {
        h.fake.exit(c, 137);
    }
    let lost = h.container("solo-main").id;
    h.fake.remove(&lost).await.unwrap();
    let before = h.fake.calls().len();

    // A dry run says what it would do, and does nothing.
    let dry = recovery::recover(&h.handles, &[], true).await;
    let said: Vec<String> = dry
        .services
        .iter()
        .flat_map(|(s, o)| {
            o.as_ref()
                .unwrap()
                .iter()
                .map(move |c| format!("{s}/{}", c.component))
        })
        .collect();
    assert_eq!(said, ["app/api", "app/db", "app/web", "solo/main"]);
    assert!(h.fake.calls()[before..]
        .iter()
        .all(|c| c.starts_with("inspect") || c.starts_with("list")));

    let report = recovery::recover(&h.handles, &[], false).await;
    assert!(
        report
            .services
            .iter()
            .all(|(_, o)| o.as_ref().unwrap().iter().all(|c| c.result.is_ok())),
        "{report:?}"
    );
    let started: Vec<String> = starts(h).into_iter().skip(4).collect();
    let app: Vec<&String> = started.iter().filter(|n| n.starts_with("app-")).collect();
    assert_eq!(app, ["app-db", "app-api", "app-web"]);
    for c in ["app-db", "app-api", "app-web", "solo-main"] {
        assert_eq!(h.container(c).state, "running", "{c}");
    }
    assert_ne!(h.container("solo-main").id, lost, "re-created");
    assert_eq!(h.container("off-main").state, "created");
    assert_eq!(h.fake.container("by-hand").unwrap().state, "exited");
    assert!(h.calls_on(&hand).iter().all(|c| !c.starts_with("start")));
    let events = h.events("solo").await;
    let recovered = find(&events, "main", "recovered").expect("a recovered event");
    assert_eq!(recovered.by, "mcp-agent");
    assert!(
        recovered.detail.contains("gone") && recovered.detail.contains("re-created"),
        "{}",
        recovered.detail
    );
    assert_eq!(count(&h.events("app").await, "api", "recovered"), 1);
    assert!(find(&h.events("off").await, "main", "recovered").is_none());
    let status = h.handles.recovery.get();
    assert!(!status.in_progress);
    assert_eq!((status.total, status.recovered, status.failed), (4, 4, 0));

    // Nothing left to do: a second run acts on nothing.
    let again = recovery::recover(&h.handles, &[], false).await;
    assert!(again
        .services
        .iter()
        .all(|(_, o)| o.as_ref().unwrap().is_empty()));
}

#[actix::test]
async fn a_boot_stage_holds_the_next_until_its_tcp_gate_opens() {
    let h = &harness_with(images(), settings(None));
    h.deploy(one("solo", "solo:1", true, ""), None)
        .await
        .unwrap();
    h.deploy(one("off", "off:1", true, ""), None).await.unwrap();
    h.fake.exit("solo-main", 1);
    h.fake.exit("off-main", 1);
    // The gate: a port that opens only when the test says so.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let boot = vec![BootStage {
        name: "first".into(),
        services: vec![name("solo")],
        timeout: Duration::from_secs(10),
        gate: Gate::Tcp(format!("127.0.0.1:{port}")),
    }];
    let handles = h.handles.clone();
    let run = actix_rt::spawn(async move { recovery::recover(&handles, &boot, false).await });
    super::tests::eventually("solo started, off waiting", DEADLINE, || async {
        let status = h.handles.recovery.get();
        (h.container("solo-main").state == "running" && status.stage.as_deref() == Some("first"))
            .then_some(())
            .ok_or(format!("{status:?}"))
    })
    .await;
    assert_eq!(
        h.container("off-main").state,
        "exited",
        "the next stage waits"
    );
    let _open = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let report = run.await.unwrap();
    assert_eq!(h.container("off-main").state, "running");
    assert!(report.stages[0].1.is_ok(), "{report:?}");
    let node = h.events("").await;
    assert!(
        node.iter()
            .any(|e| e.kind == "boot-stage-ready" && e.detail.contains("first")),
        "{}",
        brief(&node)
    );
}

fn reconciling(alerts: &Path) -> WatchSettings {
    WatchSettings {
        reconcile: true,
        reconcile_grace: Duration::from_millis(10),
        ..settings(Some(file_alert(alerts)))
    }
}

#[actix::test]
async fn reconciliation_undoes_a_kill_and_a_removal() {
    let dir = tempfile::tempdir().unwrap();
    let h = &harness_with(images(), reconciling(&dir.path().join("alerts")));
    h.deploy(one("solo", "solo:1", true, ""), None)
        .await
        .unwrap();
    h.quiesce().await;
    h.fake.exit("solo-main", 137);
    let events = h
        .wait_events("solo", "reconciled after the kill", |ev| {
            find(ev, "main", "reconciled").is_some()
        })
        .await;
    let done = find(&events, "main", "reconciled").unwrap();
    assert_eq!(done.by, "mcp-agent");
    assert!(done.detail.contains("observed exited"), "{}", done.detail);
    assert_eq!(h.container("solo-main").state, "running");

    let id = h.container("solo-main").id;
    h.fake.remove(&id).await.unwrap();
    h.wait_events("solo", "reconciled after the removal", |ev| {
        count(ev, "main", "reconciled") == 2
    })
    .await;
    assert_eq!(h.container("solo-main").state, "running");
    assert_ne!(h.container("solo-main").id, id);
    // Drift of a reconciled service is no alert: the agent deals with it.
    assert!(alert_lines(&dir.path().join("alerts")).is_empty());
}

#[actix::test]
async fn a_component_that_keeps_dying_is_given_up_with_one_alert() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts");
    let h = &harness_with(images(), reconciling(&alerts));
    h.deploy(one("solo", "solo:1", true, ""), None)
        .await
        .unwrap();
    h.quiesce().await;
    // It dies each time it is put back, until the agent stops trying.
    for round in 1..=3 {
        h.fake.exit("solo-main", 1);
        if round < 3 {
            h.wait_events("solo", &format!("reconciled {round}"), |ev| {
                count(ev, "main", "reconciled") == round
            })
            .await;
        }
    }
    let events = h
        .wait_events("solo", "gave up", |ev| {
            find(ev, "main", "reconcile-gave-up").is_some()
                && find(ev, "main", "alert-sent").is_some()
        })
        .await;
    assert!(
        find(&events, "main", "flapping").is_some(),
        "{}",
        brief(&events)
    );
    let reconciled: Vec<i64> = events
        .iter()
        .filter(|e| e.kind == "reconciled" || e.kind == "died")
        .map(|e| e.ts_ms)
        .collect();
    // died, reconciled, died, reconciled: the second wait is longer.
    let first = reconciled[1] - reconciled[0];
    let second = reconciled[3] - reconciled[2];
    assert!(second > first, "backoff: {first} ms then {second} ms");
    // Left alone, with one alert.
    h.drain("probe").await;
    assert_eq!(h.container("solo-main").state, "exited");
    assert_eq!(alert_lines(&alerts), ["reconcile-gave-up solo/main"]);

    // A start by the operator begins again.
    h.lifecycle("solo", LifecycleAction::Start, None)
        .await
        .unwrap();
    h.quiesce().await;
    h.fake.exit("solo-main", 1);
    h.wait_events("solo", "reconciled again", |ev| {
        count(ev, "main", "reconciled") == 3
    })
    .await;
}

#[actix::test]
async fn without_reconciliation_drift_is_only_reported() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts");
    let h = &harness_with(
        images(),
        WatchSettings {
            reconcile_grace: Duration::from_millis(10),
            ..settings(Some(file_alert(&alerts)))
        },
    );
    // A service may turn it on for itself.
    h.deploy(one("solo", "solo:1", true, ""), None)
        .await
        .unwrap();
    h.deploy(one("off", "off:1", true, "reconcile = true\n"), None)
        .await
        .unwrap();
    h.quiesce().await;
    h.fake.exit("solo-main", 1);
    h.fake.exit("off-main", 1);
    let events = h
        .wait_events("solo", "the drift alert", |ev| {
            find(ev, "main", "alert-sent").is_some()
        })
        .await;
    let sent = find(&events, "main", "alert-sent").unwrap();
    assert!(sent.detail.contains("reconcile is off"), "{}", sent.detail);
    h.wait_events("off", "off reconciled", |ev| {
        find(ev, "main", "reconciled").is_some()
    })
    .await;
    // Reconciled after solo's decision: solo was left alone.
    assert_eq!(h.container("solo-main").state, "exited");
    assert!(find(&h.events("solo").await, "main", "reconciled").is_none());
    let row = h.row("solo", "main").await;
    assert_eq!(row.state.desired_state, DesiredState::Running);
}

fn checked(on_unhealthy: &str) -> ServiceDef {
    parse_service(
        Path::new("solo.toml"),
        &format!(
            "name = \"solo\"\nnode = \"n1\"\n\
             [[components]]\nname = \"main\"\nimage = \"solo:1\"\n\
             [components.health]\ncmd = [\"check\"]\ninterval = \"100ms\"\nretries = 1\n\
             on_unhealthy = \"{on_unhealthy}\"\n"
        ),
    )
    .unwrap()
}

#[actix::test]
async fn health_after_the_deploy_is_recorded_alerted_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts");
    let h = &harness_with(images(), settings(Some(file_alert(&alerts))));
    h.deploy(checked("alert"), None).await.unwrap();
    h.wait_row("solo", "main", "healthy", |r| {
        r.state.health.as_ref().is_some_and(|h| h.healthy)
    })
    .await;
    h.fake.set_exec_exit("solo:1", 1);
    let row = h
        .wait_row("solo", "main", "unhealthy", |r| {
            r.state.health.as_ref().is_some_and(|h| !h.healthy)
        })
        .await;
    assert!(row.state.health.unwrap().detail.contains("exited with 1"));
    let events = h
        .wait_events("solo", "unhealthy and its alert", |ev| {
            find(ev, "main", "unhealthy").is_some() && find(ev, "main", "alert-sent").is_some()
        })
        .await;
    assert!(
        find(&events, "main", "healthy").is_none(),
        "{}",
        brief(&events)
    );
    assert_eq!(alert_lines(&alerts), ["unhealthy solo/main"]);
    // ps shows it.
    let ps = h.observe().await.unwrap();
    let main = ps.iter().find(|r| r.name == "solo-main").unwrap();
    assert_eq!(main.health, "unhealthy");

    h.fake.set_exec_exit("solo:1", 0);
    h.wait_events("solo", "healthy again", |ev| {
        find(ev, "main", "healthy").is_some()
    })
    .await;
    assert_eq!(count(&h.events("solo").await, "main", "unhealthy"), 1);
}

#[actix::test]
async fn an_unhealthy_component_with_restart_is_restarted() {
    let h = &harness_with(images(), settings(None));
    h.deploy(checked("restart"), None).await.unwrap();
    h.wait_row("solo", "main", "healthy", |r| {
        r.state.health.as_ref().is_some_and(|h| h.healthy)
    })
    .await;
    let id = h.container("solo-main").id;
    h.fake.set_exec_exit("solo:1", 1);
    h.wait_events("solo", "unhealthy", |ev| {
        find(ev, "main", "unhealthy").is_some()
    })
    .await;
    // Healthy again by the time the agent restarts it.
    h.fake.set_exec_exit("solo:1", 0);
    let events = h
        .wait_events("solo", "restarted", |ev| {
            find(ev, "main", "unhealthy-restarted").is_some()
        })
        .await;
    let restarted = find(&events, "main", "unhealthy-restarted").unwrap();
    assert_eq!(restarted.by, "mcp-agent");
    assert!(h.calls_on(&id).iter().any(|c| c.starts_with("stop")));
    assert_eq!(h.container("solo-main").id, id, "the same container");
    h.wait_events("solo", "healthy again", |ev| {
        find(ev, "main", "healthy").is_some()
    })
    .await;
}
