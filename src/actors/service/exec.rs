//! `mcp exec`: a command run attached in a component's running container.
//! Not an operation: it does not wait for the service's turn (a deploy in
//! flight does not hold up a look inside), and it changes no state; the
//! event says who ran what.

use actix::{Handler, Message, ResponseFuture};

use super::ServiceActor;
use crate::actors::registry::{AddEvent, GetServiceState};
use crate::actors::runtime::{ExecAttached, Inspect};
use crate::actors::AgentError;
use crate::names::{container_name, Name};
use crate::runtime::{ExecRequest, ExecSession};

#[derive(Debug, Clone)]
pub struct OpenExec {
    pub component: Name,
    pub request: ExecRequest,
    pub by: String,
}

impl Message for OpenExec {
    type Result = Result<ExecSession, AgentError>;
}

impl Handler<OpenExec> for ServiceActor {
    type Result = ResponseFuture<Result<ExecSession, AgentError>>;

    fn handle(&mut self, msg: OpenExec, _: &mut actix::Context<Self>) -> Self::Result {
        let peers = self.peers.clone();
        let service = self.name.clone();
        Box::pin(async move {
            let key = format!("{service}/{}", msg.component);
            let row = peers
                .registry
                .send(GetServiceState {
                    name: service.to_string(),
                })
                .await??
                .ok_or_else(|| {
                    AgentError::NotFound(format!("service {service} is not known to this agent"))
                })?;
            if !row
                .components
                .iter()
                .any(|c| c.name == msg.component.as_str())
            {
                return Err(AgentError::NotFound(format!(
                    "{key} is not known to this agent"
                )));
            }
            let name = container_name(&service, &msg.component);
            let found = peers
                .runtime
                .send(Inspect {
                    name_or_id: name.clone(),
                })
                .await??
                .filter(|c| c.owner() == Some((service.as_str(), msg.component.as_str())));
            let container = match found {
                Some(c) if c.state == "running" => c,
                Some(c) => {
                    return Err(AgentError::FailedPrecondition(format!(
                        "{key} is {}, not running: `mcp start {key}` first",
                        c.state
                    )))
                }
                None => {
                    return Err(AgentError::FailedPrecondition(format!(
                        "{key} has no container: `mcp deploy {service}` first"
                    )))
                }
            };
            let program = msg.request.cmd.first().cloned().unwrap_or_default();
            let session = peers
                .runtime
                .send(ExecAttached {
                    id: container.id,
                    request: msg.request,
                })
                .await??;
            peers
                .registry
                .send(AddEvent {
                    service: service.to_string(),
                    component: msg.component.to_string(),
                    kind: "exec".to_string(),
                    detail: format!("ran {program:?} in {name}"),
                    by: msg.by,
                })
                .await??;
            Ok(session)
        })
    }
}
