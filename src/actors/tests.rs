//! Unit tests of the actor tree: the real tree and registry (on a temp file)
//! over the in-memory FakeRuntime.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::registry::{Events, GetService};
use super::watch::ObservedContainer;
use super::*;
use crate::names::Name;
use crate::registry::{ComponentRow, DesiredState, Event, Registry, ServiceRow};
use crate::runtime::fake::FakeRuntime;
use crate::runtime::{ContainerInfo, CreateRequest, Runtime, LABEL_COMPONENT, LABEL_SERVICE};
use crate::spec::{parse_service, ServiceDef};

/// The tree over a fake runtime, with its registry in a temp dir that lives
/// as long as the harness.
pub(super) struct Harness {
    _dir: tempfile::TempDir,
    pub(super) fake: Arc<FakeRuntime>,
    pub(super) handles: AgentHandles,
}

pub(super) fn harness(fake: FakeRuntime) -> Harness {
    harness_with(
        fake,
        WatchSettings {
            // Tests drive the watch through events and Observe, not the timer.
            scan_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    )
}

pub(super) fn harness_with(fake: FakeRuntime, watch: WatchSettings) -> Harness {
    harness_settings(fake, |s| s.watch = watch)
}

/// The tree over `fake` with the test settings as `tweak` changes them.
pub(super) fn harness_settings(
    fake: FakeRuntime,
    tweak: impl FnOnce(&mut AgentSettings),
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mcp.db");
    let registry = Registry::open(&db).unwrap();
    let fake = Arc::new(fake);
    let runtime: Arc<dyn Runtime> = fake.clone();
    let mut settings = AgentSettings {
        node: "n1".into(),
        stop_timeout: Duration::from_millis(10),
        watch: WatchSettings {
            // Tests drive the watch through events and Observe, not the timer.
            scan_interval: Duration::from_secs(3600),
            ..Default::default()
        },
        policy: Default::default(),
        recovery: crate::actors::recovery::RecoverySettings::off(),
        registries: Default::default(),
        secrets: Arc::new(crate::secrets::SecretStore::new(
            &dir.path().join("secrets"),
        )),
        routes: Default::default(),
        create_networks: true,
    };
    tweak(&mut settings);
    let handles = start(registry, db, runtime, settings, Default::default());
    Harness {
        _dir: dir,
        fake,
        handles,
    }
}

/// Polls `check` every 20 ms until it answers Ok, or panics after `timeout`
/// with `what` and the last answer.
pub(super) async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = std::time::Instant::now();
    loop {
        match check().await {
            Ok(found) => return found,
            Err(last) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => actix_rt::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

pub(super) fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

/// `svc` with `api` on `api:1` and `web` on `web:1`, unless told otherwise.
pub(super) fn svc_def(active: bool, api_image: &str, web_image: &str) -> ServiceDef {
    parse_service(
        Path::new("svc.toml"),
        &format!(
            "name = \"svc\"\nnode = \"n1\"\nactive = {active}\n\
             [[components]]\nname = \"api\"\nimage = \"{api_image}\"\n\
             [[components]]\nname = \"web\"\nimage = \"{web_image}\"\n"
        ),
    )
    .unwrap()
}

pub(super) fn two() -> ServiceDef {
    svc_def(true, "api:1", "web:1")
}

impl Harness {
    pub(super) async fn deploy(
        &self,
        def: ServiceDef,
        component: Option<&str>,
    ) -> service::ServiceResult {
        self.deploy_with(def, component, false).await
    }

    /// A deploy that recreates even unchanged components (`--force`).
    pub(super) async fn deploy_forced(
        &self,
        def: ServiceDef,
        component: Option<&str>,
    ) -> service::ServiceResult {
        self.deploy_with(def, component, true).await
    }

    async fn deploy_with(
        &self,
        def: ServiceDef,
        component: Option<&str>,
        force: bool,
    ) -> service::ServiceResult {
        self.deploy_within(def, component, force, Duration::from_secs(300))
            .await
    }

    /// A deploy whose pulls and health checks give up after `deadline`.
    pub(super) async fn deploy_within(
        &self,
        def: ServiceDef,
        component: Option<&str>,
        force: bool,
        deadline: Duration,
    ) -> service::ServiceResult {
        let addr = self
            .handles
            .directory
            .send(ServiceFor {
                name: def.name.clone(),
            })
            .await
            .unwrap();
        addr.send(Deploy {
            def,
            component: component.map(name),
            rollback: true,
            force,
            progress: None,
            deadline: tokio::time::Instant::now() + deadline,
            by: "tester".to_string(),
            keep_removed: false,
            pull: false,
            caller: None,
        })
        .await
        .unwrap()
    }

    pub(super) async fn lifecycle(
        &self,
        service: &str,
        action: LifecycleAction,
        component: Option<&str>,
    ) -> service::ServiceResult {
        let addr = self
            .handles
            .directory
            .send(ServiceFor {
                name: name(service),
            })
            .await
            .unwrap();
        addr.send(Lifecycle {
            action,
            component: component.map(name),
            by: "tester".to_string(),
            progress: None,
        })
        .await
        .unwrap()
    }

    /// Every component of `svc` is `desired`, observed `observed`, and its
    /// container is in that state.
    fn assert_components(&self, svc: &ServiceRow, desired: DesiredState, observed: &str) {
        for c in &svc.components {
            let name = &c.state.name;
            assert_eq!(c.state.desired_state, desired, "{name}");
            assert_eq!(c.state.observed_state, observed, "{name}");
            assert_eq!(self.container(&format!("svc-{name}")).state, observed);
        }
    }

    pub(super) async fn observe(&self) -> Result<Vec<ObservedContainer>, AgentError> {
        self.handles.peers.watch.send(Observe).await.unwrap()
    }

    pub(super) async fn service(&self, service: &str) -> Option<ServiceRow> {
        self.handles
            .peers
            .registry
            .send(GetService {
                name: service.to_string(),
            })
            .await
            .unwrap()
            .unwrap()
    }

    pub(super) async fn row(&self, service: &str, component: &str) -> ComponentRow {
        self.service(service)
            .await
            .unwrap_or_else(|| panic!("service {service} is not in the registry"))
            .components
            .into_iter()
            .find(|c| c.state.name == component)
            .unwrap_or_else(|| panic!("component {service}/{component} is not in the registry"))
    }

    pub(super) async fn events(&self, service: &str) -> Vec<Event> {
        self.handles
            .peers
            .registry
            .send(Events {
                service: Some(service.to_string()),
                by: None,
                limit: 1000,
            })
            .await
            .unwrap()
            .unwrap()
    }

    pub(super) fn container(&self, container_name: &str) -> ContainerInfo {
        self.fake
            .container(container_name)
            .unwrap_or_else(|| panic!("no container {container_name} in the fake runtime"))
    }

    /// Calls on the fake runtime that mention `what` (an id or a name).
    pub(super) fn calls_on(&self, what: &str) -> Vec<String> {
        self.fake
            .calls()
            .into_iter()
            .filter(|c| c.split(' ').nth(1) == Some(what))
            .collect()
    }
}

fn outcome<'a>(outcomes: &'a [ComponentOutcome], component: &str) -> &'a ComponentOutcome {
    outcomes
        .iter()
        .find(|o| o.component == component)
        .unwrap_or_else(|| panic!("no outcome for {component} in {outcomes:?}"))
}

/// Event kinds the watch records on its own schedule (asynchronously).
const WATCH_KINDS: &[&str] = &[
    "died",
    "oom",
    "removed",
    "restarted",
    "drift-detected",
    "drift-cleared",
    "flapping",
    "alert-failed",
];

/// Kinds of the events that operations recorded for `component`, in order.
fn kinds_for<'a>(events: &'a [Event], component: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e.component == component && !WATCH_KINDS.contains(&e.kind.as_str()))
        .map(|e| e.kind.as_str())
        .collect()
}

