//! `mcp logs` end to end: the real `mcp` and `mcp-agent` against a real
//! podman, containers that print numbered lines. Also the generated shell
//! completions and man pages, through the real binary.

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::{eventually, Agent, Operator, Podman, TEST_IMAGE};

/// `count` prints "count 1" .. "count 10" at once, then sleeps; `tick`
/// prints "tick N" every 200 ms.
fn chatty() -> String {
    format!(
        r#"name = "chatty"
node = "n1"
active = true

[[components]]
name  = "count"
image = "{TEST_IMAGE}"
cmd   = ["/bin/busybox", "sh", "-c", "i=1; while [ $i -le 10 ]; do echo \"count $i\"; i=$((i+1)); done; exec /bin/busybox sleep 3600"]

[[components]]
name  = "tick"
image = "{TEST_IMAGE}"
cmd   = ["/bin/busybox", "sh", "-c", "i=1; while true; do echo \"tick $i\"; i=$((i+1)); /bin/busybox sleep 0.2; done"]
"#
    )
}

fn setup() -> (Podman, Agent, Operator) {
    let podman = Podman::start();
    let agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    operator.define("chatty", &chatty());
    operator.ok(&["deploy", "chatty"]);
    // Everything `count` will ever print is there.
    eventually(
        "count to print its 10 lines",
        Duration::from_secs(20),
        || {
            let run = operator.run(&["logs", "chatty/count"]);
            (run.code == 0 && run.stdout.lines().any(|l| l == "count 10")).then_some(())
        },
    );
    (podman, agent, operator)
}

fn lines(stdout: &str) -> Vec<&str> {
    stdout.lines().collect()
}

#[test]
fn logs_of_one_component_of_all_and_the_errors() {
    let (podman, _agent, operator) = setup();

    // One component: no prefix, every line, in order.
    let all = operator.ok(&["logs", "chatty/count"]);
    let expected: Vec<String> = (1..=10).map(|i| format!("count {i}")).collect();
    assert_eq!(lines(&all.stdout), expected, "{}", all.stderr);

    // --tail 3: the last three.
    let tail = operator.ok(&["logs", "chatty/count", "--tail", "3"]);
    assert_eq!(lines(&tail.stdout), ["count 8", "count 9", "count 10"]);

    // --since: `count` wrote nothing in the last second, everything in the last hour.
    std::thread::sleep(Duration::from_millis(2200));
    let recent = operator.ok(&["logs", "chatty/count", "--since", "1s"]);
    assert_eq!(
        recent.stdout, "",
        "count printed nothing in the last second"
    );
    let hour = operator.ok(&["logs", "chatty/count", "--since", "1h"]);
    assert_eq!(lines(&hour.stdout).len(), 10, "{}", hour.stdout);

    // The whole service: both components, each line with its component's
    // name, padded to one column; each component's lines in order.
    let merged = operator.ok(&["logs", "chatty", "--tail", "5"]);
    let mut count = Vec::new();
    let mut tick = Vec::new();
    for line in merged.stdout.lines() {
        if let Some(text) = line.strip_prefix("count | ") {
            count.push(text.to_string());
        } else if let Some(text) = line.strip_prefix("tick  | ") {
            tick.push(text.to_string());
        } else {
            panic!(
                "line without a component prefix: {line:?}\n{}",
                merged.stdout
            );
        }
    }
    assert_eq!(
        count,
        ["count 6", "count 7", "count 8", "count 9", "count 10"]
    );
    assert_eq!(tick.len(), 5, "{}", merged.stdout);
    let numbers: Vec<u64> = tick
        .iter()
        .map(|t| t.strip_prefix("tick ").unwrap().parse().unwrap())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "tick lines out of order: {numbers:?}"
    );

    // JSON: one object per line, with its component and stream.
    let json = operator.ok(&["logs", "chatty/count", "--tail", "1", "-o", "json"]);
    let line: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(line["component"], "count");
    assert_eq!(line["stream"], "stdout");
    assert_eq!(line["line"], "count 10");
    assert!(line["ts_ms"].as_i64().unwrap() > 0, "{line}");

    // --timestamps: the time first.
    let stamped = operator.ok(&["logs", "chatty/count", "--tail", "1", "-t"]);
    let (time, text) = stamped.stdout.trim().split_once(' ').unwrap();
    assert_eq!(text, "count 10");
    assert!(time.ends_with('Z') && time.contains('T'), "{time}");

    // An unknown component: a clear error, and a non-zero exit.
    let nope = operator.fails(
        &["logs", "chatty/nope"],
        "node n1: service chatty on node n1 has no component nope (components: ",
    );
    assert!(nope.stderr.contains("count") && nope.stderr.contains("tick"));
    assert_eq!(nope.stdout, "");

    // An unknown service, on a node given explicitly (there is no definition).
    operator.fails(
        &["logs", "ghost", "--node", "n1"],
        "service ghost is not known on node n1",
    );
    // Without a definition and without --node, it says what to do.
    operator.fails(&["logs", "ghost"], "pass --node NODE");

    // A component whose container is gone.
    operator.ok(&["stop", "chatty/count"]);
    let podman_rm = podman
        .cmd()
        .args(["rm", "-f", "chatty-count"])
        .output()
        .unwrap();
    assert!(podman_rm.status.success());
    operator.fails(
        &["logs", "chatty/count"],
        "chatty/count has no container on node n1",
    );
}

