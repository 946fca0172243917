//! End-to-end: the real `mcp` and `mcp-agent` binaries against a real podman.

mod common;

use common::{free_port, http_get, Agent, Operator, Podman, TEST_IMAGE};

/// A two-component service: `http` serves on `port`, `worker` sleeps.
fn two_components(name: &str, port: u16) -> String {
    format!(
        r#"name = "{name}"
node = "n1"
active = true

[[components]]
name    = "http"
image   = "{TEST_IMAGE}"
restart = "unless-stopped"
ports   = ["127.0.0.1:{port}:8080"]
cmd     = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]

[[components]]
name  = "worker"
image = "{TEST_IMAGE}"
cmd   = ["/bin/busybox", "sleep", "3600"]
env   = {{ ROLE = "worker" }}
"#
    )
}

fn setup() -> (Podman, Agent, Operator) {
    let podman = Podman::start();
    let agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    (podman, agent, operator)
}

/// (name, id, state) of `mcp ps -o json`, for containers that exist, sorted.
fn mcp_ps(operator: &Operator) -> Vec<(String, String, String)> {
    operator.ps_rows().1
}

fn component<'a>(list: &'a serde_json::Value, service: &str, comp: &str) -> &'a serde_json::Value {
    list[0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service)
        .and_then(|s| {
            s["components"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == comp)
        })
        .unwrap_or_else(|| panic!("{service}/{comp} not in {list}"))
}

#[test]
fn deploy_stop_start_and_component_deploy() {
    let (podman, _agent, operator) = setup();
    let port = free_port();
    operator.define("shop", &two_components("shop", port));

    let deploy = operator.ok(&["deploy", "shop", "-o", "json"]).json();
    let results = deploy["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r["ok"] == true), "{deploy}");

    // It really serves.
    let (status, body) = http_get(port, "/index.html");
    assert_eq!(status, 200);
    assert_eq!(body, "hello from mcp\n");

    // podman and mcp agree on what runs.
    let seen = podman.containers();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|(_, _, s)| s == "running"), "{seen:?}");
    assert_eq!(mcp_ps(&operator), seen);
    let table = operator.ok(&["ps"]).stdout;
    assert!(
        table.contains("n1/shop/http") && table.contains("n1/shop/worker"),
        "{table}"
    );

    // The registry knows what was deployed.
    let list = operator.ok(&["list", "-o", "json"]).json();
    for comp in ["http", "worker"] {
        let c = component(&list, "shop", comp);
        assert_eq!(c["desired_state"], "running");
        assert_eq!(c["observed_state"], "running");
        assert_eq!(c["image"], TEST_IMAGE);
        assert_eq!(
            c["container_id"].as_str(),
            podman.id_of(&format!("shop-{comp}")).as_deref()
        );
    }

    // stop leaves both containers stopped, and says so in the registry.
    operator.ok(&["stop", "shop"]);
    assert_eq!(podman.state_of("shop-http").as_deref(), Some("exited"));
    assert_eq!(podman.state_of("shop-worker").as_deref(), Some("exited"));
    let list = operator.ok(&["list", "-o", "json"]).json();
    assert_eq!(component(&list, "shop", "http")["desired_state"], "stopped");
    assert_eq!(
        component(&list, "shop", "worker")["observed_state"],
        "exited"
    );

    // start brings them back, same containers.
    let http_id = podman.id_of("shop-http").unwrap();
    let worker_id = podman.id_of("shop-worker").unwrap();
    operator.ok(&["start", "shop"]);
    assert_eq!(podman.state_of("shop-http").as_deref(), Some("running"));
    assert_eq!(podman.state_of("shop-worker").as_deref(), Some("running"));
    assert_eq!(podman.id_of("shop-http").unwrap(), http_id);
    assert_eq!(http_get(port, "/index.html").0, 200);

    // deploy SVC/COMP replaces only that component.
    // An unchanged component keeps its container; a changed one is replaced.
    operator.ok(&["deploy", "shop/worker"]);
    assert_eq!(
        podman.id_of("shop-worker").unwrap(),
        worker_id,
        "unchanged, yet replaced"
    );
    operator.define(
        "shop",
        &two_components("shop", port).replace("ROLE = \"worker\"", "ROLE = \"worker-2\""),
    );
    operator.ok(&["deploy", "shop/worker"]);
    assert_eq!(
        podman.id_of("shop-http").unwrap(),
        http_id,
        "http was touched"
    );
    let new_worker = podman.id_of("shop-worker").unwrap();
    assert_ne!(new_worker, worker_id, "worker was not replaced");
    assert_eq!(podman.state_of("shop-worker").as_deref(), Some("running"));

    // stop/start of one component.
    operator.ok(&["stop", "shop/http"]);
    assert_eq!(podman.state_of("shop-http").as_deref(), Some("exited"));
    assert_eq!(podman.state_of("shop-worker").as_deref(), Some("running"));
    operator.ok(&["start", "shop/http"]);
    assert_eq!(podman.state_of("shop-http").as_deref(), Some("running"));
}

