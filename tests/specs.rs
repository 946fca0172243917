//! Resources and hardening per component, end to end against podman: every
//! field of a definition seen in `podman inspect` and in effect inside the
//! container, the agent's stop waiting the component's `stop_timeout`,
//! `cap_add` only under the node's `[policy] allow_caps`, and a hand-made
//! container's limits read back into its definition by `mcp adopt`.
//!
//! The harness's podman runs as root, where every limit applies. Rootless
//! podman on cgroup v1 (the project's Debian machines) records none of
//! `memory`, `cpus` and `pids` ("Resource limits are not supported and
//! ignored on cgroups V1 rootless systems"); the other fields work there.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Agent, Operator, Podman, TEST_IMAGE};

/// `vault` with one component, `main`, sleeping as PID 1 (which ignores
/// SIGQUIT: a stop waits the whole stop timeout, then kills), with every
/// resource and hardening field but `cap_add`, and `extra` lines.
fn vault(extra: &str) -> String {
    format!(
        r#"name = "vault"
node = "n1"

[[components]]
name         = "main"
image        = "{TEST_IMAGE}"
entrypoint   = ["/bin/busybox"]
cmd          = ["sleep", "3600"]
labels       = {{ team = "infra" }}
memory       = "64M"
cpus         = 0.5
pids         = 64
read_only    = true
tmpfs        = ["/scratch:size=16m,mode=1777"]
workdir      = "/scratch"
stop_signal  = "SIGQUIT"
stop_timeout = "3s"
cap_drop     = ["ALL"]
{extra}"#
    )
}

