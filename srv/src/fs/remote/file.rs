//! A file open on another machine: the opener's side of the conversation.
//!
//! Files of a served directory go through a [`Pipe`]: requests and answers
//! on one conversation are in order, so several reads can be in flight at
//! once, each answer going to the oldest request. A sequential reader gets
//! [`AHEAD`] bytes requested past where it reads, so a large file streams
//! at the speed of the link instead of one round trip per read; a reader
//! that jumps about gets exactly what it asks for and nothing more.
//!
//! Writes are pipelined too, as sshfs's and NFS's unstable writes are: a
//! write returns once it is sent, and its answer is taken before the next
//! request of any other kind, at most [`WRITES_AHEAD`] writes or
//! [`WRITE_BYTES_AHEAD`] bytes behind. A write that failed there fails the
//! next write, or the fsync or flush (close) that follows: the error reaches the writer, at the latest
//! when it closes. Any other request waits for the writes' answers, so
//! what it sees includes them.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ns::conv::Conv;

use ns::conv::Msg;

use super::{answer, ask, decode, encode, raw_write, unexpected, TreeReq, TreeResp, MAX_IO, RAW};
use crate::fs::dir::locks::Lock;
use crate::fs::dir::Attrs;
use crate::fs::handle::Stream;
use crate::fs::tree::{Entry, FileKind};

/// How far past a sequential reader's position reads are requested. The
/// conversation's window (4 MiB) bounds what is really in flight.
pub const AHEAD: u64 = 4 * MAX_IO as u64;
/// Data kept behind the reader, for the kernel's reads that arrive a
/// little out of order (readahead runs several at once).
const BEHIND: u64 = 2 * MAX_IO as u64;
/// Writes sent whose answers are not yet taken, at most: as many as a
/// queue depth of 16 with some room, and a megabyte's worth of pages.
pub const WRITES_AHEAD: usize = 64;
/// Bytes of those writes, at most: the conversation's window.
pub const WRITE_BYTES_AHEAD: usize = 4 * MAX_IO;

/// A file open on another machine.
pub enum RemoteFile {
    Stream(Arc<Stream>),
    /// A text or ctl file: one request, one answer, each run to its end
    /// in a task of its own (see [`Pipe`] for why).
    File(FileKind, Arc<tokio::sync::Mutex<Conv>>),
    Stored(Pipe),
}

/// Asks `req` on a text or ctl file, uninterrupted.
async fn ask_file(c: &Arc<tokio::sync::Mutex<Conv>>, req: TreeReq) -> Result<TreeResp, String> {
    let c = c.clone();
    let task = tokio::spawn(async move { ask(&mut *c.lock().await, &req).await });
    task.await.map_err(|e| e.to_string())?
}

impl RemoteFile {
    pub fn kind(&self) -> FileKind {
        match self {
            RemoteFile::Stream(_) => FileKind::Stream,
            RemoteFile::File(k, _) => *k,
            RemoteFile::Stored(_) => FileKind::Stored,
        }
    }

    pub async fn read(&self, offset: u64, size: usize) -> Result<Bytes, String> {
        match self {
            RemoteFile::Stream(s) => s.read(size).await,
            RemoteFile::File(_, c) => match ask_file(c, TreeReq::Read { offset, size: size as u32 }).await? {
                TreeResp::Data(d) => Ok(Bytes::from(d)),
                other => Err(unexpected(other)),
            },
            RemoteFile::Stored(p) => p.read(offset, size).await,
        }
    }

    pub async fn write(&self, data: &[u8]) -> Result<usize, String> {
        match self {
            RemoteFile::Stream(s) => s.write(data).await,
            RemoteFile::File(_, c) => match ask_file(c, TreeReq::Write(data.to_vec())).await? {
                TreeResp::Written(n) => Ok(n as usize),
                other => Err(unexpected(other)),
            },
            // Its writes have offsets: Namespace::write_at.
            RemoteFile::Stored(_) => Err(ns::error::detail(ns::error::EBADPATH, "write without an offset")),
        }
    }

    pub fn stream(&self) -> Option<&Arc<Stream>> {
        match self {
            RemoteFile::Stream(s) => Some(s),
            _ => None,
        }
    }

    pub async fn cancel(&self) {
        if let RemoteFile::Stream(s) = self {
            s.writer().cancel().await;
        }
    }

    pub async fn close(&self) {
        match self {
            RemoteFile::Stream(s) => s.writer().eof().await,
            RemoteFile::File(_, c) => c.lock().await.tx.eof().await,
            RemoteFile::Stored(p) => {
                let mut st = p.0.lock().await;
                // Told at flush, if anyone was there to hear it.
                let _ = st.settle_writes().await;
                st.conv.tx.eof().await
            }
        }
    }
}

/// Reads requested and not yet consumed, in file order (which is also
/// the order of their requests, hence of their answers).
struct Chunk {
    offset: u64,
    len: usize,
    /// The answer, once received; shorter than `len` at the end of file.
    data: Option<Result<Bytes, String>>,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.offset + self.len as u64
    }
}

