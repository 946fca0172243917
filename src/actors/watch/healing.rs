//! Reconciliation: the watch puts a drifting component back on its own
//! (services with `reconcile`), and restarts an unhealthy one
//! (`on_unhealthy = "restart"`). Attempts go through the service's actor
//! like any operation, as `mcp-agent`; they back off per component (1 s
//! doubling to 5 min, never sooner than the grace period) and stop after
//! `flap_exits` attempts within the flapping window, with a
//! `reconcile-gave-up` event and an alert. An operator's deploy, start,
//! stop or rollback of the component starts it over.

use actix::SpawnHandle;

use super::*;
use crate::actors::directory::ServiceFor;
use crate::actors::service::Reconcile;
use crate::actors::ServiceDirectory;
use crate::names::Name;

const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_LAST: Duration = Duration::from_secs(300);

/// A component's reconciliation so far.
#[derive(Default)]
pub(super) struct Healing {
    /// When attempts were made (Unix ms), within the flapping window.
    attempts: VecDeque<i64>,
    scheduled: Option<SpawnHandle>,
    in_flight: bool,
    gave_up: bool,
}

/// The tree's ServiceDirectory, once it exists (it is built after the watch).
#[derive(Debug, Clone)]
pub struct AttachDirectory(pub Addr<ServiceDirectory>);

impl Message for AttachDirectory {
    type Result = ();
}

impl Handler<AttachDirectory> for WatchActor {
    type Result = ();
    fn handle(&mut self, msg: AttachDirectory, _: &mut Context<Self>) {
        self.directory = Some(msg.0);
    }
}

/// An operator acted on the component: its reconciliation and flapping
/// count start over.
#[derive(Debug, Clone)]
pub struct ResetHealing {
    pub key: Key,
}

impl Message for ResetHealing {
    type Result = ();
}

impl Handler<ResetHealing> for WatchActor {
    type Result = ();
    fn handle(&mut self, msg: ResetHealing, ctx: &mut Context<Self>) {
        if let Some(h) = self.healing.remove(&msg.key) {
            if let Some(handle) = h.scheduled {
                ctx.cancel_future(handle);
            }
        }
        self.exits.remove(&msg.key);
    }
}

/// How long before attempt number `n` (0-based) of a component.
fn delay(n: usize, grace: Duration) -> Duration {
    let doubled = BACKOFF_FIRST.saturating_mul(1u32 << n.min(16) as u32);
    doubled.min(BACKOFF_LAST).max(grace)
}

impl WatchActor {
    /// Whether `service` (its registry row) is reconciled.
    pub(super) fn reconciles(&self, reconcile: Option<bool>) -> bool {
        self.directory.is_some() && reconcile.unwrap_or(self.settings.reconcile)
    }

    /// Schedules the next attempt at putting `key` back (`restart`: its
    /// unhealthy container), unless one is pending or it was given up. Past
    /// the limit it gives up instead, recording why.
    pub(super) fn heal(&mut self, key: Key, why: String, restart: bool, ctx: &mut Context<Self>) {
        let window_ms = self.settings.flap_window.as_millis() as i64;
        let now = now_ms();
        let h = self.healing.entry(key.clone()).or_default();
        if h.gave_up || h.scheduled.is_some() || h.in_flight {
            return;
        }
        while h.attempts.front().is_some_and(|t| now - t > window_ms) {
            h.attempts.pop_front();
        }
        if h.attempts.len() >= self.settings.flap_exits.max(1) {
            let detail = self.give_up(&key, &why);
            self.record_gave_up(key, detail, ctx);
            return;
        }
        let wait = delay(h.attempts.len(), self.settings.reconcile_grace);
        let at = key.clone();
        let handle = ctx.run_later(wait, move |act, ctx| act.attempt(at, why, restart, ctx));
        if let Some(h) = self.healing.get_mut(&key) {
            h.scheduled = Some(handle);
        }
    }

    /// Drift cleared: a pending attempt is not needed.
    pub(super) fn cancel_heal(&mut self, key: &Key, ctx: &mut Context<Self>) {
        if let Some(handle) = self.healing.get_mut(key).and_then(|h| h.scheduled.take()) {
            ctx.cancel_future(handle);
        }
    }

    /// Marks `key` given up; the event's detail.
    pub(super) fn give_up(&mut self, key: &Key, why: &str) -> String {
        let h = self.healing.entry(key.clone()).or_default();
        h.gave_up = true;
        format!(
            "{why}; {} attempt(s) within {}s did not hold: left alone until a deploy, start or \
             stop of it",
            h.attempts.len(),
            self.settings.flap_window.as_secs()
        )
    }

    /// Records `reconcile-gave-up` and its alert, in order.
    fn record_gave_up(&mut self, key: Key, detail: String, ctx: &mut Context<Self>) {
        let sent = self.alert(&key, "reconcile-gave-up", &detail, ctx);
        let registry = self.registry.clone();
        let record = async move {
            let (service, component) = &key;
            let agent = crate::registry::AGENT;
            record_event_by(
                &registry,
                service,
                component,
                "reconcile-gave-up",
                &detail,
                agent,
            )
            .await;
            if let Some(sent) = sent {
                record_event_by(&registry, service, component, "alert-sent", &sent, agent).await;
            }
        };
        ctx.wait(record.into_actor(self));
    }

    /// One attempt, through the service's actor; a failed one is followed
    /// by the next (nothing else would bring it: no event comes of it).
    fn attempt(&mut self, key: Key, why: String, restart: bool, ctx: &mut Context<Self>) {
        if let Some(h) = self.healing.get_mut(&key) {
            h.scheduled = None;
        }
        let (Some(directory), Ok(service), Ok(component)) = (
            self.directory.clone(),
            Name::parse(&key.0),
            Name::parse(&key.1),
        ) else {
            return;
        };
        if self.is_busy(&key) {
            // An operation is on it: look again after it, if still needed.
            let again = key.clone();
            let handle = ctx.run_later(self.settings.reconcile_grace, move |act, ctx| {
                act.attempt(again, why, restart, ctx)
            });
            if let Some(h) = self.healing.get_mut(&key) {
                h.scheduled = Some(handle);
            }
            return;
        }
        let h = self.healing.entry(key.clone()).or_default();
        h.in_flight = true;
        h.attempts.push_back(now_ms());
        let asked = why.clone();
        let send = async move {
            let addr = directory.send(ServiceFor { name: service }).await.ok()?;
            let reconcile = Reconcile {
                component,
                why: asked,
                restart,
            };
            addr.send(reconcile).await.ok().flatten()
        };
        ctx.spawn(send.into_actor(self).map(move |outcome, act, ctx| {
            if let Some(h) = act.healing.get_mut(&key) {
                h.in_flight = false;
            }
            // Its reconcile-failed event says why.
            if outcome.is_some_and(|o| o.result.is_err()) {
                act.heal(key, why, restart, ctx);
            }
        }));
    }
}
