//! Open files: what a file descriptor on the tree holds.
//!
//! A stream over a conversation reads one message per read (a longer
//! message over several reads, in order) and writes one message per
//! write. A pump task moves messages from the conversation into a
//! one-message buffer, so `poll` can tell readiness without consuming and
//! can wake the kernel when a message arrives.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ns::conv::{Conv, ConvWriter, Msg};
use tokio::sync::{broadcast, mpsc};

/// Whether the directory of an open file of a served directory is watched
/// for its opener: then what the file says of itself may be kept (see
/// `dir::watch`), as what a look at its name says. A file opened before
/// its opener's conversation of changes was up (the first open after a
/// mount) is watched at a later look at it, once it can be.
pub struct Told {
    watched: AtomicBool,
    /// Where it was opened, and for whom, to watch it later.
    at: Option<(Arc<super::dir::Root>, Vec<String>, super::dir::watch::Asker)>,
}

impl Told {
    /// Watched from the start, or never to be (`at` is `None`).
    pub fn new(watched: bool, at: Option<(Arc<super::dir::Root>, Vec<String>, super::dir::watch::Asker)>) -> Told {
        Told { watched: AtomicBool::new(watched), at }
    }

    /// Whether it is watched, watching it now if it can be. Blocks (file
    /// system calls): for the blocking pool.
    pub fn check(&self, w: &super::dir::watch::Watcher) -> bool {
        if self.watched.load(SeqCst) {
            return true;
        }
        let now = self.at.as_ref().is_some_and(|(root, rel, who)| root.watch_parent(rel, w, who));
        if now {
            self.watched.store(true, SeqCst);
        }
        now
    }
}

/// Something that can wake a poller: the kernel's poll handle.
pub type Waker = Box<dyn Fn(u64) + Send + Sync>;

/// The poll handle waiting on a stream, if any, and how to wake it.
type Poller = Mutex<Option<(u64, Arc<Waker>)>>;

/// A stream of messages over a conversation.
pub struct Stream {
    reader: tokio::sync::Mutex<Reader>,
    writer: ConvWriter,
    /// A poll handle to wake when a message arrives, and how.
    poller: Arc<Poller>,
}

struct Reader {
    q: mpsc::Receiver<Msg>,
    partial: Bytes,
    ended: bool,
}

impl Stream {
    /// Starts pumping the conversation's input.
    pub fn new(conv: Conv) -> Arc<Stream> {
        let Conv { mut rx, tx } = conv;
        let (q_tx, q) = mpsc::channel(1);
        let poller: Arc<Poller> = Default::default();
        let p = poller.clone();
        tokio::spawn(async move {
            loop {
                // Ends with the stream too, so the conversation hangs up.
                let m = tokio::select! {
                    m = rx.recv() => m,
                    _ = q_tx.closed() => return,
                };
                let Some(m) = m else { break };
                if q_tx.send(m).await.is_err() {
                    return;
                }
                wake(&p);
            }
            drop(q_tx);
            wake(&p);
        });
        Arc::new(Stream {
            reader: tokio::sync::Mutex::new(Reader { q, partial: Bytes::new(), ended: false }),
            writer: tx,
            poller,
        })
    }

    /// The next message, or its next part; empty at the end.
    pub async fn read(&self, size: usize) -> Result<Bytes, String> {
        let mut r = self.reader.lock().await;
        if !r.partial.is_empty() {
            let n = size.min(r.partial.len());
            return Ok(r.partial.split_to(n));
        }
        if r.ended {
            return Ok(Bytes::new());
        }
        match r.q.recv().await {
            Some(Msg::Data(mut b)) => {
                if b.len() > size {
                    r.partial = b.split_off(size);
                }
                Ok(b)
            }
            Some(Msg::Error(e)) => {
                r.ended = true;
                Err(e)
            }
            Some(Msg::Eof) | None => {
                r.ended = true;
                Ok(Bytes::new())
            }
        }
    }

    /// Sends one message.
    pub async fn write(&self, data: &[u8]) -> Result<usize, String> {
        self.writer.send(Bytes::copy_from_slice(data)).await?;
        Ok(data.len())
    }

