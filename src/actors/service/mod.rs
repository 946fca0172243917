//! ServiceActor: one per service. Its operations (deploy, start, stop,
//! rollback, adopt, forget) wait their turn in the service's queue
//! (operations.rs) and run one at a time; inside one, the components are
//! worked on concurrently by their ComponentActors. The actor's mailbox stays
//! free while an operation runs, so reads (plan) and the recording of
//! desired state (sync) are answered at once, and different services never
//! wait on each other.

use std::collections::HashMap;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, ResponseActFuture,
    ResponseFuture, WrapFuture,
};
use futures::future::join_all;

use super::component::{
    ActOn, ComponentAction, ComponentActor, ComponentOutcome, DeployComponent, DeployHow,
    FinishInterrupted, ProgressSender,
};
use super::registry::{
    AddEvent, Adopt, DeleteComponentsExcept, DeleteService, GetService, GetServiceState,
    PushDefinition, SetDesired,
};
use super::runtime::{ImageId, InspectSpec};
use super::watch::Reevaluate;
use super::{AgentError, Peers};
use crate::names::Name;
use crate::registry::{ComponentRow, DesiredState};
use crate::spec::ServiceDef;

mod exec;
mod healing;
mod order;
mod purge;
mod secrets;
pub use exec::OpenExec;
pub use healing::{Reconcile, Recover};
pub use purge::{Purge, PurgeReport};
pub use secrets::{ListSecrets, RemoveSecret, SetSecret};

pub struct ServiceActor {
    name: Name,
    peers: Peers,
    components: HashMap<Name, Addr<ComponentActor>>,
}

impl ServiceActor {
    pub fn new(name: Name, peers: Peers) -> Self {
        ServiceActor {
            name,
            peers,
            components: HashMap::new(),
        }
    }

    /// The component's actor, started (supervised) on first use.
    fn component(&mut self, name: &Name) -> Addr<ComponentActor> {
        if let Some(addr) = self.components.get(name).filter(|a| a.connected()) {
            return addr.clone();
        }
        let actor = ComponentActor::new(self.name.clone(), name.clone(), self.peers.clone());
        let addr = self.peers.supervise("ComponentActor", actor);
        self.components.insert(name.clone(), addr.clone());
        addr
    }
}

impl Actor for ServiceActor {
    type Context = Context<Self>;
}

impl actix::Supervised for ServiceActor {
    /// Fresh ComponentActors from now on: the old ones finish what they have
    /// queued and stop (no address is left to them), and the components'
    /// leases keep the new ones from working on a container at the same time.
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.components.clear();
    }
}

pub type ServiceResult = Result<Vec<ComponentOutcome>, AgentError>;

/// Push a definition and replace the containers of all its components, or of
/// one (`component`), leaving the others untouched.
#[derive(Debug, Clone)]
pub struct Deploy {
    pub def: ServiceDef,
    pub component: Option<Name>,
    /// Put the previous spec back when a new one does not become healthy.
    pub rollback: bool,
    /// Recreate components whose spec did not change.
    pub force: bool,
    /// Where the components report their steps, if anyone follows.
    pub progress: Option<ProgressSender>,
    /// After this, a component still pulling or waiting for its health
    /// check gives up (and rolls back).
    pub deadline: tokio::time::Instant,
    /// Who asked: the account's name (events record it).
    pub by: String,
    /// Leave components the definition no longer names as they are (by
    /// default a deploy of the whole service undeploys them).
    pub keep_removed: bool,
    /// Pull every image, whatever the components' pull policies say.
    pub pull: bool,
    /// The caller's token, for a registry that takes it.
    pub caller: Option<crate::runtime::registries::Caller>,
}

