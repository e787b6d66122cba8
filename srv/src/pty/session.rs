//! One conversation of a `pty` service: a command on its own terminal.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use ns::conv::{Conv, ConvReader, ConvWriter, Msg};
use ns::deploy::Restart;
use tokio::io::unix::AsyncFd;
use tokio::process::Child;
use tracing::{debug, warn};

use super::{term, Live};
use crate::restart::{self, Backoff};

/// Largest chunk of output read, and sent as one message.
const CHUNK: usize = 64 << 10;
/// After the command exits, output is read until the terminal closes, or
/// it is quiet this long (a background process may hold it open)...
const DRAIN: Duration = Duration::from_millis(500);
/// ...or this much has come since (a chatty background process). More
/// than the terminal holds, so the command's own output is never cut,
/// however long a slow reader takes to accept it.
const DRAIN_MAX: usize = 1 << 20;
/// How long a hung-up command has between SIGHUP and SIGKILL.
pub const HANGUP_GRACE: Duration = Duration::from_secs(1);
/// How often to check whether the reader of the output has hung up: the
/// conversation says so only by failing the next send, and a quiet
/// command sends nothing.
const HANGUP_POLL: Duration = Duration::from_millis(200);

/// How a session ended.
enum End {
    /// The command exited or closed its terminal.
    Exited,
    /// The conversation failed or the reader hung up, with the reason.
    HungUp(String),
}

/// Serves one conversation: starts the command, pumps keystrokes in and
/// output out, and ends the command and the conversation together; or,
/// as `restart` says, starts the command again on a new terminal after
/// it exits, telling the conversation so.
pub(super) async fn run(
    command: &[String],
    size: (u16, u16),
    restart: Restart,
    conv: Conv,
    live: Arc<Live>,
) -> anyhow::Result<()> {
    let number = conv.rx.path().conv.unwrap_or_default();
    let path = conv.rx.path().clone();
    let Conv { mut rx, tx } = conv;
    let mut backoff = Backoff::default();
    loop {
        let (master, child) = match start(command, size) {
            Ok(v) => v,
            Err(e) => {
                // Shown where the terminal is shown, as a terminal would.
                let _ = tx.send(Bytes::from(format!("pty: {}: {e}\r\n", command[0]))).await;
                tx.eof().await;
                return Err(e.into());
            }
        };
        let Some(pid) = child.id() else { anyhow::bail!("pty: child has no pid") };
        // The command is its session's and process group's leader.
        let group = Pid::from_raw(pid as i32);
        let master = Arc::new(master);
        let listed = live.add(number, master.clone(), backoff.restarts);
        debug!(conv = %path, pid, "pty started");
        let mut child = child;
        let began = tokio::time::Instant::now();
        let (end, status) = pump(&mut rx, &tx, &master, &mut child).await;
        let status = match (status, &end) {
            // The terminal closed first: the command is ending too.
            (None, End::Exited) => tokio::time::timeout(DRAIN, child.wait()).await.ok().and_then(Result::ok),
            (s, _) => s,
        };
        stop(&mut child, group).await;
        // Closing the master (its last copy is the listing's) hangs up the
        // terminal for any process left on it.
        drop(listed);
        drop(master);
        if let End::HungUp(why) = end {
            debug!(pid, %why, "pty: hung up");
            return Ok(());
        }
        let failed = !status.is_some_and(|s| s.success());
        let how = status.map_or_else(|| "ended".to_string(), |s| s.to_string());
        let wait = if restart::wanted(restart, failed) { backoff.ended(began.elapsed()) } else { None };
        let Some(wait) = wait else {
            if restart != Restart::Never {
                let line = format!("\r\npty: {} {how}; not restarted\r\n", command[0]);
                let _ = tx.send(Bytes::from(line)).await;
            }
            tx.eof().await;
            return Ok(());
        };
        warn!(conv = %path, ?command, "pty: command {how}; restart {} in {wait:?}", backoff.restarts);
        let line = format!("\r\npty: {} {how}; restart {} in {}s\r\n", command[0], backoff.restarts, wait.as_secs());
        if tx.send(Bytes::from(line)).await.is_err() {
            return Ok(());
        }
        // The reader may go meanwhile: then nothing is started again.
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = hung_up(&tx) => return Ok(()),
        }
    }
}

fn start(command: &[String], (cols, rows): (u16, u16)) -> io::Result<(AsyncFd<OwnedFd>, Child)> {
    let (master, slave) = term::open(cols, rows)?;
    // `slave` moves into the child's standard streams and our copies close
    // when spawn returns, so the master reads EIO once the command is gone.
    let child = term::spawn(command, slave)?;
    // SAFETY: an OwnedFd stays open, and the same descriptor, until the
    // AsyncFd that owns it is dropped.
    let master = unsafe { AsyncFd::register(master) }?;
    Ok((master, child))
}

