//! A file of a served directory open on another machine: many requests in
//! flight on its one conversation.
//!
//! The serving machine answers a file's requests in the order they came,
//! so each request sent leaves a [`Due`] at the back of a queue, and a
//! receiving task gives each answer to the oldest: the reader waiting for
//! it, or the record of a write. Requests from several callers (a queue
//! depth of 16, the kernel's readahead) are then in flight together, and
//! a caller that is interrupted only stops waiting: its answer still
//! comes and goes nowhere. Sends run in a task of their own, so a request
//! is never half-queued.
//!
//! A sequential reader gets [`AHEAD`] bytes requested past where it
//! reads ([`Ahead`]), so a large file streams at the speed of the link; a
//! reader that jumps about gets exactly what it asks for.
//!
//! Writes go ahead of their answers, as sshfs's and NFS's unstable writes
//! do: a write returns once it is sent, at most [`WRITES_AHEAD`] writes or
//! [`WRITE_BYTES_AHEAD`] bytes unanswered. One that failed there fails the
//! next write, or the fsync or flush (close) that follows. The server
//! takes requests in order, so whatever is asked after a write sees it;
//! a look at the file by its name, which goes another way, first waits
//! for the answers ([`Pipe::drain`]).
//!
//! A change of mode, owner or times of a file this machine made goes
//! ahead the same way where its outcome is certain ([`Pipe::attr_ahead`],
//! [`super::known`]): what `tar x` does to each file after writing it.
//! What goes ahead waits a moment for company and leaves in one message
//! with it, where the serving machine takes batches ([`super::batch`]).
//!
//! Lock order: `reads`, then `tx` (taken in the send task), then `state`
//! (never held across an await). Whatever waits for company is taken
//! with `tx` held, so it leaves before anything sent after it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use ns::conv::{Conv, ConvReader, ConvWriter, Msg, Whole};
use ns::MachineId;
use tokio::sync::{oneshot, watch};

use super::batch;
use super::known::{as_foreseen, Known};
use super::{decode, encode, raw_write, unexpected, TreeReq, TreeResp, MAX_IO, RAW};
use crate::fs::dir::locks::Lock;
use crate::fs::dir::Attrs;
use crate::fs::tree::Entry;

/// How far past a sequential reader's position reads are requested. The
/// conversation's window (4 MiB) bounds what is really in flight.
pub const AHEAD: u64 = 4 * MAX_IO as u64;
/// Data kept behind the reader, for the kernel's reads that arrive a
/// little out of order (readahead runs several at once).
const BEHIND: u64 = 2 * MAX_IO as u64;
/// Writes sent whose answers have not come, at most.
pub const WRITES_AHEAD: u64 = 64;
/// Bytes of those writes, at most: the conversation's window.
pub const WRITE_BYTES_AHEAD: u64 = 4 * MAX_IO as u64;

type Answer = Result<Bytes, String>;

/// Where the answer to a request sent goes.
enum Due {
    /// To the caller waiting for it (a read, a request).
    Reply(oneshot::Sender<Answer>),
    /// To the record of writes sent ahead: the write's length.
    Write(u64),
    /// A change of attributes sent ahead, answered as foreseen; `done`
    /// is told when its answer comes.
    Ahead { foreseen: Entry, done: oneshot::Sender<()> },
    /// Those of messages sent together, in order: the answer is a batch.
    Batch(Vec<Due>),
}

/// Counts a write or change sent ahead, from when it is sent or waits to be.
fn count(st: &mut State, due: &Due) {
    st.touched = true;
    match due {
        Due::Write(len) => {
            st.writes_sent += 1;
            st.writing += len;
        }
        Due::Ahead { .. } => st.writes_sent += 1,
        Due::Reply(_) | Due::Batch(_) => {}
    }
}

