//! What a component does on the agent's own initiative, never an operator's:
//! recovery (start what should run, at agent start), reconciliation (put a
//! drifting component back) and the restart of an unhealthy container. Each
//! runs under the component's lease, as `mcp-agent`, and records an event
//! with its reason; none touches a component that needs nothing.

use actix::{AtomicResponse, Context, Handler, Message};

use super::{ComponentActor, ComponentCx, ComponentOutcome};
use crate::actors::runtime::Start;
use crate::actors::AgentError;
use crate::registry::{DesiredState, AGENT};
use crate::runtime::ContainerInfo;

/// Start the component if it should run and does not: its container
/// started, or re-created from the deployed spec when it is gone. None when
/// there is nothing to do (not desired running, or running already).
#[derive(Debug, Clone)]
pub struct RecoverComponent {
    /// Say what would be done, do nothing.
    pub dry_run: bool,
}

impl Message for RecoverComponent {
    type Result = Option<ComponentOutcome>;
}

impl Handler<RecoverComponent> for ComponentActor {
    type Result = AtomicResponse<Self, Option<ComponentOutcome>>;
    fn handle(&mut self, msg: RecoverComponent, _: &mut Context<Self>) -> Self::Result {
        self.autonomously(move |cx| async move { cx.recover(msg.dry_run).await })
    }
}

/// Put a drifting component back as its desired state says (start or
/// re-create it, or stop it), or, with `restart`, restart its running but
/// unhealthy container. `why` is what the watch saw. None when the drift
/// is gone by the time the lease is held.
#[derive(Debug, Clone)]
pub struct ReconcileComponent {
    pub why: String,
    pub restart: bool,
}

impl Message for ReconcileComponent {
    type Result = Option<ComponentOutcome>;
}

impl Handler<ReconcileComponent> for ComponentActor {
    type Result = AtomicResponse<Self, Option<ComponentOutcome>>;
    fn handle(&mut self, msg: ReconcileComponent, _: &mut Context<Self>) -> Self::Result {
        self.autonomously(move |cx| async move {
            if msg.restart {
                cx.restart_unhealthy(&msg.why).await
            } else {
                cx.reconcile(&msg.why).await
            }
        })
    }
}

impl ComponentActor {
    /// Runs `op` as the agent's own operation, under the component's lease.
    fn autonomously<F, Fut>(&mut self, op: F) -> AtomicResponse<Self, Option<ComponentOutcome>>
    where
        F: FnOnce(ComponentCx) -> Fut + 'static,
        Fut: std::future::Future<Output = Option<ComponentOutcome>> + 'static,
    {
        use actix::WrapFuture;
        let mut cx = self.cx.clone();
        cx.by = AGENT.to_string();
        AtomicResponse::new(Box::pin(
            async move {
                let _lease = cx.lease().await;
                op(cx).await
            }
            .into_actor(self),
        ))
    }
}

/// How a component that should run is not running, in an event's words.
fn not_running(found: &Option<ContainerInfo>) -> String {
    match found {
        Some(c) => format!("its container was {} ({})", c.state, c.status),
        None => "its container was gone".to_string(),
    }
}

impl ComponentCx {
    /// Looks before acting: Err is an outcome already (the runtime or the
    /// registry could not say).
    async fn look(&self) -> Result<(DesiredState, Option<ContainerInfo>), ComponentOutcome> {
        let looked = async {
            let desired = self
                .row()
                .await?
                .map_or(DesiredState::Ignore, |r| r.state.desired_state);
            Ok::<_, AgentError>((desired, self.own_container().await?))
        };
        looked.await.map_err(|e| ComponentOutcome {
            component: self.name.to_string(),
            result: Err(e),
            container_id: None,
            observed_state: "unknown".to_string(),
        })
    }

    async fn recover(&self, dry_run: bool) -> Option<ComponentOutcome> {
        let (desired, found) = match self.look().await {
            Ok(looked) => looked,
            Err(failed) => return Some(failed),
        };
        if desired != DesiredState::Running || found.as_ref().is_some_and(|c| c.state == "running")
        {
            return None;
        }
        let was = not_running(&found);
        if dry_run {
            let would = match &found {
                Some(_) => "would start it",
                None => "would re-create it from the deployed spec",
            };
            return Some(ComponentOutcome {
                component: self.name.to_string(),
                result: Ok(format!("{was}: {would}")),
                container_id: found.map(|c| c.id),
                observed_state: "unchanged (dry run)".to_string(),
            });
        }
        let mut created = None;
        let result = self
            .try_start(&mut created)
            .await
            .map(|done| format!("{was}: {done}"));
        Some(
            self.conclude(("recovered", "recover-failed"), result, created)
                .await,
        )
    }

    async fn reconcile(&self, why: &str) -> Option<ComponentOutcome> {
        let (desired, found) = match self.look().await {
            Ok(looked) => looked,
            Err(failed) => return Some(failed),
        };
        let state = found.as_ref().map_or("absent", |c| c.state.as_str());
        // The drift may be gone by the time the lease is held.
        crate::actors::watch::drift_of(desired, state)?;
        let mut created = None;
        let result = match desired {
            DesiredState::Running => self.try_start(&mut created).await,
            DesiredState::Stopped => self.try_stop().await,
            DesiredState::Ignore => return None,
        }
        .map(|done| format!("{why}: {done}"));
        Some(
            self.conclude(("reconciled", "reconcile-failed"), result, created)
                .await,
        )
    }

    async fn restart_unhealthy(&self, why: &str) -> Option<ComponentOutcome> {
        let (desired, found) = match self.look().await {
            Ok(looked) => looked,
            Err(failed) => return Some(failed),
        };
        let running = found.filter(|c| c.state == "running");
        let (DesiredState::Running, Some(c)) = (desired, running) else {
            // Not running any more: drift, the reconciliation's business.
            return None;
        };
        let result = self
            .try_restart(&c)
            .await
            .map(|done| format!("{why}: {done}"));
        Some(
            self.conclude(
                ("unhealthy-restarted", "unhealthy-restart-failed"),
                result,
                None,
            )
            .await,
        )
    }

    async fn try_restart(&self, c: &ContainerInfo) -> Result<String, AgentError> {
        self.stop_container(c).await?;
        self.runtime.send(Start { id: c.id.clone() }).await??;
        match self.await_health(&c.id).await? {
            Some(took) => Ok(format!(
                "restarted, healthy after {:.1}s",
                took.as_secs_f64()
            )),
            None => Ok("restarted".to_string()),
        }
    }
}
