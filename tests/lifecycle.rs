//! The operator's lifecycle beyond deploy, end to end against podman:
//! `undeploy`, a component removed from a definition, `purge`, `restart`
//! and `exec`, each checked in podman's own view.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{Agent, Operator, Podman, TEST_IMAGE};

/// `shop` with an `api` and (unless `without_worker`) a `worker`, both
/// sleeping; `api` mounts its service directory.
fn shop(srv: &Path, with_worker: bool) -> String {
    let mut def = format!(
        r#"name = "shop"
node = "n1"

[[components]]
name    = "api"
image   = "{TEST_IMAGE}"
cmd     = ["/bin/busybox", "sleep", "3600"]
volumes = ["{}:/data"]
"#,
        srv.join("shop").display()
    );
    if with_worker {
        def.push_str(&format!(
            r#"
[[components]]
name  = "worker"
image = "{TEST_IMAGE}"
cmd   = ["/bin/busybox", "sleep", "3600"]
"#
        ));
    }
    def
}

struct Setup {
    podman: Podman,
    _agent: Agent,
    operator: Operator,
    _tmp: tempfile::TempDir,
    srv: PathBuf,
}

fn setup() -> Setup {
    let podman = Podman::start();
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(srv.join("shop")).unwrap();
    let agent = Agent::start_with(
        &podman,
        "n1",
        None,
        &["--auth", "local", "--srv-root", srv.to_str().unwrap()],
    );
    let operator = Operator::new(&[&agent]);
    Setup {
        podman,
        _agent: agent,
        operator,
        _tmp: tmp,
        srv,
    }
}

