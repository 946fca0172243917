//! WatchActor: what really runs on the node, continuously. It follows the
//! runtime's event stream (reconnecting with backoff when the runtime goes
//! away) and scans every container on an interval and on demand (`Observe`),
//! to keep observed state, unmanaged containers, drift, flapping and alerts
//! up to date in the registry.
//!
//! Components under an operation (deploy/start/stop) are left alone: the
//! ComponentActor reports `OperationBusy` around its work and records the
//! outcome itself, so a deploy's stop-remove-create is never taken for drift.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, ResponseActFuture,
    ResponseFuture, StreamHandler, WrapFuture,
};

use super::registry::{
    AddEvent, ComponentByContainer, GetServiceState, ListServices, RecordObserved, RegistryActor,
    RemoveUnmanaged, ReplaceUnmanaged, SetDrift, UpsertUnmanaged,
};
use super::runtime::{Inspect, ListContainers, RuntimeActor, SubscribeRuntimeEvents};
use super::AgentError;
use crate::registry::{now_ms, DesiredState, Drift, Observation, ServiceState, UnmanagedRow};
use crate::runtime::{RuntimeError, RuntimeEvent};

/// How the watch behaves; see `mcp-agent serve --help` and the agent config.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Full scan of all containers, to catch what the event stream missed.
    pub scan_interval: Duration,
    /// This many exits of one component within `flap_window` is flapping.
    pub flap_exits: usize,
    pub flap_window: Duration,
    pub alert: Option<AlertSettings>,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            scan_interval: Duration::from_secs(60),
            flap_exits: 3,
            flap_window: Duration::from_secs(600),
            alert: None,
        }
    }
}

/// An alert command: argv, run without a shell, with the facts in
/// MCP_ALERT_* environment variables.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub command: Vec<String>,
    /// At most one alert per component in this window.
    pub rate_limit: Duration,
    /// A command still running after this is killed and recorded as failed.
    pub timeout: Duration,
}

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

type Key = (String, String);

pub struct WatchActor {
    registry: Addr<RegistryActor>,
    runtime: Addr<RuntimeActor>,
    node: String,
    settings: WatchSettings,
    /// Operations in progress per component.
    busy: HashMap<Key, usize>,
    /// Bumped at every operation start and end and at every recorded event,
    /// so a scan that overlapped them does not overwrite what they recorded.
    epochs: HashMap<Key, u64>,
    /// When the last operation on a component ended. Its own events (create,
    /// start, ...) can reach the watch after that; they are history the
    /// operation already recorded.
    settled_at: HashMap<Key, i64>,
    exits: HashMap<Key, VecDeque<i64>>,
    last_alert: HashMap<Key, i64>,
    backoff: Duration,
    /// False while the event stream is down.
    connected: bool,
}

impl WatchActor {
    pub fn new(
        registry: Addr<RegistryActor>,
        runtime: Addr<RuntimeActor>,
        node: String,
        settings: WatchSettings,
    ) -> Self {
        WatchActor {
            registry,
            runtime,
            node,
            settings,
            busy: HashMap::new(),
            epochs: HashMap::new(),
            settled_at: HashMap::new(),
            exits: HashMap::new(),
            last_alert: HashMap::new(),
            backoff: BACKOFF_START,
            connected: false,
        }
    }

    fn is_busy(&self, key: &Key) -> bool {
        self.busy.get(key).is_some_and(|n| *n > 0)
    }