#[actix::test]
async fn deploy_creates_and_starts_every_component() {
    let h = harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    let def = two();
    let outcomes = h.deploy(def.clone(), None).await.unwrap();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");

    for (comp, image) in [("api", "api:1"), ("web", "web:1")] {
        let cname = format!("svc-{comp}");
        let c = h.container(&cname);
        assert_eq!(c.state, "running", "{cname}");
        assert_eq!(c.image, image);
        assert_eq!(c.labels.get(LABEL_SERVICE).map(String::as_str), Some("svc"));
        assert_eq!(
            c.labels.get(LABEL_COMPONENT).map(String::as_str),
            Some(comp)
        );
        assert_eq!(c.owner(), Some(("svc", comp)));

        let o = outcome(&outcomes, comp);
        let done = o.result.as_ref().unwrap();
        assert!(done.contains(image), "{done}");
        assert_eq!(o.container_id.as_deref(), Some(c.id.as_str()));
        assert_eq!(o.observed_state, "running");

        let row = h.row("svc", comp).await;
        assert_eq!(row.state.container_id.as_deref(), Some(c.id.as_str()));
        assert_eq!(row.state.observed_state, "running");
        assert_eq!(row.state.desired_state, DesiredState::Running);
        assert_eq!(row.state.image.as_deref(), Some(image));
        assert_eq!(row.deployed_spec.as_ref(), def.component(&name(comp)));
        assert_eq!(Some(&row.spec), def.component(&name(comp)));
        assert!(row.state.deployed_at_ms.is_some());
        // Looked up by name once (is there an old one?), checked once after
        // its start; the outcome is what that check saw. Then the watch looks
        // once more, when the operation has ended (it may be still to come).
        assert_eq!(
            h.calls_on(&cname),
            [format!("inspect {cname}"), format!("create {cname}")]
        );
        let inspect = format!("inspect {}", c.id);
        let calls = eventually(
            "the watch's look after the deploy",
            Duration::from_secs(3),
            || {
                let calls = h.calls_on(&c.id);
                async move {
                    if calls.len() >= 3 {
                        Ok(calls)
                    } else {
                        Err(format!("{calls:?}"))
                    }
                }
            },
        )
        .await;
        assert_eq!(
            calls,
            [format!("start {}", c.id), inspect.clone(), inspect],
            "the deploy inspected more than once after the start"
        );
    }
    assert!(h.service("svc").await.unwrap().active);

    let events = h.events("svc").await;
    for comp in ["api", "web"] {
        let kinds = kinds_for(&events, comp);
        assert_eq!(kinds, ["deployed"], "events of {comp}: {events:?}");
    }
    assert!(events.iter().all(|e| e.node == "n1"), "{events:?}");
}

