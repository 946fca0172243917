//! Unit tests of the WatchActor and of the sync and adopt paths: the real
//! tree and registry (on a temp file) over the FakeRuntime, whose events the
//! watch follows.
//!
//! The watch works after the fact (events are handled as they arrive, drift
//! and history are recorded from spawned tasks), so assertions poll with a
//! deadline. Negative assertions ("no such event") first pass a barrier that
//! proves the watch has handled everything before it.

use std::path::Path;
use std::time::Duration;

use actix::Addr;
use actix_rt::time::sleep;

use super::directory::{ServiceFor, SyncNode, SyncReport};
use super::registry::{Events, ListUnmanaged, RecordObserved};
use super::service::AdoptComponent;
use super::tests::{eventually, harness, harness_with, name, svc_def, two, Harness};
use super::watch::{ObservedContainer, Reevaluate, Remember, Remembered};
use super::{AgentError, AlertSettings, LifecycleAction, ServiceActor, WatchSettings};
use crate::registry::{now_ms, ComponentRow, DesiredState, Event, Observation, UnmanagedRow};
use crate::runtime::fake::FakeRuntime;
use crate::runtime::{CreateRequest, Runtime};
use crate::spec::{parse_service, ServiceDef};

/// How long the watch gets to notice something.
pub(super) const DEADLINE: Duration = Duration::from_secs(3);

/// Settings for tests: no timed scans (the tests drive the watch through
/// events and Observe), the given alert.
pub(super) fn settings(alert: Option<AlertSettings>) -> WatchSettings {
    WatchSettings {
        scan_interval: Duration::from_secs(3600),
        flap_exits: 3,
        flap_window: Duration::from_secs(600),
        alert,
        ..Default::default()
    }
}

/// An alert that appends "KIND SERVICE/COMPONENT" to `file`.
pub(super) fn file_alert(file: &Path) -> AlertSettings {
    AlertSettings {
        command: vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            format!(
                "echo \"$MCP_ALERT_KIND $MCP_ALERT_SERVICE/$MCP_ALERT_COMPONENT\" >> '{}'",
                file.display()
            ),
        ],
        rate_limit: Duration::from_secs(600),
        timeout: Duration::from_secs(5),
    }
}

pub(super) fn alert_lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

fn aux_def() -> ServiceDef {
    parse_service(
        Path::new("aux.toml"),
        "name = \"aux\"\nnode = \"n1\"\nactive = true\n\
         [[components]]\nname = \"db\"\nimage = \"db:1\"\n",
    )
    .unwrap()
}

/// `svc` with `api` only: `web` dropped from the definition.
fn svc_api_only(active: bool) -> ServiceDef {
    parse_service(
        Path::new("svc.toml"),
        &format!(
            "name = \"svc\"\nnode = \"n1\"\nactive = {active}\n\
             [[components]]\nname = \"api\"\nimage = \"api:1\"\n"
        ),
    )
    .unwrap()
}

fn def_on_node(service: &str, node: &str) -> ServiceDef {
    parse_service(
        Path::new(&format!("{service}.toml")),
        &format!(
            "name = \"{service}\"\nnode = \"{node}\"\nactive = true\n\
             [[components]]\nname = \"api\"\nimage = \"api:1\"\n"
        ),
    )
    .unwrap()
}

/// `service/component:kind(detail)` of each event, for messages.
pub(super) fn brief(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| format!("{}/{}:{}({})", e.service, e.component, e.kind, e.detail))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn kinds_of<'a>(events: &'a [Event], component: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e.component == component)
        .map(|e| e.kind.as_str())
        .collect()
}

pub(super) fn find<'a>(events: &'a [Event], component: &str, kind: &str) -> Option<&'a Event> {
    events
        .iter()
        .find(|e| e.component == component && e.kind == kind)
}

pub(super) fn count(events: &[Event], component: &str, kind: &str) -> usize {
    events
        .iter()
        .filter(|e| e.component == component && e.kind == kind)
        .count()
}

fn observed<'a>(rows: &'a [ObservedContainer], container_name: &str) -> &'a ObservedContainer {
    rows.iter()
        .find(|r| r.name == container_name)
        .unwrap_or_else(|| panic!("no row {container_name} in {rows:?}"))
}

/// Runtime calls that act on a container (as opposed to looking at one).
fn acting(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| {
            ["create ", "start ", "stop ", "remove "]
                .iter()
                .any(|verb| c.starts_with(verb))
        })
        .cloned()
        .collect()
}

impl Harness {
    pub(super) async fn all_events(&self) -> Vec<Event> {
        self.handles
            .peers
            .registry
            .send(Events {
                service: None,
                by: None,
                limit: 10_000,
            })
            .await
            .unwrap()
            .unwrap()
    }

    pub(super) async fn unmanaged(&self) -> Vec<UnmanagedRow> {
        self.handles
            .peers
            .registry
            .send(ListUnmanaged {})
            .await
            .unwrap()
            .unwrap()
    }

    pub(super) async fn service_actor(&self, service: &str) -> Addr<ServiceActor> {
        self.handles
            .directory
            .send(ServiceFor {
                name: name(service),
            })
            .await
            .unwrap()
    }

