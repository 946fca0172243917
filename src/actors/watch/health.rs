//! Health after the deploy: every running component whose deployed spec has
//! a health check keeps being probed at the check's interval (one probe at
//! a time, none while an operation holds the component). `retries` failures
//! in a row after the start period make it unhealthy; a passing probe makes
//! it healthy again. Each change is recorded (the registry's `health`, shown
//! by `ps` and `status`) with a `healthy`/`unhealthy` event, and an
//! unhealthy component is alerted on, restarted (`on_unhealthy`, through
//! healing.rs) or only recorded.

use actix::SpawnHandle;

use super::*;
use crate::actors::registry::{HealthChecks, SetHealth};
use crate::spec::{HealthCheck, OnUnhealthy};

/// The probing of one component's container.
pub(super) struct Probe {
    container_id: String,
    check: HealthCheck,
    interval: SpawnHandle,
    in_flight: bool,
    failures: u32,
    healthy: Option<bool>,
    /// Failures within the start period from here do not count.
    since: std::time::Instant,
}

impl WatchActor {
    /// Brings the probes in line with what runs, as the registry says.
    pub(super) fn refresh_probes(&mut self, ctx: &mut Context<Self>) {
        if !self.settings.health_probes {
            return;
        }
        let registry = self.registry.clone();
        let look = async move { registry.send(HealthChecks {}).await };
        ctx.spawn(look.into_actor(self).map(|found, act, ctx| match found {
            Ok(Ok(found)) => act.sync_probes(found, ctx),
            Ok(Err(e)) => tracing::warn!("cannot read the health checks: {e}"),
            Err(e) => tracing::warn!("registry unavailable: {e}"),
        }));
    }

    fn sync_probes(&mut self, found: Vec<(Key, String, HealthCheck)>, ctx: &mut Context<Self>) {
        let wanted: HashMap<Key, (String, HealthCheck)> = found
            .into_iter()
            .map(|(key, id, check)| (key, (id, check)))
            .collect();
        let stale: Vec<Key> = self
            .probes
            .iter()
            .filter(|(key, p)| {
                wanted
                    .get(*key)
                    .is_none_or(|(id, check)| id != &p.container_id || check != &p.check)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(p) = self.probes.remove(&key) {
                ctx.cancel_future(p.interval);
            }
        }
        for (key, (id, check)) in wanted {
            if self.probes.contains_key(&key) {
                continue;
            }
            let at = key.clone();
            let interval = ctx.run_interval(check.interval.get(), move |act, ctx| {
                act.probe(&at, ctx);
            });
            let probe = Probe {
                container_id: id,
                check,
                interval,
                in_flight: false,
                failures: 0,
                healthy: None,
                since: std::time::Instant::now(),
            };
            self.probes.insert(key, probe);
        }
    }

    /// After an operation (a restart, a deploy), the start period and the
    /// failure count start over.
    pub(super) fn restart_probe_clock(&mut self, key: &Key) {
        if let Some(p) = self.probes.get_mut(key) {
            p.since = std::time::Instant::now();
            p.failures = 0;
        }
    }

    fn probe(&mut self, key: &Key, ctx: &mut Context<Self>) {
        if self.is_busy(key) {
            return;
        }
        let Some(p) = self.probes.get_mut(key).filter(|p| !p.in_flight) else {
            return;
        };
        p.in_flight = true;
        let (runtime, http) = (self.runtime.clone(), self.http.clone());
        let (id, check) = (p.container_id.clone(), p.check.clone());
        let key = key.clone();
        let probe = async move {
            let outcome = crate::actors::health::probe_once(&runtime, &http, &id, &check).await;
            (id, outcome)
        };
        ctx.spawn(probe.into_actor(self).map(move |(id, outcome), act, ctx| {
            act.on_probe(key, id, outcome, ctx);
        }));
    }

    fn on_probe(
        &mut self,
        key: Key,
        id: String,
        outcome: Result<(), String>,
        ctx: &mut Context<Self>,
    ) {
        let Some(p) = self.probes.get_mut(&key).filter(|p| p.container_id == id) else {
            return;
        };
        p.in_flight = false;
        let was = p.healthy;
        match outcome {
            Ok(()) => {
                p.failures = 0;
                p.healthy = Some(true);
                if was != Some(true) {
                    self.health_changed(key, id, true, "the probe passes".to_string(), was, ctx);
                }
            }
            Err(why) => {
                if p.since.elapsed() < p.check.start_period.get() {
                    return;
                }
                p.failures += 1;
                if p.failures < p.check.retries {
                    return;
                }
                p.failures = 0;
                p.healthy = Some(false);
                let why = format!(
                    "{} probe(s) in a row failed, the last: {why}",
                    p.check.retries
                );
                if was != Some(false) {
                    self.health_changed(key, id, false, why, was, ctx);
                } else if self.restarts_when_unhealthy(&key) {
                    // Still unhealthy after a restart: the next one, later.
                    self.heal(key, format!("still unhealthy: {why}"), true, ctx);
                }
            }
        }
    }

    fn restarts_when_unhealthy(&self, key: &Key) -> bool {
        self.settings.restart_unhealthy
            && self.directory.is_some()
            && self
                .probes
                .get(key)
                .is_some_and(|p| p.check.on_unhealthy == OnUnhealthy::Restart)
    }

    /// Records a change of health, its event and what follows it.
    fn health_changed(
        &mut self,
        key: Key,
        id: String,
        healthy: bool,
        detail: String,
        was: Option<bool>,
        ctx: &mut Context<Self>,
    ) {
        let on_unhealthy = self
            .probes
            .get(&key)
            .map_or(OnUnhealthy::None, |p| p.check.on_unhealthy);
        // From unknown to healthy is the deploy's own finding: no event.
        let event = match (healthy, was) {
            (true, Some(false)) => Some("healthy"),
            (true, _) => None,
            (false, _) => Some("unhealthy"),
        };
        let restart = !healthy && self.restarts_when_unhealthy(&key);
        let sent = if !healthy && !restart && on_unhealthy != OnUnhealthy::None {
            self.alert(&key, "unhealthy", &detail, ctx)
        } else {
            None
        };
        let registry = self.registry.clone();
        let (service, component) = key.clone();
        let why = format!("unhealthy: {detail}");
        let record = async move {
            let set = SetHealth {
                service: service.clone(),
                component: component.clone(),
                container_id: id,
                healthy,
                detail: detail.clone(),
            };
            if let Ok(Err(e)) = registry.send(set).await {
                tracing::error!(%service, %component, "cannot record health: {e}");
            }
            if let Some(kind) = event {
                record_event(&registry, &service, &component, kind, &detail).await;
            }
            if let Some(sent) = sent {
                let agent = crate::registry::AGENT;
                record_event_by(&registry, &service, &component, "alert-sent", &sent, agent).await;
            }
        };
        ctx.wait(record.into_actor(self));
        if restart {
            self.heal(key, why, true, ctx);
        }
    }
}