struct State {
    conv: Conv,
    chunks: VecDeque<Chunk>,
    /// Where the last read ended: a read starting there is sequential.
    last_end: u64,
    /// Lengths of the writes whose answers are still due, oldest first;
    /// they come before any read's.
    writes: VecDeque<usize>,
    writing: usize,
    /// The first error a pipelined write met, not yet told.
    failed: Option<String>,
}

/// A file of a served directory open on another machine.
///
/// Each operation runs to its end in a task of its own, even when the
/// read that wanted it is interrupted: stopped halfway, a request could
/// leave without its answer being taken, and every later answer would go
/// to the wrong read.
pub struct Pipe(Arc<tokio::sync::Mutex<State>>);

impl Pipe {
    pub fn new(conv: Conv) -> Pipe {
        Pipe(Arc::new(tokio::sync::Mutex::new(State {
            conv,
            chunks: VecDeque::new(),
            last_end: 0,
            writes: VecDeque::new(),
            writing: 0,
            failed: None,
        })))
    }

    /// Sends `msg` (an encoded request) on the file, uninterrupted, and
    /// returns the answer.
    async fn ask(&self, msg: Bytes) -> Result<TreeResp, String> {
        let st = self.0.clone();
        let task = tokio::spawn(async move { st.lock().await.ask(msg).await });
        task.await.map_err(|e| e.to_string())?
    }

    /// Reads `size` bytes at `offset`: fewer only at the end of the file.
    pub async fn read(&self, offset: u64, size: usize) -> Result<Bytes, String> {
        let st = self.0.clone();
        let task = tokio::spawn(async move { st.lock().await.read(offset, size.min(MAX_IO)).await });
        task.await.map_err(|e| e.to_string())?
    }

    /// Sends a write and returns; see the module's doc for its error.
    pub async fn write_at(&self, offset: u64, data: &[u8]) -> Result<usize, String> {
        let (st, msg, len) = (self.0.clone(), raw_write(offset, data), data.len());
        let task = tokio::spawn(async move { st.lock().await.write(msg, len).await });
        task.await.map_err(|e| e.to_string())?
    }

    /// Takes the answers of the writes sent: their error, if one failed
    /// (at flush, which close(2) makes).
    pub async fn settle_writes(&self) -> Result<(), String> {
        let st = self.0.clone();
        let task = tokio::spawn(async move { st.lock().await.settle_writes().await });
        task.await.map_err(|e| e.to_string())?
    }

    /// Changes the open file (or, with nothing set, says what it is).
    pub async fn attr(&self, attrs: Attrs) -> Result<Entry, String> {
        match self.ask(encode(&TreeReq::FileAttr(attrs))).await? {
            TreeResp::Entry(e) => Ok(e),
            other => Err(unexpected(other)),
        }
    }

    pub async fn lock(&self, owner: u64, lock: Lock, get: bool) -> Result<Lock, String> {
        match self.ask(encode(&TreeReq::Lock { owner, lock, get })).await? {
            TreeResp::Lock(l) => Ok(l),
            other => Err(unexpected(other)),
        }
    }

