//! The agent's gRPC front: TLS (tls.rs), authentication (auth.rs) and
//! authorization per RPC (authz.rs), and the `mcp.v1.Agent` service
//! (server.rs), which forwards to the actors.

pub mod audit;
pub mod auth;
pub mod authz;
pub mod convert;
pub mod exec;
pub mod files;
pub mod lifecycle;
pub mod listener;
pub mod logs;
pub mod secrets;
pub mod server;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Server;

use crate::actors::AgentHandles;
use crate::proto::agent_server::AgentServer;
use crate::proto::files_server::FilesServer;
use crate::proto::logs_server::LogsServer;
use crate::proto::node_server::NodeServer;
use crate::proto::secrets_server::SecretsServer;
use crate::proto::specs_server::SpecsServer;

/// `stream` until the agent starts shutting down, then one last item that
/// says so: a follower (`events -f`, `logs -f`) learns why its stream ended
/// instead of seeing the connection drop, and the agent need not wait for it.
pub fn until_shutdown<T: Send + 'static>(
    stream: futures::stream::BoxStream<'static, Result<T, tonic::Status>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> futures::stream::BoxStream<'static, Result<T, tonic::Status>> {
    use futures::StreamExt;
    let ended = shutdown.clone();
    let notice = futures::stream::once(async move {
        Err(tonic::Status::unavailable(
            "the agent is shutting down: follow again once it is back",
        ))
    })
    .filter(move |_| futures::future::ready(ended.is_cancelled()));
    stream
        .take_until(async move { shutdown.cancelled().await })
        .chain(notice)
        .boxed()
}

/// Largest request or response the agent accepts or sends.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// What one client may hold of the agent (`agent.toml` `[limits]`).
#[derive(Debug, Clone)]
pub struct ServeLimits {
    pub connections: listener::ConnectionLimits,
    /// HTTP/2 pings on a quiet connection, and how long an answer may take
    /// before the peer is taken for gone.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// File transfers (push and pull) in progress at once.
    pub max_transfers: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            connections: Default::default(),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            max_transfers: 16,
        }
    }
}

/// How the agent meets its clients: who it is, how it checks them, what
/// they may hold, and where their files go.
pub struct FrontDoor {
    pub identity: tls::ServerIdentity,
    pub validator: Arc<dyn auth::TokenValidator>,
    pub limits: ServeLimits,
    pub files: crate::files::FilesConfig,
}

/// Serves the agent API over TLS on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    front: FrontDoor,
    handles: AgentHandles,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let FrontDoor {
        identity,
        validator,
        limits,
        files,
    } = front;
    let tls = tls::server_config(&identity)?;
    let cert_not_after_ms = tls::not_after_ms(&identity.cert_pem)?;
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
        limits.max_transfers,
    ))
    .max_decoding_message_size(files::MAX_FILES_MESSAGE_BYTES)
    .max_encoding_message_size(files::MAX_FILES_MESSAGE_BYTES);
    let node_service = NodeServer::new(files::NodeService::new(
        handles.clone(),
        files.srv_root,
        cert_not_after_ms,
    ));
    let logs_service = LogsServer::new(logs::LogsService::new(handles.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let secrets_service = SecretsServer::new(secrets::SecretsService::new(handles.clone()));
    let specs_service = SpecsServer::new(files::SpecsService::new(handles));
    // Our own accept loop and TLS (listener.rs): handshake deadline,
    // connection cap, idle timeout, and no spinning when descriptors run out.
    let (incoming, _connections) =
        listener::serve_connections(listener, Arc::new(tls), limits.connections.clone());
    Server::builder()
        .timeout(Duration::from_secs(600))
        .max_concurrent_streams(256)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .layer(auth::AuthLayer::new(validator))
        .add_service(health_service)
        .add_service(agent)
        .add_service(file_service)
        .add_service(node_service)
        .add_service(specs_service)
        .add_service(logs_service)
        .add_service(secrets_service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
