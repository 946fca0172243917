//! The `mcp.v1.Files`, `mcp.v1.Node` and `mcp.v1.Specs` services
//! (proto/mcp/v1/files.proto). File work is `crate::files` on blocking
//! threads, fed and drained through small bounded channels, so a transfer
//! holds a few chunks in memory whatever the file's size. Node resources
//! come from `crate::node_info` and the runtime actor; exports from the
//! registry actor.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::audit;
use super::convert::service_to_proto;
use crate::actors::registry::{GetService, ListNetworks};
use crate::actors::runtime::{ListContainers, ListImages};
use crate::actors::{AgentError, AgentHandles};
use crate::files::{FileError, FileRoot, PushRequest, CHUNK_SIZE};
use crate::names::Name;
use crate::proto;
use crate::proto::files_server::Files;
use crate::proto::node_server::Node;
use crate::proto::specs_server::Specs;
use crate::proto::{pull_chunk, push_chunk};
use crate::spec::ServiceDef;

/// Largest message the Files service decodes: a chunk plus framing, with room
/// for clients that send somewhat larger chunks.
pub const MAX_FILES_MESSAGE_BYTES: usize = 4 * CHUNK_SIZE;
/// Chunks queued between the network and the disk, each way.
const QUEUED_CHUNKS: usize = 4;
/// A push that sends nothing for this long is abandoned (its temp file removed).
const PUSH_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl From<FileError> for Status {
    fn from(e: FileError) -> Status {
        match e {
            FileError::Invalid(m) | FileError::Refused(m) => Status::invalid_argument(m),
            FileError::NotFound(m) => Status::not_found(m),
            FileError::TooLarge(m) => Status::resource_exhausted(m),
            FileError::Mismatch(m) => Status::data_loss(m),
            FileError::Io(m) => Status::internal(m),
        }
    }
}

fn join_error(e: tokio::task::JoinError) -> Status {
    Status::internal(format!("file worker failed: {e}"))
}

pub struct FilesService {
    root: Arc<FileRoot>,
    node: String,
    /// One permit per transfer in progress (`[limits] max_transfers`).
    transfers: Arc<tokio::sync::Semaphore>,
    max_transfers: usize,
}

impl FilesService {
    pub fn new(root: Arc<FileRoot>, node: String, max_transfers: usize) -> Self {
        FilesService {
            root,
            node,
            transfers: Arc::new(tokio::sync::Semaphore::new(max_transfers)),
            max_transfers,
        }
    }

    /// A transfer's place, or RESOURCE_EXHAUSTED when all are taken.
    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.transfers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} file transfers are in progress on node {} ([limits] max_transfers in the \
                 agent's config); try again when one has finished",
                self.max_transfers, self.node
            ))
        })
    }
}

enum ToDisk {
    Data(Vec<u8>),
    End,
}

/// Runs blocking file work on a blocking thread, only for as long as the
/// work itself takes (never while waiting on the network).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(join_error)?
        .map_err(Status::from)
}