#[test]
fn logs_follow_streams_new_lines_across_a_redeploy() {
    let (_podman, _agent, operator) = setup();
    let mut follower = operator
        .command(&["logs", "chatty/tick", "--follow", "--tail", "0"])
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("no line streamed within 5s");
    let second = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("no second line within 5s");
    let number = |l: &str| -> u64 {
        l.strip_prefix("tick ")
            .unwrap_or_else(|| panic!("not a tick line: {l:?}"))
            .parse()
            .unwrap()
    };
    assert_eq!(number(&second), number(&first) + 1);

    // A redeploy replaces the container: the follower goes on with the new
    // one, whose count starts again at 1.
    operator.ok(&["deploy", "--force", "chatty/tick"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut after = Vec::new();
    while !after.iter().any(|l: &String| number(l) == 1) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => after.push(line),
            Err(_) => panic!("no line of the new container within 20 s; after: {after:?}"),
        }
    }
    // Still running: following does not end by itself.
    assert!(follower.try_wait().unwrap().is_none());
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn completions_and_man_pages_need_no_config() {
    // An empty config home: no mcp.toml, no token.
    let home = tempfile::tempdir().unwrap();
    let mcp = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mcp"))
            .args(args)
            .env("XDG_CONFIG_HOME", home.path())
            .env_remove("MCP_TOKEN")
            .env_remove("MCP_CONFIG")
            .env_remove("MCP_SERVICES_DIR")
            .output()
            .unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        let out = mcp(&["completions", shell]);
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8(out.stdout).unwrap();
        for sub in ["deploy", "logs", "events", "service", "completions", "man"] {
            assert!(script.contains(sub), "{shell} script names no {sub}");
        }
        if shell == "bash" {
            let file = home.path().join("mcp.bash");
            std::fs::write(&file, &script).unwrap();
            let check = std::process::Command::new("bash")
                .arg("-n")
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                check.status.success(),
                "bash -n: {}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
        if shell == "zsh" {
            assert!(script.starts_with("#compdef mcp"), "{script}");
        }
    }

    let dir = home.path().join("man");
    let out = mcp(&["man", "--dir", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "mcp.1",
        "mcp-logs.1",
        "mcp-deploy.1",
        "mcp-agent.1",
        "mcp-agent-serve.1",
    ] {
        assert!(dir.join(page).exists(), "{page} not written");
    }
    let top = std::fs::read_to_string(dir.join("mcp.1")).unwrap();
    assert!(top.contains(".TH mcp 1"), "{top}");
    // Render it, with whichever of man or groff is installed.
    let rendered = std::process::Command::new("man")
        .arg("-l")
        .arg(dir.join("mcp.1"))
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .or_else(|| {
            std::process::Command::new("groff")
                .args(["-man", "-Tutf8"])
                .arg(dir.join("mcp.1"))
                .output()
                .ok()
                .filter(|o| o.status.success())
        });
    if let Some(rendered) = rendered {
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(text.contains("logs"), "{text}");
        assert!(text.contains("completions"), "{text}");
    }
}

/// Runs `mcp` with its stdout on a terminal (util-linux `script` gives it a
/// pseudo-terminal); what the terminal received.
fn on_a_terminal(operator: &Operator, args: &[&str]) -> Vec<u8> {
    let mcp = env!("CARGO_BIN_EXE_mcp");
    let command = std::iter::once(mcp)
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = operator
        .program("script", &["-qec", &command, "/dev/null"])
        .output()
        .expect("script (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn control_sequences_from_a_container_are_escaped_on_a_terminal() {
    let podman = Podman::start();
    let agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    operator.define(
        "loud",
        &format!(
            r#"name = "loud"
node = "n1"

[[components]]
name  = "main"
image = "{TEST_IMAGE}"
cmd   = ["/bin/busybox", "sh", "-c", "printf 'red \\033[31mtext\\033]0;owned\\007 done\\n'; exec /bin/busybox sleep 3600"]
"#
        ),
    );
    operator.ok(&["deploy", "loud"]);
    eventually("the line", Duration::from_secs(20), || {
        operator
            .run(&["logs", "loud/main"])
            .stdout
            .contains("done")
            .then_some(())
    });
    // Piped: the bytes as they are (for tools).
    let piped = operator.ok(&["logs", "loud/main"]).stdout;
    assert!(piped.contains("\x1b[31m"), "{piped:?}");
    // On a terminal: escaped, so the container cannot drive it.
    let shown =
        String::from_utf8_lossy(&on_a_terminal(&operator, &["logs", "loud/main"])).into_owned();
    assert!(
        shown.contains("red \\x1b[31mtext\\x1b]0;owned\\x07 done"),
        "{shown:?}"
    );
    assert!(!shown.contains('\x1b'), "{shown:?}");
    // Unless asked for raw output.
    let raw = String::from_utf8_lossy(&on_a_terminal(&operator, &["logs", "loud/main", "--raw"]))
        .into_owned();
    assert!(raw.contains("\x1b[31m"), "{raw:?}");
}
