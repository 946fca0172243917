//! A component's routes: host ports assigned before its container is
//! created (kept across redeploys, new ones picked from `[routes]
//! port_range`, those gone from the spec released), released when it is
//! undeployed. Each route added or removed is an event and, with a
//! `[routes] hook`, a run of the hook; a hook that fails is an event too and
//! does not fail the operation.

use super::ComponentCx;
use crate::actors::registry::{AssignRoutes, ReleaseRoutes};
use crate::actors::AgentError;
use crate::routes::hook::{self, Action, HookInput};
use crate::routes::{Published, Route};
use crate::spec::ComponentDef;

impl ComponentCx {
    /// Gives `spec`'s routes their host ports; what the container is created
    /// with. No port left: FailedPrecondition, and nothing changed.
    pub(super) async fn assign_routes(
        &self,
        spec: &ComponentDef,
    ) -> Result<Vec<Published>, AgentError> {
        let assigned = self
            .registry
            .send(AssignRoutes {
                service: self.service.to_string(),
                component: self.name.to_string(),
                wanted: spec.routes.as_slice().to_vec(),
                pool: self.settings.routes.pool(),
            })
            .await??
            .map_err(|none| {
                AgentError::FailedPrecondition(format!("{}/{}: {none}", self.service, self.name))
            })?;
        for r in &assigned.removed {
            self.announce(Action::Remove, r).await;
        }
        for r in &assigned.added {
            self.announce(Action::Add, r).await;
        }
        Ok(assigned.routes.iter().map(Published::from).collect())
    }

    /// Releases every route of the component (it was undeployed).
    pub(super) async fn release_routes(&self) -> Result<(), AgentError> {
        let gone = self
            .registry
            .send(ReleaseRoutes {
                service: self.service.to_string(),
                component: self.name.to_string(),
            })
            .await??;
        for r in &gone {
            self.announce(Action::Remove, r).await;
        }
        Ok(())
    }

    /// A route added or removed: its event, then the hook when there is one.
    async fn announce(&self, action: Action, route: &Route) {
        let kind = match action {
            Action::Add => "route-added",
            Action::Remove => "route-removed",
        };
        self.note(kind, &route.describe()).await;
        let Some(command) = &self.settings.routes.hook else {
            return;
        };
        let input = HookInput {
            action,
            node: &self.settings.node,
            route,
        };
        if let Err(why) = hook::run(command, self.settings.routes.hook_timeout, &input).await {
            tracing::warn!(service = %self.service, component = %self.name, "route hook failed: {why}");
            self.note(
                "route-hook-failed",
                &format!("{} {}: {why}", action.as_str(), route.describe()),
            )
            .await;
        }
    }
}
