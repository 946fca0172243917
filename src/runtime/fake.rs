//! An in-memory runtime for unit tests of the actors. It keeps containers in a
//! map, emits events for what it does, and can be told to fail pulls, to kill
//! a container, or to be unavailable.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::broadcast;

use super::{
    labels_for, ContainerInfo, CreateRequest, Result, Runtime, RuntimeError, RuntimeEvent,
};
use super::{ExecRequest, ExecSession, ImageInfo, LogChunk, LogOptions, LogStream, RegistryLogin};

/// The fake's stand-in for an image id: one per reference.
pub fn fake_image_id(image: &str) -> String {
    format!("sha256:fake-{image}")
}

pub struct FakeRuntime {
    state: Mutex<FakeState>,
    events: broadcast::Sender<RuntimeEvent>,
    /// New log lines, (container name, line), for following streams.
    log_lines: broadcast::Sender<(String, LogChunk)>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        FakeRuntime {
            state: Mutex::default(),
            events: broadcast::channel(1024).0,
            log_lines: broadcast::channel(1024).0,
        }
    }
}

#[derive(Default)]
struct FakeState {
    images: HashSet<String>,
    /// Images whose pull succeeds (the fake "registry").
    pullable: HashSet<String>,
    containers: HashMap<String, ContainerInfo>,
    /// What hand-made containers run, for adopt (`insert_unmanaged_running`).
    running: HashMap<String, crate::spec::RunningSpec>,
    /// Output by container name, as `write_log` seeded it.
    logs: HashMap<String, Vec<LogChunk>>,
    next_id: u64,
    unavailable: bool,
    /// Exit code of `exec` in containers of an image (default 0: healthy).
    exec_exit: HashMap<String, i64>,
    /// How long `list` takes between its snapshot and its answer, so a test
    /// can change things while a listing is in flight.
    list_delay: Duration,
    /// How long a pull takes.
    pull_delay: Duration,
    /// Creates of these container names wait until released
    /// (`block_create`, `release_create`).
    blocked_creates: HashMap<String, std::sync::Arc<tokio::sync::Semaphore>>,
    /// Every call that acts on or inspects something, in order, for
    /// assertions ("create svc-api", ...). The watch's `list` and `events`
    /// are not recorded: they run on the watch's own schedule.
    calls: Vec<String>,
    /// Each stop's container id and timeout, in order.
    stops: Vec<(String, Duration)>,
    /// The secrets each container was created with, by container id.
    secrets: HashMap<String, crate::secrets::ResolvedSecrets>,
    /// Networks that exist (`ensure_network` creates missing ones).
    networks: HashSet<String>,
    /// What each container name was last created with: its routes' host
    /// ports and variables, and its aliases.
    wiring: HashMap<String, (Vec<crate::routes::Published>, Vec<String>)>,
}

impl FakeRuntime {
    pub fn with_images(images: &[&str]) -> Self {
        let fake = FakeRuntime::default();
        fake.lock().images = images.iter().map(|s| s.to_string()).collect();
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A panicking test thread must not hide the state from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Health probes (`exec`) in containers of `image` exit with `code`.
    pub fn set_exec_exit(&self, image: &str, code: i64) {
        self.lock().exec_exit.insert(image.to_string(), code);
    }

    /// `list` answers `delay` after it took its snapshot.
    pub fn set_list_delay(&self, delay: Duration) {
        self.lock().list_delay = delay;
    }

    /// Creates of container `name` wait (after being recorded in `calls`)
    /// until [`FakeRuntime::release_create`].
    pub fn block_create(&self, name: &str) {
        self.lock().blocked_creates.insert(
            name.to_string(),
            std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
        );
    }

    /// Lets the blocked creates of `name` go on, and later ones not wait.
    pub fn release_create(&self, name: &str) {
        if let Some(gate) = self.lock().blocked_creates.remove(name) {
            gate.close();
        }
    }

    /// Pulls take `delay`.
    pub fn set_pull_delay(&self, delay: Duration) {
        self.lock().pull_delay = delay;
    }

    pub fn allow_pull(&self, image: &str) {
        self.lock().pullable.insert(image.to_string());
    }

    /// Switches the runtime off (every call fails, event streams end) or on.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
        if unavailable {
            self.emit_end();
        }
    }

