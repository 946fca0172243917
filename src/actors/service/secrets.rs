//! A service's secrets, changed in the service's turn: a deploy in progress
//! finishes with what it read, and a deploy after a change reads the new
//! value, so a secret never vanishes between a deploy's check and its
//! create. The store itself is `crate::secrets`; values never reach an
//! event, a log line or an error.

use std::sync::Arc;

use actix::{Context, Handler, Message, ResponseFuture};

use super::ServiceActor;
use crate::actors::registry::AddEvent;
use crate::actors::AgentError;
use crate::names::Name;
use crate::secrets::{describe_missing, SecretError, SecretInfo, SecretStore};
use crate::spec::{ComponentDef, SecretName};

/// Runs `work` on the store on a blocking thread (it fsyncs).
async fn on_store<T: Send + 'static>(
    store: Arc<SecretStore>,
    work: impl FnOnce(&SecretStore) -> Result<T, SecretError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|e| AgentError::Internal(format!("the secret store: {e}")))?
        .map_err(AgentError::from)
}

/// Refuses a deploy of `specs` when the node lacks a secret they name,
/// before anything is recorded or touched. Called in the service's turn.
pub(super) async fn require(
    store: Arc<SecretStore>,
    service: Name,
    specs: Vec<ComponentDef>,
) -> Result<(), AgentError> {
    if specs.iter().all(|s| s.secret_names().is_empty()) {
        return Ok(());
    }
    let missing = {
        let service = service.clone();
        on_store(store, move |s| s.missing(&service, &specs)).await?
    };
    if missing.is_empty() {
        Ok(())
    } else {
        Err(AgentError::FailedPrecondition(format!(
            "{}; nothing was changed",
            describe_missing(&service, &missing)
        )))
    }
}

/// Store (or replace) one of the service's secrets.
pub struct SetSecret {
    pub name: SecretName,
    pub value: Vec<u8>,
    /// Who asked (the event records it).
    pub by: String,
}

impl std::fmt::Debug for SetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetSecret")
            .field("name", &self.name)
            .field("value", &"(hidden)")
            .field("by", &self.by)
            .finish()
    }
}

impl Message for SetSecret {
    type Result = Result<SecretInfo, AgentError>;
}

impl Handler<SetSecret> for ServiceActor {
    type Result = ResponseFuture<Result<SecretInfo, AgentError>>;

    fn handle(&mut self, msg: SetSecret, _: &mut Context<Self>) -> Self::Result {
        let peers = self.peers.clone();
        let service = self.name.clone();
        Box::pin(async move {
            let _turn = peers.ops.service_turn(service.as_str()).await;
            let SetSecret { name, value, by } = msg;
            let info = {
                let (service, name) = (service.clone(), name.clone());
                on_store(peers.settings.secrets.clone(), move |s| {
                    s.set(&service, &name, &value)
                })
                .await?
            };
            peers
                .registry
                .send(AddEvent {
                    service: service.to_string(),
                    component: String::new(),
                    kind: "secret-set".to_string(),
                    detail: format!(
                        "secret {name} set; containers created from now on get it (running \
                         ones keep theirs until deployed with --force)"
                    ),
                    by,
                })
                .await??;
            Ok(info)
        })
    }
}

/// Forget one of the service's secrets.
#[derive(Debug, Clone)]
pub struct RemoveSecret {
    pub name: SecretName,
    pub by: String,
}

impl Message for RemoveSecret {
    type Result = Result<(), AgentError>;
}

impl Handler<RemoveSecret> for ServiceActor {
    type Result = ResponseFuture<Result<(), AgentError>>;

    fn handle(&mut self, msg: RemoveSecret, _: &mut Context<Self>) -> Self::Result {
        let peers = self.peers.clone();
        let service = self.name.clone();
        Box::pin(async move {
            let _turn = peers.ops.service_turn(service.as_str()).await;
            let RemoveSecret { name, by } = msg;
            {
                let (service, name) = (service.clone(), name.clone());
                on_store(peers.settings.secrets.clone(), move |s| {
                    s.remove(&service, &name)
                })
                .await?;
            }
            peers
                .registry
                .send(AddEvent {
                    service: service.to_string(),
                    component: String::new(),
                    kind: "secret-removed".to_string(),
                    detail: format!(
                        "secret {name} removed; running containers keep what they were given"
                    ),
                    by,
                })
                .await??;
            Ok(())
        })
    }
}

/// The service's secrets, names and dates (a read: no turn).
#[derive(Debug, Clone)]
pub struct ListSecrets;

impl Message for ListSecrets {
    type Result = Result<Vec<SecretInfo>, AgentError>;
}

impl Handler<ListSecrets> for ServiceActor {
    type Result = ResponseFuture<Result<Vec<SecretInfo>, AgentError>>;

    fn handle(&mut self, _: ListSecrets, _: &mut Context<Self>) -> Self::Result {
        let store = self.peers.settings.secrets.clone();
        let service = self.name.clone();
        Box::pin(async move { on_store(store, move |s| s.list(&service)).await })
    }
}
