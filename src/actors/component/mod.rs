//! ComponentActor: one per component. It owns the step-by-step work on its
//! container (pull -> stop/remove old -> create -> start -> verify) and, after
//! every operation, records in the registry what really is, success or not.

use actix::{Actor, Addr, AtomicResponse, Context, Handler, Message, WrapFuture};

use super::operations::Operations;
use super::registry::{
    AddEvent, BeginChange, GetService, RecordContainer, RegistryActor, RollbackTarget,
};
use super::runtime::{
    Create, EnsureImage, EnsuredImage, Inspect, Remove, RuntimeActor, Start, Stop,
};
use super::watch::WatchActor;
use super::{AgentError, AgentSettings, Peers};
use crate::names::{container_name, Name};
use crate::registry::{ComponentRow, ContainerFacts};
use crate::runtime::registries::Caller;
use crate::runtime::{ContainerInfo, RuntimeError};
use crate::secrets::ResolvedSecrets;
use crate::spec::{ComponentDef, PullPolicy};

mod healing;
mod lifecycle;
mod network;
mod routes;
pub use healing::{ReconcileComponent, RecoverComponent};

/// How long a create that found its name taken waits for the holder to
/// become visible (a create of a dead agent that podman is finishing).
const NAME_HOLDER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);
const NAME_HOLDER_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// The result of one operation on one component, with the facts after it.
#[derive(Debug, Clone)]
pub struct ComponentOutcome {
    pub component: String,
    /// What was done, or why it failed.
    pub result: Result<String, AgentError>,
    pub container_id: Option<String>,
    pub observed_state: String,
}

pub struct ComponentActor {
    cx: ComponentCx,
}

impl ComponentActor {
    pub fn new(service: Name, name: Name, peers: Peers) -> Self {
        ComponentActor {
            cx: ComponentCx {
                container_name: container_name(&service, &name),
                service,
                name,
                registry: peers.registry,
                runtime: peers.runtime,
                watch: peers.watch,
                ops: peers.ops,
                settings: peers.settings,
                progress: None,
                by: String::new(),
            },
        }
    }
}

impl Actor for ComponentActor {
    type Context = Context<Self>;
}

/// Its state is its identity and its peers; what a panic interrupted is
/// looked at by the watch when the lease is dropped.
impl actix::Supervised for ComponentActor {}

#[cfg(test)]
impl Handler<super::supervisor::Crash> for ComponentActor {
    type Result = ();
    fn handle(&mut self, _: super::supervisor::Crash, ctx: &mut Context<Self>) {
        super::supervisor::panic_later(ctx);
    }
}

/// Panics in the middle of an operation, holding the component's lease
/// (tests: the lease must be given back all the same).
#[cfg(test)]
#[derive(Debug, Clone)]
pub struct CrashDuringOperation;

#[cfg(test)]
impl Message for CrashDuringOperation {
    type Result = ();
}

#[cfg(test)]
impl Handler<CrashDuringOperation> for ComponentActor {
    type Result = AtomicResponse<Self, ()>;
    fn handle(&mut self, _: CrashDuringOperation, _: &mut Context<Self>) -> Self::Result {
        let cx = self.cx.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let _lease = cx.lease().await;
                tokio::task::yield_now().await;
                panic!("a test-made panic during an operation");
            }
            .into_actor(self),
        ))
    }
}

impl ComponentActor {
    /// Runs `op` as this component's next operation (AtomicResponse: one at
    /// a time, in mailbox order), holding its lease, on behalf of `by`.
    fn operate<F, Fut>(
        &mut self,
        by: String,
        progress: Option<ProgressSender>,
        op: F,
    ) -> AtomicResponse<Self, ComponentOutcome>
    where
        F: FnOnce(ComponentCx) -> Fut + 'static,
        Fut: std::future::Future<Output = ComponentOutcome> + 'static,
    {
        let mut cx = self.cx.clone();
        cx.by = by;
        cx.progress = progress;
        AtomicResponse::new(Box::pin(
            async move {
                let lease = cx.lease().await;
                let watch = cx.watch.clone();
                let key = (cx.service.to_string(), cx.name.to_string());
                let outcome = op(cx).await;
                // The operator acted: the agent's own attempts start over.
                watch.do_send(super::watch::ResetHealing { key });
                drop(lease);
                outcome
            }
            .into_actor(self),
        ))
    }
}

