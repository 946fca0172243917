//! WatchActor: what really runs on the node. `Observe` is a live scan of the
//! runtime that updates the observed state of every managed component and
//! reports every container, managed or not.

use std::collections::HashMap;

use actix::{Actor, Addr, Context, Handler, Message, ResponseFuture};

use super::registry::{ListServices, RecordObserved, RegistryActor};
use super::runtime::{ListContainers, RuntimeActor};
use super::AgentError;
use crate::registry::DesiredState;

pub struct WatchActor {
    registry: Addr<RegistryActor>,
    runtime: Addr<RuntimeActor>,
}

impl WatchActor {
    pub fn new(registry: Addr<RegistryActor>, runtime: Addr<RuntimeActor>) -> Self {
        WatchActor { registry, runtime }
    }
}

impl Actor for WatchActor {
    type Context = Context<Self>;
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

#[derive(Debug, Clone)]
pub struct Observe;

impl Message for Observe {
    type Result = Result<Vec<ObservedContainer>, AgentError>;
}

impl Handler<Observe> for WatchActor {
    type Result = ResponseFuture<Result<Vec<ObservedContainer>, AgentError>>;

    fn handle(&mut self, _: Observe, _: &mut Context<Self>) -> Self::Result {
        let registry = self.registry.clone();
        let runtime = self.runtime.clone();
        Box::pin(async move {
            let (containers, services) = futures::join!(
                runtime.send(ListContainers {}),
                registry.send(ListServices {})
            );
            let containers = containers??;
            let services = services??;
            let mut managed: HashMap<(String, String), DesiredState> = services
                .iter()
                .flat_map(|s| s.components.iter())
                .map(|c| ((c.service.clone(), c.name.clone()), c.desired_state))
                .collect();
            let mut rows = Vec::with_capacity(containers.len());
            let mut observations = Vec::new();
            for c in containers {
                let owner = c.owner().map(|(s, n)| (s.to_string(), n.to_string()));
                let desired = owner.as_ref().and_then(|key| managed.remove(key));
                let (service, component) = match (&owner, desired) {
                    (Some((s, n)), Some(_)) => {
                        observations.push((
                            s.clone(),
                            n.clone(),
                            Some(c.id.clone()),
                            c.state.clone(),
                        ));
                        (s.clone(), n.clone())
                    }
                    // Labelled by MCP but no longer in the registry, or not ours at all.
                    _ => Default::default(),
                };
                rows.push(ObservedContainer {
                    name: c.name,
                    id: c.id,
                    image: c.image,
                    state: c.state,
                    status: c.status,
                    service,
                    component,
                    desired_state: desired.unwrap_or(DesiredState::Ignore),
                });
            }
            // Managed components whose container is gone.
            let mut absent: Vec<_> = managed.into_iter().collect();
            absent.sort_by(|a, b| a.0.cmp(&b.0));
            for ((service, component), desired) in absent {
                observations.push((
                    service.clone(),
                    component.clone(),
                    None,
                    "absent".to_string(),
                ));
                rows.push(ObservedContainer {
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
            registry.send(RecordObserved { observations }).await??;
            Ok(rows)
        })
    }
}
