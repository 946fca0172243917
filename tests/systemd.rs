//! The real `mcp-agent` under systemd's notification protocol
//! (`Type=notify`, `WatchdogSec=`): the test plays systemd's side, a unix
//! datagram socket named by NOTIFY_SOCKET, and WATCHDOG_USEC. No podman:
//! readiness and the heartbeat do not depend on the runtime (the agent logs
//! that its socket is missing and serves).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::Agent;

const DEADLINE: Duration = Duration::from_secs(20);

/// systemd's end of the notification socket: every line received, in order.
struct NotifySocket {
    dir: tempfile::TempDir,
    socket: UnixDatagram,
    lines: Vec<String>,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::Builder::new()
            .prefix("mcp-notify-")
            .tempdir()
            .unwrap();
        let socket = UnixDatagram::bind(dir.path().join("notify")).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        NotifySocket {
            dir,
            socket,
            lines: Vec::new(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("notify")
    }

    /// Takes in whatever arrived, without waiting beyond the read timeout.
    fn receive(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            self.lines
                .extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
        }
    }

    /// Receives until `done` holds for the lines so far; panics after
    /// [`DEADLINE`].
    fn until(&mut self, what: &str, done: impl Fn(&[String]) -> bool) {
        let start = Instant::now();
        loop {
            self.receive();
            if done(&self.lines) {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; received: {:?}",
                self.lines
            );
        }
    }
}

fn position(lines: &[String], line: &str) -> Option<usize> {
    lines.iter().position(|l| l == line)
}

/// How many WATCHDOG=1 came after the first READY=1.
fn pings_after_ready(lines: &[String]) -> usize {
    position(lines, "READY=1").map_or(0, |ready| {
        lines[ready..].iter().filter(|l| *l == "WATCHDOG=1").count()
    })
}

/// An agent (local auth, no runtime) notifying `notify`, watched by
/// systemd's watchdog when `watchdog_usec` is given.
fn agent(notify: &NotifySocket, watchdog_usec: Option<&str>) -> Agent {
    let mut agent = Agent::new("n1", None, &["--auth", "local"]);
    agent.set_env("NOTIFY_SOCKET", &notify.path().display().to_string());
    if let Some(usec) = watchdog_usec {
        agent.set_env("WATCHDOG_USEC", usec);
    }
    let no_runtime = agent.dir.path().join("no-podman.sock");
    agent.spawn(&no_runtime);
    agent
}

#[test]
fn ready_once_serving_then_watchdog_pings_from_the_actor_tree_and_stopping() {
    let mut notify = NotifySocket::bind();
    let mut agent = agent(&notify, Some("1000000"));
    notify.until("READY=1 and then two WATCHDOG=1", |lines| {
        pings_after_ready(lines) >= 2
    });
    let status = format!("STATUS=serving on 127.0.0.1:{}", agent.port);
    let ready = position(&notify.lines, "READY=1").unwrap();
    assert_eq!(
        notify.lines.get(ready + 1),
        Some(&status),
        "{:?}",
        notify.lines
    );
    assert!(
        agent
            .log()
            .contains("heartbeat through the actor tree every 500ms"),
        "{}",
        agent.log()
    );

    let (exit, _) = agent.terminate(Duration::from_secs(10));
    assert!(exit.success(), "{exit:?}");
    notify.until("STOPPING=1", |lines| {
        position(lines, "STOPPING=1").is_some()
    });
    let stopping = position(&notify.lines, "STOPPING=1").unwrap();
    assert!(stopping > ready);
}

/// Without WATCHDOG_USEC the agent still says READY=1, and never pings.
/// The clock is a second agent that is watched: three of its pings after
/// the first agent's READY=1 prove that time for a ping went by; the
/// first agent's STOPPING=1 then closes what it sent.
#[test]
fn without_a_watchdog_ready_and_no_pings() {
    let mut plain_notify = NotifySocket::bind();
    let mut watched_notify = NotifySocket::bind();
    let mut plain = agent(&plain_notify, None);
    let _watched = agent(&watched_notify, Some("1000000"));
    plain_notify.until("READY=1 of the agent without a watchdog", |lines| {
        position(lines, "READY=1").is_some()
    });
    watched_notify.until("READY=1 of the watched agent", |lines| {
        position(lines, "READY=1").is_some()
    });
    let before = watched_notify.lines.len();
    watched_notify.until("three pings of the watched agent", |lines| {
        lines[before..]
            .iter()
            .filter(|l| *l == "WATCHDOG=1")
            .count()
            >= 3
    });

    let (exit, _) = plain.terminate(Duration::from_secs(10));
    assert!(exit.success(), "{exit:?}");
    plain_notify.until("STOPPING=1", |lines| {
        position(lines, "STOPPING=1").is_some()
    });
    assert!(
        !plain_notify.lines.iter().any(|l| l == "WATCHDOG=1"),
        "{:?}",
        plain_notify.lines
    );
    assert!(
        !plain.log().contains("heartbeat through the actor tree"),
        "{}",
        plain.log()
    );
}
