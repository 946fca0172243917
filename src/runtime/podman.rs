//! The real runtime: podman's Docker-compatible API (or Docker's) over a unix
//! socket, through bollard.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, Mount, MountType, NetworkCreateRequest,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ListContainersOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use bollard::{ClientVersion, Docker};
use futures::stream::BoxStream;
use futures::StreamExt;

use super::logs::LineSplitter;
use super::RegistryLogin;
use super::{
    labels_for, ContainerInfo, CreateRequest, NetworkFacts, Result, Runtime, RuntimeError,
    RuntimeEvent,
};
use super::{ExecOutput, ExecRequest, ExecSession, ImageInfo, LogChunk, LogOptions, LogStream};
use crate::spec::{ComponentDef, Restart, RunningSpec};

/// API version both podman 4 and current Docker serve.
const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Seconds bollard waits for one API call. Pulls can be slow; everything
/// else answers in milliseconds.
const REQUEST_TIMEOUT_SECS: u64 = 300;

pub struct PodmanRuntime {
    socket: String,
}

impl PodmanRuntime {
    pub fn new(socket: impl Into<String>) -> Self {
        PodmanRuntime {
            socket: socket.into(),
        }
    }

    /// A client for each call: building one is cheap (no connection is made),
    /// and it lets the agent survive the socket going away and coming back.
    fn client(&self) -> Result<Docker> {
        Docker::connect_with_unix(&self.socket, REQUEST_TIMEOUT_SECS, &API_VERSION)
            .map_err(|e| self.classify("connect", e))
    }

    fn classify(&self, action: &str, e: BollardError) -> RuntimeError {
        match e {
            BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            } => RuntimeError::NotFound { what: message },
            // A container that vanished between being listed (or recorded)
            // and this call: podman answers 500 "...: no such container".
            BollardError::DockerResponseServerError { message, .. }
                if message.contains("no such container") =>
            {
                RuntimeError::NotFound { what: message }
            }
            BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            } if action == "create" => RuntimeError::NameInUse { detail: message },
            BollardError::DockerResponseServerError { message, .. }
                if action == "create" && message.contains("is already in use") =>
            {
                RuntimeError::NameInUse { detail: message }
            }
            BollardError::DockerResponseServerError { message, .. } => RuntimeError::Api {
                action: action.to_string(),
                detail: message,
            },
            BollardError::SocketNotFoundError(_) => RuntimeError::Unavailable {
                endpoint: self.socket.clone(),
                detail: "the socket does not exist".to_string(),
            },
            BollardError::HyperLegacyError { .. }
            | BollardError::IOError { .. }
            | BollardError::RequestTimeoutError => RuntimeError::Unavailable {
                endpoint: self.socket.clone(),
                detail: e.to_string(),
            },
            other => RuntimeError::Api {
                action: action.to_string(),
                detail: other.to_string(),
            },
        }
    }
}

/// How long to keep asking while podman reports a state the Docker API lacks.
const TRANSIENT_STATE_PATIENCE: Duration = Duration::from_secs(3);

