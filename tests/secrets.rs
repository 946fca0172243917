//! Secrets end to end against podman: `mcp secret set` (standard input and
//! --from-file), `list` (names, never values), a deploy that gives them to
//! the container as environment variables and read-only files, and then a
//! search for the values everywhere MCP writes or answers: the registry's
//! files, the containers' labels, the agent's log at trace level, events,
//! export, diff, status, list, ps. A deploy that lacks a secret fails and
//! leaves the running container as it was.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{Agent, Operator, Podman, TEST_IMAGE};

/// A value no test could meet by chance.
fn unique(what: &str) -> String {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).unwrap();
    format!("{what}-{}", hex::encode(random))
}

/// `shop` with one sleeping `api`, and `extra` lines for it.
fn shop(extra: &str) -> String {
    format!(
        r#"name = "shop"
node = "n1"

[[components]]
name = "api"
image = "{TEST_IMAGE}"
cmd = ["/bin/busybox", "sleep", "3600"]
{extra}
"#
    )
}

const WITH_SECRETS: &str = r#"env = { MODE = "test" }
secrets = { DB_PASSWORD = "db-password" }
secret_files = { "db-password" = "/run/secrets/db", "tls-key" = "/run/secrets/tls" }"#;

/// Every file under `dir` but those under `skip`, with its bytes.
fn files_under(dir: &Path, skip: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.starts_with(skip) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path);
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                found.push((path, bytes));
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn secrets_reach_the_container_and_nothing_else() {
    let podman = Podman::start();
    let mut agent = Agent::new("n1", None, &["--auth", "local"]);
    // Everything the agent can log, so that the search below means something.
    agent.set_env("MCP_LOG", "trace");
    agent.spawn(&podman.socket);
    let operator = Operator::new(&[&agent]);
    operator.define("shop", &shop(WITH_SECRETS));

    // From standard input: the trailing newline is not part of the value.
    let password = unique("pw");
    let mut child = operator
        .command(&["secret", "set", "shop", "db-password"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // From a file: byte for byte, newlines included.
    let key_id = unique("key");
    let key = format!("-----BEGIN KEY-----\n{key_id}\n-----END KEY-----\n");
    let key_file = operator.home.path().join("tls.key");
    std::fs::write(&key_file, &key).unwrap();
    operator.ok(&[
        "secret",
        "set",
        "shop",
        "tls-key",
        "--from-file",
        key_file.to_str().unwrap(),
    ]);
    let values = [password.as_str(), key_id.as_str()];

    // Listed by name and date.
    let listed = operator.ok(&["secret", "list", "shop", "-o", "json"]);
    let listed_json = listed.json();
    let names: Vec<&str> = listed_json["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert!(s["updated_at_ms"].as_i64().unwrap() > 0, "{s}");
            s["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(names, ["db-password", "tls-key"]);
    let table = operator.ok(&["secret", "list", "shop"]).stdout;
    assert!(
        table.contains("NAME") && table.contains("UPDATED") && table.contains("tls-key"),
        "{table}"
    );
    for v in values {
        assert!(!listed.stdout.contains(v) && !table.contains(v));
    }
    // Kept in the state directory, for the agent only.
    let store = agent.state_dir().join("secrets");
    let stored = store.join("shop/db-password");
    assert_eq!(std::fs::read_to_string(&stored).unwrap(), password);
    assert_eq!(
        std::fs::read_to_string(store.join("shop/tls-key")).unwrap(),
        key
    );
    assert_eq!(mode(&stored), 0o600);
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&store.join("shop")), 0o700);

    // The container gets them: in its environment, and as read-only files.
    operator.ok(&["deploy", "shop"]);
    let env = operator.ok(&["exec", "shop/api", "--", "sh", "-c", "echo $DB_PASSWORD"]);
    assert_eq!(env.stdout, format!("{password}\n"));
    let file = operator.ok(&["exec", "shop/api", "--", "cat", "/run/secrets/db"]);
    assert_eq!(file.stdout, password);
    let file = operator.ok(&["exec", "shop/api", "--", "cat", "/run/secrets/tls"]);
    assert_eq!(file.stdout, key);
    let write = operator.run(&[
        "exec",
        "shop/api",
        "--",
        "sh",
        "-c",
        "echo x > /run/secrets/db",
    ]);
    assert_ne!(write.code, 0, "a secret file is read-only");
    assert_eq!(
        std::fs::read_to_string(&stored).unwrap(),
        password,
        "the store's file is unchanged"
    );

    // Nowhere else. The spec label names the secrets; no label holds a value.
    let labels = podman
        .inspect("shop-api", "{{json .Config.Labels}}")
        .unwrap();
    assert!(labels.contains("db-password"), "{labels}");
    let answers = [
        operator.ok(&["events", "-o", "json"]).stdout,
        operator.ok(&["service", "export", "shop"]).stdout,
        operator.ok(&["diff", "shop", "-o", "json"]).stdout,
        operator.ok(&["status", "-o", "json"]).stdout,
        operator.ok(&["list", "-o", "json"]).stdout,
        operator.ok(&["ps", "-o", "json"]).stdout,
    ];
    let export = &answers[1];
    assert!(
        export.contains("DB_PASSWORD = \"db-password\""),
        "the export names the secrets: {export}"
    );
    let events = &answers[0];
    assert!(events.contains("secret-set"), "{events}");
    // The registry's files (and everything else in the state directory but
    // the store itself): database, WAL, token, TLS.
    let state = files_under(&agent.state_dir(), &store);
    assert!(
        state.iter().any(|(p, _)| p.ends_with("mcp.db")),
        "{:?}",
        state.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );

    // Removed: listed no more.
    operator.ok(&["secret", "rm", "shop", "tls-key"]);
    let after = operator
        .ok(&["secret", "list", "shop", "-o", "json"])
        .json();
    let names: Vec<&str> = after["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db-password"]);
    assert!(!store.join("shop/tls-key").exists());
    operator.fails(&["secret", "rm", "shop", "tls-key"], "no secret tls-key");
    let events = operator.ok(&["events", "shop", "-o", "json"]).stdout;
    assert!(events.contains("secret-removed"), "{events}");

    let log = agent.log();
    assert!(
        log.contains("TRACE"),
        "the agent logs at trace level:\n{log}"
    );
    for v in values {
        assert!(!labels.contains(v), "a label holds a value: {labels}");
        for answer in &answers {
            assert!(!answer.contains(v), "an answer holds a value: {answer}");
        }
        assert!(!events.contains(v), "{events}");
        for (path, bytes) in &state {
            assert!(!contains(bytes, v), "{} holds a value", path.display());
        }
        assert!(!log.contains(v), "the agent's log holds a value");
    }
}

#[test]
fn a_deploy_that_lacks_a_secret_changes_nothing() {
    let podman = Podman::start();
    let agent = Agent::start(&podman, "n1");
    let operator = Operator::new(&[&agent]);
    operator.define("shop", &shop(""));
    operator.ok(&["deploy", "shop"]);
    let running = podman.id_of("shop-api").unwrap();

    operator.define("shop", &shop("secrets = { DB_PASSWORD = \"db-password\" }"));
    // The plan names the secret.
    let plan = operator.ok(&["diff", "shop", "-o", "json"]).json();
    let change = plan
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["field"] == "secrets")
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(
        change["local"].as_str().unwrap().contains("db-password"),
        "{plan}"
    );
    let run = operator.fails(&["deploy", "shop"], "db-password");
    assert!(
        run.stderr.contains("mcp secret set shop db-password"),
        "{}",
        run.stderr
    );
    assert_eq!(podman.id_of("shop-api").as_deref(), Some(running.as_str()));
    assert_eq!(podman.state_of("shop-api").as_deref(), Some("running"));

    // Set, the same deploy goes through, in a new container.
    let mut child = operator
        .command(&["secret", "set", "shop", "db-password"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"pw\n").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    operator.ok(&["deploy", "shop"]);
    let now = podman.id_of("shop-api").unwrap();
    assert_ne!(now, running);
    let env = operator.ok(&["exec", "shop/api", "--", "sh", "-c", "echo $DB_PASSWORD"]);
    assert_eq!(env.stdout, "pw\n");
}
