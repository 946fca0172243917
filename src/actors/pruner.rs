//! EventPruner: keeps the registry's events within `[registry]`'s limits
//! (an age, a count per component). It prunes at start and then on an
//! interval; a run that deleted anything is one `events-pruned` event by
//! mcp-agent saying how many and under which limits. Both limits off (0),
//! it does not run.

use std::time::Duration;

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, WrapFuture};

use super::registry::{PruneEvents, RegistryActor};
use super::Peers;
use crate::registry::{now_ms, Pruned, Retention};

const DAY_MS: i64 = 86_400_000;

/// How long events are kept and how often that is enforced.
#[derive(Debug, Clone)]
pub struct PruneSettings {
    pub retention: Retention,
    pub interval: Duration,
}

impl Default for PruneSettings {
    fn default() -> Self {
        PruneSettings {
            retention: Retention {
                max_age_ms: Some(30 * DAY_MS),
                per_component: Some(1000),
            },
            interval: Duration::from_secs(3600),
        }
    }
}

pub struct EventPruner {
    registry: Addr<RegistryActor>,
    settings: PruneSettings,
    /// A run in flight: the next tick does not start another.
    running: bool,
}

/// Starts the pruner under supervision, unless both limits are off.
pub fn start(peers: &Peers, settings: PruneSettings) -> Option<Addr<EventPruner>> {
    if settings.retention.is_off() {
        tracing::info!("[registry] sets no limit: events are kept for ever");
        return None;
    }
    Some(peers.supervise(
        "EventPruner",
        EventPruner {
            registry: peers.registry.clone(),
            settings,
            running: false,
        },
    ))
}

impl EventPruner {
    fn prune(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        self.running = true;
        let registry = self.registry.clone();
        let retention = self.settings.retention;
        let run = async move {
            let pruned = registry
                .send(PruneEvents {
                    now_ms: now_ms(),
                    retention,
                })
                .await;
            match pruned {
                Ok(Ok(Some(event))) => tracing::info!("{}", event.detail),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::warn!("cannot prune events: {e}"),
                Err(e) => tracing::warn!("cannot prune events: {e}"),
            }
        };
        ctx.spawn(run.into_actor(self).map(|(), act, _| act.running = false));
    }
}

/// The `events-pruned` event's detail: how many, and the limits.
pub(super) fn describe(pruned: &Pruned, retention: &Retention) -> String {
    let age = retention
        .max_age_ms
        .map_or("no age limit".to_string(), |ms| {
            format!("keep_events_days = {}", ms / DAY_MS)
        });
    let count = retention
        .per_component
        .map_or("no count limit".to_string(), |n| {
            format!("keep_events_per_component = {n}")
        });
    format!(
        "deleted {} event(s): {} by age, {} by count per component ({age}, {count})",
        pruned.total(),
        pruned.by_age,
        pruned.by_count
    )
}

impl Actor for EventPruner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.prune(ctx);
        ctx.run_interval(self.settings.interval, |act, ctx| act.prune(ctx));
    }
}

impl actix::Supervised for EventPruner {
    /// The run that was in flight went with the old incarnation.
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::registry::{AddEvent, Events};
    use crate::actors::tests::{eventually, harness};
    use crate::registry::AGENT;
    use crate::runtime::fake::FakeRuntime;

    async fn add(h: &crate::actors::tests::Harness, component: &str, n: usize) {
        for i in 0..n {
            h.handles
                .peers
                .registry
                .send(AddEvent {
                    service: "svc".to_string(),
                    component: component.to_string(),
                    kind: "tick".to_string(),
                    detail: format!("{component}#{i}"),
                    by: String::new(),
                })
                .await
                .unwrap()
                .unwrap();
        }
    }

    async fn events(h: &crate::actors::tests::Harness) -> Vec<crate::registry::Event> {
        h.handles
            .peers
            .registry
            .send(Events {
                service: None,
                by: None,
                limit: 10_000,
            })
            .await
            .unwrap()
            .unwrap()
    }

