//! `mcp status`: a live scan, drift as it sees it, and recent events.

use super::*;

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

/// A query about a service the node does not know.
pub fn unknown_service(service: &str, node: &str) -> AgentError {
    AgentError::NotFound(format!(
        "service {service} is not known on node {node} (`mcp list` shows what is; \
         `mcp deploy {service}` deploys it)"
    ))
}

impl Message for StatusQuery {
    type Result = Result<StatusReport, AgentError>;
}

impl Handler<StatusQuery> for WatchActor {
    type Result = ResponseActFuture<Self, Result<StatusReport, AgentError>>;

    fn handle(&mut self, msg: StatusQuery, _: &mut Context<Self>) -> Self::Result {
        let registry = self.registry.clone();
        let act_node = self.node.clone();
        Box::pin(self.observe().then(move |observed, act, _| {
            let busy: HashSet<Key> = act.ops.busy_components().into_iter().collect();
            async move {
                let wanted = |s: &str| msg.service.as_deref().is_none_or(|w| w == s);
                let containers: Vec<ObservedContainer> = observed?
                    .into_iter()
                    .filter(|c| msg.service.is_none() || wanted(&c.service))
                    .collect();
                // Drift as this scan sees it; `since` from the registry when
                // the watch had already noticed.
                let services = registry.send(ListServices {}).await??;
                if let Some(service) = &msg.service {
                    if !services.iter().any(|s| &s.name == service) {
                        return Err(unknown_service(service, &act_node));
                    }
                }
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
                    .send(crate::actors::registry::Events {
                        service: msg.service.clone(),
                        by: None,
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