#[derive(Default)]
struct State {
    due: VecDeque<Due>,
    /// Writes sent, and answered, since the file was opened; the bytes
    /// of those unanswered.
    writes_sent: u64,
    writes_done: u64,
    writing: u64,
    /// The first error of a write sent ahead, not yet told.
    failed: Option<String>,
    /// Why the conversation ended, once it has.
    ended: Option<String>,
    /// The file's attributes, where known.
    known: Known,
    /// Sent ahead, waiting for company ([`batch`]), and their bytes.
    waiting: Vec<(Bytes, Due)>,
    waiting_bytes: usize,
    /// A task is on its way to send what waits, at once.
    sender: bool,
    /// The file as its open found it, until taken.
    opened: Option<Entry>,
    /// Something was sent on it since the open.
    touched: bool,
}

/// A file of a served directory open on another machine.
pub struct Pipe {
    tx: Arc<tokio::sync::Mutex<ConvWriter>>,
    state: Arc<Mutex<State>>,
    /// Bumped at each write answered, and at the end.
    answered: watch::Receiver<u64>,
    reads: tokio::sync::Mutex<Ahead>,
    receiver: tokio::task::JoinHandle<()>,
    machine: MachineId,
    /// The serving machine takes messages together ([`batch`]).
    batches: bool,
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

/// Gives each answer to the oldest request's [`Due`]; at the end of the
/// conversation, fails every one left.
async fn receive(mut rx: ConvReader, state: Arc<Mutex<State>>, answered: watch::Sender<u64>) {
    loop {
        let (answer, end) = match rx.recv().await {
            Some(Msg::Data(b)) => (Ok(b), None),
            Some(Msg::Error(e)) => (Err(e.clone()), Some(e)),
            Some(Msg::Eof) | None => (Err(ns::error::EHUNGUP.to_string()), Some(ns::error::EHUNGUP.to_string())),
        };
        if let Some(why) = end {
            let due = {
                let mut st = lock(&state);
                st.ended = Some(why.clone());
                st.failed.get_or_insert(why.clone());
                std::mem::take(&mut st.due)
            };
            due.into_iter().for_each(|d| fail(d, &why));
            answered.send_modify(|n| *n += 1);
            return;
        }
        let due = lock(&state).due.pop_front();
        match due {
            Some(Due::Batch(dues)) => {
                match answer {
                    Ok(b) if batch::is_batch(&b) => match batch::split(&b) {
                        Ok(parts) if parts.len() == dues.len() => {
                            dues.into_iter().zip(parts).for_each(|(d, p)| settle(&state, d, Ok(p)));
                        }
                        Ok(parts) => {
                            let e = format!("bad tree message: {} answers to {} messages", parts.len(), dues.len());
                            dues.into_iter().for_each(|d| settle(&state, d, Err(e.clone())));
                        }
                        Err(e) => dues.into_iter().for_each(|d| settle(&state, d, Err(e.clone()))),
                    },
                    // One answer for all: the file refused them together.
                    whole => dues.into_iter().for_each(|d| settle(&state, d, whole.clone())),
                }
                answered.send_modify(|n| *n += 1);
            }
            Some(d) => {
                settle(&state, d, answer);
                answered.send_modify(|n| *n += 1);
            }
            // An answer nobody asked for: the server is confused.
            None => {
                let why = "bad tree message: an answer to nothing".to_string();
                let mut st = lock(&state);
                st.failed.get_or_insert(why.clone());
                st.ended = Some(why);
                drop(st);
                answered.send_modify(|n| *n += 1);
                return;
            }
        }
    }
}

/// A request that will have no answer: the conversation ended.
fn fail(due: Due, why: &str) {
    match due {
        Due::Reply(tx) => {
            let _ = tx.send(Err(why.to_string()));
        }
        Due::Batch(dues) => dues.into_iter().for_each(|d| fail(d, why)),
        Due::Write(_) | Due::Ahead { .. } => {}
    }
}

/// Gives `answer` to the request it answers.
fn settle(state: &Mutex<State>, due: Due, answer: Answer) {
    match due {
        Due::Reply(tx) => {
            let _ = tx.send(answer);
        }
        Due::Write(len) => {
            let res = answer.and_then(|b| match decode::<TreeResp>(&b)? {
                TreeResp::Written(n) if u64::from(n) == len => Ok(()),
                TreeResp::Written(n) => Err(ns::error::detail(crate::fs::errors::EIO, format!("wrote {n} of {len}"))),
                TreeResp::Err(e) => Err(e),
                other => Err(unexpected(other)),
            });
            let mut st = lock(state);
            st.writes_done += 1;
            st.writing = st.writing.saturating_sub(len);
            if let Err(e) = res {
                st.failed.get_or_insert(e);
            }
        }
        Due::Ahead { foreseen, done } => {
            let res = answer.and_then(|b| match decode::<TreeResp>(&b)? {
                TreeResp::Entry(e) => Ok(e),
                TreeResp::Err(e) => Err(e),
                other => Err(unexpected(other)),
            });
            {
                let mut st = lock(state);
                st.writes_done += 1;
                match res {
                    Ok(e) if as_foreseen(&e, &foreseen) => {}
                    Ok(_) => st.known.forget(),
                    Err(e) => {
                        st.known.forget();
                        st.failed.get_or_insert(e);
                    }
                }
            }
            let _ = done.send(());
        }
        // Batches are not nested.
        Due::Batch(dues) => {
            dues.into_iter().for_each(|d| settle(state, d, Err("bad tree message: a batch in a batch".into())))
        }
    }
}

/// A read's answer: [`RAW`] then the bytes, or an error.
fn read_answer(a: Answer) -> Answer {
    let b = a?;
    if b.first() == Some(&RAW) {
        return Ok(b.slice(1..));
    }
    match decode(&b)? {
        TreeResp::Data(d) => Ok(Bytes::from(d)),
        TreeResp::Err(e) => Err(e),
        other => Err(unexpected(other)),
    }
}

/// A request's answer, decoded.
fn tree_answer(a: Answer) -> Result<TreeResp, String> {
    match decode(&a?)? {
        TreeResp::Err(e) => Err(e),
        resp => Ok(resp),
    }
}

/// Sends what waits for company, together, then `msgs`, with `tx` held
/// throughout so that nothing overtakes them.
async fn send_now(
    tx: Arc<tokio::sync::Mutex<ConvWriter>>,
    state: Arc<Mutex<State>>,
    msgs: Vec<(Bytes, Due)>,
) -> Result<(), String> {
    let tx = tx.lock().await;
    // Taken, grouped and their answers expected in one hold of the state,
    // so that the conversation cannot end between (its end fails every
    // answer expected, and one pushed after would wait for ever).
    let together = {
        let mut st = lock(&state);
        st.sender = false;
        st.waiting_bytes = 0;
        let waiting = std::mem::take(&mut st.waiting);
        if let Some(e) = st.ended.clone() {
            // Writes counted as sent are told lost at the next write,
            // fsync or close; readers hear it from their dropped answers.
            if waiting.iter().any(|(_, d)| !matches!(d, Due::Reply(_))) {
                st.failed.get_or_insert(e.clone());
            }
            return Err(e);
        }
        let mut together = Vec::new();
        let mut waiting = waiting.into_iter().peekable();
        while waiting.peek().is_some() {
            let mut group: Vec<(Bytes, Due)> = waiting.by_ref().take(batch::MAX_ITEMS).collect();
            let (msg, due) = match group.len() {
                1 => group.pop().expect("one waits"),
                _ => {
                    let (msgs, dues): (Vec<Bytes>, Vec<Due>) = group.into_iter().unzip();
                    (batch::join(&msgs), Due::Batch(dues))
                }
            };
            st.due.push_back(due);
            together.push(msg);
        }
        together
    };
    for msg in together {
        tx.send(msg).await?;
    }
    for (msg, due) in msgs {
        {
            let mut st = lock(&state);
            if let Some(e) = &st.ended {
                return Err(e.clone());
            }
            count(&mut st, &due);
            st.due.push_back(due);
        }
        tx.send(msg).await?;
    }
    Ok(())
}

impl Pipe {
    /// The pipe of `conv`, a file open on machine `m`.
    /// `batches`: the serving machine takes messages together.
    pub fn new(conv: Conv, machine: MachineId, batches: bool) -> Pipe {
        let Conv { rx, tx } = conv;
        let state = Arc::new(Mutex::new(State::default()));
        let (bump, answered) = watch::channel(0);
        let receiver = tokio::spawn(receive(rx, state.clone(), bump));
        Pipe {
            tx: Arc::new(tokio::sync::Mutex::new(tx)),
            state,
            answered,
            reads: tokio::sync::Mutex::new(Ahead::default()),
            receiver,
            machine,
            batches,
        }
    }

