//! RegistryActor: the sole owner of the SQLite connection. A SyncActor on its
//! own thread, so blocking SQLite work never stalls the event loop; one thread
//! means one writer and no "database is locked".
//!
//! A SyncActor cannot be restarted (a panic would end its thread for good,
//! and the agent would go on half-dead): every handler runs under
//! `catch_unwind`, and after a panic the connection is dropped (rolling back
//! any open transaction) and the database reopened. When it cannot be
//! reopened, the agent is told to exit ([`Fatal`]) so systemd restarts it.

use std::panic::{catch_unwind, AssertUnwindSafe};

use actix::{Actor, Handler, Message, MessageResult, SyncContext};
use tokio::sync::broadcast;

use super::supervisor::{panic_message, Fatal};

use crate::names::Name;
use crate::registry::{
    AdoptError, ComponentRow, ContainerFacts, DesiredState, Drift, Event, Observation, Registry,
    RegistryError, Result, ServiceRow, ServiceState, UnmanagedRow,
};
use crate::spec::ServiceDef;

pub struct RegistryActor {
    registry: Registry,
    /// Where to reopen it after a panic.
    path: std::path::PathBuf,
    node: String,
    /// Every recorded event is also published here, for `mcp events --follow`.
    events: broadcast::Sender<Event>,
    fatal: Fatal,
}

impl RegistryActor {
    pub fn new(
        registry: Registry,
        path: std::path::PathBuf,
        node: String,
        events: broadcast::Sender<Event>,
        fatal: Fatal,
    ) -> Self {
        RegistryActor {
            registry,
            path,
            node,
            events,
            fatal,
        }
    }

    /// Runs a handler's work; a panic in it reopens the database and
    /// answers with an error instead of ending the actor's thread.
    fn guarded<T>(&mut self, what: &str, work: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        match catch_unwind(AssertUnwindSafe(|| work(self))) {
            Ok(result) => result,
            Err(payload) => {
                let why = panic_message(&*payload);
                tracing::error!(
                    "the registry actor panicked handling {what}: {why}; reopening the database"
                );
                match Registry::open(&self.path) {
                    Ok(fresh) => self.registry = fresh,
                    Err(e) => self.fatal.raise(format!(
                        "the registry {} cannot be reopened after a panic: {e}",
                        self.path.display()
                    )),
                }
                Err(RegistryError::Panicked(format!("{what}: {why}")))
            }
        }
    }
}

impl Actor for RegistryActor {
    type Context = SyncContext<Self>;
}