#[actix::test]
async fn deploy_of_an_inactive_service_creates_but_does_not_start() {
    let h = harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    let outcomes = h
        .deploy(svc_def(false, "api:1", "web:1"), None)
        .await
        .unwrap();
    for comp in ["api", "web"] {
        assert!(outcome(&outcomes, comp).result.is_ok(), "{outcomes:?}");
        let c = h.container(&format!("svc-{comp}"));
        assert_eq!(c.state, "created");
        assert!(h
            .calls_on(&c.id)
            .iter()
            .all(|call| !call.starts_with("start ")));
        let row = h.row("svc", comp).await;
        assert_eq!(row.state.desired_state, DesiredState::Stopped);
        assert_eq!(row.state.observed_state, "created");
        assert_eq!(row.state.container_id.as_deref(), Some(c.id.as_str()));
    }
    assert!(!h.service("svc").await.unwrap().active);
}

#[actix::test]
async fn deploy_of_one_component_replaces_only_that_component() {
    let h = harness(FakeRuntime::with_images(&[
        "api:1", "api:2", "web:1", "web:2",
    ]));
    h.deploy(two(), None).await.unwrap();
    let api_before = h.container("svc-api");
    let web_before = h.container("svc-web");
    let web_row_before = h.row("svc", "web").await;

    // Both images change in the definition, but only api is deployed.
    let def = svc_def(true, "api:2", "web:2");
    let outcomes = h.deploy(def.clone(), Some("api")).await.unwrap();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].component, "api");
    assert!(outcomes[0].result.is_ok(), "{outcomes:?}");

    let api_after = h.container("svc-api");
    assert_ne!(api_after.id, api_before.id, "api must be replaced");
    assert_eq!(api_after.image, "api:2");
    assert_eq!(api_after.state, "running");
    assert!(h.fake.container(&api_before.id).is_none());
    let old_api_calls = h.calls_on(&api_before.id);
    assert!(
        old_api_calls.iter().any(|c| c.starts_with("remove ")),
        "{old_api_calls:?}"
    );

    // web: same container, never stopped or removed, registry row as it was.
    assert_eq!(h.container("svc-web"), web_before);
    let web_calls = h.calls_on(&web_before.id);
    assert!(
        web_calls
            .iter()
            .all(|c| !c.starts_with("stop ") && !c.starts_with("remove ")),
        "{web_calls:?}"
    );
    let web_row = h.row("svc", "web").await;
    assert_eq!(
        web_row.state.container_id.as_deref(),
        Some(web_before.id.as_str())
    );
    assert_eq!(web_row.deployed_spec, web_row_before.deployed_spec);
    assert_eq!(
        web_row.spec.image.as_str(),
        "web:1",
        "web's spec must not change"
    );

    let api_row = h.row("svc", "api").await;
    assert_eq!(
        api_row.state.container_id.as_deref(),
        Some(api_after.id.as_str())
    );
    assert_eq!(api_row.deployed_spec.as_ref(), def.component(&name("api")));
    assert_eq!(api_row.state.image.as_deref(), Some("api:2"));

    let events = h.events("svc").await;
    assert_eq!(kinds_for(&events, "api"), ["deployed", "deployed"]);
    assert_eq!(kinds_for(&events, "web"), ["deployed"]);
}

/// `svc` whose `api` (on `image`) takes DB from secret `db`.
fn with_secret(image: &str) -> ServiceDef {
    parse_service(
        Path::new("svc.toml"),
        &format!(
            "name = \"svc\"\nnode = \"n1\"\n[[components]]\nname = \"api\"\n\
             image = \"{image}\"\nsecrets = {{ DB = \"db\" }}\n\
             secret_files = {{ db = \"/run/secrets/db\" }}\n"
        ),
    )
    .unwrap()
}

#[actix::test]
async fn a_deploy_gets_its_secrets_and_one_missing_changes_nothing() {
    let h = harness(FakeRuntime::with_images(&["api:1", "api:2"]));
    let value = "s3cret-in-the-actors";
    // Nothing set: refused before anything is recorded or touched.
    let err = h.deploy(with_secret("api:1"), None).await.unwrap_err();
    assert!(matches!(err, AgentError::FailedPrecondition(_)), "{err:?}");
    let says = err.to_string();
    assert!(
        says.contains("db (for api)") && says.contains("mcp secret set svc db"),
        "{says}"
    );
    assert!(h.fake.calls().is_empty(), "{:?}", h.fake.calls());
    assert!(h.service("svc").await.is_none());

    let actor = h.service_actor("svc").await;
    actor
        .send(service::SetSecret {
            name: "db".parse().unwrap(),
            value: value.as_bytes().to_vec(),
            by: "tester".into(),
        })
        .await
        .unwrap()
        .unwrap();
    let outcomes = h.deploy(with_secret("api:1"), None).await.unwrap();
    let id = outcome(&outcomes, "api").container_id.clone().unwrap();
    let given = h.fake.secrets_of(&id).unwrap();
    assert_eq!(given.env, [("DB".to_string(), value.to_string())]);
    assert_eq!(given.files[0].1, "/run/secrets/db");
    assert_eq!(std::fs::read(&given.files[0].0).unwrap(), value.as_bytes());
    // The registry, labels and events name the secret only.
    let row = h.row("svc", "api").await;
    let recorded = serde_json::to_string(&row.deployed_spec).unwrap();
    assert!(
        recorded.contains("\"db\"") && !recorded.contains(value),
        "{recorded}"
    );
    assert!(!format!("{:?}", h.container("svc-api").labels).contains(value));
    let events = h.events("svc").await;
    assert!(events.iter().any(|e| e.kind == "secret-set"), "{events:?}");
    assert!(!format!("{events:?}").contains(value));

    // Removed: a deploy of a new image fails before its pull, stop or remove.
    actor
        .send(service::RemoveSecret {
            name: "db".parse().unwrap(),
            by: "tester".into(),
        })
        .await
        .unwrap()
        .unwrap();
    let before = h.fake.calls().len();
    let err = h.deploy(with_secret("api:2"), None).await.unwrap_err();
    assert!(err.to_string().contains("db (for api)"), "{err}");
    let after: Vec<String> = h.fake.calls().split_off(before);
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(h.container("svc-api").id, id);
    let listed = actor.send(service::ListSecrets).await.unwrap().unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}