    /// The machine the file is open on.
    pub fn machine(&self) -> &MachineId {
        &self.machine
    }

    /// Sends what waits for company, then `msgs` in order, each with its
    /// [`Due`], whole: an interrupted caller does not stop it ([`Whole`]).
    async fn send(&self, msgs: Vec<(Bytes, Due)>) -> Result<(), String> {
        Whole::new(send_now(self.tx.clone(), self.state.clone(), msgs)).await
    }

    /// Sends `msg`, which goes ahead of its answer: it waits for company
    /// (see [`batch`]) where the serving machine takes batches and it is
    /// small.
    async fn send_ahead(&self, msg: Bytes, due: Due) -> Result<(), String> {
        if !self.batches || msg.len() > batch::ITEM_MAX {
            return self.send(vec![(msg, due)]).await;
        }
        let (first, full) = {
            let mut st = lock(&self.state);
            if let Some(e) = &st.ended {
                return Err(e.clone());
            }
            count(&mut st, &due);
            st.waiting_bytes += msg.len();
            st.waiting.push((msg, due));
            (st.waiting.len() == 1, st.waiting.len() >= batch::MAX_ITEMS || st.waiting_bytes >= batch::MAX_BYTES)
        };
        if full {
            return self.send(Vec::new()).await;
        }
        if first {
            let (tx, state) = (self.tx.clone(), self.state.clone());
            tokio::spawn(async move {
                tokio::time::sleep(batch::LINGER).await;
                if !lock(&state).waiting.is_empty() {
                    // A failure is the conversation's end, which its
                    // receiver tells.
                    let _ = send_now(tx, state, Vec::new()).await;
                }
            });
        }
        Ok(())
    }