    /// Whether a read would not block; remembers `kh` to wake if not.
    pub fn poll(&self, kh: Option<u64>, waker: Arc<Waker>) -> bool {
        let ready = match self.reader.try_lock() {
            Ok(r) => !r.partial.is_empty() || r.ended || !r.q.is_empty() || r.q.is_closed(),
            Err(_) => false,
        };
        if !ready {
            if let Some(kh) = kh {
                *self.poller.lock().unwrap_or_else(|e| e.into_inner()) = Some((kh, waker));
            }
        }
        ready
    }

    pub fn writer(&self) -> &ConvWriter {
        &self.writer
    }
}

fn wake(p: &Poller) {
    if let Some((kh, w)) = p.lock().unwrap_or_else(|e| e.into_inner()).take() {
        w(kh);
    }
}

/// A conversation opened through `clone`, shared by the opens of its
/// `N/data`: it lives while the clone file is open or any data file is.
pub struct Slot {
    pub n: u64,
    pub stream: Arc<Stream>,
    writers: AtomicUsize,
    /// Who opened it through `clone` on this machine: only they (and
    /// root, and the router's user) may open its files. `None` for one
    /// the router opened (a pipeline).
    pub owner: Option<crate::fs::dir::Id>,
}

impl Slot {
    pub fn new(n: u64, stream: Arc<Stream>) -> Arc<Slot> {
        Slot::owned(n, stream, None)
    }

    /// A slot only `owner` may open the files of.
    pub fn owned(n: u64, stream: Arc<Stream>, owner: Option<crate::fs::dir::Id>) -> Arc<Slot> {
        Arc::new(Slot { n, stream, writers: AtomicUsize::new(0), owner })
    }

    pub fn add_writer(&self) {
        self.writers.fetch_add(1, SeqCst);
    }

    /// The last writer closing is end of input for the service.
    pub async fn drop_writer(&self) {
        if self.writers.fetch_sub(1, SeqCst) == 1 {
            self.stream.writer().eof().await;
        }
    }
}

/// A live trace of a terminal: one line per envelope.
pub struct Trace {
    rx: broadcast::Receiver<Arc<str>>,
    partial: Bytes,
}

impl Trace {
    pub fn new(rx: broadcast::Receiver<Arc<str>>) -> Trace {
        Trace { rx, partial: Bytes::new() }
    }

    pub async fn read(&mut self, size: usize) -> Bytes {
        if self.partial.is_empty() {
            self.partial = match self.rx.recv().await {
                Ok(line) => Bytes::copy_from_slice(line.as_bytes()),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Bytes::from(format!("# {n} lines lost: reader too slow\n"))
                }
                Err(broadcast::error::RecvError::Closed) => return Bytes::new(),
            };
        }
        let n = size.min(self.partial.len());
        self.partial.split_to(n)
    }
}

/// What an open file holds.
pub enum Handle {
    /// Text made at open.
    Text(Bytes),
    /// A control file: its text at open, and what writes act on.
    Ctl(Bytes, super::ctl::Target),
    /// `svc/S/data`: a conversation of its own.
    Stream(Arc<Stream>),
    /// `svc/S/clone`: the number still to read (a stream has no offsets,
    /// so the handle keeps its own place), and the conversation it keeps
    /// alive.
    Clone(Mutex<Bytes>, Arc<Slot>),
    /// `svc/S/N/data`.
    SlotData {
        slot: Arc<Slot>,
        writes: bool,
    },
    Trace(tokio::sync::Mutex<Trace>),
    /// A file open on another machine.
    RemoteFile(super::remote::RemoteFile),
    /// A regular file of a local dir service (read and written on the
    /// blocking pool, hence shared), and whether its directory is watched
    /// for its opener (see [`Told`]).
    Stored(Arc<std::fs::File>, Arc<Told>),
}

/// Reads `size` bytes of `text` at `offset`.
pub fn slice_at(text: &Bytes, offset: u64, size: usize) -> Bytes {
    let start = (offset as usize).min(text.len());
    let end = start.saturating_add(size).min(text.len());
    text.slice(start..end)
}
