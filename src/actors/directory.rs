//! ServiceDirectory: service name -> ServiceActor, each started (supervised)
//! on first use. It answers at once: a sync of the node is spread over the
//! services' own actors and gathered outside the directory's mailbox, so a
//! service busy with a slow deploy never holds up another.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{
    Actor, ActorFutureExt, Addr, Context, Handler, Message, MessageResult, ResponseActFuture,
    WrapFuture,
};
use futures::future::join_all;

use super::registry::ListServices;
use super::service::{Forget, Purge, PurgeReport, ServiceActor, SyncService};
use super::{AgentError, Peers};
use crate::names::Name;
use crate::spec::ServiceDef;

pub struct ServiceDirectory {
    peers: Peers,
    services: HashMap<Name, Addr<ServiceActor>>,
    /// One sync at a time, so two never prune each other's services; held
    /// by the sync's future, not the mailbox.
    syncing: Arc<tokio::sync::Mutex<()>>,
}

impl ServiceDirectory {
    pub fn new(peers: Peers) -> Self {
        ServiceDirectory {
            peers,
            services: HashMap::new(),
            syncing: Default::default(),
        }
    }

    fn service(&mut self, name: &Name) -> Addr<ServiceActor> {
        if let Some(addr) = self.services.get(name).filter(|a| a.connected()) {
            return addr.clone();
        }
        let addr = self.peers.supervise(
            "ServiceActor",
            ServiceActor::new(name.clone(), self.peers.clone()),
        );
        self.services.insert(name.clone(), addr.clone());
        addr
    }
}

impl Actor for ServiceDirectory {
    type Context = Context<Self>;
}

impl actix::Supervised for ServiceDirectory {
    /// The services' actors are found again on first use; the old ones
    /// finish what they have queued and stop (no address is left to them),
    /// and the services' queues (operations.rs) keep the new ones from
    /// working alongside them.
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.services.clear();
    }
}

/// The actor of a service.
#[derive(Debug, Clone)]
pub struct ServiceFor {
    pub name: Name,
}

impl Message for ServiceFor {
    type Result = Addr<ServiceActor>;
}

impl Handler<ServiceFor> for ServiceDirectory {
    type Result = MessageResult<ServiceFor>;

    fn handle(&mut self, msg: ServiceFor, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.service(&msg.name))
    }
}

/// Every definition for this node, as desired state (`mcp sync`).
#[derive(Debug, Clone)]
pub struct SyncNode {
    pub defs: Vec<ServiceDef>,
    pub prune: bool,
    /// Who asked (the events of what it prunes record it).
    pub by: String,
}

#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub synced: Vec<String>,
    /// `service` or `service/component`.
    pub prunable: Vec<String>,
    pub pruned: bool,
}

impl Message for SyncNode {
    type Result = Result<SyncReport, AgentError>;
}

impl Handler<SyncNode> for ServiceDirectory {
    type Result = ResponseActFuture<Self, Result<SyncReport, AgentError>>;