    pub async fn allocate(&self, offset: u64, len: u64, mode: u32) -> Result<(), String> {
        match self.ask(encode(&TreeReq::Allocate { offset, len, mode })).await? {
            TreeResp::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Flushes the file to its disk; the first error of a write sent
    /// ahead comes first.
    pub async fn sync(&self) -> Result<(), String> {
        self.settle_writes().await?;
        match self.ask(encode(&TreeReq::Sync)).await? {
            TreeResp::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Takes the answers of the writes sent, keeping their error for the
    /// writer: before a look at the file's size by its name.
    pub async fn drain(&self) -> Result<(), String> {
        let st = self.0.clone();
        let task = tokio::spawn(async move { st.lock().await.settle().await });
        task.await.map_err(|e| e.to_string())?
    }
}

impl State {
    /// Takes the oldest write's answer, keeping its error for later.
    async fn take_write(&mut self) {
        let Some(len) = self.writes.pop_front() else { return };
        self.writing -= len;
        let res = match answer(&mut self.conv).await {
            Ok(TreeResp::Written(n)) if n as usize == len => Ok(()),
            Ok(TreeResp::Written(n)) => Err(ns::error::detail(crate::fs::errors::EIO, format!("wrote {n} of {len}"))),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(e),
        };
        // The first error is the one told; a conversation that failed
        // fails everything after anyway.
        if let Err(e) = res {
            self.failed.get_or_insert(e);
        }
    }

    /// Takes every write's answer, and says the first error among them.
    async fn settle_writes(&mut self) -> Result<(), String> {
        while !self.writes.is_empty() {
            self.take_write().await;
        }
        self.failed.take().map_or(Ok(()), Err)
    }

    async fn write(&mut self, msg: Bytes, len: usize) -> Result<usize, String> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        // What was read may be what this changes.
        self.settle().await?;
        while self.writes.len() >= WRITES_AHEAD || (!self.writes.is_empty() && self.writing + len > WRITE_BYTES_AHEAD) {
            self.take_write().await;
        }
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.conv.tx.send(msg).await?;
        self.writes.push_back(len);
        self.writing += len;
        Ok(len)
    }

    /// Asks for `len` bytes at `offset`, without waiting.
    async fn request(&mut self, offset: u64, len: usize) -> Result<(), String> {
        self.conv.tx.send(encode(&TreeReq::Read { offset, size: len as u32 })).await?;
        self.chunks.push_back(Chunk { offset, len, data: None });
        Ok(())
    }

    /// Receives answers until chunk `i` has its own.
    async fn fill(&mut self, i: usize) -> Result<(), String> {
        while let Some(j) = self.chunks.iter().position(|c| c.data.is_none()).filter(|&j| j <= i) {
            // An error answer fails that read only; a failed conversation
            // fails them all.
            let data = match self.conv.rx.recv().await {
                Some(Msg::Data(b)) if b.first() == Some(&RAW) => Ok(b.slice(1..)),
                Some(Msg::Data(b)) => match decode(&b)? {
                    TreeResp::Data(d) => Ok(Bytes::from(d)),
                    TreeResp::Err(e) => Err(e),
                    other => return Err(unexpected(other)),
                },
                Some(Msg::Error(e)) => return Err(e),
                _ => return Err(ns::error::EHUNGUP.into()),
            };
            self.chunks[j].data = Some(data);
        }
        Ok(())
    }

    /// Receives every answer still due, then forgets all read data: for
    /// any other request, whose answer comes after theirs, and which may
    /// change the file.
    async fn settle(&mut self) -> Result<(), String> {
        while !self.writes.is_empty() {
            self.take_write().await;
        }
        if !self.chunks.is_empty() {
            self.fill(self.chunks.len() - 1).await?;
        }
        self.chunks.clear();
        Ok(())
    }

    async fn ask(&mut self, msg: Bytes) -> Result<TreeResp, String> {
        self.settle().await?;
        self.conv.tx.send(msg).await?;
        answer(&mut self.conv).await
    }

    /// Requests chunks covering `from..to`.
    async fn request_range(&mut self, mut from: u64, to: u64) -> Result<(), String> {
        while from < to {
            let len = (to - from).min(MAX_IO as u64) as usize;
            self.request(from, len).await?;
            from += len as u64;
        }
        Ok(())
    }

    async fn read(&mut self, offset: u64, size: usize) -> Result<Bytes, String> {
        if !self.writes.is_empty() {
            self.settle().await?;
        }
        let end = offset.saturating_add(size as u64);
        let sequential = offset == self.last_end;
        let held = match (self.chunks.front(), self.chunks.back()) {
            (Some(f), Some(b)) => f.offset <= offset && offset < b.end(),
            _ => false,
        };
        if !held {
            self.settle().await?;
            self.request_range(offset, end).await?;
        } else if let Some(b) = self.chunks.back().map(Chunk::end).filter(|&b| b < end) {
            self.request_range(b, end).await?;
        }
        let (out, eof) = self.take(offset, end).await?;
        self.last_end = offset + out.len() as u64;
        if eof {
            // Keep nothing read at or past the end: the file may grow.
            self.settle().await?;
            return Ok(out);
        }
        // Forget what the reader has gone past.
        while self.chunks.front().is_some_and(|c| c.data.is_some() && c.end() + BEHIND <= offset) {
            self.chunks.pop_front();
        }
        if sequential || held {
            let tail = self.chunks.back().map_or(end, Chunk::end);
            self.request_range(tail, end + AHEAD).await?;
        }
        Ok(out)
    }

    /// The bytes `offset..end` out of the chunks that hold them; and
    /// whether the file ended before `end`.
    async fn take(&mut self, offset: u64, end: u64) -> Result<(Bytes, bool), String> {
        let first = self.chunks.iter().position(|c| c.offset <= offset && offset < c.end()).unwrap_or(0);
        let mut parts: Vec<Bytes> = Vec::new();
        let mut pos = offset;
        let mut eof = false;
        let mut i = first;
        while pos < end && i < self.chunks.len() {
            self.fill(i).await?;
            let c = &self.chunks[i];
            let data = match &c.data {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    // Said once: the next read asks again.
                    let e = e.clone();
                    self.settle().await?;
                    return Err(e);
                }
                None => return Err(ns::error::EHUNGUP.into()),
            };
            let at = (pos - c.offset) as usize;
            if at >= data.len() {
                eof = true;
                break;
            }
            let n = (data.len() - at).min((end - pos) as usize);
            parts.push(data.slice(at..at + n));
            pos += n as u64;
            if data.len() < c.len && at + n == data.len() {
                eof = true;
                break;
            }
            i += 1;
        }
        let out = match parts.len() {
            0 => Bytes::new(),
            1 => parts.pop().unwrap_or_default(),
            _ => {
                let mut b = BytesMut::with_capacity((pos - offset) as usize);
                parts.iter().for_each(|p| b.extend_from_slice(p));
                b.freeze()
            }
        };
        Ok((out, eof))
    }
}
