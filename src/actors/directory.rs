//! ServiceDirectory: service name -> ServiceActor, created on first use and
//! re-created when the old one has died.

use std::collections::HashMap;

use actix::{Actor, Addr, Context, Handler, Message, MessageResult};

use super::registry::RegistryActor;
use super::runtime::RuntimeActor;
use super::service::ServiceActor;
use super::AgentSettings;
use crate::names::Name;

pub struct ServiceDirectory {
    registry: Addr<RegistryActor>,
    runtime: Addr<RuntimeActor>,
    settings: AgentSettings,
    services: HashMap<Name, Addr<ServiceActor>>,
}

impl ServiceDirectory {
    pub fn new(
        registry: Addr<RegistryActor>,
        runtime: Addr<RuntimeActor>,
        settings: AgentSettings,
    ) -> Self {
        ServiceDirectory {
            registry,
            runtime,
            settings,
            services: HashMap::new(),
        }
    }
}

impl Actor for ServiceDirectory {
    type Context = Context<Self>;
}

/// The actor of a service.
#[derive(Debug, Clone)]
pub struct ServiceFor {
    pub name: Name,
}

impl Message for ServiceFor {
    type Result = Addr<ServiceActor>;
}

impl Handler<ServiceFor> for ServiceDirectory {
    type Result = MessageResult<ServiceFor>;

    fn handle(&mut self, msg: ServiceFor, _: &mut Context<Self>) -> Self::Result {
        if let Some(addr) = self.services.get(&msg.name).filter(|a| a.connected()) {
            return MessageResult(addr.clone());
        }
        let addr = ServiceActor::new(
            msg.name.clone(),
            self.registry.clone(),
            self.runtime.clone(),
            self.settings.clone(),
        )
        .start();
        self.services.insert(msg.name, addr.clone());
        MessageResult(addr)
    }
}
