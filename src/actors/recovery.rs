//! What the agent does at start to put the node back as the registry says
//! it should be, each step an event by `mcp-agent` and each switchable in
//! `agent.toml` (`[recovery]`):
//!
//! 1. operations that the agent's death interrupted are finished (the new
//!    container verified, or rolled back): `deploy-interrupted` events;
//! 2. every component that should run and does not is started, or
//!    re-created from its deployed spec (after a reboot, or lost storage):
//!    `recovered` / `recover-failed` events. Services start in the boot
//!    sequence's stages (`[[boot.sequence]]`), each stage waiting for the
//!    previous one to pass its gate (health checks, or a TCP port) or to
//!    time out (`boot-stage-ready` / `boot-stage-timeout`, which alerts);
//!    within a service, components follow `depends_on`.
//!
//! The gRPC server answers meanwhile; [`RecoveryProgress`] is what `mcp
//! status` shows of it. `mcp-agent recover` runs step 2 on demand.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;

use super::component::ComponentOutcome;
use super::directory::ServiceFor;
use super::registry::{AddEvent, GetService, ListServices};
use super::service::{Recover, ResolveInterrupted};
use super::watch::RaiseAlert;
use super::{AgentError, AgentHandles};
use crate::names::Name;
use crate::registry::{now_ms, DesiredState, AGENT};

/// `[recovery]` and `[[boot.sequence]]` of agent.toml.
#[derive(Debug, Clone)]
pub struct RecoverySettings {
    /// Start what should run when the agent starts.
    pub at_start: bool,
    /// Finish the operations a crash of the agent interrupted.
    pub finish_interrupted: bool,
    pub boot: Vec<BootStage>,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        RecoverySettings {
            at_start: true,
            finish_interrupted: true,
            boot: Vec::new(),
        }
    }
}

impl RecoverySettings {
    /// Nothing on its own (tests that want a quiet start).
    pub fn off() -> Self {
        RecoverySettings {
            at_start: false,
            finish_interrupted: false,
            boot: Vec::new(),
        }
    }
}

/// One stage of the boot sequence: its services start together; the next
/// stage starts when this one passes its gate or its timeout passes.
#[derive(Debug, Clone)]
pub struct BootStage {
    pub name: String,
    pub services: Vec<Name>,
    pub timeout: Duration,
    pub gate: Gate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Every component of the stage with a health check passes it.
    Health,
    /// `host:port` accepts a TCP connection.
    Tcp(String),
}

/// What the recovery is doing, or did (for `mcp status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryStatus {
    pub in_progress: bool,
    pub stage: Option<String>,
    /// Components that should run, looked at so far, of `total`.
    pub done: usize,
    pub total: usize,
    pub recovered: usize,
    pub failed: usize,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// Why it did not run, if it was turned off.
    pub detail: String,
}

/// Shared between the recovery and the gRPC layer.
#[derive(Debug, Clone, Default)]
pub struct RecoveryProgress(Arc<Mutex<RecoveryStatus>>);

impl RecoveryProgress {
    pub fn get(&self) -> RecoveryStatus {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut RecoveryStatus)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// What one recovery did: per service, the components it acted on (or
/// would have, in a dry run), and each stage's gate.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    pub services: Vec<(String, Result<Vec<ComponentOutcome>, AgentError>)>,
    pub stages: Vec<(String, Result<String, String>)>,
}

/// Everything the agent does at start, in order, as `settings` allow.
pub async fn at_start(handles: AgentHandles, settings: RecoverySettings) {
    if settings.finish_interrupted {
        finish_interrupted(handles.clone()).await;
    }
    if settings.at_start {
        recover(&handles, &settings.boot, false).await;
    } else {
        handles.recovery.update(|s| {
            s.detail = "recovery at start is off ([recovery] at_start = false)".to_string();
        });
    }
}

/// Finishes every interrupted operation, service by service (concurrently,
/// each in its own turn). Returns how many components it looked at.
pub async fn finish_interrupted(handles: AgentHandles) -> usize {
    let services = match handles.peers.registry.send(ListServices {}).await {
        Ok(Ok(services)) => services,
        Ok(Err(e)) => {
            tracing::error!("cannot read the registry to finish interrupted operations: {e}");
            return 0;
        }
        Err(e) => {
            tracing::error!("registry unavailable: {e}");
            return 0;
        }
    };
    let mut interrupted: BTreeMap<Name, Vec<Name>> = BTreeMap::new();
    for c in services
        .iter()
        .flat_map(|s| s.components.iter())
        .filter(|c| c.pending_since_ms.is_some())
    {
        if let (Ok(service), Ok(component)) = (Name::parse(&c.service), Name::parse(&c.name)) {
            interrupted.entry(service).or_default().push(component);
        }
    }
    let count = interrupted.values().map(Vec::len).sum();
    if count > 0 {
        tracing::info!("finishing {count} operation(s) interrupted by the agent's last stop");
    }
    let calls = interrupted.into_iter().map(|(service, components)| {
        let directory = handles.directory.clone();
        async move {
            let Ok(addr) = directory.send(ServiceFor { name: service }).await else {
                return;
            };
            let _ = addr.send(ResolveInterrupted { components }).await;
        }
    });
    futures::future::join_all(calls).await;
    count
}

