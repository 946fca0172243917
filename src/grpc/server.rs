//! The `mcp.v1.Agent` service: authenticated requests (see auth.rs) are
//! converted and forwarded to the actors. No decisions are made here.

use std::pin::Pin;

use actix::Addr;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::audit;
use super::auth::Identity;
use super::convert::{
    change_to_proto, drift_to_proto, event_to_proto, observed_to_proto, outcome_to_proto,
    recovery_to_proto, route_to_proto, service_from_proto, service_state_to_proto,
};
use crate::actors::directory::SyncNode;
use crate::actors::registry::{Events, ListRoutes, ListServicesWithRoutes, SubscribeEvents};
use crate::actors::service::{AdoptComponent, PlanDeploy};
use crate::actors::watch::StatusQuery;
use crate::actors::{
    AgentError, AgentHandles, Deploy, Lifecycle, LifecycleAction, Observe, ServiceActor, ServiceFor,
};
use crate::names::Name;
use crate::proto;
use crate::proto::agent_server::Agent;

pub struct AgentService {
    pub(super) handles: AgentHandles,
}

impl AgentService {
    pub fn new(handles: AgentHandles) -> Self {
        AgentService { handles }
    }

    fn node(&self) -> String {
        self.handles.peers.settings.node.clone()
    }

    /// The actor and the message for a deploy request by `by`, validated.
    async fn deploy_message(
        &self,
        request: proto::DeployRequest,
        progress: Option<crate::actors::component::ProgressSender>,
        (by, caller): (String, Option<crate::runtime::registries::Caller>),
    ) -> Result<(Addr<ServiceActor>, Deploy), Status> {
        let spec = request
            .service
            .ok_or_else(|| Status::invalid_argument("deploy without a service definition"))?;
        let def = service_from_proto(spec)?;
        let component = optional_name(&request.component)?;
        let deadline = match request.deadline_ms {
            0 => DEFAULT_DEPLOY_DEADLINE,
            ms => {
                std::time::Duration::from_millis(ms).clamp(MIN_DEPLOY_DEADLINE, MAX_DEPLOY_DEADLINE)
            }
        };
        let addr = self.service_actor(def.name.clone()).await?;
        Ok((
            addr,
            Deploy {
                def,
                component,
                rollback: !request.no_rollback,
                force: request.force,
                progress,
                deadline: tokio::time::Instant::now() + deadline,
                by,
                keep_removed: request.keep_removed,
                pull: request.pull,
                caller,
            },
        ))
    }

    pub(super) async fn service_actor(&self, name: Name) -> Result<Addr<ServiceActor>, Status> {
        Ok(self
            .handles
            .directory
            .send(ServiceFor { name })
            .await
            .map_err(AgentError::from)?)
    }

    /// The node's routes (of `service` only, when given), from the registry.
    async fn routes_of(
        &self,
        service: Option<String>,
    ) -> Result<Vec<crate::routes::Route>, Status> {
        Ok(self
            .handles
            .peers
            .registry
            .send(ListRoutes { service })
            .await
            .map_err(AgentError::from)?
            .map_err(AgentError::from)?)
    }

    async fn lifecycle(
        &self,
        request: Request<proto::LifecycleRequest>,
        method: &str,
        action: LifecycleAction,
    ) -> Result<Response<proto::LifecycleResponse>, Status> {
        let by = audit::caller(&request);
        let request = request.into_inner();
        let target = target_of(&request.service, &request.component);
        let done = async {
            let service = parse_name("service", &request.service)?;
            let component = optional_name(&request.component)?;
            let outcomes = self
                .service_actor(service.clone())
                .await?
                .send(Lifecycle {
                    action,
                    component,
                    by: by.clone(),
                    progress: None,
                })
                .await
                .map_err(AgentError::from)??;
            Ok(proto::LifecycleResponse {
                service: service.to_string(),
                results: outcomes.into_iter().map(outcome_to_proto).collect(),
            })
        }
        .await;
        audit::record(method, &target, &by, &done, |r| audit::summary(&r.results));
        done.map(Response::new)
    }
}

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Status {
        match e {
            AgentError::InvalidArgument(m) => Status::invalid_argument(m),
            AgentError::NotFound(m) => Status::not_found(m),
            AgentError::Unavailable(m) => Status::unavailable(m),
            AgentError::Internal(m) => Status::internal(m),
            AgentError::Unhealthy(m) => Status::failed_precondition(m),
            AgentError::PermissionDenied(m) => Status::permission_denied(m),
            AgentError::FailedPrecondition(m) => Status::failed_precondition(m),
            AgentError::DeadlineExceeded(m) => Status::deadline_exceeded(m),
        }
    }
}

