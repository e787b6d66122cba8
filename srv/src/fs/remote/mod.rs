//! Other machines' trees, through the mesh.
//!
//! Every router serves its own tree to the others as the reserved service
//! `router` ([`server`]). Each operation is one conversation with
//! `/n/M/svc/router`, over as many hops as it takes: the first message is
//! the [`Caller`] it is for and a [`TreeReq`]. `Stat`, `List`, `Readlink`, `StatFs` and the changes to
//! a served directory (`Mkdir`, `Symlink`, `Link`, `Mknod`, `Remove`,
//! `Rename`, `SetAttr`) get one [`TreeResp`] and end, or go in a session.
//! `Open` gets `Opened` (a file of a served directory, to an opener that
//! takes batches, `OpenedWith`: what it is, and a small one's bytes) and
//! `Create` gets `Created`; then the conversation is the open file
//! ([`file`]):
//!
//! - a stream file (data, clone, trace) carries raw messages both ways,
//!   one per write and one per read, exactly as the file does locally; a
//!   cancel on the conversation is an interrupted read; the opener's end of
//!   input is its close.
//! - a text or ctl file answers `Read` and `Write` requests one by one,
//!   so a bad ctl message fails the opener's write, as it would locally.
//! - a file of a served directory answers `Read`, `WriteAt`, `FileAttr`,
//!   `Allocate`, `Lock` and `Sync` in order; reads are at most [`MAX_IO`] each and answered
//!   as [`RAW`] bytes, and the opener keeps several in flight when it reads
//!   sequentially. Several small requests may come as one message, a
//!   [`batch`], answered as one, where the open said so (`Batching`).
//!
//! `Watch` is a conversation of its own: the changes to the directories
//! the asking machine looks into, for as long as it lasts (see
//! `fs::coherence`). `Session` makes the conversation carry the requests
//! that get one answer, one after another, so that each does not open
//! and close a conversation of its own ([`session`]).

mod batch;
mod file;
mod known;
mod pipe;
mod server;
pub mod session;

use bytes::Bytes;
use ns::conv::{Conv, Msg};
use ns::{Addr, MachineId, Router};
use serde::{Deserialize, Serialize};

use super::caller::Caller;
use super::dir::locks::Lock;
use super::dir::watch::Change;
use super::dir::{Access, Attrs, StatFs, MAX_IO};
use super::handle::{Handle, Stream};
use super::tree::{Entry, FileKind};
pub use file::RemoteFile;
pub use server::TreeServer;
pub use session::Sessions;