/// Replace the container with one built from `spec`; start it when `start`.
/// A spec with a health check must pass it; if not, and `rollback`, the
/// previous deployed spec is put back.
#[derive(Debug, Clone)]
pub struct DeployComponent {
    pub spec: ComponentDef,
    pub how: DeployHow,
    pub progress: Option<ProgressSender>,
    /// Who asked (events record it).
    pub by: String,
    /// The caller's token, for a registry that takes it (`use_caller_token`).
    pub caller: Option<Caller>,
}

/// How a component is deployed.
#[derive(Debug, Clone, Copy)]
pub struct DeployHow {
    /// Start it (the service is active).
    pub start: bool,
    /// Put the previous spec back when the new one fails its health check.
    pub rollback: bool,
    /// Recreate even when the spec is what the container already runs.
    pub force: bool,
    /// Pull the image whatever the spec's pull policy says.
    pub pull: bool,
    /// Pulling and the health check end here (see [`Deploy`](super::Deploy)).
    pub deadline: tokio::time::Instant,
}

impl Message for DeployComponent {
    type Result = ComponentOutcome;
}

impl Handler<DeployComponent> for ComponentActor {
    type Result = AtomicResponse<Self, ComponentOutcome>;
    fn handle(&mut self, msg: DeployComponent, _: &mut Context<Self>) -> Self::Result {
        let DeployComponent {
            spec,
            how,
            progress,
            by,
            caller,
        } = msg;
        self.operate(by, progress, move |cx| async move {
            cx.deploy(spec, how, caller.as_ref()).await
        })
    }
}

/// What the operator asks of a component beyond deploying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentAction {
    /// Start its container, re-creating it from the deployed spec if it was
    /// removed behind the agent's back.
    Start,
    Stop,
    /// Return to the newest earlier verified spec (`mcp rollback`).
    Rollback,
    /// Stop, then start (with the health check).
    Restart,
    /// Stop and remove the container (`mcp undeploy`).
    Undeploy,
}

/// One of [`ComponentAction`], on behalf of `by`.
#[derive(Debug, Clone)]
pub struct ActOn {
    pub action: ComponentAction,
    pub by: String,
    /// Where the steps go, if anyone follows (`mcp restart`).
    pub progress: Option<ProgressSender>,
}

impl Message for ActOn {
    type Result = ComponentOutcome;
}

impl Handler<ActOn> for ComponentActor {
    type Result = AtomicResponse<Self, ComponentOutcome>;
    fn handle(&mut self, msg: ActOn, _: &mut Context<Self>) -> Self::Result {
        self.operate(msg.by, msg.progress, move |cx| async move {
            match msg.action {
                ComponentAction::Start => cx.start().await,
                ComponentAction::Stop => cx.stop().await,
                ComponentAction::Rollback => cx.rollback().await,
                ComponentAction::Restart => cx.restart().await,
                ComponentAction::Undeploy => cx.undeploy().await,
            }
        })
    }
}

/// Finish what an operation left when the agent died during it (the
/// registry still has its pending spec): a new container that is there is
/// checked, and rolled back if it fails; an old one is kept. None when
/// nothing was pending. The agent's own doing.
#[derive(Debug, Clone)]
pub struct FinishInterrupted;

impl Message for FinishInterrupted {
    type Result = Option<ComponentOutcome>;
}

impl Handler<FinishInterrupted> for ComponentActor {
    type Result = AtomicResponse<Self, Option<ComponentOutcome>>;
    fn handle(&mut self, _: FinishInterrupted, _: &mut Context<Self>) -> Self::Result {
        let mut cx = self.cx.clone();
        cx.by = crate::registry::AGENT.to_string();
        AtomicResponse::new(Box::pin(
            async move {
                let _lease = cx.lease().await;
                cx.finish_interrupted().await
            }
            .into_actor(self),
        ))
    }
}

/// Everything an operation needs, cloned out of the actor so the operation's
/// future owns it.
#[derive(Clone)]
struct ComponentCx {
    service: Name,
    name: Name,
    container_name: String,
    registry: Addr<RegistryActor>,
    runtime: Addr<RuntimeActor>,
    watch: Addr<WatchActor>,
    ops: std::sync::Arc<Operations>,
    settings: AgentSettings,
    /// Where the current operation reports its steps, if anyone listens.
    progress: Option<ProgressSender>,
    /// Who the current operation is for (its events record it).
    by: String,
}

/// A step of a deploy, for `mcp deploy`'s progress lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub component: String,
    pub phase: &'static str,
    pub detail: String,
}

