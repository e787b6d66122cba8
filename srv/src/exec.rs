//! The `exec` service kind: one process per conversation.
//!
//! Messages to the conversation are the process's standard input; end of
//! input closes it. What the process writes to standard output goes back
//! as messages, one per chunk read. Its exit is the end of the
//! conversation. An interrupted reader at the other end (Ctrl-C on `cat
//! data`) is SIGINT to the process. When the other end hangs up, or the
//! conversation fails, the process may still finish its input (its output
//! is dropped) for [`GRACE`]; then it gets SIGHUP, and SIGKILL a grace
//! period later.
//!
//! Each process leads a process group of its own, and the signals go to
//! the group: a background child of the command (`sleep 60 &`) is part of
//! the conversation. While the conversation runs, the group is owned by a
//! [`Group`]: when its task is dropped unfinished (the router or `mesh
//! serve` stops) the whole group is killed, so that nothing is left
//! holding the output and no process waits for a reader that never ends.
//!
//! Standard output is a pseudo-terminal in raw mode, not a pipe: C stdio
//! then flushes each line, so `tr a-z A-Z` answers every line at once
//! instead of when its input ends; raw mode keeps the bytes unchanged.
//! Standard input stays a pipe, so closing it is a clean end of file.
//!
//! A conversation first takes a place among the service's live processes
//! ([`Slots`]: at most 256 alive, others wait in order up to 10 s, 1,024
//! of them at most, then `service busy`), and the process starts on the
//! blocking pool, a few at a time, never on the router's workers. Its
//! output is read through the reactor: a live process holds no thread
//! (a blocking read each used to take one of the pool's 512 threads, and
//! the 513th process waited for ever).

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use nix::sys::signal::Signal;
use ns::conv::{Conv, Msg, Service};
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tracing::{debug, warn};

use crate::slots::{Limits, Slots};

/// The process group of a conversation's process, killed when dropped
/// unless disarmed.
struct Group(Option<nix::unistd::Pid>);

impl Group {
    fn signal(&self, sig: Signal) {
        if let Some(pg) = self.0 {
            let _ = nix::sys::signal::killpg(pg, sig);
        }
    }

    /// Called before the leader is reaped: after that, its id (the
    /// group's) may name another process's group.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Largest chunk of output sent as one message.
const CHUNK: usize = 64 << 10;
/// How long a process has to exit after SIGHUP.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `command` once per conversation.
pub struct Exec {
    command: Arc<Vec<String>>,
    slots: Arc<Slots>,
}

impl Exec {
    /// `command` is the program and its arguments; it must not be empty.
    pub fn new(command: Vec<String>) -> anyhow::Result<Exec> {
        Exec::with_limits(command, Limits::default())
    }

    /// [`Exec::new`] with bounds of its own on the processes.
    pub fn with_limits(command: Vec<String>, limits: Limits) -> anyhow::Result<Exec> {
        anyhow::ensure!(!command.is_empty(), "exec: empty command");
        Ok(Exec { command: Arc::new(command), slots: Arc::new(Slots::new(limits)) })
    }
}

impl Service for Exec {
    fn serve(&self, conv: Conv) -> BoxFuture<'static, ()> {
        let (command, slots) = (self.command.clone(), self.slots.clone());
        Box::pin(async move {
            let path = conv.rx.path().clone();
            if let Err(e) = run(&command, &slots, conv).await {
                warn!(conv = %path, command = ?command, "exec: {e}");
            }
        })
    }
}

/// A pty in raw mode: (master, slave). Both close on exec from the start
/// (not openpty(3), which leaves a window): a process started meanwhile on
/// another thread must not inherit them, or this master would not read
/// EIO while that process lives. The master is non-blocking, read through
/// the reactor: a live process holds no thread.
fn raw_pty() -> nix::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::pty::posix_openpt(flags | OFlag::O_NONBLOCK)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    let slave = nix::fcntl::open(name.as_str(), flags, nix::sys::stat::Mode::empty())?;
    let mut t = nix::sys::termios::tcgetattr(&slave)?;
    nix::sys::termios::cfmakeraw(&mut t);
    nix::sys::termios::tcsetattr(&slave, nix::sys::termios::SetArg::TCSANOW, &t)?;
    Ok((OwnedFd::from(master), slave))
}

