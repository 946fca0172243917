//! The `mcp.v1.Secrets` service (secrets.proto): requests checked and
//! forwarded to the service's actor (src/actors/service/secrets.rs), which
//! changes the store (src/secrets.rs) in the service's turn. Set and Remove
//! leave an audit line; none of it ever carries a value.

use tonic::{Request, Response, Status};

use super::audit;
use crate::actors::service::{ListSecrets, RemoveSecret, SetSecret};
use crate::actors::{AgentError, AgentHandles, ServiceFor};
use crate::names::Name;
use crate::proto;
use crate::proto::secrets_server::Secrets;
use crate::secrets::SecretInfo;
use crate::spec::SecretName;

pub struct SecretsService {
    handles: AgentHandles,
}

impl SecretsService {
    pub fn new(handles: AgentHandles) -> Self {
        SecretsService { handles }
    }

    fn node(&self) -> String {
        self.handles.peers.settings.node.clone()
    }

    async fn actor(
        &self,
        service: Name,
    ) -> Result<actix::Addr<crate::actors::ServiceActor>, Status> {
        Ok(self
            .handles
            .directory
            .send(ServiceFor { name: service })
            .await
            .map_err(AgentError::from)?)
    }
}

fn service_of(s: &str) -> Result<Name, Status> {
    Name::parse(s).map_err(|e| Status::invalid_argument(format!("service: {e}")))
}

fn secret_of(s: &str) -> Result<SecretName, Status> {
    s.parse().map_err(Status::invalid_argument)
}

fn info_to_proto(i: SecretInfo) -> proto::SecretInfo {
    proto::SecretInfo {
        name: i.name.to_string(),
        updated_at_ms: i.updated_at_ms,
    }
}

/// What a secret call is about, for the audit line.
fn target(service: &str, name: &str) -> String {
    format!("{service} secret {name}")
}

#[tonic::async_trait]
impl Secrets for SecretsService {
    async fn set(
        &self,
        request: Request<proto::SetSecretRequest>,
    ) -> Result<Response<proto::SetSecretResponse>, Status> {
        let by = audit::caller(&request);
        let request = request.into_inner();
        let target = target(&request.service, &request.name);
        let done = async {
            let service = service_of(&request.service)?;
            let name = secret_of(&request.name)?;
            let info = self
                .actor(service.clone())
                .await?
                .send(SetSecret {
                    name,
                    value: request.value,
                    by: by.clone(),
                })
                .await
                .map_err(AgentError::from)??;
            Ok(proto::SetSecretResponse {
                node: self.node(),
                service: service.to_string(),
                secret: Some(info_to_proto(info)),
            })
        }
        .await;
        audit::record("Secrets/Set", &target, &by, &done, |_| "ok".to_string());
        done.map(Response::new)
    }

    async fn list(
        &self,
        request: Request<proto::ListSecretsRequest>,
    ) -> Result<Response<proto::ListSecretsResponse>, Status> {
        let service = service_of(&request.get_ref().service)?;
        let secrets = self
            .actor(service.clone())
            .await?
            .send(ListSecrets)
            .await
            .map_err(AgentError::from)??;
        Ok(Response::new(proto::ListSecretsResponse {
            node: self.node(),
            service: service.to_string(),
            secrets: secrets.into_iter().map(info_to_proto).collect(),
        }))
    }

    async fn remove(
        &self,
        request: Request<proto::RemoveSecretRequest>,
    ) -> Result<Response<proto::RemoveSecretResponse>, Status> {
        let by = audit::caller(&request);
        let request = request.into_inner();
        let target = target(&request.service, &request.name);
        let done = async {
            let service = service_of(&request.service)?;
            let name = secret_of(&request.name)?;
            self.actor(service.clone())
                .await?
                .send(RemoveSecret {
                    name: name.clone(),
                    by: by.clone(),
                })
                .await
                .map_err(AgentError::from)??;
            Ok(proto::RemoveSecretResponse {
                node: self.node(),
                service: service.to_string(),
                name: name.to_string(),
            })
        }
        .await;
        audit::record("Secrets/Remove", &target, &by, &done, |_| "ok".to_string());
        done.map(Response::new)
    }
}
