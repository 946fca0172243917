//! An in-memory runtime for unit tests of the actors. It keeps containers in a
//! map and can be told to fail pulls or to be unavailable.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{labels_for, ContainerInfo, CreateRequest, Result, Runtime, RuntimeError};

#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    images: HashSet<String>,
    /// Images whose pull succeeds (the fake "registry").
    pullable: HashSet<String>,
    containers: HashMap<String, ContainerInfo>,
    next_id: u64,
    unavailable: bool,
    /// Every call, in order, for assertions ("create svc-api", ...).
    calls: Vec<String>,
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

    pub fn allow_pull(&self, image: &str) {
        self.lock().pullable.insert(image.to_string());
    }

    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn container(&self, name: &str) -> Option<ContainerInfo> {
        self.lock()
            .containers
            .values()
            .find(|c| c.name == name)
            .cloned()
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
        state.calls.push(call);
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

    async fn image_present(&self, image: &str) -> Result<bool> {
        Ok(self.enter(format!("image {image}"))?.images.contains(image))
    }

    async fn pull_image(&self, image: &str) -> Result<()> {
        let mut state = self.enter(format!("pull {image}"))?;
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

    async fn inspect(&self, name_or_id: &str) -> Result<Option<ContainerInfo>> {
        let mut state = self.enter(format!("inspect {name_or_id}"))?;
        Ok(state.find_mut(name_or_id).ok().map(|c| c.clone()))
    }

    async fn create(&self, request: CreateRequest<'_>) -> Result<String> {
        let mut state = self.enter(format!("create {}", request.container_name))?;
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
            return Err(RuntimeError::Api {
                action: "create".to_string(),
                detail: format!("name {} is in use", request.container_name),
            });
        }
        state.next_id += 1;
        let id = format!("{:064x}", state.next_id);
        state.containers.insert(
            id.clone(),
            ContainerInfo {
                id: id.clone(),
                name: request.container_name,
                image,
                state: "created".to_string(),
                status: "Created".to_string(),
                labels: labels_for(request.service, &request.component.name),
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        let mut state = self.enter(format!("start {id}"))?;
        let c = state.find_mut(id)?;
        c.state = "running".to_string();
        c.status = "Up".to_string();
        Ok(())
    }

    async fn stop(&self, id: &str, _timeout: Duration) -> Result<()> {
        let mut state = self.enter(format!("stop {id}"))?;
        let c = state.find_mut(id)?;
        c.state = "exited".to_string();
        c.status = "Exited (0)".to_string();
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let mut state = self.enter(format!("remove {id}"))?;
        let key = state.find_mut(id)?.id.clone();
        state.containers.remove(&key);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>> {
        let state = self.enter("list".to_string())?;
        let mut all: Vec<_> = state.containers.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }
}
