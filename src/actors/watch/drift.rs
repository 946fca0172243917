//! Drift (observed state differs from desired) and flapping (too many
//! exits in a window), and the looks that decide them after an operation or
//! a change of desired state.

use super::*;
use crate::names::{container_name, Name};

impl WatchActor {
    /// Notes an exit; Some(detail) when it makes the component flap.
    pub(super) fn count_exit(&mut self, key: &Key, at_ms: i64) -> Option<String> {
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

/// What a look at a component found: its desired and its observed state.
#[derive(Debug, Clone)]
pub(super) struct DriftCheck {
    pub key: Key,
    pub desired: DesiredState,
    pub observed: String,
}

/// A checked component's drift (None: none), and whether that is a change
/// (started or stopped drifting; its event is recorded).
#[derive(Debug, Clone)]
pub(super) struct DriftChange {
    pub key: Key,
    pub drift: Option<Drift>,
    pub changed: bool,
}

/// Records each checked component's drift in one registry call, with a
/// `drift-detected` or `drift-cleared` event per change; returns the
/// changes, for the watch to act on (`WatchActor::on_drift`).
pub(super) async fn record_drift(
    registry: &Addr<RegistryActor>,
    checks: Vec<DriftCheck>,
) -> Vec<DriftChange> {
    if checks.is_empty() {
        return Vec::new();
    }
    let now = now_ms();
    let drifts: Vec<(String, String, Option<Drift>)> = checks
        .iter()
        .map(|c| {
            let drift = drift_of(c.desired, &c.observed).map(|detail| Drift {
                since_ms: now,
                detail,
            });
            (c.key.0.clone(), c.key.1.clone(), drift)
        })
        .collect();
    match registry
        .send(RecordDrift {
            drifts: drifts.clone(),
        })
        .await
    {
        Ok(Ok(events)) => drifts
            .into_iter()
            .zip(events)
            .map(|((service, component, drift), event)| DriftChange {
                key: (service, component),
                drift,
                changed: event.is_some(),
            })
            .collect(),
        Ok(Err(e)) => {
            tracing::error!("cannot record drift: {e}");
            Vec::new()
        }
        Err(e) => {
            tracing::error!("registry unavailable: {e}");
            Vec::new()
        }
    }
}

impl WatchActor {
    /// Acts on drift that was just recorded: a drift of a reconciled
    /// service is put back (healing.rs); otherwise new drift is alerted
    /// (and the alert recorded before the watch handles anything else).
    pub(super) fn on_drift(&mut self, changes: Vec<DriftChange>, ctx: &mut Context<Self>) {
        // Drifting: new drift, or drift that outlasted an attempt (the
        // component died again before its drift was seen to clear).
        let mut drifting = Vec::new();
        for change in changes {
            match change.drift {
                Some(drift) => drifting.push((change.key, drift, change.changed)),
                None => self.cancel_heal(&change.key, ctx),
            }
        }
        if drifting.is_empty() {
            return;
        }
        let new = drifting;
        let registry = self.registry.clone();
        let services: HashSet<String> = new.iter().map(|(k, _, _)| k.0.clone()).collect();
        let lookup = async move {
            let mut reconcile = HashMap::new();
            for service in services {
                let row = registry
                    .send(GetServiceState {
                        name: service.clone(),
                    })
                    .await;
                if let Ok(Ok(Some(row))) = row {
                    reconcile.insert(service, row.reconcile);
                }
            }
            reconcile
        };
        ctx.wait(
            lookup
                .into_actor(self)
                .map(|reconcile, act, ctx| act.act_on_drift(new, reconcile, ctx)),
        );
    }

    fn act_on_drift(
        &mut self,
        drifting: Vec<(Key, Drift, bool)>,
        reconcile: HashMap<String, Option<bool>>,
        ctx: &mut Context<Self>,
    ) {
        let mut sent = Vec::new();
        for (key, drift, new) in drifting {
            if self.reconciles(reconcile.get(&key.0).copied().flatten()) {
                self.heal(key, drift.detail, false, ctx);
                continue;
            }
            if !new {
                continue;
            }
            let detail = format!("{}; reconcile is off: nothing is done", drift.detail);
            if let Some(sent_detail) = self.alert(&key, "drift-detected", &detail, ctx) {
                sent.push((key, sent_detail));
            }
        }
        if sent.is_empty() {
            return;
        }
        let registry = self.registry.clone();
        let record = async move {
            for ((service, component), detail) in sent {
                record_event_by(
                    &registry,
                    &service,
                    &component,
                    "alert-sent",
                    &detail,
                    crate::registry::AGENT,
                )
                .await;
            }
        };
        ctx.wait(record.into_actor(self));
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
    /// window were taken for the operation's own. The look (a runtime call,
    /// with a deadline) runs beside the event stream, not in its way; what
    /// it saw is recorded unless an event about the component was recorded
    /// meanwhile (the newer fact wins).
    pub(super) fn recheck_after_operation(&mut self, key: Key, ctx: &mut Context<Self>) {
        let registry = self.registry.clone();
        let runtime = self.runtime.clone();
        let epoch = self.epochs.get(&key).copied();
        let (service, name) = key.clone();
        let look = async move {
            let row = registry
                .send(GetServiceState {
                    name: service.clone(),
                })
                .await
                .ok()?
                .ok()??;
            let c = row.components.into_iter().find(|c| c.name == name)?;
            let live = match c.container_id.clone() {
                Some(id) => inspect_within(&runtime, &id, &service, &name)
                    .await
                    .map(|live| (id, live)),
                // The registry knows no container, but one may hold the
                // component's name: a killed agent's create that the runtime
                // finished while an operation kept the watch away.
                None => {
                    let (Ok(s), Ok(n)) = (Name::parse(&service), Name::parse(&name)) else {
                        return None;
                    };
                    let by_name = container_name(&s, &n);
                    match inspect_within(&runtime, &by_name, &service, &name).await {
                        Some(Some(live))
                            if live.owner() == Some((service.as_str(), name.as_str())) =>
                        {
                            Some((live.id.clone(), Some(live)))
                        }
                        _ => None,
                    }
                }
            };
            Some((c, live))
        };
        ctx.spawn(look.into_actor(self).map(move |looked, act, ctx| {
            let Some((c, live)) = looked else {
                return;
            };
            if act.epochs.get(&key).copied() != epoch {
                return;
            }
            act.record_recheck(key, c, live, ctx);
        }));
    }

    fn record_recheck(
        &mut self,
        key: Key,
        c: crate::registry::ComponentState,
        live: Option<(String, Option<crate::runtime::ContainerInfo>)>,
        ctx: &mut Context<Self>,
    ) {
        let registry = self.registry.clone();
        let record = async move {
            let (service, name) = key.clone();
            let mut observed = c.observed_state.clone();
            if let Some((id, seen)) = live {
                let newly_found = c.container_id.is_none() && seen.is_some();
                let (container_id, state, status, created_from) = match seen {
                    Some(live) => (
                        Some(id.clone()),
                        live.state.clone(),
                        live.status.clone(),
                        newly_found.then(|| live.created_from()).flatten(),
                    ),
                    None => (None, "absent".to_string(), String::new(), None),
                };
                if state != c.observed_state || newly_found {
                    let observation = Observation {
                        service: service.clone(),
                        component: name.clone(),
                        container_id,
                        observed_state: state.clone(),
                        created_from,
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
            let check = DriftCheck {
                key,
                desired: c.desired_state,
                observed,
            };
            record_drift(&registry, vec![check]).await
        };
        // Recorded in the event stream's order.
        ctx.wait(record.into_actor(self).map(|changes, act, ctx| {
            act.on_drift(changes, ctx);
            act.refresh_probes(ctx);
        }));
    }

    /// Drift of a service's components (or one of them) from the registry's
    /// current facts. Components under an operation are skipped.
    pub(super) fn reevaluate(
        &mut self,
        service: String,
        component: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let registry = self.registry.clone();
        let busy: HashSet<Key> = self.ops.busy_components().into_iter().collect();
        let look = async move {
            let Ok(Ok(Some(row))) = registry.send(GetServiceState { name: service }).await else {
                return Vec::new();
            };
            let checks = row
                .components
                .into_iter()
                .filter(|c| component.as_ref().is_none_or(|only| only == &c.name))
                .map(|c| DriftCheck {
                    key: (c.service.clone(), c.name.clone()),
                    desired: c.desired_state,
                    observed: c.observed_state,
                })
                .filter(|c| !busy.contains(&c.key))
                .collect();
            record_drift(&registry, checks).await
        };
        ctx.wait(
            look.into_actor(self)
                .map(|changes, act, ctx| act.on_drift(changes, ctx)),
        );
    }
}

/// A live inspect with the watch's deadline: Some(None) when the container
/// is gone, None when the runtime could not say.
async fn inspect_within(
    runtime: &Addr<RuntimeActor>,
    name_or_id: &str,
    service: &str,
    name: &str,
) -> Option<Option<crate::runtime::ContainerInfo>> {
    let inspect = runtime.send(Inspect {
        name_or_id: name_or_id.to_string(),
    });
    match tokio::time::timeout(INSPECT_DEADLINE, inspect).await {
        Ok(Ok(Ok(live))) => Some(live),
        Ok(Ok(Err(e))) => {
            tracing::debug!(%service, %name, "recheck: {e}");
            None
        }
        Ok(Err(_)) => None,
        Err(_) => {
            tracing::warn!(
                %service, %name,
                "the runtime did not answer an inspect within {INSPECT_DEADLINE:?}"
            );
            None
        }
    }
}
