//! This machine's tree, served to the others: the reserved service
//! `router` answering [`TreeReq`]s (see the module above for the
//! protocol).
//!
//! A request about `svc/S/root/...` is served only when S is a dir
//! service of this machine ([`local_only`]): a machine that forwarded it
//! here took this for the nearest replica, and forwarding it again could
//! bounce between machines whose route tables disagree for a moment.

use std::sync::Arc;

use bytes::Bytes;
use ns::conv::{Conv, Msg, Service};
use ns::envelope::MAX_MSG;
use ns::error;
use ns::policy::Access as Grant;
use tracing::debug;

use super::{batch, decode, encode, parse_raw_write, TreeReq, TreeResp, RAW};
use crate::fs::caller::{Caller, MAX_GROUPS};
use crate::fs::dir::locks::Owner;
use crate::fs::handle::Handle;
use crate::fs::tree::{Entry, FileKind};
use crate::fs::{handle_kind, Namespace};

/// This machine's tree, served to the others.
pub struct TreeServer(pub Arc<Namespace>);

impl Service for TreeServer {
    fn serve(&self, conv: Conv) -> futures::future::BoxFuture<'static, ()> {
        let ns = self.0.clone();
        Box::pin(async move {
            let peer = conv.tx.peer().cloned();
            if let Err(e) = serve(ns, conv).await {
                debug!(?peer, "tree server: {e}");
            }
        })
    }
}

/// The request's name, for errors (its Debug form may hold a megabyte).
fn what(req: &TreeReq) -> &'static str {
    match req {
        TreeReq::Stat(_) => "stat",
        TreeReq::List(_) => "list",
        TreeReq::Open { .. } => "open",
        TreeReq::Read { .. } => "read",
        TreeReq::Write(_) => "write",
        TreeReq::WriteAt { .. } => "write at",
        TreeReq::FileAttr(_) => "file attr",
        TreeReq::Sync => "sync",
        TreeReq::Create { .. } => "create",
        TreeReq::Mkdir { .. } => "mkdir",
        TreeReq::Remove { .. } => "remove",
        TreeReq::Removes(_) => "removes",
        TreeReq::Rename { .. } => "rename",
        TreeReq::SetAttr { .. } => "setattr",
        TreeReq::View => "view",
        TreeReq::Symlink { .. } => "symlink",
        TreeReq::Readlink(_) => "readlink",
        TreeReq::Link { .. } => "link",
        TreeReq::Mknod { .. } => "mknod",
        TreeReq::StatFs(_) => "statfs",
        TreeReq::GetXattr { .. } => "getxattr",
        TreeReq::SetXattr { .. } => "setxattr",
        TreeReq::ListXattr(_) => "listxattr",
        TreeReq::RemoveXattr { .. } => "removexattr",
        TreeReq::Allocate { .. } => "fallocate",
        TreeReq::Lock { .. } => "lock",
        TreeReq::Watch => "watch",
        TreeReq::Session => "session",
    }
}

/// Refuses `svc/S/root/...` unless S is a dir service here.
fn local_only(ns: &Namespace, path: &[String]) -> Result<(), String> {
    match path {
        [svc, s, root, ..] if svc == "svc" && root == "root" && !ns.has_root(s) => {
            Err(format!("'/{}' file does not exist", path.join("/")))
        }
        _ => Ok(()),
    }
}

/// An answer as a message: one too large to send is an error instead.
fn reply(resp: Result<TreeResp, String>) -> Bytes {
    let b = encode(&resp.unwrap_or_else(TreeResp::Err));
    if b.len() > MAX_MSG {
        return encode(&TreeResp::Err(ns::error::detail(ns::error::ETOOBIG, format!("answer of {} bytes", b.len()))));
    }
    b
}