/// A request to a machine's tree server.
#[derive(Debug, Serialize, Deserialize)]
pub enum TreeReq {
    Stat(Vec<String>),
    List(Vec<String>),
    Open {
        path: Vec<String>,
        access: Access,
        /// The opener sends messages together ([`batch`]) where the
        /// server answers `Batching`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        batch: bool,
    },
    /// On an open file: at most [`MAX_IO`] bytes at `offset`.
    Read {
        offset: u64,
        size: u32,
    },
    /// On an open stream or ctl file: one message.
    Write(#[serde(with = "serde_bytes")] Vec<u8>),
    /// On an open file of a served directory.
    WriteAt {
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// On an open file of a served directory: change it, or (all fields
    /// unset) just say what it is.
    FileAttr(Attrs),
    /// On an open file of a served directory: flush it to its disk.
    Sync,
    Create {
        path: Vec<String>,
        mode: u32,
        access: Access,
        excl: bool,
        /// As `Open`'s.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        batch: bool,
    },
    Mkdir {
        path: Vec<String>,
        mode: u32,
    },
    /// From a local client only (`mesh ns`): a private view of this
    /// machine's tree, mounted next to it for as long as the conversation
    /// lasts. Answered with `View`.
    View,
    /// Removes a file, or an empty directory when `dir`.
    Remove {
        path: Vec<String>,
        dir: bool,
    },
    /// `flags` as renameat2(2)'s.
    Rename {
        from: Vec<String>,
        to: Vec<String>,
        flags: u32,
    },
    SetAttr {
        path: Vec<String>,
        attrs: Attrs,
    },
    Symlink {
        path: Vec<String>,
        target: String,
    },
    /// Answered with `Target`.
    Readlink(Vec<String>),
    Link {
        from: Vec<String>,
        to: Vec<String>,
    },
    Mknod {
        path: Vec<String>,
        mode: u32,
        /// A device node's numbers.
        #[serde(default)]
        rdev: u64,
    },
    /// Answered with `StatFs`.
    StatFs(Vec<String>),
    /// Answered with `Data`.
    GetXattr {
        path: Vec<String>,
        name: String,
    },
    SetXattr {
        path: Vec<String>,
        name: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        flags: u32,
    },
    /// Answered with `Names`.
    ListXattr(Vec<String>),
    RemoveXattr {
        path: Vec<String>,
        name: String,
    },
    /// On an open file of a served directory: take, change or drop a
    /// record lock of the opener's `owner`, or with `get` say what would
    /// conflict. Answered with `Lock`.
    Lock {
        owner: u64,
        lock: Lock,
        get: bool,
    },
    /// On an open file of a served directory: fallocate(2).
    Allocate {
        offset: u64,
        len: u64,
        mode: u32,
    },
    /// Tell the asking machine what changes in the directories of this
    /// machine it looks into, from now on (`dir::watch`): answered with
    /// `Done` once it will be, then `Changed` as they come, until either
    /// side ends the conversation.
    Watch,
    /// Makes the conversation a session ([`session`]): answered with
    /// `Done`, then each message is one request that is not on an open
    /// file, answered in order.
    Session,
    /// Removes files, or empty directories where `true`, each judged and
    /// done on its own, in order: answered with `Removed`. The removals a
    /// mount sent ahead go so, many to a message (`fuse::removals`).
    Removes(Vec<Removal>),
}

/// One removal of [`TreeReq::Removes`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Removal {
    pub path: Vec<String>,
    /// An empty directory, not a file.
    pub dir: bool,
    /// The identity its directory had when the removal was answered:
    /// removed only if it still has it (a directory renamed meanwhile, or
    /// a path bound elsewhere, would make it another file's).
    pub parent: Option<u64>,
}

/// An answer from a tree server.
#[derive(Debug, Serialize, Deserialize)]
pub enum TreeResp {
    Entry(Entry),
    Entries(Vec<Entry>),
    Opened(FileKind),
    /// The file made by `Create`, now open.
    Created(Entry),
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    Written(u32),
    Done,
    Target(String),
    StatFs(StatFs),
    Names(Vec<String>),
    Lock(Lock),
    Err(String),
    /// A view is mounted at `staging`; the machine's tree is at `mount`.
    View {
        staging: String,
        mount: String,
    },
    Changed(Vec<Change>),
    /// What became of each file of `Removes`, in order: `None` removed,
    /// else why not.
    Removed(Vec<Option<String>>),
    /// The answer to a change of names (made, removed, renamed), and the
    /// directories it changed as they are after it, so the asking machine
    /// need not ask for them again.
    After(Box<TreeResp>, Vec<Entry>),
    /// The answer to an `Open` or `Create` that asked for batches: the
    /// file takes them ([`batch`]).
    Batching(Box<TreeResp>),
    /// A file of a served directory open (to an opener that asked for
    /// batches, so knows this answer): what it is as opened, and, opened
    /// to read and at most [`HEAD`] bytes long, all its bytes. The open
    /// that NFS follows with a look at the file, and the read of a small
    /// one, need no round trips of their own.
    OpenedWith {
        entry: Entry,
        #[serde(default)]
        head: Option<serde_bytes::ByteBuf>,
    },
}

/// Files at most this long come whole with their open ([`TreeResp::OpenedWith`]).
pub const HEAD: u64 = 64 << 10;

/// An answer, and whether it says the file takes batches.
fn batching(resp: TreeResp) -> (TreeResp, bool) {
    match resp {
        TreeResp::Batching(r) => (*r, true),
        r => (r, false),
    }
}

/// An answer and the directories it says are changed (see
/// [`TreeResp::After`]).
fn after(resp: TreeResp) -> (TreeResp, Vec<Entry>) {
    match resp {
        TreeResp::After(r, dirs) => (*r, dirs),
        r => (r, Vec::new()),
    }
}

/// The first byte of a message that carries file bytes without CBOR: a
/// CBOR unsigned integer, which no [`TreeReq`] or [`TreeResp`] starts
/// with. A read's answer is `RAW` then the bytes; a write to a file of a
/// served directory is `RAW`, the offset (8 bytes, little-endian), then
/// the bytes. A megabyte is then not copied into CBOR and out again.
pub const RAW: u8 = 0;

/// A raw write: `RAW`, offset, data.
fn raw_write(offset: u64, data: &[u8]) -> Bytes {
    let mut b = bytes::BytesMut::with_capacity(9 + data.len());
    b.extend_from_slice(&[RAW]);
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(data);
    b.freeze()
}

/// The offset and data of a raw write.
fn parse_raw_write(b: &Bytes) -> Result<(u64, Bytes), String> {
    let off = b.get(1..9).and_then(|o| <[u8; 8]>::try_from(o).ok()).ok_or("bad tree message: short raw write")?;
    Ok((u64::from_le_bytes(off), b.slice(9..)))
}

pub(crate) use ns::cbor::encode;

/// Decodes a [`TreeReq`] or [`TreeResp`].
pub(crate) fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    ns::cbor::decode(b, "tree message")
}