    /// Ends every open event stream, as a runtime going away does.
    fn emit_end(&self) {
        let _ = self.events.send(RuntimeEvent {
            container_id: String::new(),
            name: String::new(),
            action: END_OF_STREAM.to_string(),
            exit_code: None,
            labels: HashMap::new(),
            time_ns: 0,
        });
    }

    fn emit(&self, c: &ContainerInfo, action: &str, exit_code: Option<i64>) {
        let _ = self.events.send(RuntimeEvent {
            container_id: c.id.clone(),
            name: c.name.clone(),
            action: action.to_string(),
            exit_code,
            labels: c.labels.clone(),
            time_ns: super::now_ns(),
        });
    }

    /// The container's process exits with `code`, behind the agent's back
    /// (as `podman kill` or a crash would do).
    pub fn exit(&self, name: &str, code: i64) {
        let mut state = self.lock();
        let Some(c) = state.containers.values_mut().find(|c| c.name == name) else {
            return;
        };
        c.state = "exited".to_string();
        c.status = format!("Exited ({code})");
        let c = c.clone();
        drop(state);
        self.emit(&c, "die", Some(code));
    }

    /// Container `name` writes `line` (now) on `stream`: kept for `logs`,
    /// and sent to the streams that follow it. Not recorded in `calls`.
    pub fn write_log(&self, name: &str, stream: LogStream, line: &str) {
        let chunk = LogChunk {
            stream,
            line: line.to_string(),
            ts_ms: Some(crate::registry::now_ms()),
        };
        let mut state = self.lock();
        state
            .logs
            .entry(name.to_string())
            .or_default()
            .push(chunk.clone());
        // Under the lock, so a `logs` call sees a line either in the history
        // or in its subscription, never in both or neither.
        let _ = self.log_lines.send((name.to_string(), chunk));
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// The routes and aliases container `name` was last created with.
    pub fn wiring(&self, name: &str) -> Option<(Vec<crate::routes::Published>, Vec<String>)> {
        self.lock().wiring.get(name).cloned()
    }

    /// The image references the fake holds, sorted.
    pub fn image_refs(&self) -> Vec<String> {
        let mut refs: Vec<String> = self.lock().images.iter().cloned().collect();
        refs.sort();
        refs
    }

    /// Each stop's container id and the timeout it was given.
    pub fn stops(&self) -> Vec<(String, Duration)> {
        self.lock().stops.clone()
    }

    /// The secrets container `id` was created with.
    pub fn secrets_of(&self, id: &str) -> Option<crate::secrets::ResolvedSecrets> {
        self.lock().secrets.get(id).cloned()
    }

    pub fn container(&self, name: &str) -> Option<ContainerInfo> {
        self.lock()
            .containers
            .values()
            .find(|c| c.name == name)
            .cloned()
    }

    pub fn container_by_id(&self, id: &str) -> Option<ContainerInfo> {
        self.lock().containers.get(id).cloned()
    }

    /// [`FakeRuntime::insert_unmanaged`] of a container that runs `running`
    /// (its command, environment, ...).
    pub fn insert_unmanaged_running(
        &self,
        name: &str,
        running: crate::spec::RunningSpec,
    ) -> String {
        let id = self.insert_unmanaged(name, &running.image.clone());
        self.lock().running.insert(id.clone(), running);
        id
    }

    /// Puts a running container MCP did not create (no labels) on the node, as
    /// `podman run --name NAME IMAGE` would. Not recorded in `calls`. Returns its id.
    pub fn insert_unmanaged(&self, name: &str, image: &str) -> String {
        let mut state = self.lock();
        state.next_id += 1;
        let id = format!("{:064x}", state.next_id);
        state.containers.insert(
            id.clone(),
            ContainerInfo {
                id: id.clone(),
                name: name.to_string(),
                image: image.to_string(),
                image_id: fake_image_id(image),
                state: "running".to_string(),
                status: "Up".to_string(),
                labels: HashMap::new(),
            },
        );
        id
    }

    fn enter(&self, call: String) -> Result<std::sync::MutexGuard<'_, FakeState>> {
        let mut state = self.lock();
        if state.unavailable {
            return Err(RuntimeError::Unavailable {
                endpoint: "fake".to_string(),
                detail: "the fake runtime is switched off".to_string(),
            });
        }
        if call != "list" && call != "events" {
            state.calls.push(call);
        }
        Ok(state)
    }
}