async fn serve(ns: Arc<Namespace>, mut conv: Conv) -> Result<(), String> {
    let Some(Msg::Data(first)) = conv.rx.recv().await else { return Ok(()) };
    let (caller, req) = decode::<(Caller, TreeReq)>(&first)?;
    if caller.groups.len() > MAX_GROUPS {
        return conv.tx.send(reply(Err(format!("bad tree message: {} groups", caller.groups.len())))).await;
    }
    let grant = match permitted(&ns, &conv, &req) {
        Ok(g) => g,
        Err(e) => return conv.tx.send(reply(Err(e))).await,
    };
    // A local client (`mesh ns`, `mesh ls`) is root or the router's user,
    // as the socket checked; another machine's users are squashed as the
    // service they reach says.
    let remote = conv.tx.peer().and_then(|p| p.machine.as_ref()) != Some(ns.router().id());
    let caller = match request_paths(&req).first() {
        Some(p) => ns.caller_for(p, caller, remote),
        None => caller,
    };
    let asker = conv.tx.peer().and_then(|p| p.machine.clone());
    if matches!(req, TreeReq::Session) {
        return crate::fs::dir::watch::asked_by(asker, serve_session(ns, conv, caller, remote)).await;
    }
    // Checked above for the asker: what this opens is the router's own.
    let caller = Caller { on_behalf: true, ..caller };
    crate::fs::dir::watch::asked_by(asker, caller.scope(serve_req(ns, conv, req, grant))).await
}

/// A change of names done, with the directories of `paths` as they are
/// after it, each once, where this machine tells the asker of their
/// changes (see [`TreeResp::After`]): the asker need not ask again.
async fn after(ns: &Namespace, r: Result<TreeResp, String>, paths: &[&[String]]) -> Result<TreeResp, String> {
    let resp = r?;
    let mut dirs: Vec<Entry> = Vec::new();
    // Each directory looked at once, however many of its names changed.
    let mut asked: Vec<&[String]> = Vec::new();
    for p in paths {
        let Some((_, dir)) = p.split_last() else { continue };
        if asked.contains(&dir) {
            continue;
        }
        asked.push(dir);
        let Ok(e) = ns.dir_now(dir).await else { continue };
        if e.watched_id().is_some() && !dirs.iter().any(|d| d.watched_id() == e.watched_id()) {
            dirs.push(e);
        }
    }
    Ok(if dirs.is_empty() { resp } else { TreeResp::After(Box::new(resp), dirs) })
}

/// The rules (`allow`, `read`) of the services whose files, data or
/// conversations a request names, for the machine and user that asked:
/// the least they grant, or why the request is refused.
fn permitted(ns: &Namespace, conv: &Conv, req: &TreeReq) -> Result<Grant, String> {
    granted(ns, conv, &request_paths(req), changes(req))
}

/// [`permitted`] for `paths`, by a request that `changes` them or not.
fn granted<P: AsRef<[String]>>(ns: &Namespace, conv: &Conv, paths: &[P], changes: bool) -> Result<Grant, String> {
    let Some(machine) = conv.tx.peer().and_then(|p| p.machine.clone()) else { return Ok(Grant::Full) };
    let user = conv.tx.peer_user();
    let remote = machine != *ns.router().id();
    let who = || ns::policy::who(&machine, user);
    let mut least = Grant::Full;
    for p in paths {
        let p = p.as_ref();
        match ns.grant(p, &machine, user, remote)? {
            Grant::Denied => {
                let what = format!("{} may not reach /{}", who(), p.join("/"));
                return Err(error::detail(error::EPERM, what));
            }
            Grant::Read if changes => {
                return Err(error::detail(error::EROFS, format!("{} may only read /{}", who(), p.join("/"))));
            }
            Grant::Read => least = Grant::Read,
            Grant::Full => {}
        }
    }
    Ok(least)
}

/// Whether a request on an open file only reads: reads, syncs, shared
/// locks and their tests, and attribute requests that set nothing.
fn is_read(b: &[u8]) -> bool {
    if b.first() == Some(&RAW) {
        return false;
    }
    match decode::<TreeReq>(b) {
        Ok(TreeReq::Read { .. } | TreeReq::Sync) => true,
        Ok(TreeReq::Lock { lock, get, .. }) => get || lock.typ != libc::F_WRLCK,
        Ok(TreeReq::FileAttr(a)) => a == Default::default(),
        _ => false,
    }
}

