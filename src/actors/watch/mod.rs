//! WatchActor: what really runs on the node, continuously. It follows the
//! runtime's event stream (reconnecting with backoff when the runtime goes
//! away) and scans every container on an interval and on demand (`Observe`),
//! to keep observed state, unmanaged containers, drift, flapping and alerts
//! up to date in the registry.
//!
//! Components under an operation (deploy/start/stop) are left alone: the
//! ComponentActor holds a lease (operations.rs) during its work and records the
//! outcome itself, so a deploy's stop-remove-create is never taken for drift.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, ResponseActFuture,
    ResponseFuture, StreamHandler, WrapFuture,
};

use super::registry::{
    AddEvent, ComponentByContainer, GetServiceState, ListServices, RecordDrift, RecordObserved,
    RegistryActor, RemoveUnmanaged, ReplaceUnmanaged, UpsertUnmanaged,
};
use super::runtime::{Inspect, ListContainers, RuntimeActor, SubscribeRuntimeEvents};
use super::AgentError;
use crate::registry::{now_ms, DesiredState, Drift, Observation, ServiceState, UnmanagedRow};
use crate::runtime::{RuntimeError, RuntimeEvent};

mod alert;
mod drift;
mod events;
mod healing;
mod health;
mod scan;
mod status;

pub use alert::{AlertSettings, RaiseAlert};
pub use drift::{drift_of, Reevaluate};
pub use healing::{AttachDirectory, ResetHealing};
pub use scan::{Observe, ObservedContainer};
pub use status::{unknown_service, DriftRow, StatusQuery, StatusReport};

/// How the watch behaves; see `mcp-agent serve --help` and the agent config.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Full scan of all containers, to catch what the event stream missed.
    pub scan_interval: Duration,
    /// This many exits of one component within `flap_window` is flapping.
    pub flap_exits: usize,
    pub flap_window: Duration,
    pub alert: Option<AlertSettings>,
    /// Put drifting components back, for services that do not say
    /// (`reconcile` in a definition wins).
    pub reconcile: bool,
    /// How long drift lasts before the first attempt (the runtime's own
    /// restart policy gets that long to act).
    pub reconcile_grace: Duration,
    /// Keep probing health checks after the deploy.
    pub health_probes: bool,
    /// Honour `on_unhealthy = "restart"` (off: it alerts instead).
    pub restart_unhealthy: bool,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            scan_interval: Duration::from_secs(60),
            flap_exits: 3,
            flap_window: Duration::from_secs(600),
            alert: None,
            reconcile: false,
            reconcile_grace: Duration::from_secs(1),
            health_probes: true,
            restart_unhealthy: true,
        }
    }
}

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Every runtime call the watch makes has a deadline: a runtime that does
/// not answer delays only what the call was about.
pub(super) const SUBSCRIBE_DEADLINE: Duration = Duration::from_secs(10);
pub(super) const LIST_DEADLINE: Duration = Duration::from_secs(30);
pub(super) const INSPECT_DEADLINE: Duration = Duration::from_secs(10);

use super::operations::{Key, Operations};

pub struct WatchActor {
    registry: Addr<RegistryActor>,
    runtime: Addr<RuntimeActor>,
    node: String,
    settings: WatchSettings,
    /// Which components are under an operation (shared with their actors).
    ops: std::sync::Arc<Operations>,
    /// The `clock` at each component's last operation start or end or
    /// recorded event, so a scan that overlapped them does not overwrite
    /// what they recorded. One clock for all, never reset: a component
    /// forgotten and made again never gets an old value back.
    epochs: HashMap<Key, u64>,
    clock: u64,
    exits: HashMap<Key, VecDeque<i64>>,
    last_alert: HashMap<Key, i64>,
    backoff: Duration,
    /// False while the event stream is down.
    connected: bool,
    /// Where reconciliation and restarts go (set once the tree is built).
    directory: Option<Addr<super::ServiceDirectory>>,
    /// Reconciliation and restarts of each component: attempts, backoff.
    healing: HashMap<Key, healing::Healing>,
    /// The health probes running, one per component with a check.
    probes: HashMap<Key, health::Probe>,
    /// Shared by the HTTP probes.
    http: reqwest::Client,
}

impl WatchActor {
    pub fn new(
        registry: Addr<RegistryActor>,
        runtime: Addr<RuntimeActor>,
        ops: std::sync::Arc<Operations>,
        node: String,
        settings: WatchSettings,
    ) -> Self {
        WatchActor {
            registry,
            runtime,
            node,
            settings,
            ops,
            epochs: HashMap::new(),
            clock: 0,
            exits: HashMap::new(),
            last_alert: HashMap::new(),
            backoff: BACKOFF_START,
            connected: false,
            directory: None,
            healing: HashMap::new(),
            probes: HashMap::new(),
            http: reqwest::Client::new(),
        }
    }