fn event_kinds(operator: &Operator, service: &str) -> Vec<String> {
    operator
        .ok(&["events", service, "-o", "json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["component"].as_str().unwrap(),
                e["kind"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn undeploy_removes_the_containers_and_keeps_history_and_files() {
    let s = setup();
    s.operator.define("shop", &shop(&s.srv, true));
    s.operator.ok(&["deploy", "shop"]);
    std::fs::write(s.srv.join("shop/kept.txt"), "data").unwrap();
    assert!(s.podman.id_of("shop-api").is_some());
    let run = s.operator.ok(&["undeploy", "shop"]);
    assert!(run.stdout.contains("stopped and removed"), "{}", run.stdout);
    assert_eq!(s.podman.state_of("shop-api"), None);
    assert_eq!(s.podman.state_of("shop-worker"), None);
    assert!(s.srv.join("shop/kept.txt").exists());
    let kinds = event_kinds(&s.operator, "shop");
    assert!(kinds.contains(&"api:deployed".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"api:undeployed".to_string()), "{kinds:?}");
    let list = s.operator.ok(&["list", "-o", "json"]).json();
    assert_eq!(list[0]["services"][0]["active"], false, "{list}");
    // Deploying again brings it back, in new containers.
    s.operator.ok(&["deploy", "shop"]);
    assert_eq!(s.podman.state_of("shop-api").as_deref(), Some("running"));
}

#[test]
fn a_component_removed_from_the_definition_is_undeployed_by_the_next_deploy() {
    let s = setup();
    s.operator.define("shop", &shop(&s.srv, true));
    s.operator.ok(&["deploy", "shop"]);
    s.operator.define("shop", &shop(&s.srv, false));
    let plan = s.operator.ok(&["diff", "shop", "-o", "json"]).json();
    assert_eq!(plan[0]["component"], "worker", "{plan}");
    assert_eq!(
        plan[0]["local"], "removed: undeployed by the deploy",
        "{plan}"
    );
    // --keep-removed leaves it running.
    s.operator.ok(&["deploy", "shop", "--keep-removed"]);
    assert_eq!(s.podman.state_of("shop-worker").as_deref(), Some("running"));
    s.operator.ok(&["deploy", "shop"]);
    assert_eq!(s.podman.state_of("shop-worker"), None);
    assert_eq!(s.podman.state_of("shop-api").as_deref(), Some("running"));
    // Undeployed: the plan has nothing left to do.
    assert_eq!(
        s.operator.ok(&["diff", "shop", "-o", "json"]).json(),
        serde_json::json!([])
    );
    assert!(event_kinds(&s.operator, "shop").contains(&"worker:undeployed".to_string()));
}

#[test]
fn purge_forgets_what_is_gone_and_unwanted_and_refuses_while_a_container_exists() {
    let s = setup();
    s.operator.define("shop", &shop(&s.srv, true));
    s.operator.ok(&["deploy", "shop"]);
    s.operator.define("shop", &shop(&s.srv, false));
    s.operator.ok(&["deploy", "shop", "--keep-removed"]);
    // The worker is in no definition but its container exists: refused.
    let refused = s.operator.fails(&["purge", "shop"], "");
    assert!(refused.stdout.contains("shop/worker"), "{}", refused.stdout);
    assert!(refused.stdout.contains("refused"), "{}", refused.stdout);
    assert_eq!(s.podman.state_of("shop-worker").as_deref(), Some("running"));
    s.operator.ok(&["undeploy", "shop/worker"]);
    // A dry run changes nothing.
    let dry = s.operator.ok(&["purge", "--dry-run"]);
    assert!(dry.stdout.contains("would purge"), "{}", dry.stdout);
    let status = s.operator.ok(&["status", "shop", "-o", "json"]).json();
    assert!(status.to_string().contains("worker"), "{status}");
    s.operator.ok(&["purge"]);
    let list = s.operator.ok(&["list", "-o", "json"]).json();
    let components = list[0]["services"][0]["components"].to_string();
    assert!(!components.contains("worker"), "{list}");
    assert!(components.contains("api"), "{list}");
    // The defined service and its running api are untouched.
    assert_eq!(s.podman.state_of("shop-api").as_deref(), Some("running"));
}

#[test]
fn restart_starts_the_same_container_again() {
    let s = setup();
    s.operator.define("shop", &shop(&s.srv, false));
    s.operator.ok(&["deploy", "shop"]);
    let id = s.podman.id_of("shop-api").unwrap();
    let started = s
        .podman
        .inspect("shop-api", "{{.State.StartedAt}}")
        .unwrap();
    let run = s.operator.ok(&["restart", "shop"]);
    assert!(run.stdout.contains("restarted"), "{}", run.stdout);
    assert_eq!(s.podman.id_of("shop-api").unwrap(), id);
    assert_eq!(s.podman.state_of("shop-api").as_deref(), Some("running"));
    let again = s
        .podman
        .inspect("shop-api", "{{.State.StartedAt}}")
        .unwrap();
    assert_ne!(again, started);
    assert!(event_kinds(&s.operator, "shop").contains(&"api:restarted".to_string()));
}

#[test]
fn exec_streams_input_and_output_and_returns_the_exit_status() {
    let s = setup();
    s.operator.define("shop", &shop(&s.srv, false));
    s.operator.ok(&["deploy", "shop"]);
    let mut child = s
        .operator
        .command(&[
            "exec",
            "shop/api",
            "-i",
            "--",
            "sh",
            "-c",
            "read x; echo got $x; echo err >&2; exit 3",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got hello\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("err"),
        "{out:?}"
    );
    // Without -i the command reads end of file at once.
    let run = s
        .operator
        .run(&["exec", "shop/api", "--", "sh", "-c", "cat; echo done"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "done\n"),
        "{}",
        run.stderr
    );
    // Under a terminal (`script` gives one), the command sees a tty.
    let script = s
        .operator
        .program(
            "script",
            &[
                "-qec",
                &format!(
                    "{} exec shop/api -t -- sh -c 'test -t 0 && echo tty; exit 5'",
                    env!("CARGO_BIN_EXE_mcp")
                ),
                "/dev/null",
            ],
        )
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(script.status.code(), Some(5), "{script:?}");
    assert!(
        String::from_utf8_lossy(&script.stdout).contains("tty"),
        "{script:?}"
    );
    // A stopped component has nothing to run in: a clear error.
    s.operator.ok(&["stop", "shop"]);
    s.operator
        .fails(&["exec", "shop/api", "--", "true"], "not running");
    let kinds = event_kinds(&s.operator, "shop");
    assert!(kinds.contains(&"api:exec".to_string()), "{kinds:?}");
}
