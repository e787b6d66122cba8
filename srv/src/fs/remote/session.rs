//! Sessions: the requests that get one answer (a stat, a create's look,
//! an unlink, a rename, a chmod by name), sent on a conversation kept per
//! machine and caller, as 9P and NFS send theirs on one connection.
//!
//! A conversation opened for one request and closed after it costs both
//! routers four envelopes more than the request and its answer (each
//! end's `Eof` and hangup) and the serving router a task: a loop of
//! renames from another machine cost each router about 330 us of CPU a
//! rename, three times a request on an open file (doc/measurements.md).
//!
//! A session is a conversation with the tree server whose first message
//! is the caller and [`TreeReq::Session`], answered `Done`. Each message
//! after it is one request, judged on its own as a first message is (the
//! rules as they are now, the caller squashed as the path it names says),
//! and answered in order. A session carries one request at a time: a
//! caller takes an idle session of its machine and caller, or opens one;
//! at most [`MAX_IDLE`] are kept idle. One whose conversation failed is
//! not kept. A caller interrupted while it waits drops its session with
//! it, since the answer would reach the next caller. A request is never
//! asked again elsewhere after it was sent (a rename asked twice is not
//! a rename). A machine that does not know sessions (an older router)
//! is asked in conversations of their own for [`REFUSED_FOR`].
//!
//! Lock order: `idle` and `refused` are leaves, never held across an
//! await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ns::conv::{Conv, Msg};
use ns::{MachineId, Router};

use super::{begin, decode, encode, once, server, TreeReq, TreeResp};
use crate::fs::caller::Caller;

/// Idle sessions kept, for all machines and callers together.
pub const MAX_IDLE: usize = 64;
/// How long a machine that refused a session is not asked for one.
pub const REFUSED_FOR: Duration = Duration::from_secs(60);

/// Whom a session is for: the machine asked, and the caller and user its
/// first message named.
#[derive(PartialEq)]
struct Key {
    machine: MachineId,
    caller: Caller,
    user: Option<Arc<str>>,
}

/// A router's sessions with other machines' tree servers.
pub struct Sessions {
    router: Router,
    /// Idle sessions, the most recently used last.
    idle: Mutex<Vec<(Key, Conv)>>,
    /// Machines that answered a session with an error, and when.
    refused: Mutex<HashMap<MachineId, Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a request goes in a session: those answered once, not those
/// that make the conversation something else (an open file, a watch).
pub(super) fn in_session(req: &TreeReq) -> bool {
    matches!(
        req,
        TreeReq::Stat(_)
            | TreeReq::List(_)
            | TreeReq::Mkdir { .. }
            | TreeReq::Remove { .. }
            | TreeReq::Removes(_)
            | TreeReq::Rename { .. }
            | TreeReq::SetAttr { .. }
            | TreeReq::Symlink { .. }
            | TreeReq::Readlink(_)
            | TreeReq::Link { .. }
            | TreeReq::Mknod { .. }
            | TreeReq::StatFs(_)
            | TreeReq::GetXattr { .. }
            | TreeReq::SetXattr { .. }
            | TreeReq::ListXattr(_)
            | TreeReq::RemoveXattr { .. }
    )
}

impl Sessions {
    pub fn new(router: Router) -> Sessions {
        Sessions { router, idle: Mutex::new(Vec::new()), refused: Mutex::new(HashMap::new()) }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Asks `req` of machine `m`'s tree server for the current caller, in
    /// a session where it can go in one.
    pub async fn ask(&self, m: &MachineId, req: &TreeReq) -> Result<TreeResp, String> {
        if !in_session(req) || self.refuses(m) {
            return once(&self.router, m, req).await;
        }
        let key = Key {
            machine: m.clone(),
            caller: Caller::current().unwrap_or_else(Caller::router),
            user: Caller::current_user(),
        };
        let mut conv = match self.take(&key) {
            Some(c) => c,
            None => match self.open(&key).await {
                Some(c) => c,
                None => return once(&self.router, m, req).await,
            },
        };
        conv.tx.send(encode(req)).await?;
        match conv.rx.recv().await {
            // Answered, well or with the request's error: the session
            // goes on. Anything else ended it (or was nonsense), and it
            // is not kept for the next caller.
            Some(Msg::Data(b)) => {
                let resp = decode::<TreeResp>(&b)?;
                if conv.tx.closed().is_none() {
                    self.keep(key, conv);
                }
                match resp {
                    TreeResp::Err(e) => Err(e),
                    resp => Ok(resp),
                }
            }
            Some(Msg::Error(e)) => Err(e),
            _ => Err(ns::error::EHUNGUP.into()),
        }
    }

    /// Idle sessions kept now.
    pub fn idle(&self) -> usize {
        lock(&self.idle).len()
    }

    /// Ends every idle session.
    pub fn drop_idle(&self) {
        let gone = std::mem::take(&mut *lock(&self.idle));
        drop(gone);
    }

    fn refuses(&self, m: &MachineId) -> bool {
        let mut r = lock(&self.refused);
        match r.get(m) {
            Some(t) if t.elapsed() < REFUSED_FOR => true,
            Some(_) => {
                r.remove(m);
                false
            }
            None => false,
        }
    }

    /// An idle session for `key` whose conversation is still up.
    fn take(&self, key: &Key) -> Option<Conv> {
        let mut idle = lock(&self.idle);
        while let Some(i) = idle.iter().rposition(|(k, _)| k == key) {
            let (_, conv) = idle.remove(i);
            if conv.tx.closed().is_none() {
                return Some(conv);
            }
        }
        None
    }

    fn keep(&self, key: Key, conv: Conv) {
        let mut idle = lock(&self.idle);
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push((key, conv));
    }

    /// A new session; `None` when the machine cannot have one now: the
    /// request then goes in a conversation of its own, and so do the
    /// machine's for [`REFUSED_FOR`].
    async fn open(&self, key: &Key) -> Option<Conv> {
        let mut conv = self.router.open_as(server(&key.machine), Vec::new(), key.user.clone());
        match begin(&mut conv, &TreeReq::Session).await {
            Ok(TreeResp::Done) => Some(conv),
            // An older tree server hangs up on a request it cannot
            // decode; anything else that fails here fails the request in
            // a conversation of its own too, which then says why.
            _ => {
                lock(&self.refused).insert(key.machine.clone(), Instant::now());
                None
            }
        }
    }
}
