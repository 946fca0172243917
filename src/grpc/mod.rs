//! The agent's gRPC front: TLS (tls.rs), authentication (auth.rs), and the
//! `mcp.v1.Agent` service (server.rs), which forwards to the actors.

pub mod auth;
pub mod convert;
pub mod server;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::actors::AgentHandles;
use crate::proto::agent_server::AgentServer;

/// Largest request or response the agent accepts or sends.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Serves the agent API over TLS on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    identity: &tls::ServerIdentity,
    validator: Arc<dyn auth::TokenValidator>,
    handles: AgentHandles,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let tls =
        ServerTlsConfig::new().identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AgentServer<server::AgentService>>()
        .await;
    let agent = AgentServer::new(server::AgentService::new(handles))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    Server::builder()
        .tls_config(tls)?
        .timeout(Duration::from_secs(600))
        .max_concurrent_streams(256)
        .layer(auth::AuthLayer::new(validator))
        .add_service(health_service)
        .add_service(agent)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
