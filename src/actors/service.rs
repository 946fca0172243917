//! ServiceActor: one per service. Operations on a service queue in its
//! mailbox and run one at a time (AtomicResponse); inside one, the components
//! are worked on concurrently. Different services never wait on each other.

use std::collections::HashMap;

use actix::{Actor, ActorFutureExt, Addr, AtomicResponse, Context, Handler, Message, WrapFuture};
use futures::future::join_all;

use super::component::{
    ComponentActor, ComponentOutcome, DeployComponent, StartComponent, StopComponent,
};
use super::registry::{GetService, PushDefinition, RegistryActor, SetDesired};
use super::runtime::RuntimeActor;
use super::{AgentError, AgentSettings};
use crate::names::Name;
use crate::registry::DesiredState;
use crate::spec::ServiceDef;

pub struct ServiceActor {
    name: Name,
    registry: Addr<RegistryActor>,
    runtime: Addr<RuntimeActor>,
    settings: AgentSettings,
    components: HashMap<Name, Addr<ComponentActor>>,
}

impl ServiceActor {
    pub fn new(
        name: Name,
        registry: Addr<RegistryActor>,
        runtime: Addr<RuntimeActor>,
        settings: AgentSettings,
    ) -> Self {
        ServiceActor {
            name,
            registry,
            runtime,
            settings,
            components: HashMap::new(),
        }
    }

    /// The component's actor, started on first use (or again if it died).
    fn component(&mut self, name: &Name) -> Addr<ComponentActor> {
        if let Some(addr) = self.components.get(name).filter(|a| a.connected()) {
            return addr.clone();
        }
        let addr = ComponentActor::new(
            self.name.clone(),
            name.clone(),
            self.registry.clone(),
            self.runtime.clone(),
            self.settings.clone(),
        )
        .start();
        self.components.insert(name.clone(), addr.clone());
        addr
    }
}

impl Actor for ServiceActor {
    type Context = Context<Self>;
}

pub type ServiceResult = Result<Vec<ComponentOutcome>, AgentError>;

/// Push a definition and replace the containers of all its components, or of
/// one (`component`), leaving the others untouched.
#[derive(Debug, Clone)]
pub struct Deploy {
    pub def: ServiceDef,
    pub component: Option<Name>,
}

impl Message for Deploy {
    type Result = ServiceResult;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleAction {
    Start,
    Stop,
}

/// Set the desired state and act on it, for all components or one.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub action: LifecycleAction,
    pub component: Option<Name>,
}

impl Message for Lifecycle {
    type Result = ServiceResult;
}

fn mailbox_outcome(component: &Name, e: actix::MailboxError) -> ComponentOutcome {
    ComponentOutcome {
        component: component.to_string(),
        result: Err(AgentError::from(e)),
        container_id: None,
        observed_state: "unknown".to_string(),
    }
}

fn unknown_component(service: &Name, component: &Name, known: &[String]) -> AgentError {
    AgentError::NotFound(format!(
        "service {service} has no component {component} (components: {})",
        known.join(", ")
    ))
}

impl Handler<Deploy> for ServiceActor {
    type Result = AtomicResponse<Self, ServiceResult>;

    fn handle(&mut self, msg: Deploy, _: &mut Context<Self>) -> Self::Result {
        let Deploy { def, component } = msg;
        let checked = if def.name != self.name {
            Err(AgentError::Internal(format!(
                "deploy of {} reached the actor of {}",
                def.name, self.name
            )))
        } else if let Some(c) = component.as_ref().filter(|c| def.component(c).is_none()) {
            let known: Vec<String> = def.components.iter().map(|c| c.name.to_string()).collect();
            Err(unknown_component(&self.name, c, &known))
        } else {
            Ok(())
        };
        let targets: Vec<_> = def
            .components
            .iter()
            .filter(|c| component.as_ref().is_none_or(|only| only == &c.name))
            .map(|c| (c.name.clone(), c.clone(), self.component(&c.name)))
            .collect();
        let registry = self.registry.clone();
        let start = def.active;
        let fut = async move {
            checked?;
            // Intent first: a crash from here on leaves the registry knowing
            // what was asked for.
            registry
                .send(PushDefinition {
                    def,
                    only: component,
                    desired: DesiredState::from_active(start),
                })
                .await??;
            let outcomes = join_all(targets.into_iter().map(|(name, spec, addr)| async move {
                addr.send(DeployComponent { spec, start })
                    .await
                    .unwrap_or_else(|e| mailbox_outcome(&name, e))
            }))
            .await;
            Ok(outcomes)
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(|r, _, _| r)))
    }
}

impl Handler<Lifecycle> for ServiceActor {
    type Result = AtomicResponse<Self, ServiceResult>;

    fn handle(&mut self, msg: Lifecycle, ctx: &mut Context<Self>) -> Self::Result {
        let service = self.name.clone();
        let registry = self.registry.clone();
        // The component list comes from the registry, so the actors are looked
        // up once it has answered.
        let fut = async move {
            let row = registry
                .send(GetService {
                    name: service.to_string(),
                })
                .await??
                .ok_or_else(|| {
                    AgentError::NotFound(format!(
                        "service {service} is not known to this agent: run `mcp deploy {service}` first"
                    ))
                })?;
            let known: Vec<String> = row.components.iter().map(|c| c.name.clone()).collect();
            if let Some(c) = &msg.component {
                if !known.iter().any(|k| k == c.as_str()) {
                    return Err(unknown_component(&service, c, &known));
                }
            }
            let desired = match msg.action {
                LifecycleAction::Start => DesiredState::Running,
                LifecycleAction::Stop => DesiredState::Stopped,
            };
            registry
                .send(SetDesired {
                    service: service.to_string(),
                    component: msg.component.as_ref().map(|c| c.to_string()),
                    desired,
                })
                .await??;
            let targets: Vec<Name> = known
                .iter()
                .filter(|k| {
                    msg.component
                        .as_ref()
                        .is_none_or(|c| c.as_str() == k.as_str())
                })
                .filter_map(|k| Name::parse(k).ok())
                .collect();
            Ok((targets, msg.action))
        };
        let _ = ctx;
        AtomicResponse::new(Box::pin(fut.into_actor(self).then(|prepared, act, _| {
            let addrs: Result<Vec<_>, AgentError> = prepared.map(|(targets, action)| {
                targets
                    .into_iter()
                    .map(|t| (act.component(&t), t, action))
                    .collect()
            });
            async move {
                let addrs = addrs?;
                Ok(
                    join_all(addrs.into_iter().map(|(addr, name, action)| async move {
                        let sent = match action {
                            LifecycleAction::Start => addr.send(StartComponent).await,
                            LifecycleAction::Stop => addr.send(StopComponent).await,
                        };
                        sent.unwrap_or_else(|e| mailbox_outcome(&name, e))
                    }))
                    .await,
                )
            }
            .into_actor(act)
        })))
    }
}
