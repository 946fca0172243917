//! Scans: every container listed at once (on an interval, on demand for
//! `mcp ps`, after reconnecting), matched to components, recorded.

use super::drift::{record_drift, DriftCheck};
use super::*;

impl WatchActor {
    /// Lists every container, records what it saw and re-evaluates drift.
    /// Answers once the registry holds what the scan saw, so a query that
    /// follows `ps` reads the reconciled registry.
    pub(super) fn observe(
        &mut self,
    ) -> ResponseActFuture<Self, Result<Vec<ObservedContainer>, AgentError>> {
        let registry = self.registry.clone();
        let runtime = self.runtime.clone();
        let mark = ScanMark {
            clock: self.clock,
            at_ms: now_ms(),
            at_ns: crate::runtime::now_ns(),
        };
        let listed = async move {
            let (containers, services) = futures::join!(
                tokio::time::timeout(LIST_DEADLINE, runtime.send(ListContainers {})),
                registry.send(ListServices {})
            );
            let containers = containers.map_err(|_| {
                AgentError::Unavailable(format!(
                    "the container runtime did not list its containers within {LIST_DEADLINE:?}"
                ))
            })?;
            Ok::<_, AgentError>((containers??, services??))
        };
        Box::pin(listed.into_actor(self).then(move |listed, act, ctx| {
            let recorded = listed.map(|(containers, services)| {
                act.record_scan(Scan::build(containers, &services), &services, &mark, ctx)
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
        mark: &ScanMark,
        ctx: &mut Context<Self>,
    ) -> (Vec<ObservedContainer>, tokio::sync::oneshot::Receiver<()>) {
        // Components whose operation started or ended, or whose events were
        // recorded, during the scan have fresher facts in the registry.
        let observations: Vec<Observation> = scan
            .observations
            .into_iter()
            .filter(|o| {
                let key = (o.service.clone(), o.component.clone());
                !self.is_busy(&key) && self.untouched_since(&key, mark.clock)
            })
            .collect();
        let known: HashSet<Key> = services
            .iter()
            .flat_map(|s| s.components.iter())
            .map(|c| (c.service.clone(), c.name.clone()))
            .collect();
        self.forget_gone(&known, mark, ctx);
        let desired: HashMap<Key, DesiredState> = services
            .iter()
            .flat_map(|s| s.components.iter())
            .map(|c| ((c.service.clone(), c.name.clone()), c.desired_state))
            .collect();
        let drift_checks: Vec<DriftCheck> = observations
            .iter()
            .filter_map(|o| {
                let key = (o.service.clone(), o.component.clone());
                let desired = *desired.get(&key)?;
                Some(DriftCheck {
                    key,
                    desired,
                    observed: o.observed_state.clone(),
                })
            })
            .collect();
        let registry = self.registry.clone();
        let (done, recorded) = tokio::sync::oneshot::channel();
        let record = async move {
            if let Err(e) = record_observations(&registry, observations, scan.unmanaged).await {
                tracing::error!("cannot record a scan: {e}");
                return Vec::new();
            }
            let _ = done.send(());
            record_drift(&registry, drift_checks).await
        };
        ctx.wait(record.into_actor(self).map(|changes, act, ctx| {
            act.on_drift(changes, ctx);
            act.refresh_probes(ctx);
        }));
        (scan.rows, recorded)
    }
}

/// One row of a live scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    pub name: String,
    pub id: String,
    pub image: String,
    /// The id of the container's image; empty when absent.
    pub image_id: String,
    /// The runtime's state, or `absent` for a managed component with no container.
    pub state: String,
    pub status: String,
    /// Empty for containers no service claims.
    pub service: String,
    pub component: String,
    pub desired_state: DesiredState,
    /// `healthy`/`unhealthy` as the probes last saw this container; empty:
    /// no check, or not probed.
    pub health: String,
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
        // The probes' verdict, for the container they probed.
        let mut health: HashMap<&str, &'static str> = HashMap::new();
        for c in services.iter().flat_map(|s| s.components.iter()) {
            let key = (c.service.clone(), c.name.clone());
            if let Some(id) = c.container_id.as_deref() {
                by_container.insert(id, key.clone());
                if let Some(h) = &c.health {
                    health.insert(id, h.as_str());
                }
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
            let health = match (desired, c.state.as_str()) {
                (DesiredState::Ignore, _) => "",
                (_, "running") => health.get(c.id.as_str()).copied().unwrap_or_default(),
                _ => "",
            };
            scan.rows.push(ObservedContainer {
                name: c.name,
                id: c.id,
                image: c.image,
                image_id: c.image_id,
                state: c.state,
                status: c.status,
                service,
                component,
                desired_state: desired,
                health: health.to_string(),
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
                image_id: String::new(),
                state: "absent".to_string(),
                status: String::new(),
                service,
                component,
                desired_state: desired,
                health: String::new(),
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