#[actix::test]
async fn image_is_pulled_only_when_absent() {
    // Present: no pull.
    let h = harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    let outcomes = h.deploy(two(), None).await.unwrap();
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    let calls = h.fake.calls();
    assert!(calls.contains(&"image api:1".to_string()), "{calls:?}");
    assert!(!calls.iter().any(|c| c.starts_with("pull ")), "{calls:?}");
    assert!(!outcome(&outcomes, "api")
        .result
        .as_ref()
        .unwrap()
        .contains("pulled"));

    // Absent but pullable: exactly one pull, of that image.
    let h = harness(FakeRuntime::with_images(&["web:1"]));
    h.fake.allow_pull("api:1");
    let outcomes = h.deploy(two(), None).await.unwrap();
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    let pulls: Vec<_> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("pull "))
        .collect();
    assert_eq!(pulls, ["pull api:1"]);
    assert!(outcome(&outcomes, "api")
        .result
        .as_ref()
        .unwrap()
        .contains("pulled"));
    assert_eq!(h.container("svc-api").state, "running");

    // Deployed again: the image is now present, no second pull.
    h.deploy(two(), Some("api")).await.unwrap();
    let pulls = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("pull "))
        .count();
    assert_eq!(pulls, 1);
}

#[actix::test]
async fn a_pull_failure_fails_only_its_component() {
    let h = harness(FakeRuntime::with_images(&["web:1"]));
    let outcomes = h
        .deploy(svc_def(true, "nowhere/api:9", "web:1"), None)
        .await
        .unwrap();

    let api = outcome(&outcomes, "api");
    let err = api.result.as_ref().unwrap_err();
    assert!(err.to_string().contains("nowhere/api:9"), "{err}");
    assert_eq!(api.container_id, None);
    assert_eq!(api.observed_state, "absent");
    assert!(h.fake.container("svc-api").is_none());
    assert!(!h.fake.calls().contains(&"create svc-api".to_string()));

    let web = outcome(&outcomes, "web");
    assert!(web.result.is_ok(), "{outcomes:?}");
    assert_eq!(h.container("svc-web").state, "running");

    let api_row = h.row("svc", "api").await;
    assert_eq!(api_row.state.container_id, None);
    assert_eq!(api_row.deployed_spec, None);
    assert_eq!(api_row.state.observed_state, "absent");
    // The intent is recorded all the same.
    assert_eq!(api_row.spec.image.as_str(), "nowhere/api:9");
    assert_eq!(api_row.state.desired_state, DesiredState::Running);
    let web_row = h.row("svc", "web").await;
    assert_eq!(web_row.state.observed_state, "running");
    assert!(web_row.state.container_id.is_some());

    let events = h.events("svc").await;
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.component == "api" && e.kind == "deploy-failed")
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert!(failed[0].detail.contains("nowhere/api:9"), "{failed:?}");
    assert_eq!(kinds_for(&events, "web"), ["deployed"]);
}

#[actix::test]
async fn a_failed_redeploy_keeps_the_running_container_on_record() {
    let h = harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    let def = two();
    h.deploy(def.clone(), None).await.unwrap();
    let before = h.container("svc-api");

    let outcomes = h
        .deploy(svc_def(true, "nowhere/api:9", "web:1"), Some("api"))
        .await
        .unwrap();
    assert!(outcomes[0].result.is_err(), "{outcomes:?}");
    // The pull failed before anything was touched.
    assert_eq!(h.container("svc-api"), before);
    let row = h.row("svc", "api").await;
    assert_eq!(row.state.container_id.as_deref(), Some(before.id.as_str()));
    assert_eq!(row.state.observed_state, "running");
    assert_eq!(row.deployed_spec.as_ref(), def.component(&name("api")));
    assert_eq!(row.spec.image.as_str(), "nowhere/api:9");
}

