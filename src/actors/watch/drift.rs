//! Drift (observed state differs from desired) and flapping (too many
//! exits in a window), and the looks that decide them after an operation or
//! a change of desired state.

use super::*;

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

/// Sets or clears drift in the registry; a change becomes an event (and, for
/// new drift, an alert) through the watch.
pub(super) async fn check_drift(
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
                None => None,
                Some(id) => {
                    match tokio::time::timeout(
                        INSPECT_DEADLINE,
                        runtime.send(Inspect {
                            name_or_id: id.clone(),
                        }),
                    )
                    .await
                    {
                        Ok(Ok(Ok(Some(live)))) => Some((id, Some(live))),
                        // Gone is a fact too: removed in the window after the operation.
                        Ok(Ok(Ok(None))) => Some((id, None)),
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
        let me = ctx.address();
        let record = async move {
            let (service, name) = key.clone();
            let mut observed = c.observed_state.clone();
            if let Some((id, seen)) = live {
                let (container_id, state, status) = match seen {
                    Some(live) => (Some(id.clone()), live.state, live.status),
                    None => (None, "absent".to_string(), String::new()),
                };
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
            check_drift(&registry, &me, key, c.desired_state, &observed).await;
        };
        // Recorded in the event stream's order.
        ctx.wait(record.into_actor(self));
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
        let me = ctx.address();
        let busy: HashSet<Key> = self.ops.busy_components().into_iter().collect();
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