/// Whether a request changes what it names (a read-only grant refuses
/// it). Reads and writes through an open file were judged at its open.
fn changes(req: &TreeReq) -> bool {
    match req {
        TreeReq::Open { access, .. } => access.write || access.trunc,
        TreeReq::Create { .. }
        | TreeReq::Mkdir { .. }
        | TreeReq::Remove { .. }
        | TreeReq::Removes(_)
        | TreeReq::Rename { .. }
        | TreeReq::SetAttr { .. }
        | TreeReq::Symlink { .. }
        | TreeReq::Link { .. }
        | TreeReq::Mknod { .. }
        | TreeReq::SetXattr { .. }
        | TreeReq::RemoveXattr { .. } => true,
        _ => false,
    }
}

/// The paths a request names: its source first, for rename and link.
fn request_paths(req: &TreeReq) -> Vec<&[String]> {
    match req {
        TreeReq::Rename { from, to, .. } | TreeReq::Link { from, to } => vec![from, to],
        TreeReq::Removes(paths) => paths.iter().map(|p| p.path.as_slice()).collect(),
        TreeReq::Stat(p) | TreeReq::List(p) | TreeReq::Readlink(p) | TreeReq::StatFs(p) | TreeReq::ListXattr(p) => {
            vec![p]
        }
        TreeReq::GetXattr { path, .. }
        | TreeReq::SetXattr { path, .. }
        | TreeReq::RemoveXattr { path, .. }
        | TreeReq::Symlink { path, .. }
        | TreeReq::Mknod { path, .. }
        | TreeReq::Open { path, .. }
        | TreeReq::Create { path, .. }
        | TreeReq::Mkdir { path, .. }
        | TreeReq::Remove { path, .. }
        | TreeReq::SetAttr { path, .. } => vec![path],
        _ => vec![],
    }
}

async fn serve_req(ns: Arc<Namespace>, mut conv: Conv, req: TreeReq, grant: Grant) -> Result<(), String> {
    // What an open file was opened as, judged again on each request on it.
    let opened: Vec<Vec<String>> = request_paths(&req).into_iter().map(<[String]>::to_vec).collect();
    tracing::trace!(req = what(&req), "tree request");
    if matches!(req, TreeReq::View) {
        return serve_view(&ns, &mut conv).await;
    }
    if matches!(req, TreeReq::Watch) {
        return serve_watch(&ns, &mut conv).await;
    }
    if let Err(e) = request_paths(&req).iter().try_for_each(|p| local_only(&ns, p)) {
        return conv.tx.send(reply(Err(e))).await;
    }
    // A file of a served directory takes batches from an opener that
    // sends them (see `super::batch`).
    let batching = |asked: bool, h: &Handle, resp: TreeResp| match asked && handle_kind(h) == FileKind::Stored {
        true => TreeResp::Batching(Box::new(resp)),
        false => resp,
    };
    let h = match req {
        TreeReq::Open { path, access, batch } => match ns.open_with(&path, access).await {
            Ok(h) => {
                let opened = match batch && handle_kind(&h) == FileKind::Stored {
                    true => opened_with(&ns, &h, access.read).await,
                    false => TreeResp::Opened(handle_kind(&h)),
                };
                conv.tx.send(reply(Ok(batching(batch, &h, opened)))).await?;
                h
            }
            Err(e) => return conv.tx.send(reply(Err(e))).await,
        },
        TreeReq::Create { path, mode, access, excl, batch } => match ns.create(&path, mode, access, excl).await {
            Ok((e, h)) => {
                let resp = after(&ns, Ok(TreeResp::Created(e)), &[&path]).await;
                conv.tx.send(reply(resp.map(|r| batching(batch, &h, r)))).await?;
                h
            }
            Err(e) => return conv.tx.send(reply(Err(e))).await,
        },
        other => return conv.tx.send(reply(one_shot(&ns, other).await)).await,
    };
    let res = match handle_kind(&h) {
        FileKind::Stream => pump(&ns, &h, &mut conv).await,
        _ => answer(&ns, &h, &mut conv, Opened { paths: &opened, grant }).await,
    };
    ns.release(h).await;
    res
}