#[actix::test]
async fn a_components_stop_timeout_overrides_the_agents() {
    let h = harness(FakeRuntime::with_images(&["api:1", "api:2", "web:1"]));
    let def = parse_service(
        Path::new("svc.toml"),
        "name = \"svc\"\nnode = \"n1\"\n\
         [[components]]\nname = \"api\"\nimage = \"api:1\"\nstop_timeout = \"7s\"\n\
         [[components]]\nname = \"web\"\nimage = \"web:1\"\n",
    )
    .unwrap();
    h.deploy(def.clone(), None).await.unwrap();
    let (api, web) = (h.container("svc-api").id, h.container("svc-web").id);
    h.lifecycle("svc", LifecycleAction::Stop, None)
        .await
        .unwrap();
    let stops = h.fake.stops();
    assert!(
        stops.contains(&(api.clone(), Duration::from_secs(7))),
        "{stops:?}"
    );
    // Without one, the agent's own (10 ms in these tests).
    assert!(
        stops.contains(&(web, Duration::from_millis(10))),
        "{stops:?}"
    );

    // A redeploy stops the old container with the timeout it was made
    // with, not the new spec's.
    h.lifecycle("svc", LifecycleAction::Start, None)
        .await
        .unwrap();
    let mut next = def.clone();
    next.components[0].image = "api:2".parse().unwrap();
    next.components[0].stop_timeout = Some("3s".parse().unwrap());
    h.deploy(next, Some("api")).await.unwrap();
    let last = h.fake.stops().last().cloned();
    assert_eq!(last, Some((api, Duration::from_secs(7))));
}

#[actix::test]
async fn stop_then_start_and_recreate_from_the_deployed_spec() {
    let h = harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    let def = two();
    h.deploy(def.clone(), None).await.unwrap();
    let api_id = h.container("svc-api").id;
    let web_id = h.container("svc-web").id;

    let outcomes = h
        .lifecycle("svc", LifecycleAction::Stop, None)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| o.observed_state == "exited"),
        "{outcomes:?}"
    );
    let svc = h.service("svc").await.unwrap();
    assert!(!svc.active);
    h.assert_components(&svc, DesiredState::Stopped, "exited");
    for c in &svc.components {
        // Stopping keeps the container and what it was deployed from.
        assert_eq!(
            c.deployed_spec.as_ref(),
            def.component(&name(&c.state.name))
        );
    }
    assert_eq!(h.container("svc-api").id, api_id);

    let outcomes = h
        .lifecycle("svc", LifecycleAction::Start, None)
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    let svc = h.service("svc").await.unwrap();
    assert!(svc.active);
    h.assert_components(&svc, DesiredState::Running, "running");
    // Started in place, not re-created.
    assert_eq!(h.container("svc-api").id, api_id);
    assert_eq!(h.container("svc-web").id, web_id);

    // Stop one component only: the other keeps running and wanted running.
    h.lifecycle("svc", LifecycleAction::Stop, Some("web"))
        .await
        .unwrap();
    assert_eq!(h.container("svc-web").state, "exited");
    assert_eq!(h.container("svc-api").state, "running");
    assert_eq!(
        h.row("svc", "api").await.state.desired_state,
        DesiredState::Running
    );
    assert_eq!(
        h.row("svc", "web").await.state.desired_state,
        DesiredState::Stopped
    );

    // api's container is removed behind the agent's back.
    h.fake.remove(&api_id).await.unwrap();
    assert!(h.fake.container("svc-api").is_none());
    let outcomes = h
        .lifecycle("svc", LifecycleAction::Start, Some("api"))
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 1);
    let api = &outcomes[0];
    let done = api.result.as_ref().unwrap();
    assert!(done.contains("re-created"), "{done}");
    let recreated = h.container("svc-api");
    assert_ne!(recreated.id, api_id);
    assert_eq!(recreated.state, "running");
    assert_eq!(recreated.image, "api:1");
    assert_eq!(recreated.owner(), Some(("svc", "api")));
    assert_eq!(api.container_id.as_deref(), Some(recreated.id.as_str()));
    let row = h.row("svc", "api").await;
    assert_eq!(
        row.state.container_id.as_deref(),
        Some(recreated.id.as_str())
    );
    assert_eq!(row.state.observed_state, "running");
    assert_eq!(row.deployed_spec.as_ref(), def.component(&name("api")));

    let events = h.events("svc").await;
    assert_eq!(
        kinds_for(&events, "api"),
        ["deployed", "stopped", "started", "started"]
    );
    assert_eq!(
        kinds_for(&events, "web"),
        ["deployed", "stopped", "started", "stopped"]
    );
}

#[actix::test]
async fn unknown_service_or_component_is_not_found() {
    let h = harness(FakeRuntime::with_images(&["api:1", "web:1"]));

    for action in [LifecycleAction::Start, LifecycleAction::Stop] {
        let err = h.lifecycle("ghost", action, None).await.unwrap_err();
        assert!(matches!(err, AgentError::NotFound(_)), "{err:?}");
        assert!(err.to_string().contains("ghost"), "{err}");
    }
    assert!(h.service("ghost").await.is_none());

    let err = h.deploy(two(), Some("db")).await.unwrap_err();
    assert!(matches!(err, AgentError::NotFound(_)), "{err:?}");
    assert!(err.to_string().contains("db"), "{err}");
    let calls = h.fake.calls();
    assert!(!calls.iter().any(|c| c.starts_with("create ")), "{calls:?}");
    assert!(calls.is_empty(), "no runtime call at all: {calls:?}");
    // Nothing recorded either: the check comes before the intent.
    assert!(h.service("svc").await.is_none());

    // A known service with an unknown component.
    h.deploy(two(), None).await.unwrap();
    // The watch inspects on its own after each operation; count the rest.
    let acting = || {
        h.fake
            .calls()
            .into_iter()
            .filter(|c| !c.starts_with("inspect "))
            .count()
    };
    let n = acting();
    let err = h
        .lifecycle("svc", LifecycleAction::Stop, Some("db"))
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::NotFound(_)), "{err:?}");
    assert_eq!(acting(), n, "no runtime call");
    assert_eq!(h.container("svc-api").state, "running");
    assert_eq!(
        h.row("svc", "api").await.state.desired_state,
        DesiredState::Running
    );
}

