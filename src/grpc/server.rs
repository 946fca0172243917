//! The `mcp.v1.Agent` service: authenticated requests (see auth.rs) are
//! converted and forwarded to the actors. No decisions are made here.

use actix::Addr;
use tonic::{Request, Response, Status};

use super::convert::{
    observed_to_proto, outcome_to_proto, service_from_proto, service_row_to_proto,
};
use crate::actors::registry::ListServices;
use crate::actors::{
    AgentError, AgentHandles, Deploy, Lifecycle, LifecycleAction, Observe, ServiceActor, ServiceFor,
};
use crate::names::Name;
use crate::proto;
use crate::proto::agent_server::Agent;

pub struct AgentService {
    handles: AgentHandles,
}

impl AgentService {
    pub fn new(handles: AgentHandles) -> Self {
        AgentService { handles }
    }

    async fn service_actor(&self, name: Name) -> Result<Addr<ServiceActor>, Status> {
        Ok(self
            .handles
            .directory
            .send(ServiceFor { name })
            .await
            .map_err(AgentError::from)?)
    }

    async fn lifecycle(
        &self,
        request: proto::LifecycleRequest,
        action: LifecycleAction,
    ) -> Result<Response<proto::LifecycleResponse>, Status> {
        let service = parse_name("service", &request.service)?;
        let component = optional_name(&request.component)?;
        let outcomes = self
            .service_actor(service.clone())
            .await?
            .send(Lifecycle { action, component })
            .await
            .map_err(AgentError::from)??;
        Ok(Response::new(proto::LifecycleResponse {
            service: service.to_string(),
            results: outcomes.into_iter().map(outcome_to_proto).collect(),
        }))
    }
}

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Status {
        match e {
            AgentError::InvalidArgument(m) => Status::invalid_argument(m),
            AgentError::NotFound(m) => Status::not_found(m),
            AgentError::Unavailable(m) => Status::unavailable(m),
            AgentError::Internal(m) => Status::internal(m),
        }
    }
}

fn parse_name(what: &str, s: &str) -> Result<Name, Status> {
    Name::parse(s).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

fn optional_name(s: &str) -> Result<Option<Name>, Status> {
    (!s.is_empty())
        .then(|| parse_name("component", s))
        .transpose()
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn deploy(
        &self,
        request: Request<proto::DeployRequest>,
    ) -> Result<Response<proto::DeployResponse>, Status> {
        let request = request.into_inner();
        let spec = request
            .service
            .ok_or_else(|| Status::invalid_argument("deploy without a service definition"))?;
        let def = service_from_proto(spec)?;
        let component = optional_name(&request.component)?;
        let name = def.name.clone();
        let outcomes = self
            .service_actor(name.clone())
            .await?
            .send(Deploy { def, component })
            .await
            .map_err(AgentError::from)??;
        Ok(Response::new(proto::DeployResponse {
            service: name.to_string(),
            results: outcomes.into_iter().map(outcome_to_proto).collect(),
        }))
    }

    async fn stop(
        &self,
        request: Request<proto::LifecycleRequest>,
    ) -> Result<Response<proto::LifecycleResponse>, Status> {
        self.lifecycle(request.into_inner(), LifecycleAction::Stop)
            .await
    }

    async fn start(
        &self,
        request: Request<proto::LifecycleRequest>,
    ) -> Result<Response<proto::LifecycleResponse>, Status> {
        self.lifecycle(request.into_inner(), LifecycleAction::Start)
            .await
    }

    async fn list_services(
        &self,
        _: Request<proto::ListServicesRequest>,
    ) -> Result<Response<proto::ListServicesResponse>, Status> {
        let services = self
            .handles
            .registry
            .send(ListServices {})
            .await
            .map_err(AgentError::from)?
            .map_err(AgentError::from)?;
        Ok(Response::new(proto::ListServicesResponse {
            node: self.handles.settings.node.clone(),
            services: services.into_iter().map(service_row_to_proto).collect(),
        }))
    }

    async fn ps(
        &self,
        _: Request<proto::PsRequest>,
    ) -> Result<Response<proto::PsResponse>, Status> {
        let rows = self
            .handles
            .watch
            .send(Observe)
            .await
            .map_err(AgentError::from)??;
        Ok(Response::new(proto::PsResponse {
            node: self.handles.settings.node.clone(),
            containers: rows.into_iter().map(observed_to_proto).collect(),
        }))
    }
}
