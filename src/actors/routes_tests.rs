//! Unit tests of routes and networks in deploys, over the FakeRuntime:
//! host ports assigned before the create and kept across redeploys, the
//! variables and bindings the container gets, the route hook, a range with
//! no port left, and the networks a deploy creates.

use std::path::Path;
use std::time::Duration;

use super::registry::{ListNetworks, ListRoutes};
use super::tests::{eventually, harness_settings, Harness};
use super::{AgentError, LifecycleAction};
use crate::routes::{Route, RouteSettings};
use crate::runtime::fake::FakeRuntime;
use crate::spec::{parse_service, ServiceDef};

const FIRST: u16 = 41000;
const LAST: u16 = 41099;

fn svc(api: &str) -> ServiceDef {
    parse_service(
        Path::new("svc.toml"),
        &format!(
            "name = \"svc\"\nnode = \"n1\"\n\
             [[components]]\nname = \"api\"\nimage = \"api:1\"\n{api}\n"
        ),
    )
    .unwrap()
}

fn harness(hook: Option<Vec<String>>, first: u16, last: u16) -> Harness {
    harness_settings(FakeRuntime::with_images(&["api:1", "web:1"]), |s| {
        s.routes = std::sync::Arc::new(RouteSettings {
            first_port: first,
            last_port: last,
            hook,
            hook_timeout: Duration::from_secs(10),
            ..Default::default()
        });
    })
}

async fn routes(h: &Harness) -> Vec<Route> {
    h.handles
        .peers
        .registry
        .send(ListRoutes { service: None })
        .await
        .unwrap()
        .unwrap()
}

fn kinds(events: &[crate::registry::Event], prefix: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind.starts_with(prefix))
        .map(|e| format!("{}:{}", e.kind, e.detail))
        .collect()
}

#[actix::test]
async fn a_route_gets_a_host_port_kept_across_redeploys_and_released_by_undeploy() {
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("hook.jsonl");
    let hook = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!("cat >> {}", got.display()),
    ];
    let h = harness(Some(hook), FIRST, LAST);
    let def = svc("[[components.routes]]\nport = 8080\nhostname = \"api.example.com\"\n");
    h.deploy(def.clone(), None).await.unwrap();

    let [route] = routes(&h).await.try_into().unwrap();
    assert!((FIRST..=LAST).contains(&route.host_port), "{route:?}");
    assert_eq!((route.container_port, route.env.as_str()), (8080, "PORT"));
    let (published, aliases) = h.fake.wiring("svc-api").unwrap();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].host_port, route.host_port);
    assert_eq!(published[0].address, "127.0.0.1");
    assert_eq!(published[0].env, "PORT");
    assert!(aliases.is_empty(), "no network of the operator's: no alias");
    let lines = std::fs::read_to_string(&got).unwrap();
    let add: serde_json::Value = serde_json::from_str(lines.trim()).unwrap();
    assert_eq!(add["action"], "add");
    assert_eq!(add["node"], "n1");
    assert_eq!(add["service"], "svc");
    assert_eq!(add["component"], "api");
    assert_eq!(add["host_port"], route.host_port);
    assert_eq!(add["hostname"], "api.example.com");

    // A forced redeploy re-creates the container on the same port, and
    // adds no route.
    h.deploy_forced(def, None).await.unwrap();
    assert_eq!(routes(&h).await, std::slice::from_ref(&route));
    assert_eq!(h.fake.wiring("svc-api").unwrap().0, published);
    assert_eq!(kinds(&h.events("svc").await, "route-").len(), 1);

    // Undeploy releases it, and tells the hook.
    h.lifecycle("svc", LifecycleAction::Undeploy, None)
        .await
        .unwrap();
    assert!(routes(&h).await.is_empty());
    let lines = std::fs::read_to_string(&got).unwrap();
    let remove: serde_json::Value =
        serde_json::from_str(lines.lines().nth(1).unwrap_or_default()).unwrap();
    assert_eq!(remove["action"], "remove");
    assert_eq!(remove["host_port"], route.host_port);
    let seen = kinds(&h.events("svc").await, "route-");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].starts_with("route-added:127.0.0.1:"), "{seen:?}");
    assert!(seen[1].starts_with("route-removed:"), "{seen:?}");
}