#[actix::test]
async fn a_container_mcp_did_not_create_is_left_alone() {
    let h = harness(FakeRuntime::with_images(&["api:1", "web:1", "db:1"]));
    let def = parse_service(
        Path::new("svc.toml"),
        "name = \"svc\"\nnode = \"n1\"\nactive = true\n\
         [[components]]\nname = \"api\"\nimage = \"api:1\"\n\
         [[components]]\nname = \"web\"\nimage = \"web:1\"\n\
         [[components]]\nname = \"db\"\nimage = \"db:1\"\n",
    )
    .unwrap();
    // svc-api: started by hand, no labels at all.
    let foreign_id = h.fake.insert_unmanaged("svc-api", "someone/else:1");
    // svc-web: created by MCP, but for another service.
    let other_id = h
        .fake
        .create(CreateRequest {
            service: &name("other"),
            component: def.component(&name("web")).unwrap(),
            container_name: "svc-web".to_string(),
            secrets: &Default::default(),
            routes: &[],
            aliases: &[],
        })
        .await
        .unwrap();
    h.fake.start(&other_id).await.unwrap();
    let foreign_before = h.container("svc-api");
    let other_before = h.container("svc-web");
    let calls_before = h.fake.calls().len();

    let outcomes = h.deploy(def.clone(), None).await.unwrap();
    for comp in ["api", "web"] {
        let o = outcome(&outcomes, comp);
        let err = o.result.as_ref().unwrap_err();
        assert!(matches!(err, AgentError::InvalidArgument(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("svc-{comp}")), "{msg}");
        assert!(msg.contains("did not create"), "{msg}");
    }
    assert!(outcome(&outcomes, "db").result.is_ok(), "{outcomes:?}");
    assert_eq!(h.container("svc-db").state, "running");

    // Untouched: same containers, no stop/remove/start on them.
    assert_eq!(h.container("svc-api"), foreign_before);
    assert_eq!(h.container("svc-web"), other_before);
    let calls = h.fake.calls()[calls_before..].to_vec();
    for id in [&foreign_id, &other_id] {
        assert!(
            !calls
                .iter()
                .any(|c| c.ends_with(id.as_str()) && !c.starts_with("inspect ")),
            "{calls:?}"
        );
    }
    assert!(!calls.contains(&"create svc-api".to_string()), "{calls:?}");
    assert!(!calls.contains(&"create svc-web".to_string()), "{calls:?}");

    // The registry must not adopt a container that is not the component's.
    // This found a bug: ComponentCx::finish (src/actors/component.rs) recorded
    // whatever container held the name, ownership unchecked, so the foreign
    // container's id and state became the component's. Fixed there.
    for (comp, id) in [("api", &foreign_id), ("web", &other_id)] {
        let row = h.row("svc", comp).await;
        assert_ne!(
            row.state.container_id.as_deref(),
            Some(id.as_str()),
            "{comp}"
        );
        assert_eq!(row.state.container_id, None, "{comp}");
        assert_eq!(row.deployed_spec, None, "{comp}");
        assert_eq!(row.state.observed_state, "absent", "{comp}");
        let o = outcome(&outcomes, comp);
        assert_eq!(o.container_id, None, "{comp}");
        assert_eq!(o.observed_state, "absent", "{comp}");
    }
    let events = h.events("svc").await;
    assert_eq!(kinds_for(&events, "api"), ["deploy-failed"]);
    assert_eq!(kinds_for(&events, "web"), ["deploy-failed"]);
    assert_eq!(kinds_for(&events, "db"), ["deployed"]);

    // Stop refuses to touch it as well.
    let outcomes = h
        .lifecycle("svc", LifecycleAction::Stop, Some("api"))
        .await
        .unwrap();
    assert!(outcomes[0].result.is_err(), "{outcomes:?}");
    assert_eq!(h.container("svc-api"), foreign_before);
}

#[actix::test]
async fn observe_reports_managed_unmanaged_and_absent() {
    let h = harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    h.deploy(two(), None).await.unwrap();
    h.lifecycle("svc", LifecycleAction::Stop, Some("api"))
        .await
        .unwrap();
    let api_id = h.container("svc-api").id;
    let web_id = h.container("svc-web").id;
    let stray_id = h.fake.insert_unmanaged("stray", "busybox:latest");
    // Behind the agent's back: api is started again, web is removed.
    h.fake.start(&api_id).await.unwrap();
    h.fake.remove(&web_id).await.unwrap();
    assert_eq!(h.row("svc", "api").await.state.observed_state, "exited");

    let rows = h.observe().await.unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let find = |n: &str| {
        rows.iter()
            .find(|r| r.name == n)
            .unwrap_or_else(|| panic!("no row {n} in {rows:?}"))
    };

    let api = find("svc-api");
    assert_eq!(api.id, api_id);
    assert_eq!(api.state, "running");
    assert_eq!(api.image, "api:1");
    assert_eq!(
        (api.service.as_str(), api.component.as_str()),
        ("svc", "api")
    );
    assert_eq!(api.desired_state, DesiredState::Stopped);

    let stray = find("stray");
    assert_eq!(stray.id, stray_id);
    assert_eq!(stray.state, "running");
    assert_eq!(stray.service, "");
    assert_eq!(stray.component, "");
    assert_eq!(stray.desired_state, DesiredState::Ignore);

    let web = find("svc-web");
    assert_eq!(web.state, "absent");
    assert_eq!(web.id, "");
    assert_eq!(
        (web.service.as_str(), web.component.as_str()),
        ("svc", "web")
    );
    assert_eq!(web.desired_state, DesiredState::Running);

    // The registry now knows what really is.
    let api_row = h.row("svc", "api").await;
    assert_eq!(api_row.state.observed_state, "running");
    assert_eq!(api_row.state.container_id.as_deref(), Some(api_id.as_str()));
    assert_eq!(api_row.state.desired_state, DesiredState::Stopped);
    let web_row = h.row("svc", "web").await;
    assert_eq!(web_row.state.observed_state, "absent");
    assert_eq!(web_row.state.container_id, None);
    // Observing does not forget what was deployed: start can re-create.
    assert!(web_row.deployed_spec.is_some());
    let outcomes = h
        .lifecycle("svc", LifecycleAction::Start, Some("web"))
        .await
        .unwrap();
    assert!(outcomes[0].result.is_ok(), "{outcomes:?}");
    assert_eq!(h.container("svc-web").state, "running");
}

#[actix::test]
async fn observe_ignores_containers_of_services_the_registry_does_not_know() {
    let h = harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    let def = two();
    let id = h
        .fake
        .create(CreateRequest {
            service: &name("gone"),
            component: def.component(&name("api")).unwrap(),
            container_name: "gone-api".to_string(),
            secrets: &Default::default(),
            routes: &[],
            aliases: &[],
        })
        .await
        .unwrap();
    let rows = h.observe().await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].id, id);
    assert_eq!(rows[0].service, "");
    assert_eq!(rows[0].desired_state, DesiredState::Ignore);
}