/// Starts `command` with a raw pty as standard output: (child, master).
/// Blocking: run it through [`Slots::start`].
fn spawn(command: &[String]) -> anyhow::Result<(Child, OwnedFd)> {
    let (master, slave) = raw_pty()?;
    // Our copy of the slave must close once the child has it, or reading
    // the master never ends: `cmd` owns it, and goes at the end.
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::from(slave))
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| anyhow::anyhow!("{}: {e}", command[0]))?;
    Ok((child, master))
}

/// Reads what the process wrote, at most [`CHUNK`] bytes; 0 at its end.
async fn read(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut ready = fd.readable().await?;
        match ready.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(std::io::Error::from)) {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn run(command: &Arc<Vec<String>>, slots: &Slots, conv: Conv) -> anyhow::Result<()> {
    // A place first; one refused learns why, as for a process that cannot
    // start. A caller gone meanwhile still waits its turn: what it wrote
    // before it went (`echo x > data`) is read, as it would have been at
    // once.
    let service = conv.rx.path().service.to_string();
    let _slot = match slots.enter(&service).await {
        Ok(s) => s,
        Err(why) => {
            conv.tx.send_error(&why).await;
            anyhow::bail!(why);
        }
    };
    let cmd = command.clone();
    let spawned = slots.start(move || spawn(&cmd)).await.map_err(anyhow::Error::from).and_then(|r| r);
    // SAFETY: an OwnedFd stays open, and the same descriptor, until the
    // AsyncFd that owns it is dropped.
    let spawned = spawned.and_then(|(child, master)| Ok((child, unsafe { AsyncFd::register(master) }?)));
    let (mut child, out) = match spawned {
        Ok(x) => x,
        Err(e) => {
            // The asker learns why, rather than reading an empty reply.
            conv.tx.send_error(&format!("exec: {e}")).await;
            return Err(e);
        }
    };
    let pid = child.id();
    let mut group = Group(pid.map(|p| nix::unistd::Pid::from_raw(p as i32)));
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
    // Once they cannot be delivered they are read and dropped, so that the
    // process can still finish its input.
    let output = async {
        let mut buf = vec![0u8; CHUNK];
        let mut deliver = true;
        loop {
            match read(&out, &mut buf).await {
                // EIO from a pty master means the slave side is closed.
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let chunk = Bytes::copy_from_slice(&buf[..n]);
                    if deliver && tx.send(chunk).await.is_err() {
                        deliver = false;
                    }
                }
            }
        }
    };
    tokio::pin!(input, output);
    let mut input_done = false;
    let mut cancels = rx_cancels;
    // Set once the other end is gone: the process has until then to end
    // by itself, then gets SIGHUP, and SIGKILL a grace period later.
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut hung_up = false;
    loop {
        let wait = deadline.unwrap_or_else(|| tokio::time::Instant::now() + GRACE);
        tokio::select! {
            r = &mut input, if !input_done => {
                input_done = true;
                if r.is_some() {
                    deadline.get_or_insert(tokio::time::Instant::now() + GRACE);
                }
            }
            () = &mut output => break,
            Ok(()) = cancels.changed() => group.signal(Signal::SIGINT),
            _ = tx.hung_up(), if deadline.is_none() => deadline = Some(tokio::time::Instant::now() + GRACE),
            _ = tokio::time::sleep_until(wait), if deadline.is_some() => {
                if hung_up {
                    group.signal(Signal::SIGKILL);
                    break;
                }
                debug!(?pid, "exec: other end gone, hanging up the process");
                group.signal(Signal::SIGHUP);
                hung_up = true;
                deadline = Some(tokio::time::Instant::now() + GRACE);
            }
        }
    }
    if tx.closed().is_none() {
        tx.eof().await;
    }
    // Its output is closed: wait for the process itself to end. Dropped
    // here (the router stops), the group is still killed.
    let status = child.wait().await;
    group.disarm();
    debug!(?pid, ?status, "exec exited");
    status?;
    Ok(())
}
