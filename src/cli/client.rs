//! A connection to one node's agent: TLS verified against the node's CA (no
//! way to switch that off), and the bearer token on every call.

use std::time::Duration;

use anyhow::{Context, Result};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use super::config::NodeConfig;
use crate::names::Name;
use crate::proto::agent_client::AgentClient;

pub type AuthedChannel = InterceptedService<Channel, BearerToken>;
pub type Client = AgentClient<AuthedChannel>;

#[derive(Clone)]
pub struct BearerToken(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A client of the `Agent` service over `channel`.
pub fn agent(channel: AuthedChannel) -> Client {
    AgentClient::new(channel).max_decoding_message_size(crate::grpc::MAX_MESSAGE_BYTES)
}

/// A TLS channel to the node's agent, verified against the node's CA, that
/// carries the bearer token on every call: for any of the agent's services.
pub async fn authed_channel(
    name: &Name,
    node: &NodeConfig,
    token: &str,
    connect_timeout: Duration,
) -> Result<AuthedChannel> {
    let ca = std::fs::read(&node.ca)
        .with_context(|| format!("node {name}: cannot read CA {}", node.ca.display()))?;
    {
        use rustls_pki_types::pem::PemObject;
        if rustls_pki_types::CertificateDer::pem_slice_iter(&ca)
            .next()
            .is_none_or(|c| c.is_err())
        {
            anyhow::bail!(
                "node {name}: the CA file {} holds no PEM certificate: `ca` must be a copy of \
                 the agent's ca.pem (`mcp-agent init` prints its path and fingerprint)",
                node.ca.display()
            );
        }
    }
    let server_name = node
        .server_name
        .clone()
        .unwrap_or_else(|| node.host().to_string());
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(server_name);
    let endpoint = Channel::from_shared(format!("https://{}", node.address))
        .with_context(|| format!("node {name}: bad address {:?}", node.address))?
        .tls_config(tls)
        .with_context(|| format!("node {name}: TLS configuration"))?
        .connect_timeout(connect_timeout);
    let channel = endpoint.connect().await.map_err(|e| {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            // Error layers often repeat their source's text: say it once.
            let text = s.to_string();
            if !detail.contains(&text) {
                detail = format!("{detail}: {text}");
            }
            source = s.source();
        }
        anyhow::anyhow!(
            "node {name}: cannot reach the agent at {}: {detail} ({})",
            node.address,
            connect_hint(&detail, node)
        )
    })?;
    let header: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| anyhow::anyhow!("the token contains characters a header cannot carry"))?;
    Ok(InterceptedService::new(channel, BearerToken(header)))
}

/// What to do about a failed connection, from what failed: a certificate
/// problem is not a missing agent.
fn connect_hint(detail: &str, node: &NodeConfig) -> String {
    let ca = node.ca.display();
    if detail.contains("UnknownIssuer") || detail.contains("BadSignature") {
        format!(
            "the agent's certificate is not signed by the CA in {ca}: `ca` must be a copy of \
             that agent's own ca.pem (`mcp-agent init` on the node prints its path and \
             fingerprint)"
        )
    } else if detail.contains("NotValidForName") {
        format!(
            "the agent's certificate does not name {}: set `server_name` in this node's \
             config, or add the name with `mcp-agent init --tls-name` on the node",
            node.host()
        )
    } else if detail.contains("Expired") {
        "the agent's certificate has expired: run `mcp-agent init --renew` on the node and \
         restart the agent"
            .to_string()
    } else if detail.contains("certificate") {
        format!("the TLS handshake failed; `ca` is {ca}")
    } else {
        "is mcp-agent running there?".to_string()
    }
}

/// A failed call, said the way an operator needs it.
pub fn describe_status(node: &Name, status: &tonic::Status) -> anyhow::Error {
    use tonic::Code;
    let hint = match status.code() {
        Code::Unauthenticated => " (check MCP_TOKEN, the token file, or the node's token_file)",
        Code::PermissionDenied => " (`mcp whoami` shows who the agent takes you for)",
        _ => "",
    };
    anyhow::anyhow!("node {node}: {}{hint}", status.message())
}
