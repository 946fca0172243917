//! The operator's lifecycle beyond deploy, start and stop: restart, and
//! undeploy (the container stopped and removed, its routes released; the
//! registry keeps the component's history, `/srv/<service>/` its files).

use super::{absent_is_done, ComponentCx, ComponentOutcome};
use crate::actors::runtime::Remove;
use crate::actors::AgentError;

impl ComponentCx {
    pub(super) async fn restart(&self) -> ComponentOutcome {
        let mut created = None;
        let result = async {
            if let Some(c) = self.own_container().await? {
                self.step("stopping", "");
                self.stop_container(&c).await?;
            }
            self.step("starting", "");
            self.try_start(&mut created).await
        }
        .await
        .map(|started| format!("restarted: {started}"));
        self.conclude(("restarted", "restart-failed"), result, created)
            .await
    }

    pub(super) async fn undeploy(&self) -> ComponentOutcome {
        let result = self.try_undeploy().await;
        self.conclude(("undeployed", "undeploy-failed"), result, None)
            .await
    }

    async fn try_undeploy(&self) -> Result<String, AgentError> {
        let Some(c) = self.own_container().await? else {
            self.release_routes().await?;
            return Ok("no container; history and files kept".to_string());
        };
        self.stop_container(&c).await?;
        absent_is_done(self.runtime.send(Remove { id: c.id.clone() }).await?)?;
        // Its host ports are free once the container is gone.
        self.release_routes().await?;
        Ok(format!(
            "container {} stopped and removed; history and files kept",
            &c.id[..c.id.len().min(12)]
        ))
    }
}