    async fn adopt(
        &self,
        service: &str,
        container: &str,
        component: &str,
    ) -> Result<ComponentRow, AgentError> {
        self.service_actor(service)
            .await
            .send(AdoptComponent {
                container: container.to_string(),
                component: name(component),
                by: "tester".to_string(),
            })
            .await
            .unwrap()
    }

    async fn sync(&self, defs: Vec<ServiceDef>, prune: bool) -> Result<SyncReport, AgentError> {
        self.handles
            .directory
            .send(SyncNode {
                defs,
                prune,
                by: "tester".to_string(),
            })
            .await
            .unwrap()
    }

    /// Barrier after an operation: the watch has handled the end of every
    /// operation that has returned (its mailbox is in order), and the clock
    /// has moved past this millisecond, so what the test does next to the
    /// runtime is not taken for the operation's own late events.
    pub(super) async fn quiesce(&self) {
        self.handles
            .peers
            .watch
            .send(Reevaluate {
                service: "no-such-service".to_string(),
            })
            .await
            .unwrap();
        let now = now_ms();
        while now_ms() <= now {
            sleep(Duration::from_millis(1)).await;
        }
    }

    /// Barrier for runtime events: the watch handles them one at a time, in
    /// order, and records what each causes (observed state, history, drift,
    /// alerts sent) before the next, so once a probe container's exit is
    /// recorded, everything before it is. Leaves the (unmanaged, exited)
    /// probe container behind.
    pub(super) async fn drain(&self, probe: &str) {
        self.fake.insert_unmanaged(probe, "probe:1");
        self.fake.exit(probe, 0);
        eventually(
            &format!("the watch to record the exit of probe {probe}"),
            DEADLINE,
            || async {
                let rows = self.unmanaged().await;
                rows.iter()
                    .any(|r| r.name == probe && r.observed_state == "exited")
                    .then_some(())
                    .ok_or_else(|| format!("{rows:?}"))
            },
        )
        .await;
    }

    /// A running container MCP did not create, put on the node by hand and
    /// scanned: its id and its row in the unmanaged list.
    async fn stray(&self, name: &str, image: &str) -> (String, UnmanagedRow) {
        let id = self.fake.insert_unmanaged(name, image);
        self.observe().await.unwrap();
        let row = eventually(
            &format!("{name} in the unmanaged list"),
            DEADLINE,
            || async {
                let rows = self.unmanaged().await;
                rows.iter()
                    .find(|r| r.name == name)
                    .cloned()
                    .ok_or(format!("{rows:?}"))
            },
        )
        .await;
        (id, row)
    }

    /// svc/api's crash with code 137 shows as drift and a `died` event.
    async fn api_crash_is_seen(&self) {
        let row = self
            .wait_row("svc", "api", "drift after the crash", |r| {
                r.state.drift.is_some()
            })
            .await;
        assert_eq!(drift_detail(&row), Some(DRIFTED_RUNNING));
        let events = self
            .wait_events("svc", "died of api", |ev| find(ev, "api", "died").is_some())
            .await;
        assert!(find(&events, "api", "died").unwrap().detail.contains("137"));
    }

    /// The component's row, once `ready` holds for it.
    pub(super) async fn wait_row(
        &self,
        service: &str,
        component: &str,
        what: &str,
        ready: impl Fn(&ComponentRow) -> bool,
    ) -> ComponentRow {
        eventually(
            &format!("{service}/{component}: {what}"),
            DEADLINE,
            || async {
                let row = self.row(service, component).await;
                if ready(&row) {
                    Ok(row)
                } else {
                    Err(format!("{row:?}"))
                }
            },
        )
        .await
    }

    /// The service's events, once `ready` holds for them.
    pub(super) async fn wait_events(
        &self,
        service: &str,
        what: &str,
        ready: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        eventually(
            &format!("events of {service}: {what}"),
            DEADLINE,
            || async {
                let events = self.events(service).await;
                if ready(&events) {
                    Ok(events)
                } else {
                    Err(brief(&events))
                }
            },
        )
        .await
    }
}

const DRIFTED_RUNNING: &str = "desired running, observed exited";
const DRIFTED_STOPPED: &str = "desired stopped, observed running";

fn drift_detail(row: &ComponentRow) -> Option<&str> {
    row.state.drift.as_ref().map(|d| d.detail.as_str())
}

