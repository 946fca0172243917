//! Unit tests of supervision and isolation, on the real tree and registry
//! over the FakeRuntime: each actor kind panics and the tree goes on; a
//! service stuck in its runtime holds up no other service.

use std::time::Duration;

use super::component::CrashDuringOperation;
use super::directory::{ServiceFor, SyncNode};
use super::registry::{Crash as RegistryCrash, ListServices};
use super::service::{ComponentFor, Deploy, Lifecycle, LifecycleAction, ServiceResult};
use super::supervisor::Crash;
use super::tests::{eventually, harness, name, svc_def, two, Harness};
use super::watch::{Observe, StatusQuery};
use crate::registry::Event;
use crate::runtime::fake::FakeRuntime;
use crate::spec::{parse_service, ServiceDef};

/// Long enough for anything that does not wait on a blocked service.
const PROMPT: Duration = Duration::from_secs(5);

/// A service of one component `main` on `image`.
fn single(service: &str, image: &str) -> ServiceDef {
    parse_service(
        std::path::Path::new(&format!("{service}.toml")),
        &format!(
            "name = \"{service}\"\nnode = \"n1\"\n[[components]]\nname = \"main\"\nimage = \"{image}\"\n"
        ),
    )
    .unwrap()
}

impl Harness {
    async fn deploy_now(&self, def: ServiceDef) -> ServiceResult {
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
            component: None,
            rollback: true,
            force: false,
            progress: None,
            deadline: tokio::time::Instant::now() + Duration::from_secs(300),
            by: "tester".to_string(),
            keep_removed: false,
            pull: false,
            caller: None,
        })
        .await
        .unwrap()
    }

    async fn act(&self, service: &str, action: LifecycleAction) -> ServiceResult {
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
            component: None,
            by: "tester".to_string(),
            progress: None,
        })
        .await
        .unwrap()
    }

    async fn events_of(&self, service: &str) -> Vec<Event> {
        self.handles
            .peers
            .registry
            .send(super::registry::Events {
                service: Some(service.to_string()),
                by: None,
                limit: 100,
            })
            .await
            .unwrap()
            .unwrap()
    }

    /// Waits for an event of `kind` on `service` (the watch or an
    /// operation recorded it).
    async fn event(&self, service: &str, kind: &str) -> Event {
        eventually(&format!("a {kind} event of {service}"), PROMPT, || async {
            let events = self.events_of(service).await;
            events
                .iter()
                .find(|e| e.kind == kind)
                .cloned()
                .ok_or_else(|| format!("{events:?}"))
        })
        .await
    }

    /// Shows the tree still works after a panic: a deploy, and the watch
    /// recording a crash behind the agent's back.
    async fn still_works(&self, service: &str) {
        let outcomes = tokio::time::timeout(PROMPT, self.deploy_now(single(service, "api:1")))
            .await
            .expect("a deploy after the panic")
            .unwrap();
        assert!(outcomes[0].result.is_ok(), "{outcomes:?}");
        self.fake.exit(&format!("{service}-main"), 9);
        self.event(service, "died").await;
    }
}

/// A future that must finish promptly, with what it was.
async fn promptly<T>(what: &str, work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PROMPT, work)
        .await
        .unwrap_or_else(|_| panic!("{what} waited on the blocked service"))
}