#[test]
fn concurrent_deploys_of_two_services_both_succeed() {
    let (podman, _agent, operator) = setup();
    let (p1, p2) = (free_port(), free_port());
    operator.define("alpha", &two_components("alpha", p1));
    operator.define("beta", &two_components("beta", p2));
    let a = operator.command(&["deploy", "alpha"]).spawn().unwrap();
    let b = operator.command(&["deploy", "beta"]).spawn().unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    assert_eq!(http_get(p1, "/index.html").0, 200);
    assert_eq!(http_get(p2, "/index.html").0, 200);
    let running: Vec<_> = podman
        .containers()
        .into_iter()
        .filter(|(_, _, s)| s == "running")
        .map(|(n, _, _)| n)
        .collect();
    assert_eq!(
        running,
        ["alpha-http", "alpha-worker", "beta-http", "beta-worker"]
    );
}

#[test]
fn concurrent_deploys_of_one_service_are_serialised() {
    let (podman, _agent, operator) = setup();
    operator.define("solo", &two_components("solo", free_port()));
    let runs: Vec<_> = (0..3)
        .map(|_| operator.command(&["deploy", "solo"]).spawn().unwrap())
        .collect();
    for r in runs {
        let out = r.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Interleaved deploys would have fought over the container name.
    let seen = podman.containers();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|(_, _, s)| s == "running"));
    assert_eq!(mcp_ps(&operator), seen);
}

#[test]
fn a_failed_pull_is_a_clear_per_component_error_and_the_registry_tells_the_truth() {
    let (podman, _agent, operator) = setup();
    operator.define(
        "half",
        &format!(
            r#"name = "half"
node = "n1"

[[components]]
name  = "good"
image = "{TEST_IMAGE}"
cmd   = ["/bin/busybox", "sleep", "3600"]

[[components]]
name  = "bad"
image = "localhost/no-such-image:1"
"#
        ),
    );
    let run = operator.run(&["deploy", "half", "-o", "json"]);
    assert_eq!(run.code, 1, "a partly failed deploy must exit non-zero");
    let results = run.json()["results"].as_array().unwrap().clone();
    let bad = results.iter().find(|r| r["component"] == "bad").unwrap();
    assert_eq!(bad["ok"], false);
    let detail = bad["detail"].as_str().unwrap();
    assert!(
        detail.contains("localhost/no-such-image:1") && detail.contains("pull"),
        "{detail}"
    );
    let good = results.iter().find(|r| r["component"] == "good").unwrap();
    assert_eq!(good["ok"], true);

    assert_eq!(podman.state_of("half-good").as_deref(), Some("running"));
    assert_eq!(podman.state_of("half-bad"), None);
    let list = operator.ok(&["list", "-o", "json"]).json();
    let bad = component(&list, "half", "bad");
    assert_eq!(bad["observed_state"], "absent");
    assert_eq!(bad["container_id"], "");
    assert_eq!(bad["image"], "");
    assert_eq!(
        component(&list, "half", "good")["observed_state"],
        "running"
    );

    // The human table says FAILED on the right line.
    let table = operator.run(&["deploy", "half/bad"]);
    assert_eq!(table.code, 1);
    assert!(table.stdout.contains("FAILED"), "{}", table.stdout);
}