#[actix::test]
async fn a_crash_behind_the_agents_back_is_drift_until_started() {
    let h = &harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    h.deploy(two(), None).await.unwrap();
    h.quiesce().await;
    let id = h.container("svc-api").id;
    let calls_before = h.fake.calls().len();

    h.fake.exit("svc-api", 137);
    let row = h
        .wait_row("svc", "api", "drift after the crash", |r| {
            r.state.drift.is_some() && r.state.observed_state == "exited"
        })
        .await;
    assert_eq!(drift_detail(&row), Some(DRIFTED_RUNNING));
    assert_eq!(row.state.desired_state, DesiredState::Running);
    assert_eq!(row.state.container_id.as_deref(), Some(id.as_str()));
    let events = h
        .wait_events("svc", "died and drift-detected of api", |ev| {
            find(ev, "api", "died").is_some() && find(ev, "api", "drift-detected").is_some()
        })
        .await;
    let died = find(&events, "api", "died").unwrap();
    assert!(died.detail.contains("137"), "{died:?}");
    let detected = find(&events, "api", "drift-detected").unwrap();
    assert_eq!(detected.detail, DRIFTED_RUNNING);
    assert!(died.id < detected.id, "{}", brief(&events));
    assert_eq!(count(&events, "api", "drift-detected"), 1);

    // Noticing is all the watch does: nothing restarted the container.
    assert_eq!(h.container("svc-api").state, "exited");
    assert!(
        acting(&h.fake.calls()[calls_before..]).is_empty(),
        "{:?}",
        h.fake.calls()
    );
    // The other component is not concerned.
    let web = h.row("svc", "web").await;
    assert_eq!(web.state.drift, None);
    assert_eq!(web.state.observed_state, "running");
    assert_eq!(kinds_of(&events, "web"), ["deployed"]);

    let outcomes = h
        .lifecycle("svc", LifecycleAction::Start, Some("api"))
        .await
        .unwrap();
    assert!(outcomes[0].result.is_ok(), "{outcomes:?}");
    let after = h.container("svc-api");
    assert_eq!(after.id, id, "started in place");
    assert_eq!(after.state, "running");
    let row = h
        .wait_row("svc", "api", "drift cleared by the start", |r| {
            r.state.drift.is_none()
        })
        .await;
    assert_eq!(row.state.observed_state, "running");
    let events = h
        .wait_events("svc", "drift-cleared of api", |ev| {
            find(ev, "api", "drift-cleared").is_some()
        })
        .await;
    let started = find(&events, "api", "started").unwrap();
    let cleared = find(&events, "api", "drift-cleared").unwrap();
    assert!(detected.id < started.id, "{}", brief(&events));
    assert!(started.id < cleared.id, "{}", brief(&events));
}

#[actix::test]
async fn a_scan_in_flight_does_not_overwrite_a_newer_event() {
    let h = &harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    h.deploy(two(), None).await.unwrap();
    h.quiesce().await;
    // The scan's snapshot says api is running; the crash comes after it.
    h.fake.set_list_delay(Duration::from_millis(300));
    let scan = h.observe();
    let crash = async {
        sleep(Duration::from_millis(100)).await;
        h.fake.exit("svc-api", 137);
    };
    let (rows, ()) = futures::join!(scan, crash);
    assert_eq!(observed(&rows.unwrap(), "svc-api").state, "running");
    h.fake.set_list_delay(Duration::ZERO);
    h.drain("probe-1").await;
    let row = h.row("svc", "api").await;
    assert_eq!(row.state.observed_state, "exited", "{row:?}");
    assert_eq!(drift_detail(&row), Some(DRIFTED_RUNNING));
}

/// Creates svc/api's container from `api:2` behind the agent's back, as a
/// killed agent's create that the runtime finishes late would, and waits for
/// the watch to make it the component's container, spec included.
async fn late_create_is_recorded(h: &Harness) {
    let v2 = svc_def(true, "api:2", "web:1");
    let new = h
        .fake
        .create(CreateRequest {
            service: &name("svc"),
            component: v2.component(&name("api")).unwrap(),
            container_name: "svc-api".to_string(),
            secrets: &Default::default(),
            routes: &[],
            aliases: &[],
        })
        .await
        .unwrap();
    let row = h
        .wait_row("svc", "api", "the new container", |r| {
            r.state.container_id.as_deref() == Some(new.as_str())
        })
        .await;
    assert_eq!(row.state.observed_state, "created");
    assert_eq!(row.state.image.as_deref(), Some("api:2"));
    assert_eq!(row.deployed_spec.as_ref(), v2.component(&name("api")));
}

/// `two()` deployed, then svc-api removed behind the agent's back and seen.
async fn api_removed_behind_the_agents_back() -> Harness {
    let h = harness(FakeRuntime::with_images(&["api:1", "api:2", "web:1"]));
    h.deploy(two(), None).await.unwrap();
    h.quiesce().await;
    h.fake.remove(&h.container("svc-api").id).await.unwrap();
    h.wait_row("svc", "api", "the removal", |r| {
        r.state.container_id.is_none()
    })
    .await;
    h
}

#[actix::test]
async fn a_container_created_behind_the_agents_back_brings_its_spec() {
    let h = &api_removed_behind_the_agents_back().await;
    late_create_is_recorded(h).await;
}

#[actix::test]
async fn a_create_replaces_a_container_the_registry_still_believes_in() {
    // The registry still names a container that is gone (a killed agent
    // removed it and never said so).
    let h = &api_removed_behind_the_agents_back().await;
    let stale = Observation {
        service: "svc".to_string(),
        component: "api".to_string(),
        container_id: Some("gone".to_string()),
        observed_state: "running".to_string(),
        created_from: None,
    };
    h.handles
        .peers
        .registry
        .send(RecordObserved {
            observations: vec![stale],
        })
        .await
        .unwrap()
        .unwrap();
    late_create_is_recorded(h).await;
}

