//! Routes against podman: a route gets a host port from `[routes]
//! port_range`, the container is told it in `PORT`, busybox httpd answers
//! through it, a forced redeploy keeps it, and the route hook hears the add
//! at the first deploy and the remove at the undeploy.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{eventually, http_get, Agent, Operator, Podman, TEST_IMAGE};

const SERVICE: &str = r#"name = "web"
node = "n1"

[[components]]
name = "http"
image = "__IMAGE__"
cmd = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]

[[components.routes]]
port = 8080
hostname = "web.example.com"
mode = "l7"
"#;

/// A range of this test's own: `slot` apart from the other tests of this
/// binary (their agents run at once, each with its own registry), the
/// process id apart from other test binaries; clear of the ephemeral ports.
fn port_range(slot: u16) -> (u16, u16) {
    let first = 20000 + (std::process::id() % 100) as u16 * 200 + slot * 50;
    (first, first + 49)
}

/// A hook that appends what it reads to `out`.
fn write_hook(dir: &Path, out: &Path) -> std::path::PathBuf {
    let hook = dir.join("route-hook.sh");
    std::fs::write(&hook, format!("#!/bin/sh\ncat >> '{}'\n", out.display())).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    hook
}

/// The hook's lines so far, as JSON, once there are `n`.
fn hook_lines(out: &Path, n: usize) -> Vec<serde_json::Value> {
    eventually(
        &format!("{n} line(s) from the route hook"),
        Duration::from_secs(20),
        || {
            let text = std::fs::read_to_string(out).ok()?;
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (lines.len() >= n).then_some(lines)
        },
    )
}

/// The node's routes, from `mcp routes -o json`.
fn routes(operator: &Operator) -> Vec<serde_json::Value> {
    let answer = operator.ok(&["routes", "-o", "json"]).json();
    answer[0]["routes"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_route_gets_a_stable_host_port_that_reaches_the_container() {
    let podman = Podman::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hook.jsonl");
    let hook = write_hook(tmp.path(), &out);
    let (first, last) = port_range(0);
    let config = format!(
        "[routes]\nport_range = [{first}, {last}]\nhook = [\"{}\"]\n",
        hook.display()
    );
    let agent = Agent::start_with_config(&podman, "n1", Some(&config));
    let operator = Operator::new(&[&agent]);
    operator.define("web", &SERVICE.replace("__IMAGE__", TEST_IMAGE));

    operator.ok(&["deploy", "web"]);
    let [route] = <[serde_json::Value; 1]>::try_from(routes(&operator)).unwrap();
    let port = route["host_port"].as_u64().unwrap() as u16;
    assert!((first..=last).contains(&port), "{route}");
    assert_eq!(route["container_port"], 8080);
    assert_eq!(route["address"], "127.0.0.1");
    assert_eq!(route["hostname"], "web.example.com");
    assert_eq!(route["mode"], "l7");
    assert_eq!(route["env"], "PORT");
    assert_eq!(route["component"], "http");
    let table = operator.ok(&["routes"]).stdout;
    assert!(
        table.contains("web/http") && table.contains(&format!("127.0.0.1:{port}")),
        "{table}"
    );

    // The container knows its port, and is reached through it.
    let echoed = operator.ok(&["exec", "web/http", "--", "sh", "-c", "echo $PORT"]);
    assert_eq!(echoed.stdout.trim(), port.to_string());
    let (status, body) = http_get(port, "/index.html");
    assert_eq!((status, body.as_str()), (200, "hello from mcp\n"));
    // podman publishes it where the agent said.
    let published = podman
        .inspect("web-http", "{{json .HostConfig.PortBindings}}")
        .unwrap();
    assert!(
        published.contains(&format!("\"HostPort\":\"{port}\"")) && published.contains("127.0.0.1"),
        "{published}"
    );
    // ps and list show it.
    let row = operator.ps_row("web-http").unwrap();
    assert_eq!(row["routes"][0]["host_port"], port, "{row}");
    let list = operator.ok(&["list", "-o", "json"]).json();
    assert_eq!(
        list[0]["services"][0]["components"][0]["routes"][0]["host_port"], port,
        "{list}"
    );
    assert!(operator
        .ok(&["ps"])
        .stdout
        .contains(&format!("127.0.0.1:{port}->8080")));

    // The hook heard of it once.
    let lines = hook_lines(&out, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["action"], "add");
    assert_eq!(lines[0]["node"], "n1");
    assert_eq!(lines[0]["service"], "web");
    assert_eq!(lines[0]["host_port"], port);
    assert_eq!(lines[0]["hostname"], "web.example.com");

    // A forced redeploy: a new container on the same port; no hook call.
    let before = podman.id_of("web-http");
    operator.ok(&["deploy", "web", "--force"]);
    assert_ne!(podman.id_of("web-http"), before);
    assert_eq!(
        routes(&operator)[0]["host_port"],
        port,
        "the port changed across a redeploy"
    );
    let (status, _) = http_get(port, "/index.html");
    assert_eq!(status, 200);

    // A changed route is a change of the field `routes` in the plan.
    operator.define(
        "web",
        &SERVICE
            .replace("__IMAGE__", TEST_IMAGE)
            .replace("web.example.com", "www.example.com"),
    );
    let plan = operator.ok(&["diff", "web", "-o", "json"]).json();
    assert_eq!(plan[0]["field"], "routes", "{plan}");
    assert!(
        plan[0]["local"]
            .as_str()
            .is_some_and(|l| l.contains("www.example.com")),
        "{plan}"
    );
    operator.define("web", &SERVICE.replace("__IMAGE__", TEST_IMAGE));

    // Undeploy releases it and tells the hook.
    operator.ok(&["undeploy", "web"]);
    let lines = hook_lines(&out, 2);
    assert_eq!(lines.len(), 2, "one add, one remove: {lines:?}");
    assert_eq!(lines[1]["action"], "remove");
    assert_eq!(lines[1]["host_port"], port);
    assert!(routes(&operator).is_empty());
    let events = operator.ok(&["events", "web", "-o", "json"]).json();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| k.starts_with("route-"))
        .collect();
    assert_eq!(kinds, ["route-added", "route-removed"]);
}

#[test]
fn a_failing_hook_is_an_event_and_the_deploy_goes_on() {
    let podman = Podman::start();
    let (first, last) = port_range(1);
    let config = format!(
        "[routes]\nport_range = [{first}, {last}]\nhook = [\"/bin/sh\", \"-c\", \"echo no proxy >&2; exit 7\"]\n"
    );
    let agent = Agent::start_with_config(&podman, "n1", Some(&config));
    let operator = Operator::new(&[&agent]);
    operator.define("web", &SERVICE.replace("__IMAGE__", TEST_IMAGE));
    operator.ok(&["deploy", "web"]);
    let events = operator.ok(&["events", "web", "-o", "json"]).json();
    let failed: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "route-hook-failed")
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert_eq!(failed.len(), 1, "{events}");
    assert!(
        failed[0].starts_with("add ") && failed[0].contains("no proxy"),
        "{failed:?}"
    );
    let port = routes(&operator)[0]["host_port"].as_u64().unwrap() as u16;
    assert_eq!(http_get(port, "/index.html").0, 200);
}