#[test]
fn a_container_mcp_did_not_create_is_never_replaced() {
    let (podman, _agent, operator) = setup();
    let out = podman
        .cmd()
        .args([
            "run",
            "-d",
            "--name",
            "own-web",
            TEST_IMAGE,
            "/bin/busybox",
            "sleep",
            "3600",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let id = podman.id_of("own-web").unwrap();
    operator.define(
        "own",
        &format!("name = \"own\"\nnode = \"n1\"\n[[components]]\nname = \"web\"\nimage = \"{TEST_IMAGE}\"\n"),
    );
    let run = operator.run(&["deploy", "own"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("MCP did not create"), "{}", run.stdout);
    assert_eq!(podman.id_of("own-web"), Some(id));
    assert_eq!(podman.state_of("own-web").as_deref(), Some("running"));
    // ps shows it as unmanaged.
    let row = operator.ps_row("own-web").unwrap();
    assert_eq!(row["desired_state"], "ignore");
    assert_eq!(row["service"], "");
}

/// Each bad input: a clear error, a non-zero exit, and neither the runtime
/// nor the registry touched.
#[test]
fn bad_input_is_refused_before_anything_runs() {
    let (podman, _agent, operator) = setup();
    let good = two_components("web", free_port());
    let cases: Vec<(&str, String, Vec<&str>, &str)> = vec![
        (
            "malformed TOML",
            "name = \"web\"\nnode = \"n1\n[[components]]\n".to_string(),
            vec!["deploy", "web"],
            "web.toml:2:",
        ),
        (
            "unknown key",
            good.replace("restart = ", "restrat = "),
            vec!["deploy", "web"],
            "unknown field `restrat`",
        ),
        (
            "unknown restart value",
            good.replace("unless-stopped", "sometimes"),
            vec!["deploy", "web"],
            "sometimes",
        ),
        (
            "bad component name",
            good.replace("name    = \"http\"", "name    = \"Http\""),
            vec!["deploy", "web"],
            "invalid name \"Http\"",
        ),
        (
            "bad port",
            good.replace(":8080\"]", ":99999\"]"),
            vec!["deploy", "web"],
            "99999",
        ),
        (
            "bad service name",
            good.clone(),
            vec!["deploy", "Web!"],
            "invalid name",
        ),
        (
            "unknown component",
            good.clone(),
            vec!["deploy", "web/nope"],
            "has no component nope",
        ),
        (
            "path in service name",
            good.clone(),
            vec!["deploy", "../web"],
            "invalid name",
        ),
    ];
    for (what, text, args, expected) in cases {
        operator.define("web", &text);
        let run = operator.run(&args);
        assert_ne!(run.code, 0, "{what}: exit code 0");
        assert!(
            run.stderr.contains(expected),
            "{what}: stderr lacks {expected:?}:\n{}",
            run.stderr
        );
        if what == "malformed TOML" || what == "unknown key" {
            // file, line and column
            let located = run.stderr.split_whitespace().any(|w| {
                w.contains("web.toml:") && w.trim_end_matches(':').split(':').count() == 3
            });
            assert!(located, "{what}: no file:line:column in {}", run.stderr);
        }
    }
    assert!(podman.containers().is_empty(), "the runtime was touched");
    let list = operator.ok(&["list", "-o", "json"]).json();
    assert_eq!(
        list[0]["services"],
        serde_json::json!([]),
        "the registry was touched"
    );
    let events = operator.ok(&["events", "-o", "json"]).json();
    assert_eq!(
        events,
        serde_json::json!([]),
        "the agent acted on something"
    );
}

#[test]
fn wrong_token_is_refused() {
    let (_podman, _agent, operator) = setup();
    let run = operator
        .command(&["list"])
        .env("MCP_TOKEN", "not-the-token")
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("invalid token"), "{stderr}");
}
