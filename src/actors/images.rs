//! ImagePruner (`[images] prune = true`): removes the images MCP ran that
//! nothing refers to any more: no component's container, and no deployed,
//! pending or rollback spec (through the image its reference names on the
//! node now). It runs at start and on an interval; each removal is an
//! `image-pruned` event by mcp-agent with the reason. Images MCP never ran
//! are never touched, nor an image any container uses (the runtime refuses).

use std::collections::BTreeSet;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, WrapFuture};

use super::registry::{ImagePruned, ImageReferences, RegistryActor};
use super::runtime::{ImageId, ListContainers, RemoveImage, RuntimeActor};
use super::{AgentError, Peers};
use crate::runtime::RuntimeError;

pub struct ImagePruner {
    registry: Addr<RegistryActor>,
    runtime: Addr<RuntimeActor>,
    interval: Duration,
    running: bool,
}

/// Starts the pruner under supervision (only when `[images] prune` is on).
pub fn start(peers: &Peers, interval: Duration) -> Addr<ImagePruner> {
    peers.supervise(
        "ImagePruner",
        ImagePruner {
            registry: peers.registry.clone(),
            runtime: peers.runtime.clone(),
            interval,
            running: false,
        },
    )
}

/// One pass: what it removed, as (image id, event detail).
pub async fn prune_once(
    registry: &Addr<RegistryActor>,
    runtime: &Addr<RuntimeActor>,
) -> Result<Vec<(String, String)>, AgentError> {
    let refs = registry.send(ImageReferences {}).await??;
    let mut keep: BTreeSet<String> = refs.ids_in_use.clone();
    for reference in &refs.references {
        if let Some(id) = runtime
            .send(ImageId {
                image: reference.clone(),
            })
            .await??
        {
            keep.insert(id);
        }
    }
    for c in runtime.send(ListContainers {}).await?? {
        keep.insert(c.image_id);
    }
    let mut removed = Vec::new();
    for (id, reference) in refs.used.into_iter().filter(|(id, _)| !keep.contains(id)) {
        let short = id.strip_prefix("sha256:").unwrap_or(&id);
        let short = &short[..short.len().min(12)];
        let detail = match runtime.send(RemoveImage { id: id.clone() }).await? {
            Ok(()) => format!(
                "removed image {short} (deployed as {reference}): no container, deployed spec \
                 or rollback history refers to it ([images] prune)"
            ),
            // Removed by someone else: forget it, no event.
            Err(RuntimeError::NotFound { .. }) => {
                registry
                    .send(super::registry::ForgetImage { image_id: id })
                    .await??;
                continue;
            }
            Err(e) => {
                tracing::warn!("cannot prune image {short} ({reference}): {e}");
                continue;
            }
        };
        registry
            .send(ImagePruned {
                image_id: id.clone(),
                detail: detail.clone(),
            })
            .await??;
        removed.push((id, detail));
    }
    Ok(removed)
}

impl ImagePruner {
    fn prune(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        self.running = true;
        let (registry, runtime) = (self.registry.clone(), self.runtime.clone());
        let run = async move {
            match prune_once(&registry, &runtime).await {
                Ok(removed) => {
                    for (_, detail) in removed {
                        tracing::info!("{detail}");
                    }
                }
                Err(e) => tracing::warn!("cannot prune images: {e}"),
            }
        };
        ctx.spawn(run.into_actor(self).map(|(), act, _| act.running = false));
    }
}

impl Actor for ImagePruner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.prune(ctx);
        ctx.run_interval(self.interval, |act, ctx| act.prune(ctx));
    }
}

impl actix::Supervised for ImagePruner {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::registry::DeleteService;
    use crate::actors::tests::{harness, svc_def};
    use crate::runtime::fake::{fake_image_id, FakeRuntime};

    /// Only an image MCP ran that nothing refers to any more goes: not one
    /// a rollback could return to, not one a container uses, not one MCP
    /// never ran.
    #[actix_rt::test]
    async fn only_unreferenced_images_mcp_ran_are_pruned() {
        let h = harness(FakeRuntime::with_images(&[
            "a:1", "a:2", "web:1", "theirs:1",
        ]));
        h.deploy(svc_def(true, "a:1", "web:1"), None).await.unwrap();
        h.deploy(svc_def(true, "a:2", "web:1"), None).await.unwrap();
        let peers = &h.handles.peers;
        // a:1 is what a rollback returns to.
        let removed = prune_once(&peers.registry, &peers.runtime).await.unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        // Forgotten by the registry: no spec refers to a:1 any more, and
        // no container runs it; a:2 and web:1 still run.
        peers
            .registry
            .send(DeleteService { name: "svc".into() })
            .await
            .unwrap()
            .unwrap();
        let removed = prune_once(&peers.registry, &peers.runtime).await.unwrap();
        let ids: Vec<&str> = removed.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, [fake_image_id("a:1").as_str()]);
        assert!(removed[0].1.contains("deployed as a:1"), "{removed:?}");
        let left = h.fake.image_refs();
        assert_eq!(left, ["a:2", "theirs:1", "web:1"]);
    }
}
