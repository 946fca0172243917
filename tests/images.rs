//! Images end to end, against podman and a real registry (Debian's
//! `docker-registry`) with htpasswd auth on loopback: pulls with the node's
//! credentials (and refused without), `pull = "always"` following a moving
//! tag, a tag re-pointed on the node shown by `diff` and redeployed, the
//! image ids in `list` and `ps -o wide`, pinned images, and pruning.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{eventually, free_port, run_ok, wait_for, Agent, Operator, Podman};

const USER: &str = "mcp";
const PASSWORD: &str = "s3cret-registry";

/// A registry on a loopback port that wants a password.
struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Registry {
    fn start() -> Registry {
        let mut registry = Registry::prepare();
        registry.spawn(USER, PASSWORD);
        registry
    }

    /// Its directory, port and configuration; not started.
    fn prepare() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: mcp-test\n    path: {}\n",
            dir.path().join("data").display(),
            dir.path().join("htpasswd").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        std::fs::write(
            dir.path().join("registries.conf"),
            format!("[[registry]]\nlocation = \"127.0.0.1:{port}\"\ninsecure = true\n"),
        )
        .unwrap();
        Registry {
            dir,
            port,
            child: None,
        }
    }

    /// Starts it, with one account.
    fn spawn(&mut self, user: &str, password: &str) {
        let htpasswd = run_ok(Command::new("htpasswd").args(["-Bbn", user, password]));
        std::fs::write(self.dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
        let log = std::fs::File::create(self.dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry (scripts/setup.sh installs it)");
        self.child = Some(child);
        let port = self.port;
        wait_for("the registry to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("registries.conf")
    }

    fn image(&self, name: &str) -> String {
        format!("127.0.0.1:{}/mcp/{name}", self.port)
    }

    /// `local` (an image in podman's storage) pushed as `remote`.
    fn push(&self, podman: &Podman, local: &str, remote: &str) {
        self.push_as(podman, (USER, PASSWORD), local, remote);
    }

    fn push_as(&self, podman: &Podman, (user, password): (&str, &str), local: &str, remote: &str) {
        run_ok(podman.cmd().args([
            "push",
            "--quiet",
            "--creds",
            &format!("{user}:{password}"),
            local,
            &format!("docker://{remote}"),
        ]));
    }

    /// An agent config with this registry's login.
    fn agent_config(&self, extra: &str) -> String {
        let password = self.dir.path().join("password");
        std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
        format!(
            "[[registries]]\nhost = \"127.0.0.1:{}\"\nusername = \"{USER}\"\npassword_file = \"{}\"\n{extra}",
            self.port,
            password.display()
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A new image (its own id) from the test image's files, as `name`.
fn new_image(podman: &Podman, name: &str, version: &str) -> String {
    run_ok(
        podman
            .cmd()
            .args(["import", "--quiet", "--change"])
            .arg(format!("LABEL version={version}"))
            .arg(common::test_image_tarball())
            .arg(name),
    );
    image_id(podman, name).unwrap()
}

fn image_id(podman: &Podman, name: &str) -> Option<String> {
    let out = podman
        .cmd()
        .args(["image", "inspect", "--format", "{{.Id}}", name])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| with_prefix(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Podman's CLI shows bare hex ids, its API (and so MCP) `sha256:...`.
fn with_prefix(id: &str) -> String {
    format!("sha256:{}", id.trim_start_matches("sha256:"))
}

fn app(image: &str, pull: &str) -> String {
    format!(
        r#"name = "app"
node = "n1"

[[components]]
name  = "web"
image = "{image}"
pull  = "{pull}"
cmd   = ["/bin/busybox", "sleep", "3600"]
"#
    )
}

fn container_image_id(podman: &Podman) -> String {
    with_prefix(&podman.inspect("app-web", "{{.Image}}").unwrap_or_default())
}

fn listed_image_id(operator: &Operator) -> String {
    let list = operator.ok(&["list", "-o", "json"]).json();
    list[0]["services"][0]["components"][0]["image_id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn setup(registry: &Registry) -> Podman {
    Podman::start_with_env(&[(
        "CONTAINERS_REGISTRIES_CONF",
        registry.conf().to_str().unwrap(),
    )])
}

#[test]
fn a_registry_is_pulled_from_with_the_nodes_credentials_and_refused_without() {
    let registry = Registry::start();
    let podman = setup(&registry);
    let remote = format!("{}:1", registry.image("app"));
    new_image(&podman, "localhost/app-src:1", "1");
    registry.push(&podman, "localhost/app-src:1", &remote);
    {
        let agent = Agent::start(&podman, "n1");
        let operator = Operator::new(&[&agent]);
        operator.define("app", &app(&remote, "missing"));
        let run = operator.run(&["deploy", "app"]);
        assert_ne!(run.code, 0, "{}", run.stdout);
        assert!(
            run.stdout.contains("pull"),
            "{}\n{}",
            run.stdout,
            run.stderr
        );
        assert_eq!(podman.state_of("app-web"), None);
        assert_eq!(image_id(&podman, &remote), None);
    }
    let agent = Agent::start_with_config(&podman, "n1", Some(&registry.agent_config("")));
    let operator = Operator::new(&[&agent]);
    operator.define("app", &app(&remote, "missing"));
    operator.ok(&["deploy", "app"]);
    assert_eq!(podman.state_of("app-web").as_deref(), Some("running"));
    let pulled = image_id(&podman, &remote).expect("the image was pulled");
    assert_eq!(container_image_id(&podman), pulled);
    assert_eq!(listed_image_id(&operator), pulled);
    // The agent's log never holds the password.
    assert!(!agent.log().contains(PASSWORD));
    // `ps -o wide` shows the image id; `node` the images' disk use.
    let wide = operator.ok(&["ps", "-o", "wide"]).stdout;
    assert!(
        wide.contains("IMAGE ID") && wide.contains(&pulled[7..19]),
        "{wide}"
    );
    let node = operator.ok(&["node"]).stdout;
    assert!(node.contains("IMAGES"), "{node}");
}

/// `use_caller_token`: the registry takes the caller's name and MCIAS token
/// (here the local-mode token, whose caller is `local-operator`).
#[test]
fn a_registry_that_takes_the_callers_token_is_pulled_from_with_it() {
    let mut registry = Registry::prepare();
    let podman = setup(&registry);
    let config = format!(
        "[[registries]]\nhost = \"127.0.0.1:{}\"\nuse_caller_token = true\n",
        registry.port
    );
    let agent = Agent::start_with_config(&podman, "n1", Some(&config));
    let token = agent.token();
    registry.spawn("local-operator", &token);
    let remote = format!("{}:1", registry.image("app"));
    new_image(&podman, "localhost/app-src:1", "1");
    registry.push_as(
        &podman,
        ("local-operator", &token),
        "localhost/app-src:1",
        &remote,
    );
    assert_eq!(image_id(&podman, &remote), None);
    let operator = Operator::new(&[&agent]);
    operator.define("app", &app(&remote, "missing"));
    operator.ok(&["deploy", "app"]);
    assert_eq!(podman.state_of("app-web").as_deref(), Some("running"));
    assert!(image_id(&podman, &remote).is_some());
    assert!(!agent.log().contains(&token));
}

#[test]
fn pull_always_follows_a_moving_tag_and_a_retagged_image_is_a_planned_change() {
    let registry = Registry::start();
    let podman = setup(&registry);
    let live = format!("{}:live", registry.image("app"));
    let v1 = new_image(&podman, "localhost/app-src:1", "1");
    let v2 = new_image(&podman, "localhost/app-src:2", "2");
    registry.push(&podman, "localhost/app-src:1", &live);
    let agent = Agent::start_with_config(&podman, "n1", Some(&registry.agent_config("")));
    let operator = Operator::new(&[&agent]);
    operator.define("app", &app(&live, "always"));
    operator.ok(&["deploy", "app"]);
    assert_eq!(container_image_id(&podman), v1);
    let first = podman.id_of("app-web").unwrap();
    // The tag moves in the registry; `always` follows it.
    registry.push(&podman, "localhost/app-src:2", &live);
    let run = operator.ok(&["deploy", "app"]);
    assert!(run.stdout.contains("pulled"), "{}", run.stdout);
    assert_eq!(container_image_id(&podman), v2);
    assert_ne!(podman.id_of("app-web").unwrap(), first);
    assert_eq!(listed_image_id(&operator), v2);
    // With `missing`, the tag re-pointed on the node is a change in the plan.
    operator.define("app", &app(&live, "missing"));
    operator.ok(&["deploy", "app"]);
    run_ok(podman.cmd().args(["tag", "localhost/app-src:1", &live]));
    let plan = operator.ok(&["diff", "app", "-o", "json"]).json();
    let fields: Vec<&str> = plan
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"image id"), "{plan}");
    operator.ok(&["deploy", "app"]);
    assert_eq!(container_image_id(&podman), v1);
    assert_eq!(
        operator.ok(&["diff", "app", "-o", "json"]).json(),
        serde_json::json!([])
    );
}

#[test]
fn pinned_images_are_required_where_the_node_says_so() {
    let podman = Podman::start();
    let agent = Agent::start_with_config(
        &podman,
        "n1",
        Some("[policy]\nrequire_pinned_images = true\n"),
    );
    let operator = Operator::new(&[&agent]);
    operator.define("app", &app(common::TEST_IMAGE, "never"));
    let run = operator.fails(&["deploy", "app"], "require_pinned_images");
    assert!(run.stderr.contains("has the tag latest"), "{}", run.stderr);
    assert_eq!(podman.state_of("app-web"), None);
    new_image(&podman, "localhost/app-src:1.0", "1");
    operator.define("app", &app("localhost/app-src:1.0", "never"));
    let run = operator.ok(&["deploy", "app"]);
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    // `never` and an image the node lacks: a clear error, nothing touched.
    operator.define("app", &app("localhost/absent:1.0", "never"));
    let run = operator.run(&["deploy", "app"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stdout.contains("pull policy is never"),
        "{}",
        run.stdout
    );
    assert_eq!(podman.state_of("app-web").as_deref(), Some("running"));
}

#[test]
fn images_nothing_refers_to_are_pruned_with_an_event() {
    let podman = Podman::start();
    let theirs = new_image(&podman, "localhost/theirs:1", "0");
    let v1 = new_image(&podman, "localhost/app-src:1", "1");
    let v2 = new_image(&podman, "localhost/app-src:2", "2");
    let agent = Agent::start_with_config(
        &podman,
        "n1",
        Some("[images]\nprune = true\nprune_interval_secs = 1\n"),
    );
    let operator = Operator::new(&[&agent]);
    operator.define("app", &app("localhost/app-src:1", "never"));
    operator.ok(&["deploy", "app"]);
    operator.define("app", &app("localhost/app-src:2", "never"));
    operator.ok(&["deploy", "app"]);
    // v1 is the rollback target, v2 runs: both kept. Gone and purged, they
    // are referred to by nothing.
    std::fs::remove_file(operator.services_dir().join("app.toml")).unwrap();
    operator.ok(&["undeploy", "app", "--node", "n1"]);
    operator.ok(&["purge"]);
    let pruned = eventually("two image-pruned events", Duration::from_secs(30), || {
        let events = operator.ok(&["events", "-o", "json"]).json();
        let pruned: Vec<String> = events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "image-pruned")
            .map(|e| e["detail"].as_str().unwrap().to_string())
            .collect();
        (pruned.len() == 2).then_some(pruned)
    });
    assert!(
        pruned
            .iter()
            .any(|d| d.contains("deployed as localhost/app-src:1")),
        "{pruned:?}"
    );
    assert_eq!(image_id(&podman, "localhost/app-src:1"), None);
    assert_eq!(image_id(&podman, "localhost/app-src:2"), None);
    assert_eq!(
        image_id(&podman, "localhost/theirs:1").as_deref(),
        Some(theirs.as_str())
    );
    assert_ne!(v1, v2);
}
