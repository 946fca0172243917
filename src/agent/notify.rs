//! systemd's service notifications (`sd_notify`, `Type=notify`): READY=1
//! once the agent serves, STOPPING=1 when it shuts down, STATUS= lines,
//! and WATCHDOG=1 each time the actor tree's heartbeat
//! (`actors::heartbeat`) came back whole. Without NOTIFY_SOCKET (not under
//! systemd, or another `Type=`) every call does nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::actors::heartbeat::{Beat, OnBeat};

/// The agent serves: `status` says where.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// The agent is shutting down: `status` says what it waits for.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// How often the heartbeat must beat for systemd's watchdog: half its
/// interval (WATCHDOG_USEC), as sd_watchdog_enabled(3) advises; None when
/// systemd does not watch this process.
pub fn heartbeat_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .map(|usec| usec / 2)
        .filter(|half| !half.is_zero())
}

/// What the heartbeat's beats tell systemd: a watchdog ping when the tree
/// answered, the reason in STATUS= when it did not.
pub fn on_beat() -> OnBeat {
    let late = Arc::new(AtomicBool::new(false));
    Arc::new(move |beat: &Beat| match beat {
        Beat::Alive => {
            if late.swap(false, Ordering::Relaxed) {
                send(&[NotifyState::Watchdog, NotifyState::Status("serving")]);
            } else {
                send(&[NotifyState::Watchdog]);
            }
        }
        Beat::Late(why) => {
            late.store(true, Ordering::Relaxed);
            send(&[NotifyState::Status(why)]);
        }
    })
}

/// Sends to systemd; a failure is logged once (it would repeat with every
/// ping), and changes nothing else: the agent serves either way.
fn send(states: &[NotifyState]) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = sd_notify::notify(states) {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!("cannot notify systemd (NOTIFY_SOCKET): {e}");
        }
    }
}
