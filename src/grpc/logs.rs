//! The `mcp.v1.Logs` service (proto/mcp/v1/logs.proto): the output of a
//! service's containers, streamed. Which containers comes from the registry
//! (RegistryActor `GetServiceState`); the lines from the runtime (RuntimeActor
//! `ContainerLogs`). Several components are merged: in time order when the
//! streams end, in arrival order when following. A follower goes on across
//! a component's containers (restart, redeploy).

use std::pin::Pin;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::actors::registry::GetServiceState;
use crate::actors::runtime::ContainerLogs;
use crate::actors::{AgentError, AgentHandles};
use crate::names::{container_name, Name};
use crate::proto;
use crate::proto::logs_server::Logs;
use crate::registry::{now_ms, ComponentState};
use crate::runtime::{LogChunk, LogOptions, RuntimeError};

type LineStream = BoxStream<'static, Result<proto::LogLine, Status>>;

pub struct LogsService {
    handles: AgentHandles,
}

impl LogsService {
    pub fn new(handles: AgentHandles) -> Self {
        LogsService { handles }
    }
}

/// The line stream of one component's container: the registry's container
/// id, else the container named `<service>-<component>`. None when neither
/// exists.
async fn open_container(
    handles: &AgentHandles,
    service: &Name,
    row: &ComponentState,
    options: &LogOptions,
) -> Result<Option<LineStream>, Status> {
    let mut candidates: Vec<String> = row.container_id.iter().cloned().collect();
    if let Ok(component) = Name::parse(&row.name) {
        candidates.push(container_name(service, &component));
    }
    for candidate in candidates {
        let answer = handles
            .peers
            .runtime
            .send(ContainerLogs {
                name_or_id: candidate,
                options: options.clone(),
            })
            .await
            .map_err(AgentError::from)?;
        match answer {
            Ok(stream) => {
                let component = row.name.clone();
                return Ok(Some(
                    stream.map(move |item| to_wire(&component, item)).boxed(),
                ));
            }
            Err(RuntimeError::NotFound { .. }) => continue,
            Err(e) => return Err(AgentError::from(e).into()),
        }
    }
    Ok(None)
}

/// How often a follower whose container's stream ended looks for the
/// component running again.
const REATTACH_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// With `--follow`, one component's lines across its containers, as
/// `docker compose logs -f` does: when the container's stream ends (it
/// exited, or a deploy replaced it), wait until the registry says the
/// component runs again and go on from there: a new container from its first
/// line, the same container restarted from the moment its stream ended (the
/// runtime's `since` counts whole seconds, so lines of that second may come
/// twice). Ends when the component leaves the registry, or when the client
/// goes away (the stream is dropped).
fn follow_across_containers(
    handles: AgentHandles,
    service: Name,
    row: &ComponentState,
    first: LineStream,
) -> LineStream {
    struct Follow {
        handles: AgentHandles,
        service: Name,
        component: String,
        current: Option<LineStream>,
        /// When the current stream ended.
        ended_ms: i64,
        /// (container, observed at) when the current stream was opened: the
        /// component must have changed since to be worth opening again.
        opened_for: (Option<String>, Option<i64>),
    }
    let state = Follow {
        handles,
        service,
        component: row.name.clone(),
        current: Some(first),
        ended_ms: 0,
        opened_for: (row.container_id.clone(), row.observed_at_ms),
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(current) = st.current.as_mut() {
                match current.next().await {
                    Some(item) => return Some((item, st)),
                    None => {
                        st.current = None;
                        st.ended_ms = now_ms();
                    }
                }
            }
            tokio::time::sleep(REATTACH_POLL).await;
            let rows = st
                .handles
                .peers
                .registry
                .send(GetServiceState {
                    name: st.service.to_string(),
                })
                .await;
            let row = match rows {
                Ok(Ok(service)) => {
                    match service
                        .and_then(|s| s.components.into_iter().find(|c| c.name == st.component))
                    {
                        Some(row) => row,
                        None => return None,
                    }
                }
                // The registry is busy or stopping: ask again.
                _ => continue,
            };
            let now_for = (row.container_id.clone(), row.observed_at_ms);
            if row.observed_state != "running" || now_for == st.opened_for {
                continue;
            }
            let same_container = row.container_id.is_some() && row.container_id == st.opened_for.0;
            let options = LogOptions {
                follow: true,
                since_ms: same_container.then_some(st.ended_ms),
                tail: None,
            };
            match open_container(&st.handles, &st.service, &row, &options).await {
                Ok(Some(stream)) => {
                    st.opened_for = now_for;
                    st.current = Some(stream);
                }
                // Gone again already, or the runtime is away: keep waiting.
                Ok(None) | Err(_) => continue,
            }
        }
    })
    .boxed()
}