#[actix::test]
async fn a_deploy_or_redeploy_is_not_taken_for_drift() {
    let h = &harness(FakeRuntime::with_images(&["api:1", "api:2", "web:1"]));
    h.deploy(two(), None).await.unwrap();
    h.drain("probe-1").await;
    let events = h.events("svc").await;
    for comp in ["api", "web"] {
        assert_eq!(kinds_of(&events, comp), ["deployed"], "{}", brief(&events));
        let row = h.row("svc", comp).await;
        assert_eq!(row.state.drift, None, "{comp}");
        assert_eq!(row.state.observed_state, "running", "{comp}");
    }

    // Redeploys stop and remove the old containers, then create and start
    // new ones: all the watch's business, none of it drift.
    let api_before = h.container("svc-api").id;
    let web_before = h.container("svc-web").id;
    let outcomes = h.deploy_forced(two(), None).await.unwrap();
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    let outcomes = h
        .deploy(svc_def(true, "api:2", "web:1"), Some("api"))
        .await
        .unwrap();
    assert!(outcomes[0].result.is_ok(), "{outcomes:?}");
    let api_after = h.container("svc-api");
    assert_ne!(api_after.id, api_before);
    assert_eq!(api_after.image, "api:2");
    assert_ne!(h.container("svc-web").id, web_before);
    // The old containers were stopped while running: their deaths were
    // emitted (the watch saw them, and must have ignored them).
    for old in [&api_before, &web_before] {
        let calls = h.calls_on(old);
        assert!(calls.iter().any(|c| c.starts_with("stop ")), "{calls:?}");
        assert!(calls.iter().any(|c| c.starts_with("remove ")), "{calls:?}");
    }

    h.drain("probe-2").await;
    let events = h.events("svc").await;
    assert_eq!(
        kinds_of(&events, "api"),
        ["deployed", "deployed", "deployed"],
        "{}",
        brief(&events)
    );
    assert_eq!(
        kinds_of(&events, "web"),
        ["deployed", "deployed"],
        "{}",
        brief(&events)
    );
    for comp in ["api", "web"] {
        let row = h.row("svc", comp).await;
        assert_eq!(row.state.drift, None, "{comp}");
        assert_eq!(row.state.observed_state, "running", "{comp}");
        assert_eq!(
            row.state.container_id.as_deref(),
            Some(h.container(&format!("svc-{comp}")).id.as_str())
        );
    }
}

#[actix::test]
async fn a_stopped_component_running_again_is_drift() {
    let h = &harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    h.deploy(two(), None).await.unwrap();
    h.lifecycle("svc", LifecycleAction::Stop, Some("api"))
        .await
        .unwrap();
    h.quiesce().await;
    let id = h.container("svc-api").id;
    let row = h.row("svc", "api").await;
    assert_eq!(row.state.desired_state, DesiredState::Stopped);
    assert_eq!(row.state.observed_state, "exited");
    assert_eq!(row.state.drift, None, "a stop is not drift");
    let calls_before = h.fake.calls().len();

    // Started behind the agent's back.
    h.fake.start(&id).await.unwrap();
    let row = h
        .wait_row("svc", "api", "drift after the start", |r| {
            r.state.drift.is_some()
        })
        .await;
    assert_eq!(drift_detail(&row), Some(DRIFTED_STOPPED));
    assert_eq!(row.state.observed_state, "running");
    assert_eq!(row.state.desired_state, DesiredState::Stopped);
    let events = h
        .wait_events("svc", "drift-detected of api", |ev| {
            find(ev, "api", "drift-detected").is_some()
        })
        .await;
    assert_eq!(
        find(&events, "api", "drift-detected").unwrap().detail,
        DRIFTED_STOPPED
    );
    assert!(
        find(&events, "api", "restarted").is_some(),
        "{}",
        brief(&events)
    );
    // Left running: the only acting call since is the test's own start
    // (the look after the stop may still have inspected it).
    assert_eq!(h.container("svc-api").state, "running");
    assert_eq!(
        acting(&h.fake.calls()[calls_before..]),
        [format!("start {id}")]
    );
    assert_eq!(h.row("svc", "web").await.state.drift, None);
}

