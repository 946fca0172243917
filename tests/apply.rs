//! `mcp sync --apply` over two real agents (each with its own podman): the
//! plan for every node first, `--dry-run` changing nothing, then new
//! definitions created, changed ones redeployed (unchanged components keep
//! their containers), and services gone from the workstation undeployed;
//! its exit status says whether every node converged.

mod common;

use common::{Agent, Operator, Podman, TEST_IMAGE};

fn service(name: &str, node: &str, components: &[(&str, &str)]) -> String {
    let mut def = format!("name = \"{name}\"\nnode = \"{node}\"\n");
    for (component, arg) in components {
        def.push_str(&format!(
            "\n[[components]]\nname  = \"{component}\"\nimage = \"{TEST_IMAGE}\"\n\
             cmd   = [\"/bin/busybox\", \"sleep\", \"{arg}\"]\n"
        ));
    }
    def
}

#[test]
fn sync_apply_creates_changes_and_removes_what_the_definitions_say() {
    let (podman1, podman2) = (Podman::start(), Podman::start());
    let a1 = Agent::start(&podman1, "n1");
    let a2 = Agent::start(&podman2, "n2");
    let operator = Operator::with_node_tokens(&[&a1, &a2]);
    operator.define("kept", &service("kept", "n1", &[("main", "3600")]));
    operator.define(
        "changed",
        &service("changed", "n2", &[("a", "3600"), ("b", "3600")]),
    );
    operator.define("gone", &service("gone", "n2", &[("main", "3600")]));
    operator.ok(&["deploy", "kept"]);
    operator.ok(&["deploy", "changed"]);
    operator.ok(&["deploy", "gone"]);
    let kept_id = podman1.id_of("kept-main").unwrap();
    let unchanged_id = podman2.id_of("changed-a").unwrap();
    let changed_id = podman2.id_of("changed-b").unwrap();

    // The workstation's new truth: one new service, one changed, one gone.
    operator.define("fresh", &service("fresh", "n1", &[("main", "3600")]));
    operator.define(
        "changed",
        &service("changed", "n2", &[("a", "3600"), ("b", "7200")]),
    );
    std::fs::remove_file(operator.services_dir().join("gone.toml")).unwrap();

    let dry = operator.ok(&["sync", "--apply", "--dry-run"]);
    for expected in [
        "n1/fresh",
        "create",
        "n2/changed",
        "change",
        "n2/gone",
        "undeploy",
    ] {
        assert!(
            dry.stderr.contains(expected),
            "{expected} not in\n{}",
            dry.stderr
        );
    }
    assert!(!dry.stderr.contains("n1/kept"), "{}", dry.stderr);
    assert_eq!(podman1.state_of("fresh-main"), None);
    assert_eq!(
        podman2.id_of("changed-b").as_deref(),
        Some(changed_id.as_str())
    );
    assert_eq!(podman2.state_of("gone-main").as_deref(), Some("running"));

    // Not a terminal and no --yes: refused, nothing applied.
    operator.fails(&["sync", "--apply"], "--yes");
    assert_eq!(podman1.state_of("fresh-main"), None);

    let applied = operator.ok(&["sync", "--apply", "--yes"]);
    assert!(
        applied.stdout.contains("n1/fresh/main"),
        "{}",
        applied.stdout
    );
    assert_eq!(podman1.state_of("fresh-main").as_deref(), Some("running"));
    assert_eq!(podman1.id_of("kept-main").unwrap(), kept_id);
    assert_eq!(podman2.id_of("changed-a").unwrap(), unchanged_id);
    assert_ne!(podman2.id_of("changed-b").unwrap(), changed_id);
    assert_eq!(
        podman2.inspect("changed-b", "{{.Config.Cmd}}").as_deref(),
        Some("[/bin/busybox sleep 7200]")
    );
    assert_eq!(podman2.state_of("gone-main"), None);

    // Converged: a second run has nothing to do.
    let again = operator.ok(&["sync", "--apply", "--yes"]);
    assert!(
        again
            .stderr
            .contains("already runs what the definitions say"),
        "{}",
        again.stderr
    );
}

#[test]
fn sync_apply_fails_when_a_node_does_not_converge() {
    let podman = Podman::start();
    let agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    operator.define("ok", &service("ok", "n1", &[("main", "3600")]));
    operator.define(
        "broken",
        "name = \"broken\"\nnode = \"n1\"\n\n[[components]]\nname = \"main\"\n\
         image = \"localhost/not-here:1\"\npull = \"never\"\n",
    );
    let run = operator.run(&["sync", "--apply", "--yes"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("FAILED"), "{}", run.stdout);
    assert_eq!(podman.state_of("ok-main").as_deref(), Some("running"));
}