pub type ProgressSender = tokio::sync::mpsc::UnboundedSender<Progress>;

/// A stop or remove of a container that is no longer there did its job.
fn absent_is_done(result: crate::runtime::Result<()>) -> Result<(), AgentError> {
    match result {
        Err(crate::runtime::RuntimeError::NotFound { .. }) => Ok(()),
        other => Ok(other?),
    }
}

/// When a deploy gives up waiting (pull, health check).
pub type Deadline = tokio::time::Instant;

fn id_of(created: &Option<Created>) -> String {
    created.as_ref().map(|c| c.id.clone()).unwrap_or_default()
}

/// What a container is created with beyond its spec.
#[derive(Debug, Clone, Default)]
struct Wiring {
    /// Its routes' host ports and variables.
    routes: Vec<crate::routes::Published>,
    /// Its other names on its network.
    aliases: Vec<String>,
}

/// The container an operation created, and from which spec.
struct Created {
    id: String,
    spec: ComponentDef,
    /// What the check right after its start saw: running. The operation's
    /// outcome when it succeeds; a change after that is the watch's (it
    /// inspects the component afresh when the operation ends).
    started: Option<ContainerInfo>,
    /// It passed the operation's checks: running, and healthy when the spec
    /// has a health check. Until then its spec is unverified.
    verified: bool,
}

impl Created {
    fn verified(created: &mut Option<Created>) {
        if let Some(c) = created.as_mut() {
            c.verified = true;
        }
    }
}

impl ComponentCx {
    async fn deploy(
        &self,
        spec: ComponentDef,
        how: DeployHow,
        caller: Option<&Caller>,
    ) -> ComponentOutcome {
        let mut created = None;
        let result = self.try_deploy(spec, how, caller, &mut created).await;
        self.conclude(("deployed", "deploy-failed"), result, created)
            .await
    }

    async fn try_deploy(
        &self,
        spec: ComponentDef,
        how: DeployHow,
        caller: Option<&Caller>,
        created: &mut Option<Created>,
    ) -> Result<String, AgentError> {
        let DeployHow {
            start,
            rollback,
            force,
            deadline,
            ..
        } = how;
        let mut policy = if how.pull {
            PullPolicy::Always
        } else {
            spec.pull
        };
        let mut pulled_already = false;
        // A secret missing fails the deploy here, before anything is
        // pulled, stopped or removed.
        self.secrets_for(&spec).await?;
        let row = self.row().await?;
        let verified_here = row
            .as_ref()
            .is_some_and(|r| r.state.verified() && r.deployed_spec.as_ref() == Some(&spec));
        if !force && verified_here {
            // As compose does: an unchanged component keeps its container,
            // brought to the state the service wants, unless its tag now
            // names another image (pulled just now, or re-tagged here).
            let image = self
                .ensure_image(&spec, policy, Some(deadline), caller)
                .await?;
            policy = PullPolicy::Missing;
            pulled_already = image.pulled;
            if let Some(kept) = self.keep_unchanged(&spec, start, &image.id).await? {
                return Ok(kept);
            }
        }
        // What a failed health check returns to: the newest spec that
        // passed its checks (an unverified one never counts).
        let previous = self
            .registry
            .send(RollbackTarget {
                service: self.service.to_string(),
                component: self.name.to_string(),
                other_than: Some(spec.clone()),
            })
            .await??;
        let image = spec.image.clone();
        let health = spec.health.clone();
        let pulled = self
            .replace(
                spec.clone(),
                (policy, caller),
                start,
                Some(deadline),
                created,
            )
            .await?;
        let pulled = if pulled || pulled_already {
            ", pulled"
        } else {
            ""
        };
        if !start {
            // Nothing runs to check; a start will verify that it runs.
            Created::verified(created);
            return Ok(format!(
                "created {image} (service inactive, not started{pulled})"
            ));
        }
        let Some(check) = health else {
            Created::verified(created);
            return Ok(format!("running {image}{pulled}"));
        };
        let id = id_of(created);
        self.step("checking health", "");
        let checked = tokio::time::timeout_at(
            deadline,
            super::health::wait_healthy(&self.runtime, &id, &check),
        )
        .await
        .unwrap_or_else(|_| {
            Err(
                "did not become healthy before the deploy's deadline (mcp deploy --deadline)"
                    .into(),
            )
        });
        let why = match checked {
            Ok(took) => {
                Created::verified(created);
                self.step("healthy", &format!("after {:.1}s", took.as_secs_f64()));
                return Ok(format!(
                    "running {image}{pulled}, healthy after {:.1}s",
                    took.as_secs_f64()
                ));
            }
            Err(why) => why,
        };
        let Some(previous) = previous.filter(|_| rollback) else {
            return Err(AgentError::Unhealthy(format!("{image} {why}")));
        };
        Err(self
            .roll_back_to(previous, &format!("{image} {why}"), created)
            .await)
    }

