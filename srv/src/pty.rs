//! The `pty` service kind: a command on a pseudo-terminal, once per
//! conversation.
//!
//! Messages to the conversation are keystrokes, written to the terminal
//! as they are. What the command writes to the terminal goes back along
//! the return path, one message per chunk read, unchanged (escape
//! sequences and all: a `parser` downstream makes screens of them). The
//! command's exit is the end of the conversation, unless the service's
//! `restart` key says to start it again on a new terminal (after a wait
//! that doubles each time in a row, see [`crate::restart`]; each restart
//! is told in the output and counted in the service's `status` file); a
//! conversation that fails or whose reader hangs up hangs up the terminal
//! (SIGHUP to the command's process group, SIGKILL after
//! [`HANGUP_GRACE`]).
//!
//! End of input does not end the command: a keyboard has no end of input,
//! and a recorded session may be fed all its keystrokes at once and still
//! be running. A writer that means Ctrl-D sends the byte 0x04.
//!
//! The command runs as a session leader with the terminal as its
//! controlling terminal and standard streams, `TERM=xterm-256color`, and
//! the window size given. A conversation's `ctl` takes `size COLS ROWS`
//! ([`parse_ctl`], [`PtyService::ctl`]), which reaches the running command
//! as SIGWINCH.

mod session;
mod term;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use ns::conv::{Conv, Service};
use ns::deploy::Restart;
use ns::error::{self, EBADCTL, ENOCONV};
use tokio::io::unix::AsyncFd;
use tracing::warn;

pub use session::HANGUP_GRACE;

/// The largest side of a window, as in the deployment file's `size`.
pub const MAX_SIDE: u16 = 1000;

/// A control message of a pty conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtyCtl {
    /// `size COLS ROWS`: the window size.
    Size(u16, u16),
}

/// Parses one line written to a pty conversation's `ctl`. Errors are
/// `bad ctl message: ...`.
pub fn parse_ctl(line: &str) -> Result<PtyCtl, String> {
    let mut words = line.split_whitespace();
    match words.next() {
        None => Err(error::detail(EBADCTL, "empty")),
        Some("size") => {
            let nums: Vec<&str> = words.collect();
            match nums[..] {
                [c, r] => match (side(c), side(r)) {
                    (Some(c), Some(r)) => Ok(PtyCtl::Size(c, r)),
                    _ => Err(bad_size()),
                },
                _ => Err(bad_size()),
            }
        }
        Some(verb) => Err(error::detail(EBADCTL, format!("unknown command {verb:?}; pty takes: size COLS ROWS"))),
    }
}

fn side(s: &str) -> Option<u16> {
    s.parse::<u16>().ok().filter(|&n| fits(n))
}

fn fits(side: u16) -> bool {
    (1..=MAX_SIDE).contains(&side)
}

fn bad_size() -> String {
    error::detail(EBADCTL, format!("size wants two numbers 1..{MAX_SIDE}"))
}

/// Runs `command` on a pseudo-terminal, once per conversation.
pub struct PtyService {
    command: Arc<Vec<String>>,
    size: (u16, u16),
    restart: Restart,
    live: Arc<Live>,
}

impl PtyService {
    /// `command` is the program and its arguments, not empty; `size` is
    /// the window's (columns, rows), each 1 to [`MAX_SIDE`].
    pub fn new(command: Vec<String>, size: (u16, u16)) -> anyhow::Result<PtyService> {
        anyhow::ensure!(!command.is_empty(), "pty: empty command");
        let (c, r) = size;
        anyhow::ensure!(fits(c) && fits(r), "pty: bad size {c}x{r}: each side 1 to {MAX_SIDE}");
        Ok(PtyService { command: Arc::new(command), size, restart: Restart::Never, live: Default::default() })
    }

    /// The same, its command started again as `restart` says.
    pub fn restarting(mut self, restart: Restart) -> PtyService {
        self.restart = restart;
        self
    }

    /// The `status` file: a line per conversation whose command runs,
    /// `N restarts R`.
    pub fn status(&self) -> String {
        let mut v: Vec<(u64, u32)> = lock(&self.live.0).iter().map(|(n, (_, r))| (*n, *r)).collect();
        v.sort();
        v.iter().map(|(n, r)| format!("{n} restarts {r}\n")).collect()
    }

    /// Sets the window size of conversation `conv`'s terminal; the command
    /// gets SIGWINCH.
    pub fn resize(&self, conv: u64, cols: u16, rows: u16) -> Result<(), String> {
        if !fits(cols) || !fits(rows) {
            return Err(bad_size());
        }
        let fd = self.live.get(conv).ok_or_else(|| error::detail(ENOCONV, conv))?;
        term::set_size(&*fd, cols, rows).map_err(|e| format!("pty: resize: {}", e.desc()))
    }

    /// Carries out one line written to conversation `conv`'s `ctl`.
    pub fn ctl(&self, conv: u64, line: &str) -> Result<(), String> {
        match parse_ctl(line)? {
            PtyCtl::Size(c, r) => self.resize(conv, c, r),
        }
    }

    /// The numbers of the conversations whose command runs, sorted.
    pub fn conversations(&self) -> Vec<u64> {
        let mut v: Vec<u64> = lock(&self.live.0).keys().copied().collect();
        v.sort();
        v
    }
}

impl Service for PtyService {
    fn serve(&self, conv: Conv) -> BoxFuture<'static, ()> {
        let command = self.command.clone();
        let (size, restart) = (self.size, self.restart);
        let live = self.live.clone();
        Box::pin(async move {
            let path = conv.rx.path().clone();
            if let Err(e) = session::run(&command, size, restart, conv, live).await {
                warn!(conv = %path, ?command, "pty: {e}");
            }
        })
    }
}

/// The terminals of running conversations, by conversation number, so a
/// `ctl` write can reach them, and how often each command was restarted.
#[derive(Default)]
struct Live(Mutex<HashMap<u64, (Terminal, u32)>>);

/// A running conversation's terminal, its master side.
type Terminal = Arc<AsyncFd<OwnedFd>>;

/// Takes a conversation off [`Live`] when its session ends.
struct Listed {
    live: Arc<Live>,
    conv: u64,
}

impl Live {
    fn add(self: &Arc<Self>, conv: u64, fd: Terminal, restarts: u32) -> Listed {
        lock(&self.0).insert(conv, (fd, restarts));
        Listed { live: self.clone(), conv }
    }

    fn get(&self, conv: u64) -> Option<Terminal> {
        lock(&self.0).get(&conv).map(|e| e.0.clone())
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        lock(&self.live.0).remove(&self.conv);
    }
}

/// Locks, ignoring poisoning: nothing here panics while holding the lock.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
