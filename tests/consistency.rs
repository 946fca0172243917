//! The agent's promises under stress, with the real binaries and a real
//! podman: a slow service holds up no other, a deploy interrupted by a kill
//! -9 is finished by the next start, an adopted container can be re-created,
//! `active = false` is part of the plan, and SIGTERM does not wait for
//! followers.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{eventually, Agent, Operator, Podman, TEST_IMAGE};

const TEST_IMAGE_V2: &str = "localhost/mcp-test-busybox:v2";

fn tag_v2(podman: &Podman) {
    let out = podman
        .cmd()
        .args(["tag", TEST_IMAGE, TEST_IMAGE_V2])
        .output()
        .unwrap();
    assert!(out.status.success());
}

/// One component `web` on `image` running `script` (sh -c), health-checked
/// by `check` (sh -c) every `interval`, up to `retries` failures.
fn checked(
    service: &str,
    image: &str,
    script: &str,
    check: &str,
    interval: &str,
    retries: u32,
) -> String {
    format!(
        r#"name = "{service}"
node = "n1"

[[components]]
name  = "web"
image = "{image}"
cmd   = ["/bin/busybox", "sh", "-c", "{script}"]

[components.health]
cmd      = ["/bin/busybox", "sh", "-c", "{check}"]
interval = "{interval}"
retries  = {retries}
"#
    )
}

fn sleeper(service: &str, components: &[&str], active: bool) -> String {
    let mut text = format!("name = \"{service}\"\nnode = \"n1\"\nactive = {active}\n");
    for c in components {
        text.push_str(&format!(
            "\n[[components]]\nname = \"{c}\"\nimage = \"{TEST_IMAGE}\"\ncmd = [\"/bin/busybox\", \"sleep\", \"3600\"]\n"
        ));
    }
    text
}

fn event_kinds(operator: &Operator, service: &str) -> Vec<String> {
    operator
        .ok(&["events", service, "-o", "json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_deploy_waiting_on_its_health_check_holds_up_no_other_service() {
    let podman = Podman::start();
    let agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    // Healthy 20 s after it starts.
    operator.define(
        "slow",
        &checked(
            "slow",
            TEST_IMAGE,
            "/bin/busybox sleep 20; /bin/busybox touch /www/ready; exec /bin/busybox sleep 3600",
            "/bin/busybox test -f /www/ready",
            "500ms",
            100,
        ),
    );
    operator.define("quick", &sleeper("quick", &["main"], true));
    let mut slow = operator.command(&["deploy", "slow"]).spawn().unwrap();
    eventually(
        "slow's container to run its check",
        Duration::from_secs(20),
        || (podman.state_of("slow-web").as_deref() == Some("running")).then_some(()),
    );
    let started = Instant::now();
    operator.ok(&["deploy", "quick"]);
    operator.ok(&["sync"]);
    operator.ok(&["list"]);
    let others_took = started.elapsed();
    assert!(
        slow.try_wait().unwrap().is_none(),
        "slow's deploy ended before the others were done"
    );
    eprintln!("quick's deploy, sync and list took {others_took:?} while slow waited");
    assert_eq!(podman.state_of("quick-main").as_deref(), Some("running"));
    let slow = slow.wait_with_output().unwrap();
    assert!(
        slow.status.success(),
        "{}",
        String::from_utf8_lossy(&slow.stdout)
    );
    assert!(String::from_utf8_lossy(&slow.stdout).contains("healthy after"));
}

#[test]
fn a_kill_9_during_a_health_check_is_finished_by_the_next_start() {
    let podman = Podman::start();
    tag_v2(&podman);
    let mut agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    let serve = "exec /bin/busybox sleep 3600";
    operator.define(
        "site",
        &checked("site", TEST_IMAGE, serve, "true", "1s", 15),
    );
    operator.ok(&["deploy", "site"]);
    // v2 never passes its check (15 failures, one a second).
    operator.define(
        "site",
        &checked("site", TEST_IMAGE_V2, serve, "false", "1s", 15),
    );
    let deploy = operator.command(&["deploy", "site"]).spawn().unwrap();
    eventually(
        "v2 to run its health check",
        Duration::from_secs(20),
        || {
            (podman.inspect("site-web", "{{.Config.Image}} {{.State.Status}}")?
                == format!("{TEST_IMAGE_V2} running"))
            .then_some(())
        },
    );
    agent.kill();
    let _ = deploy.wait_with_output();
    agent.spawn(&podman.socket);

    // The next start checks v2 again, finds it unhealthy, and goes back.
    eventually(
        "the interrupted deploy to be finished",
        Duration::from_secs(60),
        || {
            event_kinds(&operator, "site")
                .contains(&"deploy-interrupted".to_string())
                .then_some(())
        },
    );
    let image = podman.inspect("site-web", "{{.Config.Image}} {{.State.Status}}");
    assert_eq!(image, Some(format!("{TEST_IMAGE} running")));
    let events = operator.ok(&["events", "site", "-o", "json"]).json();
    let interrupted = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "deploy-interrupted")
        .unwrap()
        .clone();
    assert!(
        interrupted["detail"]
            .as_str()
            .unwrap()
            .contains("rolled back"),
        "{interrupted}"
    );
    // The plan says, every time, that v2 is not what runs.
    for _ in 0..3 {
        let plan = operator.ok(&["diff", "site", "-o", "json"]).json();
        let fields: Vec<&str> = plan
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&"image"), "{plan}");
    }
    let again = operator.run(&["deploy", "site"]);
    assert!(!again.stdout.contains("unchanged"), "{}", again.stdout);
}