/// A file of a served directory just opened, as it is, and its bytes if
/// opened to read and small (see [`TreeResp::OpenedWith`]); if it cannot
/// be looked at, just that it is open.
async fn opened_with(ns: &Namespace, h: &Handle, read: bool) -> TreeResp {
    let Ok(entry) = ns.handle_attr(h, crate::fs::dir::Attrs::default()).await else {
        return TreeResp::Opened(FileKind::Stored);
    };
    let small = entry.meta.is_some_and(|m| m.size <= super::HEAD);
    let head = match read && small {
        // All of it, as the look saw it: a file changing meanwhile is
        // read when asked.
        true => ns
            .read(h, 0, super::HEAD as usize + 1)
            .await
            .ok()
            .filter(|b| Some(b.len() as u64) == entry.meta.map(|m| m.size)),
        false => None,
    };
    TreeResp::OpenedWith { entry, head: head.map(|b| serde_bytes::ByteBuf::from(b.to_vec())) }
}

/// A request answered once: not on an open file.
async fn one_shot(ns: &Arc<Namespace>, req: TreeReq) -> Result<TreeResp, String> {
    let done = |_| TreeResp::Done;
    match req {
        TreeReq::Stat(p) => ns.stat(&p).await.map(TreeResp::Entry),
        TreeReq::List(p) => ns.list(&p).await.map(TreeResp::Entries),
        TreeReq::Mkdir { path, mode } => after(ns, ns.mkdir(&path, mode).await.map(TreeResp::Entry), &[&path]).await,
        TreeReq::Remove { path, dir } => after(ns, ns.remove(&path, dir).await.map(done), &[&path]).await,
        TreeReq::Rename { from, to, flags } => {
            after(ns, ns.rename(&from, &to, flags).await.map(done), &[&from, &to]).await
        }
        TreeReq::GetXattr { path, name } => ns.getxattr(&path, &name).await.map(TreeResp::Data),
        TreeReq::SetXattr { path, name, value, flags } => ns.setxattr(&path, &name, &value, flags).await.map(done),
        TreeReq::ListXattr(p) => ns.listxattr(&p).await.map(TreeResp::Names),
        TreeReq::RemoveXattr { path, name } => ns.removexattr(&path, &name).await.map(done),
        TreeReq::SetAttr { path, attrs } => ns.set_attr(&path, None, attrs).await.map(TreeResp::Entry),
        TreeReq::Symlink { path, target } => {
            after(ns, ns.symlink(&path, &target).await.map(TreeResp::Entry), &[&path]).await
        }
        TreeReq::Readlink(p) => ns.readlink(&p).await.map(TreeResp::Target),
        TreeReq::Link { from, to } => after(ns, ns.link(&from, &to).await.map(TreeResp::Entry), &[&to]).await,
        TreeReq::Mknod { path, mode, rdev } => {
            after(ns, ns.mknod(&path, mode, rdev).await.map(TreeResp::Entry), &[&path]).await
        }
        TreeReq::StatFs(p) => ns.statfs(&p).await.map(TreeResp::StatFs),
        other => Err(format!("{} before open", what(&other))),
    }
}

/// A session (see `super::session`): after `Done`, each message one
/// request, judged as a first message is, answered in order, until the
/// asking machine hangs up.
async fn serve_session(ns: Arc<Namespace>, mut conv: Conv, caller: Caller, remote: bool) -> Result<(), String> {
    conv.tx.send(reply(Ok(TreeResp::Done))).await?;
    while let Some(Msg::Data(b)) = conv.rx.recv().await {
        let resp = match decode::<TreeReq>(&b) {
            Ok(req) => session_req(&ns, &conv, &caller, remote, req).await,
            Err(e) => Err(e),
        };
        conv.tx.send(reply(resp)).await?;
    }
    Ok(())
}

