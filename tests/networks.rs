//! Networks against podman: a network a definition names is created by the
//! agent before the containers (a bridge with DNS: CNI's dnsname plugin on
//! the test machines), recorded and listed by `mcp node`; a component
//! reaches another of its service by component name, and by container name.
//!
//! Podman keeps CNI network files in one directory per machine; this test
//! gives its podman a directory of its own (and its network a name of its
//! own), so it neither sees nor leaves networks of other tests.

mod common;

use std::time::Duration;

use common::{containers_conf, eventually, Agent, Operator, Podman, TEST_IMAGE};

/// Removes the test's network (and its bridge) whatever the outcome.
struct NetworkGone<'a> {
    podman: &'a Podman,
    name: String,
}

impl Drop for NetworkGone<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .cmd()
            .args(["network", "rm", "--force", &self.name])
            .output();
    }
}

#[test]
fn components_of_a_service_reach_each_other_by_name_on_a_network_the_agent_made() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("containers.conf");
    let own = std::fs::read_to_string(containers_conf()).unwrap();
    std::fs::write(
        &conf,
        format!(
            "{own}\n[network]\nnetwork_config_dir = \"{}\"\n",
            dir.path().join("net").display()
        ),
    )
    .unwrap();
    let podman = Podman::start_with_env(&[("CONTAINERS_CONF", conf.to_str().unwrap())]);
    let network = format!("mcpnet{}", std::process::id());
    let _gone = NetworkGone {
        podman: &podman,
        name: network.clone(),
    };
    let agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    operator.define(
        "app",
        &format!(
            r#"name = "app"
node = "n1"

[[components]]
name = "web"
image = "{TEST_IMAGE}"
cmd = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
network = "{network}"

[[components]]
name = "client"
image = "{TEST_IMAGE}"
cmd = ["/bin/busybox", "sleep", "3600"]
network = "{network}"
"#
        ),
    );
    assert!(
        !podman
            .cmd()
            .args(["network", "exists", &network])
            .status()
            .unwrap()
            .success(),
        "the network is there before the deploy"
    );
    operator.ok(&["deploy", "app"]);

    // podman has it, labelled as the agent's, with DNS on.
    let labels = podman
        .cmd()
        .args([
            "network",
            "inspect",
            &network,
            "--format",
            "{{json .Labels}} {{.DNSEnabled}}",
        ])
        .output()
        .unwrap();
    let labels = String::from_utf8_lossy(&labels.stdout);
    assert!(
        labels.contains("\"mcp.created-by\":\"mcp-agent\"") && labels.trim().ends_with("true"),
        "{labels}"
    );

    // The client finds web by its component name, and by its container name.
    for host in ["web", "app-web"] {
        let url = format!("http://{host}:8080/index.html");
        let body = eventually(
            &format!("client to fetch {url}"),
            Duration::from_secs(30),
            || {
                let run = operator.run(&[
                    "exec",
                    "app/client",
                    "--",
                    "sh",
                    "-c",
                    &format!("wget -qO- {url}"),
                ]);
                (run.code == 0).then_some(run.stdout)
            },
        );
        assert_eq!(body, "hello from mcp\n", "{host}");
    }

    // The agent recorded it: an event, and `mcp node` lists it.
    let node = operator.ok(&["node", "-o", "json"]).json();
    let networks = node[0]["networks"].as_array().cloned().unwrap_or_default();
    assert_eq!(networks.len(), 1, "{node}");
    assert_eq!(networks[0]["name"], network.as_str());
    assert_eq!(networks[0]["driver"], "bridge");
    assert_eq!(networks[0]["dns"], "on");
    assert!(operator
        .ok(&["node"])
        .stdout
        .contains(&format!("{network} (bridge")));
    let created = |operator: &Operator| -> Vec<String> {
        let events = operator.ok(&["events", "app", "-o", "json"]).json();
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "network-created")
            .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let seen = created(&operator);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].contains("DNS on"), "{seen:?}");

    // A redeploy finds it there: nothing created again.
    operator.ok(&["deploy", "app", "--force"]);
    assert_eq!(created(&operator).len(), 1);
}