/// `podman inspect` of `name` with `format`, which must exist.
fn inspect(podman: &Podman, name: &str, format: &str) -> String {
    podman
        .inspect(name, format)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// `podman exec NAME ARGS...`: (exit code, stdout, stderr).
fn exec(podman: &Podman, name: &str, args: &[&str]) -> (i32, String, String) {
    let out = podman
        .cmd()
        .arg("exec")
        .arg(name)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// A cgroup file as the container sees it: cgroup v2's name, else v1's.
fn cgroup(podman: &Podman, name: &str, v2: &str, v1: &str) -> String {
    for file in [v2, v1] {
        let (code, out, _) = exec(podman, name, &["cat", &format!("/sys/fs/cgroup/{file}")]);
        if code == 0 {
            return out;
        }
    }
    panic!("neither /sys/fs/cgroup/{v2} nor /sys/fs/cgroup/{v1} in {name}");
}

/// The effective capability set of the container's PID 1.
fn effective_caps(podman: &Podman, name: &str) -> u64 {
    let (code, status, err) = exec(podman, name, &["cat", "/proc/1/status"]);
    assert_eq!(code, 0, "{err}");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap_or_else(|| panic!("no CapEff in\n{status}"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

const CAP_NET_ADMIN_BIT: u64 = 1 << 12;

#[test]
fn every_field_reaches_podman_and_holds_in_the_container() {
    let podman = Podman::start();
    let agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    operator.define("vault", &vault(""));
    operator.ok(&["deploy", "vault"]);
    let c = "vault-main";
    assert_eq!(podman.state_of(c).as_deref(), Some("running"));

    // As podman recorded it.
    for (format, expected) in [
        ("{{.HostConfig.Memory}}", "67108864"),
        ("{{.HostConfig.NanoCpus}}", "500000000"),
        ("{{.HostConfig.PidsLimit}}", "64"),
        ("{{.HostConfig.ReadonlyRootfs}}", "true"),
        ("{{.Config.WorkingDir}}", "/scratch"),
        ("{{.Config.StopTimeout}}", "3"),
        ("{{index .Config.Labels \"team\"}}", "infra"),
    ] {
        assert_eq!(inspect(&podman, c, format), expected, "{format}");
    }
    // Podman 4 shows the signal's number, later versions its name.
    let signal = inspect(&podman, c, "{{.Config.StopSignal}}");
    assert!(signal == "3" || signal == "SIGQUIT", "StopSignal {signal}");
    let entrypoint = inspect(&podman, c, "{{json .Config.Entrypoint}}");
    assert!(entrypoint.contains("/bin/busybox"), "{entrypoint}");
    let tmpfs = inspect(&podman, c, "{{index .HostConfig.Tmpfs \"/scratch\"}}");
    assert!(tmpfs.starts_with("size=16m,mode=1777"), "{tmpfs}");
    let dropped = inspect(&podman, c, "{{json .HostConfig.CapDrop}}");
    for cap in [
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_SETUID",
    ] {
        assert!(dropped.contains(cap), "{cap} not in CapDrop {dropped}");
    }
    assert_eq!(inspect(&podman, c, "{{json .HostConfig.CapAdd}}"), "[]");

    // In effect inside the container.
    assert_eq!(
        cgroup(&podman, c, "memory.max", "memory/memory.limit_in_bytes"),
        "67108864"
    );
    let quota = cgroup(&podman, c, "cpu.max", "cpu/cpu.cfs_quota_us");
    assert!(
        quota == "50000" || quota == "50000 100000",
        "cpu quota {quota}"
    );
    assert_eq!(cgroup(&podman, c, "pids.max", "pids/pids.max"), "64");
    assert_eq!(effective_caps(&podman, c), 0);
    let (code, _, _) = exec(&podman, c, &["sh", "-c", "echo x > /on-root"]);
    assert_ne!(code, 0, "the root file system is writable");
    let (code, out, err) = exec(&podman, c, &["sh", "-c", "echo x > f && pwd && ls f"]);
    assert_eq!((code, out.as_str()), (0, "/scratch\nf"), "{err}");

    // A change of a limit is a change in the plan.
    operator.define("vault", &vault("").replace("\"64M\"", "\"128M\""));
    let plan = operator.ok(&["diff", "vault", "-o", "json"]).json();
    let fields: Vec<(&str, &str, &str)> = plan
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap(),
                c["deployed"].as_str().unwrap(),
                c["local"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(fields, [("memory", "64M", "128M")]);

    // The node's copy of the definition says it all, as written.
    operator.define("vault", &vault(""));
    let export = operator.ok(&["service", "export", "vault"]).stdout;
    let local = mcp::spec::parse_service(Path::new("vault.toml"), &vault("")).unwrap();
    let exported = mcp::spec::parse_service(Path::new("vault.toml"), &export)
        .unwrap_or_else(|e| panic!("{e}\n{export}"));
    assert_eq!(exported, local, "{export}");

    // The agent's stop waits the component's 3 s, not its own 1 s
    // (`--stop-timeout 1` in the harness): PID 1 ignores SIGQUIT, so
    // podman kills it only when the timeout is over.
    let started = Instant::now();
    operator.ok(&["stop", "vault"]);
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(3), "stopped after {took:?}");
    assert_eq!(podman.state_of(c).as_deref(), Some("exited"));
}

#[test]
fn cap_add_needs_the_nodes_allow_caps() {
    let podman = Podman::start();
    let agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    let def = vault("cap_add      = [\"NET_ADMIN\"]\n");
    operator.define("vault", &def);

    let diff = operator.run(&["diff", "vault"]);
    assert_eq!(diff.code, 1, "diff did not fail:\n{}", diff.stdout);
    assert!(
        diff.stderr.contains("cap_add") && diff.stderr.contains("allow_caps"),
        "{}",
        diff.stderr
    );
    let run = operator.fails(&["deploy", "vault"], "allow_caps");
    assert!(
        run.stderr.contains("cap_add") && run.stderr.contains("CAP_NET_ADMIN"),
        "{}",
        run.stderr
    );
    // Straight to the agent, with no plan first: refused there too.
    operator.fails(&["sync"], "allow_caps");
    assert_eq!(podman.containers(), [], "something was created");
    assert!(operator.ok(&["list", "-o", "json"]).json()[0]["services"]
        .as_array()
        .unwrap()
        .is_empty());

    // A node that allows it.
    drop(agent);
    let agent = Agent::start_with_config(
        &podman,
        "n1",
        Some("[policy]\nallow_caps = [\"NET_ADMIN\"]\n"),
    );
    let operator = Operator::new(&[&agent]);
    operator.define("vault", &def);
    operator.ok(&["deploy", "vault"]);
    let added = inspect(&podman, "vault-main", "{{json .HostConfig.CapAdd}}");
    assert_eq!(added, "[\"CAP_NET_ADMIN\"]");
    // Everything else dropped, that one added.
    assert_eq!(effective_caps(&podman, "vault-main"), CAP_NET_ADMIN_BIT);
}

#[test]
fn an_adopted_containers_limits_are_in_its_definition() {
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
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "64",
            "--read-only",
            "--tmpfs",
            "/scratch:size=16m",
            "--workdir",
            "/scratch",
            "--stop-signal",
            "SIGQUIT",
            "--stop-timeout",
            "3",
            "--cap-drop",
            "NET_RAW",
            TEST_IMAGE,
            "/bin/busybox",
            "sleep",
            "3600",
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    operator.ok(&["adopt", "loose", "--as", "svc3/main"]);
    let export = operator
        .ok(&["service", "export", "svc3", "--node", "n1"])
        .stdout;
    let def = mcp::spec::parse_service(Path::new("svc3.toml"), &export)
        .unwrap_or_else(|e| panic!("{e}\n{export}"));
    let main = &def.components[0];
    let text = |v: Option<String>| v.unwrap_or_default();
    assert_eq!(
        (
            text(main.memory.as_ref().map(|m| m.to_string())),
            text(main.cpus.map(|c| c.to_string())),
            text(main.pids.map(|p| p.get().to_string())),
            main.read_only,
            main.tmpfs.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            text(main.workdir.as_ref().map(|w| w.to_string())),
            text(main.stop_signal.as_ref().map(|s| s.to_string())),
            text(main.stop_timeout.as_ref().map(|t| t.to_string())),
            main.cap_drop
                .iter()
                .map(|c| c.canonical())
                .collect::<Vec<_>>(),
            main.cap_add.len(),
        ),
        (
            "64M".to_string(),
            "0.5".to_string(),
            "64".to_string(),
            true,
            vec!["/scratch:size=16m"],
            "/scratch".to_string(),
            "SIGQUIT".to_string(),
            "3s".to_string(),
            vec!["CAP_NET_RAW".to_string()],
            0,
        ),
        "{export}"
    );

    // Re-created from that definition, it has the same limits.
    let rm = podman.cmd().args(["rm", "-f", "loose"]).output().unwrap();
    assert!(rm.status.success());
    operator.ok(&["start", "svc3/main", "--node", "n1"]);
    for (format, expected) in [
        ("{{.HostConfig.Memory}}", "67108864"),
        ("{{.HostConfig.NanoCpus}}", "500000000"),
        ("{{.HostConfig.PidsLimit}}", "64"),
        ("{{.HostConfig.ReadonlyRootfs}}", "true"),
        ("{{.Config.WorkingDir}}", "/scratch"),
        ("{{.Config.StopTimeout}}", "3"),
        ("{{json .HostConfig.CapDrop}}", "[\"CAP_NET_RAW\"]"),
    ] {
        assert_eq!(inspect(&podman, "svc3-main", format), expected, "{format}");
    }
}