    /// Sends one request and waits for its answer.
    async fn ask(&self, msg: Bytes) -> Answer {
        let (tx, rx) = oneshot::channel();
        self.send(vec![(msg, Due::Reply(tx))]).await?;
        rx.await.map_err(|_| ns::error::EHUNGUP.to_string())?
    }

    /// Sends one small request and waits for its answer: in one message
    /// with those sent at the same moment (a queue depth of 16 sends
    /// sixteen reads at once), where the serving machine takes batches.
    async fn ask_together(&self, msg: Bytes) -> Answer {
        if !self.batches || msg.len() > batch::ITEM_MAX {
            return self.ask(msg).await;
        }
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut st = lock(&self.state);
            if let Some(e) = &st.ended {
                return Err(e.clone());
            }
            st.waiting_bytes += msg.len();
            st.waiting.push((msg, Due::Reply(tx)));
            !std::mem::replace(&mut st.sender, true)
        };
        // One sender at a time, this caller if none is on its way: what
        // waits while it writes leaves with the next.
        if start {
            self.send(Vec::new()).await?;
        }
        rx.await.map_err(|_| ns::error::EHUNGUP.to_string())?
    }

    /// A request that may change the file: what was read ahead goes.
    async fn change(&self, req: &TreeReq) -> Result<TreeResp, String> {
        self.reads.lock().await.forget();
        tree_answer(self.ask(encode(req)).await)
    }