fn to_wire(
    component: &str,
    item: crate::runtime::Result<LogChunk>,
) -> Result<proto::LogLine, Status> {
    match item {
        Ok(chunk) => Ok(proto::LogLine {
            component: component.to_string(),
            stream: chunk.stream.as_str().to_string(),
            line: chunk.line,
            ts_ms: chunk.ts_ms.unwrap_or(0),
        }),
        Err(e) => Err(Status::unavailable(format!("logs of {component}: {e}"))),
    }
}

/// Merges streams that end, oldest line first (ties: the earlier stream's
/// line first). Lines without a time sort as they come.
fn merge_by_time(streams: Vec<LineStream>) -> LineStream {
    struct Head {
        stream: LineStream,
        next: Option<Result<proto::LogLine, Status>>,
        ended: bool,
    }
    let heads: Vec<Head> = streams
        .into_iter()
        .map(|stream| Head {
            stream,
            next: None,
            ended: false,
        })
        .collect();
    futures::stream::unfold(heads, |mut heads| async move {
        for head in heads.iter_mut() {
            if head.next.is_none() && !head.ended {
                head.next = head.stream.next().await;
                head.ended = head.next.is_none();
            }
        }
        // An error goes out first; otherwise the oldest line.
        let pick = heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| match &h.next {
                Some(Err(_)) => Some((i64::MIN, i)),
                Some(Ok(line)) => Some((line.ts_ms, i)),
                None => None,
            })
            .min()?
            .1;
        let item = heads[pick].next.take()?;
        Some((item, heads))
    })
    .boxed()
}

#[tonic::async_trait]
impl Logs for LogsService {
    type StreamStream = Pin<Box<dyn Stream<Item = Result<proto::LogLine, Status>> + Send>>;