impl Message for Deploy {
    type Result = ServiceResult;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleAction {
    Start,
    Stop,
    /// Return to the previous deployed spec, and run it.
    Rollback,
    /// Stop, then start with the health check.
    Restart,
    /// Stop and remove the containers, desired state stopped; history and
    /// files are kept.
    Undeploy,
}

impl LifecycleAction {
    fn desired(self) -> DesiredState {
        match self {
            LifecycleAction::Start | LifecycleAction::Rollback | LifecycleAction::Restart => {
                DesiredState::Running
            }
            LifecycleAction::Stop | LifecycleAction::Undeploy => DesiredState::Stopped,
        }
    }

    fn for_component(self) -> ComponentAction {
        match self {
            LifecycleAction::Start => ComponentAction::Start,
            LifecycleAction::Stop => ComponentAction::Stop,
            LifecycleAction::Rollback => ComponentAction::Rollback,
            LifecycleAction::Restart => ComponentAction::Restart,
            LifecycleAction::Undeploy => ComponentAction::Undeploy,
        }
    }

    /// Whether what depends on a component goes first (taking things down).
    fn dependents_first(self) -> bool {
        self.desired() == DesiredState::Stopped
    }
}

/// Set the desired state and act on it, for all components or one.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub action: LifecycleAction,
    pub component: Option<Name>,
    /// Who asked.
    pub by: String,
    /// Where the components report their steps, if anyone follows.
    pub progress: Option<ProgressSender>,
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

/// Sends each component its message, in the order `deps` asks for
/// (order.rs), and gathers the outcomes.
async fn each<M>(
    service: &Name,
    targets: Vec<(Name, Addr<ComponentActor>, M)>,
    deps: &order::Dependencies,
) -> Vec<ComponentOutcome>
where
    M: Message<Result = ComponentOutcome> + Clone + Send + 'static,
    ComponentActor: Handler<M>,
{
    let names: Vec<Name> = targets.iter().map(|(n, _, _)| n.clone()).collect();
    let sends: HashMap<Name, (Addr<ComponentActor>, M)> = targets
        .into_iter()
        .map(|(n, addr, msg)| (n, (addr, msg)))
        .collect();
    order::in_order(service, names, deps, |name| {
        let (addr, msg) = sends[&name].clone();
        async move {
            Some(
                addr.send(msg)
                    .await
                    .unwrap_or_else(|e| mailbox_outcome(&name, e)),
            )
        }
    })
    .await
    .into_iter()
    .flatten()
    .collect()
}

impl Handler<Deploy> for ServiceActor {
    type Result = ResponseFuture<ServiceResult>;

