//! The `exec` service kind: one process per conversation.
//!
//! Messages to the conversation are the process's standard input; end of
//! input closes it. What the process writes to standard output goes back
//! as messages, one per chunk read. Its exit is the end of the
//! conversation. An interrupted reader at the other end (Ctrl-C on `cat
//! data`) is SIGINT to the process. A peer that hangs up, or a conversation
//! that fails, ends the process: SIGHUP, then SIGKILL after [`GRACE`].
//!
//! Standard output is a pseudo-terminal in raw mode, not a pipe: C stdio
//! then flushes each line, so `tr a-z A-Z` answers every line at once
//! instead of when its input ends; raw mode keeps the bytes unchanged.
//! Standard input stays a pipe, so closing it is a clean end of file.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use ns::conv::{Conv, Msg, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use nix::sys::signal::Signal;
use tracing::{debug, warn};

fn signal(pid: Option<u32>, sig: Signal) {
    if let Some(pid) = pid {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}

/// Largest chunk of output sent as one message.
const CHUNK: usize = 64 << 10;
/// How long a process has to exit after SIGHUP.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `command` once per conversation.
pub struct Exec {
    command: Arc<Vec<String>>,
}

impl Exec {
    /// `command` is the program and its arguments; it must not be empty.
    pub fn new(command: Vec<String>) -> anyhow::Result<Exec> {
        anyhow::ensure!(!command.is_empty(), "exec: empty command");
        Ok(Exec { command: Arc::new(command) })
    }
}

impl Service for Exec {
    fn serve(&self, conv: Conv) -> BoxFuture<'static, ()> {
        let command = self.command.clone();
        Box::pin(async move {
            let path = conv.rx.path().clone();
            if let Err(e) = run(&command, conv).await {
                warn!(conv = %path, command = ?command, "exec: {e}");
            }
        })
    }
}

/// A pty in raw mode: (master, slave).
fn raw_pty() -> nix::Result<(OwnedFd, OwnedFd)> {
    let pty = nix::pty::openpty(None, None)?;
    let mut t = nix::sys::termios::tcgetattr(&pty.slave)?;
    nix::sys::termios::cfmakeraw(&mut t);
    nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t)?;
    Ok((pty.master, pty.slave))
}

fn spawn(command: &[String]) -> anyhow::Result<(Child, tokio::fs::File)> {
    let (master, slave) = raw_pty()?;
    // Our copy of the slave must close once the child has it, or reading
    // the master never ends.
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::from(slave))
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| anyhow::anyhow!("{}: {e}", command[0]))?;
    nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
    Ok((child, tokio::fs::File::from_std(std::fs::File::from(master))))
}

async fn run(command: &[String], conv: Conv) -> anyhow::Result<()> {
    let (mut child, mut out) = spawn(command)?;
    let pid = child.id();
    debug!(conv = %conv.rx.path(), ?pid, "exec started");
    let Conv { mut rx, tx } = conv;
    let rx_cancels = rx.cancels();
    let mut stdin = child.stdin.take();
    // Input: messages to stdin until end of input or failure.
    let input = async {
        while let Some(m) = rx.recv().await {
            match m {
                Msg::Data(b) => {
                    let Some(w) = stdin.as_mut() else { continue };
                    if w.write_all(&b).await.is_err() {
                        // The process closed its input; keep draining so
                        // the writer is not blocked, as a pipe would not.
                        stdin = None;
                    }
                }
                Msg::Eof => {
                    stdin = None;
                }
                Msg::Error(e) => return Some(e),
            }
        }
        None
    };
    // Output: chunks to the conversation until the process closes stdout.
    let output = async {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.reserve(CHUNK);
            match out.read_buf(&mut buf).await {
                // EIO from a pty master means the slave side is closed.
                Ok(0) | Err(_) => return Ok::<(), String>(()),
                Ok(_) => {
                    let chunk: Bytes = buf.split().freeze();
                    tx.send(chunk).await?;
                }
            }
        }
    };
    tokio::pin!(input, output);
    let mut input_done = false;
    let mut cancels = rx_cancels;
    let failed = loop {
        tokio::select! {
            r = &mut input, if !input_done => {
                input_done = true;
                if let Some(e) = r { break Some(e); }
            }
            r = &mut output => break r.err(),
            Ok(()) = cancels.changed() => signal(pid, Signal::SIGINT),
        }
    };
    let status = match failed {
        Some(why) => {
            debug!(?pid, %why, "exec: conversation ended, hanging up");
            signal(pid, Signal::SIGHUP);
            match tokio::time::timeout(GRACE, child.wait()).await {
                Ok(st) => st?,
                Err(_) => {
                    let _ = child.start_kill();
                    child.wait().await?
                }
            }
        }
        None => {
            tx.eof().await;
            child.wait().await?
        }
    };
    debug!(?pid, %status, "exec exited");
    Ok(())
}