    fn handle(&mut self, msg: SyncNode, _: &mut Context<Self>) -> Self::Result {
        let node = self.peers.settings.node.clone();
        let registry = self.peers.registry.clone();
        let wrong_node: Vec<String> = msg
            .defs
            .iter()
            .filter(|d| d.node.as_str() != node)
            .map(|d| format!("{} (node {})", d.name, d.node))
            .collect();
        // Nothing is recorded unless every definition passes the policy.
        let refused: Vec<String> = msg
            .defs
            .iter()
            .filter(|d| d.node.as_str() == node)
            .filter_map(|d| self.peers.settings.admit(d).err())
            .map(|e| e.to_string())
            .collect();
        let names: Vec<String> = msg.defs.iter().map(|d| d.name.to_string()).collect();
        let targets: Vec<_> = msg
            .defs
            .into_iter()
            .map(|def| (self.service(&def.name), def))
            .collect();
        let prune = msg.prune;
        let by = msg.by;
        let syncing = self.syncing.clone();
        let recorded = async move {
            if !wrong_node.is_empty() {
                return Err(AgentError::FailedPrecondition(format!(
                    "this agent is node {node}; these definitions name another node: {}",
                    wrong_node.join(", ")
                )));
            }
            if !refused.is_empty() {
                return Err(AgentError::PermissionDenied(refused.join("; ")));
            }
            let turn = syncing.lock_owned().await;
            let results = join_all(targets.into_iter().map(|(addr, def)| async move {
                let name = def.name.clone();
                let keep: Vec<String> = def.components.iter().map(|c| c.name.to_string()).collect();
                let extra = addr.send(SyncService { def }).await??;
                Ok::<_, AgentError>((name, addr, keep, extra))
            }))
            .await;
            let mut extras = Vec::new();
            for r in results {
                extras.push(r?);
            }
            let known = registry.send(ListServices {}).await??;
            let gone: Vec<String> = known
                .into_iter()
                .map(|s| s.name)
                .filter(|n| !names.contains(n))
                .collect();
            Ok((turn, names, extras, gone))
        };
        // Pruning goes through each pruned service's own actor (its queue).
        Box::pin(recorded.into_actor(self).then(move |recorded, act, _| {
            let gone_addrs = recorded.as_ref().ok().map(|(_, _, _, gone)| {
                gone.iter()
                    .filter_map(|n| Name::parse(n).ok())
                    .map(|n| act.service(&n))
                    .collect::<Vec<_>>()
            });
            async move {
                let (_turn, names, extras, gone) = recorded?;
                let mut report = SyncReport {
                    synced: names,
                    pruned: prune,
                    ..Default::default()
                };
                for (name, addr, keep, extra) in extras {
                    if prune && !extra.is_empty() {
                        addr.send(Forget {
                            keep: Some(keep),
                            by: by.clone(),
                        })
                        .await??;
                    }
                    report
                        .prunable
                        .extend(extra.into_iter().map(|c| format!("{name}/{c}")));
                }
                if prune {
                    for addr in gone_addrs.unwrap_or_default() {
                        addr.send(Forget {
                            keep: None,
                            by: by.clone(),
                        })
                        .await??;
                    }
                }
                report.prunable.extend(gone);
                report.prunable.sort();
                Ok(report)
            }
            .into_actor(act)
        }))
    }
}

#[cfg(test)]
impl actix::Handler<crate::actors::supervisor::Crash> for ServiceDirectory {
    type Result = ();
    fn handle(&mut self, _: crate::actors::supervisor::Crash, ctx: &mut actix::Context<Self>) {
        crate::actors::supervisor::panic_later(ctx);
    }
}

/// `mcp purge`: each service of the node (or the one named) purges what it
/// has that is gone and unwanted, through its own actor.
#[derive(Debug, Clone)]
pub struct PurgeNode {
    pub service: Option<Name>,
    pub component: Option<Name>,
    pub defined: std::collections::HashSet<String>,
    pub dry_run: bool,
    pub by: String,
}

impl Message for PurgeNode {
    type Result = Result<PurgeReport, AgentError>;
}

impl Handler<PurgeNode> for ServiceDirectory {
    type Result = ResponseActFuture<Self, Result<PurgeReport, AgentError>>;

    fn handle(&mut self, msg: PurgeNode, _: &mut Context<Self>) -> Self::Result {
        let registry = self.peers.registry.clone();
        let wanted = msg.service.clone();
        let listed = async move {
            let known = registry.send(ListServices {}).await??;
            let names: Vec<Name> = known
                .into_iter()
                .filter_map(|s| Name::parse(&s.name).ok())
                .filter(|n| wanted.as_ref().is_none_or(|w| w == n))
                .collect();
            if let (Some(w), true) = (&wanted, names.is_empty()) {
                return Err(AgentError::NotFound(format!(
                    "service {w} is not known to this agent"
                )));
            }
            Ok(names)
        };
        Box::pin(listed.into_actor(self).then(move |names, act, _| {
            let targets = names.map(|names| {
                names
                    .into_iter()
                    .map(|n| act.service(&n))
                    .collect::<Vec<_>>()
            });
            let purge = Purge {
                only: msg.component,
                defined: msg.defined,
                dry_run: msg.dry_run,
                by: msg.by,
            };
            async move {
                let mut report = PurgeReport::default();
                let sends = targets?.into_iter().map(|addr| addr.send(purge.clone()));
                for done in join_all(sends).await {
                    let done = done??;
                    report.purged.extend(done.purged);
                    report.refused.extend(done.refused);
                }
                Ok(report)
            }
            .into_actor(act)
        }))
    }
}