    /// At start and on its interval, each run that deletes is one event.
    #[actix::test]
    async fn prunes_at_start_and_on_the_interval_and_says_so() {
        let h = harness(FakeRuntime::with_images(&[]));
        add(&h, "api", 5).await;
        add(&h, "web", 2).await;
        let settings = PruneSettings {
            retention: Retention {
                max_age_ms: Some(30 * DAY_MS),
                per_component: Some(3),
            },
            interval: Duration::from_millis(50),
        };
        start(&h.handles.peers, settings).unwrap();
        let pruned = eventually("an events-pruned event", Duration::from_secs(3), || async {
            let all = events(&h).await;
            all.iter()
                .find(|e| e.kind == "events-pruned")
                .cloned()
                .ok_or_else(|| format!("{all:?}"))
        })
        .await;
        assert_eq!(pruned.by, AGENT);
        assert_eq!(
            (pruned.service.as_str(), pruned.component.as_str()),
            ("", "")
        );
        assert_eq!(
            pruned.detail,
            "deleted 2 event(s): 0 by age, 2 by count per component \
             (keep_events_days = 30, keep_events_per_component = 3)"
        );
        let api: Vec<String> = events(&h)
            .await
            .into_iter()
            .filter(|e| e.component == "api")
            .map(|e| e.detail)
            .collect();
        assert_eq!(api, ["api#2", "api#3", "api#4"]);

        // More than the limit again: the interval's run prunes them.
        add(&h, "web", 4).await;
        eventually(
            "a second events-pruned event",
            Duration::from_secs(3),
            || async {
                let all = events(&h).await;
                let runs = all.iter().filter(|e| e.kind == "events-pruned").count();
                let web = all.iter().filter(|e| e.component == "web").count();
                (runs == 2 && web == 3)
                    .then_some(())
                    .ok_or_else(|| format!("{runs} run(s), {web} web event(s)"))
            },
        )
        .await;
    }

    /// A run's own event never makes the next run prune: the node's events
    /// are at the limit with it already.
    #[actix::test]
    async fn the_pruning_event_does_not_feed_the_next_pruning() {
        let h = harness(FakeRuntime::with_images(&[]));
        let registry = &h.handles.peers.registry;
        for i in 0..3 {
            registry
                .send(AddEvent {
                    service: String::new(),
                    component: String::new(),
                    kind: "actor-restarted".to_string(),
                    detail: format!("#{i}"),
                    by: AGENT.to_string(),
                })
                .await
                .unwrap()
                .unwrap();
        }
        add(&h, "api", 4).await;
        let retention = Retention {
            max_age_ms: None,
            per_component: Some(3),
        };
        let prune = || async {
            registry
                .send(PruneEvents {
                    now_ms: now_ms(),
                    retention,
                })
                .await
                .unwrap()
                .unwrap()
        };
        let event = prune().await.expect("api's oldest event pruned");
        assert_eq!(event.kind, "events-pruned");
        assert!(event.detail.starts_with("deleted 1 event(s)"), "{event:?}");
        assert_eq!(prune().await, None);
        assert_eq!(prune().await, None);
        let node: Vec<String> = events(&h)
            .await
            .into_iter()
            .filter(|e| e.service.is_empty())
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            node,
            ["actor-restarted", "actor-restarted", "events-pruned"]
        );
    }

    #[actix::test]
    async fn no_limit_is_no_pruner() {
        let h = harness(FakeRuntime::with_images(&[]));
        let off = PruneSettings {
            retention: Retention::default(),
            interval: Duration::from_millis(50),
        };
        assert!(start(&h.handles.peers, off).is_none());
    }

    #[test]
    fn the_event_says_how_many_and_the_limits() {
        let text = describe(
            &Pruned {
                by_age: 1,
                by_count: 0,
            },
            &Retention {
                max_age_ms: Some(DAY_MS),
                per_component: None,
            },
        );
        assert_eq!(
            text,
            "deleted 1 event(s): 1 by age, 0 by count per component \
             (keep_events_days = 1, no count limit)"
        );
    }
}