    fn handle(&mut self, msg: Deploy, ctx: &mut Context<Self>) -> Self::Result {
        let Deploy {
            def,
            component,
            rollback,
            force,
            progress,
            deadline,
            by,
            keep_removed,
            pull,
            caller,
        } = msg;
        let checked = if def.name != self.name {
            Err(AgentError::Internal(format!(
                "deploy of {} reached the actor of {}",
                def.name, self.name
            )))
        } else if let Some(c) = component.as_ref().filter(|c| def.component(c).is_none()) {
            let known: Vec<String> = def.components.iter().map(|c| c.name.to_string()).collect();
            Err(unknown_component(&self.name, c, &known))
        } else {
            // Before anything is recorded or touched.
            self.peers.settings.admit(&def)
        };
        let how = DeployHow {
            start: def.active,
            rollback,
            force,
            pull,
            deadline,
        };
        let start = def.active;
        let targets: Vec<_> = def
            .components
            .iter()
            .filter(|c| component.as_ref().is_none_or(|only| only == &c.name))
            .map(|c| {
                let msg = DeployComponent {
                    spec: c.clone(),
                    how,
                    progress: progress.clone(),
                    by: by.clone(),
                    caller: caller.clone(),
                };
                (c.name.clone(), self.component(&c.name), msg)
            })
            .collect();
        drop(progress);
        let needed: Vec<_> = def
            .components
            .iter()
            .filter(|c| component.as_ref().is_none_or(|only| only == &c.name))
            .cloned()
            .collect();
        let store = self.peers.settings.secrets.clone();
        let deps = order::dependencies(&def.components);
        let registry = self.peers.registry.clone();
        let ops = self.peers.ops.clone();
        let name = self.name.clone();
        let service = self.name.to_string();
        let myself = ctx.address();
        let whole = component.is_none() && !keep_removed;
        let defined: Vec<String> = def.components.iter().map(|c| c.name.to_string()).collect();
        Box::pin(async move {
            checked?;
            let _turn = ops.service_turn(&service).await;
            // In the turn, so no secret change lands between this and the
            // creates: a deploy that lacks one changes nothing at all.
            secrets::require(store, name.clone(), needed).await?;
            // Intent first: a crash from here on leaves the registry knowing
            // what was asked for.
            registry
                .send(PushDefinition {
                    def,
                    only: component,
                    desired: DesiredState::from_active(start),
                })
                .await??;
            let mut outcomes = each(&name, targets, &deps).await;
            if whole {
                outcomes.extend(undeploy_removed(&name, &registry, myself, &defined, &by).await?);
            }
            Ok(outcomes)
        })
    }
}

/// Undeploys the components the registry has that the deployed definition
/// (`defined`) no longer names, unless they are undeployed already.
async fn undeploy_removed(
    service: &Name,
    registry: &Addr<super::registry::RegistryActor>,
    myself: Addr<ServiceActor>,
    defined: &[String],
    by: &str,
) -> Result<Vec<ComponentOutcome>, AgentError> {
    let row = registry
        .send(GetServiceState {
            name: service.to_string(),
        })
        .await??;
    let removed: Vec<Name> = row
        .map(|r| r.components)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !defined.contains(&c.name))
        .filter(|c| c.desired_state == DesiredState::Running || c.container_id.is_some())
        .filter_map(|c| Name::parse(&c.name).ok())
        .collect();
    if removed.is_empty() {
        return Ok(Vec::new());
    }
    for c in &removed {
        registry
            .send(SetDesired {
                service: service.to_string(),
                component: Some(c.to_string()),
                desired: DesiredState::Stopped,
            })
            .await??;
    }
    let addrs = myself.send(ComponentsFor(removed.clone())).await?;
    let sends = removed
        .into_iter()
        .zip(addrs)
        .map(|(c, addr)| {
            let msg = ActOn {
                action: ComponentAction::Undeploy,
                by: by.to_string(),
                progress: None,
            };
            (c, addr, msg)
        })
        .collect();
    Ok(each(service, sends, &Default::default()).await)
}

/// The actors of these components (started on first use).
#[derive(Debug, Clone)]
pub struct ComponentsFor(pub Vec<Name>);

impl Message for ComponentsFor {
    type Result = Vec<Addr<ComponentActor>>;
}

impl Handler<ComponentsFor> for ServiceActor {
    type Result = actix::MessageResult<ComponentsFor>;
    fn handle(&mut self, msg: ComponentsFor, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(msg.0.iter().map(|c| self.component(c)).collect())
    }
}

impl Handler<Lifecycle> for ServiceActor {
    type Result = ResponseActFuture<Self, ServiceResult>;