    /// Sends a write and returns; see the module's doc for its error.
    pub async fn write_at(&self, offset: u64, data: &[u8]) -> Result<usize, String> {
        let len = data.len() as u64;
        let mut answered = self.answered.clone();
        loop {
            {
                let mut st = lock(&self.state);
                if let Some(e) = st.failed.take() {
                    return Err(e);
                }
                let ahead = st.writes_sent - st.writes_done;
                if ahead == 0 || (ahead < WRITES_AHEAD && st.writing + len <= WRITE_BYTES_AHEAD) {
                    break;
                }
            }
            answered.changed().await.map_err(|_| ns::error::EHUNGUP.to_string())?;
        }
        self.reads.lock().await.forget();
        lock(&self.state).known.wrote(offset, len);
        self.send_ahead(raw_write(offset, data), Due::Write(len)).await?;
        Ok(data.len())
    }

    /// Waits for the answers of the writes sent so far; their error stays
    /// for the writer. Before a look at the file by its name.
    pub async fn drain(&self) -> Result<(), String> {
        if !lock(&self.state).waiting.is_empty() {
            // Failed, the conversation has ended, which is seen below.
            let _ = self.send(Vec::new()).await;
        }
        let sent = lock(&self.state).writes_sent;
        let mut answered = self.answered.clone();
        loop {
            {
                let st = lock(&self.state);
                if st.writes_done >= sent || st.ended.is_some() {
                    return Ok(());
                }
            }
            answered.changed().await.map_err(|_| ns::error::EHUNGUP.to_string())?;
        }
    }

    /// Waits for the answers of the writes sent: their error, if one
    /// failed (at flush, which close(2) makes).
    /// The descriptor is closed: nothing more goes ahead, since its
    /// failure would have nobody to be told to.
    pub async fn settle_writes(&self) -> Result<(), String> {
        lock(&self.state).known.spoil();
        self.drain().await?;
        lock(&self.state).failed.take().map_or(Ok(()), Err)
    }

    /// Drops what was read ahead: at a lock, where machines agree, the
    /// next read asks again.
    pub async fn forget_ahead(&self) {
        self.reads.lock().await.forget();
    }

    /// Reads `size` bytes at `offset`: fewer only at the end of the file.
    pub async fn read(&self, offset: u64, size: usize) -> Result<Bytes, String> {
        let size = size.min(MAX_IO);
        lock(&self.state).known.read();
        let mut ahead = self.reads.lock().await;
        if ahead.holds(offset) || offset == ahead.last_end {
            return ahead.read(self, offset, size).await;
        }
        // A reader that jumps about: its own request, in flight with any
        // others.
        ahead.last_end = offset + size as u64;
        drop(ahead);
        let req = encode(&TreeReq::Read { offset, size: size as u32 });
        match size <= batch::ITEM_MAX {
            true => read_answer(self.ask_together(req).await),
            false => read_answer(self.ask(req).await),
        }
    }

    /// Changes the open file (or, with nothing set, says what it is).
    pub async fn attr(&self, attrs: Attrs) -> Result<Entry, String> {
        let req = TreeReq::FileAttr(attrs);
        let gen = lock(&self.state).known.gen();
        let resp = if attrs == Attrs::default() {
            tree_answer(self.ask(encode(&req)).await)?
        } else {
            self.change(&req).await?
        };
        match resp {
            TreeResp::Entry(e) => {
                lock(&self.state).known.answered_since(gen, &e);
                Ok(e)
            }
            other => Err(unexpected(other)),
        }
    }

