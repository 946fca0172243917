//! RegistryActor: the sole owner of the SQLite connection. A SyncActor on its
//! own thread, so blocking SQLite work never stalls the event loop; one thread
//! means one writer and no "database is locked".

use actix::{Actor, Handler, Message, SyncContext};

use crate::names::Name;
use crate::registry::{ContainerFacts, DesiredState, Event, Registry, Result, ServiceRow};
use crate::spec::ServiceDef;

pub struct RegistryActor {
    registry: Registry,
    node: String,
}

impl RegistryActor {
    pub fn new(registry: Registry, node: String) -> Self {
        RegistryActor { registry, node }
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
                let $this = self;
                $body
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
    /// A live scan's findings: (service, component, container id, state).
    RecordObserved { observations: Vec<(String, String, Option<String>, String)> } -> (),
    |this, m| {
        for (service, component, id, state) in &m.observations {
            this.registry.record_observed(service, component, id.as_deref(), state)?;
        }
        Ok(())
    }
);

registry_message!(
    ListServices {} -> Vec<ServiceRow>,
    |this, _m| this.registry.list_services()
);

registry_message!(
    GetService { name: String } -> Option<ServiceRow>,
    |this, m| this.registry.service(&m.name)
);

registry_message!(
    AddEvent { service: String, component: String, kind: String, detail: String } -> i64,
    |this, m| {
        let node = this.node.clone();
        this.registry.add_event(&node, &m.service, &m.component, &m.kind, &m.detail)
    }
);

registry_message!(
    Events { service: Option<String>, limit: usize } -> Vec<Event>,
    |this, m| this.registry.events(m.service.as_deref(), m.limit)
);