pub(crate) fn server(m: &MachineId) -> Addr {
    Addr::on(m.clone(), ns::conv::reserved())
}

fn unexpected(resp: TreeResp) -> String {
    format!("bad tree answer {resp:?}")
}

/// Receives one answer.
async fn answer(conv: &mut Conv) -> Result<TreeResp, String> {
    match conv.rx.recv().await {
        Some(Msg::Data(b)) => match decode(&b)? {
            TreeResp::Err(e) => Err(e),
            resp => Ok(resp),
        },
        Some(Msg::Error(e)) => Err(e),
        _ => Err(ns::error::EHUNGUP.into()),
    }
}

/// The first message of a conversation with a tree server: who asks
/// (the request's caller, else the router itself), then the request.
pub(crate) fn first(req: &TreeReq) -> Bytes {
    encode(&(Caller::current().unwrap_or_else(Caller::router), req))
}

/// Opens a conversation with `req`, its first request, and waits for the
/// answer.
pub(crate) async fn begin(conv: &mut Conv, req: &TreeReq) -> Result<TreeResp, String> {
    conv.tx.send(first(req)).await?;
    answer(conv).await
}

/// Sends one request on `conv` and waits for the answer.
pub(crate) async fn ask(conv: &mut Conv, req: &TreeReq) -> Result<TreeResp, String> {
    conv.tx.send(encode(req)).await?;
    answer(conv).await
}

/// One read on `conv`, an open text or stored file: a text file answers
/// with `Data`, a stored one with [`RAW`] bytes.
pub(crate) async fn read(conv: &mut Conv, offset: u64, size: u32) -> Result<Bytes, String> {
    conv.tx.send(encode(&TreeReq::Read { offset, size })).await?;
    match conv.rx.recv().await {
        Some(Msg::Data(b)) if b.first() == Some(&RAW) => Ok(b.slice(1..)),
        Some(Msg::Data(b)) => match decode(&b)? {
            TreeResp::Data(d) => Ok(Bytes::from(d)),
            TreeResp::Err(e) => Err(e),
            other => Err(unexpected(other)),
        },
        Some(Msg::Error(e)) => Err(e),
        _ => Err(ns::error::EHUNGUP.into()),
    }
}

/// One request in a conversation of its own (see [`session`] for the
/// others).
async fn once(r: &Router, m: &MachineId, req: &TreeReq) -> Result<TreeResp, String> {
    let mut conv = r.open_as(server(m), Vec::new(), Caller::current_user());
    begin(&mut conv, req).await
}

