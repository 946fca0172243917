//! The route hook (`[routes] hook`): a command run without a shell when a
//! route is added or removed, with the route as one JSON object on its
//! standard input, killed after its timeout. What a proxy or a DNS updater
//! in front of the node listens to.

use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::Route;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Add,
    Remove,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Remove => "remove",
        }
    }
}

/// What the hook reads: the action, the node, and the route's fields.
#[derive(Debug, Serialize)]
pub struct HookInput<'a> {
    pub action: Action,
    pub node: &'a str,
    #[serde(flatten)]
    pub route: &'a Route,
}

/// Runs `command` with `input` on its standard input; Err says why it failed.
pub async fn run(
    command: &[String],
    timeout: Duration,
    input: &HookInput<'_>,
) -> Result<(), String> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| "the route hook is empty".to_string())?;
    let mut json = serde_json::to_vec(input).map_err(|e| format!("route as JSON: {e}"))?;
    json.push(b'\n');
    let mut child = tokio::process::Command::new(program)
        .args(args)
        // The hook is not the agent: it must not speak to systemd in its name.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let finished = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A hook that does not read its input is its own business.
            let _ = stdin.write_all(&json).await;
        }
        child.wait_with_output().await
    };
    match tokio::time::timeout(timeout, finished).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = said.trim();
            // The end of what it said: where the reason usually is.
            let start = said.char_indices().rev().nth(199).map_or(0, |(i, _)| i);
            let tail = &said[start..];
            Err(if tail.is_empty() {
                format!("{program} exited with {}", out.status)
            } else {
                format!("{program} exited with {}: {tail}", out.status)
            })
        }
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        // Dropping the future dropped the child: kill_on_drop killed it.
        Err(_) => Err(format!(
            "{program} did not finish within {}s and was killed",
            timeout.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RouteMode;

    fn route() -> Route {
        Route {
            service: "svc".into(),
            component: "api".into(),
            name: "http".into(),
            address: "127.0.0.1".into(),
            host_port: 10000,
            container_port: 8080,
            hostname: Some("api.example.com".into()),
            mode: RouteMode::L7,
            env: "PORT_HTTP".into(),
            allocated_at_ms: 1,
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn the_hook_reads_the_route_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got");
        let r = route();
        let input = HookInput {
            action: Action::Add,
            node: "n1",
            route: &r,
        };
        let script = format!("cat > {}", out.display());
        run(&sh(&script), Duration::from_secs(10), &input)
            .await
            .unwrap();
        let got: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(got["action"], "add");
        assert_eq!(got["node"], "n1");
        assert_eq!(got["host_port"], 10000);
        assert_eq!(got["container_port"], 8080);
        assert_eq!(got["mode"], "l7");
        assert_eq!(got["hostname"], "api.example.com");
        assert_eq!(got["env"], "PORT_HTTP");
    }

    #[tokio::test]
    async fn failures_and_timeouts_say_so() {
        let r = route();
        let input = HookInput {
            action: Action::Remove,
            node: "n1",
            route: &r,
        };
        let err = run(
            &sh("echo nope >&2; exit 3"),
            Duration::from_secs(10),
            &input,
        )
        .await
        .unwrap_err();
        assert!(
            err.contains("exit status: 3") && err.contains("nope"),
            "{err}"
        );
        let err = run(&sh("exec sleep 30"), Duration::from_millis(300), &input)
            .await
            .unwrap_err();
        assert!(err.contains("was killed"), "{err}");
        let err = run(
            &["/nonexistent/hook".to_string()],
            Duration::from_secs(1),
            &input,
        )
        .await
        .unwrap_err();
        assert!(err.contains("cannot run /nonexistent/hook"), "{err}");
    }
}
