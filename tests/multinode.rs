//! Several nodes: two real agents on loopback, each with its own podman
//! storage and socket, its own port, certificate and (local-mode) token, and
//! one `mcp` CLI configured with both.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{Agent, Operator, Podman, Run, TEST_IMAGE};
use serde_json::Value;

fn sleeper(name: &str, node: &str) -> String {
    format!(
        r#"name = "{name}"
node = "{node}"
active = true

[[components]]
name  = "main"
image = "{TEST_IMAGE}"
cmd   = ["/bin/busybox", "sleep", "3600"]
"#
    )
}

struct Two {
    podman1: Podman,
    podman2: Podman,
    a1: Agent,
    a2: Agent,
    operator: Operator,
}

/// Two nodes, `alpha` deployed to n1 and `beta` to n2.
fn two_nodes() -> Two {
    let podman1 = Podman::start();
    let podman2 = Podman::start();
    let a1 = Agent::start(&podman1, "n1");
    let a2 = Agent::start(&podman2, "n2");
    assert_ne!(
        a1.token(),
        a2.token(),
        "each local-mode agent has its own token"
    );
    let operator = Operator::with_node_tokens(&[&a1, &a2]);
    operator.define("alpha", &sleeper("alpha", "n1"));
    operator.define("beta", &sleeper("beta", "n2"));
    operator.ok(&["deploy", "alpha"]);
    operator.ok(&["deploy", "beta"]);
    Two {
        podman1,
        podman2,
        a1,
        a2,
        operator,
    }
}

/// Runs `mcp args` and measures it.
fn timed(operator: &Operator, args: &[&str]) -> (Run, Duration) {
    let start = Instant::now();
    let run = operator.run(args);
    (run, start.elapsed())
}

/// `node` of every entry of a JSON answer, in order.
fn nodes_of(json: &Value) -> Vec<String> {
    json.as_array()
        .unwrap_or_else(|| panic!("not an array: {json}"))
        .iter()
        .map(|e| e["node"].as_str().unwrap().to_string())
        .collect()
}

fn entry<'a>(json: &'a Value, node: &str) -> &'a Value {
    json.as_array()
        .unwrap()
        .iter()
        .find(|e| e["node"] == node)
        .unwrap_or_else(|| panic!("no entry for {node} in {json}"))
}

