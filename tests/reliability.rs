//! Reliability with the real binaries and a real podman: kill -9 in the
//! middle of a deploy, SIGTERM with operations in flight, load, and backups
//! of a running agent.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{eventually, Agent, Operator, Podman, TEST_IMAGE};
use serde_json::Value;

/// A second tag of the test image, so two specs differ in their image.
const TEST_IMAGE_V2: &str = "localhost/mcp-test-busybox:v2";

fn tag_v2(podman: &Podman) {
    let out = podman
        .cmd()
        .args(["tag", TEST_IMAGE, TEST_IMAGE_V2])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `name` with `n` sleeping components on `image`.
fn service(name: &str, n: usize, image: &str) -> String {
    let mut text = format!("name = \"{name}\"\nnode = \"n1\"\n");
    for i in 0..n {
        text.push_str(&format!(
            "\n[[components]]\nname = \"c{i}\"\nimage = \"{image}\"\ncmd = [\"/bin/busybox\", \"sleep\", \"3600\"]\n"
        ));
    }
    text
}

/// Waits until a deploy in flight is stopping `container` (podman says so):
/// the operation is under way.
fn stopping(podman: &Podman, container: &str) {
    eventually(
        &format!("{container} to be stopping"),
        Duration::from_secs(20),
        || {
            (podman.inspect(container, "{{.State.Status}}").as_deref() == Some("stopping"))
                .then_some(())
        },
    );
}

/// component -> (container id, image) as the registry says (`mcp list`).
fn registry_view(operator: &Operator, service: &str) -> BTreeMap<String, (String, String, String)> {
    let list = operator.ok(&["list", "-o", "json"]).json();
    list[0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == service)
        .flat_map(|s| s["components"].as_array().unwrap().clone())
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                (
                    c["container_id"].as_str().unwrap().to_string(),
                    c["image"].as_str().unwrap().to_string(),
                    c["observed_state"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

/// The first way the registry and podman disagree about `service`, if any.
fn disagreement(operator: &Operator, podman: &Podman, service: &str) -> Option<String> {
    let registry = registry_view(operator, service);
    let runtime = podman_view(podman, service);
    for (component, (id, image, _)) in &runtime {
        let Some((rid, rimage, _)) = registry.get(component) else {
            return Some(format!("{component}'s container is in no registry row"));
        };
        if (rid, rimage) != (id, image) {
            return Some(format!(
                "{component}: registry says {rid:?} {rimage}, podman {id:?} {image}"
            ));
        }
    }
    for (component, (id, _, state)) in &registry {
        if !runtime.contains_key(component) && (!id.is_empty() || state != "absent") {
            return Some(format!(
                "{component}: the registry claims container {id:?} ({state}) podman lacks"
            ));
        }
    }
    None
}

/// container name -> (id, image, state) in podman, for one service.
fn podman_view(podman: &Podman, service: &str) -> BTreeMap<String, (String, String, String)> {
    let out = podman
        .cmd()
        .args(["ps", "-a", "--format", "json"])
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["Labels"]["mcp.service"] == service)
        .map(|c| {
            (
                c["Labels"]["mcp.component"].as_str().unwrap().to_string(),
                (
                    c["Id"].as_str().unwrap().to_string(),
                    c["Image"].as_str().unwrap().to_string(),
                    c["State"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

/// `name` with six sleeping components whose environment says `round`.
fn round_service(name: &str, round: usize) -> String {
    let mut text = format!("name = \"{name}\"\nnode = \"n1\"\n");
    for i in 0..6 {
        text.push_str(&format!(
            "\n[[components]]\nname = \"c{i}\"\nimage = \"{TEST_IMAGE}\"\n\
             cmd = [\"/bin/busybox\", \"sleep\", \"3600\"]\nenv = {{ ROUND = \"{round}\" }}\n"
        ));
    }
    text
}

/// How far a redeploy to `round` has got: components whose container is
/// gone or already the new one.
fn replaced(podman: &Podman, service: &str, round: usize) -> usize {
    let out = podman
        .cmd()
        .args(["ps", "-a", "--format", "json"])
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let marker = format!("\"ROUND\":\"{round}\"");
    let current = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["Labels"]["mcp.service"] == service)
        .filter(|c| {
            c["Labels"]["mcp.spec"]
                .as_str()
                .is_some_and(|s| !s.contains(&marker))
        })
        .count();
    6 - current
}

/// Kill -9 during a redeploy that changes every component, at a different
/// point each round (after 1 to 5 of the 6 were replaced), 20 times: after
/// each restart the registry agrees with podman, and deploying again always
/// converges (a container that vanished in between is absent, not an error).
#[test]
fn kill_9_in_the_middle_of_redeploys_leaves_a_truthful_registry_and_redeploy_converges() {
    let podman = Podman::start();
    let mut agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    operator.define("big", &round_service("big", 0));
    operator.ok(&["deploy", "big"]);

    for round in 1..=20 {
        operator.define("big", &round_service("big", round));
        let kill_after = 1 + round % 5;
        let deploy = operator.command(&["deploy", "big"]).spawn().unwrap();
        let start = Instant::now();
        while replaced(&podman, "big", round) < kill_after {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "round {round}: the redeploy never got to {kill_after} components"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent.kill(); // SIGKILL
        let _ = deploy.wait_with_output();
        agent.spawn(&podman.socket);
        // A live query reconciles the registry with what the containers say.
        // Podman may still be finishing a request of the killed agent (a
        // create, a remove): the event stream brings that in, so the registry
        // agrees with podman shortly after, without a redeploy.
        operator.ok(&["ps"]);
        let start = Instant::now();
        while let Some(why) = disagreement(&operator, &podman, "big") {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "round {round}, killed after {kill_after}: still after 10 s: {why}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Deploying again converges: all six on this round's spec, running.
        let again = operator.run(&["deploy", "big"]);
        assert_eq!(
            again.code, 0,
            "round {round}, killed after {kill_after}:\n{}\n{}\nevents:\n{}\npodman:\n{:#?}\nagent log:\n{}",
            again.stdout,
            again.stderr,
            operator.run(&["events", "big", "--limit", "80"]).stdout,
            podman_view(&podman, "big"),
            agent.log()
        );
        assert_eq!(replaced(&podman, "big", round), 6, "round {round}");
        let runtime = podman_view(&podman, "big");
        assert_eq!(runtime.len(), 6, "{runtime:?}");
        for (component, (_, _, state)) in &runtime {
            assert_eq!(state, "running", "round {round}: {component}");
        }
    }
}

#[test]
fn sigterm_lets_a_deploy_in_flight_finish() {
    let podman = Podman::start();
    tag_v2(&podman);
    // Busybox as PID 1 ignores SIGTERM: every stop takes the full timeout.
    let mut agent = Agent::start_with(
        &podman,
        "n1",
        None,
        &["--auth", "local", "--stop-timeout", "2"],
    );
    let operator = Operator::new(&[&agent]);
    operator.define("slow", &service("slow", 1, TEST_IMAGE));
    operator.ok(&["deploy", "slow"]);
    operator.define("slow", &service("slow", 1, TEST_IMAGE_V2));
    let deploy = operator.command(&["deploy", "slow"]).spawn().unwrap();
    stopping(&podman, "slow-c0");
    let (status, took) = agent.terminate(Duration::from_secs(15));
    let deploy = deploy.wait_with_output().unwrap();
    assert!(status.success(), "{status:?}\n{}", agent.log());
    assert!(
        deploy.status.success(),
        "the deploy in flight failed: {}",
        String::from_utf8_lossy(&deploy.stdout)
    );
    assert!(
        took >= Duration::from_millis(1000),
        "it did not wait: {took:?}"
    );
    assert_eq!(podman_view(&podman, "slow")["c0"].1, TEST_IMAGE_V2);
}

#[test]
fn sigterm_abandons_what_outlasts_the_grace_period_and_records_it() {
    let podman = Podman::start();
    tag_v2(&podman);
    let mut agent = Agent::start_with(
        &podman,
        "n1",
        None,
        &[
            "--auth",
            "local",
            "--stop-timeout",
            "8",
            "--shutdown-grace",
            "1",
        ],
    );
    let operator = Operator::new(&[&agent]);
    operator.define("stuck", &service("stuck", 1, TEST_IMAGE));
    operator.ok(&["deploy", "stuck"]);
    operator.define("stuck", &service("stuck", 1, TEST_IMAGE_V2));
    let deploy = operator.command(&["deploy", "stuck"]).spawn().unwrap();
    stopping(&podman, "stuck-c0");
    let (status, took) = agent.terminate(Duration::from_secs(6));
    let _ = deploy.wait_with_output();
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(4),
        "the grace period was not honoured: {took:?}"
    );
    assert!(agent.log().contains("abandoning"), "{}", agent.log());

    agent.spawn(&podman.socket);
    let events = operator.ok(&["events", "stuck", "-o", "json"]).json();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"abandoned"), "{kinds:?}");
    // Let the stop that podman carried on with finish, then converge.
    eventually(
        "the abandoned stop to finish",
        Duration::from_secs(20),
        || {
            (podman.inspect("stuck-c0", "{{.State.Status}}").as_deref() != Some("stopping"))
                .then_some(())
        },
    );
    operator.ok(&["deploy", "stuck"]);
    assert_eq!(podman_view(&podman, "stuck")["c0"].1, TEST_IMAGE_V2);
}

#[test]
fn backup_of_a_running_agent_is_a_usable_registry() {
    let podman = Podman::start();
    let agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    operator.define("kept", &service("kept", 2, TEST_IMAGE));
    operator.ok(&["deploy", "kept"]);
    let dest = agent.dir.path().join("backup.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-agent"))
        .arg("backup")
        .arg("--state-dir")
        .arg(agent.state_dir())
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("schema version"));
    let copy = mcp::registry::Registry::open(&dest).unwrap();
    let svc = copy.service("kept").unwrap().unwrap();
    assert_eq!(svc.components.len(), 2);
    assert!(svc
        .components
        .iter()
        .all(|c| c.state.container_id.is_some()));
}

/// 500 concurrent ListServices, 5 concurrent deploys of different services
/// and 5 of the same one: no failure, no "database is locked", and the
/// same-service deploys one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_of_reads_and_deploys_fails_nothing() {
    use mcp::proto::agent_client::AgentClient;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};

    let podman = Podman::start();
    let agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    for i in 0..5 {
        operator.define(
            &format!("par{i}"),
            &service(&format!("par{i}"), 2, TEST_IMAGE),
        );
    }
    operator.define("same", &service("same", 2, TEST_IMAGE));

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(agent.ca_path()).unwrap(),
        ))
        .domain_name("127.0.0.1");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", agent.port))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", agent.token()).parse().unwrap();

    let started = Instant::now();
    let deploys: Vec<_> = (0..5)
        .map(|i| format!("par{i}"))
        .chain((0..5).map(|_| "same".to_string()))
        .map(|svc| {
            let cmd = operator.command(&["deploy", &svc]);
            tokio::task::spawn_blocking(move || {
                let mut cmd = cmd;
                cmd.output().unwrap()
            })
        })
        .collect();
    let reads: Vec<_> = (0..500)
        .map(|_| {
            let mut client = AgentClient::new(channel.clone());
            let token = token.clone();
            tokio::spawn(async move {
                let mut request = tonic::Request::new(mcp::proto::ListServicesRequest {});
                request.metadata_mut().insert("authorization", token);
                let t = Instant::now();
                client.list_services(request).await.map(|_| t.elapsed())
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for r in reads {
        latencies.push(r.await.unwrap().expect("a ListServices failed"));
    }
    let reads_done = started.elapsed();
    for d in deploys {
        let out = d.await.unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "load: 500 ListServices in {reads_done:?} ({:.0}/s) beside 10 deploys; p50 {p50:?}, p99 {p99:?}",
        500.0 / reads_done.as_secs_f64()
    );
    assert!(!agent.log().contains("database is locked"));

    // The five deploys of `same` did not interleave: its events come in
    // pairs (c0, c1 in either order), never three of one deploy's kind
    // crossing another's.
    let events = operator
        .ok(&["events", "same", "--limit", "100", "-o", "json"])
        .json();
    let deployed: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "deployed")
        .map(|e| e["component"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deployed.len(), 10, "{deployed:?}");
    for pair in deployed.chunks(2) {
        assert_ne!(
            pair[0], pair[1],
            "two deploys of one service interleaved: {deployed:?}"
        );
    }
    eventually("all running", Duration::from_secs(5), || {
        let view = podman_view(&podman, "same");
        (view.len() == 2 && view.values().all(|v| v.2 == "running")).then_some(())
    });
}