/// Runs until the command ends or the conversation does.
///
/// Output is read and sent here, not in a future of its own, so that a
/// send waiting for a slow reader is never cancelled half done: the
/// command's last words are not lost however slow the pipeline.
async fn pump(
    rx: &mut ConvReader,
    tx: &ConvWriter,
    master: &AsyncFd<OwnedFd>,
    child: &mut Child,
) -> (End, Option<ExitStatus>) {
    let input = keystrokes(rx, master);
    let hangup = hung_up(tx);
    tokio::pin!(input, hangup);
    let mut input_done = false;
    let mut status = None;
    let mut drained = 0;
    let mut buf = vec![0u8; CHUNK];
    loop {
        if drained > DRAIN_MAX {
            return (End::Exited, status);
        }
        let exited = status.is_some();
        // Once the command is gone, what it wrote last may still be on its
        // way through the terminal: read on until the terminal closes, or
        // goes quiet while a background process holds it open.
        let quiet = async {
            if exited {
                tokio::time::sleep(DRAIN).await
            } else {
                std::future::pending().await
            }
        };
        let n = tokio::select! {
            r = &mut input, if !input_done => {
                input_done = true;
                match r {
                    Some(why) => return (End::HungUp(why), status),
                    None => continue,
                }
            }
            why = &mut hangup => return (End::HungUp(why), status),
            s = child.wait(), if !exited => {
                debug!(status = ?s, "pty: command exited");
                // A wait that failed says nothing of how it ended: a failure.
                status = Some(s.unwrap_or_else(|_| ExitStatus::from_raw(1 << 8)));
                continue;
            }
            () = quiet => return (End::Exited, status),
            r = read(master, &mut buf) => match r {
                Ok(0) => return (End::Exited, status),
                Ok(n) => n,
                // EIO means no process holds the terminal any more.
                Err(e) => {
                    if e.raw_os_error() != Some(libc::EIO) {
                        warn!("pty: reading the terminal: {e}");
                    }
                    return (End::Exited, status);
                }
            },
        };
        if exited {
            drained += n;
        }
        if let Err(why) = tx.send(Bytes::copy_from_slice(&buf[..n])).await {
            return (End::HungUp(why), status);
        }
    }
}

/// Writes each message to the terminal as keystrokes. Returns the error
/// when the conversation fails, `None` at end of input.
///
/// End of input is not end of the session: a keyboard has no end, and a
/// recorded session may be fed all its keystrokes at once while it still
/// runs. So nothing is typed for it (no Ctrl-D); a writer that means
/// Ctrl-D sends the byte 0x04.
async fn keystrokes(rx: &mut ConvReader, master: &AsyncFd<OwnedFd>) -> Option<String> {
    let mut open = true;
    while let Some(m) = rx.recv().await {
        match m {
            Msg::Data(b) if open => {
                if let Err(e) = write_all(master, &b).await {
                    // The terminal is closing; the output side ends the
                    // session. Keep reading so the writer is not stalled.
                    debug!("pty: keystrokes lost: {e}");
                    open = false;
                }
            }
            Msg::Data(_) => {}
            Msg::Eof => return None,
            Msg::Error(e) => return Some(e),
        }
    }
    None
}

/// Resolves when the reader of the output has hung up.
async fn hung_up(tx: &ConvWriter) -> String {
    let mut tick = tokio::time::interval(HANGUP_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(why) = tx.closed() {
            return why;
        }
    }
}

async fn read(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut ready = fd.readable().await?;
        match ready.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from)) {
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_all(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut ready = fd.writable().await?;
        match ready.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}

/// Ends what is left of the command's process group and reaps the
/// command: SIGHUP, as a closing terminal would, then SIGKILL after
/// [`HANGUP_GRACE`]. Run after the command exits too, for what it left
/// behind in its group (a background job that ignores SIGHUP, say).
///
/// The group is named by the command's pid. While the command is not yet
/// reaped, or anything is left in its group, that id cannot belong to
/// another process; only in the instant between the last member's end
/// and a signal could it be reused, which needs the pid space to wrap.
async fn stop(child: &mut Child, group: Pid) {
    let running = matches!(child.try_wait(), Ok(None));
    if !running && killpg(group, None).is_err() {
        return; // nothing left
    }
    let _ = killpg(group, Signal::SIGHUP);
    let _ = killpg(group, Signal::SIGCONT); // a stopped job must run to die
    let emptied = async {
        let _ = child.wait().await;
        while killpg(group, None).is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(HANGUP_GRACE, emptied).await.is_err() {
        debug!(%group, "pty: still running after SIGHUP, killing");
        let _ = killpg(group, Signal::SIGKILL);
    }
    if let Err(e) = child.wait().await {
        warn!(%group, "pty: reaping: {e}");
    }
}
