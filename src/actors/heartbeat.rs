//! Heartbeat: proof that the actor tree answers, for systemd's watchdog.
//! Every `every` it sends a cheap message through the mailboxes of the
//! long-lived actors (registry, runtime, watch, directory); when all have
//! answered, the beat is `Alive` (the agent pings systemd). A beat still
//! waiting when the next is due is `Late`: no ping, a warning, and one
//! `watchdog-late` event by mcp-agent per late stretch, so systemd restarts
//! an agent whose tree stays wedged past WatchdogSec. The heartbeat runs on
//! the actix system itself: a blocked event loop stops it too.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, MessageResult, WrapFuture,
};

use super::registry::{AddEvent, Ping as RegistryPing};
use super::{AgentHandles, RuntimeActor, ServiceDirectory, WatchActor};
use crate::registry::AGENT;

/// Answered at once by an actor whose mailbox is being handled.
#[derive(Debug, Clone)]
pub struct Ping;

impl Message for Ping {
    type Result = ();
}

macro_rules! answers_ping {
    ($($actor:ty),*) => {$(
        impl Handler<Ping> for $actor {
            type Result = MessageResult<Ping>;
            fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
                MessageResult(())
            }
        }
    )*};
}

answers_ping!(RuntimeActor, WatchActor, ServiceDirectory);

/// What one beat found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Beat {
    /// Every actor answered the last beat.
    Alive,
    /// Some did not, in time: which, and for how long.
    Late(String),
}

/// Told of every beat (the agent's: a watchdog ping when alive).
pub type OnBeat = Arc<dyn Fn(&Beat) + Send + Sync>;

pub struct Heartbeat {
    handles: AgentHandles,
    every: Duration,
    on_beat: OnBeat,
    /// The actors that have not answered the beat in flight yet.
    waiting: BTreeSet<&'static str>,
    /// Numbers beats, so an answer to one from before a restart is ignored.
    beat: u64,
    /// Since when beats are late (one event per late stretch).
    late_since: Option<Instant>,
}

/// Starts the heartbeat under supervision: a beat every `every`.
pub fn start(handles: &AgentHandles, every: Duration, on_beat: OnBeat) -> Addr<Heartbeat> {
    handles.peers.supervise(
        "Heartbeat",
        Heartbeat {
            handles: handles.clone(),
            every,
            on_beat,
            waiting: BTreeSet::new(),
            beat: 0,
            late_since: None,
        },
    )
}

impl Heartbeat {
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.waiting.is_empty() {
            self.send_beat(ctx);
        } else {
            self.late();
        }
    }

    fn send_beat(&mut self, ctx: &mut Context<Self>) {
        self.beat += 1;
        let beat = self.beat;
        let peers = &self.handles.peers;
        let registry = peers.registry.clone();
        let runtime = peers.runtime.clone();
        let watch = peers.watch.clone();
        let directory = self.handles.directory.clone();
        type Answer = std::pin::Pin<Box<dyn std::future::Future<Output = bool>>>;
        let pings: [(&'static str, Answer); 4] = [
            (
                "RegistryActor",
                Box::pin(async move {
                    match registry.send(RegistryPing {}).await {
                        Ok(Ok(())) => true,
                        // Its thread answered: it is not wedged.
                        Ok(Err(e)) => {
                            tracing::warn!("the registry answered the heartbeat with: {e}");
                            true
                        }
                        Err(_) => false,
                    }
                }),
            ),
            (
                "RuntimeActor",
                Box::pin(async move { runtime.send(Ping).await.is_ok() }),
            ),
            (
                "WatchActor",
                Box::pin(async move { watch.send(Ping).await.is_ok() }),
            ),
            (
                "ServiceDirectory",
                Box::pin(async move { directory.send(Ping).await.is_ok() }),
            ),
        ];
        for (name, answer) in pings {
            self.waiting.insert(name);
            ctx.spawn(answer.into_actor(self).map(move |ok, act, _| {
                // An actor that cannot answer (gone for good) stays waited
                // for: the next tick reports it late.
                if ok && act.beat == beat {
                    act.answered(name);
                }
            }));
        }
    }

    fn answered(&mut self, name: &'static str) {
        self.waiting.remove(name);
        if !self.waiting.is_empty() {
            return;
        }
        if let Some(since) = self.late_since.take() {
            tracing::info!(
                "the actor tree answers again after {:.1}s",
                since.elapsed().as_secs_f64()
            );
        }
        (self.on_beat)(&Beat::Alive);
    }

    fn late(&mut self) {
        let first = self.late_since.is_none();
        let since = *self.late_since.get_or_insert_with(Instant::now);
        let what: Vec<&str> = self.waiting.iter().copied().collect();
        let why = format!(
            "{} did not answer the heartbeat within {:.1}s",
            what.join(", "),
            (self.every + since.elapsed()).as_secs_f64()
        );
        tracing::warn!("{why}: withholding systemd's watchdog ping");
        if first {
            // Queued behind whatever holds the registry, when that is what
            // is late: recorded if it ever answers again.
            self.handles.peers.registry.do_send(AddEvent {
                service: String::new(),
                component: String::new(),
                kind: "watchdog-late".to_string(),
                detail: format!(
                    "{why}; systemd's watchdog is not pinged until every actor answers, and \
                     restarts the agent after WatchdogSec"
                ),
                by: AGENT.to_string(),
            });
        }
        (self.on_beat)(&Beat::Late(why))
    }
}