impl FakeState {
    fn find_mut(&mut self, name_or_id: &str) -> Result<&mut ContainerInfo> {
        self.containers
            .values_mut()
            .find(|c| c.id == name_or_id || c.name == name_or_id)
            .ok_or_else(|| RuntimeError::NotFound {
                what: format!("container {name_or_id}"),
            })
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn endpoint(&self) -> String {
        "fake".to_string()
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>> {
        let state = self.enter(format!("image {image}"))?;
        Ok(state.images.contains(image).then(|| fake_image_id(image)))
    }

    async fn pull_image(&self, image: &str, _login: Option<&RegistryLogin>) -> Result<()> {
        let delay = self.enter(format!("pull {image}"))?.pull_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut state = self.lock();
        if state.pullable.contains(image) {
            state.images.insert(image.to_string());
            Ok(())
        } else {
            Err(RuntimeError::Pull {
                image: image.to_string(),
                detail: "manifest unknown".to_string(),
            })
        }
    }

    async fn list_images(&self) -> Result<Vec<ImageInfo>> {
        let state = self.enter("images".to_string())?;
        Ok(state
            .images
            .iter()
            .map(|i| ImageInfo {
                id: fake_image_id(i),
                tags: vec![i.clone()],
                size_bytes: 1024,
            })
            .collect())
    }

    async fn remove_image(&self, id: &str) -> Result<()> {
        let mut state = self.enter(format!("image remove {id}"))?;
        state.images.retain(|i| fake_image_id(i) != id);
        Ok(())
    }

    async fn inspect(&self, name_or_id: &str) -> Result<Option<ContainerInfo>> {
        let mut state = self.enter(format!("inspect {name_or_id}"))?;
        Ok(state.find_mut(name_or_id).ok().map(|c| c.clone()))
    }

    async fn inspect_spec(
        &self,
        name_or_id: &str,
    ) -> Result<Option<(ContainerInfo, crate::spec::RunningSpec)>> {
        let mut state = self.enter(format!("inspect {name_or_id}"))?;
        let Ok(info) = state.find_mut(name_or_id).map(|c| c.clone()) else {
            return Ok(None);
        };
        let running =
            state
                .running
                .get(&info.id)
                .cloned()
                .unwrap_or_else(|| crate::spec::RunningSpec {
                    image: info.image.clone(),
                    ..Default::default()
                });
        Ok(Some((info, running)))
    }

    async fn create(&self, request: CreateRequest<'_>) -> Result<String> {
        let gate = self
            .enter(format!("create {}", request.container_name))?
            .blocked_creates
            .get(&request.container_name)
            .cloned();
        if let Some(gate) = gate {
            // Closed on release: acquire then fails, and the create goes on.
            let _ = gate.acquire().await;
        }
        let mut state = self.lock();
        let image = request.component.image.to_string();
        if !state.images.contains(&image) {
            return Err(RuntimeError::NotFound {
                what: format!("image {image}"),
            });
        }
        if state
            .containers
            .values()
            .any(|c| c.name == request.container_name)
        {
            return Err(RuntimeError::NameInUse {
                detail: format!(
                    "the container name {} is already in use",
                    request.container_name
                ),
            });
        }
        state.next_id += 1;
        let id = format!("{:064x}", state.next_id);
        let created = ContainerInfo {
            id: id.clone(),
            name: request.container_name,
            image_id: fake_image_id(&image),
            image,
            state: "created".to_string(),
            status: "Created".to_string(),
            labels: labels_for(request.service, request.component),
        };
        state.containers.insert(id.clone(), created.clone());
        state.secrets.insert(id.clone(), request.secrets.clone());
        state.wiring.insert(
            created.name.clone(),
            (request.routes.to_vec(), request.aliases.to_vec()),
        );
        drop(state);
        self.emit(&created, "create", None);
        Ok(id)
    }

    async fn ensure_network(&self, name: &str) -> Result<super::NetworkFacts> {
        let mut state = self.enter(format!("ensure network {name}"))?;
        let created = state.networks.insert(name.to_string());
        Ok(super::NetworkFacts {
            created,
            driver: "bridge".to_string(),
            subnet: "10.89.0.0/24".to_string(),
            dns: Some(true),
        })
    }

    async fn start(&self, id: &str) -> Result<()> {
        let mut state = self.enter(format!("start {id}"))?;
        let c = state.find_mut(id)?;
        c.state = "running".to_string();
        c.status = "Up".to_string();
        let c = c.clone();
        drop(state);
        self.emit(&c, "start", None);
        Ok(())
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        let mut state = self.enter(format!("stop {id}"))?;
        state.stops.push((id.to_string(), timeout));
        let c = state.find_mut(id)?;
        let was_running = c.state == "running";
        c.state = "exited".to_string();
        c.status = "Exited (0)".to_string();
        let c = c.clone();
        drop(state);
        if was_running {
            self.emit(&c, "die", Some(0));
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let mut state = self.enter(format!("remove {id}"))?;
        let key = state.find_mut(id)?.id.clone();
        if let Some(c) = state.containers.remove(&key) {
            drop(state);
            self.emit(&c, "remove", None);
        }
        Ok(())
    }

    async fn exec(&self, id: &str, cmd: &[String]) -> Result<i64> {
        let mut state = self.enter(format!("exec {id} {}", cmd.join(" ")))?;
        let c = state.find_mut(id)?;
        if c.state != "running" {
            return Err(RuntimeError::Api {
                action: "exec".to_string(),
                detail: format!("container {} is not running", c.name),
            });
        }
        let image = c.image.clone();
        Ok(*state.exec_exit.get(&image).unwrap_or(&0))
    }

    /// No output; the exit code is the image's `set_exec_exit`.
    async fn exec_attached(&self, id: &str, request: ExecRequest) -> Result<ExecSession> {
        let code = self.exec(id, &request.cmd).await?;
        let exec_id = format!("exec-{id}-{code}");
        self.lock().exec_exit.insert(exec_id.clone(), code);
        Ok(ExecSession {
            id: exec_id,
            output: futures::stream::empty().boxed(),
            input: Box::pin(tokio::io::sink()),
        })
    }

    async fn exec_resize(&self, _exec_id: &str, _rows: u16, _cols: u16) -> Result<()> {
        Ok(())
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>> {
        Ok(self.lock().exec_exit.get(exec_id).copied())
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>> {
        let (mut all, delay) = {
            let state = self.enter("list".to_string())?;
            let all: Vec<_> = state.containers.values().cloned().collect();
            (all, state.list_delay)
        };
        all.sort_by(|a, b| a.name.cmp(&b.name));
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(all)
    }

    async fn events(&self) -> Result<BoxStream<'static, Result<RuntimeEvent>>> {
        drop(self.enter("events".to_string())?);
        let receiver = self.events.subscribe();
        let stream = futures::stream::unfold(receiver, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) if ev.action == END_OF_STREAM => return None,
                    Ok(ev) => return Some((Ok(ev), rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
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
        let mut state = self.enter(format!("logs {name_or_id}"))?;
        let name = state.find_mut(name_or_id)?.name.clone();
        let receiver = self.log_lines.subscribe();
        let mut past: Vec<LogChunk> = state
            .logs
            .get(&name)
            .into_iter()
            .flatten()
            .filter(|c| options.since_ms.is_none_or(|s| c.ts_ms.unwrap_or(0) >= s))
            .cloned()
            .collect();
        drop(state);
        if let Some(n) = options.tail {
            past.drain(..past.len().saturating_sub(n as usize));
        }
        let past = futures::stream::iter(past.into_iter().map(Ok));
        if !options.follow {
            return Ok(past.boxed());
        }
        let new = futures::stream::unfold(receiver, move |mut rx| {
            let name = name.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok((n, chunk)) if n == name => return Some((Ok(chunk), rx)),
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(past.chain(new).boxed())
    }
}

/// An internal marker that ends the fake's event streams.
const END_OF_STREAM: &str = "__end_of_stream__";
