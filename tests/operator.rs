//! Operator experience end to end: the deploy plan (`diff`, `--dry-run`),
//! health-checked deploys that roll back, and `rollback` on demand.

mod common;

use common::{free_port, http_get, Agent, Operator, Podman, TEST_IMAGE};

const TEST_IMAGE_V2: &str = "localhost/mcp-test-busybox:v2";

/// `web` serving on `port` (or, with `serve = false`, a process that never
/// serves), health-checked by an HTTP probe of that port.
fn web(port: u16, image: &str, serve: bool) -> String {
    let cmd = if serve {
        r#"["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]"#
    } else {
        r#"["/bin/busybox", "sleep", "3600"]"#
    };
    format!(
        r#"name = "site"
node = "n1"

[[components]]
name  = "web"
image = "{image}"
ports = ["127.0.0.1:{port}:8080"]
cmd   = {cmd}

[components.health]
http     = "http://127.0.0.1:{port}/index.html"
interval = "200ms"
timeout  = "1s"
retries  = 4
"#
    )
}

fn setup() -> (Podman, Agent, Operator) {
    let podman = Podman::start();
    let out = podman
        .cmd()
        .args(["tag", TEST_IMAGE, TEST_IMAGE_V2])
        .output()
        .unwrap();
    assert!(out.status.success());
    let agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    (podman, agent, operator)
}

fn image_of(podman: &Podman, name: &str) -> String {
    let out = podman
        .cmd()
        .args(["inspect", "--format", "{{.ImageName}}", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn event_kinds(operator: &Operator) -> Vec<String> {
    operator
        .ok(&["events", "site", "-o", "json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn diff_and_dry_run_show_the_plan_and_change_nothing() {
    let (podman, _agent, operator) = setup();
    let port = free_port();
    operator.define("site", &web(port, TEST_IMAGE, true));
    // Nothing deployed yet: the whole component is new.
    let plan = operator.ok(&["diff", "site", "-o", "json"]).json();
    assert_eq!(plan[0]["field"], "component", "{plan}");
    operator.ok(&["deploy", "site"]);
    assert_eq!(
        operator.ok(&["diff", "site", "-o", "json"]).json(),
        serde_json::json!([])
    );

    operator.define("site", &web(port, TEST_IMAGE_V2, true));
    let plan = operator.ok(&["diff", "site", "-o", "json"]).json();
    assert_eq!(plan.as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(plan[0]["component"], "web");
    assert_eq!(plan[0]["field"], "image");
    assert_eq!(plan[0]["deployed"], TEST_IMAGE);
    assert_eq!(plan[0]["local"], TEST_IMAGE_V2);
    let table = operator.ok(&["diff", "site"]).stdout;
    assert!(
        table.contains("n1/site/web") && table.contains(TEST_IMAGE_V2),
        "{table}"
    );

    let id = podman.id_of("site-web").unwrap();
    let dry = operator.ok(&["deploy", "site", "--dry-run"]);
    assert!(
        dry.stderr.contains("dry run: nothing was deployed"),
        "{}",
        dry.stderr
    );
    assert!(
        dry.stderr.contains(TEST_IMAGE_V2),
        "the plan was not shown: {}",
        dry.stderr
    );
    assert_eq!(
        podman.id_of("site-web"),
        Some(id),
        "--dry-run touched the container"
    );
    // A real deploy prints the plan first.
    let real = operator.ok(&["deploy", "site"]);
    assert!(real.stderr.contains("plan:"), "{}", real.stderr);
    assert_eq!(image_of(&podman, "site-web"), TEST_IMAGE_V2);
}

#[test]
fn an_unhealthy_deploy_is_rolled_back_and_the_old_container_serves_again() {
    let (podman, _agent, operator) = setup();
    let port = free_port();
    operator.define("site", &web(port, TEST_IMAGE, true));
    let first = operator.ok(&["deploy", "site"]);
    assert!(first.stdout.contains("healthy after"), "{}", first.stdout);
    assert_eq!(http_get(port, "/index.html").0, 200);

    // v2 never serves: the health check fails, v1 comes back.
    operator.define("site", &web(port, TEST_IMAGE_V2, false));
    let run = operator.run(&["deploy", "site", "-o", "json"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let result = &run.json()["results"][0];
    assert_eq!(result["ok"], false);
    let detail = result["detail"].as_str().unwrap();
    assert!(
        detail.contains("rolled back to the previous spec"),
        "{detail}"
    );
    assert_eq!(image_of(&podman, "site-web"), TEST_IMAGE);
    assert_eq!(http_get(port, "/index.html").0, 200);
    assert!(event_kinds(&operator).contains(&"rolled-back".to_string()));
    // The registry says what runs: v1.
    let list = operator.ok(&["list", "-o", "json"]).json();
    assert_eq!(list[0]["services"][0]["components"][0]["image"], TEST_IMAGE);
    // And the plan still shows the undeployed change.
    let plan = operator.ok(&["diff", "site", "-o", "json"]).json();
    assert!(!plan.as_array().unwrap().is_empty());

    // With --no-rollback, the unhealthy one stays (and says so).
    let kept = operator.run(&["deploy", "site", "--no-rollback", "-o", "json"]);
    assert_eq!(kept.code, 1);
    let detail = kept.json()["results"][0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("not healthy") && !detail.contains("rolled back"),
        "{detail}"
    );
    assert_eq!(image_of(&podman, "site-web"), TEST_IMAGE_V2);
}

#[test]
fn rollback_on_demand_returns_to_the_previous_spec() {
    let (podman, _agent, operator) = setup();
    let port = free_port();
    operator.define("site", &web(port, TEST_IMAGE, true));
    operator.ok(&["deploy", "site"]);
    let none = operator.run(&["rollback", "site/web"]);
    assert_ne!(none.code, 0);
    assert!(
        none.stdout.contains("no earlier deployed spec"),
        "{}",
        none.stdout
    );

    operator.define("site", &web(port, TEST_IMAGE_V2, true));
    operator.ok(&["deploy", "site"]);
    assert_eq!(image_of(&podman, "site-web"), TEST_IMAGE_V2);
    operator.ok(&["rollback", "site/web"]);
    assert_eq!(image_of(&podman, "site-web"), TEST_IMAGE);
    assert_eq!(http_get(port, "/index.html").0, 200);
    assert!(event_kinds(&operator).contains(&"rolled-back".to_string()));
    // Rolling back again returns to v2: the history keeps both.
    operator.ok(&["rollback", "site"]);
    assert_eq!(image_of(&podman, "site-web"), TEST_IMAGE_V2);
}