/// Declares a message answered by one call on the registry.
macro_rules! registry_message {
    ($(#[$doc:meta])* $msg:ident { $($field:ident : $ty:ty),* $(,)? } -> $out:ty,
     |$this:ident, $m:ident| $body:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $msg { $(pub $field: $ty),* }
        impl Message for $msg {
            type Result = Result<$out>;
        }
        impl Handler<$msg> for RegistryActor {
            type Result = Result<$out>;
            fn handle(&mut self, $m: $msg, _: &mut SyncContext<Self>) -> Result<$out> {
                self.guarded(stringify!($msg), |$this| $body)
            }
        }
    };
}

registry_message!(
    /// The operator's intent, recorded before anything acts on it.
    PushDefinition { def: ServiceDef, only: Option<Name>, desired: DesiredState } -> (),
    |this, m| this.registry.push_definition(&m.def, m.only.as_ref(), m.desired)
);

registry_message!(
    SetDesired { service: String, component: Option<String>, desired: DesiredState } -> usize,
    |this, m| this.registry.set_desired(&m.service, m.component.as_deref(), m.desired)
);

registry_message!(
    /// What a component's container is after an operation (the outcome).
    RecordContainer { service: String, component: String, facts: ContainerFacts } -> (),
    |this, m| this.registry.record_container(&m.service, &m.component, &m.facts)
);

registry_message!(
    /// What a scan or an event saw of managed components.
    RecordObserved { observations: Vec<Observation> } -> (),
    |this, m| this.registry.record_observed(&m.observations)
);

registry_message!(
    /// Sets (Some) or clears (None) each component's drift; the
    /// drift-detected/drift-cleared event of each that changed (published
    /// to followers), or None, in order.
    RecordDrift { drifts: Vec<(String, String, Option<Drift>)> } -> Vec<Option<Event>>,
    |this, m| {
        let events = this.registry.record_drift(&this.node, &m.drifts)?;
        for e in events.iter().flatten() {
            let _ = this.events.send(e.clone());
        }
        Ok(events)
    }
);

registry_message!(
    ComponentByContainer { container_id: String } -> Option<(String, String)>,
    |this, m| this.registry.component_by_container(&m.container_id)
);

registry_message!(
    /// A full scan's unmanaged containers (replaces what was recorded).
    ReplaceUnmanaged { seen: Vec<UnmanagedRow> } -> (),
    |this, m| this.registry.replace_unmanaged(&m.seen)
);

registry_message!(
    UpsertUnmanaged { row: UnmanagedRow } -> (),
    |this, m| this.registry.upsert_unmanaged(&m.row)
);

registry_message!(
    RemoveUnmanaged { container_id: String } -> (),
    |this, m| this.registry.remove_unmanaged(&m.container_id)
);

registry_message!(
    ListUnmanaged {} -> Vec<UnmanagedRow>,
    |this, _m| this.registry.unmanaged()
);

registry_message!(
    DeleteService { name: String } -> bool,
    |this, m| this.registry.delete_service(&m.name)
);

registry_message!(
    /// Forgets the service's components not named in `keep`; returns them.
    DeleteComponentsExcept { service: String, keep: Vec<String> } -> Vec<String>,
    |this, m| {
        let keep: Vec<&str> = m.keep.iter().map(String::as_str).collect();
        this.registry.delete_components_except(&m.service, &keep)
    }
);

/// A container no service claims becomes `service/<spec.name>`, desired
/// running, recorded as running `spec`; `by` asked for it.
#[derive(Debug, Clone)]
pub struct Adopt {
    pub container: crate::registry::AdoptedContainer,
    pub service: Name,
    pub spec: crate::spec::ComponentDef,
    pub by: String,
}

impl Message for Adopt {
    type Result = std::result::Result<ComponentRow, AdoptError>;
}

impl Handler<Adopt> for RegistryActor {
    type Result = std::result::Result<ComponentRow, AdoptError>;
    fn handle(&mut self, m: Adopt, _: &mut SyncContext<Self>) -> Self::Result {
        let mut refused = None;
        let row = self.guarded("Adopt", |this| {
            let row = match this.registry.adopt(&m.container, &m.service, &m.spec) {
                Ok(row) => row,
                Err(AdoptError::Registry(e)) => return Err(e),
                Err(other) => {
                    refused = Some(other);
                    return Ok(None);
                }
            };
            let detail = format!(
                "adopted container {} (ignore -> running), running {}",
                m.container.name, m.spec.image
            );
            let event = this.registry.add_event(
                &this.node,
                m.service.as_str(),
                m.spec.name.as_str(),
                "adopted",
                &detail,
                &m.by,
            )?;
            let _ = this.events.send(event);
            Ok(Some(row))
        })?;
        match (row, refused) {
            (Some(row), _) => Ok(row),
            (None, Some(refused)) => Err(refused),
            (None, None) => Err(AdoptError::NoSuchContainer(m.container.name)),
        }
    }
}

/// A receiver of every event recorded from now on.
#[derive(Debug, Clone)]
pub struct SubscribeEvents;

impl Message for SubscribeEvents {
    type Result = broadcast::Receiver<Event>;
}

impl Handler<SubscribeEvents> for RegistryActor {
    type Result = MessageResult<SubscribeEvents>;
    fn handle(&mut self, _: SubscribeEvents, _: &mut SyncContext<Self>) -> Self::Result {
        MessageResult(self.events.subscribe())
    }
}

registry_message!(
    ListServices {} -> Vec<ServiceState>,
    |this, _m| this.registry.list_service_states()
);

registry_message!(
    /// The services' states and every route, in one round trip (`mcp list`).
    ListServicesWithRoutes {} -> (Vec<ServiceState>, Vec<crate::routes::Route>),
    |this, _m| Ok((this.registry.list_service_states()?, this.registry.routes(None)?))
);

registry_message!(
    GetService { name: String } -> Option<ServiceRow>,
    |this, m| this.registry.service(&m.name)
);

registry_message!(
    GetServiceState { name: String } -> Option<ServiceState>,
    |this, m| this.registry.service_state(&m.name)
);

registry_message!(
    /// Records an event; `by` is who caused it (see `registry::Event::by`).
    AddEvent { service: String, component: String, kind: String, detail: String, by: String } -> i64,
    |this, m| {
        let event = this.registry.add_event(
            &this.node,
            &m.service,
            &m.component,
            &m.kind,
            &m.detail,
            &m.by,
        )?;
        let id = event.id;
        // Nobody listening is fine.
        let _ = this.events.send(event);
        Ok(id)
    }
);

registry_message!(
    Events { service: Option<String>, by: Option<String>, limit: usize } -> Vec<Event>,
    |this, m| this.registry.events(m.service.as_deref(), m.by.as_deref(), m.limit)
);

registry_message!(
    /// What a rollback returns to: the newest spec that passed its checks
    /// and differs from `other_than` (default: the deployed one).
    RollbackTarget {
        service: String,
        component: String,
        other_than: Option<crate::spec::ComponentDef>,
    } -> Option<crate::spec::ComponentDef>,
    |this, m| this.registry.rollback_target(&m.service, &m.component, m.other_than.as_ref())
);

registry_message!(
    /// An operation is moving the component to `spec` (before its container
    /// is replaced).
    BeginChange { service: String, component: String, spec: crate::spec::ComponentDef } -> (),
    |this, m| this.registry.begin_change(&m.service, &m.component, &m.spec)
);

registry_message!(
    /// The running components with a health check, and their containers.
    HealthChecks {} -> Vec<crate::registry::ProbeTarget>,
    |this, _m| this.registry.health_checks()
);

registry_message!(
    /// What the probes saw of a component's container; true when its
    /// health changed.
    SetHealth {
        service: String,
        component: String,
        container_id: String,
        healthy: bool,
        detail: String,
    } -> bool,
    |this, m| this.registry.set_health(&m.service, &m.component, &m.container_id, m.healthy, &m.detail)
);

registry_message!(
    /// Deletes the events beyond `retention` as of `now_ms`. When it
    /// deleted any, records (and publishes) the `events-pruned` event that
    /// says so, then makes room for that event among the node's own: else
    /// the next run would delete the oldest node event because of it, and
    /// record another, and so on at every run.
    PruneEvents { now_ms: i64, retention: crate::registry::Retention } -> Option<Event>,
    |this, m| {
        let pruned = this.registry.prune_events(m.now_ms, &m.retention)?;
        if pruned.total() == 0 {
            return Ok(None);
        }
        let event = this.registry.add_event(
            &this.node,
            "",
            "",
            "events-pruned",
            &super::pruner::describe(&pruned, &m.retention),
            crate::registry::AGENT,
        )?;
        this.registry.prune_events(m.now_ms, &m.retention)?;
        let _ = this.events.send(event.clone());
        Ok(Some(event))
    }
);

registry_message!(
    /// What image pruning must keep and may consider.
    ImageReferences {} -> crate::registry::ImageReferences,
    |this, _m| this.registry.image_references()
);

registry_message!(
    /// An image MCP ran that is gone from the runtime.
    ForgetImage { image_id: String } -> (),
    |this, m| this.registry.forget_image(&m.image_id)
);

registry_message!(
    /// An image `[images] prune` removed: forgotten, and an `image-pruned`
    /// event by mcp-agent saying why.
    ImagePruned { image_id: String, detail: String } -> (),
    |this, m| {
        this.registry.forget_image(&m.image_id)?;
        let event = this.registry.add_event(
            &this.node,
            "",
            "",
            "image-pruned",
            &m.detail,
            crate::registry::AGENT,
        )?;
        let _ = this.events.send(event);
        Ok(())
    }
);

registry_message!(
    /// Makes a component's routes what its spec says: kept ports, new ones
    /// from `pool`, released ones (inner Err: no port left, nothing changed).
    AssignRoutes {
        service: String,
        component: String,
        wanted: Vec<crate::spec::RouteDef>,
        pool: crate::routes::PortPool,
    } -> std::result::Result<crate::routes::Assigned, crate::routes::NoFreePort>,
    |this, m| this.registry.assign_routes(&m.service, &m.component, &m.wanted, &m.pool)
);

registry_message!(
    /// Releases every route of a component (undeployed); returns them.
    ReleaseRoutes { service: String, component: String } -> Vec<crate::routes::Route>,
    |this, m| this.registry.release_routes(&m.service, &m.component)
);

registry_message!(
    /// Every route, or those of one service.
    ListRoutes { service: Option<String> } -> Vec<crate::routes::Route>,
    |this, m| this.registry.routes(m.service.as_deref())
);

registry_message!(
    /// A network the agent created.
    RecordNetwork { name: String, driver: String, subnet: String, dns: Option<bool> }
        -> crate::registry::NetworkRow,
    |this, m| this.registry.record_network(&m.name, &m.driver, &m.subnet, m.dns)
);

registry_message!(
    ListNetworks {} -> Vec<crate::registry::NetworkRow>,
    |this, _m| this.registry.networks()
);

registry_message!(
    /// Answers once the actor's thread and its connection do (the
    /// watchdog's round trip).
    Ping {} -> (),
    |this, _m| this.registry.ping()
);

#[cfg(test)]
registry_message!(
    /// Holds the registry's thread until `gate` is unlocked, as a wedged
    /// database would (tests of the watchdog).
    Hold { gate: std::sync::Arc<std::sync::Mutex<()>> } -> (),
    |_this, m| {
        drop(m.gate.lock());
        Ok(())
    }
);

#[cfg(test)]
registry_message!(
    /// Panics while handling, as a bug would (tests of the recovery).
    Crash {} -> (),
    |_this, _m| panic!("a test-made panic in the registry actor")
);