async fn entry(s: &Sessions, m: &MachineId, req: &TreeReq) -> Result<Entry, String> {
    made(s, m, req).await.map(|(e, _)| e)
}

/// An entry made, and its directory after.
async fn made(s: &Sessions, m: &MachineId, req: &TreeReq) -> Result<(Entry, Vec<Entry>), String> {
    match after(s.ask(m, req).await?) {
        (TreeResp::Entry(e), dirs) => Ok((e, dirs)),
        (other, _) => Err(unexpected(other)),
    }
}

async fn done(s: &Sessions, m: &MachineId, req: &TreeReq) -> Result<(), String> {
    changed(s, m, req).await.map(drop)
}

/// A change of names done, and the directories after it.
async fn changed(s: &Sessions, m: &MachineId, req: &TreeReq) -> Result<((), Vec<Entry>), String> {
    match after(s.ask(m, req).await?) {
        (TreeResp::Done, dirs) => Ok(((), dirs)),
        (other, _) => Err(unexpected(other)),
    }
}

pub async fn stat(s: &Sessions, m: &MachineId, path: &[String]) -> Result<Entry, String> {
    entry(s, m, &TreeReq::Stat(path.to_vec())).await
}

pub async fn list(s: &Sessions, m: &MachineId, path: &[String]) -> Result<Vec<Entry>, String> {
    match s.ask(m, &TreeReq::List(path.to_vec())).await? {
        TreeResp::Entries(e) => Ok(e),
        other => Err(unexpected(other)),
    }
}

/// The handle for a conversation that is now an open file of `kind`.
fn opened(conv: Conv, kind: FileKind, m: &MachineId, batches: bool) -> Handle {
    Handle::RemoteFile(match kind {
        FileKind::Stream => RemoteFile::Stream(Stream::new(conv)),
        FileKind::Stored => RemoteFile::Stored(pipe::Pipe::new(conv, m.clone(), batches)),
        kind => RemoteFile::File(kind, std::sync::Arc::new(tokio::sync::Mutex::new(conv))),
    })
}

pub async fn open(r: &Router, m: &MachineId, path: &[String], access: Access) -> Result<Handle, String> {
    let mut conv = r.open_as(server(m), Vec::new(), Caller::current_user());
    match batching(begin(&mut conv, &TreeReq::Open { path: path.to_vec(), access, batch: true }).await?) {
        (TreeResp::Opened(kind), batches) => Ok(opened(conv, kind, m, batches)),
        (TreeResp::OpenedWith { entry, head }, batches) => {
            let h = opened(conv, FileKind::Stored, m, batches);
            if let Handle::RemoteFile(RemoteFile::Stored(p)) = &h {
                p.opened(entry, head.map(|b| Bytes::from(b.into_vec())));
            }
            Ok(h)
        }
        (other, _) => Err(unexpected(other)),
    }
}

/// The file made (or opened), open, and its directory after.
pub async fn create(
    r: &Router,
    m: &MachineId,
    path: &[String],
    mode: u32,
    access: Access,
    excl: bool,
) -> Result<((Entry, Handle), Vec<Entry>), String> {
    let mut conv = r.open_as(server(m), Vec::new(), Caller::current_user());
    let req = TreeReq::Create { path: path.to_vec(), mode, access, excl, batch: true };
    let (resp, batches) = batching(begin(&mut conv, &req).await?);
    match after(resp) {
        (TreeResp::Created(e), dirs) => {
            let h = opened(conv, FileKind::Stored, m, batches);
            if let Handle::RemoteFile(RemoteFile::Stored(p)) = &h {
                p.know(&e);
            }
            Ok(((e, h), dirs))
        }
        (other, _) => Err(unexpected(other)),
    }
}

pub async fn mkdir(s: &Sessions, m: &MachineId, path: &[String], mode: u32) -> Result<(Entry, Vec<Entry>), String> {
    made(s, m, &TreeReq::Mkdir { path: path.to_vec(), mode }).await
}