#[test]
fn an_adopted_container_can_be_re_created_from_its_whole_spec() {
    let podman = Podman::start();
    let agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    let run = podman
        .cmd()
        .args([
            "run",
            "-d",
            "--name",
            "loose",
            "-e",
            "FOO=bar",
            "--label",
            "team=infra",
            TEST_IMAGE,
            "/bin/busybox",
            "sh",
            "-c",
            "echo $FOO; exec /bin/busybox sleep 3600",
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Found at once, without waiting for a scan.
    operator.ok(&["adopt", "loose", "--as", "svc3/main"]);
    let export = operator
        .ok(&["service", "export", "svc3", "--node", "n1"])
        .stdout;
    for expected in ["FOO = \"bar\"", "echo $FOO", "team = \"infra\""] {
        assert!(export.contains(expected), "{expected} not in\n{export}");
    }
    // Adopting it again names its component.
    operator.fails(&["adopt", "loose", "--as", "svc4/main"], "svc3/main");

    let rm = podman.cmd().args(["rm", "-f", "loose"]).output().unwrap();
    assert!(rm.status.success());
    operator.ok(&["start", "svc3/main", "--node", "n1"]);
    let env = podman.inspect("svc3-main", "{{.Config.Env}}").unwrap();
    assert!(env.contains("FOO=bar"), "{env}");
    let cmd = podman.inspect("svc3-main", "{{.Config.Cmd}}").unwrap();
    assert!(cmd.contains("echo $FOO"), "{cmd}");
    assert_eq!(podman.state_of("svc3-main").as_deref(), Some("running"));
}

#[test]
fn active_false_is_in_the_plan_and_stops_without_re_creating() {
    let podman = Podman::start();
    let agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    operator.define("pair", &sleeper("pair", &["a", "b"], true));
    operator.ok(&["deploy", "pair"]);
    let ids: Vec<String> = ["pair-a", "pair-b"]
        .iter()
        .map(|c| podman.id_of(c).unwrap())
        .collect();

    operator.define("pair", &sleeper("pair", &["a", "b"], false));
    let plan = operator.ok(&["diff", "pair", "-o", "json"]).json();
    let change = plan
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["field"] == "active")
        .unwrap_or_else(|| panic!("no active change in {plan}"));
    assert_eq!(change["deployed"], "true");
    assert_eq!(change["local"], "false");
    let table = operator.ok(&["diff", "pair"]).stdout;
    assert!(
        table.contains("n1/pair ") && table.contains("active"),
        "{table}"
    );

    operator.ok(&["deploy", "pair"]);
    for (c, id) in ["pair-a", "pair-b"].iter().zip(&ids) {
        assert_eq!(podman.id_of(c).as_ref(), Some(id), "{c} was re-created");
        assert_eq!(podman.state_of(c).as_deref(), Some("exited"), "{c}");
    }
    assert_eq!(
        operator.ok(&["diff", "pair", "-o", "json"]).json(),
        serde_json::json!([])
    );
}

/// Reads `child`'s stdout lines on a thread, handing them over a channel.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn sigterm_ends_followers_at_once_and_exits() {
    let podman = Podman::start();
    let mut agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    operator.define(
        "talk",
        &format!(
            "name = \"talk\"\nnode = \"n1\"\n\n[[components]]\nname = \"main\"\nimage = \"{TEST_IMAGE}\"\n\
             cmd = [\"/bin/busybox\", \"sh\", \"-c\", \"echo hello; exec /bin/busybox sleep 3600\"]\n"
        ),
    );
    operator.ok(&["deploy", "talk"]);
    let followers: Vec<_> = [vec!["events", "-f"], vec!["logs", "talk/main", "-f"]]
        .into_iter()
        .map(|args| {
            let mut child = operator
                .command(&args)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let lines = lines_of(&mut child);
            // Connected: the first line (history, or the container's output) is in.
            lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{args:?} printed nothing"));
            child
        })
        .collect();

    let (status, took) = agent.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", agent.log());
    eprintln!("the agent exited {took:?} after SIGTERM, with two followers attached");
    // The grace period is 20 s: it did not wait for the followers.
    assert!(took < Duration::from_secs(10), "{took:?}");
    for child in followers {
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("shutting down"), "{stderr}");
        assert!(!stderr.contains("h2 protocol error"), "{stderr}");
    }
    assert!(!agent.log().contains("abandoning"), "{}", agent.log());
}