/// Runs `call` again while podman answers with one of its internal container
/// states that the Docker API does not have (`stopped`, `initialized`, ...):
/// podman 4 leaks them through the compat API for the moment between a
/// container's exit and its cleanup (podman issues #17728, #28359), and
/// bollard cannot decode them. They last well under a second.
async fn asking_past_transient_states<T, F, Fut>(call: F) -> std::result::Result<T, BollardError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, BollardError>>,
{
    let deadline = tokio::time::Instant::now() + TRANSIENT_STATE_PATIENCE;
    loop {
        match call().await {
            Err(BollardError::JsonDataError { message, .. })
                if message.contains("unknown variant")
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::debug!("the runtime reported a transient state ({message}); asking again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

fn restart_policy(r: Restart) -> RestartPolicy {
    RestartPolicy {
        name: Some(match r {
            Restart::No => RestartPolicyNameEnum::NO,
            Restart::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
            Restart::Always => RestartPolicyNameEnum::ALWAYS,
            Restart::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
        }),
        maximum_retry_count: None,
    }
}

fn container_body(request: &CreateRequest<'_>) -> ContainerCreateBody {
    let c: &ComponentDef = request.component;
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &c.ports {
        let key = format!("{}/{}", p.container_port, p.protocol.as_str());
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: p.host_ip.map(|ip| ip.to_string()),
                host_port: p.host_port.map(|port| port.to_string()),
            });
    }
    // Routes: the host port the agent allocated, on its address.
    for r in request.routes {
        port_bindings
            .entry(format!("{}/tcp", r.container_port))
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(r.address.clone()),
                host_port: Some(r.host_port.to_string()),
            });
    }
    let exposed: Vec<String> = port_bindings.keys().cloned().collect();
    // The secrets' values go to the runtime here and nowhere else: the
    // labels (labels_for) carry the spec, which names them only. Podman
    // keeps the environment in its own container config (`podman inspect`).
    let env: Vec<String> = c
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(request.secrets.env.iter().map(|(k, v)| format!("{k}={v}")))
        .chain(
            request
                .routes
                .iter()
                .map(|r| format!("{}={}", r.env, r.host_port)),
        )
        .collect();
    // Read-only binds of the store's files; `mounts` rather than `binds`
    // so that no path is parsed out of a `src:dst:opts` string.
    let secret_mounts: Vec<Mount> = request
        .secrets
        .files
        .iter()
        .map(|(source, target)| Mount {
            target: Some(target.clone()),
            source: Some(source.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        })
        .collect();
    // On a network of the operator's, the component is found by its name.
    let networking_config = c
        .network
        .as_ref()
        .filter(|n| n.is_user_defined() && !request.aliases.is_empty())
        .map(|n| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                n.to_string(),
                EndpointSettings {
                    aliases: Some(request.aliases.to_vec()),
                    ..Default::default()
                },
            )])),
        });
    ContainerCreateBody {
        image: Some(c.image.to_string()),
        cmd: (!c.cmd.is_empty()).then(|| c.cmd.clone()),
        entrypoint: (!c.entrypoint.is_empty()).then(|| c.entrypoint.clone()),
        env: (!env.is_empty()).then_some(env),
        networking_config,
        user: c.user.as_ref().map(|u| u.to_string()),
        labels: Some(labels_for(request.service, c)),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        working_dir: c.workdir.as_ref().map(|w| w.to_string()),
        stop_signal: c.stop_signal.as_ref().map(|s| s.to_string()),
        // The runtime's own `podman stop` then waits as long as the agent does.
        stop_timeout: c
            .stop_timeout
            .as_ref()
            .map(|t| i64::try_from(t.get().as_secs()).unwrap_or(i64::MAX)),
        host_config: Some(HostConfig {
            memory: c.memory.as_ref().map(|m| m.bytes()),
            nano_cpus: c.cpus.map(|n| n.nano_cpus()),
            pids_limit: c.pids.map(|p| p.get()),
            readonly_rootfs: c.read_only.then_some(true),
            tmpfs: (!c.tmpfs.is_empty()).then(|| {
                c.tmpfs
                    .iter()
                    .map(|t| (t.path().to_string(), t.options().to_string()))
                    .collect()
            }),
            cap_add: (!c.cap_add.is_empty())
                .then(|| c.cap_add.iter().map(|x| x.canonical()).collect()),
            cap_drop: (!c.cap_drop.is_empty())
                .then(|| c.cap_drop.iter().map(|x| x.canonical()).collect()),
            binds: (!c.volumes.is_empty())
                .then(|| c.volumes.iter().map(|v| v.as_str().to_string()).collect()),
            mounts: (!secret_mounts.is_empty()).then_some(secret_mounts),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            restart_policy: Some(restart_policy(c.restart)),
            network_mode: c.network.as_ref().map(|n| n.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[async_trait]
impl Runtime for PodmanRuntime {
    fn endpoint(&self) -> String {
        self.socket.clone()
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>> {
        match self.client()?.inspect_image(image).await {
            Ok(inspected) => Ok(inspected.id),
            Err(e) => match self.classify("image inspect", e) {
                RuntimeError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn pull_image(&self, image: &str, login: Option<&RegistryLogin>) -> Result<()> {
        let client = self.client()?;
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let credentials = login.map(|l| bollard::auth::DockerCredentials {
            username: Some(l.username.clone()),
            password: Some(l.password.clone()),
            ..Default::default()
        });
        let mut progress = client.create_image(Some(options), None, credentials);
        while let Some(item) = progress.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                        return Err(RuntimeError::Pull {
                            image: image.to_string(),
                            detail,
                        });
                    }
                }
                Err(e) => {
                    return Err(match self.classify("pull", e) {
                        u @ RuntimeError::Unavailable { .. } => u,
                        other => RuntimeError::Pull {
                            image: image.to_string(),
                            detail: other.to_string(),
                        },
                    })
                }
            }
        }
        // Podman reports some pull failures only by not having the image after.
        if self.image_id(image).await?.is_some() {
            Ok(())
        } else {
            Err(RuntimeError::Pull {
                image: image.to_string(),
                detail: "the runtime finished the pull without the image".to_string(),
            })
        }
    }

    async fn list_images(&self) -> Result<Vec<ImageInfo>> {
        let images = self
            .client()?
            .list_images(None::<bollard::query_parameters::ListImagesOptions>)
            .await
            .map_err(|e| self.classify("image list", e))?;
        Ok(images
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                tags: i.repo_tags,
                size_bytes: u64::try_from(i.size).unwrap_or(0),
            })
            .collect())
    }

    async fn remove_image(&self, id: &str) -> Result<()> {
        self.client()?
            .remove_image(
                id,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
            .map(|_| ())
            .map_err(|e| self.classify("image remove", e))
    }

    async fn inspect(&self, name_or_id: &str) -> Result<Option<ContainerInfo>> {
        let client = self.client()?;
        let inspected =
            match asking_past_transient_states(|| client.inspect_container(name_or_id, None)).await
            {
                Ok(c) => c,
                Err(e) => {
                    return match self.classify("inspect", e) {
                        RuntimeError::NotFound { .. } => Ok(None),
                        other => Err(other),
                    }
                }
            };
        let state = inspected.state.unwrap_or_default();
        let status = state
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".to_string());
        let status_line = match (status.as_str(), state.exit_code, state.error.as_deref()) {
            ("exited" | "dead", code, err) => format!(
                "{status} with code {}{}",
                code.unwrap_or(-1),
                err.filter(|e| !e.is_empty())
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            _ => status.clone(),
        };
        let config = inspected.config.unwrap_or_default();
        Ok(Some(ContainerInfo {
            id: inspected.id.unwrap_or_default(),
            name: inspected
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            image: config.image.unwrap_or_default(),
            image_id: inspected.image.unwrap_or_default(),
            status: status_line,
            state: status,
            labels: config.labels.unwrap_or_default(),
        }))
    }

    async fn inspect_spec(&self, name_or_id: &str) -> Result<Option<(ContainerInfo, RunningSpec)>> {
        let Some(info) = self.inspect(name_or_id).await? else {
            return Ok(None);
        };
        let client = self.client()?;
        let container =
            match asking_past_transient_states(|| client.inspect_container(&info.id, None)).await {
                Ok(c) => c,
                Err(e) => {
                    return match self.classify("inspect", e) {
                        RuntimeError::NotFound { .. } => Ok(None),
                        other => Err(other),
                    }
                }
            };
        let config = container.config.unwrap_or_default();
        let host = container.host_config.unwrap_or_default();
        let image = config.image.clone().unwrap_or_default();
        let defaults = match client.inspect_image(&image).await {
            Ok(i) => i.config.unwrap_or_default(),
            Err(e) => match self.classify("image inspect", e) {
                RuntimeError::NotFound { .. } => Default::default(),
                other => return Err(other),
            },
        };
        Ok(Some((info, running_spec(image, config, host, defaults))))
    }

    async fn ensure_network(&self, name: &str) -> Result<NetworkFacts> {
        let client = self.client()?;
        let created = match client.inspect_network(name, None).await {
            Ok(_) => false,
            Err(e) => match self.classify("network inspect", e) {
                RuntimeError::NotFound { .. } => {
                    let request = NetworkCreateRequest {
                        name: name.to_string(),
                        driver: Some("bridge".to_string()),
                        labels: Some(HashMap::from([(
                            super::LABEL_CREATED_BY.to_string(),
                            "mcp-agent".to_string(),
                        )])),
                        ..Default::default()
                    };
                    match client.create_network(request).await {
                        Ok(_) => true,
                        // Another deploy made it in the meantime: as good.
                        Err(BollardError::DockerResponseServerError { message, .. })
                            if message.contains("already") =>
                        {
                            false
                        }
                        Err(e) => return Err(self.classify("network create", e)),
                    }
                }
                other => return Err(other),
            },
        };
        let inspected = client
            .inspect_network(name, None)
            .await
            .map_err(|e| self.classify("network inspect", e))?;
        let subnet = inspected
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.subnet)
            .collect::<Vec<_>>()
            .join(",");
        Ok(NetworkFacts {
            created,
            driver: inspected.driver.unwrap_or_default(),
            subnet,
            dns: super::libpod::network_dns(&self.socket, name).await,
        })
    }

    async fn create(&self, request: CreateRequest<'_>) -> Result<String> {
        let options = CreateContainerOptions {
            name: Some(request.container_name.clone()),
            ..Default::default()
        };
        let created = self
            .client()?
            .create_container(Some(options), container_body(&request))
            .await
            .map_err(|e| self.classify("create", e))?;
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.client()?
            .start_container(id, None)
            .await
            .map_err(|e| self.classify("start", e))
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        let options = StopContainerOptions {
            t: Some(timeout.as_secs().try_into().unwrap_or(i32::MAX)),
            ..Default::default()
        };
        match self.client()?.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.classify("stop", e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        self.client()?
            .remove_container(id, Some(options))
            .await
            .map_err(|e| self.classify("remove", e))
    }

    async fn exec(&self, id: &str, cmd: &[String]) -> Result<i64> {
        use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
        let client = self.client()?;
        let created = client
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.classify("exec", e))?;
        let started = client
            .start_exec(&created.id, Some(StartExecOptions::default()))
            .await
            .map_err(|e| self.classify("exec", e))?;
        if let StartExecResults::Attached { mut output, .. } = started {
            while let Some(chunk) = output.next().await {
                chunk.map_err(|e| self.classify("exec", e))?;
            }
        }
        let inspected = client
            .inspect_exec(&created.id)
            .await
            .map_err(|e| self.classify("exec", e))?;
        Ok(inspected.exit_code.unwrap_or(-1))
    }

    async fn exec_attached(&self, id: &str, request: ExecRequest) -> Result<ExecSession> {
        use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
        let client = self.client()?;
        let created = client
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(request.cmd),
                    attach_stdin: Some(request.stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(request.tty),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.classify("exec", e))?;
        let started = client
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    tty: request.tty,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| self.classify("exec", e))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(RuntimeError::Api {
                action: "exec".to_string(),
                detail: "the runtime started the command detached".to_string(),
            });
        };
        let endpoint = self.endpoint();
        let output = output
            .filter_map(move |item| {
                let out = match item {
                    Ok(LogOutput::StdErr { message }) => Some(Ok(ExecOutput::Stderr(message))),
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        Some(Ok(ExecOutput::Stdout(message)))
                    }
                    Ok(LogOutput::StdIn { .. }) => None,
                    Err(e) => Some(Err(RuntimeError::Api {
                        action: "exec".to_string(),
                        detail: format!("{e} ({endpoint})"),
                    })),
                };
                futures::future::ready(out)
            })
            .boxed();
        Ok(ExecSession {
            id: created.id,
            output,
            input,
        })
    }

    async fn exec_resize(&self, exec_id: &str, rows: u16, cols: u16) -> Result<()> {
        let options = bollard::exec::ResizeExecOptions {
            height: rows,
            width: cols,
        };
        self.client()?
            .resize_exec(exec_id, options)
            .await
            .map_err(|e| self.classify("exec resize", e))
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>> {
        let inspected = self
            .client()?
            .inspect_exec(exec_id)
            .await
            .map_err(|e| self.classify("exec", e))?;
        Ok(match inspected.running {
            Some(true) => None,
            _ => inspected.exit_code,
        })
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>> {
        let options = ListContainersOptions {
            all: true,
            ..Default::default()
        };
        let client = self.client()?;
        let containers =
            asking_past_transient_states(|| client.list_containers(Some(options.clone())))
                .await
                .map_err(|e| self.classify("list", e))?;
        Ok(containers
            .into_iter()
            .map(|c| ContainerInfo {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                image: c.image.unwrap_or_default(),
                image_id: c.image_id.unwrap_or_default(),
                state: c
                    .state
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown".to_string()),
                status: c.status.unwrap_or_default(),
                labels: c.labels.unwrap_or_default(),
            })
            .collect())
    }

    async fn events(&self) -> Result<BoxStream<'static, Result<RuntimeEvent>>> {
        let client = self.client()?;
        // "From now on" means from this instant, not from whenever the
        // runtime registers the subscription: a caller that lists containers
        // after this call misses nothing in between.
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // Ask once so an absent runtime is an error now, not an empty stream.
        client
            .ping()
            .await
            .map_err(|e| self.classify("events", e))?;
        let options = EventsOptions {
            since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
            filters: Some(HashMap::from([(
                "type".to_string(),
                vec!["container".to_string()],
            )])),
            ..Default::default()
        };
        let socket = self.socket.clone();
        let stream = client.events(Some(options)).filter_map(move |item| {
            let socket = socket.clone();
            async move {
                match item {
                    Ok(message) => event_from(message).map(Ok),
                    Err(e) => Some(Err(RuntimeError::Unavailable {
                        endpoint: socket,
                        detail: format!("event stream: {e}"),
                    })),
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn logs(
        &self,
        name_or_id: &str,
        options: LogOptions,
    ) -> Result<BoxStream<'static, Result<LogChunk>>> {
        let client = self.client()?;
        // Ask once so a missing container is NotFound now, not an item of
        // the stream.
        client
            .inspect_container(name_or_id, None)
            .await
            .map_err(|e| self.classify("logs", e))?;
        let query = bollard::query_parameters::LogsOptions {
            follow: options.follow,
            stdout: true,
            stderr: true,
            // The API counts whole seconds; 0 is "from the start".
            since: options.since_ms.map_or(0, |ms| {
                (ms.div_euclid(1000)).clamp(1, i32::MAX as i64) as i32
            }),
            until: 0,
            // Always: each line's time, and frames that say where they start.
            timestamps: true,
            tail: options
                .tail
                .map_or_else(|| "all".to_string(), |n| n.to_string()),
        };
        let frames = client.logs(name_or_id, Some(query));
        Ok(log_lines(frames, self.socket.clone()))
    }
}

/// Variables the runtime puts in every container's environment, which no
/// definition asked for.
const RUNTIME_ENV: &[(&str, Option<&str>)] = &[
    ("HOSTNAME", None),
    ("container", Some("podman")),
    ("TERM", Some("xterm")),
    (
        "PATH",
        Some("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ),
];

/// Podman's defaults (containers.conf `pids_limit`, and its stop timeout),
/// which a container reports when nothing was asked for.
const RUNTIME_DEFAULT_PIDS_LIMIT: i64 = 2048;
const RUNTIME_DEFAULT_STOP_TIMEOUT_SECS: i64 = 10;
const DEFAULT_STOP_SIGNAL: i32 = 15;

/// Mount options podman adds to every tmpfs.
const RUNTIME_TMPFS_OPTIONS: &[&str] = &["rw", "rprivate", "nosuid", "nodev", "tmpcopyup"];
/// The tmpfs podman mounts on its own on a read-only root file system.
const READ_ONLY_TMPFS: &[&str] = &["/run", "/tmp", "/var/tmp", "/dev/shm"];

/// Network modes that mean "the runtime's default network".
const DEFAULT_NETWORKS: &[&str] = &["", "default", "bridge", "slirp4netns", "private", "pasta"];

/// A container's configuration less its image's defaults and what the
/// runtime adds on its own: what a definition would have said to get it.
fn running_spec(
    image: String,
    config: bollard::models::ContainerConfig,
    host: HostConfig,
    defaults: bollard::models::ImageConfig,
) -> RunningSpec {
    // What MCP gave a container from the secret store is no definition
    // field: a spec read back from it (adopt) must not record the values.
    let given = config
        .labels
        .as_ref()
        .and_then(|l| l.get(super::LABEL_SPEC))
        .and_then(|s| serde_json::from_str::<ComponentDef>(s).ok());
    let secret_vars: Vec<String> = given
        .iter()
        .flat_map(|s| s.secrets.keys().map(|k| k.to_string()))
        .collect();
    let secret_paths: Vec<String> = given
        .iter()
        .flat_map(|s| s.secret_files.values().map(|p| p.to_string()))
        .collect();
    let image_env = defaults.env.unwrap_or_default();
    let env = config
        .env
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !image_env.contains(e))
        .filter_map(|e| {
            let (k, v) = e.split_once('=')?;
            let added_by_runtime = RUNTIME_ENV
                .iter()
                .any(|(key, value)| *key == k && value.is_none_or(|value| value == v));
            let secret = secret_vars.iter().any(|s| s == k);
            (!added_by_runtime && !secret).then(|| (k.to_string(), v.to_string()))
        })
        .collect();
    let unless_default = |mine: Option<Vec<String>>, theirs: Option<Vec<String>>| {
        let mine = mine.unwrap_or_default();
        if mine == theirs.unwrap_or_default() {
            Vec::new()
        } else {
            mine
        }
    };
    let mut ports: Vec<String> = host
        .port_bindings
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(container, bindings)| {
            bindings.unwrap_or_default().into_iter().map(move |b| {
                let ip = b.host_ip.filter(|ip| !ip.is_empty() && ip != "0.0.0.0");
                let host_port = b.host_port.unwrap_or_default();
                let (port, proto) = container.split_once('/').unwrap_or((&container, "tcp"));
                let mut text = String::new();
                if let Some(ip) = ip {
                    text.push_str(&format!("{ip}:"));
                }
                if !host_port.is_empty() {
                    text.push_str(&format!("{host_port}:"));
                }
                text.push_str(port);
                if proto != "tcp" {
                    text.push_str(&format!("/{proto}"));
                }
                text
            })
        })
        .collect();
    ports.sort();
    // Binds read `src:dst:opts`, the options with the runtime's mount
    // propagation added; a definition's own options are kept.
    let volumes = host
        .binds
        .unwrap_or_default()
        .into_iter()
        .filter(|bind| {
            let target = bind.split(':').nth(1).unwrap_or_default();
            !secret_paths.iter().any(|p| p == target)
        })
        .map(|bind| {
            let mut parts = bind.splitn(3, ':');
            let (src, dst) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let options: Vec<&str> = parts
                .next()
                .unwrap_or_default()
                .split(',')
                .filter(|o| matches!(*o, "ro" | "z" | "Z" | "U" | "nocopy"))
                .collect();
            if options.is_empty() {
                format!("{src}:{dst}")
            } else {
                format!("{src}:{dst}:{}", options.join(","))
            }
        })
        .collect();
    let restart = host
        .restart_policy
        .and_then(|p| p.name)
        .map(|n| n.to_string())
        .filter(|n| !n.is_empty() && n != "no");
    let image_labels = defaults.labels.unwrap_or_default();
    let labels = config
        .labels
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, v)| !k.starts_with(super::LABEL_PREFIX) && image_labels.get(k) != Some(v))
        .collect();
    let read_only = host.readonly_rootfs.unwrap_or(false);
    let mut tmpfs: Vec<String> = host
        .tmpfs
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(path, options)| {
            let own: Vec<&str> = options
                .split(',')
                .filter(|o| !o.is_empty() && !RUNTIME_TMPFS_OPTIONS.contains(o))
                .collect();
            if own.is_empty() && read_only && READ_ONLY_TMPFS.contains(&path.as_str()) {
                return None;
            }
            Some(if own.is_empty() {
                path
            } else {
                format!("{path}:{}", own.join(","))
            })
        })
        .collect();
    tmpfs.sort();
    let image_signal = defaults
        .stop_signal
        .as_deref()
        .and_then(|s| crate::spec::Signal::from_runtime(s).ok())
        .map_or(DEFAULT_STOP_SIGNAL, |s| s.number());
    let stop_signal = config.stop_signal.filter(|s| {
        crate::spec::Signal::from_runtime(s).map_or(!s.is_empty(), |s| s.number() != image_signal)
    });
    let image_workdir = defaults.working_dir.unwrap_or_default();
    let workdir = config
        .working_dir
        .filter(|w| !w.is_empty() && w != "/" && *w != image_workdir);
    let positive = |v: Option<i64>| v.filter(|v| *v > 0);
    RunningSpec {
        image,
        cmd: unless_default(config.cmd, defaults.cmd),
        entrypoint: unless_default(config.entrypoint, defaults.entrypoint),
        env,
        ports,
        volumes,
        network: host
            .network_mode
            .filter(|n| !DEFAULT_NETWORKS.contains(&n.as_str())),
        user: config.user.filter(|u| !u.is_empty()),
        restart,
        labels,
        workdir,
        read_only,
        tmpfs,
        memory_bytes: positive(host.memory),
        nano_cpus: positive(host.nano_cpus),
        pids: positive(host.pids_limit).filter(|p| *p != RUNTIME_DEFAULT_PIDS_LIMIT),
        cap_drop: host.cap_drop.unwrap_or_default(),
        cap_add: host.cap_add.unwrap_or_default(),
        stop_signal,
        stop_timeout_secs: config
            .stop_timeout
            .filter(|t| *t >= 0 && *t != RUNTIME_DEFAULT_STOP_TIMEOUT_SECS),
    }
}

/// The runtime's log frames as lines.
fn log_lines(
    frames: impl futures::Stream<Item = std::result::Result<LogOutput, BollardError>> + Send + 'static,
    socket: String,
) -> BoxStream<'static, Result<LogChunk>> {
    struct State<S> {
        frames: S,
        splitter: LineSplitter,
        ready: VecDeque<LogChunk>,
        done: bool,
        error: Option<RuntimeError>,
        socket: String,
    }
    let state = State {
        frames: Box::pin(frames),
        splitter: LineSplitter::default(),
        ready: VecDeque::new(),
        done: false,
        error: None,
        socket,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(line) = st.ready.pop_front() {
                return Some((Ok(line), st));
            }
            if let Some(error) = st.error.take() {
                return Some((Err(error), st));
            }
            if st.done {
                return None;
            }
            match st.frames.next().await {
                Some(Ok(frame)) => {
                    let (stream, bytes) = match frame {
                        LogOutput::StdErr { message } => (LogStream::Stderr, message),
                        LogOutput::StdOut { message }
                        | LogOutput::Console { message }
                        | LogOutput::StdIn { message } => (LogStream::Stdout, message),
                    };
                    st.splitter.push(stream, &bytes, &mut st.ready);
                }
                Some(Err(e)) => {
                    // What was read is still told, then why it stopped.
                    st.done = true;
                    st.splitter.finish(&mut st.ready);
                    st.error = Some(RuntimeError::Unavailable {
                        endpoint: st.socket.clone(),
                        detail: format!("log stream: {e}"),
                    });
                }
                None => {
                    st.done = true;
                    st.splitter.finish(&mut st.ready);
                }
            }
        }
    })
    .boxed()
}