    /// A deploy of the spec the component already runs, verified: its
    /// container is kept and brought to the state the service wants. None
    /// when that takes a new container (there is none, or it cannot start).
    async fn keep_unchanged(
        &self,
        spec: &ComponentDef,
        start: bool,
        image_id: &str,
    ) -> Result<Option<String>, AgentError> {
        let Some(c) = self.own_container().await? else {
            return Ok(None);
        };
        if !c.image_id.is_empty() && c.image_id != image_id {
            self.step(
                "image changed",
                &format!("{} names another image", spec.image),
            );
            return Ok(None);
        }
        let kept = |how: &str| {
            Ok(Some(format!(
                "unchanged ({}), container kept{how}",
                spec.image
            )))
        };
        match (start, c.state.as_str()) {
            (true, "running") | (false, "created" | "exited") => {
                self.step("unchanged", "");
                kept("")
            }
            (false, "running" | "paused" | "restarting") => {
                self.step("stopping", "the service is inactive");
                self.stop_container(&c).await?;
                kept(" and stopped (the service is inactive)")
            }
            _ => Ok(None),
        }
    }

    /// Puts `previous` back after `failure` (a new spec that did not become
    /// healthy); the error that says what happened.
    async fn roll_back_to(
        &self,
        previous: ComponentDef,
        failure: &str,
        created: &mut Option<Created>,
    ) -> AgentError {
        let back_to = previous.image.clone();
        self.step("rolling back", &format!("to {back_to}"));
        // The way back is not bounded by the deadline: it must complete.
        // The way back uses the image the node has.
        let back = self
            .replace(
                previous.clone(),
                (PullPolicy::Missing, None),
                true,
                None,
                created,
            )
            .await;
        if let Err(e) = back {
            return AgentError::Unhealthy(format!(
                "{failure}; rolling back to {back_to} failed too: {e}"
            ));
        }
        let detail = format!("{failure}; rolled back to the previous spec ({back_to})");
        self.note("rolled-back", &detail).await;
        if let Some(check) = &previous.health {
            if let Err(again) =
                super::health::wait_healthy(&self.runtime, &id_of(created), check).await
            {
                return AgentError::Unhealthy(format!(
                    "{detail}, which is not healthy either: {again}"
                ));
            }
        }
        Created::verified(created);
        AgentError::Unhealthy(detail)
    }

    async fn finish_interrupted(&self) -> Option<ComponentOutcome> {
        let row = self.row().await.ok()??;
        let pending = row.pending_spec?;
        let running = row.state.desired_state == crate::registry::DesiredState::Running;
        let mut created = None;
        let result = self
            .try_finish_interrupted(pending, running, &mut created)
            .await;
        Some(self.finish("deploy-interrupted", result, created).await)
    }

    async fn try_finish_interrupted(
        &self,
        pending: ComponentDef,
        running: bool,
        created: &mut Option<Created>,
    ) -> Result<String, AgentError> {
        let image = pending.image.clone();
        let during = format!("the agent restarted during an operation moving to {image}");
        let Some(c) = self.own_container().await? else {
            return Ok(format!("{during}; its container is gone"));
        };
        if c.created_from().as_ref() != Some(&pending) {
            return Ok(format!(
                "{during}, before it replaced the container: it still runs {}; deploy again \
                 to apply {image}",
                c.image
            ));
        }
        // The new container is there: check it now, as the deploy would have.
        let health = pending.health.clone();
        *created = Some(Created {
            id: c.id.clone(),
            spec: pending,
            started: None,
            verified: false,
        });
        if !running {
            Created::verified(created);
            return Ok(format!(
                "{during}; its container is there (the service is inactive)"
            ));
        }
        if c.state != "running" {
            self.start_and_verify(&c.id).await?;
        }
        let Some(check) = health else {
            Created::verified(created);
            return Ok(format!("{during}; verified after the restart: running"));
        };
        match super::health::wait_healthy(&self.runtime, &c.id, &check).await {
            Ok(_) => {
                Created::verified(created);
                Ok(format!("{during}; verified after the restart: healthy"))
            }
            Err(why) => {
                let failure = format!("{during}; {image} {why}");
                let previous = self
                    .registry
                    .send(RollbackTarget {
                        service: self.service.to_string(),
                        component: self.name.to_string(),
                        other_than: created.as_ref().map(|c| c.spec.clone()),
                    })
                    .await??;
                match previous {
                    Some(previous) => Err(self.roll_back_to(previous, &failure, created).await),
                    None => Err(AgentError::Unhealthy(format!(
                        "{failure}; no earlier verified spec to return to: kept, unverified"
                    ))),
                }
            }
        }
    }