#[actix::test]
async fn flapping_is_recorded_and_alerts_are_rate_limited_per_component() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alerts.log");
    let h = &harness_with(
        FakeRuntime::with_images(&["api:1", "web:1"]),
        WatchSettings {
            flap_exits: 2,
            flap_window: Duration::from_secs(60),
            ..settings(Some(file_alert(&file)))
        },
    );
    h.deploy(two(), None).await.unwrap();
    h.quiesce().await;
    let id = h.container("svc-api").id;

    for round in 1..=4 {
        h.fake.exit("svc-api", 1);
        h.wait_row("svc", "api", &format!("drift in round {round}"), |r| {
            r.state.drift.is_some() && r.state.observed_state == "exited"
        })
        .await;
        if round == 1 {
            eventually("the first alert", DEADLINE, || async {
                let lines = alert_lines(&file);
                (!lines.is_empty())
                    .then_some(())
                    .ok_or(format!("{lines:?}"))
            })
            .await;
        }
        h.fake.start(&id).await.unwrap();
        h.wait_row(
            "svc",
            "api",
            &format!("no drift after round {round}"),
            |r| r.state.drift.is_none() && r.state.observed_state == "running",
        )
        .await;
    }
    let events = h
        .wait_events("svc", "4 drift-cleared of api", |ev| {
            count(ev, "api", "drift-cleared") == 4
        })
        .await;
    assert_eq!(count(&events, "api", "died"), 4, "{}", brief(&events));
    assert_eq!(count(&events, "api", "restarted"), 4, "{}", brief(&events));
    assert_eq!(
        count(&events, "api", "drift-detected"),
        4,
        "{}",
        brief(&events)
    );
    // Two exits make a flap, then the count starts again: exits 2 and 4.
    let flaps: Vec<_> = events
        .iter()
        .filter(|e| e.component == "api" && e.kind == "flapping")
        .collect();
    assert_eq!(flaps.len(), 2, "{}", brief(&events));
    assert_eq!(flaps[0].detail, "2 exits within 60s");
    assert_eq!(find(&events, "api", "alert-failed"), None);

    // Drift four times and flapping twice, one alert: the first one. Each
    // alert is an event, recorded before the watch handles anything else.
    let sent: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "alert-sent")
        .map(|e| (e.component.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(
        sent,
        [(
            "api",
            "drift-detected: desired running, observed exited; reconcile is off: nothing is done"
        )],
        "{}",
        brief(&events)
    );

    // Another component has its own rate limit.
    h.fake.exit("svc-web", 1);
    let events = h
        .wait_events("svc", "the alert of web", |ev| {
            find(ev, "web", "alert-sent").is_some()
        })
        .await;
    assert_eq!(count(&events, "api", "alert-sent"), 1, "{}", brief(&events));
    // The commands ran: one line each.
    eventually("both alert commands", DEADLINE, || async {
        let lines = alert_lines(&file);
        (lines.len() >= 2).then_some(()).ok_or(format!("{lines:?}"))
    })
    .await;
    assert_eq!(
        alert_lines(&file),
        ["drift-detected svc/api", "drift-detected svc/web"]
    );
}

#[actix::test]
async fn a_failing_alert_is_an_event() {
    let h = &harness_with(
        FakeRuntime::with_images(&["api:1", "web:1"]),
        settings(Some(AlertSettings {
            command: vec!["/bin/false".to_string()],
            rate_limit: Duration::from_secs(600),
            timeout: Duration::from_secs(5),
        })),
    );
    h.deploy(two(), None).await.unwrap();
    h.quiesce().await;
    h.fake.exit("svc-api", 3);
    let events = h
        .wait_events("svc", "alert-failed of api", |ev| {
            find(ev, "api", "alert-failed").is_some()
        })
        .await;
    let failed = find(&events, "api", "alert-failed").unwrap();
    assert!(failed.detail.contains("/bin/false"), "{failed:?}");
    assert!(failed.detail.contains("exit"), "{failed:?}");
    assert_eq!(count(&events, "api", "alert-failed"), 1);
    assert!(find(&events, "api", "drift-detected").unwrap().id < failed.id);
}

#[actix::test]
async fn a_hanging_alert_is_killed_and_does_not_hold_up_the_agent() {
    let h = &harness_with(
        FakeRuntime::with_images(&["api:1", "web:1"]),
        settings(Some(AlertSettings {
            command: vec!["/bin/sleep".to_string(), "30".to_string()],
            rate_limit: Duration::from_secs(600),
            timeout: Duration::from_secs(1),
        })),
    );
    h.deploy(two(), None).await.unwrap();
    h.quiesce().await;
    h.fake.exit("svc-api", 1);
    h.wait_events("svc", "drift-detected of api", |ev| {
        find(ev, "api", "drift-detected").is_some()
    })
    .await;

    // While the alert command hangs, the agent deploys and the watch keeps
    // recording.
    let outcomes = h.deploy(two(), Some("api")).await.unwrap();
    assert!(outcomes[0].result.is_ok(), "{outcomes:?}");
    assert_eq!(h.container("svc-api").state, "running");
    h.wait_events("svc", "drift-cleared of api", |ev| {
        find(ev, "api", "drift-cleared").is_some()
    })
    .await;
    assert!(h.observe().await.is_ok());

    let events = eventually("alert-failed of api", Duration::from_secs(5), || async {
        let events = h.events("svc").await;
        find(&events, "api", "alert-failed")
            .is_some()
            .then_some(())
            .ok_or_else(|| brief(&events))?;
        Ok(events)
    })
    .await;
    let failed = find(&events, "api", "alert-failed").unwrap();
    assert!(failed.detail.contains("/bin/sleep"), "{failed:?}");
    assert!(
        failed.detail.contains("did not finish within 1s"),
        "{failed:?}"
    );
    // The deploy and the end of the drift came while the alert still ran.
    let cleared = find(&events, "api", "drift-cleared").unwrap();
    assert!(cleared.id < failed.id, "{}", brief(&events));
    assert_eq!(count(&events, "api", "alert-failed"), 1);
}

#[actix::test]
async fn an_unmanaged_container_is_recorded_and_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alerts.log");
    let h = &harness_with(
        FakeRuntime::with_images(&["api:1", "web:1"]),
        settings(Some(file_alert(&file))),
    );
    h.deploy(two(), None).await.unwrap();
    h.quiesce().await;
    let (stray_id, recorded) = h.stray("stray", "img:1").await;
    let rows = h.observe().await.unwrap();
    let stray = observed(&rows, "stray");
    assert_eq!(stray.id, stray_id);
    assert_eq!(stray.state, "running");
    assert_eq!((stray.service.as_str(), stray.component.as_str()), ("", ""));
    assert_eq!(stray.desired_state, DesiredState::Ignore);
    assert_eq!(recorded.container_id, stray_id);
    assert_eq!(recorded.image, "img:1");
    assert_eq!(recorded.observed_state, "running");
    assert!(recorded.first_seen_ms > 0);
    let events_before = h.all_events().await;
    let calls_before = h.fake.calls().len();

    h.fake.exit("stray", 1);
    // The watch saw it die (and only recorded that)...
    eventually("stray recorded as exited", DEADLINE, || async {
        let rows = h.unmanaged().await;
        rows.iter()
            .any(|r| r.container_id == stray_id && r.observed_state == "exited")
            .then_some(())
            .ok_or(format!("{rows:?}"))
    })
    .await;
    // ... while a managed component's crash right after is alerted on.
    h.fake.exit("svc-api", 1);
    eventually("the alert of api", DEADLINE, || async {
        let lines = alert_lines(&file);
        (!lines.is_empty())
            .then_some(())
            .ok_or(format!("{lines:?}"))
    })
    .await;
    h.drain("probe").await;

    assert_eq!(alert_lines(&file), ["drift-detected svc/api"]);
    let events = h.all_events().await;
    let new: Vec<Event> = events[events_before.len()..].to_vec();
    assert!(
        new.iter()
            .all(|e| e.service == "svc" && e.component == "api"),
        "{}",
        brief(&new)
    );
    assert!(
        events.iter().all(|e| !e.detail.contains("stray")),
        "{}",
        brief(&events)
    );
    assert_eq!(h.container("stray").state, "exited");
    assert!(h.calls_on(&stray_id).is_empty(), "{:?}", h.fake.calls());
    assert!(h.calls_on("stray").is_empty(), "{:?}", h.fake.calls());
    assert!(
        acting(&h.fake.calls()[calls_before..]).is_empty(),
        "{:?}",
        h.fake.calls()
    );
    let rows = h.observe().await.unwrap();
    assert_eq!(observed(&rows, "stray").desired_state, DesiredState::Ignore);
}

