//! `Agent.Exec`: forwards the caller's input to a command attached in a
//! container and its output back. The ServiceActor decides whether and
//! where the command runs (`OpenExec`); this module only moves bytes.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use super::audit;
use super::server::{optional_name, target_of, AgentService};
use crate::actors::runtime::{ExecExitCode, ExecResize};
use crate::actors::service::OpenExec;
use crate::actors::AgentError;
use crate::names::Name;
use crate::proto;
use crate::proto::exec_input::Input;
use crate::proto::exec_output::Output;
use crate::runtime::{ExecOutput, ExecRequest, ExecSession};

pub type ExecStream = Pin<Box<dyn Stream<Item = Result<proto::ExecOutput, Status>> + Send>>;

/// How long the runtime may take to report the exit code of a command whose
/// output has ended.
const EXIT_CODE_WAIT: Duration = Duration::from_secs(10);

fn size_of(size: &proto::TerminalSize) -> (u16, u16) {
    let clamp = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
    (clamp(size.rows), clamp(size.cols))
}

impl AgentService {
    pub(super) async fn exec_stream(
        &self,
        request: Request<Streaming<proto::ExecInput>>,
    ) -> Result<Response<ExecStream>, Status> {
        let by = audit::caller(&request);
        let mut inputs = request.into_inner();
        let start = match inputs.message().await?.and_then(|m| m.input) {
            Some(Input::Start(start)) => start,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of an exec names the command (ExecStart)",
                ))
            }
        };
        let target = target_of(&start.service, &start.component);
        let opened = self.open_exec(&start, &by).await;
        let session = opened.inspect_err(|status| audit::refused("Exec", &target, &by, status))?;
        let runtime = self.handles.peers.runtime.clone();
        if let Some((rows, cols)) = start.size.as_ref().filter(|_| start.tty).map(size_of) {
            let resize = ExecResize {
                exec_id: session.id.clone(),
                rows,
                cols,
            };
            // The command runs either way, in the runtime's default size.
            if let Err(e) = runtime.send(resize).await.map_err(AgentError::from) {
                tracing::debug!("exec resize: {e}");
            }
        }
        let (out, answers) = tokio::sync::mpsc::channel(64);
        let ExecSession { id, output, input } = session;
        tokio::spawn(forward_input(inputs, input, runtime.clone(), id.clone()));
        tokio::spawn(async move {
            let code = forward_output(output, &out, &runtime, &id).await;
            let done: Result<i32, Status> = code.clone();
            audit::record("Exec", &target, &by, &done, |c| format!("exit {c}"));
            let last = code.map(|c| proto::ExecOutput {
                output: Some(Output::ExitCode(c)),
            });
            let _ = out.send(last).await;
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(answers);
        Ok(Response::new(stream.boxed()))
    }

    async fn open_exec(&self, start: &proto::ExecStart, by: &str) -> Result<ExecSession, Status> {
        let service = Name::parse(&start.service)
            .map_err(|e| Status::invalid_argument(format!("service: {e}")))?;
        let component = optional_name(&start.component)?
            .ok_or_else(|| Status::invalid_argument("exec needs SERVICE/COMPONENT"))?;
        if start.command.is_empty() || start.command[0].is_empty() {
            return Err(Status::invalid_argument("exec needs a command"));
        }
        let addr = self.service_actor(service).await?;
        let open = OpenExec {
            component,
            request: ExecRequest {
                cmd: start.command.clone(),
                stdin: start.interactive,
                tty: start.tty,
            },
            by: by.to_string(),
        };
        Ok(addr.send(open).await.map_err(AgentError::from)??)
    }
}

/// The caller's input to the command, until the caller closes it or goes.
async fn forward_input(
    mut inputs: Streaming<proto::ExecInput>,
    mut stdin: Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    runtime: actix::Addr<crate::actors::runtime::RuntimeActor>,
    exec_id: String,
) {
    while let Ok(Some(message)) = inputs.message().await {
        match message.input {
            Some(Input::Stdin(bytes)) => {
                let written = async {
                    stdin.write_all(&bytes).await?;
                    stdin.flush().await
                };
                if written.await.is_err() {
                    break;
                }
            }
            Some(Input::Resize(size)) => {
                let (rows, cols) = size_of(&size);
                let resize = ExecResize {
                    exec_id: exec_id.clone(),
                    rows,
                    cols,
                };
                let _ = runtime.send(resize).await;
            }
            Some(Input::CloseStdin(true)) => break,
            _ => {}
        }
    }
    let _ = stdin.shutdown().await;
}

/// The command's output to the caller; then its exit code.
async fn forward_output(
    mut output: futures::stream::BoxStream<'static, crate::runtime::Result<ExecOutput>>,
    out: &tokio::sync::mpsc::Sender<Result<proto::ExecOutput, Status>>,
    runtime: &actix::Addr<crate::actors::runtime::RuntimeActor>,
    exec_id: &str,
) -> Result<i32, Status> {
    while let Some(chunk) = output.next().await {
        let message = match chunk.map_err(|e| Status::from(AgentError::from(e)))? {
            ExecOutput::Stdout(bytes) => Output::Stdout(bytes.to_vec()),
            ExecOutput::Stderr(bytes) => Output::Stderr(bytes.to_vec()),
        };
        let sent = out
            .send(Ok(proto::ExecOutput {
                output: Some(message),
            }))
            .await;
        if sent.is_err() {
            return Err(Status::cancelled("the caller went away"));
        }
    }
    // The output ends when the command exits; the runtime may record its
    // exit code a moment later.
    let deadline = tokio::time::Instant::now() + EXIT_CODE_WAIT;
    let mut pause = Duration::from_millis(10);
    loop {
        let asked = ExecExitCode {
            exec_id: exec_id.to_string(),
        };
        let code = runtime.send(asked).await.map_err(AgentError::from)?;
        if let Some(code) = code.map_err(AgentError::from)? {
            return Ok(i32::try_from(code).unwrap_or(-1));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Status::unknown(
                "the command's output ended but the runtime did not report its exit status",
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}