/// A stage of this recovery: the boot sequence's, or the rest.
struct Stage<'a> {
    boot: Option<&'a BootStage>,
    services: Vec<Name>,
}

/// The services that have a component desired running, by stage: the boot
/// sequence's stages in order, then a last one with the rest. Also how
/// many components should run.
async fn stages<'a>(
    handles: &AgentHandles,
    boot: &'a [BootStage],
) -> Result<(Vec<Stage<'a>>, usize), AgentError> {
    let services = handles.peers.registry.send(ListServices {}).await??;
    let mut wanted: BTreeSet<Name> = BTreeSet::new();
    let mut total = 0;
    for s in &services {
        let running = s
            .components
            .iter()
            .filter(|c| c.desired_state == DesiredState::Running)
            .count();
        if let (Ok(name), true) = (Name::parse(&s.name), running > 0) {
            wanted.insert(name);
            total += running;
        }
    }
    let mut stages = Vec::new();
    for stage in boot {
        let services = stage
            .services
            .iter()
            .filter(|s| wanted.remove(*s))
            .cloned()
            .collect();
        stages.push(Stage {
            boot: Some(stage),
            services,
        });
    }
    stages.push(Stage {
        boot: None,
        services: wanted.into_iter().collect(),
    });
    Ok((stages, total))
}

/// Starts what should run and does not, stage by stage. With `dry_run`,
/// says what it would do and does nothing (no gate is waited for).
pub async fn recover(handles: &AgentHandles, boot: &[BootStage], dry_run: bool) -> RecoveryReport {
    let mut report = RecoveryReport::default();
    let (stages, total) = match stages(handles, boot).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!("cannot read the registry to recover: {e}");
            return report;
        }
    };
    let progress = &handles.recovery;
    if !dry_run {
        progress.update(|s| {
            *s = RecoveryStatus {
                in_progress: true,
                total,
                started_at_ms: Some(now_ms()),
                ..Default::default()
            }
        });
        tracing::info!(components = total, "recovery: starting what should run");
    }
    for stage in stages {
        let name = stage.boot.map(|b| b.name.clone());
        if !dry_run {
            progress.update(|s| s.stage = name.clone());
        }
        let started = Instant::now();
        let deadline = stage.boot.map(|b| started + b.timeout);
        let recovered = run_stage(handles, &stage.services, dry_run, deadline).await;
        for (service, outcome) in &recovered {
            count(progress, handles, service, outcome, dry_run).await;
        }
        // A stage that started nothing has nothing to wait for.
        let acted = recovered
            .iter()
            .any(|(_, o)| o.as_ref().map_or(true, |o| !o.is_empty()));
        report.services.extend(recovered);
        if let (Some(boot), false, true) = (stage.boot, dry_run, acted) {
            let gate = pass_gate(handles, boot, &stage.services, started).await;
            record_gate(handles, boot, &gate, started).await;
            report.stages.push((boot.name.clone(), gate));
        }
    }
    if !dry_run {
        progress.update(|s| {
            s.in_progress = false;
            s.stage = None;
            s.finished_at_ms = Some(now_ms());
        });
        let status = progress.get();
        tracing::info!(
            recovered = status.recovered,
            failed = status.failed,
            "recovery: done"
        );
    }
    report
}

/// Recovers `services` concurrently, giving up waiting at `deadline` (the
/// operations themselves go on).
async fn run_stage(
    handles: &AgentHandles,
    services: &[Name],
    dry_run: bool,
    deadline: Option<Instant>,
) -> Vec<(String, Result<Vec<ComponentOutcome>, AgentError>)> {
    let calls = services.iter().map(|service| {
        let directory = handles.directory.clone();
        let service = service.clone();
        async move {
            let outcome = async {
                let addr = directory
                    .send(ServiceFor {
                        name: service.clone(),
                    })
                    .await?;
                addr.send(Recover { dry_run }).await?
            };
            let outcome = match deadline {
                Some(at) => tokio::time::timeout_at(at.into(), outcome)
                    .await
                    .unwrap_or_else(|_| {
                        Err(AgentError::DeadlineExceeded(
                            "still recovering when its boot stage timed out".to_string(),
                        ))
                    }),
                None => outcome.await,
            };
            (service.to_string(), outcome)
        }
    });
    join_all(calls).await
}