    /// Returns to the newest earlier spec, on the operator's request.
    async fn rollback(&self) -> ComponentOutcome {
        let mut created = None;
        let result = self.try_rollback(&mut created).await;
        self.conclude(("rolled-back", "rollback-failed"), result, created)
            .await
    }

    async fn try_rollback(&self, created: &mut Option<Created>) -> Result<String, AgentError> {
        let previous = self
            .registry
            .send(RollbackTarget {
                service: self.service.to_string(),
                component: self.name.to_string(),
                other_than: None,
            })
            .await??
            .ok_or_else(|| {
                AgentError::NotFound(format!(
                    "{}/{} has no earlier deployed spec to return to",
                    self.service, self.name
                ))
            })?;
        let image = previous.image.clone();
        let health = previous.health.clone();
        self.replace(previous, (PullPolicy::Missing, None), true, None, created)
            .await?;
        if let Some(check) = health {
            super::health::wait_healthy(&self.runtime, &id_of(created), &check)
                .await
                .map_err(|why| AgentError::Unhealthy(format!("{image} {why}")))?;
        }
        Created::verified(created);
        Ok(format!("running the previous spec ({image})"))
    }

    /// Makes sure `spec`'s image is on the node, pulling as `policy` says,
    /// with the node's login for its registry. A pull still running at
    /// `deadline` is given up.
    async fn ensure_image(
        &self,
        spec: &ComponentDef,
        policy: PullPolicy,
        deadline: Option<Deadline>,
        caller: Option<&Caller>,
    ) -> Result<EnsuredImage, AgentError> {
        self.step("pulling", spec.image.as_str());
        let pull = self.runtime.send(EnsureImage {
            image: spec.image.to_string(),
            policy,
            login: self.settings.registries.for_image(&spec.image, caller),
        });
        Ok(match deadline {
            Some(at) => tokio::time::timeout_at(at, pull).await.map_err(|_| {
                AgentError::DeadlineExceeded(format!(
                    "the deploy's deadline passed while pulling {}; nothing was changed \
                     (mcp deploy --deadline)",
                    spec.image
                ))
            })?,
            None => pull.await,
        }??)
    }

    /// Pulls as `policy` says, stops and removes the component's container,
    /// creates one from `spec` and (when `start`) starts and verifies it.
    /// True when it pulled. A pull still running at `deadline` is given up,
    /// with the container untouched.
    async fn replace(
        &self,
        spec: ComponentDef,
        (policy, caller): (PullPolicy, Option<&Caller>),
        start: bool,
        deadline: Option<Deadline>,
        created: &mut Option<Created>,
    ) -> Result<bool, AgentError> {
        // First: a missing secret must leave the old container running.
        let secrets = self.secrets_for(&spec).await?;
        let pulled = self
            .ensure_image(&spec, policy, deadline, caller)
            .await?
            .pulled;
        // Before the old container goes: a network or a host port that
        // cannot be had leaves it as it was.
        let wiring = self.wire(&spec).await?;
        self.step("replacing", spec.image.as_str());
        // Before the old container goes: a crash from here on leaves the
        // registry saying what was in progress (resolved at the next start).
        self.registry
            .send(BeginChange {
                service: self.service.to_string(),
                component: self.name.to_string(),
                spec: spec.clone(),
            })
            .await??;
        if let Some(old) = self.own_container().await? {
            // Gone meanwhile is as good as stopped and removed.
            self.stop_container(&old).await?;
            absent_is_done(self.runtime.send(Remove { id: old.id }).await?)?;
        }
        let id = self.create(spec, secrets, &wiring, created).await?;
        if start {
            self.step("starting", "");
            let running = self.start_and_verify(&id).await?;
            if let Some(created) = created.as_mut() {
                created.started = Some(running);
            }
        }
        Ok(pulled)
    }

