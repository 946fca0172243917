//! The agent's gRPC front: TLS (tls.rs), authentication (auth.rs) and
//! authorization per RPC (authz.rs), and the `mcp.v1.Agent` service
//! (server.rs), which forwards to the actors.

pub mod auth;
pub mod authz;
pub mod convert;
pub mod files;
pub mod logs;
pub mod server;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::actors::AgentHandles;
use crate::proto::agent_server::AgentServer;
use crate::proto::files_server::FilesServer;
use crate::proto::logs_server::LogsServer;
use crate::proto::node_server::NodeServer;
use crate::proto::specs_server::SpecsServer;

/// Largest request or response the agent accepts or sends.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Serves the agent API over TLS on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    identity: &tls::ServerIdentity,
    validator: Arc<dyn auth::TokenValidator>,
    handles: AgentHandles,
    files: crate::files::FilesConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let tls =
        ServerTlsConfig::new().identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AgentServer<server::AgentService>>()
        .await;
    let agent = AgentServer::new(server::AgentService::new(handles.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let node = handles.peers.settings.node.clone();
    let file_service = FilesServer::new(files::FilesService::new(
        Arc::new(crate::files::FileRoot::new(&files)),
        node,
    ))
    .max_decoding_message_size(files::MAX_FILES_MESSAGE_BYTES)
    .max_encoding_message_size(files::MAX_FILES_MESSAGE_BYTES);
    let node_service = NodeServer::new(files::NodeService::new(handles.clone(), files.srv_root));
    let logs_service = LogsServer::new(logs::LogsService::new(handles.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let specs_service = SpecsServer::new(files::SpecsService::new(handles));
    // TCP_NODELAY, as tonic's `Server::serve` sets it (serving our own
    // listener skips that): small HTTP/2 frames (window updates of streamed
    // file transfers, short answers) must not wait for delayed ACKs.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .tls_config(tls)?
        .timeout(Duration::from_secs(600))
        .max_concurrent_streams(256)
        .layer(auth::AuthLayer::new(validator))
        .add_service(health_service)
        .add_service(agent)
        .add_service(file_service)
        .add_service(node_service)
        .add_service(specs_service)
        .add_service(logs_service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