impl Actor for Heartbeat {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.send_beat(ctx);
        ctx.run_interval(self.every, |act, ctx| act.tick(ctx));
    }
}

impl actix::Supervised for Heartbeat {
    /// A fresh beat: answers to the old one are ignored.
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.waiting.clear();
        self.beat += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::mpsc;

    use super::*;
    use crate::actors::registry::{Events, Hold};
    use crate::actors::tests::{eventually, harness};
    use crate::runtime::fake::FakeRuntime;

    const DEADLINE: Duration = Duration::from_secs(3);

    async fn next(beats: &mut mpsc::UnboundedReceiver<Beat>) -> Beat {
        tokio::time::timeout(DEADLINE, beats.recv())
            .await
            .expect("a beat within the deadline")
            .expect("the heartbeat is running")
    }

    /// Alive while every actor answers; late, and never alive, while the
    /// registry's thread is held; alive again once it is let go, with one
    /// `watchdog-late` event for the stretch.
    // Holding the lock across awaits is the point: it stops the registry's
    // thread, not this one.
    #[allow(clippy::await_holding_lock)]
    #[actix::test]
    async fn beats_only_while_the_tree_answers() {
        let h = harness(FakeRuntime::with_images(&[]));
        let (tx, mut beats) = mpsc::unbounded_channel();
        start(
            &h.handles,
            Duration::from_millis(50),
            Arc::new(move |b: &Beat| {
                let _ = tx.send(b.clone());
            }),
        );
        assert_eq!(next(&mut beats).await, Beat::Alive);
        assert_eq!(next(&mut beats).await, Beat::Alive);

        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        h.handles
            .peers
            .registry
            .do_send(Hold { gate: gate.clone() });
        // A beat answered before the hold may still come in; then late.
        let why = loop {
            match next(&mut beats).await {
                Beat::Alive => continue,
                Beat::Late(why) => break why,
            }
        };
        assert!(why.starts_with("RegistryActor did not answer"), "{why}");
        // Later beats are late too: nothing pings while it is held.
        for _ in 0..3 {
            assert!(matches!(next(&mut beats).await, Beat::Late(_)));
        }

        drop(held);
        let mut late_after = 0;
        while let Beat::Late(_) = next(&mut beats).await {
            late_after += 1;
            assert!(late_after < 20, "never alive again");
        }
        let late_events = eventually("the watchdog-late event", DEADLINE, || async {
            let events = h
                .handles
                .peers
                .registry
                .send(Events {
                    service: None,
                    by: Some(AGENT.to_string()),
                    limit: 100,
                })
                .await
                .unwrap()
                .unwrap();
            let late: Vec<_> = events
                .into_iter()
                .filter(|e| e.kind == "watchdog-late")
                .collect();
            (!late.is_empty())
                .then_some(late)
                .ok_or("none yet".to_string())
        })
        .await;
        assert_eq!(late_events.len(), 1, "{late_events:?}");
        assert!(
            late_events[0].detail.contains("RegistryActor"),
            "{late_events:?}"
        );
    }
}