    fn handle(&mut self, msg: Lifecycle, _: &mut Context<Self>) -> Self::Result {
        let service = self.name.clone();
        let registry = self.peers.registry.clone();
        let ops = self.peers.ops.clone();
        // The component list comes from the registry, so the actors are looked
        // up once it has answered, in the service's turn.
        let prepare = async move {
            let turn = ops.service_turn(service.as_str()).await;
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
            let known: Vec<String> = row
                .components
                .iter()
                .map(|c| c.state.name.clone())
                .collect();
            let deps = order::dependencies(
                row.components
                    .iter()
                    .map(|c| c.deployed_spec.as_ref().unwrap_or(&c.spec)),
            );
            let deps = if msg.action.dependents_first() {
                order::dependents(&deps)
            } else {
                deps
            };
            if let Some(c) = &msg.component {
                if !known.iter().any(|k| k == c.as_str()) {
                    return Err(unknown_component(&service, c, &known));
                }
            }
            registry
                .send(SetDesired {
                    service: service.to_string(),
                    component: msg.component.as_ref().map(|c| c.to_string()),
                    desired: msg.action.desired(),
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
            Ok((turn, targets, msg.action, msg.by, deps))
        };
        let progress = msg.progress.clone();
        Box::pin(prepare.into_actor(self).then(move |prepared, act, _| {
            let service = act.name.clone();
            let work = prepared.map(|(turn, targets, action, by, deps)| {
                let action = action.for_component();
                let sends: Vec<_> = targets
                    .into_iter()
                    .map(|t| {
                        let msg = ActOn {
                            action,
                            by: by.clone(),
                            progress: progress.clone(),
                        };
                        (t.clone(), act.component(&t), msg)
                    })
                    .collect();
                (turn, sends, deps)
            });
            async move {
                let (_turn, sends, deps) = work?;
                Ok(each(&service, sends, &deps).await)
            }
            .into_actor(act)
        }))
    }
}

/// Finish the operations the agent's death interrupted on these components
/// (ComponentActor `FinishInterrupted`), in the service's turn.
#[derive(Debug, Clone)]
pub struct ResolveInterrupted {
    pub components: Vec<Name>,
}

impl Message for ResolveInterrupted {
    type Result = Vec<ComponentOutcome>;
}

impl Handler<ResolveInterrupted> for ServiceActor {
    type Result = ResponseFuture<Vec<ComponentOutcome>>;

    fn handle(&mut self, msg: ResolveInterrupted, _: &mut Context<Self>) -> Self::Result {
        let ops = self.peers.ops.clone();
        let service = self.name.to_string();
        let targets: Vec<_> = msg.components.iter().map(|c| self.component(c)).collect();
        Box::pin(async move {
            let _turn = ops.service_turn(&service).await;
            join_all(
                targets
                    .into_iter()
                    .map(|addr| async move { addr.send(FinishInterrupted).await.ok().flatten() }),
            )
            .await
            .into_iter()
            .flatten()
            .collect()
        })
    }
}

/// What deploying `def` (or its `component`) would change, and what the
/// node's policy refuses. Reads only.
#[derive(Debug, Clone)]
pub struct PlanDeploy {
    pub def: ServiceDef,
    pub component: Option<Name>,
    pub keep_removed: bool,
}

#[derive(Debug, Clone, Default)]
pub struct DeployPlan {
    pub changes: Vec<crate::plan::Change>,
    pub refusals: Vec<String>,
}

impl Message for PlanDeploy {
    type Result = Result<DeployPlan, AgentError>;
}

impl Handler<PlanDeploy> for ServiceActor {
    type Result = ResponseFuture<Result<DeployPlan, AgentError>>;

    fn handle(&mut self, msg: PlanDeploy, _: &mut Context<Self>) -> Self::Result {
        let registry = self.peers.registry.clone();
        let runtime = self.peers.runtime.clone();
        let settings = self.peers.settings.clone();
        let service = self.name.clone();
        Box::pin(async move {
            let PlanDeploy {
                def,
                component,
                keep_removed,
            } = msg;
            if let Some(c) = component.as_ref().filter(|c| def.component(c).is_none()) {
                let known: Vec<String> =
                    def.components.iter().map(|c| c.name.to_string()).collect();
                return Err(unknown_component(&service, c, &known));
            }
            // Another node is an error; the policy's refusals are the plan's.
            let refusals = match settings.admit(&def) {
                Err(AgentError::PermissionDenied(_)) => settings
                    .policy
                    .check(&def)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                Err(other) => return Err(other),
                Ok(()) => Vec::new(),
            };
            let row = registry
                .send(GetService {
                    name: service.to_string(),
                })
                .await??;
            let deployed = crate::plan::Deployed {
                active: row.as_ref().map(|r| r.active),
                components: row
                    .map(|r| r.components)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| {
                        let unverified = match (&c.pending_spec, c.state.verified_at_ms) {
                            (Some(p), _) => Some(format!(
                                "an operation moving it to {} was interrupted",
                                p.image
                            )),
                            (None, None) => Some("it did not pass its health check".to_string()),
                            (None, Some(_)) => None,
                        };
                        let undeployed = c.state.desired_state == DesiredState::Stopped
                            && c.state.container_id.is_none();
                        Some(crate::plan::DeployedComponent {
                            spec: c.deployed_spec?,
                            unverified,
                            undeployed,
                            image_id: c.state.image_id,
                        })
                    })
                    .collect(),
            };
            let mut images_now = std::collections::BTreeMap::new();
            for c in &def.components {
                let image = c.image.to_string();
                // A runtime that cannot answer leaves the ids out of the plan.
                if let Ok(Ok(Some(id))) = runtime
                    .send(ImageId {
                        image: image.clone(),
                    })
                    .await
                {
                    images_now.insert(image, id);
                }
            }
            Ok(DeployPlan {
                changes: crate::plan::plan(
                    &deployed,
                    &def,
                    component.as_ref(),
                    keep_removed,
                    &images_now,
                ),
                refusals,
            })
        })
    }
}

/// Record a definition as desired state without touching containers, and
/// say which recorded components it no longer has. Not an operation: it
/// does not wait for the service's queue.
#[derive(Debug, Clone)]
pub struct SyncService {
    pub def: ServiceDef,
}

impl Message for SyncService {
    type Result = Result<Vec<String>, AgentError>;
}

impl Handler<SyncService> for ServiceActor {
    type Result = ResponseFuture<Result<Vec<String>, AgentError>>;