#[actix::test]
async fn a_service_stuck_in_the_runtime_holds_up_no_other() {
    let fake = FakeRuntime::with_images(&["api:1", "web:1"]);
    let h = harness(fake);
    // b is deployed, and c is a service the registry knows that no
    // definition has any more (for prune).
    h.deploy_now(single("b", "api:1")).await.unwrap();
    h.deploy_now(single("c", "api:1")).await.unwrap();
    h.fake.block_create("a-main");
    let directory = h.handles.directory.clone();
    let a = directory
        .send(ServiceFor { name: name("a") })
        .await
        .unwrap();
    let a_deploy = actix::spawn({
        let a = a.clone();
        async move {
            a.send(Deploy {
                def: single("a", "api:1"),
                component: None,
                rollback: true,
                force: false,
                progress: None,
                deadline: tokio::time::Instant::now() + Duration::from_secs(300),
                by: "tester".to_string(),
                keep_removed: false,
                pull: false,
                caller: None,
            })
            .await
        }
    });
    eventually("a's create to be under way", PROMPT, || async {
        let calls = h.fake.calls();
        calls
            .contains(&"create a-main".to_string())
            .then_some(())
            .ok_or(format!("{calls:?}"))
    })
    .await;
    // a's own operations queue behind its deploy.
    let a_stop = actix::spawn({
        let a = a.clone();
        async move {
            a.send(Lifecycle {
                action: LifecycleAction::Stop,
                component: None,
                by: "tester".to_string(),
                progress: None,
            })
            .await
        }
    });

    // Everything else goes on.
    let b = single("b", "web:1");
    let deployed = promptly("b's deploy", h.deploy_now(b)).await.unwrap();
    assert!(deployed[0].result.is_ok(), "{deployed:?}");
    promptly("b's stop", h.act("b", LifecycleAction::Stop))
        .await
        .unwrap();
    promptly("b's start", h.act("b", LifecycleAction::Start))
        .await
        .unwrap();
    let report = promptly(
        "sync --prune",
        directory.send(SyncNode {
            defs: vec![single("a", "api:1"), single("b", "web:1")],
            prune: true,
            by: "tester".to_string(),
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.prunable, ["c"], "{report:?}");
    let list = promptly("list", h.handles.peers.registry.send(ListServices {}))
        .await
        .unwrap()
        .unwrap();
    assert!(list.iter().all(|s| s.name != "c"), "c was not pruned");
    promptly("ps", h.handles.peers.watch.send(Observe))
        .await
        .unwrap()
        .unwrap();
    promptly(
        "status",
        h.handles.peers.watch.send(StatusQuery {
            service: None,
            events: 10,
        }),
    )
    .await
    .unwrap()
    .unwrap();
    promptly("events", h.events_of("b")).await;
    assert!(!a_deploy.is_finished() && !a_stop.is_finished());

    // Released: a's deploy finishes, then its stop, in that order.
    h.fake.release_create("a-main");
    let deployed = a_deploy.await.unwrap().unwrap().unwrap();
    assert!(deployed[0].result.is_ok(), "{deployed:?}");
    a_stop.await.unwrap().unwrap().unwrap();
    let kinds: Vec<String> = h.events_of("a").await.into_iter().map(|e| e.kind).collect();
    let deployed_at = kinds.iter().position(|k| k == "deployed").unwrap();
    let stopped_at = kinds.iter().position(|k| k == "stopped").unwrap();
    assert!(deployed_at < stopped_at, "{kinds:?}");
}

#[actix::test]
async fn the_registry_actor_recovers_from_a_panic() {
    let h = harness(FakeRuntime::with_images(&["api:1"]));
    let err = h
        .handles
        .peers
        .registry
        .send(RegistryCrash {})
        .await
        .unwrap();
    assert!(err.is_err(), "the panic was answered as an error");
    h.handles
        .peers
        .registry
        .send(ListServices {})
        .await
        .unwrap()
        .unwrap();
    h.still_works("svc").await;
}

#[actix::test]
async fn the_runtime_actor_is_restarted_after_a_panic() {
    let h = harness(FakeRuntime::with_images(&["api:1"]));
    h.handles.peers.runtime.do_send(Crash);
    h.event("", "actor-restarted").await;
    h.still_works("svc").await;
}

#[actix::test]
async fn the_watch_is_restarted_after_a_panic() {
    let h = harness(FakeRuntime::with_images(&["api:1"]));
    h.handles.peers.watch.do_send(Crash);
    let restarted = h.event("", "actor-restarted").await;
    assert!(restarted.detail.contains("WatchActor"), "{restarted:?}");
    h.handles.peers.watch.send(Observe).await.unwrap().unwrap();
    h.still_works("svc").await;
}

#[actix::test]
async fn the_service_directory_is_restarted_after_a_panic() {
    let h = harness(FakeRuntime::with_images(&["api:1"]));
    h.deploy_now(single("svc", "api:1")).await.unwrap();
    h.handles.directory.do_send(Crash);
    h.event("", "actor-restarted").await;
    h.still_works("svc").await;
}

#[actix::test]
async fn a_service_actor_is_restarted_with_fresh_component_actors() {
    let h = harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    h.deploy(two(), None).await.unwrap();
    let svc = h
        .handles
        .directory
        .send(ServiceFor { name: name("svc") })
        .await
        .unwrap();
    let old_api = svc.send(ComponentFor(name("api"))).await.unwrap();
    svc.do_send(Crash);
    h.event("", "actor-restarted").await;
    let new_api = svc.send(ComponentFor(name("api"))).await.unwrap();
    assert_ne!(old_api, new_api, "the component actor was not replaced");
    // The old one stops once nothing is left for it to do.
    let weak = old_api.downgrade();
    drop(old_api);
    eventually("the old component actor to stop", PROMPT, || {
        let alive = weak.upgrade().is_some_and(|a| a.connected());
        async move { (!alive).then_some(()).ok_or_else(|| "still running".into()) }
    })
    .await;
    let outcomes = h
        .deploy(svc_def(true, "api:1", "web:1"), None)
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    h.fake.exit("svc-api", 9);
    h.event("svc", "died").await;
}

#[actix::test]
async fn a_component_actor_that_panics_mid_operation_gives_its_lease_back() {
    let h = harness(FakeRuntime::with_images(&["api:1", "web:1"]));
    h.deploy(two(), None).await.unwrap();
    let svc = h
        .handles
        .directory
        .send(ServiceFor { name: name("svc") })
        .await
        .unwrap();
    let api = svc.send(ComponentFor(name("api"))).await.unwrap();
    // The operation's caller learns it failed; nobody hangs.
    let crashed = api.send(CrashDuringOperation).await;
    assert!(crashed.is_err(), "{crashed:?}");
    h.event("", "actor-restarted").await;
    // The lease is back: the watch records a crash of api again.
    let key = ("svc".to_string(), "api".to_string());
    assert!(!h.handles.peers.ops.busy(&key));
    h.fake.exit("svc-api", 9);
    h.event("svc", "died").await;
    // And the same actor (restarted) works.
    let outcomes = h.deploy(two(), Some("api")).await.unwrap();
    assert!(outcomes[0].result.is_ok(), "{outcomes:?}");
    api.do_send(Crash);
    let outcomes = eventually("a deploy after a second panic", PROMPT, || async {
        match h.deploy(two(), Some("api")).await {
            Ok(o) if o[0].result.is_ok() => Ok(o),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(outcomes[0].result.is_ok());
}
