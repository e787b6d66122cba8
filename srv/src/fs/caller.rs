//! Who asks: the user and groups a change or a look at a served directory
//! is made for, from the FUSE request (or the tree request of another
//! machine) to the thread that does the file I/O.
//!
//! Each request handler runs its work inside [`Caller::scope`]; the
//! closure doing the file I/O then takes the caller on as its thread's file
//! system identity ([`as_caller`]: setfsuid, setfsgid and the thread's own
//! supplementary groups, as knfsd and diod do), so the serving kernel
//! answers every permission question itself, ACLs, sticky directories and
//! set-group-ID directories included, and new files belong to their
//! makers. A router that is not root can act only as itself: it serves
//! its own user and refuses the others (EACCES).
//!
//! Users travel as [`Id`]s: the calling router's own user stands for the
//! serving router's (two machines whose routers run as different users
//! still share their files), others by number, as NFS's AUTH_SYS does. A
//! caller from another machine whose user is root here is squashed to
//! `nobody` unless the service says otherwise ([`Squash`], the `squash`
//! key of mesh.toml(5)).
//!
//! Lock order: the group cache's mutex is a leaf.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use ns::deploy::Squash;
use serde::{Deserialize, Serialize};

use super::dir::Id;

/// A user that owns nothing: what a squashed caller becomes.
pub const NOBODY: u32 = 65534;
/// Its group (Debian's `nogroup`).
pub const NOGROUP: u32 = 65534;
/// The most supplementary groups a caller brings (the kernel's
/// NGROUPS_MAX is 65536; a request is no place for that many).
pub const MAX_GROUPS: usize = 64;

tokio::task_local! {
    static CALLER: Caller;
}

/// A user, their group and their supplementary groups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub uid: Id,
    pub gid: Id,
    pub groups: Vec<u32>,
    /// Work the tree server does for another machine's request, whose
    /// rules it checked itself: conversations it opens are the router's
    /// own (see [`Caller::current_user`]). Never sent.
    #[serde(skip)]
    pub on_behalf: bool,
}

impl Caller {
    /// The router's own user (what work done for nobody in particular,
    /// or for a local client, runs as).
    pub fn router() -> Caller {
        Caller { uid: Id::Router, gid: Id::Router, groups: Vec::new(), on_behalf: false }
    }

    pub fn nobody() -> Caller {
        Caller { uid: Id::Num(NOBODY), gid: Id::Num(NOGROUP), groups: Vec::new(), on_behalf: false }
    }

    /// The caller of the request being handled, if it has one.
    pub fn current() -> Option<Caller> {
        CALLER.try_with(Caller::clone).ok()
    }

    /// The name of the user of the request being handled, for the rules
    /// of the services it reaches (`allow`); `None` for work the router
    /// does for nobody in particular.
    pub fn current_user() -> Option<std::sync::Arc<str>> {
        CALLER.try_with(|c| (!c.on_behalf).then(|| ns::policy::user_name(c.uid.here(own().0)))).ok().flatten()
    }

    /// Runs `work` for this caller.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        CALLER.scope(self, work).await
    }

    /// The caller a process of this machine is, with user `uid`, group
    /// `gid` (as FUSE tells them) and `pid`'s supplementary groups, read
    /// only when they can matter: for a user other than the router's.
    pub fn local(uid: u32, gid: u32, pid: u32) -> Caller {
        let (own_uid, own_gid) = own();
        let id = |n: u32, own: u32| if n == own { Id::Router } else { Id::Num(n) };
        let groups = if uid == own_uid { Vec::new() } else { groups_of(pid, uid, gid) };
        Caller { uid: id(uid, own_uid), gid: id(gid, own_gid), groups, on_behalf: false }
    }

    /// The caller as a served directory with `squash` takes it from
    /// another machine.
    pub fn squashed(self, squash: Squash) -> Caller {
        match squash {
            Squash::None => self,
            Squash::All => Caller::nobody(),
            Squash::Root if self.uid.here(own().0) == 0 => Caller::nobody(),
            Squash::Root => self,
        }
    }
}

/// The router's user and group, asked once: every request and every
/// entry listed needs them, and they do not change.
pub(crate) fn own() -> (u32, u32) {
    static OWN: LazyLock<(u32, u32)> =
        LazyLock::new(|| (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw()));
    *OWN
}

/// The router's supplementary groups, which a thread gets back after
/// acting for someone.
static OWN_GROUPS: LazyLock<Vec<libc::gid_t>> =
    LazyLock::new(|| nix::unistd::getgroups().map(|g| g.into_iter().map(|g| g.as_raw()).collect()).unwrap_or_default());

/// How long a process's groups are taken as known: a FUSE request names
/// only the user and group, and reading `/proc` for every request of a
/// busy reader would cost more than the request.
const GROUPS_KEPT: Duration = Duration::from_secs(1);
const GROUPS_CACHED: usize = 1024;