    fn handle(&mut self, msg: SyncService, _: &mut Context<Self>) -> Self::Result {
        let registry = self.peers.registry.clone();
        let watch = self.peers.watch.clone();
        let admitted = self.peers.settings.admit(&msg.def);
        Box::pin(async move {
            admitted?;
            let SyncService { def } = msg;
            let service = def.name.to_string();
            let keep: Vec<String> = def.components.iter().map(|c| c.name.to_string()).collect();
            let desired = DesiredState::from_active(def.active);
            registry
                .send(PushDefinition {
                    def,
                    only: None,
                    desired,
                })
                .await??;
            let row = registry
                .send(GetServiceState {
                    name: service.clone(),
                })
                .await??;
            let extra = row
                .map(|r| r.components)
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.name)
                .filter(|n| !keep.contains(n))
                .collect();
            watch.do_send(Reevaluate { service });
            Ok(extra)
        })
    }
}

/// Forget registry entries (`mcp sync --prune`): the whole service, or its
/// components not in `keep`. An operation: it waits for the service's
/// queue. Containers are left as they are (they show as unmanaged).
#[derive(Debug, Clone)]
pub struct Forget {
    /// None: the whole service.
    pub keep: Option<Vec<String>>,
    /// Who asked (recorded with a `forgotten` event).
    pub by: String,
}

impl Message for Forget {
    /// What was forgotten: component names, or the service's own name.
    type Result = Result<Vec<String>, AgentError>;
}

impl Handler<Forget> for ServiceActor {
    type Result = ResponseFuture<Result<Vec<String>, AgentError>>;

