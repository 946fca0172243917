//! The service's side of what the agent does on its own (recovery.rs, the
//! watch's reconciliation): operations in the service's turn, like an
//! operator's, carried out by its ComponentActors as `mcp-agent`.

use actix::{ActorFutureExt, Handler, Message, ResponseActFuture, ResponseFuture, WrapFuture};

use super::order;
use super::ServiceActor;
use crate::actors::component::{ComponentOutcome, ReconcileComponent, RecoverComponent};
use crate::actors::registry::GetService;
use crate::actors::AgentError;
use crate::names::Name;
use crate::registry::DesiredState;

/// Start what should run and does not, dependencies first. The outcomes of
/// the components it acted on (or, with `dry_run`, would act on).
#[derive(Debug, Clone)]
pub struct Recover {
    pub dry_run: bool,
}

impl Message for Recover {
    type Result = Result<Vec<ComponentOutcome>, AgentError>;
}

impl Handler<Recover> for ServiceActor {
    type Result = ResponseActFuture<Self, Result<Vec<ComponentOutcome>, AgentError>>;

    fn handle(&mut self, msg: Recover, _: &mut actix::Context<Self>) -> Self::Result {
        let registry = self.peers.registry.clone();
        let ops = self.peers.ops.clone();
        let service = self.name.clone();
        let prepare = async move {
            let turn = ops.service_turn(service.as_str()).await;
            let row = registry
                .send(GetService {
                    name: service.to_string(),
                })
                .await??;
            let components = row.map(|r| r.components).unwrap_or_default();
            let deps = order::dependencies(
                components
                    .iter()
                    .map(|c| c.deployed_spec.as_ref().unwrap_or(&c.spec)),
            );
            let targets: Vec<Name> = components
                .iter()
                .filter(|c| c.state.desired_state == DesiredState::Running)
                .filter_map(|c| Name::parse(&c.state.name).ok())
                .collect();
            Ok::<_, AgentError>((turn, targets, deps))
        };
        Box::pin(prepare.into_actor(self).then(move |prepared, act, _| {
            let service = act.name.clone();
            let work = prepared.map(|(turn, targets, deps)| {
                let addrs: Vec<_> = targets
                    .iter()
                    .map(|t| (t.clone(), act.component(t)))
                    .collect();
                (turn, targets, deps, addrs)
            });
            async move {
                let (_turn, targets, deps, addrs) = work?;
                let addrs: std::collections::HashMap<_, _> = addrs.into_iter().collect();
                let outcomes = order::in_order(&service, targets, &deps, |c| {
                    let addr = addrs[&c].clone();
                    async move {
                        addr.send(RecoverComponent {
                            dry_run: msg.dry_run,
                        })
                        .await
                        .unwrap_or_else(|e| Some(super::mailbox_outcome(&c, e)))
                    }
                })
                .await;
                Ok(outcomes.into_iter().flatten().collect())
            }
            .into_actor(act)
        }))
    }
}

/// Put one drifting component back (or restart its unhealthy container),
/// in the service's turn. None: nothing needed doing by then.
#[derive(Debug, Clone)]
pub struct Reconcile {
    pub component: Name,
    /// What the watch saw, for the event.
    pub why: String,
    pub restart: bool,
}

impl Message for Reconcile {
    type Result = Option<ComponentOutcome>;
}

impl Handler<Reconcile> for ServiceActor {
    type Result = ResponseFuture<Option<ComponentOutcome>>;

    fn handle(&mut self, msg: Reconcile, _: &mut actix::Context<Self>) -> Self::Result {
        let ops = self.peers.ops.clone();
        let service = self.name.to_string();
        let addr = self.component(&msg.component);
        Box::pin(async move {
            let _turn = ops.service_turn(&service).await;
            addr.send(ReconcileComponent {
                why: msg.why,
                restart: msg.restart,
            })
            .await
            .unwrap_or_else(|e| Some(super::mailbox_outcome(&msg.component, e)))
        })
    }
}
