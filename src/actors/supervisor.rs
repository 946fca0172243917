//! Supervision. Every actor of the tree but the RegistryActor (a SyncActor,
//! see registry.rs) runs under [`supervise`]: when it stops or panics, it is
//! restarted on the same mailbox, so every `Addr` to it stays good and the
//! messages queued for it are handled by the new incarnation. Its
//! `Supervised::restarting` rebuilds its state (from the registry where it
//! has any); the handler that panicked answers its caller with a mailbox
//! error, nothing more.
//!
//! actix's own `Supervisor` restarts an actor that stops, but a panic in a
//! handler unwinds through it and kills the actor for good. This one catches
//! the panic around each poll of the actor's context and restarts it like a
//! stop. An actor that keeps panicking (more than [`MAX_RESTARTS`] within
//! [`RESTART_WINDOW`]) is given up, and the agent is told to exit with an
//! error ([`Fatal`]), so that systemd restarts the whole process rather than
//! leave it running half-dead.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::dev::ContextFut;
use actix::{Actor, Addr, AsyncContext, Context, Supervised};

/// More restarts than this within [`RESTART_WINDOW`] and the actor is
/// given up (and the agent exits).
pub const MAX_RESTARTS: usize = 10;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// A failure the agent cannot carry on with: the registry cannot be
/// reopened, an actor keeps panicking. The agent exits non-zero on it.
#[derive(Clone)]
pub struct Fatal {
    tx: Arc<tokio::sync::watch::Sender<Option<String>>>,
}

impl Default for Fatal {
    fn default() -> Self {
        Fatal {
            tx: Arc::new(tokio::sync::watch::channel(None).0),
        }
    }
}

impl Fatal {
    pub fn raise(&self, why: String) {
        tracing::error!("fatal: {why}; the agent exits so that it is restarted whole");
        self.tx.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(why);
                true
            } else {
                false
            }
        });
    }

    /// Resolves with the reason once a fatal failure was raised.
    pub async fn raised(&self) -> String {
        let mut rx = self.tx.subscribe();
        let why = match rx.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            // The sender lives in self: unreachable, but never hang on it.
            Err(_) => "the fatal notifier went away".to_string(),
        };
        why
    }
}

/// Called with a description of each restart (for an event).
pub type OnRestart = Arc<dyn Fn(&'static str, &str) + Send + Sync>;

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// Starts `actor` under supervision; `kind` names it in logs and events.
pub fn supervise<A>(
    kind: &'static str,
    fatal: Fatal,
    on_restart: Option<OnRestart>,
    actor: A,
) -> Addr<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    let ctx = Context::new();
    let addr = ctx.address();
    actix_rt::spawn(Supervising {
        fut: ctx.into_future(actor),
        kind,
        fatal,
        on_restart,
        restarts: VecDeque::new(),
    });
    addr
}

struct Supervising<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    fut: ContextFut<A, Context<A>>,
    kind: &'static str,
    fatal: Fatal,
    on_restart: Option<OnRestart>,
    restarts: VecDeque<Instant>,
}

impl<A> Supervising<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    /// Counts a restart; false when the actor must be given up.
    fn may_restart(&mut self, why: &str) -> bool {
        let now = Instant::now();
        self.restarts.push_back(now);
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() > MAX_RESTARTS {
            self.fatal.raise(format!(
                "the {} failed {} times within {}s, the last: {why}",
                self.kind,
                self.restarts.len(),
                RESTART_WINDOW.as_secs()
            ));
            return false;
        }
        tracing::error!(
            actor = self.kind,
            "{why}: restarting it with its state rebuilt"
        );
        if let Some(report) = &self.on_restart {
            report(self.kind, why);
        }
        true
    }
}

impl<A> Future for Supervising<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        // Every field is Unpin (actors are), so is Self.
        let this = self.get_mut();
        loop {
            let polled = catch_unwind(AssertUnwindSafe(|| Pin::new(&mut this.fut).poll(cx)));
            let why = match polled {
                Ok(Poll::Pending) => return Poll::Pending,
                // Stopped: restart, unless nobody can reach it any more (the
                // system is going away).
                Ok(Poll::Ready(())) => format!("the {} stopped", this.kind),
                Err(payload) => format!("the {} panicked: {}", this.kind, panic_message(&*payload)),
            };
            // No address left (the tree is going away): done for good, and
            // not counted as a restart.
            if !this.fut.ctx().connected() {
                return Poll::Ready(());
            }
            if !this.may_restart(&why) || !this.fut.restart() {
                return Poll::Ready(());
            }
        }
    }
}

/// Makes an actor panic (tests of the supervision); every actor kind
/// handles it in test builds.
#[cfg(test)]
#[derive(Debug, Clone)]
pub struct Crash;

#[cfg(test)]
impl actix::Message for Crash {
    type Result = ();
}

/// Schedules a panic in an actor's context, for the tests that show each
/// actor kind is restarted.
#[cfg(test)]
pub fn panic_later<A>(ctx: &mut Context<A>)
where
    A: Actor<Context = Context<A>>,
{
    ctx.run_later(Duration::from_millis(1), |_, _| panic!("a test-made panic"));
}