    fn handle(&mut self, msg: Forget, _: &mut Context<Self>) -> Self::Result {
        let registry = self.peers.registry.clone();
        let watch = self.peers.watch.clone();
        let ops = self.peers.ops.clone();
        let service = self.name.to_string();
        Box::pin(async move {
            let _turn = ops.service_turn(&service).await;
            let forgotten = match msg.keep {
                Some(keep) => {
                    registry
                        .send(DeleteComponentsExcept {
                            service: service.clone(),
                            keep,
                        })
                        .await??
                }
                None => {
                    registry
                        .send(DeleteService {
                            name: service.clone(),
                        })
                        .await??;
                    vec![service.clone()]
                }
            };
            for what in &forgotten {
                let component = if what == &service { "" } else { what.as_str() };
                registry
                    .send(AddEvent {
                        service: service.clone(),
                        component: component.to_string(),
                        kind: "forgotten".to_string(),
                        detail: "pruned from the registry (its containers, if any, are left \
                                 as they are)"
                            .to_string(),
                        by: msg.by.clone(),
                    })
                    .await??;
            }
            watch.do_send(Reevaluate { service });
            Ok(forgotten)
        })
    }
}

/// An unmanaged container becomes one of this service's components.
#[derive(Debug, Clone)]
pub struct AdoptComponent {
    pub container: String,
    pub component: Name,
    /// Who asked.
    pub by: String,
}

impl Message for AdoptComponent {
    type Result = Result<ComponentRow, AgentError>;
}

impl Handler<AdoptComponent> for ServiceActor {
    type Result = ResponseFuture<Result<ComponentRow, AgentError>>;

    fn handle(&mut self, msg: AdoptComponent, _: &mut Context<Self>) -> Self::Result {
        let peers = self.peers.clone();
        let service = self.name.clone();
        Box::pin(async move {
            let _turn = peers.ops.service_turn(service.as_str()).await;
            // Asked of the runtime now, so a container started a moment ago
            // is found without waiting for a scan.
            let (info, running) = peers
                .runtime
                .send(InspectSpec {
                    name_or_id: msg.container.clone(),
                })
                .await??
                .ok_or_else(|| {
                    AgentError::NotFound(format!(
                        "there is no container named {} on node {} (`mcp ps` lists them)",
                        msg.container, peers.settings.node
                    ))
                })?;
            if let Some((s, c)) = info.owner() {
                return Err(AgentError::InvalidArgument(format!(
                    "container {} is already managed, as {s}/{c}",
                    info.name
                )));
            }
            let spec =
                crate::spec::ComponentDef::from_running(msg.component, running).map_err(|why| {
                    AgentError::InvalidArgument(format!(
                        "container {} cannot be described by a definition: {why}",
                        info.name
                    ))
                })?;
            let refusals = peers.settings.policy.check_component(&service, &spec);
            if !refusals.is_empty() {
                return Err(AgentError::PermissionDenied(crate::policy::describe(
                    &refusals,
                )));
            }
            let container = crate::registry::AdoptedContainer {
                id: info.id,
                name: info.name,
                observed_state: info.state,
            };
            let row = peers
                .registry
                .send(Adopt {
                    container,
                    service: service.clone(),
                    spec,
                    by: msg.by,
                })
                .await?
                .map_err(|e| match e {
                    crate::registry::AdoptError::Registry(r) => AgentError::from(r),
                    crate::registry::AdoptError::NoSuchContainer(_) => {
                        AgentError::NotFound(e.to_string())
                    }
                    other => AgentError::InvalidArgument(other.to_string()),
                })?;
            peers.watch.do_send(Reevaluate {
                service: service.to_string(),
            });
            Ok(row)
        })
    }
}

/// The component's actor (tests that make one panic).
#[cfg(test)]
#[derive(Debug, Clone)]
pub struct ComponentFor(pub Name);

#[cfg(test)]
impl Message for ComponentFor {
    type Result = Addr<ComponentActor>;
}

#[cfg(test)]
impl Handler<ComponentFor> for ServiceActor {
    type Result = actix::MessageResult<ComponentFor>;
    fn handle(&mut self, msg: ComponentFor, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.component(&msg.0))
    }
}

#[cfg(test)]
impl Handler<super::supervisor::Crash> for ServiceActor {
    type Result = ();
    fn handle(&mut self, _: super::supervisor::Crash, ctx: &mut Context<Self>) {
        super::supervisor::panic_later(ctx);
    }
}