type GroupCache = HashMap<(u32, u32, u32), (Instant, Vec<u32>)>;
static GROUPS: LazyLock<Mutex<GroupCache>> = LazyLock::new(Mutex::default);

/// The supplementary groups of process (or thread) `pid`, from
/// `/proc/PID/status`; none when it is gone or is no longer `uid`.
fn groups_of(pid: u32, uid: u32, gid: u32) -> Vec<u32> {
    let key = (pid, uid, gid);
    let now = Instant::now();
    {
        let cache = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, g)) = cache.get(&key) {
            if now.duration_since(*at) < GROUPS_KEPT {
                return g.clone();
            }
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).unwrap_or("");
    // The process may have changed user since it asked: then it gets no
    // groups rather than another user's.
    let real_uid = field("Uid:").split_whitespace().nth(1).and_then(|u| u.parse::<u32>().ok());
    let groups: Vec<u32> = if real_uid == Some(uid) {
        field("Groups:").split_whitespace().filter_map(|g| g.parse().ok()).take(MAX_GROUPS).collect()
    } else {
        Vec::new()
    };
    let mut cache = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= GROUPS_CACHED {
        cache.retain(|_, (at, _)| now.duration_since(*at) < GROUPS_KEPT);
        if cache.len() >= GROUPS_CACHED {
            cache.clear();
        }
    }
    cache.insert(key, (now, groups.clone()));
    groups
}

/// The thread's file system identity while it acts for someone; dropping
/// it makes the thread the router again.
struct Acting;

impl Drop for Acting {
    fn drop(&mut self) {
        // SAFETY: plain system calls on this thread's own credentials;
        // the group list outlives the call.
        unsafe {
            libc::syscall(libc::SYS_setgroups, OWN_GROUPS.len(), OWN_GROUPS.as_ptr());
            libc::setfsgid(own().1);
            libc::setfsuid(own().0);
        }
    }
}

/// Makes this thread act for `c` on the file system until the guard is
/// dropped. `None` when it is the router already.
fn act_as(c: &Caller) -> Result<Option<Acting>, String> {
    let (own_uid, own_gid) = own();
    let (uid, gid) = (c.uid.here(own_uid), c.gid.here(own_gid));
    if own_uid != 0 {
        // Not root: only the router's own user is served.
        return if uid == own_uid { Ok(None) } else { Err(refused(uid)) };
    }
    let groups: Vec<libc::gid_t> = c.groups.iter().take(MAX_GROUPS).copied().collect();
    if uid == own_uid && gid == own_gid && (groups.is_empty() || groups == *OWN_GROUPS) {
        return Ok(None);
    }
    let acting = Acting;
    // SAFETY: as in `Acting::drop`. setgroups through the raw system call
    // changes this thread alone (glibc's wrapper changes every thread).
    // setfsuid and setfsgid cannot fail for root; a thread that could
    // not switch is caught by the check after.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
            return Err(refused(uid));
        }
        libc::setfsgid(gid);
        libc::setfsuid(uid);
        // setfsuid answers with the previous value; asking again with an
        // impossible one reads the current one.
        if libc::setfsuid(u32::MAX) as u32 != uid || libc::setfsgid(u32::MAX) as u32 != gid {
            return Err(refused(uid));
        }
    }
    Ok(Some(acting))
}

fn refused(uid: u32) -> String {
    ns::error::detail(ns::error::EPERM, format!("this router cannot act for uid {uid}"))
}

thread_local! {
    /// Whether this thread has a file system context (umask, cwd) of its
    /// own, unshared from the process's.
    static OWN_FS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, which makes a file, with no umask of the router's: the mode
/// asked for was masked by the caller's own umask already (its kernel does
/// that before FUSE sends it), and the router's (022) would mask it again,
/// so `mkdir -m 777` under umask 0 made 755. The umask is the process's,
/// shared by every thread, so the thread first takes a file system context
/// of its own (`unshare(CLONE_FS)`, once; the router never changes its
/// working directory after starting): then its umask is its alone. A
/// thread that cannot (no such kernel support) makes files as before.
pub fn unmasked<T>(f: impl FnOnce() -> T) -> T {
    let own = OWN_FS.with(|o| {
        // SAFETY: unshare(CLONE_FS) gives this thread its own copy of
        // umask, cwd and root; nothing else changes.
        if !o.get() && unsafe { libc::unshare(libc::CLONE_FS) } == 0 {
            o.set(true);
        }
        o.get()
    });
    if !own {
        return f();
    }
    // SAFETY: this thread's own umask, restored after.
    let was = unsafe { libc::umask(0) };
    let r = f();
    // SAFETY: as above.
    unsafe { libc::umask(was) };
    r
}

/// Runs `f` on this thread as caller `c` (the router when `None`).
pub fn as_caller<T>(c: Option<&Caller>, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let _acting = match c {
        Some(c) => act_as(c)?,
        None => None,
    };
    f()
}