    async fn stream(
        &self,
        request: Request<proto::LogsRequest>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let request = request.into_inner();
        let service = Name::parse(&request.service)
            .map_err(|e| Status::invalid_argument(format!("service: {e}")))?;
        let component = (!request.component.is_empty())
            .then(|| Name::parse(&request.component))
            .transpose()
            .map_err(|e| Status::invalid_argument(format!("component: {e}")))?;
        let node = &self.handles.peers.settings.node;
        let row = self
            .handles
            .peers
            .registry
            .send(GetServiceState {
                name: service.to_string(),
            })
            .await
            .map_err(AgentError::from)?
            .map_err(AgentError::from)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "service {service} is not known on node {node} (`mcp list` shows what is; \
                     `mcp deploy {service}` deploys it)"
                ))
            })?;
        let known: Vec<&str> = row.components.iter().map(|c| c.name.as_str()).collect();
        let rows: Vec<&ComponentState> = match &component {
            Some(c) => vec![row
                .components
                .iter()
                .find(|r| r.name == c.as_str())
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "service {service} on node {node} has no component {c} (components: {})",
                        known.join(", ")
                    ))
                })?],
            None => row.components.iter().collect(),
        };
        let options = LogOptions {
            follow: request.follow,
            since_ms: request.since_secs.map(|s| {
                now_ms().saturating_sub(s.saturating_mul(1000).min(i64::MAX as u64) as i64)
            }),
            tail: request.tail,
        };
        let mut streams = Vec::new();
        let mut missing = Vec::new();
        for r in &rows {
            match open_container(&self.handles, &service, r, &options).await? {
                Some(stream) if request.follow => streams.push(follow_across_containers(
                    self.handles.clone(),
                    service.clone(),
                    r,
                    stream,
                )),
                Some(stream) => streams.push(stream),
                None => missing.push(format!("{service}/{} ({})", r.name, r.observed_state)),
            }
        }
        if !missing.is_empty() {
            tracing::info!(service = %service, "logs: no container for {}", missing.join(", "));
        }
        if streams.is_empty() {
            let what = match &component {
                Some(c) => format!("{service}/{c}"),
                None => format!("service {service}"),
            };
            return Err(Status::not_found(format!(
                "{what} has no container on node {node}: {} (`mcp start {what}` re-creates a \
                 deployed component's container)",
                if missing.is_empty() {
                    "it has no components".to_string()
                } else {
                    format!("observed {}", missing.join(", "))
                },
            )));
        }
        let merged = if request.follow {
            super::until_shutdown(
                futures::stream::select_all(streams).boxed(),
                self.handles.shutdown.clone(),
            )
        } else {
            merge_by_time(streams)
        };
        Ok(Response::new(merged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(component: &str, ts_ms: i64) -> Result<proto::LogLine, Status> {
        Ok(proto::LogLine {
            component: component.to_string(),
            stream: "stdout".to_string(),
            line: format!("{component}@{ts_ms}"),
            ts_ms,
        })
    }

    #[tokio::test]
    async fn merged_in_time_order() {
        let a = futures::stream::iter(vec![line("a", 1), line("a", 3), line("a", 3)]).boxed();
        let b = futures::stream::iter(vec![line("b", 2), line("b", 3), line("b", 9)]).boxed();
        let c = futures::stream::iter(Vec::new()).boxed();
        let got: Vec<String> = merge_by_time(vec![a, b, c])
            .map(|l| l.unwrap().line)
            .collect()
            .await;
        assert_eq!(got, ["a@1", "b@2", "a@3", "a@3", "b@3", "b@9"]);
    }

    /// The actor tree over a fake runtime, with `svc` (components api, web
    /// and idle) in the registry, containers svc-api and svc-web, and the
    /// container `legacy` adopted as svc/old.
    struct Setup {
        _dir: tempfile::TempDir,
        fake: std::sync::Arc<crate::runtime::fake::FakeRuntime>,
        service: LogsService,
    }

    fn setup() -> Setup {
        use crate::actors::watch::WatchSettings;
        use crate::actors::AgentSettings;
        use crate::registry::{DesiredState, Registry};
        use crate::runtime::fake::FakeRuntime;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("mcp.db");
        let mut registry = Registry::open(&db).unwrap();
        let def = crate::spec::parse_service(
            std::path::Path::new("svc.toml"),
            "name = \"svc\"\nnode = \"n1\"\nactive = true\n\
             [[components]]\nname = \"api\"\nimage = \"api:1\"\n\
             [[components]]\nname = \"web\"\nimage = \"web:1\"\n\
             [[components]]\nname = \"idle\"\nimage = \"idle:1\"\n",
        )
        .unwrap();
        registry
            .push_definition(&def, None, DesiredState::Running)
            .unwrap();
        let fake = std::sync::Arc::new(FakeRuntime::default());
        fake.insert_unmanaged("svc-api", "api:1");
        fake.insert_unmanaged("svc-web", "web:1");
        let legacy = fake.insert_unmanaged("legacy", "old:1");
        let old: crate::spec::ComponentDef =
            toml::from_str("name = \"old\"\nimage = \"old:1\"\n").unwrap();
        registry
            .adopt(
                &crate::registry::AdoptedContainer {
                    id: legacy,
                    name: "legacy".to_string(),
                    observed_state: "running".to_string(),
                },
                &Name::parse("svc").unwrap(),
                &old,
            )
            .unwrap();
        let handles = crate::actors::start(
            registry,
            db,
            fake.clone(),
            AgentSettings {
                node: "n1".into(),
                stop_timeout: std::time::Duration::from_millis(10),
                watch: WatchSettings {
                    scan_interval: std::time::Duration::from_secs(3600),
                    ..Default::default()
                },
                policy: Default::default(),
                recovery: crate::actors::recovery::RecoverySettings::off(),
                registries: Default::default(),
                secrets: Default::default(),
                routes: Default::default(),
                create_networks: true,
            },
            Default::default(),
        );
        Setup {
            _dir: dir,
            fake,
            service: LogsService::new(handles),
        }
    }

    fn request(target: &str, follow: bool, tail: Option<u32>) -> Request<proto::LogsRequest> {
        let (service, component) = target.split_once('/').unwrap_or((target, ""));
        Request::new(proto::LogsRequest {
            service: service.to_string(),
            component: component.to_string(),
            follow,
            since_secs: None,
            tail,
        })
    }

    async fn lines(s: &Setup, target: &str, tail: Option<u32>) -> Vec<(String, String)> {
        s.service
            .stream(request(target, false, tail))
            .await
            .unwrap()
            .into_inner()
            .map(|l| {
                let l = l.unwrap();
                (l.component, l.line)
            })
            .collect()
            .await
    }

    fn write(s: &Setup, container: &str, line: &str) {
        s.fake
            .write_log(container, crate::runtime::LogStream::Stdout, line);
        // Distinct times, so the merge's order is the writing order.
        std::thread::sleep(std::time::Duration::from_millis(3));
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(c, l)| (c.to_string(), l.to_string()))
            .collect()
    }

    #[actix::test]
    async fn one_component_or_all_merged() {
        let s = setup();
        for i in 1..=4 {
            write(&s, "svc-api", &format!("api {i}"));
            write(&s, "svc-web", &format!("web {i}"));
        }
        write(&s, "legacy", "old 1");
        assert_eq!(
            lines(&s, "svc/api", Some(2)).await,
            pairs(&[("api", "api 3"), ("api", "api 4")])
        );
        assert_eq!(
            lines(&s, "svc/old", None).await,
            pairs(&[("old", "old 1")]),
            "an adopted component's container is found by its id"
        );
        let all = lines(&s, "svc", Some(1)).await;
        assert_eq!(
            all,
            pairs(&[("api", "api 4"), ("web", "web 4"), ("old", "old 1")])
        );
        let all = lines(&s, "svc", None).await;
        let order: Vec<&str> = all.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            order,
            ["api 1", "web 1", "api 2", "web 2", "api 3", "web 3", "api 4", "web 4", "old 1"]
        );
    }

    #[actix::test]
    async fn follow_streams_new_lines() {
        let s = setup();
        write(&s, "svc-web", "before");
        let mut stream = s
            .service
            .stream(request("svc/web", true, Some(0)))
            .await
            .unwrap()
            .into_inner();
        write(&s, "svc-api", "not this one");
        write(&s, "svc-web", "after");
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
            .await
            .expect("a new line within 5s")
            .unwrap()
            .unwrap();
        assert_eq!(
            (next.component.as_str(), next.line.as_str()),
            ("web", "after")
        );
        assert_eq!(next.stream, "stdout");
        assert!(next.ts_ms > 0);
    }

    #[actix::test]
    async fn unknown_or_absent_is_not_found() {
        let s = setup();
        let status = |target: &'static str| {
            let service = &s.service;
            async move {
                match service.stream(request(target, false, None)).await {
                    Ok(_) => panic!("{target}: a stream"),
                    Err(status) => status,
                }
            }
        };
        let e = status("svc/nope").await;
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(
            e.message()
                .contains("service svc on node n1 has no component nope (components: "),
            "{}",
            e.message()
        );
        let e = status("nosuch").await;
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(
            e.message()
                .contains("service nosuch is not known on node n1"),
            "{}",
            e.message()
        );
        let e = status("svc/idle").await;
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(
            e.message().contains("svc/idle has no container on node n1"),
            "{}",
            e.message()
        );
        let e = status("Bad_Name").await;
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn errors_are_not_held_back() {
        let a = futures::stream::iter(vec![line("a", 5)]).boxed();
        let b = futures::stream::iter(vec![Err(Status::unavailable("gone"))]).boxed();
        let got: Vec<_> = merge_by_time(vec![a, b]).collect().await;
        assert!(got[0].is_err());
        assert_eq!(got[1].as_ref().unwrap().line, "a@5");
        assert_eq!(got.len(), 2);
    }
}