/// Counts a service's outcomes into the progress.
async fn count(
    progress: &RecoveryProgress,
    handles: &AgentHandles,
    service: &str,
    outcome: &Result<Vec<ComponentOutcome>, AgentError>,
    dry_run: bool,
) {
    if dry_run {
        return;
    }
    let should_run = match handles
        .peers
        .registry
        .send(crate::actors::registry::GetServiceState {
            name: service.to_string(),
        })
        .await
    {
        Ok(Ok(Some(s))) => s
            .components
            .iter()
            .filter(|c| c.desired_state == DesiredState::Running)
            .count(),
        _ => 0,
    };
    progress.update(|s| {
        s.done += should_run;
        match outcome {
            Ok(outcomes) => {
                let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
                s.failed += failed;
                s.recovered += outcomes.len() - failed;
            }
            Err(_) => s.failed += should_run,
        }
    });
}

/// Waits, until the stage's timeout, for its gate. Ok: after how long;
/// Err: what was still not ready.
async fn pass_gate(
    handles: &AgentHandles,
    stage: &BootStage,
    services: &[Name],
    started: Instant,
) -> Result<String, String> {
    let deadline = started + stage.timeout;
    let waited = match &stage.gate {
        Gate::Tcp(target) => tcp_gate(target, deadline).await,
        Gate::Health => health_gate(handles, services, deadline).await,
    };
    waited.map(|()| format!("ready after {:.1}s", started.elapsed().as_secs_f64()))
}

async fn tcp_gate(target: &str, deadline: Instant) -> Result<(), String> {
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(target),
        )
        .await;
        if let Ok(Ok(_)) = attempt {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{target} accepted no connection"));
        }
        tokio::time::sleep(GATE_POLL).await;
    }
}

const GATE_POLL: Duration = Duration::from_millis(200);

/// Every component of `services` that should run and has a health check
/// passes it (probed on its current container) before `deadline`.
async fn health_gate(
    handles: &AgentHandles,
    services: &[Name],
    deadline: Instant,
) -> Result<(), String> {
    let mut checks = Vec::new();
    for service in services {
        let Ok(Ok(Some(row))) = handles
            .peers
            .registry
            .send(GetService {
                name: service.to_string(),
            })
            .await
        else {
            continue;
        };
        for c in row.components {
            let check = c.deployed_spec.and_then(|s| s.health);
            if let (DesiredState::Running, Some(check)) = (c.state.desired_state, check) {
                checks.push((format!("{service}/{}", c.state.name), check));
            }
        }
    }
    let waits = checks.into_iter().map(|(who, check)| async move {
        let healthy = tokio::time::timeout_at(deadline.into(), healthy(handles, &who, &check));
        healthy.await.map_err(|_| who)
    });
    let not_ready: Vec<String> = join_all(waits)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if not_ready.is_empty() {
        Ok(())
    } else {
        Err(format!("{} not healthy", not_ready.join(", ")))
    }
}

/// Probes `who` (`svc/comp`) until its container passes `check`.
async fn healthy(handles: &AgentHandles, who: &str, check: &crate::spec::HealthCheck) {
    let (service, component) = who.split_once('/').unwrap_or((who, ""));
    loop {
        let container = match handles
            .peers
            .registry
            .send(crate::actors::registry::GetServiceState {
                name: service.to_string(),
            })
            .await
        {
            Ok(Ok(Some(s))) => s
                .components
                .into_iter()
                .find(|c| c.name == component)
                .and_then(|c| c.container_id),
            _ => None,
        };
        if let Some(id) = container {
            if super::health::wait_healthy(&handles.peers.runtime, &id, check)
                .await
                .is_ok()
            {
                return;
            }
        }
        tokio::time::sleep(GATE_POLL).await;
    }
}

/// The stage's event (and, when it timed out, an alert).
async fn record_gate(
    handles: &AgentHandles,
    stage: &BootStage,
    gate: &Result<String, String>,
    started: Instant,
) {
    let (kind, detail) = match gate {
        Ok(ready) => ("boot-stage-ready", format!("stage {}: {ready}", stage.name)),
        Err(waiting) => (
            "boot-stage-timeout",
            format!(
                "stage {}: {waiting} within {}s; starting the next stage anyway",
                stage.name,
                stage.timeout.as_secs()
            ),
        ),
    };
    tracing::info!(
        stage = %stage.name,
        took_ms = started.elapsed().as_millis() as u64,
        "{kind}: {detail}"
    );
    let _ = handles
        .peers
        .registry
        .send(AddEvent {
            service: String::new(),
            component: String::new(),
            kind: kind.to_string(),
            detail: detail.clone(),
            by: AGENT.to_string(),
        })
        .await;
    if gate.is_err() {
        let _ = handles
            .peers
            .watch
            .send(RaiseAlert {
                key: (String::new(), String::new()),
                kind: kind.to_string(),
                detail,
            })
            .await;
    }
}