#[actix::test]
async fn an_adopted_container_becomes_a_component() {
    let h = &harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    let (stray_id, _) = h.stray("stray", "img:1").await;

    let row = h.adopt("proxy", "stray", "main").await.unwrap();
    assert_eq!(
        (row.state.service.as_str(), row.state.name.as_str()),
        ("proxy", "main")
    );
    assert_eq!(row.state.desired_state, DesiredState::Running);
    assert_eq!(row.state.container_id.as_deref(), Some(stray_id.as_str()));
    assert_eq!(row.state.observed_state, "running");
    assert_eq!(row.state.image.as_deref(), Some("img:1"));
    assert_eq!(row.state.drift, None);
    assert_eq!(h.row("proxy", "main").await, row);
    let events = h.events("proxy").await;
    assert_eq!(kinds_of(&events, "main"), ["adopted"], "{}", brief(&events));
    assert!(
        h.unmanaged()
            .await
            .iter()
            .all(|r| r.container_id != stray_id),
        "adopted, so no longer unmanaged"
    );

    let rows = h.observe().await.unwrap();
    let stray = observed(&rows, "stray");
    assert_eq!(stray.id, stray_id);
    assert_eq!(
        (stray.service.as_str(), stray.component.as_str()),
        ("proxy", "main")
    );
    assert_eq!(stray.desired_state, DesiredState::Running);
    assert_eq!(rows.len(), 1, "{rows:?}");

    // It has no MCP labels: the watch knows it by its id.
    h.fake.exit("stray", 1);
    let row = h
        .wait_row("proxy", "main", "drift after the crash", |r| {
            r.state.drift.is_some()
        })
        .await;
    assert_eq!(drift_detail(&row), Some(DRIFTED_RUNNING));
    let events = h
        .wait_events("proxy", "drift-detected of main", |ev| {
            find(ev, "main", "drift-detected").is_some()
        })
        .await;
    assert!(
        find(&events, "main", "died").is_some(),
        "{}",
        brief(&events)
    );

    let calls_before = h.fake.calls().len();
    let outcomes = h
        .lifecycle("proxy", LifecycleAction::Start, Some("main"))
        .await
        .unwrap();
    assert!(outcomes[0].result.is_ok(), "{outcomes:?}");
    assert_eq!(outcomes[0].container_id.as_deref(), Some(stray_id.as_str()));
    let c = h.container("stray");
    assert_eq!(
        (c.id.as_str(), c.state.as_str()),
        (stray_id.as_str(), "running")
    );
    assert!(h.fake.container("proxy-main").is_none(), "not re-created");
    assert_eq!(
        acting(&h.fake.calls()[calls_before..]),
        [format!("start {stray_id}")]
    );
    h.wait_row("proxy", "main", "drift cleared by the start", |r| {
        r.state.drift.is_none() && r.state.observed_state == "running"
    })
    .await;

    // Nothing recorded by that name.
    let err = h.adopt("proxy", "ghost", "other").await.unwrap_err();
    assert!(matches!(err, AgentError::NotFound(_)), "{err:?}");
    assert!(err.to_string().contains("ghost"), "{err}");
    assert!(h.service("proxy").await.unwrap().components.len() == 1);

    // A component that already has a container.
    let (other_id, _) = h.stray("stray2", "img:2").await;
    let before = h.row("proxy", "main").await;
    let err = h.adopt("proxy", "stray2", "main").await.unwrap_err();
    assert!(matches!(err, AgentError::InvalidArgument(_)), "{err:?}");
    assert!(err.to_string().contains("proxy/main"), "{err}");
    let after = h.row("proxy", "main").await;
    assert_eq!(after.state.container_id, before.state.container_id);
    assert_eq!(after.state.image, before.state.image);
    assert!(h
        .unmanaged()
        .await
        .iter()
        .any(|r| r.container_id == other_id));
}

