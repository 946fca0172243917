//! A component's network: one a definition names that the runtime does not
//! have is created (a bridge, DNS on where the runtime can) before the
//! container, recorded, and told as a `network-created` event. The
//! runtime's own networks (host, none, bridge, ...) are left alone.

use super::ComponentCx;
use crate::actors::registry::RecordNetwork;
use crate::actors::runtime::EnsureNetwork;
use crate::actors::AgentError;
use crate::spec::ComponentDef;

impl ComponentCx {
    /// Makes sure `spec`'s network exists, when it is one of the operator's
    /// and the agent may create networks (`[networks] create`; off, a
    /// missing network fails the create with the runtime's own message).
    pub(super) async fn ensure_network(&self, spec: &ComponentDef) -> Result<(), AgentError> {
        let Some(network) = spec.network.as_ref().filter(|n| n.is_user_defined()) else {
            return Ok(());
        };
        if !self.settings.create_networks {
            return Ok(());
        }
        let facts = self
            .runtime
            .send(EnsureNetwork {
                name: network.to_string(),
            })
            .await??;
        if !facts.created {
            return Ok(());
        }
        self.record(RecordNetwork {
            name: network.to_string(),
            driver: facts.driver.clone(),
            subnet: facts.subnet.clone(),
            dns: facts.dns,
        })
        .await;
        let dns = match facts.dns {
            Some(true) => "DNS on: its containers find each other by name",
            Some(false) => {
                "DNS off: its containers do not find each other by name (podman with CNI \
                 needs the dnsname plugin; with netavark, aardvark-dns)"
            }
            None => "DNS unknown",
        };
        let subnet = if facts.subnet.is_empty() {
            String::new()
        } else {
            format!(", {}", facts.subnet)
        };
        self.note(
            "network-created",
            &format!("network {network} ({}{subnet}); {dns}", facts.driver),
        )
        .await;
        Ok(())
    }
}
