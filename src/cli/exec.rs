//! `mcp exec SVC/COMP [-i] [-t] -- CMD [ARGS...]`: a command in a
//! component's container, its input and output streamed both ways over one
//! gRPC call; its exit status becomes mcp's.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use rustix::termios::{self, OptionalActions, Termios};

use super::client;
use super::context::Context;
use crate::names::{Name, Target};
use crate::proto;
use crate::proto::exec_input::Input;
use crate::proto::exec_output::Output;

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// SERVICE/COMPONENT.
    pub target: Target,
    /// Send standard input to the command (its end is the command's end of file).
    #[arg(long, short)]
    pub interactive: bool,
    /// Give the command a terminal: this one in raw mode, its size followed.
    #[arg(long, short)]
    pub tty: bool,
    /// Node to ask (default: the node in the service's definition).
    #[arg(long)]
    pub node: Option<Name>,
    /// The program and its arguments, after `--`; not run through a shell.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The terminal in raw mode while it lives; put back as it was after.
struct RawTerminal(Termios);

impl RawTerminal {
    fn enter() -> Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        Ok(RawTerminal(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.0);
    }
}

fn terminal_size() -> Option<proto::TerminalSize> {
    let size = termios::tcgetwinsize(std::io::stdout()).ok()?;
    Some(proto::TerminalSize {
        rows: size.ws_row.into(),
        cols: size.ws_col.into(),
    })
}

fn input(i: Input) -> proto::ExecInput {
    proto::ExecInput { input: Some(i) }
}

/// Standard input, read on a thread of its own (a blocking read must not
/// hold up the runtime's shutdown), as Stdin messages and a last CloseStdin.
fn read_stdin(to: tokio::sync::mpsc::Sender<proto::ExecInput>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 8192];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to
                        .blocking_send(input(Input::Stdin(buf[..n].to_vec())))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = to.blocking_send(input(Input::CloseStdin(true)));
    });
}

/// The terminal's new size each time it changes.
fn follow_resizes(to: tokio::sync::mpsc::Sender<proto::ExecInput>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut changes = signal(SignalKind::window_change())?;
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            if let Some(size) = terminal_size() {
                if to.send(input(Input::Resize(size))).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(())
}

pub(super) async fn run(cx: &Context, args: ExecArgs) -> Result<ExitCode> {
    let Some(component) = args.target.component.clone() else {
        anyhow::bail!("exec needs SERVICE/COMPONENT: which component's container to run in");
    };
    if args.tty && !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        anyhow::bail!("-t needs a terminal on standard input and output: drop -t");
    }
    let node = super::lifecycle_cmd::node_of(cx, &args.target, args.node)?;
    let mut client = cx.client(&node).await?;
    let (to_agent, inputs) = tokio::sync::mpsc::channel(16);
    let start = proto::ExecStart {
        service: args.target.service.to_string(),
        component: component.to_string(),
        command: args.command,
        interactive: args.interactive,
        tty: args.tty,
        size: args.tty.then(terminal_size).flatten(),
    };
    to_agent.send(input(Input::Start(start))).await?;
    if args.interactive {
        read_stdin(to_agent.clone());
    }
    if args.tty {
        follow_resizes(to_agent.clone())?;
    }
    // Without -i the request stays open until the answer ends: an ended
    // request would read as the caller gone.
    let requests = tokio_stream::wrappers::ReceiverStream::new(inputs);
    let mut outputs = client
        .exec(requests)
        .await
        .map_err(|s| client::describe_status(&node, &s))?
        .into_inner();
    let _raw = if args.tty {
        Some(RawTerminal::enter()?)
    } else {
        None
    };
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    while let Some(message) = outputs
        .message()
        .await
        .map_err(|s| client::describe_status(&node, &s))?
    {
        match message.output {
            Some(Output::Stdout(bytes)) => {
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            Some(Output::Stderr(bytes)) => {
                stderr.write_all(&bytes)?;
                stderr.flush()?;
            }
            Some(Output::ExitCode(code)) => {
                drop(to_agent);
                // Like a shell: the low 8 bits; a code out of range is a failure.
                let code = u8::try_from(code).unwrap_or(1);
                return Ok(ExitCode::from(code));
            }
            None => {}
        }
    }
    Err(anyhow!(
        "node {node}: the exec stream ended without the command's exit status"
    ))
}