async fn session_req(
    ns: &Arc<Namespace>,
    conv: &Conv,
    caller: &Caller,
    remote: bool,
    req: TreeReq,
) -> Result<TreeResp, String> {
    tracing::trace!(req = what(&req), "tree request in a session");
    if !super::session::in_session(&req) {
        return Err(format!("bad tree message: {} in a session", what(&req)));
    }
    request_paths(&req).iter().try_for_each(|p| local_only(ns, p))?;
    permitted(ns, conv, &req)?;
    if let TreeReq::Removes(paths) = req {
        return removes(ns, caller, remote, paths).await;
    }
    let c = match request_paths(&req).first() {
        Some(p) => ns.caller_for(p, caller.clone(), remote),
        None => caller.clone(),
    };
    Caller { on_behalf: true, ..c }.scope(one_shot(ns, req)).await
}

/// Removes each file or directory as its own request would, in order,
/// for the caller as its path's service takes it; the directories after.
async fn removes(
    ns: &Arc<Namespace>,
    caller: &Caller,
    remote: bool,
    paths: Vec<super::Removal>,
) -> Result<TreeResp, String> {
    let mut done = Vec::with_capacity(paths.len());
    for r in &paths {
        let c = ns.caller_for(&r.path, caller.clone(), remote);
        done.push(Caller { on_behalf: true, ..c }.scope(ns.remove_checked(r)).await.err());
    }
    let changed: Vec<&[String]> = paths.iter().map(|r| r.path.as_slice()).collect();
    after(ns, Ok(TreeResp::Removed(done)), &changed).await
}

/// The most changes one message carries.
const CHANGES_PER_MESSAGE: usize = 256;
/// How long a change told to another machine waits for others to go
/// with it. Each message costs both routers a thread wake-up (tens of
/// microseconds each on a VM), a request to a served directory a few
/// hundred microseconds: without the wait, a machine changing files in
/// a loop sent a notice per request, as dear as the request's answer.
const WATCH_GATHER: std::time::Duration = std::time::Duration::from_millis(1);

/// Tells the asking machine of changes in what it looks into, until it
/// hangs up. A machine that does not read them as fast as they come is
/// told to forget all instead (the feed overflows).
async fn serve_watch(ns: &Arc<Namespace>, conv: &mut Conv) -> Result<(), String> {
    let who = conv.tx.peer().and_then(|p| p.machine.clone());
    let feed = match ns.coherence().watcher.subscribe(who) {
        Ok(f) => f,
        Err(e) => return conv.tx.send(reply(Err(e))).await,
    };
    conv.tx.send(reply(Ok(TreeResp::Done))).await?;
    loop {
        tokio::select! {
            mut changes = feed.next() => {
                if changes.is_empty() {
                    return Ok(());
                }
                // Changes come in bursts (a tar, a git, a loop of
                // requests): what comes within WATCH_GATHER goes along,
                // a message and a wake-up on each side per burst rather
                // than per change.
                tokio::time::sleep(WATCH_GATHER).await;
                changes.extend(feed.next_now());
                for c in changes.chunks(CHANGES_PER_MESSAGE) {
                    conv.tx.send(reply(Ok(TreeResp::Changed(c.to_vec())))).await?;
                }
            }
            m = conv.rx.recv() => if !matches!(m, Some(Msg::Data(_))) {
                return Ok(());
            },
        }
    }
}