impl FilesService {
    /// A push's header, then its data; `target` is set to
    /// `service:path` as soon as the header names them.
    async fn receive(
        &self,
        mut stream: Streaming<proto::PushChunk>,
        target: &mut String,
    ) -> Result<Response<proto::PushResult>, Status> {
        let permit = self.admit()?;
        let header = match stream.message().await?.and_then(|c| c.part) {
            Some(push_chunk::Part::Header(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "a push starts with a header message",
                ))
            }
        };
        *target = format!("{}:{}", header.service, header.path);
        let push = PushRequest {
            service: header.service,
            path: header.path,
            mode: header.mode,
            size: header.size,
            sha256: header.sha256,
        };
        let root = self.root.clone();
        let (service, path) = (push.service.clone(), push.path.clone());
        let mut writer = match tokio::task::spawn_blocking(move || root.begin_push(&push))
            .await
            .map_err(join_error)?
        {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(service = ?service, path = ?path, "push refused: {e}");
                return Err(e.into());
            }
        };

        // The disk side: owns the writer and takes a blocking thread for
        // each write only; dropping it unfinished (the channel closed
        // without End) removes the temp file. This also runs when the
        // handler itself is dropped (the connection went away): the channel
        // closes and the writer is dropped here.
        let (tx, mut rx) = mpsc::channel::<ToDisk>(QUEUED_CHUNKS);
        let (log_service, log_path) = (service.clone(), path.clone());
        let disk = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    ToDisk::Data(d) => {
                        writer = tokio::task::spawn_blocking(move || {
                            writer.write(&d)?;
                            Ok::<_, FileError>(writer)
                        })
                        .await
                        .map_err(|e| FileError::Io(format!("file worker failed: {e}")))??;
                    }
                    ToDisk::End => {
                        return tokio::task::spawn_blocking(move || writer.finish().map(Some))
                            .await
                            .map_err(|e| FileError::Io(format!("file worker failed: {e}")))?;
                    }
                }
            }
            tracing::warn!(
                service = ?log_service,
                path = ?log_path,
                received = writer.written(),
                "push abandoned by the client: temp file removed, nothing written"
            );
            Ok(None)
        });

        // The network side.
        let interrupted = loop {
            let next = match tokio::time::timeout(PUSH_IDLE_TIMEOUT, stream.message()).await {
                Ok(next) => next,
                Err(_) => {
                    break Some(Status::deadline_exceeded(format!(
                        "no data for {}s: push abandoned",
                        PUSH_IDLE_TIMEOUT.as_secs()
                    )))
                }
            };
            match next {
                Ok(Some(proto::PushChunk {
                    part: Some(push_chunk::Part::Data(d)),
                })) => {
                    if tx.send(ToDisk::Data(d)).await.is_err() {
                        // The disk side stopped: its error says why.
                        break None;
                    }
                }
                Ok(Some(_)) => {
                    break Some(Status::invalid_argument(
                        "a push sends one header, then only data",
                    ))
                }
                Ok(None) => {
                    let _ = tx.send(ToDisk::End).await;
                    break None;
                }
                Err(status) => {
                    break Some(Status::cancelled(format!(
                        "the push was interrupted: {}",
                        status.message()
                    )))
                }
            }
        };
        drop(tx);
        let outcome = disk.await.map_err(join_error)?;
        drop(permit);
        if let Some(status) = interrupted {
            return Err(status);
        }
        match outcome {
            Ok(Some(done)) => {
                tracing::info!(service = %done.service, path = %done.path, size = done.size, "file pushed");
                Ok(Response::new(proto::PushResult {
                    node: self.node.clone(),
                    service: done.service,
                    path: done.path,
                    size: done.size,
                    sha256: done.sha256,
                    mode: done.mode,
                }))
            }
            Ok(None) => Err(Status::cancelled("the push ended without its data")),
            Err(e) => {
                tracing::warn!(service = ?service, path = ?path, "push refused, nothing written: {e}");
                Err(e.into())
            }
        }
    }
}

#[tonic::async_trait]
impl Files for FilesService {
    async fn push(
        &self,
        request: Request<Streaming<proto::PushChunk>>,
    ) -> Result<Response<proto::PushResult>, Status> {
        let by = audit::caller(&request);
        let mut target = String::new();
        let done = self.receive(request.into_inner(), &mut target).await;
        audit::record("Push", &target, &by, &done, |r| {
            format!("ok ({} bytes)", r.get_ref().size)
        });
        done
    }

    type PullStream = Pin<Box<dyn Stream<Item = Result<proto::PullChunk, Status>> + Send>>;