fn event_from(message: bollard::models::EventMessage) -> Option<RuntimeEvent> {
    let actor = message.actor?;
    let mut labels = actor.attributes.unwrap_or_default();
    let name = labels.remove("name").unwrap_or_default();
    let exit_code = labels.remove("exitCode").and_then(|c| c.parse().ok());
    // The rest of the attributes are the container's labels, plus a few
    // runtime keys that no MCP label uses.
    let time_ns = message
        .time_nano
        .or(message.time.map(|s| s.saturating_mul(1_000_000_000)))
        .unwrap_or_else(super::now_ns);
    Some(RuntimeEvent {
        container_id: actor.id?,
        name,
        action: message.action?,
        exit_code,
        labels,
        time_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Name;

    fn component(extra: &str) -> ComponentDef {
        toml::from_str(&format!("name = \"api\"\nimage = \"img:1\"\n{extra}")).unwrap()
    }

    #[test]
    fn resources_and_hardening_reach_the_create_body() {
        let c = component(
            "memory = \"512M\"\ncpus = 1.5\npids = 100\nread_only = true\n\
             tmpfs = [\"/tmp:size=64m\", \"/run\"]\nworkdir = \"/srv\"\n\
             stop_signal = \"QUIT\"\nstop_timeout = \"1m\"\n\
             cap_drop = [\"all\"]\ncap_add = [\"net_admin\"]\n",
        );
        let service = Name::parse("svc").unwrap();
        let body = container_body(&CreateRequest {
            service: &service,
            component: &c,
            container_name: "svc-api".into(),
            secrets: &Default::default(),
            routes: &[],
            aliases: &[],
        });
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(512 << 20));
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.pids_limit, Some(100));
        assert_eq!(host.readonly_rootfs, Some(true));
        let tmpfs = host.tmpfs.unwrap();
        assert_eq!(tmpfs["/tmp"], "size=64m");
        assert_eq!(tmpfs["/run"], "");
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(host.cap_add, Some(vec!["CAP_NET_ADMIN".to_string()]));
        assert_eq!(body.working_dir.as_deref(), Some("/srv"));
        assert_eq!(body.stop_signal.as_deref(), Some("QUIT"));
        assert_eq!(body.stop_timeout, Some(60));

        // Nothing asked: nothing sent, the runtime's defaults apply.
        let body = container_body(&CreateRequest {
            service: &service,
            component: &component(""),
            container_name: "svc-api".into(),
            secrets: &Default::default(),
            routes: &[],
            aliases: &[],
        });
        let host = body.host_config.unwrap();
        assert_eq!(
            (
                host.memory,
                host.nano_cpus,
                host.pids_limit,
                host.readonly_rootfs
            ),
            (None, None, None, None)
        );
        assert!(host.tmpfs.is_none() && host.cap_add.is_none() && host.cap_drop.is_none());
        assert!(body.working_dir.is_none() && body.stop_signal.is_none());
        assert!(body.stop_timeout.is_none());
    }

    #[test]
    fn secrets_reach_the_create_body_and_never_the_labels() {
        let c = component(
            "env = { A = \"1\" }\nsecrets = { DB_PASSWORD = \"db\" }\n\
             secret_files = { db = \"/run/secrets/db\" }\n",
        );
        let secrets = crate::secrets::ResolvedSecrets {
            env: vec![("DB_PASSWORD".into(), "s3cret-value".into())],
            files: vec![("/state/secrets/svc/db".into(), "/run/secrets/db".into())],
        };
        let service = Name::parse("svc").unwrap();
        let body = container_body(&CreateRequest {
            service: &service,
            component: &c,
            container_name: "svc-api".into(),
            secrets: &secrets,
            routes: &[],
            aliases: &[],
        });
        assert_eq!(
            body.env,
            Some(vec![
                "A=1".to_string(),
                "DB_PASSWORD=s3cret-value".to_string()
            ])
        );
        let mounts = body.host_config.as_ref().unwrap().mounts.clone().unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].source.as_deref(), Some("/state/secrets/svc/db"));
        assert_eq!(mounts[0].target.as_deref(), Some("/run/secrets/db"));
        assert_eq!(mounts[0].read_only, Some(true));
        let labels = serde_json::to_string(&body.labels).unwrap();
        assert!(!labels.contains("s3cret"), "{labels}");
        assert!(
            labels.contains("DB_PASSWORD"),
            "the spec names it: {labels}"
        );
    }

    #[test]
    fn a_spec_read_back_leaves_out_what_came_from_the_secret_store() {
        let c = component(
            "env = { A = \"1\" }\nsecrets = { DB_PASSWORD = \"db\" }\n\
             secret_files = { db = \"/run/secrets/db\" }\n",
        );
        let (mut config, mut host) = inspected(false, &[], "15", 10, 2048);
        config.env = Some(vec!["A=1".into(), "DB_PASSWORD=s3cret-value".into()]);
        config.labels = Some(labels_for(&Name::parse("svc").unwrap(), &c));
        host.binds = Some(vec![
            "/state/secrets/svc/db:/run/secrets/db:ro,rprivate,rbind".into(),
            "/srv/svc:/data:rprivate,rbind".into(),
        ]);
        let r = running_spec("img:1".into(), config, host, Default::default());
        assert_eq!(r.env, [("A".to_string(), "1".to_string())]);
        assert_eq!(r.volumes, ["/srv/svc:/data"]);
    }

    #[test]
    fn routes_and_aliases_reach_the_create_body() {
        let c = component("network = \"backend\"\nenv = { A = \"1\" }\n");
        let service = Name::parse("svc").unwrap();
        let routes = [crate::routes::Published {
            address: "127.0.0.1".into(),
            host_port: 10000,
            container_port: 8080,
            env: "PORT".into(),
        }];
        let aliases = ["api".to_string(), "svc-api".to_string()];
        let body = container_body(&CreateRequest {
            service: &service,
            component: &c,
            container_name: "svc-api".into(),
            secrets: &Default::default(),
            routes: &routes,
            aliases: &aliases,
        });
        assert_eq!(
            body.env,
            Some(vec!["A=1".to_string(), "PORT=10000".to_string()])
        );
        let bindings = body.host_config.unwrap().port_bindings.unwrap();
        let binding = &bindings["8080/tcp"].as_ref().unwrap()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port.as_deref(), Some("10000"));
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(endpoints["backend"].aliases.as_deref(), Some(&aliases[..]));
        // The runtime's own networks get no aliases.
        let body = container_body(&CreateRequest {
            service: &service,
            component: &component("network = \"host\"\n"),
            container_name: "svc-api".into(),
            secrets: &Default::default(),
            routes: &[],
            aliases: &aliases,
        });
        assert!(body.networking_config.is_none() && body.env.is_none());
    }

    /// What podman 4.3's compat inspect answers (seen on the test machines).
    fn inspected(
        read_only: bool,
        tmpfs: &[(&str, &str)],
        stop_signal: &str,
        stop_timeout: i64,
        pids: i64,
    ) -> (bollard::models::ContainerConfig, HostConfig) {
        let config = bollard::models::ContainerConfig {
            working_dir: Some("/".into()),
            stop_signal: Some(stop_signal.into()),
            stop_timeout: Some(stop_timeout),
            ..Default::default()
        };
        let host = HostConfig {
            readonly_rootfs: Some(read_only),
            tmpfs: Some(
                tmpfs
                    .iter()
                    .map(|(p, o)| (p.to_string(), o.to_string()))
                    .collect(),
            ),
            pids_limit: Some(pids),
            memory: Some(0),
            nano_cpus: Some(0),
            cap_add: Some(Vec::new()),
            cap_drop: Some(Vec::new()),
            ..Default::default()
        };
        (config, host)
    }

    const PODMAN_TMPFS: &str = "rw,rprivate,nosuid,nodev,tmpcopyup";

    #[test]
    fn the_runtimes_defaults_are_no_definition_fields() {
        let (config, host) = inspected(false, &[], "15", 10, 2048);
        let r = running_spec("img:1".into(), config, host, Default::default());
        let c = ComponentDef::from_running(Name::parse("api").unwrap(), r).unwrap();
        assert_eq!(c, component(""));
    }

    #[test]
    fn a_hardened_container_reads_back_as_its_definition() {
        let own = format!("size=64m,{PODMAN_TMPFS}");
        let (mut config, mut host) = inspected(
            true,
            &[
                ("/run", PODMAN_TMPFS),
                ("/var/tmp", PODMAN_TMPFS),
                ("/tmp", &own),
                ("/cache", PODMAN_TMPFS),
            ],
            "3",
            20,
            100,
        );
        config.working_dir = Some("/srv".into());
        host.memory = Some(512 << 20);
        host.nano_cpus = Some(1_500_000_000);
        host.cap_add = Some(vec!["NET_ADMIN".into()]);
        host.cap_drop = Some(vec!["CHOWN".into(), "KILL".into()]);
        let r = running_spec("img:1".into(), config, host, Default::default());
        let c = ComponentDef::from_running(Name::parse("api").unwrap(), r).unwrap();
        assert_eq!(
            c,
            component(
                "memory = \"512M\"\ncpus = 1.5\npids = 100\nread_only = true\n\
                 tmpfs = [\"/cache\", \"/tmp:size=64m\"]\nworkdir = \"/srv\"\n\
                 stop_signal = \"SIGQUIT\"\nstop_timeout = \"20s\"\n\
                 cap_drop = [\"CHOWN\", \"KILL\"]\ncap_add = [\"NET_ADMIN\"]\n"
            )
        );
    }

    #[test]
    fn the_images_own_stop_signal_and_workdir_are_no_definition_fields() {
        let (mut config, host) = inspected(false, &[], "3", 10, 2048);
        config.working_dir = Some("/app".into());
        let image = bollard::models::ImageConfig {
            working_dir: Some("/app".into()),
            stop_signal: Some("SIGQUIT".into()),
            ..Default::default()
        };
        let r = running_spec("img:1".into(), config, host, image);
        assert_eq!((r.workdir, r.stop_signal), (None, None));
    }
}