    /// Reports a step to whoever follows this operation.
    fn step(&self, phase: &'static str, detail: &str) {
        if let Some(progress) = &self.progress {
            // The follower may have gone; the operation goes on.
            let _ = progress.send(Progress {
                component: self.name.to_string(),
                phase,
                detail: detail.to_string(),
            });
        }
    }

    /// Records an event of this component, caused by whom the operation is for.
    async fn note(&self, kind: &str, detail: &str) {
        self.record(AddEvent {
            service: self.service.to_string(),
            component: self.name.to_string(),
            kind: kind.to_string(),
            detail: detail.to_string(),
            by: self.by.clone(),
        })
        .await;
    }

    /// The values of the secrets `spec` names, from the node's store.
    /// Err names the missing ones (never a value).
    async fn secrets_for(&self, spec: &ComponentDef) -> Result<ResolvedSecrets, AgentError> {
        if spec.secrets.is_empty() && spec.secret_files.is_empty() {
            return Ok(ResolvedSecrets::default());
        }
        let store = self.settings.secrets.clone();
        let service = self.service.clone();
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || store.resolve(&service, &spec))
            .await
            .map_err(|e| AgentError::Internal(format!("reading the secrets: {e}")))?
            .map_err(AgentError::from)
    }

    /// What `spec`'s container needs besides the spec: its network made
    /// sure of, its routes' host ports, and its names on its network.
    async fn wire(&self, spec: &ComponentDef) -> Result<Wiring, AgentError> {
        self.ensure_network(spec).await?;
        let routes = self.assign_routes(spec).await?;
        // On a network of the operator's, the other components of the
        // service reach it by its component name (and its container name).
        let aliases = match &spec.network {
            Some(n) if n.is_user_defined() => {
                vec![self.name.to_string(), self.container_name.clone()]
            }
            _ => Vec::new(),
        };
        Ok(Wiring { routes, aliases })
    }

    /// Creates the component's container from `spec` (with the values of
    /// its secrets and `wiring`) and notes it in `created`.
    async fn create(
        &self,
        spec: ComponentDef,
        secrets: ResolvedSecrets,
        wiring: &Wiring,
        created: &mut Option<Created>,
    ) -> Result<String, AgentError> {
        let create = || Create {
            service: self.service.clone(),
            component: spec.clone(),
            container_name: self.container_name.clone(),
            secrets: secrets.clone(),
            routes: wiring.routes.clone(),
            aliases: wiring.aliases.clone(),
        };
        let id = match self.runtime.send(create()).await? {
            Err(RuntimeError::NameInUse { detail }) => {
                // A create of an agent that died mid-deploy may still be
                // finishing in podman: its container holds the name before
                // it can be inspected. Once it shows up it is replaced.
                self.remove_name_holder(&detail).await?;
                self.runtime.send(create()).await??
            }
            done => done?,
        };
        *created = Some(Created {
            id: id.clone(),
            spec,
            started: None,
            verified: false,
        });
        Ok(id)
    }

    /// Waits for the container holding this component's name to become
    /// visible, then stops and removes it if it is this component's.
    async fn remove_name_holder(&self, conflict: &str) -> Result<(), AgentError> {
        let deadline = tokio::time::Instant::now() + NAME_HOLDER_PATIENCE;
        let holder = loop {
            if let Some(c) = self.own_container().await? {
                break c;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(AgentError::Internal(format!(
                    "runtime refused create: {conflict} (and no such container appeared within \
                     {}s)",
                    NAME_HOLDER_PATIENCE.as_secs()
                )));
            }
            tokio::time::sleep(NAME_HOLDER_POLL).await;
        };
        self.step("replacing", "a container that was still being created");
        self.stop_container(&holder).await?;
        absent_is_done(self.runtime.send(Remove { id: holder.id }).await?)
    }

    async fn start(&self) -> ComponentOutcome {
        let mut created = None;
        let result = self.try_start(&mut created).await;
        self.conclude(("started", "start-failed"), result, created)
            .await
    }

    /// Starts the component's container (re-created from the deployed spec
    /// when it is gone) and, when the spec has a health check, waits until
    /// it passes: what depends on it may start then.
    async fn try_start(&self, created: &mut Option<Created>) -> Result<String, AgentError> {
        let (started, id) = self.start_or_recreate(created).await?;
        match self.await_health(&id).await? {
            Some(took) => Ok(format!(
                "{started}, healthy after {:.1}s",
                took.as_secs_f64()
            )),
            None => Ok(started),
        }
    }

    /// Waits for container `id` to pass the deployed spec's health check,
    /// if it has one: how long that took.
    async fn await_health(&self, id: &str) -> Result<Option<std::time::Duration>, AgentError> {
        let check = self
            .row()
            .await?
            .and_then(|r| r.deployed_spec)
            .and_then(|s| s.health);
        let Some(check) = check else {
            return Ok(None);
        };
        self.step("checking health", "");
        super::health::wait_healthy(&self.runtime, id, &check)
            .await
            .map(Some)
            .map_err(|why| AgentError::Unhealthy(format!("started, but {why}")))
    }

    /// What it did, and the container it started.
    async fn start_or_recreate(
        &self,
        created: &mut Option<Created>,
    ) -> Result<(String, String), AgentError> {
        if let Some(c) = self.own_container().await? {
            if c.state == "running" {
                return Ok(("already running".to_string(), c.id));
            }
            match self.start_and_verify(&c.id).await {
                Ok(_) => return Ok(("started".to_string(), c.id)),
                // Gone since we looked: re-created below.
                Err(AgentError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // The container is gone: re-create it from what was last deployed.
        let row = self.row().await?;
        let was_verified = row
            .as_ref()
            .is_some_and(|r| r.state.verified_at_ms.is_some());
        let Some(spec) = row.and_then(|r| r.deployed_spec) else {
            return Err(AgentError::NotFound(format!(
                "{}/{} has never been deployed: run `mcp deploy {}/{}`",
                self.service, self.name, self.service, self.name
            )));
        };
        let secrets = self.secrets_for(&spec).await?;
        // What was deployed ran here: its image should still be.
        self.ensure_image(&spec, PullPolicy::Missing, None, None)
            .await?;
        let wiring = self.wire(&spec).await?;
        self.registry
            .send(BeginChange {
                service: self.service.to_string(),
                component: self.name.to_string(),
                spec: spec.clone(),
            })
            .await??;
        let id = self.create(spec, secrets, &wiring, created).await?;
        self.start_and_verify(&id).await?;
        // The same spec as before: as verified as it was.
        if was_verified {
            Created::verified(created);
        }
        Ok((
            "re-created from the deployed spec and started".to_string(),
            id,
        ))
    }

    async fn stop(&self) -> ComponentOutcome {
        let result = self.try_stop().await;
        self.conclude(("stopped", "stop-failed"), result, None)
            .await
    }

    async fn try_stop(&self) -> Result<String, AgentError> {
        let Some(c) = self.own_container().await? else {
            return Ok("no container to stop".to_string());
        };
        if c.state != "running" && c.state != "paused" && c.state != "restarting" {
            return Ok(format!("already {}", c.state));
        }
        self.stop_container(&c).await?;
        Ok("stopped".to_string())
    }

    /// Starts container `id` and checks that it runs; returns what it saw.
    async fn start_and_verify(&self, id: &str) -> Result<ContainerInfo, AgentError> {
        self.runtime.send(Start { id: id.to_string() }).await??;
        let after = self
            .runtime
            .send(Inspect {
                name_or_id: id.to_string(),
            })
            .await??;
        match after {
            Some(c) if c.state == "running" => Ok(c),
            Some(c) => Err(AgentError::Internal(format!(
                "container {} is {} right after start ({})",
                self.container_name, c.state, c.status
            ))),
            None => Err(AgentError::Internal(format!(
                "container {} vanished right after start",
                self.container_name
            ))),
        }
    }

    /// The container holding this component's name, refusing one that MCP
    /// did not create for this component.
    async fn own_container(&self) -> Result<Option<ContainerInfo>, AgentError> {
        let known_id = self.row().await?.and_then(|r| r.state.container_id);
        let found = self
            .runtime
            .send(Inspect {
                name_or_id: self.container_name.clone(),
            })
            .await??;
        let ours = |c: &ContainerInfo| {
            c.owner() == Some((self.service.as_str(), self.name.as_str()))
                || known_id.as_deref() == Some(c.id.as_str())
        };
        match found {
            Some(c) if ours(&c) => return Ok(Some(c)),
            Some(_) => {
                return Err(AgentError::InvalidArgument(format!(
                    "a container named {} exists that MCP did not create for {}/{}: \
                     remove or rename it (podman rm {}), or `mcp adopt` it, and deploy again",
                    self.container_name, self.service, self.name, self.container_name
                )))
            }
            None => {}
        }
        // An adopted container keeps the name it had.
        match known_id {
            Some(id) => Ok(self.runtime.send(Inspect { name_or_id: id }).await??),
            None => Ok(None),
        }
    }

    /// How long a stop of `c` waits before killing: the `stop_timeout` of
    /// the spec it was made from (its label), else the agent's. A container
    /// without the label (adopted) was given no stop timeout by MCP.
    /// Stops `c`, waiting as long as its spec says; one already gone is
    /// as good as stopped.
    async fn stop_container(&self, c: &ContainerInfo) -> Result<(), AgentError> {
        absent_is_done(
            self.runtime
                .send(Stop {
                    id: c.id.clone(),
                    timeout: self.stop_timeout_of(c),
                })
                .await?,
        )
    }

    fn stop_timeout_of(&self, c: &ContainerInfo) -> std::time::Duration {
        c.created_from()
            .and_then(|spec| spec.stop_timeout)
            .map_or(self.settings.stop_timeout, |t| t.get())
    }

    /// The registry's row for this component.
    async fn row(&self) -> Result<Option<ComponentRow>, AgentError> {
        let service = self
            .registry
            .send(GetService {
                name: self.service.to_string(),
            })
            .await??;
        Ok(service.and_then(|s| {
            s.components
                .into_iter()
                .find(|c| c.state.name == self.name.as_str())
        }))
    }

    /// The component's lease: after any earlier operation (even of another
    /// actor instance), and with the watch keeping its hands off until it is
    /// dropped, however the operation ends.
    async fn lease(&self) -> super::operations::Lease {
        let key = (self.service.to_string(), self.name.to_string());
        self.ops.lease(key, self.watch.clone()).await
    }

    /// Looks at what really is, records it and an event, and builds the outcome.
    /// Records the outcome of an operation as `done` or `failed`, as its
    /// result says.
    async fn conclude(
        &self,
        (done, failed): (&str, &str),
        result: Result<String, AgentError>,
        created: Option<Created>,
    ) -> ComponentOutcome {
        let kind = if result.is_ok() { done } else { failed };
        self.finish(kind, result, created).await
    }

    async fn finish(
        &self,
        kind: &str,
        result: Result<String, AgentError>,
        created: Option<Created>,
    ) -> ComponentOutcome {
        let just_started = created.as_ref().and_then(|c| c.started.clone());
        let seen = match (&result, just_started) {
            // Success: the container it started and saw running.
            (Ok(_), Some(running)) => Ok(Some(running)),
            _ => match self.own_container().await {
                // A container holding the name that MCP did not create for
                // this component is not its container: the component has none.
                Err(AgentError::InvalidArgument(_)) => Ok(None),
                other => other,
            },
        };
        let (container_id, observed_state) = match seen {
            Ok(found) => {
                let there = created.filter(|new| found.as_ref().is_some_and(|c| c.id == new.id));
                let verified = there.as_ref().is_some_and(|c| c.verified);
                let facts = ContainerFacts {
                    container_id: found.as_ref().map(|c| c.id.clone()),
                    observed_state: found
                        .as_ref()
                        .map_or_else(|| "absent".to_string(), |c| c.state.clone()),
                    created_from: there.map(|new| new.spec),
                    verified,
                    image_id: found
                        .as_ref()
                        .map(|c| c.image_id.clone())
                        .filter(|i| !i.is_empty()),
                };
                self.record(RecordContainer {
                    service: self.service.to_string(),
                    component: self.name.to_string(),
                    facts: facts.clone(),
                })
                .await;
                (facts.container_id, facts.observed_state)
            }
            // The runtime cannot say what is there: record nothing but the event.
            Err(_) => (None, "unknown".to_string()),
        };
        let detail = match &result {
            Ok(done) => done.clone(),
            Err(e) => e.to_string(),
        };
        self.note(kind, &detail).await;
        ComponentOutcome {
            component: self.name.to_string(),
            result,
            container_id,
            observed_state,
        }
    }

    async fn record<M, R>(&self, msg: M)
    where
        M: actix::Message<Result = crate::registry::Result<R>> + Send + 'static,
        M::Result: Send,
        R: Send + 'static,
        RegistryActor: Handler<M>,
    {
        match self.registry.send(msg).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(service = %self.service, component = %self.name, "{e}"),
            Err(e) => {
                tracing::error!(service = %self.service, component = %self.name, "registry unavailable: {e}")
            }
        }
    }
}