/// What a deploy request is about, for the audit line.
fn deploy_target(request: &proto::DeployRequest) -> String {
    let service = request.service.as_ref().map_or("", |s| s.name.as_str());
    target_of(service, &request.component)
}

/// `service` or `service/component`, for the audit line.
pub(super) fn target_of(service: &str, component: &str) -> String {
    if component.is_empty() {
        service.to_string()
    } else {
        format!("{service}/{component}")
    }
}

fn parse_name(what: &str, s: &str) -> Result<Name, Status> {
    Name::parse(s).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

pub(super) fn optional_name(s: &str) -> Result<Option<Name>, Status> {
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
        let by = audit::caller(&request);
        let caller = audit::caller_login(&request);
        let request = request.into_inner();
        let target = deploy_target(&request);
        let done = async {
            let (addr, deploy) = self
                .deploy_message(request, None, (by.clone(), caller))
                .await?;
            let service = deploy.def.name.to_string();
            let outcomes = addr.send(deploy).await.map_err(AgentError::from)??;
            Ok(proto::DeployResponse {
                service,
                results: outcomes.into_iter().map(outcome_to_proto).collect(),
            })
        }
        .await;
        audit::record("Deploy", &target, &by, &done, |r| {
            audit::summary(&r.results)
        });
        done.map(Response::new)
    }

    type DeployWatchStream =
        Pin<Box<dyn Stream<Item = Result<proto::DeployProgress, Status>> + Send>>;

    async fn deploy_watch(
        &self,
        request: Request<proto::DeployRequest>,
    ) -> Result<Response<Self::DeployWatchStream>, Status> {
        let by = audit::caller(&request);
        let caller = audit::caller_login(&request);
        let request = request.into_inner();
        let target = deploy_target(&request);
        let (steps_tx, steps) = tokio::sync::mpsc::unbounded_channel();
        let prepared = self
            .deploy_message(request, Some(steps_tx), (by.clone(), caller))
            .await;
        if let Err(status) = &prepared {
            audit::refused("DeployWatch", &target, &by, status);
        }
        let (addr, deploy) = prepared?;
        let service = deploy.def.name.to_string();
        let operation = async move { addr.send(deploy).await.map_err(AgentError::from)? };
        Ok(Response::new(super::lifecycle::progress_stream(
            "DeployWatch",
            target,
            by,
            service,
            steps,
            operation,
        )))
    }

    async fn stop(
        &self,
        request: Request<proto::LifecycleRequest>,
    ) -> Result<Response<proto::LifecycleResponse>, Status> {
        self.lifecycle(request, "Stop", LifecycleAction::Stop).await
    }

    async fn start(
        &self,
        request: Request<proto::LifecycleRequest>,
    ) -> Result<Response<proto::LifecycleResponse>, Status> {
        self.lifecycle(request, "Start", LifecycleAction::Start)
            .await
    }

    async fn rollback(
        &self,
        request: Request<proto::LifecycleRequest>,
    ) -> Result<Response<proto::LifecycleResponse>, Status> {
        self.lifecycle(request, "Rollback", LifecycleAction::Rollback)
            .await
    }

    type RestartStream = super::lifecycle::ProgressStream;

    async fn restart(
        &self,
        request: Request<proto::LifecycleRequest>,
    ) -> Result<Response<Self::RestartStream>, Status> {
        self.restart_stream(request).await
    }

    async fn undeploy(
        &self,
        request: Request<proto::LifecycleRequest>,
    ) -> Result<Response<proto::LifecycleResponse>, Status> {
        self.lifecycle(request, "Undeploy", LifecycleAction::Undeploy)
            .await
    }

    async fn purge(
        &self,
        request: Request<proto::PurgeRequest>,
    ) -> Result<Response<proto::PurgeResponse>, Status> {
        self.purge_node(request).await
    }

    type ExecStream = super::exec::ExecStream;

    async fn exec(
        &self,
        request: Request<tonic::Streaming<proto::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        self.exec_stream(request).await
    }

    async fn list_services(
        &self,
        _: Request<proto::ListServicesRequest>,
    ) -> Result<Response<proto::ListServicesResponse>, Status> {
        // One round trip to the registry's thread: listing is the hot path.
        let (services, routes) = self
            .handles
            .peers
            .registry
            .send(ListServicesWithRoutes {})
            .await
            .map_err(AgentError::from)?
            .map_err(AgentError::from)?;
        Ok(Response::new(proto::ListServicesResponse {
            node: self.handles.peers.settings.node.clone(),
            services: services
                .into_iter()
                .map(|s| service_state_to_proto(s, &routes))
                .collect(),
        }))
    }

    async fn ps(
        &self,
        _: Request<proto::PsRequest>,
    ) -> Result<Response<proto::PsResponse>, Status> {
        let rows = self
            .handles
            .peers
            .watch
            .send(Observe)
            .await
            .map_err(AgentError::from)??;
        let routes = self.routes_of(None).await?;
        Ok(Response::new(proto::PsResponse {
            node: self.handles.peers.settings.node.clone(),
            containers: rows
                .into_iter()
                .map(|c| observed_to_proto(c, &routes))
                .collect(),
        }))
    }

    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let request = request.into_inner();
        let service = optional_name(&request.service)?.map(|n| n.to_string());
        let events = match request.events {
            0 => DEFAULT_STATUS_EVENTS,
            n => n as usize,
        };
        let report = self
            .handles
            .peers
            .watch
            .send(StatusQuery {
                service: service.clone(),
                events,
            })
            .await
            .map_err(AgentError::from)??;
        let routes = self.routes_of(service).await?;
        Ok(Response::new(proto::StatusResponse {
            node: self.node(),
            containers: report
                .containers
                .into_iter()
                .map(|c| observed_to_proto(c, &routes))
                .collect(),
            drift: report.drift.into_iter().map(drift_to_proto).collect(),
            events: report.events.into_iter().map(event_to_proto).collect(),
            recovery: Some(recovery_to_proto(&self.handles.recovery.get())),
        }))
    }

    async fn sync(
        &self,
        request: Request<proto::SyncRequest>,
    ) -> Result<Response<proto::SyncResponse>, Status> {
        let by = audit::caller(&request);
        let request = request.into_inner();
        let target = format!("{} definition(s)", request.services.len());
        let done = async {
            let defs = request
                .services
                .into_iter()
                .map(service_from_proto)
                .collect::<Result<Vec<_>, _>>()?;
            let report = self
                .handles
                .directory
                .send(SyncNode {
                    defs,
                    prune: request.prune,
                    by: by.clone(),
                })
                .await
                .map_err(AgentError::from)??;
            Ok(proto::SyncResponse {
                node: self.node(),
                synced: report.synced,
                prunable: report.prunable,
                pruned: report.pruned,
            })
        }
        .await;
        audit::record("Sync", &target, &by, &done, |r| {
            if r.pruned && !r.prunable.is_empty() {
                format!("ok, pruned {}", r.prunable.join(", "))
            } else {
                "ok".to_string()
            }
        });
        done.map(Response::new)
    }

    async fn adopt(
        &self,
        request: Request<proto::AdoptRequest>,
    ) -> Result<Response<proto::AdoptResponse>, Status> {
        let by = audit::caller(&request);
        let request = request.into_inner();
        let target = format!(
            "{} as {}",
            request.container,
            target_of(&request.service, &request.component)
        );
        let done = async {
            if request.container.is_empty() {
                return Err(Status::invalid_argument(
                    "adopt needs a container name or id",
                ));
            }
            let service = parse_name("service", &request.service)?;
            let component = parse_name("component", &request.component)?;
            let row = self
                .service_actor(service.clone())
                .await?
                .send(AdoptComponent {
                    container: request.container,
                    component,
                    by: by.clone(),
                })
                .await
                .map_err(AgentError::from)??;
            Ok(proto::AdoptResponse {
                node: self.node(),
                service: row.state.service,
                component: row.state.name,
                container_id: row.state.container_id.unwrap_or_default(),
                observed_state: row.state.observed_state,
            })
        }
        .await;
        audit::record("Adopt", &target, &by, &done, |_| "ok".to_string());
        done.map(Response::new)
    }

    async fn plan(
        &self,
        request: Request<proto::DeployRequest>,
    ) -> Result<Response<proto::PlanResponse>, Status> {
        let by = audit::caller(&request);
        let (addr, deploy) = self
            .deploy_message(request.into_inner(), None, (by, None))
            .await?;
        let service = deploy.def.name.to_string();
        let plan = addr
            .send(PlanDeploy {
                def: deploy.def,
                component: deploy.component,
                keep_removed: deploy.keep_removed,
            })
            .await
            .map_err(AgentError::from)??;
        Ok(Response::new(proto::PlanResponse {
            node: self.node(),
            service,
            changes: plan.changes.into_iter().map(change_to_proto).collect(),
            refusals: plan.refusals,
        }))
    }

    type EventsStream = Pin<Box<dyn Stream<Item = Result<proto::Event, Status>> + Send>>;

    async fn events(
        &self,
        request: Request<proto::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let request = request.into_inner();
        let service = optional_name(&request.service)?.map(|n| n.to_string());
        let by = (!request.by.is_empty()).then(|| request.by.clone());
        let limit = match request.limit {
            0 => DEFAULT_EVENTS,
            n => n as usize,
        };
        let registry = &self.handles.peers.registry;
        // Subscribe before reading the history, so nothing falls in between.
        let live = if request.follow {
            Some(
                registry
                    .send(SubscribeEvents)
                    .await
                    .map_err(AgentError::from)?,
            )
        } else {
            None
        };
        let history = registry
            .send(Events {
                service: service.clone(),
                by: by.clone(),
                limit,
            })
            .await
            .map_err(AgentError::from)?
            .map_err(AgentError::from)?;
        // A service with no history and no row is not a service of this node.
        if let Some(name) = service
            .as_ref()
            .filter(|_| history.is_empty() && by.is_none())
        {
            let known = registry
                .send(crate::actors::registry::GetServiceState { name: name.clone() })
                .await
                .map_err(AgentError::from)?
                .map_err(AgentError::from)?;
            if known.is_none() {
                return Err(crate::actors::watch::unknown_service(name, &self.node()).into());
            }
        }
        let last_id = history.last().map_or(0, |e| e.id);
        let past = futures::stream::iter(history.into_iter().map(|e| Ok(event_to_proto(e))));
        let Some(receiver) = live else {
            return Ok(Response::new(past.boxed()));
        };
        let future = futures::stream::unfold(receiver, move |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((e, rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("an events follower fell {n} events behind");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .filter(move |e| {
            let keep = e.id > last_id
                && service.as_deref().is_none_or(|s| s == e.service)
                && by.as_deref().is_none_or(|b| b == e.by);
            futures::future::ready(keep)
        })
        .map(|e| Ok(event_to_proto(e)));
        let live = super::until_shutdown(future.boxed(), self.handles.shutdown.clone());
        Ok(Response::new(past.chain(live).boxed()))
    }

    async fn routes(
        &self,
        request: Request<proto::RoutesRequest>,
    ) -> Result<Response<proto::RoutesResponse>, Status> {
        let service = request.into_inner().service;
        let service = (!service.is_empty())
            .then(|| parse_name("service", &service))
            .transpose()?
            .map(|n| n.to_string());
        let routes = self.routes_of(service).await?;
        Ok(Response::new(proto::RoutesResponse {
            node: self.node(),
            routes: routes.iter().map(route_to_proto).collect(),
        }))
    }

    async fn who_am_i(
        &self,
        request: Request<proto::WhoAmIRequest>,
    ) -> Result<Response<proto::WhoAmIResponse>, Status> {
        // The auth layer attaches it to every request it lets through.
        let identity = request
            .extensions()
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no identity on the request"))?;
        Ok(Response::new(proto::WhoAmIResponse {
            node: self.node(),
            name: identity.name().to_string(),
            subject: identity.subject,
            username: identity.username.unwrap_or_default(),
            roles: identity.roles,
            level: identity.level.map_or("none", |l| l.as_str()).to_string(),
            expires_at: identity.expires_at.unwrap_or(0),
        }))
    }
}

/// A deploy's deadline when the request names none, and its bounds: below
/// the agent's 600 s bound on any request, so the answer still arrives.
pub const DEFAULT_DEPLOY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);
const MIN_DEPLOY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);
pub const MAX_DEPLOY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(540);

/// Recent events in `mcp status`, and history in `mcp events`, by default.
const DEFAULT_STATUS_EVENTS: usize = 20;
const DEFAULT_EVENTS: usize = 50;
