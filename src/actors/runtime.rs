//! RuntimeActor: the sole owner of the container runtime client. Calls run
//! concurrently (each answer is a future), so a slow pull of one component
//! never holds up a stop of another.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler, Message, ResponseFuture};

use crate::names::Name;
use crate::runtime::{ContainerInfo, CreateRequest, Result, Runtime};
use crate::spec::ComponentDef;

pub struct RuntimeActor {
    runtime: Arc<dyn Runtime>,
}

impl RuntimeActor {
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        RuntimeActor { runtime }
    }
}

impl Actor for RuntimeActor {
    type Context = Context<Self>;
}

/// Holds nothing but the client: a restart is a fresh start.
impl actix::Supervised for RuntimeActor {}

/// Declares a message answered by one runtime call.
macro_rules! runtime_message {
    ($(#[$doc:meta])* $msg:ident { $($field:ident : $ty:ty),* $(,)? } -> $out:ty,
     |$rt:ident, $m:ident| $body:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $msg { $(pub $field: $ty),* }
        impl Message for $msg {
            type Result = Result<$out>;
        }
        impl Handler<$msg> for RuntimeActor {
            type Result = ResponseFuture<Result<$out>>;
            fn handle(&mut self, $m: $msg, _: &mut Context<Self>) -> Self::Result {
                let $rt = self.runtime.clone();
                Box::pin(async move { $body })
            }
        }
    };
}

runtime_message!(
    /// The socket or address of the runtime, for messages.
    Endpoint {} -> String,
    |rt, _m| Ok(rt.endpoint())
);

/// The image a deploy uses, once [`EnsureImage`] made sure of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsuredImage {
    /// The id the reference names on the node now.
    pub id: String,
    /// Whether this call pulled it.
    pub pulled: bool,
}

runtime_message!(
    /// Makes sure the image is on the node, pulling as `policy` says (with
    /// `login` for its registry).
    EnsureImage {
        image: String,
        policy: crate::spec::PullPolicy,
        login: Option<crate::runtime::RegistryLogin>,
    } -> EnsuredImage,
    |rt, m| {
        use crate::spec::PullPolicy;
        let present = match m.policy {
            PullPolicy::Always => None,
            PullPolicy::Missing | PullPolicy::Never => rt.image_id(&m.image).await?,
        };
        if let Some(id) = present {
            return Ok(EnsuredImage { id, pulled: false });
        }
        if m.policy == PullPolicy::Never {
            return Err(crate::runtime::RuntimeError::Pull {
                image: m.image,
                detail: "its pull policy is never: load it on the node (podman load or \
                         podman pull), or set pull = \"missing\""
                    .to_string(),
            });
        }
        rt.pull_image(&m.image, m.login.as_ref()).await?;
        let id = rt.image_id(&m.image).await?.ok_or_else(|| crate::runtime::RuntimeError::Pull {
            image: m.image.clone(),
            detail: "the runtime finished the pull without the image".to_string(),
        })?;
        Ok(EnsuredImage { id, pulled: true })
    }
);

runtime_message!(
    /// The id `image` names on the node now; None when it is absent.
    ImageId { image: String } -> Option<String>,
    |rt, m| rt.image_id(&m.image).await
);

runtime_message!(
    ListImages {} -> Vec<crate::runtime::ImageInfo>,
    |rt, _m| rt.list_images().await
);

runtime_message!(
    RemoveImage { id: String } -> (),
    |rt, m| rt.remove_image(&m.id).await
);

runtime_message!(
    Inspect { name_or_id: String } -> Option<ContainerInfo>,
    |rt, m| rt.inspect(&m.name_or_id).await
);

runtime_message!(
    /// A container and what it runs, in a definition's terms (adopt).
    InspectSpec { name_or_id: String } -> Option<(ContainerInfo, crate::spec::RunningSpec)>,
    |rt, m| rt.inspect_spec(&m.name_or_id).await
);

runtime_message!(
    /// Creates a component's container, with the secrets it names and
    /// its routes' host ports published.
    Create {
        service: Name,
        component: ComponentDef,
        container_name: String,
        secrets: crate::secrets::ResolvedSecrets,
        routes: Vec<crate::routes::Published>,
        aliases: Vec<String>,
    } -> String,
    |rt, m| {
        rt.create(CreateRequest {
            service: &m.service,
            component: &m.component,
            container_name: m.container_name,
            secrets: &m.secrets,
            routes: &m.routes,
            aliases: &m.aliases,
        })
        .await
    }
);

runtime_message!(
    /// Makes sure a network exists (created as a bridge when missing).
    EnsureNetwork { name: String } -> crate::runtime::NetworkFacts,
    |rt, m| rt.ensure_network(&m.name).await
);

runtime_message!(
    Start { id: String } -> (),
    |rt, m| rt.start(&m.id).await
);

runtime_message!(
    Stop { id: String, timeout: Duration } -> (),
    |rt, m| rt.stop(&m.id, m.timeout).await
);

runtime_message!(
    Remove { id: String } -> (),
    |rt, m| rt.remove(&m.id).await
);

runtime_message!(
    ListContainers {} -> Vec<ContainerInfo>,
    |rt, _m| rt.list().await
);

runtime_message!(
    /// A container's output, one line per item (`Runtime::logs`): NotFound
    /// when there is no such container.
    ContainerLogs { name_or_id: String, options: crate::runtime::LogOptions }
        -> futures::stream::BoxStream<'static, Result<crate::runtime::LogChunk>>,
    |rt, m| rt.logs(&m.name_or_id, m.options).await
);

runtime_message!(
    /// The runtime's container event stream, from now on.
    SubscribeRuntimeEvents {} -> futures::stream::BoxStream<'static, Result<crate::runtime::RuntimeEvent>>,
    |rt, _m| rt.events().await
);

runtime_message!(
    /// Runs a command in a running container; its exit code.
    Exec { id: String, cmd: Vec<String> } -> i64,
    |rt, m| rt.exec(&m.id, &m.cmd).await
);

runtime_message!(
    /// Starts a command attached in a running container (`mcp exec`).
    ExecAttached { id: String, request: crate::runtime::ExecRequest } -> crate::runtime::ExecSession,
    |rt, m| rt.exec_attached(&m.id, m.request).await
);

runtime_message!(
    /// Resizes the terminal of an attached command.
    ExecResize { exec_id: String, rows: u16, cols: u16 } -> (),
    |rt, m| rt.exec_resize(&m.exec_id, m.rows, m.cols).await
);

runtime_message!(
    /// An attached command's exit code; None while it runs.
    ExecExitCode { exec_id: String } -> Option<i64>,
    |rt, m| rt.exec_exit_code(&m.exec_id).await
);

#[cfg(test)]
impl actix::Handler<crate::actors::supervisor::Crash> for RuntimeActor {
    type Result = ();
    fn handle(&mut self, _: crate::actors::supervisor::Crash, ctx: &mut actix::Context<Self>) {
        crate::actors::supervisor::panic_later(ctx);
    }
}