    /// Subscribes to the runtime's events; on failure, tries again later.
    fn connect(&mut self, ctx: &mut Context<Self>) {
        let runtime = self.runtime.clone();
        let subscribe = async move { runtime.send(SubscribeRuntimeEvents {}).await };
        ctx.spawn(subscribe.into_actor(self).map(|answer, act, ctx| {
            match answer {
                Ok(Ok(stream)) => {
                    if !act.connected {
                        tracing::info!("watching the runtime's events");
                    }
                    act.connected = true;
                    act.backoff = BACKOFF_START;
                    ctx.add_stream(stream);
                    // Catch up on whatever happened while not watching.
                    act.scan(ctx);
                }
                Ok(Err(e)) => act.retry(ctx, &e.to_string()),
                Err(e) => act.retry(ctx, &e.to_string()),
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

    /// Lists every container, records what it saw and re-evaluates drift.
    /// Answers once the registry holds what the scan saw, so a query that
    /// follows `ps` reads the reconciled registry.
    fn observe(&mut self) -> ResponseActFuture<Self, Result<Vec<ObservedContainer>, AgentError>> {
        let registry = self.registry.clone();
        let runtime = self.runtime.clone();
        let epochs_before = self.epochs.clone();
        let listed = async move {
            let (containers, services) = futures::join!(
                runtime.send(ListContainers {}),
                registry.send(ListServices {})
            );
            Ok::<_, AgentError>((containers??, services??))
        };
        Box::pin(listed.into_actor(self).then(move |listed, act, ctx| {
            let recorded = listed.map(|(containers, services)| {
                act.record_scan(
                    Scan::build(containers, &services),
                    &services,
                    &epochs_before,
                    ctx,
                )
            });
            async move {
                let (rows, recorded) = recorded?;
                // The scan's rows are the answer even if recording failed
                // (logged); a closed channel means the actor stopped.
                let _ = recorded.await;
                Ok(rows)
            }
            .into_actor(act)
        }))
    }

    /// Records a scan's observations, then checks drift. The recording runs
    /// with the actor's event handling paused, so an event handled after it
    /// is never overwritten by this (older) scan.
    fn record_scan(
        &mut self,
        scan: Scan,
        services: &[ServiceState],
        epochs_before: &HashMap<Key, u64>,
        ctx: &mut Context<Self>,
    ) -> (Vec<ObservedContainer>, tokio::sync::oneshot::Receiver<()>) {
        // Components whose operation started or ended, or whose events were
        // recorded, during the scan have fresher facts in the registry.
        let observations: Vec<Observation> = scan
            .observations
            .into_iter()
            .filter(|o| {
                let key = (o.service.clone(), o.component.clone());
                !self.is_busy(&key) && self.epochs.get(&key) == epochs_before.get(&key)
            })
            .collect();
        let desired: HashMap<Key, DesiredState> = services
            .iter()
            .flat_map(|s| s.components.iter())
            .map(|c| ((c.service.clone(), c.name.clone()), c.desired_state))
            .collect();
        let drift_checks: Vec<(Key, DesiredState, String)> = observations
            .iter()
            .filter_map(|o| {
                let key = (o.service.clone(), o.component.clone());
                let d = *desired.get(&key)?;
                Some((key, d, o.observed_state.clone()))
            })
            .collect();
        let registry = self.registry.clone();
        let me = ctx.address();
        let (done, recorded) = tokio::sync::oneshot::channel();
        let record = async move {
            if let Err(e) = record_observations(&registry, observations, scan.unmanaged).await {
                tracing::error!("cannot record a scan: {e}");
                return;
            }
            let _ = done.send(());
            actix::spawn(async move {
                for (key, desired, observed) in drift_checks {
                    check_drift(&registry, &me, key, desired, &observed).await;
                }
            });
        };
        ctx.wait(record.into_actor(self));
        (scan.rows, recorded)
    }

    /// Records one runtime event: observed state, history, flapping, drift.
    fn on_event(&mut self, event: RuntimeEvent, ctx: &mut Context<Self>) {
        let registry = self.registry.clone();
        let lookup = async move {
            // MCP's labels name the component; an adopted container is known
            // by its id instead.
            let key = match event.owner() {
                Some((s, c)) => Some((s.to_string(), c.to_string())),
                None => registry
                    .send(ComponentByContainer {
                        container_id: event.container_id.clone(),
                    })
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten(),
            };
            let row = match &key {
                Some((service, _)) => registry
                    .send(GetServiceState {
                        name: service.clone(),
                    })
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten(),
                None => None,
            };
            let component = key.as_ref().and_then(|(_, c)| {
                row.and_then(|s| s.components.into_iter().find(|r| &r.name == c))
            });
            (event, key, component)
        };
        // Events are handled one at a time, in order.
        ctx.wait(
            lookup
                .into_actor(self)
                .map(|(event, key, component), act, ctx| match (key, component) {
                    (Some(key), Some(component)) => {
                        act.on_managed_event(event, key, component, ctx)
                    }
                    _ => act.on_unmanaged_event(event),
                }),
        );
    }

    fn on_unmanaged_event(&mut self, event: RuntimeEvent) {
        let Some(state) = event.resulting_state() else {
            return;
        };
        let registry = self.registry.clone();
        actix::spawn(async move {
            let sent = if state == "absent" {
                registry
                    .send(RemoveUnmanaged {
                        container_id: event.container_id,
                    })
                    .await
            } else {
                registry
                    .send(UpsertUnmanaged {
                        row: UnmanagedRow {
                            image: event.labels.get("image").cloned().unwrap_or_default(),
                            container_id: event.container_id,
                            name: event.name,
                            observed_state: state.to_string(),
                            first_seen_ms: 0,
                            last_seen_ms: 0,
                        },
                    })
                    .await
            };
            if let Ok(Err(e)) = sent {
                tracing::error!("cannot record an unmanaged container: {e}");
            }
        });
    }

    fn on_managed_event(
        &mut self,
        event: RuntimeEvent,
        key: Key,
        component: crate::registry::ComponentState,
        ctx: &mut Context<Self>,
    ) {
        let from_an_operation = self
            .settled_at
            .get(&key)
            .is_some_and(|settled| event.time_ms <= *settled);
        if self.is_busy(&key) || from_an_operation {
            return;
        }
        // An event of another container than the one the registry knows is
        // the old one's history (a finished deploy's stop and remove), unless
        // it is a create or start: names are unique, so that container now
        // holds the component's name (a killed agent's create that the
        // runtime finished after the registry was last told).
        let another_container = component
            .container_id
            .as_deref()
            .is_some_and(|id| id != event.container_id);
        if another_container && !matches!(event.action.as_str(), "create" | "start") {
            return;
        }
        let mut history = Vec::new();
        match event.action.as_str() {
            "die" => {
                let code = event
                    .exit_code
                    .map_or("unknown".to_string(), |c| c.to_string());
                history.push(("died", format!("exit code {code}")));
                if let Some(detail) = self.count_exit(&key, event.time_ms) {
                    history.push(("flapping", detail.clone()));
                    self.alert(&key, "flapping", &detail, ctx);
                }
            }
            "oom" => history.push(("oom", "killed: out of memory".to_string())),
            "remove" => history.push((
                "removed",
                format!("container {}", short(&event.container_id)),
            )),
            // Not an operation (those are busy): the runtime's restart policy.
            "start" => history.push(("restarted", "by the runtime".to_string())),
            _ => {}
        }
        let observed = event.resulting_state().map(str::to_string);
        if observed.is_some() {
            // Newer than any scan already listing: that scan must not
            // overwrite it.
            *self.epochs.entry(key.clone()).or_default() += 1;
        }
        let registry = self.registry.clone();
        let me = ctx.address();
        let desired = component.desired_state;
        let record = async move {
            let (service, name) = key.clone();
            if let Some(state) = &observed {
                let present = state != "absent";
                let observation = Observation {
                    service: service.clone(),
                    component: name.clone(),
                    container_id: present.then(|| event.container_id.clone()),
                    observed_state: state.clone(),
                    // A container the registry did not know yet (one a killed
                    // agent's create left to finish) brings its spec along.
                    created_from: present.then(|| event.created_from()).flatten(),
                };
                if let Ok(Err(e)) = registry
                    .send(RecordObserved {
                        observations: vec![observation],
                    })
                    .await
                {
                    tracing::error!("cannot record an observation: {e}");
                }
            }
            for (kind, detail) in history {
                record_event(&registry, &service, &name, kind, &detail).await;
            }
            if let Some(state) = observed {
                check_drift(&registry, &me, key, desired, &state).await;
            }
        };
        // Recorded before the next event is handled: a die and the restart
        // right after it must land in that order.
        ctx.wait(record.into_actor(self));
    }

    /// Notes an exit; Some(detail) when it makes the component flap.
    fn count_exit(&mut self, key: &Key, at_ms: i64) -> Option<String> {
        let window_ms = self.settings.flap_window.as_millis() as i64;
        let exits = self.exits.entry(key.clone()).or_default();
        exits.push_back(at_ms);
        while exits.front().is_some_and(|t| at_ms - t > window_ms) {
            exits.pop_front();
        }
        if exits.len() < self.settings.flap_exits.max(1) {
            return None;
        }
        exits.clear();
        Some(format!(
            "{} exits within {}s",
            self.settings.flap_exits,
            self.settings.flap_window.as_secs()
        ))
    }

    /// Runs the alert command for `key`, unless one ran within the rate limit.
    fn alert(&mut self, key: &Key, kind: &str, detail: &str, ctx: &mut Context<Self>) {
        let Some(alert) = self.settings.alert.clone() else {
            return;
        };
        let now = now_ms();
        let limit_ms = alert.rate_limit.as_millis() as i64;
        if self
            .last_alert
            .get(key)
            .is_some_and(|last| now - last < limit_ms)
        {
            tracing::debug!(service = %key.0, component = %key.1, kind, "alert rate-limited");
            return;
        }
        self.last_alert.insert(key.clone(), now);
        let registry = self.registry.clone();
        let facts = AlertFacts {
            node: self.node.clone(),
            service: key.0.clone(),
            component: key.1.clone(),
            kind: kind.to_string(),
            detail: detail.to_string(),
        };
        ctx.spawn(
            async move {
                if let Err(why) = run_alert(&alert, &facts).await {
                    tracing::warn!(service = %facts.service, component = %facts.component, "alert failed: {why}");
                    record_event(&registry, &facts.service, &facts.component, "alert-failed", &why).await;
                }
            }
            .into_actor(self),
        );
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
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

impl StreamHandler<Result<RuntimeEvent, RuntimeError>> for WatchActor {
    fn handle(&mut self, item: Result<RuntimeEvent, RuntimeError>, ctx: &mut Context<Self>) {
        match item {
            Ok(event) => self.on_event(event, ctx),
            Err(e) => tracing::warn!("runtime event stream: {e}"),
        }
    }

    /// The stream ended (the runtime went away): reconnect, never stop.
    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.retry(ctx, "the event stream ended");
    }
}

/// One row of a live scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    pub name: String,
    pub id: String,
    pub image: String,
    /// The runtime's state, or `absent` for a managed component with no container.
    pub state: String,
    pub status: String,
    /// Empty for containers no service claims.
    pub service: String,
    pub component: String,
    pub desired_state: DesiredState,
}

/// A scan's findings, before they are recorded.
struct Scan {
    rows: Vec<ObservedContainer>,
    observations: Vec<Observation>,
    unmanaged: Vec<UnmanagedRow>,
}

impl Scan {
    fn build(containers: Vec<crate::runtime::ContainerInfo>, services: &[ServiceState]) -> Scan {
        let mut managed: HashMap<Key, DesiredState> = HashMap::new();
        let mut by_container: HashMap<&str, Key> = HashMap::new();
        for c in services.iter().flat_map(|s| s.components.iter()) {
            let key = (c.service.clone(), c.name.clone());
            if let Some(id) = c.container_id.as_deref() {
                by_container.insert(id, key.clone());
            }
            managed.insert(key, c.desired_state);
        }
        let mut seen: HashSet<Key> = HashSet::new();
        let mut scan = Scan {
            rows: Vec::with_capacity(containers.len()),
            observations: Vec::new(),
            unmanaged: Vec::new(),
        };
        for c in containers {
            let by_label = c
                .owner()
                .map(|(s, n)| (s.to_string(), n.to_string()))
                .filter(|k| managed.contains_key(k));
            let key = by_label.or_else(|| by_container.get(c.id.as_str()).cloned());
            // Two containers may claim one component (an old one lingering):
            // the first seen wins, the others are unmanaged.
            let key = key.filter(|k| !seen.contains(k));
            let (service, component, desired) = match key {
                Some(key) => {
                    seen.insert(key.clone());
                    scan.observations.push(Observation {
                        service: key.0.clone(),
                        component: key.1.clone(),
                        container_id: Some(c.id.clone()),
                        observed_state: c.state.clone(),
                        created_from: c.created_from(),
                    });
                    let desired = managed[&key];
                    (key.0, key.1, desired)
                }
                None => {
                    scan.unmanaged.push(UnmanagedRow {
                        container_id: c.id.clone(),
                        name: c.name.clone(),
                        image: c.image.clone(),
                        observed_state: c.state.clone(),
                        first_seen_ms: 0,
                        last_seen_ms: 0,
                    });
                    (String::new(), String::new(), DesiredState::Ignore)
                }
            };
            scan.rows.push(ObservedContainer {
                name: c.name,
                id: c.id,
                image: c.image,
                state: c.state,
                status: c.status,
                service,
                component,
                desired_state: desired,
            });
        }
        // Managed components whose container is gone.
        let mut absent: Vec<_> = managed
            .into_iter()
            .filter(|(k, _)| !seen.contains(k))
            .collect();
        absent.sort_by(|a, b| a.0.cmp(&b.0));
        for ((service, component), desired) in absent {
            scan.observations.push(Observation {
                service: service.clone(),
                component: component.clone(),
                container_id: None,
                observed_state: "absent".to_string(),
                created_from: None,
            });
            scan.rows.push(ObservedContainer {
                name: format!("{service}-{component}"),
                id: String::new(),
                image: String::new(),
                state: "absent".to_string(),
                status: String::new(),
                service,
                component,
                desired_state: desired,
            });
        }
        scan
    }
}

async fn record_observations(
    registry: &Addr<RegistryActor>,
    observations: Vec<Observation>,
    unmanaged: Vec<UnmanagedRow>,
) -> Result<(), AgentError> {
    registry.send(RecordObserved { observations }).await??;
    registry
        .send(ReplaceUnmanaged { seen: unmanaged })
        .await??;
    Ok(())
}

async fn record_event(
    registry: &Addr<RegistryActor>,
    service: &str,
    component: &str,
    kind: &str,
    detail: &str,
) {
    let sent = registry
        .send(AddEvent {
            service: service.to_string(),
            component: component.to_string(),
            kind: kind.to_string(),
            detail: detail.to_string(),
        })
        .await;
    if let Ok(Err(e)) = sent {
        tracing::error!("cannot record an event: {e}");
    }
}

/// Whether `observed` differs from `desired`, and how.
pub fn drift_of(desired: DesiredState, observed: &str) -> Option<String> {
    let differs = match desired {
        DesiredState::Ignore => false,
        DesiredState::Running => observed != "running",
        DesiredState::Stopped => matches!(observed, "running" | "paused" | "restarting"),
    };
    differs.then(|| format!("desired {desired}, observed {observed}"))
}

/// Sets or clears drift in the registry; a change becomes an event (and, for
/// new drift, an alert) through the watch.
async fn check_drift(
    registry: &Addr<RegistryActor>,
    watch: &Addr<WatchActor>,
    key: Key,
    desired: DesiredState,
    observed: &str,
) {
    let drift = drift_of(desired, observed).map(|detail| Drift {
        since_ms: now_ms(),
        detail,
    });
    let changed = registry
        .send(SetDrift {
            service: key.0.clone(),
            component: key.1.clone(),
            drift: drift.clone(),
        })
        .await;
    match changed {
        Ok(Ok(true)) => watch.do_send(DriftChanged { key, drift }),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::error!("cannot record drift: {e}"),
        Err(e) => tracing::error!("registry unavailable: {e}"),
    }
}

/// A component started or stopped drifting.
#[derive(Debug, Clone)]
struct DriftChanged {
    key: Key,
    drift: Option<Drift>,
}

impl Message for DriftChanged {
    type Result = ();
}

impl Handler<DriftChanged> for WatchActor {
    type Result = ();
    fn handle(&mut self, msg: DriftChanged, ctx: &mut Context<Self>) {
        let registry = self.registry.clone();
        let (service, component) = msg.key.clone();
        let (kind, detail) = match &msg.drift {
            Some(d) => ("drift-detected", d.detail.clone()),
            None => ("drift-cleared", String::new()),
        };
        if msg.drift.is_some() {
            self.alert(&msg.key, kind, &detail, ctx);
        }
        actix::spawn(async move {
            record_event(&registry, &service, &component, kind, &detail).await;
        });
    }
}

/// A live scan: every container on the node, managed or not.
#[derive(Debug, Clone)]
pub struct Observe;

impl Message for Observe {
    type Result = Result<Vec<ObservedContainer>, AgentError>;
}

impl Handler<Observe> for WatchActor {
    type Result = ResponseActFuture<Self, Result<Vec<ObservedContainer>, AgentError>>;

    fn handle(&mut self, _: Observe, _: &mut Context<Self>) -> Self::Result {
        self.observe()
    }
}

/// Sent by a ComponentActor around an operation on its component.
#[derive(Debug, Clone)]
pub struct OperationBusy {
    pub service: String,
    pub component: String,
    pub busy: bool,
}

impl Message for OperationBusy {
    type Result = ();
}

impl Handler<OperationBusy> for WatchActor {
    type Result = ();
    fn handle(&mut self, msg: OperationBusy, ctx: &mut Context<Self>) {
        let key = (msg.service, msg.component);
        *self.epochs.entry(key.clone()).or_default() += 1;
        let count = self.busy.entry(key.clone()).or_default();
        if msg.busy {
            *count += 1;
            return;
        }
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.busy.remove(&key);
            self.exits.remove(&key);
            self.settled_at.insert(key.clone(), now_ms());
            self.recheck_after_operation(key, ctx);
        }
    }
}

/// Re-evaluate drift from what the registry says now (after a sync or an
/// adopt changed desired states).
#[derive(Debug, Clone)]
pub struct Reevaluate {
    pub service: String,
}

impl Message for Reevaluate {
    type Result = ();
}

impl Handler<Reevaluate> for WatchActor {
    type Result = ();
    fn handle(&mut self, msg: Reevaluate, ctx: &mut Context<Self>) {
        self.reevaluate(msg.service, None, ctx);
    }
}

impl WatchActor {
    /// After an operation, look at the container again: it may have died
    /// between the operation's last look and now, and its events from that
    /// window were taken for the operation's own.
    fn recheck_after_operation(&mut self, key: Key, ctx: &mut Context<Self>) {
        let registry = self.registry.clone();
        let runtime = self.runtime.clone();
        let me = ctx.address();
        let recheck = async move {
            let (service, name) = key.clone();
            let Ok(Ok(Some(row))) = registry
                .send(GetServiceState {
                    name: service.clone(),
                })
                .await
            else {
                return;
            };
            let Some(c) = row.components.into_iter().find(|c| c.name == name) else {
                return;
            };
            let mut observed = c.observed_state.clone();
            if let Some(id) = c.container_id.clone() {
                // Gone is a fact too: removed in the window after the operation.
                let live = match runtime
                    .send(Inspect {
                        name_or_id: id.clone(),
                    })
                    .await
                {
                    Ok(Ok(Some(live))) => Some((Some(id.clone()), live.state, live.status)),
                    Ok(Ok(None)) => Some((None, "absent".to_string(), String::new())),
                    _ => None,
                };
                if let Some((container_id, state, status)) = live {
                    if state != c.observed_state {
                        let observation = Observation {
                            service: service.clone(),
                            component: name.clone(),
                            container_id,
                            observed_state: state.clone(),
                            created_from: None,
                        };
                        let _ = registry
                            .send(RecordObserved {
                                observations: vec![observation],
                            })
                            .await;
                        if state == "absent" {
                            let detail = format!("container {}", short(&id));
                            record_event(&registry, &service, &name, "removed", &detail).await;
                        } else if c.observed_state == "running"
                            && matches!(state.as_str(), "exited" | "dead")
                        {
                            record_event(&registry, &service, &name, "died", &status).await;
                        }
                        observed = state;
                    }
                }
            }
            check_drift(&registry, &me, key, c.desired_state, &observed).await;
        };
        ctx.wait(recheck.into_actor(self));
    }

    /// Drift of a service's components (or one of them) from the registry's
    /// current facts. Components under an operation are skipped.
    fn reevaluate(&mut self, service: String, component: Option<String>, ctx: &mut Context<Self>) {
        let registry = self.registry.clone();
        let me = ctx.address();
        let busy: HashSet<Key> = self.busy.keys().cloned().collect();
        actix::spawn(async move {
            let Ok(Ok(Some(row))) = registry.send(GetServiceState { name: service }).await else {
                return;
            };
            for c in row.components {
                let key = (c.service.clone(), c.name.clone());
                let wanted = component.as_ref().is_none_or(|only| only == &c.name);
                if wanted && !busy.contains(&key) {
                    check_drift(&registry, &me, key, c.desired_state, &c.observed_state).await;
                }
            }
        });
    }
}

struct AlertFacts {
    node: String,
    service: String,
    component: String,
    kind: String,
    detail: String,
}

/// Runs the alert command; Err says why it failed.
async fn run_alert(alert: &AlertSettings, facts: &AlertFacts) -> Result<(), String> {
    let (program, args) = alert
        .command
        .split_first()
        .ok_or_else(|| "the alert command is empty".to_string())?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("MCP_ALERT_NODE", &facts.node)
        .env("MCP_ALERT_SERVICE", &facts.service)
        .env("MCP_ALERT_COMPONENT", &facts.component)
        .env("MCP_ALERT_KIND", &facts.kind)
        .env("MCP_ALERT_DETAIL", &facts.detail)
        .env("MCP_ALERT_TIME_MS", now_ms().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    match tokio::time::timeout(alert.timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{program} exited with {status}")),
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            Err(format!(
                "{program} did not finish within {}s and was killed",
                alert.timeout.as_secs()
            ))
        }
    }
}

/// A live scan plus drift and recent events, for `mcp status`.
#[derive(Debug, Clone)]
pub struct StatusQuery {
    /// None: every service.
    pub service: Option<String>,
    pub events: usize,
}

#[derive(Debug, Clone)]
pub struct DriftRow {
    pub service: String,
    pub component: String,
    pub desired: DesiredState,
    pub observed: String,
    pub since_ms: i64,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct StatusReport {
    pub containers: Vec<ObservedContainer>,
    pub drift: Vec<DriftRow>,
    pub events: Vec<crate::registry::Event>,
}

impl Message for StatusQuery {
    type Result = Result<StatusReport, AgentError>;
}

impl Handler<StatusQuery> for WatchActor {
    type Result = ResponseActFuture<Self, Result<StatusReport, AgentError>>;

    fn handle(&mut self, msg: StatusQuery, _: &mut Context<Self>) -> Self::Result {
        let registry = self.registry.clone();
        Box::pin(self.observe().then(move |observed, act, _| {
            let busy: HashSet<Key> = act.busy.keys().cloned().collect();
            async move {
                let wanted = |s: &str| msg.service.as_deref().is_none_or(|w| w == s);
                let containers: Vec<ObservedContainer> = observed?
                    .into_iter()
                    .filter(|c| msg.service.is_none() || wanted(&c.service))
                    .collect();
                // Drift as this scan sees it; `since` from the registry when
                // the watch had already noticed.
                let services = registry.send(ListServices {}).await??;
                let recorded: HashMap<Key, Drift> = services
                    .iter()
                    .flat_map(|s| s.components.iter())
                    .filter_map(|c| Some(((c.service.clone(), c.name.clone()), c.drift.clone()?)))
                    .collect();
                let now = now_ms();
                let drift = containers
                    .iter()
                    .filter(|c| !c.service.is_empty())
                    .filter(|c| !busy.contains(&(c.service.clone(), c.component.clone())))
                    .filter_map(|c| {
                        let detail = drift_of(c.desired_state, &c.state)?;
                        let key = (c.service.clone(), c.component.clone());
                        Some(DriftRow {
                            since_ms: recorded.get(&key).map_or(now, |d| d.since_ms),
                            service: key.0,
                            component: key.1,
                            desired: c.desired_state,
                            observed: c.state.clone(),
                            detail,
                        })
                    })
                    .collect();
                let events = registry
                    .send(super::registry::Events {
                        service: msg.service.clone(),
                        limit: msg.events,
                    })
                    .await??;
                Ok(StatusReport {
                    containers,
                    drift,
                    events,
                })
            }
            .into_actor(act)
        }))
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
        let busy: Vec<Key> = self.busy.keys().cloned().collect();
        Box::pin(async move {
            let mut abandoned = Vec::new();
            for (service, component) in busy {
                record_event(
                    &registry,
                    &service,
                    &component,
                    "abandoned",
                    "the agent stopped during an operation; the next start reconciles",
                )
                .await;
                abandoned.push(format!("{service}/{component}"));
            }
            abandoned
        })
    }
}
