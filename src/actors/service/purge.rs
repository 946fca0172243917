//! `mcp purge`: forget what is both gone and unwanted. A component is
//! purged from the registry when no definition the caller has names it and
//! no container of it exists (asked of the runtime now); one whose
//! container is still there is refused, by name. A service goes as a whole
//! when it is not defined and all its components went.

use actix::{Handler, Message, ResponseFuture};

use super::ServiceActor;
use crate::actors::registry::{AddEvent, DeleteComponentsExcept, DeleteService, GetServiceState};
use crate::actors::runtime::Inspect;
use crate::actors::AgentError;
use crate::names::{container_name, Name};
use crate::registry::ComponentState;

#[derive(Debug, Clone)]
pub struct Purge {
    /// Only this component (else every component of the service).
    pub only: Option<Name>,
    /// What the caller's definitions name: `svc` and `svc/comp`.
    pub defined: std::collections::HashSet<String>,
    pub dry_run: bool,
    pub by: String,
}

#[derive(Debug, Clone, Default)]
pub struct PurgeReport {
    /// `svc/comp`, or `svc` for a whole service.
    pub purged: Vec<String>,
    /// "svc/comp: why".
    pub refused: Vec<String>,
}

impl Message for Purge {
    type Result = Result<PurgeReport, AgentError>;
}

impl Handler<Purge> for ServiceActor {
    type Result = ResponseFuture<Result<PurgeReport, AgentError>>;

    fn handle(&mut self, msg: Purge, _: &mut actix::Context<Self>) -> Self::Result {
        let peers = self.peers.clone();
        let service = self.name.clone();
        Box::pin(async move {
            let _turn = peers.ops.service_turn(service.as_str()).await;
            let row = peers
                .registry
                .send(GetServiceState {
                    name: service.to_string(),
                })
                .await??
                .ok_or_else(|| {
                    AgentError::NotFound(format!("service {service} is not known to this agent"))
                })?;
            let mut report = PurgeReport::default();
            let mut purgeable = Vec::new();
            let mut kept = Vec::new();
            for c in &row.components {
                let key = format!("{service}/{}", c.name);
                let targeted = msg.only.as_ref().is_none_or(|o| o.as_str() == c.name);
                if !targeted || msg.defined.contains(&key) {
                    kept.push(c.name.clone());
                    continue;
                }
                match container_of(&peers, &service, c).await? {
                    Some(why) => {
                        report
                            .refused
                            .push(format!("{key}: {why}: `mcp undeploy {key}` first"));
                        kept.push(c.name.clone());
                    }
                    None => purgeable.push(c.name.clone()),
                }
            }
            let whole = kept.is_empty() && !msg.defined.contains(service.as_str());
            report.purged = if whole {
                vec![service.to_string()]
            } else {
                purgeable.iter().map(|c| format!("{service}/{c}")).collect()
            };
            if msg.dry_run || report.purged.is_empty() {
                return Ok(report);
            }
            if whole {
                peers
                    .registry
                    .send(DeleteService {
                        name: service.to_string(),
                    })
                    .await??;
            } else {
                peers
                    .registry
                    .send(DeleteComponentsExcept {
                        service: service.to_string(),
                        keep: kept,
                    })
                    .await??;
            }
            let components = if whole {
                vec![String::new()]
            } else {
                purgeable
            };
            for component in components {
                peers
                    .registry
                    .send(AddEvent {
                        service: service.to_string(),
                        component,
                        kind: "purged".to_string(),
                        detail: "gone and in no definition: forgotten by the registry".to_string(),
                        by: msg.by.clone(),
                    })
                    .await??;
            }
            Ok(report)
        })
    }
}

/// Why the component still has a container (asked of the runtime now),
/// or None.
async fn container_of(
    peers: &crate::actors::Peers,
    service: &Name,
    c: &ComponentState,
) -> Result<Option<String>, AgentError> {
    let mut names = Vec::new();
    if let Some(id) = &c.container_id {
        names.push(id.clone());
    }
    if let Ok(component) = Name::parse(&c.name) {
        names.push(container_name(service, &component));
    }
    for name in names {
        let found = peers
            .runtime
            .send(Inspect {
                name_or_id: name.clone(),
            })
            .await??;
        if let Some(found) = found {
            let ours = found.owner() == Some((service.as_str(), c.name.as_str()))
                || c.container_id.as_deref() == Some(found.id.as_str());
            if ours {
                return Ok(Some(format!(
                    "container {} is still there ({})",
                    found.name, found.state
                )));
            }
        }
    }
    Ok(None)
}