/// Views made so far, to name their mount points.
static VIEWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Mounts a private view of this tree for a local client and keeps it
/// while the conversation lasts (`mesh ns`).
async fn serve_view(ns: &Arc<Namespace>, conv: &mut Conv) -> Result<(), String> {
    let local = conv.tx.peer().and_then(|p| p.machine.clone()).is_some_and(|m| m == *ns.router().id());
    if !local {
        return conv.tx.send(reply(Err(ns::error::detail(ns::error::EPERM, "views are for local clients")))).await;
    }
    let Some((mount, allow_other)) = ns.mounted_at() else {
        return conv.tx.send(reply(Err(format!("machine {} has no mounted tree", ns.router().id())))).await;
    };
    let n = VIEWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staging =
        ns::client::socket_dir().join("views").join(format!("{}.{}.{n}", ns.router().id(), std::process::id()));
    let view = ns.view();
    let mounted = match crate::fs::mount::mount(view.clone(), &staging, allow_other).await {
        Ok(m) => m,
        Err(e) => return conv.tx.send(reply(Err(format!("view: {e:#}")))).await,
    };
    let resp = TreeResp::View { staging: staging.display().to_string(), mount: mount.display().to_string() };
    let res = conv.tx.send(reply(Ok(resp))).await;
    if res.is_ok() {
        // The view lives as long as its conversation, which carries ctl
        // messages for it (bind, unmount, mount), each answered.
        while let Some(Msg::Data(b)) = conv.rx.recv().await {
            let resp = match decode::<TreeReq>(&b) {
                Ok(TreeReq::Write(d)) => {
                    let target = crate::fs::ctl::Target::Router;
                    crate::fs::ctl::apply(&view, &target, &d).await.map(|_| TreeResp::Written(d.len() as u32))
                }
                Ok(other) => Err(format!("{} on a view", what(&other))),
                Err(e) => Err(e),
            };
            if conv.tx.send(reply(resp)).await.is_err() {
                break;
            }
        }
    }
    mounted.unmount().await;
    let _ = std::fs::remove_dir(&staging);
    res
}

/// Text, ctl and stored files: one answer per request, in order. Locks
/// the opener took are dropped when it closes the file or is gone.
/// The paths an open file was opened by, and the grant it had then.
struct Opened<'a> {
    paths: &'a [Vec<String>],
    grant: Grant,
}

async fn answer(ns: &Namespace, h: &Handle, conv: &mut Conv, opened: Opened<'_>) -> Result<(), String> {
    let machine = conv.tx.peer().and_then(|p| p.machine.as_ref()).map_or_else(String::new, |m| m.to_string());
    let mut owners = Vec::new();
    let res = answer_all(ns, h, conv, &machine, &mut owners, opened).await;
    for o in &owners {
        ns.unlock_all(h, o);
    }
    res
}

async fn answer_all(
    ns: &Namespace,
    h: &Handle,
    conv: &mut Conv,
    machine: &str,
    owners: &mut Vec<Owner>,
    opened: Opened<'_>,
) -> Result<(), String> {
    let mut grant = opened.grant;
    while let Some(Msg::Data(b)) = conv.rx.recv().await {
        // The rules may have changed since the open (a reload): a file
        // is held to them from its next request on.
        if !ns.router().policy().is_open() {
            match granted(ns, conv, opened.paths, false) {
                Ok(Grant::Read) => grant = Grant::Read,
                Ok(_) => {}
                Err(e) => {
                    conv.tx.send(reply(Err(e))).await?;
                    return Ok(());
                }
            }
        }
        let file = OpenFile { ns, h, machine, grant };
        let answer = match batch::is_batch(&b) && handle_kind(h) == FileKind::Stored {
            true => file.answer_batch(owners, &b).await,
            false => file.answer(owners, &b, false).await,
        };
        match answer {
            Ok(a) => conv.tx.send(a).await?,
            // Not a request: the opener is told why, and the file closes.
            Err(e) => {
                conv.tx.send_error(&e).await;
                return Err(e);
            }
        }
    }
    Ok(())
}

/// An open file, as one request on it finds it.
struct OpenFile<'a> {
    ns: &'a Namespace,
    h: &'a Handle,
    /// The opening machine, whose lock owners these are.
    machine: &'a str,
    grant: Grant,
}

