//! The operations that stream their progress (DeployWatch, Restart), and
//! the lifecycle beyond start and stop (Undeploy, Purge): forwarded to the
//! actors like the rest of `server.rs`, each with its audit line.

use std::future::Future;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::audit;
use super::convert::outcome_to_proto;
use super::server::{target_of, AgentService};
use crate::actors::component::{ComponentOutcome, Progress};
use crate::actors::directory::PurgeNode;
use crate::actors::{AgentError, Lifecycle, LifecycleAction};
use crate::names::Name;
use crate::proto;

pub type ProgressStream = Pin<Box<dyn Stream<Item = Result<proto::DeployProgress, Status>> + Send>>;

/// Streams the steps an operation reports as it runs, then its result; the
/// audit line is written when it is done.
pub fn progress_stream<F>(
    method: &'static str,
    target: String,
    by: String,
    service: String,
    mut steps: tokio::sync::mpsc::UnboundedReceiver<Progress>,
    operation: F,
) -> ProgressStream
where
    F: Future<Output = Result<Vec<ComponentOutcome>, AgentError>> + Send + 'static,
{
    use proto::deploy_progress::Update;
    let (out, updates) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let forward = async {
            // Ends when the operation drops its last sender.
            while let Some(p) = steps.recv().await {
                let step = proto::DeployStep {
                    component: p.component,
                    phase: p.phase.to_string(),
                    detail: p.detail,
                };
                let _ = out
                    .send(Ok(proto::DeployProgress {
                        update: Some(Update::Step(step)),
                    }))
                    .await;
            }
        };
        let (result, ()) = tokio::join!(operation, forward);
        let done = result
            .map(|outcomes| proto::DeployResponse {
                service,
                results: outcomes.into_iter().map(outcome_to_proto).collect(),
            })
            .map_err(Status::from);
        audit::record(method, &target, &by, &done, |r| audit::summary(&r.results));
        let last = done.map(|response| proto::DeployProgress {
            update: Some(Update::Done(response)),
        });
        let _ = out.send(last).await;
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(updates);
    stream.boxed()
}

impl AgentService {
    pub(super) async fn restart_stream(
        &self,
        request: Request<proto::LifecycleRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let by = audit::caller(&request);
        let request = request.into_inner();
        let target = target_of(&request.service, &request.component);
        let prepared = async {
            let service = Name::parse(&request.service)
                .map_err(|e| Status::invalid_argument(format!("service: {e}")))?;
            let component = super::server::optional_name(&request.component)?;
            let addr = self.service_actor(service.clone()).await?;
            Ok::<_, Status>((service, component, addr))
        }
        .await;
        let (service, component, addr) = prepared.inspect_err(|status| {
            audit::refused("Restart", &target, &by, status);
        })?;
        let (steps_tx, steps) = tokio::sync::mpsc::unbounded_channel();
        let restart = Lifecycle {
            action: LifecycleAction::Restart,
            component,
            by: by.clone(),
            progress: Some(steps_tx),
        };
        let operation = async move { addr.send(restart).await.map_err(AgentError::from)? };
        Ok(Response::new(progress_stream(
            "Restart",
            target,
            by,
            service.to_string(),
            steps,
            operation,
        )))
    }

    pub(super) async fn purge_node(
        &self,
        request: Request<proto::PurgeRequest>,
    ) -> Result<Response<proto::PurgeResponse>, Status> {
        let by = audit::caller(&request);
        let request = request.into_inner();
        let target = if request.service.is_empty() {
            "*".to_string()
        } else {
            target_of(&request.service, &request.component)
        };
        let dry_run = request.dry_run;
        let done = async {
            let service = super::server::optional_name(&request.service)?;
            let component = super::server::optional_name(&request.component)?;
            let report = self
                .handles
                .directory
                .send(PurgeNode {
                    service,
                    component,
                    defined: request.defined.into_iter().collect(),
                    dry_run,
                    by: by.clone(),
                })
                .await
                .map_err(AgentError::from)??;
            Ok::<_, Status>(proto::PurgeResponse {
                node: self.handles.peers.settings.node.clone(),
                purged: report.purged,
                refused: report.refused,
                dry_run,
            })
        }
        .await;
        // A dry run changes nothing: no audit line.
        if !dry_run {
            audit::record("Purge", &target, &by, &done, |r| {
                format!("purged {}, refused {}", r.purged.len(), r.refused.len())
            });
        }
        done.map(Response::new)
    }
}