    /// The file as its open found it, and all its bytes if they came
    /// with it (see `TreeResp::OpenedWith`): read from here, not asked.
    pub fn opened(&self, e: Entry, head: Option<Bytes>) {
        lock(&self.state).opened = Some(e);
        if let (Some(head), Ok(mut ahead)) = (head, self.reads.try_lock()) {
            // Shorter than the chunk it stands for: the file's end.
            ahead.chunks.push_back(Chunk { offset: 0, len: MAX_IO, data: Pending::Ready(Ok(head)) });
        }
    }

    /// The file as its open found it, once: for the look the kernel
    /// makes after an open (see [`Pipe::touched`]).
    pub fn take_opened(&self) -> Option<Entry> {
        lock(&self.state).opened.take()
    }

    /// Whether anything was sent on the file since its open: what the
    /// open found may be changed by it.
    pub fn touched(&self) -> bool {
        lock(&self.state).touched
    }

    /// Whether every write and change sent ahead on it has its answer.
    pub fn quiet(&self) -> bool {
        let st = lock(&self.state);
        st.waiting.is_empty() && st.writes_done >= st.writes_sent
    }

    /// The file as made (or last changed): what a change may be foreseen
    /// from.
    pub fn know(&self, e: &Entry) {
        lock(&self.state).known.answered(e);
    }

    /// Nothing is foreseen of the file from now on (see [`super::known`]).
    pub fn spoil(&self) {
        lock(&self.state).known.spoil();
    }