fn container_names(node_entry: &Value) -> Vec<String> {
    node_entry["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("no containers in {node_entry}"))
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// Points node `node` of the operator's config at `address`.
fn set_address(operator: &Operator, node: &Agent, address: &str) {
    let path = operator.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let old = format!("address = \"127.0.0.1:{}\"", node.port);
    assert!(text.contains(&old), "{text}");
    std::fs::write(
        &path,
        text.replace(&old, &format!("address = \"{address}\"")),
    )
    .unwrap();
}

#[test]
fn services_go_to_their_node_and_ps_shows_both_nodes() {
    let t = two_nodes();
    let op = &t.operator;

    // Each service runs in its own node's podman, and only there.
    assert_eq!(t.podman1.state_of("alpha-main").as_deref(), Some("running"));
    assert_eq!(t.podman1.state_of("beta-main"), None);
    assert_eq!(t.podman2.state_of("beta-main").as_deref(), Some("running"));
    assert_eq!(t.podman2.state_of("alpha-main"), None);

    let ps = op.ok(&["ps", "-o", "json"]).json();
    assert_eq!(nodes_of(&ps), ["n1", "n2"]);
    assert_eq!(container_names(entry(&ps, "n1")), ["alpha-main"]);
    assert_eq!(container_names(entry(&ps, "n2")), ["beta-main"]);
    assert_eq!(
        entry(&ps, "n2")["containers"][0]["id"].as_str(),
        t.podman2.id_of("beta-main").as_deref()
    );

    let table = op.ok(&["ps"]).stdout;
    assert!(table.contains("n1/alpha/main"), "{table}");
    assert!(table.contains("n2/beta/main"), "{table}");
    assert!(
        !table.contains("n1/beta") && !table.contains("n2/alpha"),
        "{table}"
    );

    let list = op.ok(&["list"]).stdout;
    assert!(
        list.contains("n1/alpha/main") && list.contains("n2/beta/main"),
        "{list}"
    );
    let status = op.ok(&["status", "-o", "json"]).json();
    assert_eq!(nodes_of(&status), ["n1", "n2"]);
    // `status SVC` asks only the node of the service's definition.
    let status = op.ok(&["status", "beta", "-o", "json"]).json();
    assert_eq!(nodes_of(&status), ["n2"]);

    // Events of both nodes, merged in time order.
    let events = op.ok(&["events", "-o", "json"]).json();
    let deployed: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "deployed")
        .map(|e| {
            format!(
                "{}/{}",
                e["node"].as_str().unwrap(),
                e["service"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(deployed, ["n1/alpha", "n2/beta"], "{events}");
    let ts: Vec<i64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ts_ms"].as_i64().unwrap())
        .collect();
    assert!(
        ts.windows(2).all(|w| w[0] <= w[1]),
        "not in time order: {events}"
    );

    // stop/start go to the node the definition names.
    op.ok(&["stop", "beta"]);
    assert_eq!(t.podman2.state_of("beta-main").as_deref(), Some("exited"));
    assert_eq!(t.podman1.state_of("alpha-main").as_deref(), Some("running"));
    op.ok(&["start", "beta"]);
    assert_eq!(t.podman2.state_of("beta-main").as_deref(), Some("running"));
}

#[test]
fn a_killed_node_is_unreachable_and_the_other_still_answers() {
    let mut t = two_nodes();
    let op = &t.operator;
    t.a2.kill();

    let (ps, took) = timed(op, &["ps", "--timeout", "2"]);
    eprintln!("mcp ps with n2 killed took {took:?}");
    assert!(took < Duration::from_secs(5), "mcp ps took {took:?}");
    assert_eq!(ps.code, 1, "{}\n{}", ps.stdout, ps.stderr);
    assert!(ps.stdout.contains("n1/alpha/main"), "{}", ps.stdout);
    assert!(!ps.stdout.contains("n2/"), "{}", ps.stdout);
    assert!(
        ps.stderr.contains("node n2: UNREACHABLE ("),
        "{}",
        ps.stderr
    );
    assert!(!ps.stderr.contains("node n1"), "{}", ps.stderr);

    let (ps, took) = timed(op, &["ps", "--timeout", "2", "-o", "json"]);
    assert!(
        took < Duration::from_secs(5),
        "mcp ps -o json took {took:?}"
    );
    assert_eq!(ps.code, 1);
    let json = ps.json();
    assert_eq!(nodes_of(&json), ["n1", "n2"]);
    assert_eq!(container_names(entry(&json, "n1")), ["alpha-main"]);
    let n2 = entry(&json, "n2");
    assert!(
        n2["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{json}"
    );
    assert!(n2.get("containers").is_none(), "{json}");
    assert!(entry(&json, "n1").get("error").is_none(), "{json}");

    // The other read commands say the same.
    for args in [&["list"][..], &["status"], &["events"]] {
        let mut args = args.to_vec();
        args.extend(["--timeout", "2", "-o", "json"]);
        let (run, took) = timed(op, &args);
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
        assert_eq!(run.code, 1, "{args:?}: {}\n{}", run.stdout, run.stderr);
        let json = run.json();
        let errors: Vec<_> = json
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e.get("error").is_some())
            .collect();
        assert_eq!(errors.len(), 1, "{args:?}: {json}");
        assert_eq!(errors[0]["node"], "n2", "{args:?}: {json}");
    }
    let list = op.run(&["list", "--timeout", "2"]);
    assert_eq!(list.code, 1);
    assert!(list.stdout.contains("n1/alpha/main"), "{}", list.stdout);

    // A service of the dead node cannot be stopped; the other node's can.
    op.fails(&["stop", "beta", "--timeout", "2"], "n2");
    op.ok(&["stop", "alpha"]);
    assert_eq!(t.podman1.state_of("alpha-main").as_deref(), Some("exited"));
}

/// A node that accepts TCP connections but never says a word: only the
/// timeout ends the wait.
#[test]
fn a_silent_node_times_out() {
    let t = two_nodes();
    let op = &t.operator;
    let blackhole = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = blackhole.local_addr().unwrap().to_string();
    set_address(op, &t.a2, &address);

    let (ps, took) = timed(op, &["ps", "--timeout", "2"]);
    eprintln!("mcp ps --timeout 2 with n2 silent took {took:?}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "mcp ps --timeout 2 took {took:?}"
    );
    assert_eq!(ps.code, 1, "{}\n{}", ps.stdout, ps.stderr);
    assert!(ps.stdout.contains("n1/alpha/main"), "{}", ps.stdout);
    assert!(
        ps.stderr
            .contains("node n2: UNREACHABLE (timed out after 2s)"),
        "{}",
        ps.stderr
    );

    let (ps, took) = timed(op, &["ps", "--timeout", "2", "-o", "json"]);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let json = ps.json();
    assert_eq!(entry(&json, "n2")["error"], "timed out after 2s", "{json}");
    assert_eq!(container_names(entry(&json, "n1")), ["alpha-main"]);

    // timeout_secs in mcp.toml, when there is no --timeout.
    let path = op.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("timeout_secs = 1\n\n{text}")).unwrap();
    let (ps, took) = timed(op, &["ps"]);
    eprintln!("mcp ps with timeout_secs = 1 took {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(ps.code, 1);
    assert!(ps.stderr.contains("timed out after 1s"), "{}", ps.stderr);
    assert!(ps.stdout.contains("n1/alpha/main"), "{}", ps.stdout);

    // Non-follow events: both nodes opened at once, the silent one bounded.
    let (events, took) = timed(op, &["events", "--timeout", "2"]);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(events.code, 1);
    assert!(events.stdout.contains("n1/alpha/main"), "{}", events.stdout);
    assert!(
        events
            .stderr
            .contains("node n2: UNREACHABLE (timed out after 2s)"),
        "{}",
        events.stderr
    );

    // A deploy to the silent node gives up after the timeout too.
    let (deploy, took) = timed(op, &["deploy", "beta", "--timeout", "2"]);
    assert!(took < Duration::from_secs(5), "deploy took {took:?}");
    assert_ne!(deploy.code, 0);
    assert!(deploy.stderr.contains("node n2"), "{}", deploy.stderr);
    drop(blackhole);
}

#[test]
fn each_node_uses_its_own_token() {
    let t = two_nodes();
    // With only n1's token for every node (Operator::new), n2 refuses.
    let shared = Operator::new(&[&t.a1, &t.a2]);
    let ps = shared.run(&["ps", "-o", "json"]);
    assert_eq!(ps.code, 1);
    let json = ps.json();
    assert_eq!(container_names(entry(&json, "n1")), ["alpha-main"]);
    assert!(
        entry(&json, "n2")["error"]
            .as_str()
            .is_some_and(|e| e.contains("token")),
        "{json}"
    );
    assert!(ps.stderr.contains("node n2: FAILED ("), "{}", ps.stderr);

    // A token_file that cannot be read is named.
    let path = t.operator.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let missing = t.operator.home.path().join("no-such-token");
    let n2_token = t.operator.home.path().join("mcp/token-n2");
    std::fs::write(
        &path,
        text.replace(
            &n2_token.display().to_string(),
            &missing.display().to_string(),
        ),
    )
    .unwrap();
    let ps = t.operator.run(&["ps"]);
    assert_eq!(ps.code, 1);
    assert!(ps.stdout.contains("n1/alpha/main"), "{}", ps.stdout);
    assert!(
        ps.stderr.contains(&missing.display().to_string()),
        "{}",
        ps.stderr
    );
}