#[actix::test]
async fn routes_follow_the_definition() {
    let h = harness(None, FIRST, LAST);
    let both = "[[components.routes]]\nname = \"http\"\nport = 8080\n\
                [[components.routes]]\nname = \"admin\"\nport = 9000\nmode = \"l7\"\n";
    h.deploy(svc(both), None).await.unwrap();
    let before = routes(&h).await;
    let http = before.iter().find(|r| r.name == "http").unwrap().clone();
    let (published, _) = h.fake.wiring("svc-api").unwrap();
    let vars: Vec<&str> = published.iter().map(|p| p.env.as_str()).collect();
    assert_eq!(vars, ["PORT_HTTP", "PORT_ADMIN"]);

    // admin leaves the definition, http moves to another container port
    // and gets a hostname: http keeps its host port (told as removed and
    // added again, for a proxy to follow), admin's is released.
    h.deploy(
        svc("[[components.routes]]\nname = \"http\"\nport = 8081\nhostname = \"a.example\"\n"),
        None,
    )
    .await
    .unwrap();
    let [after] = routes(&h).await.try_into().unwrap();
    assert_eq!(after.host_port, http.host_port);
    assert_eq!(after.container_port, 8081);
    assert_eq!(after.hostname.as_deref(), Some("a.example"));
    let events = h.events("svc").await;
    let removed = kinds(&events, "route-removed");
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(removed.iter().any(|e| e.contains("admin")), "{removed:?}");
    let added = kinds(&events, "route-added");
    assert_eq!(added.len(), 3, "{added:?}");
    assert!(added[2].contains("-> 8081 (l4, a.example"), "{added:?}");
    // A component removed from the definition is undeployed: its routes go.
    let web_only = parse_service(
        Path::new("svc.toml"),
        "name = \"svc\"\nnode = \"n1\"\n[[components]]\nname = \"web\"\nimage = \"web:1\"\n",
    )
    .unwrap();
    h.deploy(web_only, None).await.unwrap();
    assert!(routes(&h).await.is_empty());
}

#[actix::test]
async fn no_port_left_fails_the_deploy_and_keeps_the_running_container() {
    let h = harness(None, FIRST + 50, FIRST + 50);
    h.deploy(svc("routes = [{ name = \"a\", port = 80 }]"), None)
        .await
        .unwrap();
    let running = h.container("svc-api");
    let outcomes = h
        .deploy(
            svc("routes = [{ name = \"a\", port = 80 }, { name = \"b\", port = 81 }]"),
            None,
        )
        .await
        .unwrap();
    let failure = outcomes[0].result.as_ref().unwrap_err();
    assert!(
        matches!(failure, AgentError::FailedPrecondition(_)),
        "{failure:?}"
    );
    let text = failure.to_string();
    assert!(
        text.contains("no free host port in [routes] port_range 41050-41050"),
        "{text}"
    );
    // Nothing was replaced, and the first route is still there.
    assert_eq!(h.container("svc-api").id, running.id);
    assert_eq!(h.container("svc-api").state, "running");
    assert_eq!(routes(&h).await.len(), 1);
}

#[actix::test]
async fn a_network_is_created_once_and_its_components_get_their_names() {
    let h = harness(None, FIRST, LAST);
    let def = parse_service(
        Path::new("svc.toml"),
        "name = \"svc\"\nnode = \"n1\"\n\
         [[components]]\nname = \"api\"\nimage = \"api:1\"\nnetwork = \"backend\"\n\
         [[components]]\nname = \"web\"\nimage = \"web:1\"\nnetwork = \"backend\"\n",
    )
    .unwrap();
    h.deploy(def.clone(), None).await.unwrap();
    let (_, aliases) = h.fake.wiring("svc-api").unwrap();
    assert_eq!(aliases, ["api", "svc-api"]);
    let (_, aliases) = h.fake.wiring("svc-web").unwrap();
    assert_eq!(aliases, ["web", "svc-web"]);
    let created = eventually("one network-created event", Duration::from_secs(5), || {
        let h = &h;
        async move {
            let seen = kinds(&h.events("svc").await, "network-created");
            (seen.len() == 1)
                .then_some(seen)
                .ok_or_else(|| "none yet".to_string())
        }
    })
    .await;
    assert!(
        created[0].contains("network backend (bridge, 10.89.0.0/24); DNS on"),
        "{created:?}"
    );
    let networks = h
        .handles
        .peers
        .registry
        .send(ListNetworks {})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(networks.len(), 1);
    assert_eq!(networks[0].name, "backend");
    // Again: the network is there, nothing is created.
    h.deploy_forced(def, None).await.unwrap();
    assert_eq!(kinds(&h.events("svc").await, "network-created").len(), 1);
    // The runtime's own networks are never created.
    h.deploy(svc("network = \"none\"\n"), None).await.unwrap();
    let calls = h.fake.calls();
    let ensured: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("ensure network"))
        .collect();
    assert!(
        ensured
            .iter()
            .all(|c| c.as_str() == "ensure network backend"),
        "{ensured:?}"
    );
}