impl OpenFile<'_> {
    /// The answers to batch `b`, together, in order; one that fails does
    /// not stop the others, as each alone would not. What a batch may ask
    /// is bounded, so its answer is (reads of at most `batch::ITEM_MAX`,
    /// answers of at most half a message in all).
    async fn answer_batch(&self, owners: &mut Vec<Owner>, b: &Bytes) -> Result<Bytes, String> {
        let mut answers = Vec::new();
        let mut bytes = 0;
        for m in batch::split(b)? {
            let a = self.answer(owners, &m, true).await?;
            bytes += a.len();
            if bytes > MAX_MSG / 2 {
                return Err(format!("bad tree message: a batch answered by more than {} bytes", MAX_MSG / 2));
            }
            answers.push(a);
        }
        Ok(batch::join(&answers))
    }

    /// The answer to message `b` (in a batch, if `batched`); an error for
    /// a message that is not a request, which ends the conversation.
    async fn answer(&self, owners: &mut Vec<Owner>, b: &Bytes, batched: bool) -> Result<Bytes, String> {
        let (ns, h) = (self.ns, self.h);
        let stored = handle_kind(h) == FileKind::Stored;
        if self.grant == Grant::Read && !is_read(b) {
            return Ok(reply(Err(error::detail(error::EROFS, "the file is open under a read-only grant"))));
        }
        if stored && b.first() == Some(&RAW) {
            let (offset, data) = parse_raw_write(b)?;
            return Ok(reply(ns.write_bytes(h, offset, data).await.map(|n| TreeResp::Written(n as u32))));
        }
        let resp = match decode::<TreeReq>(b)? {
            TreeReq::Read { size, .. } if batched && size as usize > batch::ITEM_MAX => {
                return Err(format!("bad tree message: a read of {size} bytes in a batch"));
            }
            TreeReq::Read { offset, size } if stored => match ns.read_tagged(h, offset, size as usize, RAW).await {
                Ok(msg) => return Ok(msg),
                Err(e) => Err(e),
            },
            TreeReq::Read { offset, size } => {
                ns.read(h, offset, size as usize).await.map(|d| TreeResp::Data(d.to_vec()))
            }
            TreeReq::Write(d) => ns.write(h, &d).await.map(|n| TreeResp::Written(n as u32)),
            TreeReq::WriteAt { offset, data } => {
                ns.write_at(h, offset, &data).await.map(|n| TreeResp::Written(n as u32))
            }
            TreeReq::FileAttr(a) => ns.handle_attr(h, a).await.map(TreeResp::Entry),
            TreeReq::Sync => ns.sync(h).await.map(|_| TreeResp::Done),
            TreeReq::Allocate { offset, len, mode } => ns.allocate(h, offset, len, mode).await.map(|_| TreeResp::Done),
            TreeReq::Lock { owner, lock, get } => {
                let owner = (self.machine.to_string(), owner);
                if !get && !owners.contains(&owner) {
                    owners.push(owner.clone());
                }
                ns.lock_for(h, owner, lock, get).await.map(TreeResp::Lock)
            }
            other => Err(format!("{} on an open file", what(&other))),
        };
        Ok(reply(resp))
    }
}

/// How long a write to a stream may wait for the service once the opener
/// has gone (closed, or killed while its own write was blocked): what it
/// wrote is still delivered while the service takes it, but a service
/// that has stopped reading would otherwise hold this conversation, and
/// its own, for ever. A local opener's service is told at once instead.
const ORPHANED: std::time::Duration = std::time::Duration::from_secs(10);

/// Stream files: messages both ways until the opener closes, and what it
/// wrote is delivered (see [`ORPHANED`]).
async fn pump(ns: &Namespace, h: &Handle, conv: &mut Conv) -> Result<(), String> {
    let mut cancels = conv.rx.cancels();
    let mut reading = true;
    loop {
        tokio::select! {
            // A cancel first: the opener's interrupted read is followed at
            // once by its close, and both may be here when this wakes.
            biased;
            Ok(()) = cancels.changed() => ns.cancel(h).await,
            m = conv.rx.recv() => match m {
                Some(Msg::Data(b)) => {
                    let write = ns.write(h, &b);
                    tokio::pin!(write);
                    tokio::select! {
                        r = &mut write => r?,
                        () = conv.tx.hung_up() => match tokio::time::timeout(ORPHANED, write).await {
                            Ok(r) => r?,
                            Err(_) => {
                                debug!("the opener is gone and the service stopped reading: closing");
                                return Ok(());
                            }
                        },
                    };
                }
                // The opener closed the file, or failed.
                _ => return Ok(()),
            },
            d = ns.read(h, 0, MAX_MSG), if reading => {
                let d = d?;
                if d.is_empty() {
                    // End of the file; keep it open until the opener closes.
                    conv.tx.eof().await;
                    reading = false;
                } else {
                    conv.tx.send(d).await?;
                }
            }
        }
    }
}