    async fn pull(
        &self,
        request: Request<proto::PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let permit = self.admit()?;
        let request = request.into_inner();
        let root = self.root.clone();
        let (service, path) = (request.service.clone(), request.path.clone());
        let reader = match blocking(move || root.open_pull(&service, &path)).await {
            Ok(r) => r,
            Err(status) => {
                tracing::warn!(service = ?request.service, path = ?request.path, "pull refused: {}", status.message());
                return Err(status);
            }
        };
        let header = proto::PullChunk {
            part: Some(pull_chunk::Part::Header(proto::PullHeader {
                size: reader.size,
                mode: reader.mode,
                sha256: reader.sha256.clone(),
                path: reader.path.clone(),
            })),
        };
        let (tx, rx) = mpsc::channel::<Result<proto::PullChunk, Status>>(QUEUED_CHUNKS);
        // Reads ahead of the network by a few chunks; a blocking thread
        // only for each read, and the transfer's permit until it ends.
        tokio::spawn(async move {
            let _permit = permit;
            let mut reader = Some(reader);
            while let Some(mut r) = reader.take() {
                let read = blocking(move || {
                    let mut buf = vec![0u8; CHUNK_SIZE];
                    let n = r.read_chunk(&mut buf)?;
                    buf.truncate(n);
                    Ok((r, buf))
                })
                .await;
                let item = match read {
                    Ok((_, buf)) if buf.is_empty() => return,
                    Ok((r, buf)) => {
                        reader = Some(r);
                        Ok(proto::PullChunk {
                            part: Some(pull_chunk::Part::Data(buf)),
                        })
                    }
                    Err(status) => Err(status),
                };
                // The client went away: stop reading.
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        let data = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(
            futures::stream::once(async move { Ok(header) })
                .chain(data)
                .boxed(),
        ))
    }
}

pub struct NodeService {
    handles: AgentHandles,
    srv_root: PathBuf,
    started: Instant,
    /// When the agent's TLS certificate expires (Unix ms).
    cert_not_after_ms: i64,
}

impl NodeService {
    pub fn new(handles: AgentHandles, srv_root: PathBuf, cert_not_after_ms: i64) -> Self {
        NodeService {
            handles,
            srv_root,
            started: Instant::now(),
            cert_not_after_ms,
        }
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn info(
        &self,
        _: Request<proto::NodeInfoRequest>,
    ) -> Result<Response<proto::NodeInfo>, Status> {
        let srv_root = self.srv_root.clone();
        let stats = tokio::task::spawn_blocking(move || crate::node_info::read(&srv_root));
        let listed = self.handles.peers.runtime.send(ListContainers {}).await;
        let images = self.handles.peers.runtime.send(ListImages {}).await;
        let networks = self
            .handles
            .peers
            .registry
            .send(ListNetworks {})
            .await
            .map_err(AgentError::from)?
            .map_err(AgentError::from)?;
        let stats = stats.await.map_err(join_error)?;
        // The containers' error says the runtime could not be asked.
        let (images, images_bytes) = match images {
            Ok(Ok(list)) => (
                u32::try_from(list.len()).unwrap_or(u32::MAX),
                list.iter().map(|i| i.size_bytes).sum(),
            ),
            _ => (0, 0),
        };
        let (containers, containers_error) = match listed {
            Ok(Ok(list)) => {
                let mut by_state: BTreeMap<String, u32> = BTreeMap::new();
                for c in list {
                    *by_state.entry(c.state).or_default() += 1;
                }
                let counts = by_state
                    .into_iter()
                    .map(|(state, count)| proto::StateCount { state, count })
                    .collect();
                (counts, String::new())
            }
            Ok(Err(e)) => (Vec::new(), e.to_string()),
            Err(e) => (Vec::new(), AgentError::from(e).to_string()),
        };
        Ok(Response::new(proto::NodeInfo {
            node: self.handles.peers.settings.node.clone(),
            cpus: stats.cpus,
            load1: stats.load[0],
            load5: stats.load[1],
            load15: stats.load[2],
            memory_total_bytes: stats.memory_total,
            memory_available_bytes: stats.memory_available,
            disk_path: stats.disk_path.display().to_string(),
            disk_total_bytes: stats.disk_total,
            disk_free_bytes: stats.disk_free,
            containers,
            containers_error,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            agent_uptime_secs: self.started.elapsed().as_secs(),
            system_uptime_secs: stats.system_uptime_secs,
            tls_not_after_ms: self.cert_not_after_ms,
            images,
            images_bytes,
            networks: networks
                .into_iter()
                .map(|n| proto::NetworkInfo {
                    dns: match n.dns {
                        Some(true) => "on",
                        Some(false) => "off",
                        None => "unknown",
                    }
                    .to_string(),
                    name: n.name,
                    driver: n.driver,
                    subnet: n.subnet,
                    created_at_ms: n.created_at_ms,
                })
                .collect(),
        }))
    }
}

pub struct SpecsService {
    handles: AgentHandles,
}

impl SpecsService {
    pub fn new(handles: AgentHandles) -> Self {
        SpecsService { handles }
    }
}

#[tonic::async_trait]
impl Specs for SpecsService {
    async fn export(
        &self,
        request: Request<proto::ExportRequest>,
    ) -> Result<Response<proto::ExportResponse>, Status> {
        let name = Name::parse(&request.into_inner().service)
            .map_err(|e| Status::invalid_argument(format!("service: {e}")))?;
        let node_name = self.handles.peers.settings.node.clone();
        let row = self
            .handles
            .peers
            .registry
            .send(GetService {
                name: name.to_string(),
            })
            .await
            .map_err(AgentError::from)?
            .map_err(AgentError::from)?
            .ok_or_else(|| {
                Status::not_found(format!("service {name} is not on node {node_name}"))
            })?;
        let node = Name::parse(&node_name).map_err(|e| Status::internal(e.to_string()))?;
        let mut undeployed = Vec::new();
        let components = row
            .components
            .into_iter()
            .map(|c| match c.deployed_spec {
                Some(spec) => spec,
                None => {
                    undeployed.push(c.state.name);
                    c.spec
                }
            })
            .collect();
        let def = ServiceDef {
            name,
            node,
            active: row.active,
            reconcile: row.reconcile,
            components,
        };
        def.check()
            .map_err(|(_, m)| Status::failed_precondition(format!("the registry's spec: {m}")))?;
        Ok(Response::new(proto::ExportResponse {
            node: node_name,
            service: Some(service_to_proto(&def)),
            undeployed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::files_client::FilesClient;
    use crate::proto::files_server::FilesServer;
    use std::time::Duration;

    /// The Files service on a loopback port (no TLS, no auth: those are
    /// the server's layers, not this service's), over a srv root holding
    /// `svc/big` (1 MiB).
    struct Served {
        dir: tempfile::TempDir,
        client: FilesClient<tonic::transport::Channel>,
    }

    impl Served {
        /// Waits until a push has written `bytes` to its temp file: it has
        /// been admitted and is in progress.
        async fn push_in_progress(&self, bytes: u64) {
            let svc = self.dir.path().join("svc");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let written = std::fs::read_dir(&svc)
                    .unwrap()
                    .filter_map(Result::ok)
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(crate::files::TEMP_PREFIX)
                    })
                    .any(|e| e.metadata().is_ok_and(|m| m.len() >= bytes));
                if written {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the push never started"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    async fn serve(max_transfers: usize) -> Served {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("svc")).unwrap();
        std::fs::write(dir.path().join("svc/big"), vec![7u8; 1 << 20]).unwrap();
        let root = FileRoot::new(&crate::files::FilesConfig {
            srv_root: dir.path().to_path_buf(),
            max_file_size: 1 << 30,
            protected: Vec::new(),
        });
        let service = FilesService::new(Arc::new(root), "n1".into(), max_transfers);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(FilesServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Served {
            dir,
            client: FilesClient::new(channel),
        }
    }

    /// A push that sends its header and one chunk, then nothing: the
    /// sender keeps it open until dropped.
    async fn stalled_push(
        client: &FilesClient<tonic::transport::Channel>,
    ) -> mpsc::Sender<proto::PushChunk> {
        let (tx, rx) = mpsc::channel(4);
        tx.send(proto::PushChunk {
            part: Some(push_chunk::Part::Header(proto::PushHeader {
                service: "svc".into(),
                path: "upload".into(),
                mode: 0o644,
                size: 2 * CHUNK_SIZE as u64,
                sha256: "0".repeat(64),
            })),
        })
        .await
        .unwrap();
        tx.send(proto::PushChunk {
            part: Some(push_chunk::Part::Data(vec![1u8; CHUNK_SIZE])),
        })
        .await
        .unwrap();
        let mut client = client.clone();
        tokio::spawn(async move {
            let _ = client
                .push(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await;
        });
        tx
    }

    async fn pull_all(
        client: &FilesClient<tonic::transport::Channel>,
    ) -> Result<usize, tonic::Status> {
        let mut stream = client
            .clone()
            .pull(proto::PullRequest {
                service: "svc".into(),
                path: "big".into(),
            })
            .await?
            .into_inner();
        let mut bytes = 0;
        while let Some(chunk) = stream.message().await? {
            if let Some(pull_chunk::Part::Data(d)) = chunk.part {
                bytes += d.len();
            }
        }
        Ok(bytes)
    }

    /// One blocking thread in all: a push that waits for its next chunk
    /// must not hold it, or nothing else could touch a file.
    #[test]
    fn a_stalled_push_holds_no_blocking_thread() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let served = serve(8).await;
            let _stalled = stalled_push(&served.client).await;
            served.push_in_progress(CHUNK_SIZE as u64).await;
            let pulled = tokio::time::timeout(Duration::from_secs(10), pull_all(&served.client))
                .await
                .expect("a pull completes while a push is stalled")
                .unwrap();
            assert_eq!(pulled, 1 << 20);
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transfers_beyond_the_cap_are_refused_until_one_ends() {
        let served = serve(1).await;
        let stalled = stalled_push(&served.client).await;
        served.push_in_progress(0).await;
        // The push holds the only place.
        let refused = pull_all(&served.client).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("max_transfers"),
            "{}",
            refused.message()
        );
        drop(stalled);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match pull_all(&served.client).await {
                Ok(n) => {
                    assert_eq!(n, 1 << 20);
                    break;
                }
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the place was never given back"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}