#[actix::test]
async fn an_unavailable_runtime_is_reported_as_unavailable() {
    let h = harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    h.fake.set_unavailable(true);

    let outcomes = h.deploy(two(), None).await.unwrap();
    assert_eq!(outcomes.len(), 2);
    for o in &outcomes {
        let err = o.result.as_ref().unwrap_err();
        assert!(matches!(err, AgentError::Unavailable(_)), "{err:?}");
        assert_eq!(o.container_id, None);
        assert_eq!(o.observed_state, "unknown");
    }
    assert!(h.fake.calls().is_empty());
    // The intent is recorded; nothing is claimed about the containers.
    for comp in ["api", "web"] {
        let row = h.row("svc", comp).await;
        assert_eq!(row.state.container_id, None);
        assert_eq!(row.deployed_spec, None);
        assert_eq!(row.state.observed_state, "unknown");
    }
    let events = h.events("svc").await;
    assert_eq!(kinds_for(&events, "api"), ["deploy-failed"]);

    let err = h.observe().await.unwrap_err();
    assert!(matches!(err, AgentError::Unavailable(_)), "{err:?}");

    let outcomes = h
        .lifecycle("svc", LifecycleAction::Stop, None)
        .await
        .unwrap();
    for o in &outcomes {
        let err = o.result.as_ref().unwrap_err();
        assert!(matches!(err, AgentError::Unavailable(_)), "{err:?}");
    }

    // Back again: a deploy goes through.
    h.fake.set_unavailable(false);
    let outcomes = h.deploy(two(), None).await.unwrap();
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    assert!(h.observe().await.is_ok());
}

/// An operation that finds no container must not forget the deployed spec:
/// start re-creates from it.
#[actix::test]
async fn start_recreates_after_a_stop_of_a_removed_container() {
    let h = harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    let def = two();
    h.deploy(def.clone(), None).await.unwrap();
    let api_id = h.container("svc-api").id;
    h.fake.remove(&api_id).await.unwrap();

    let outcomes = h
        .lifecycle("svc", LifecycleAction::Stop, Some("api"))
        .await
        .unwrap();
    assert!(outcomes[0].result.is_ok(), "{outcomes:?}");
    let row = h.row("svc", "api").await;
    assert_eq!(row.state.observed_state, "absent");
    assert_eq!(row.state.container_id, None);

    let outcomes = h
        .lifecycle("svc", LifecycleAction::Start, Some("api"))
        .await
        .unwrap();
    assert!(outcomes[0].result.is_ok(), "{outcomes:?}");
    assert_eq!(h.container("svc-api").state, "running");
    assert_eq!(
        h.row("svc", "api").await.deployed_spec.as_ref(),
        def.component(&name("api"))
    );
}