#[actix::test]
async fn sync_records_desired_state_without_acting_and_prunes_on_request() {
    let h = &harness(FakeRuntime::with_images(&["api:1", "web:1", "db:1"]));
    h.deploy(two(), None).await.unwrap();
    h.deploy(aux_def(), None).await.unwrap();
    h.quiesce().await;
    let calls_before = h.fake.calls().len();

    // svc becomes inactive; aux is not in the definitions.
    let report = h
        .sync(vec![svc_def(false, "api:1", "web:1")], false)
        .await
        .unwrap();
    assert_eq!(report.synced, ["svc"]);
    assert_eq!(report.prunable, ["aux"]);
    assert!(!report.pruned);
    assert!(!h.service("svc").await.unwrap().active);
    for comp in ["api", "web"] {
        let row = h
            .wait_row("svc", comp, "drift after the sync", |r| {
                r.state.drift.is_some()
            })
            .await;
        assert_eq!(row.state.desired_state, DesiredState::Stopped, "{comp}");
        assert_eq!(drift_detail(&row), Some(DRIFTED_STOPPED), "{comp}");
        assert_eq!(h.container(&format!("svc-{comp}")).state, "running");
    }
    let events = h
        .wait_events("svc", "drift-detected of api and web", |ev| {
            find(ev, "api", "drift-detected").is_some()
                && find(ev, "web", "drift-detected").is_some()
        })
        .await;
    assert_eq!(
        find(&events, "web", "drift-detected").unwrap().detail,
        DRIFTED_STOPPED
    );
    let db = h.row("aux", "db").await;
    assert_eq!(db.state.desired_state, DesiredState::Running);
    assert_eq!(db.state.drift, None);

    // A definition for another node: refused as a whole, nothing changes
    // (not even with prune).
    let err = h
        .sync(
            vec![
                svc_def(true, "api:1", "web:1"),
                def_on_node("else", "other"),
            ],
            true,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::FailedPrecondition(_)), "{err:?}");
    assert!(err.to_string().contains("other"), "{err}");
    assert!(!h.service("svc").await.unwrap().active);
    for comp in ["api", "web"] {
        assert_eq!(
            h.row("svc", comp).await.state.desired_state,
            DesiredState::Stopped
        );
    }
    assert!(h.service("aux").await.is_some());
    assert!(h.service("else").await.is_none());

    // A definition without web: web is prunable, and kept.
    let report = h.sync(vec![svc_api_only(false)], false).await.unwrap();
    assert_eq!(report.prunable, ["aux", "svc/web"]);
    h.row("svc", "web").await;

    // Pruned: forgotten by the registry, the containers stay.
    let report = h.sync(vec![svc_api_only(false)], true).await.unwrap();
    assert!(report.pruned);
    assert_eq!(report.prunable, ["aux", "svc/web"]);
    assert!(h.service("aux").await.is_none());
    let svc = h.service("svc").await.unwrap();
    let names: Vec<&str> = svc
        .components
        .iter()
        .map(|c| c.state.name.as_str())
        .collect();
    assert_eq!(names, ["api"]);
    assert_eq!(h.container("aux-db").state, "running");
    assert_eq!(h.container("svc-web").state, "running");
    let rows = h.observe().await.unwrap();
    for forgotten in ["aux-db", "svc-web"] {
        let row = observed(&rows, forgotten);
        assert_eq!(row.service, "", "{row:?}");
        assert_eq!(row.desired_state, DesiredState::Ignore, "{row:?}");
    }

    // Sync is bookkeeping only.
    let calls = h.fake.calls()[calls_before..].to_vec();
    assert!(acting(&calls).is_empty(), "{calls:?}");
}

#[actix::test]
async fn the_watch_comes_back_after_a_runtime_outage() {
    let h = &harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    h.deploy(two(), None).await.unwrap();
    h.quiesce().await;

    h.fake.set_unavailable(true);
    let err = h.observe().await.unwrap_err();
    assert!(matches!(err, AgentError::Unavailable(_)), "{err:?}");
    // What happens during the outage is not streamed to anyone.
    h.fake.exit("svc-web", 1);
    h.fake.set_unavailable(false);

    // Reconnected (backoff from 0.2 s), the watch catches up with a scan...
    let outage_deadline = Duration::from_secs(8);
    eventually(
        "web's drift from the catch-up scan",
        outage_deadline,
        || async {
            let row = h.row("svc", "web").await;
            (drift_detail(&row) == Some(DRIFTED_RUNNING))
                .then_some(())
                .ok_or(format!("{row:?}"))
        },
    )
    .await;
    // ... and follows the event stream again, with no operator action.
    h.fake.exit("svc-api", 137);
    h.api_crash_is_seen().await;
}

