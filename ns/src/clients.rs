//! The table of local clients: processes on this machine that reach the
//! router over its Unix socket (see [`crate::client`]).
//!
//! Each client gets a block of conversation numbers (its number in the
//! top 32 bits), may offer services, and is hung up for when it goes:
//! the table keeps its terminal, the services it serves and the
//! conversations it opened. Forwarding reads it to deliver to a client;
//! `local`, above the router, serves the clients' links and keeps it up
//! to date.
//!
//! Lock order: `terms` before `services`; `convs` is taken alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use crate::conv::lock;
use crate::envelope::Envelope;
use crate::error;
use crate::path::{Addr, ServiceName};
use crate::term::Term;

/// The local clients of one router.
pub(crate) struct Clients {
    /// Each client's terminal, by its number block.
    terms: RwLock<HashMap<u32, Arc<Term>>>,
    /// Services offered by local clients, and which client serves each.
    services: RwLock<HashMap<ServiceName, u32>>,
    /// Conversations each client has open, source to destination, to hang
    /// them up if it dies.
    convs: Mutex<HashMap<u32, HashMap<Addr, Addr>>>,
    next: AtomicU32,
}

impl Default for Clients {
    fn default() -> Self {
        // Block 0 is the router's own conversations.
        Clients { terms: Default::default(), services: Default::default(), convs: Default::default(), next: 1.into() }
    }
}

impl Clients {
    /// A number block for a new client.
    pub(crate) fn next_block(&self) -> u32 {
        self.next.fetch_add(1, Relaxed)
    }

    pub(crate) fn add(&self, k: u32, term: Arc<Term>) {
        self.terms.write().unwrap_or_else(|e| e.into_inner()).insert(k, term);
    }

    /// The local client an envelope for this machine belongs to, if any:
    /// by its conversation's number block, or by the service it offers.
    pub(crate) fn target(&self, env: &Envelope) -> Option<Result<Arc<Term>, String>> {
        let terms = self.terms.read().unwrap_or_else(|e| e.into_inner());
        match env.dst.conv {
            Some(n) if n >> 32 != 0 => {
                let k = (n >> 32) as u32;
                Some(terms.get(&k).cloned().ok_or_else(|| error::detail(error::ENOCONV, n)))
            }
            Some(_) => None,
            None => {
                let k = *self.services.read().unwrap_or_else(|e| e.into_inner()).get(&env.dst.service)?;
                Some(terms.get(&k).cloned().ok_or_else(|| error::detail(error::ENOSERVICE, &env.dst.service)))
            }
        }
    }

    /// The services local clients offer.
    pub(crate) fn services(&self) -> Vec<ServiceName> {
        self.services.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }

    /// Client `k` serves `name` from now on.
    pub(crate) fn offer(&self, name: ServiceName, k: u32) {
        self.services.write().unwrap_or_else(|e| e.into_inner()).insert(name, k);
    }

    /// Client `k` no longer serves `name` (if it did).
    pub(crate) fn withdraw(&self, name: &ServiceName, k: u32) {
        let mut cs = self.services.write().unwrap_or_else(|e| e.into_inner());
        if cs.get(name) == Some(&k) {
            cs.remove(name);
        }
    }

    /// Client `k` sent from `src` to `dst`: the first time, the
    /// conversation is recorded as open.
    pub(crate) fn sent(&self, k: u32, src: &Addr, dst: &Addr) {
        let mut cc = lock(&self.convs);
        let m = cc.entry(k).or_default();
        if !m.contains_key(src) {
            m.insert(src.clone(), dst.clone());
        }
    }

    /// Whether `src` opened the conversation whose end in a client is
    /// `end`, when that is a service's end (under a service the client
    /// offers, answering a numbered end); `None` when it is not, or not
    /// known yet (the client has not answered).
    pub(crate) fn opened_by(&self, end: &Addr, src: &Addr) -> Option<bool> {
        let k = (end.conv? >> 32) as u32;
        if self.services.read().unwrap_or_else(|e| e.into_inner()).get(&end.service) != Some(&k) {
            return None;
        }
        let cc = lock(&self.convs);
        let peer = cc.get(&k)?.get(end)?;
        peer.conv?;
        Some(peer == src)
    }

    /// Client `k` hung up its end `src`.
    pub(crate) fn hung_up(&self, k: u32, src: &Addr) {
        if let Some(m) = lock(&self.convs).get_mut(&k) {
            m.remove(src);
        }
    }

    /// Client `k` is gone: forgets it. Says whether it offered services,
    /// and gives the conversations it left open, source to destination.
    pub(crate) fn remove(&self, k: u32) -> (bool, HashMap<Addr, Addr>) {
        self.terms.write().unwrap_or_else(|e| e.into_inner()).remove(&k);
        let had = {
            let mut cs = self.services.write().unwrap_or_else(|e| e.into_inner());
            let before = cs.len();
            cs.retain(|_, c| *c != k);
            before != cs.len()
        };
        (had, lock(&self.convs).remove(&k).unwrap_or_default())
    }
}
