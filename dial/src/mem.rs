//! `mem!NAME`: in-process links.
//!
//! A process-global registry maps names to listeners. Dialing makes a
//! `tokio::io::duplex` pair, hands one end to the listener through a bounded
//! channel and frames both ends with [`framed`], so mem links behave like
//! the byte-stream transports (same framing, same limits) without sockets.
//! Nothing here uses timers, so it works under tokio's paused clock.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use crate::link::{framed, Link, LinkOptions};

/// Bytes buffered in each direction of a mem connection.
const DUPLEX_BUFFER: usize = 256 << 10;

/// Connections a mem listener queues before dialers wait: the analogue of
/// a socket's listen backlog.
const BACKLOG: usize = 64;

/// A connection on its way to a listener.
struct Pending {
    stream: DuplexStream,
    /// Number of the connection, to tell connections apart in logs.
    id: u64,
}

struct Entry {
    /// Which listener registered the name, so a late drop cannot remove
    /// a successor's registration.
    listener_id: u64,
    tx: mpsc::Sender<Pending>,
}

fn registry() -> MutexGuard<'static, HashMap<String, Entry>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Entry>>> = OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        // The map stays consistent even if a holder panicked: every
        // critical section is a single insert, get or remove.
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A registered mem name. Dropping it unregisters the name.
#[derive(Debug)]
pub(crate) struct MemListener {
    name: String,
    listener_id: u64,
    rx: mpsc::Receiver<Pending>,
    opts: LinkOptions,
}

pub(crate) fn listen(name: &str, opts: &LinkOptions) -> io::Result<MemListener> {
    let mut reg = registry();
    if reg.contains_key(name) {
        return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("mem!{name}: already listening")));
    }
    let (tx, rx) = mpsc::channel(BACKLOG);
    let listener_id = next_id();
    reg.insert(name.to_owned(), Entry { listener_id, tx });
    Ok(MemListener { name: name.to_owned(), listener_id, rx, opts: opts.clone() })
}

pub(crate) async fn dial(name: &str, opts: &LinkOptions) -> io::Result<Link> {
    let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, format!("mem!{name}: nobody listening"));
    // Clone the sender so the registry lock is not held across the await.
    let tx = registry().get(name).map(|e| e.tx.clone()).ok_or_else(refused)?;
    let (ours, theirs) = tokio::io::duplex(DUPLEX_BUFFER);
    let id = next_id();
    // Waits while the backlog is full, like connect(2) on a busy socket; fails
    // if the listener went away meanwhile.
    tx.send(Pending { stream: theirs, id }).await.map_err(|_| refused())?;
    let (tx, rx) = framed(ours, opts);
    Ok(Link { tx, rx, remote: format!("mem!{name}"), local: format!("mem!{name}#{id}"), uid: None, gate: None })
}

impl MemListener {
    pub(crate) async fn accept(&mut self) -> io::Result<Link> {
        // The sender lives in the registry until we drop, so `None` cannot
        // happen while `self` exists; report it rather than assume it.
        let Some(Pending { stream, id }) = self.rx.recv().await else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("mem!{}: listener unregistered", self.name),
            ));
        };
        let (tx, rx) = framed(stream, &self.opts);
        Ok(Link {
            tx,
            rx,
            remote: format!("mem!{}#{id}", self.name),
            local: format!("mem!{}", self.name),
            uid: None,
            gate: None,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for MemListener {
    fn drop(&mut self) {
        let mut reg = registry();
        if reg.get(&self.name).is_some_and(|e| e.listener_id == self.listener_id) {
            reg.remove(&self.name);
        }
    }
}