/// A die and the start right after it (a restart policy, a crash loop) are
/// recorded in order, so the die's drift never lands after the start's
/// clearing of it. A flapping exit, with one more event to record, is the
/// hardest case; the watch records each event before handling the next.
#[actix::test]
async fn a_quick_exit_and_restart_leaves_no_stale_drift() {
    let h = &harness_with(
        FakeRuntime::with_images(&["api:1", "web:1"]),
        WatchSettings {
            // Every exit is a flap: the die has one more event to record.
            flap_exits: 1,
            ..settings(None)
        },
    );
    h.deploy(two(), None).await.unwrap();
    h.quiesce().await;
    let id = h.container("svc-api").id;
    let mut stale = Vec::new();
    for round in 0..5 {
        // The runtime restarts it at once, as a restart policy does.
        h.fake.exit("svc-api", 1);
        h.fake.start(&id).await.unwrap();
        h.drain(&format!("probe-{round}")).await;
        let row = h.row("svc", "api").await;
        if row.state.drift.is_some() || row.state.observed_state != "running" {
            stale.push(format!(
                "round {round}: observed {}, drift {:?}",
                row.state.observed_state, row.state.drift
            ));
        }
    }
    assert!(stale.is_empty(), "stale drift while running: {stale:#?}");
}

/// An exit after an operation's last look at the container (its finish's
/// inspect) but before the watch handles the operation's end is taken for
/// the operation's own event; the watch's fresh inspect at the operation's
/// end catches it: the crash is recorded ("died") and is drift at once.
#[actix::test]
async fn an_exit_at_the_end_of_an_operation_is_not_lost() {
    let h = &harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    h.deploy(two(), None).await.unwrap();
    h.quiesce().await;
    // An operation on api has recorded its outcome ("running") and is about
    // to give its lease back, when the container dies.
    let lease = h
        .handles
        .peers
        .ops
        .lease(
            ("svc".to_string(), "api".to_string()),
            h.handles.peers.watch.clone(),
        )
        .await;
    h.fake.exit("svc-api", 137);
    h.drain("probe").await;
    drop(lease);

    h.api_crash_is_seen().await;
}

#[actix::test]
async fn a_late_create_during_an_operation_is_recorded_when_it_ends() {
    // The registry knows no container (recovery found it gone) while the
    // runtime finishes a killed agent's create under an operation's lease:
    // its events are the operation's, so the look after it finds it by name.
    let h = &api_removed_behind_the_agents_back().await;
    let lease = h
        .handles
        .peers
        .ops
        .lease(
            ("svc".to_string(), "api".to_string()),
            h.handles.peers.watch.clone(),
        )
        .await;
    let v2 = svc_def(true, "api:2", "web:1");
    let new = h
        .fake
        .create(CreateRequest {
            service: &name("svc"),
            component: v2.component(&name("api")).unwrap(),
            container_name: "svc-api".to_string(),
            secrets: &Default::default(),
            routes: &[],
            aliases: &[],
        })
        .await
        .unwrap();
    h.drain("probe").await;
    drop(lease);
    let row = h
        .wait_row("svc", "api", "the new container", |r| {
            r.state.container_id.as_deref() == Some(new.as_str())
        })
        .await;
    assert_eq!(row.state.observed_state, "created");
    assert_eq!(row.deployed_spec.as_ref(), v2.component(&name("api")));
}

/// What the watch keeps per component in memory (epochs, exits, alert
/// times) and the operations' end times forget components the registry no
/// longer has at the next full scan; the others are kept.
#[actix::test]
async fn the_watch_forgets_components_that_are_gone() {
    let alerts = tempfile::tempdir().unwrap();
    let h = &harness_with(
        FakeRuntime::with_images(&["api:1", "web:1", "db:1"]),
        settings(Some(file_alert(&alerts.path().join("alerts")))),
    );
    h.deploy(two(), None).await.unwrap();
    h.deploy(aux_def(), None).await.unwrap();
    h.quiesce().await;
    // aux/db dies: an exit counted, drift alerted.
    h.fake.exit("aux-db", 1);
    h.wait_events("aux", "the alert for db's drift", |ev| {
        find(ev, "db", "alert-sent").is_some()
    })
    .await;
    let key = |s: &str, c: &str| (s.to_string(), c.to_string());
    let (db, api, web) = (key("aux", "db"), key("svc", "api"), key("svc", "web"));
    let before = h.handles.peers.watch.send(Remember).await.unwrap();
    assert!(before.exits.contains(&db), "{before:?}");
    assert!(before.alerts.contains(&db), "{before:?}");
    for k in [&db, &api, &web] {
        assert!(before.epochs.contains(k), "{k:?}: {before:?}");
        assert!(before.ended.contains(k), "{k:?}: {before:?}");
    }

    // aux and svc/web forgotten by the registry; their containers stay.
    h.sync(vec![svc_api_only(true)], true).await.unwrap();
    h.observe().await.unwrap();
    let after = h.handles.peers.watch.send(Remember).await.unwrap();
    assert_eq!(
        after,
        Remembered {
            epochs: vec![api.clone()],
            exits: vec![],
            alerts: vec![],
            ended: vec![api],
        }
    );
    assert_eq!(h.container("aux-db").state, "exited");
    assert_eq!(h.container("svc-web").state, "running");
}
