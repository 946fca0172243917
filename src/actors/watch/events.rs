//! The runtime's event stream: each container event, in order, becomes
//! observed state, history and drift.

use super::drift::{record_drift, DriftCheck};
use super::*;

impl WatchActor {
    /// Records one runtime event: observed state, history, flapping, drift.
    pub(super) fn on_event(&mut self, event: RuntimeEvent, ctx: &mut Context<Self>) {
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
            let found = key.as_ref().and_then(|(_, c)| {
                row.and_then(|s| {
                    let reconcile = s.reconcile;
                    s.components
                        .into_iter()
                        .find(|r| &r.name == c)
                        .map(|r| (r, reconcile))
                })
            });
            (event, key, found)
        };
        // Events are handled one at a time, in order.
        ctx.wait(
            lookup
                .into_actor(self)
                .map(|(event, key, found), act, ctx| match (key, found) {
                    (Some(key), Some((component, reconcile))) => {
                        let reconciled = act.reconciles(reconcile);
                        act.on_managed_event(event, key, component, reconciled, ctx)
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
        reconciled: bool,
        ctx: &mut Context<Self>,
    ) {
        let from_an_operation = self
            .ops
            .ended_at(&key)
            .is_some_and(|ended| event.time_ns <= ended);
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
                if let Some(detail) = self.count_exit(&key, event.time_ms()) {
                    history.push(("flapping", detail.clone()));
                    // A reconciled component that flaps is left alone, and
                    // that is what the one alert says.
                    let (kind, detail) = if reconciled {
                        let gave_up = self.give_up(&key, &format!("flapping: {detail}"));
                        history.push(("reconcile-gave-up", gave_up.clone()));
                        ("reconcile-gave-up", gave_up)
                    } else {
                        ("flapping", detail)
                    };
                    if let Some(sent) = self.alert(&key, kind, &detail, ctx) {
                        history.push(("alert-sent", sent));
                    }
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
            self.touch(key.clone());
        }
        let registry = self.registry.clone();
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
                // The alert and the giving up are the agent's own doing;
                // the rest it saw.
                let by = if matches!(kind, "alert-sent" | "reconcile-gave-up") {
                    crate::registry::AGENT
                } else {
                    ""
                };
                record_event_by(&registry, &service, &name, kind, &detail, by).await;
            }
            let checks = observed
                .map(|observed| DriftCheck {
                    key,
                    desired,
                    observed,
                })
                .into_iter()
                .collect();
            record_drift(&registry, checks).await
        };
        // Recorded, and acted on, before the next event is handled: a die
        // and the restart right after it must land in that order.
        ctx.wait(record.into_actor(self).map(|changes, act, ctx| {
            act.on_drift(changes, ctx);
            act.refresh_probes(ctx);
        }));
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