    fn is_busy(&self, key: &Key) -> bool {
        self.ops.busy(key)
    }

    /// Something newer than any scan in flight is known of `key`.
    pub(super) fn touch(&mut self, key: Key) {
        self.clock += 1;
        self.epochs.insert(key, self.clock);
    }

    /// Nothing touched `key` since the clock read `since`.
    pub(super) fn untouched_since(&self, key: &Key, since: u64) -> bool {
        self.epochs.get(key).is_none_or(|e| *e <= since)
    }

    /// Forgets what is kept in memory of components the registry no longer
    /// has (`known` is what it listed for a scan begun at `mark`), so these
    /// maps do not grow with every component the node ever had. What was
    /// touched since `mark`, or is under an operation, may be a component
    /// made meanwhile and is kept until a later scan.
    pub(super) fn forget_gone(
        &mut self,
        known: &HashSet<Key>,
        mark: &ScanMark,
        ctx: &mut Context<Self>,
    ) {
        let busy: HashSet<Key> = self.ops.busy_components().into_iter().collect();
        let gone = |k: &Key| !known.contains(k) && !busy.contains(k);
        // Reconciliation of what is gone: its pending attempt too. (The
        // probes follow the registry's running components on their own.)
        let forgotten: Vec<Key> = self.healing.keys().filter(|k| gone(k)).cloned().collect();
        for key in forgotten {
            self.cancel_heal(&key, ctx);
            self.healing.remove(&key);
        }
        self.epochs.retain(|k, e| !gone(k) || *e > mark.clock);
        self.exits
            .retain(|k, at| !gone(k) || at.back().is_some_and(|t| *t >= mark.at_ms));
        self.last_alert
            .retain(|k, at| !gone(k) || *at >= mark.at_ms);
        self.ops.forget_ended(gone, mark.at_ns);
    }

    /// Subscribes to the runtime's events; on failure, tries again later.
    fn connect(&mut self, ctx: &mut Context<Self>) {
        let runtime = self.runtime.clone();
        let subscribe = async move {
            tokio::time::timeout(SUBSCRIBE_DEADLINE, runtime.send(SubscribeRuntimeEvents {}))
                .await
                .map_err(|_| format!("no answer within {SUBSCRIBE_DEADLINE:?}"))
        };
        ctx.spawn(subscribe.into_actor(self).map(|answer, act, ctx| {
            match answer {
                Err(e) => act.retry(ctx, &e),
                Ok(Ok(Ok(stream))) => {
                    if !act.connected {
                        tracing::info!("watching the runtime's events");
                    }
                    act.connected = true;
                    act.backoff = BACKOFF_START;
                    ctx.add_stream(stream);
                    // Catch up on whatever happened while not watching.
                    act.scan(ctx);
                }
                Ok(Ok(Err(e))) => act.retry(ctx, &e.to_string()),
                Ok(Err(e)) => act.retry(ctx, &e.to_string()),
            }
        }));
    }

    fn retry(&mut self, ctx: &mut Context<Self>, why: &str) {
        if self.connected {
            tracing::warn!("lost the runtime's event stream: {why}; reconnecting");
        } else {
            tracing::debug!(
                "runtime not reachable: {why}; retrying in {:?}",
                self.backoff
            );
        }
        self.connected = false;
        ctx.run_later(self.backoff, |act, ctx| act.connect(ctx));
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// A background scan; its result only updates the registry.
    fn scan(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(self.observe().map(|result, _, _| {
            if let Err(e) = result {
                tracing::warn!("scan failed: {e}");
            }
        }));
    }
}

/// When a scan began: the watch's clock, and the time (ms and ns).
#[derive(Debug, Clone, Copy)]
pub(super) struct ScanMark {
    pub clock: u64,
    pub at_ms: i64,
    pub at_ns: i64,
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl actix::Supervised for WatchActor {
    /// After a panic: everything in memory is rebuilt from the runtime and
    /// the registry (`started` reconnects and scans).
    fn restarting(&mut self, _: &mut Context<Self>) {
        // The clock goes on: scans of the old incarnation compare with it.
        self.epochs.clear();
        self.exits.clear();
        self.last_alert.clear();
        self.backoff = BACKOFF_START;
        self.connected = false;
        // The spawned attempts and probes died with the old context.
        self.healing.clear();
        self.probes.clear();
    }
}

impl Actor for WatchActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.connect(ctx);
        let interval = self.settings.scan_interval;
        ctx.run_interval(interval, |act, ctx| {
            if act.connected {
                act.scan(ctx);
            }
        });
    }
}