    /// Sends a change of mode, owner or times without waiting for its
    /// answer, where its outcome is certain (see [`super::known`]; `owns`
    /// says whether the caller owns a file so described): the file as it
    /// will be, and what is told when the answer comes. `None`: ask with
    /// [`Pipe::attr`]. One that fails there is told as a write sent
    /// ahead is, at the next write, fsync or close.
    /// `group` is the caller's own group as told.
    pub async fn attr_ahead(
        &self,
        attrs: Attrs,
        owns: impl Fn(&Entry) -> bool,
        group: crate::fs::dir::Id,
    ) -> Result<Option<(Entry, oneshot::Receiver<()>)>, String> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let foreseen = {
            let mut st = lock(&self.state);
            // With the window half full of writes, the send could wait for
            // credit, which only the asking path can be interrupted in.
            let ahead = st.writes_sent - st.writes_done;
            if st.ended.is_some() || st.failed.is_some() || ahead >= WRITES_AHEAD || st.writing > WRITE_BYTES_AHEAD / 2
            {
                return Ok(None);
            }
            match st.known.predict(&attrs, (now.as_secs() as i64, now.subsec_nanos()), owns, group) {
                Some(e) => e,
                None => return Ok(None),
            }
        };
        let (done, told) = oneshot::channel();
        let due = Due::Ahead { foreseen: foreseen.clone(), done };
        if let Err(e) = self.send_ahead(encode(&TreeReq::FileAttr(attrs)), due).await {
            lock(&self.state).known.forget();
            return Err(e);
        }
        Ok(Some((foreseen, told)))
    }

    pub async fn lock(&self, owner: u64, lock: Lock, get: bool) -> Result<Lock, String> {
        // Another machine's writes under the lock are seen after it.
        match self.change(&TreeReq::Lock { owner, lock, get }).await? {
            TreeResp::Lock(l) => Ok(l),
            other => Err(unexpected(other)),
        }
    }

    pub async fn allocate(&self, offset: u64, len: u64, mode: u32) -> Result<(), String> {
        lock(&self.state).known.forget();
        match self.change(&TreeReq::Allocate { offset, len, mode }).await? {
            TreeResp::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Flushes the file to its disk; a write sent ahead that failed is
    /// told first.
    pub async fn sync(&self) -> Result<(), String> {
        let resp = tree_answer(self.ask(encode(&TreeReq::Sync)).await);
        // Answers come in order: every write before the sync is answered.
        if let Some(e) = lock(&self.state).failed.take() {
            return Err(e);
        }
        match resp? {
            TreeResp::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Ends the conversation once the writes are answered.
    pub async fn close(&self) {
        // Told at flush, if anyone was there to hear it.
        let _ = self.drain().await;
        self.tx.lock().await.eof().await;
    }
}

/// A read requested ahead, in file order.
struct Chunk {
    offset: u64,
    len: usize,
    data: Pending,
}

enum Pending {
    Waiting(oneshot::Receiver<Answer>),
    Ready(Answer),
}

impl Chunk {
    fn end(&self) -> u64 {
        self.offset + self.len as u64
    }

    /// Its answer, once it has come.
    async fn fill(&mut self) -> Answer {
        if let Pending::Waiting(rx) = &mut self.data {
            let a = rx.await.unwrap_or_else(|_| Err(ns::error::EHUNGUP.to_string()));
            self.data = Pending::Ready(read_answer(a));
        }
        match &self.data {
            Pending::Ready(a) => a.clone(),
            Pending::Waiting(_) => Err(ns::error::EHUNGUP.to_string()),
        }
    }
}

/// The sequential reader's chunks.
#[derive(Default)]
struct Ahead {
    chunks: VecDeque<Chunk>,
    /// Where the last read ended: a read starting there is sequential.
    last_end: u64,
}

impl Ahead {
    fn holds(&self, offset: u64) -> bool {
        match (self.chunks.front(), self.chunks.back()) {
            (Some(f), Some(b)) => f.offset <= offset && offset < b.end(),
            _ => false,
        }
    }

    /// Drops what was read ahead (the file changes, or the reader left);
    /// the answers still come, to nobody.
    fn forget(&mut self) {
        self.chunks.clear();
    }

    /// Requests chunks covering `from..to`.
    async fn request(&mut self, pipe: &Pipe, mut from: u64, to: u64) -> Result<(), String> {
        let mut msgs = Vec::new();
        while from < to {
            let len = (to - from).min(MAX_IO as u64) as usize;
            let (tx, rx) = oneshot::channel();
            msgs.push((encode(&TreeReq::Read { offset: from, size: len as u32 }), Due::Reply(tx)));
            self.chunks.push_back(Chunk { offset: from, len, data: Pending::Waiting(rx) });
            from += len as u64;
        }
        if msgs.is_empty() {
            return Ok(());
        }
        let res = pipe.send(msgs).await;
        if res.is_err() {
            self.forget();
        }
        res
    }

    async fn read(&mut self, pipe: &Pipe, offset: u64, size: usize) -> Result<Bytes, String> {
        let end = offset.saturating_add(size as u64);
        let sequential = offset == self.last_end;
        let held = self.holds(offset);
        if !held {
            self.forget();
            self.request(pipe, offset, end).await?;
        } else if let Some(b) = self.chunks.back().map(Chunk::end).filter(|&b| b < end) {
            self.request(pipe, b, end).await?;
        }
        let (out, eof) = self.take(offset, end).await?;
        self.last_end = offset + out.len() as u64;
        if eof {
            // Keep nothing read at or past the end: the file may grow.
            self.forget();
            return Ok(out);
        }
        // Forget what the reader has gone past.
        while self.chunks.front().is_some_and(|c| matches!(c.data, Pending::Ready(_)) && c.end() + BEHIND <= offset) {
            self.chunks.pop_front();
        }
        if sequential || held {
            let tail = self.chunks.back().map_or(end, Chunk::end);
            self.request(pipe, tail, end + AHEAD).await?;
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
            let c = &mut self.chunks[i];
            let (c_offset, c_len) = (c.offset, c.len);
            let data = match c.fill().await {
                Ok(d) => d,
                Err(e) => {
                    // Said once: the next read asks again.
                    self.forget();
                    return Err(e);
                }
            };
            let at = (pos - c_offset) as usize;
            if at >= data.len() {
                eof = true;
                break;
            }
            let n = (data.len() - at).min((end - pos) as usize);
            parts.push(data.slice(at..at + n));
            pos += n as u64;
            if data.len() < c_len && at + n == data.len() {
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
