//! ServiceDirectory: service name -> ServiceActor, created on first use and
//! re-created when the old one has died.

use std::collections::HashMap;

use actix::{
    Actor, ActorFutureExt, Addr, AtomicResponse, Context, Handler, Message, MessageResult,
    WrapFuture,
};
use futures::future::join_all;

use super::registry::{DeleteService, ListServices};
use super::service::{ServiceActor, SyncService};
use super::{AgentError, Peers};
use crate::names::Name;
use crate::spec::ServiceDef;

pub struct ServiceDirectory {
    peers: Peers,
    services: HashMap<Name, Addr<ServiceActor>>,
}

impl ServiceDirectory {
    pub fn new(peers: Peers) -> Self {
        ServiceDirectory {
            peers,
            services: HashMap::new(),
        }
    }
}

impl Actor for ServiceDirectory {
    type Context = Context<Self>;
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

impl ServiceDirectory {
    fn service(&mut self, name: &Name) -> Addr<ServiceActor> {
        if let Some(addr) = self.services.get(name).filter(|a| a.connected()) {
            return addr.clone();
        }
        let addr = ServiceActor::new(name.clone(), self.peers.clone()).start();
        self.services.insert(name.clone(), addr.clone());
        addr
    }
}

/// Every definition for this node, as desired state (`mcp sync`).
#[derive(Debug, Clone)]
pub struct SyncNode {
    pub defs: Vec<ServiceDef>,
    pub prune: bool,
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
    // One sync at a time, so two never prune each other's services.
    type Result = AtomicResponse<Self, Result<SyncReport, AgentError>>;

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
        let targets: Vec<_> = msg
            .defs
            .into_iter()
            .map(|def| (self.service(&def.name), def))
            .collect();
        let prune = msg.prune;
        let fut = async move {
            if !wrong_node.is_empty() {
                return Err(AgentError::FailedPrecondition(format!(
                    "this agent is node {node}; these definitions name another node: {}",
                    wrong_node.join(", ")
                )));
            }
            if !refused.is_empty() {
                return Err(AgentError::PermissionDenied(refused.join("; ")));
            }
            let names: Vec<String> = targets.iter().map(|(_, d)| d.name.to_string()).collect();
            let results = join_all(targets.into_iter().map(|(addr, def)| {
                let name = def.name.to_string();
                async move {
                    let extra = addr.send(SyncService { def, prune }).await??;
                    Ok::<_, AgentError>(extra.into_iter().map(move |c| format!("{name}/{c}")))
                }
            }))
            .await;
            let mut report = SyncReport {
                synced: names.clone(),
                pruned: prune,
                ..Default::default()
            };
            for r in results {
                report.prunable.extend(r?);
            }
            let known = registry.send(ListServices {}).await??;
            for s in known.into_iter().filter(|s| !names.contains(&s.name)) {
                if prune {
                    registry
                        .send(DeleteService {
                            name: s.name.clone(),
                        })
                        .await??;
                }
                report.prunable.push(s.name);
            }
            report.prunable.sort();
            Ok(report)
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(|r, _, _| r)))
    }
}