pub async fn remove(s: &Sessions, m: &MachineId, path: &[String], dir: bool) -> Result<((), Vec<Entry>), String> {
    changed(s, m, &TreeReq::Remove { path: path.to_vec(), dir }).await
}

/// Removes files, each on its own: what became of each, in order, and
/// the directories after.
pub async fn removes(
    s: &Sessions,
    m: &MachineId,
    paths: &[Removal],
) -> Result<(Vec<Result<(), String>>, Vec<Entry>), String> {
    match after(s.ask(m, &TreeReq::Removes(paths.to_vec())).await?) {
        (TreeResp::Removed(r), dirs) if r.len() == paths.len() => {
            Ok((r.into_iter().map(|e| e.map_or(Ok(()), Err)).collect(), dirs))
        }
        (other, _) => Err(unexpected(other)),
    }
}

pub async fn rename(
    s: &Sessions,
    m: &MachineId,
    from: &[String],
    to: &[String],
    flags: u32,
) -> Result<((), Vec<Entry>), String> {
    changed(s, m, &TreeReq::Rename { from: from.to_vec(), to: to.to_vec(), flags }).await
}

pub async fn set_attr(s: &Sessions, m: &MachineId, path: &[String], attrs: Attrs) -> Result<Entry, String> {
    entry(s, m, &TreeReq::SetAttr { path: path.to_vec(), attrs }).await
}

pub async fn symlink(
    s: &Sessions,
    m: &MachineId,
    path: &[String],
    target: &str,
) -> Result<(Entry, Vec<Entry>), String> {
    made(s, m, &TreeReq::Symlink { path: path.to_vec(), target: target.to_string() }).await
}

pub async fn readlink(s: &Sessions, m: &MachineId, path: &[String]) -> Result<String, String> {
    match s.ask(m, &TreeReq::Readlink(path.to_vec())).await? {
        TreeResp::Target(t) => Ok(t),
        other => Err(unexpected(other)),
    }
}

pub async fn link(s: &Sessions, m: &MachineId, from: &[String], to: &[String]) -> Result<(Entry, Vec<Entry>), String> {
    made(s, m, &TreeReq::Link { from: from.to_vec(), to: to.to_vec() }).await
}

pub async fn mknod(
    s: &Sessions,
    m: &MachineId,
    path: &[String],
    mode: u32,
    rdev: u64,
) -> Result<(Entry, Vec<Entry>), String> {
    made(s, m, &TreeReq::Mknod { path: path.to_vec(), mode, rdev }).await
}

pub async fn statfs(s: &Sessions, m: &MachineId, path: &[String]) -> Result<StatFs, String> {
    match s.ask(m, &TreeReq::StatFs(path.to_vec())).await? {
        TreeResp::StatFs(s) => Ok(s),
        other => Err(unexpected(other)),
    }
}

pub async fn getxattr(s: &Sessions, m: &MachineId, path: &[String], name: &str) -> Result<Vec<u8>, String> {
    match s.ask(m, &TreeReq::GetXattr { path: path.to_vec(), name: name.to_string() }).await? {
        TreeResp::Data(d) => Ok(d),
        other => Err(unexpected(other)),
    }
}

pub async fn setxattr(
    s: &Sessions,
    m: &MachineId,
    path: &[String],
    name: &str,
    value: Vec<u8>,
    flags: u32,
) -> Result<(), String> {
    done(s, m, &TreeReq::SetXattr { path: path.to_vec(), name: name.to_string(), value, flags }).await
}

pub async fn listxattr(s: &Sessions, m: &MachineId, path: &[String]) -> Result<Vec<String>, String> {
    match s.ask(m, &TreeReq::ListXattr(path.to_vec())).await? {
        TreeResp::Names(n) => Ok(n),
        other => Err(unexpected(other)),
    }
}

pub async fn removexattr(s: &Sessions, m: &MachineId, path: &[String], name: &str) -> Result<(), String> {
    done(s, m, &TreeReq::RemoveXattr { path: path.to_vec(), name: name.to_string() }).await
}