#[actix::test]
async fn an_unchanged_component_keeps_its_container_unless_forced() {
    let h = harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    h.deploy(two(), None).await.unwrap();
    let api = h.container("svc-api").id;
    let outcomes = h.deploy(two(), None).await.unwrap();
    let detail = outcome(&outcomes, "api").result.clone().unwrap();
    assert!(detail.starts_with("unchanged"), "{detail}");
    assert_eq!(h.container("svc-api").id, api);
    h.deploy_forced(two(), Some("api")).await.unwrap();
    assert_ne!(h.container("svc-api").id, api);
    // A stopped component is not "unchanged": deploy starts it again.
    let web = h.container("svc-web").id;
    h.lifecycle("svc", LifecycleAction::Stop, Some("web"))
        .await
        .unwrap();
    h.deploy(two(), Some("web")).await.unwrap();
    assert_eq!(h.container("svc-web").state, "running");
    assert_ne!(h.container("svc-web").id, web);
}

/// `svc` with one component `api` on `image`, health-checked by a command
/// every 100 ms, waiting for up to 100 failures.
fn checked_def(image: &str) -> ServiceDef {
    parse_service(
        Path::new("svc.toml"),
        &format!(
            "name = \"svc\"\nnode = \"n1\"\n[[components]]\nname = \"api\"\nimage = \"{image}\"\n\
             [components.health]\ncmd = [\"check\"]\ninterval = \"100ms\"\nretries = 100\n"
        ),
    )
    .unwrap()
}

#[actix::test]
async fn a_deploy_past_its_deadline_is_rolled_back_and_says_so() {
    let fake = FakeRuntime::with_images(&["api:1", "api:2"]);
    fake.set_exec_exit("api:2", 1);
    let h = harness(fake);
    let first = h.deploy(checked_def("api:1"), None).await.unwrap();
    assert!(outcome(&first, "api").result.is_ok(), "{first:?}");

    // 100 failures at 100 ms would take 10 s; the deadline is 1 s.
    let second = h
        .deploy_within(checked_def("api:2"), None, false, Duration::from_secs(1))
        .await
        .unwrap();
    let err = outcome(&second, "api").result.clone().unwrap_err();
    assert!(matches!(err, AgentError::Unhealthy(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("deadline"), "{text}");
    assert!(
        text.contains("rolled back to the previous spec (api:1)"),
        "{text}"
    );
    assert_eq!(h.container("svc-api").image, "api:1");
}

#[actix::test]
async fn a_pull_past_the_deadline_changes_nothing() {
    let fake = FakeRuntime::with_images(&["api:1"]);
    fake.allow_pull("api:2");
    fake.set_pull_delay(Duration::from_secs(30));
    let h = harness(fake);
    h.deploy(svc_one("api:1"), None).await.unwrap();
    let before = h.container("svc-api").id;
    let second = h
        .deploy_within(svc_one("api:2"), None, false, Duration::from_millis(300))
        .await
        .unwrap();
    let err = outcome(&second, "api").result.clone().unwrap_err();
    assert!(matches!(err, AgentError::DeadlineExceeded(_)), "{err:?}");
    assert!(err.to_string().contains("while pulling api:2"), "{err}");
    assert_eq!(
        h.container("svc-api").id,
        before,
        "the container was touched"
    );
    assert_eq!(h.container("svc-api").state, "running");
}

fn svc_one(image: &str) -> ServiceDef {
    parse_service(
        Path::new("svc.toml"),
        &format!(
            "name = \"svc\"\nnode = \"n1\"\n[[components]]\nname = \"api\"\nimage = \"{image}\"\n"
        ),
    )
    .unwrap()
}

#[actix::test]
async fn a_definition_for_another_node_or_against_the_policy_is_refused_before_anything() {
    let fake = FakeRuntime::with_images(&["api:1"]);
    let h = harness(fake);
    let mut elsewhere = svc_one("api:1");
    elsewhere.node = name("n2");
    let err = h.deploy(elsewhere, None).await.unwrap_err();
    assert!(matches!(err, AgentError::FailedPrecondition(_)), "{err:?}");
    assert!(err.to_string().contains("names node n2"), "{err}");

    let host = parse_service(
        Path::new("svc.toml"),
        "name = \"svc\"\nnode = \"n1\"\n[[components]]\nname = \"api\"\nimage = \"api:1\"\nnetwork = \"host\"\n",
    )
    .unwrap();
    let err = h.deploy(host, None).await.unwrap_err();
    assert!(matches!(err, AgentError::PermissionDenied(_)), "{err:?}");
    assert!(err.to_string().contains("allow_host_network"), "{err}");
    let cap = parse_service(
        Path::new("svc.toml"),
        "name = \"svc\"\nnode = \"n1\"\n[[components]]\nname = \"api\"\nimage = \"api:1\"\ncap_add = [\"SYS_ADMIN\"]\n",
    )
    .unwrap();
    let err = h.deploy(cap, None).await.unwrap_err();
    assert!(matches!(err, AgentError::PermissionDenied(_)), "{err:?}");
    assert!(
        err.to_string().contains("cap_add: CAP_SYS_ADMIN")
            && err.to_string().contains("allow_caps"),
        "{err}"
    );
    assert!(h.fake.calls().is_empty(), "{:?}", h.fake.calls());
    assert!(h.service("svc").await.is_none(), "the intent was recorded");
}