/// Records what the watch saw (no one caused it), or, with `by` set to
/// [`crate::registry::AGENT`], something it did.
async fn record_event_by(
    registry: &Addr<RegistryActor>,
    service: &str,
    component: &str,
    kind: &str,
    detail: &str,
    by: &str,
) {
    let sent = registry
        .send(AddEvent {
            service: service.to_string(),
            component: component.to_string(),
            kind: kind.to_string(),
            detail: detail.to_string(),
            by: by.to_string(),
        })
        .await;
    if let Ok(Err(e)) = sent {
        tracing::error!("cannot record an event: {e}");
    }
}

/// Records what the watch saw.
async fn record_event(
    registry: &Addr<RegistryActor>,
    service: &str,
    component: &str,
    kind: &str,
    detail: &str,
) {
    record_event_by(registry, service, component, kind, detail, "").await
}

/// An operation took a component's lease (see operations.rs): a scan in
/// flight must not overwrite what the operation will record.
#[derive(Debug, Clone)]
pub struct OperationStarted {
    pub key: Key,
}

impl Message for OperationStarted {
    type Result = ();
}

impl Handler<OperationStarted> for WatchActor {
    type Result = ();
    fn handle(&mut self, msg: OperationStarted, _: &mut Context<Self>) {
        self.touch(msg.key);
    }
}

/// An operation gave its lease back (finished, failed, or dropped): look
/// at the component afresh.
#[derive(Debug, Clone)]
pub struct OperationEnded {
    pub key: Key,
}

impl Message for OperationEnded {
    type Result = ();
}

impl Handler<OperationEnded> for WatchActor {
    type Result = ();
    fn handle(&mut self, msg: OperationEnded, ctx: &mut Context<Self>) {
        let key = msg.key;
        self.touch(key.clone());
        if self.is_busy(&key) {
            return;
        }
        self.restart_probe_clock(&key);
        self.recheck_after_operation(key, ctx);
    }
}

/// The agent is going away with operations in flight: record each as
/// abandoned. The next start's scan reconciles the registry with what the
/// containers say (their spec labels). Returns the abandoned components.
#[derive(Debug, Clone)]
pub struct Abandon;

impl Message for Abandon {
    type Result = Vec<String>;
}

impl Handler<Abandon> for WatchActor {
    type Result = ResponseFuture<Vec<String>>;

    fn handle(&mut self, _: Abandon, _: &mut Context<Self>) -> Self::Result {
        let registry = self.registry.clone();
        let busy: Vec<Key> = self.ops.busy_components();
        Box::pin(async move {
            let mut abandoned = Vec::new();
            for (service, component) in busy {
                record_event_by(
                    &registry,
                    &service,
                    &component,
                    "abandoned",
                    "the agent stopped during an operation; the next start finishes it",
                    crate::registry::AGENT,
                )
                .await;
                abandoned.push(format!("{service}/{component}"));
            }
            abandoned
        })
    }
}

/// The components the watch (and the operations' end times) keep
/// something of in memory, sorted (tests of forgetting).
#[cfg(test)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remembered {
    pub epochs: Vec<Key>,
    pub exits: Vec<Key>,
    pub alerts: Vec<Key>,
    pub ended: Vec<Key>,
}

#[cfg(test)]
#[derive(Debug, Clone)]
pub struct Remember;

#[cfg(test)]
impl Message for Remember {
    type Result = Remembered;
}

#[cfg(test)]
impl Handler<Remember> for WatchActor {
    type Result = actix::MessageResult<Remember>;
    fn handle(&mut self, _: Remember, _: &mut Context<Self>) -> Self::Result {
        let sorted = |mut keys: Vec<Key>| {
            keys.sort();
            keys
        };
        actix::MessageResult(Remembered {
            epochs: sorted(self.epochs.keys().cloned().collect()),
            exits: sorted(self.exits.keys().cloned().collect()),
            alerts: sorted(self.last_alert.keys().cloned().collect()),
            ended: sorted(self.ops.ended_components()),
        })
    }
}

#[cfg(test)]
impl actix::Handler<crate::actors::supervisor::Crash> for WatchActor {
    type Result = ();
    fn handle(&mut self, _: crate::actors::supervisor::Crash, ctx: &mut actix::Context<Self>) {
        crate::actors::supervisor::panic_later(ctx);
    }
}
