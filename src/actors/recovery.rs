//! What the agent does at start to put the node back as the registry says
//! it should be: operations that the agent's death interrupted are finished
//! (the new container verified, or rolled back), each with a
//! `deploy-interrupted` event.

use std::collections::BTreeMap;

use super::directory::ServiceFor;
use super::registry::ListServices;
use super::service::ResolveInterrupted;
use super::AgentHandles;
use crate::names::Name;

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
