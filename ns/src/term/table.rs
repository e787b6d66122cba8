//! The terminal table: the terminals linked now, by name, and the
//! placeholders of neighbours dialed and not linked yet, shown in `term/`
//! while the real one is absent, with why the link is down.
//!
//! Lock order: `linked` and `pending` are never held together, nor across
//! an await; a terminal's own locks may be taken under either.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use super::{Term, TermKind};
use crate::conv::lock;
use crate::path::{MachineId, TermName};

/// The terminals of one router.
pub struct Terms {
    linked: RwLock<BTreeMap<TermName, Arc<Term>>>,
    pending: Mutex<BTreeMap<TermName, Arc<Term>>>,
}

impl Terms {
    /// A table with `local` and `loopback`.
    pub(crate) fn new() -> Terms {
        let mut linked = BTreeMap::new();
        linked.insert(TermName::Local, Term::internal(TermKind::Local));
        linked.insert(TermName::Loopback, Term::internal(TermKind::Loopback));
        Terms { linked: RwLock::new(linked), pending: Default::default() }
    }

    /// The linked terminals, sorted by name.
    pub fn all(&self) -> Vec<Arc<Term>> {
        self.linked.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    pub fn get(&self, name: &TermName) -> Option<Arc<Term>> {
        self.linked.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// The terminals to show: the linked ones, and the placeholders of
    /// neighbours dialed but not linked.
    pub fn shown(&self) -> Vec<Arc<Term>> {
        let mut all: BTreeMap<TermName, Arc<Term>> = lock(&self.pending).clone();
        all.extend(self.linked.read().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())));
        all.into_values().collect()
    }

    /// A terminal to show: linked, else a placeholder.
    pub fn shown_one(&self, name: &TermName) -> Option<Arc<Term>> {
        self.get(name).or_else(|| self.placeholder(name))
    }

    /// The placeholder of a neighbour dialed, linked or not.
    pub(crate) fn placeholder(&self, name: &TermName) -> Option<Arc<Term>> {
        lock(&self.pending).get(name).cloned()
    }

    /// Adds the placeholder of neighbour `m`, unless there is one.
    pub(crate) fn add_placeholder(&self, m: &MachineId, addr: String) {
        let name = TermName::Net(m.clone());
        lock(&self.pending).entry(name).or_insert_with(|| Term::placeholder(TermKind::Net(m.clone()), addr));
    }

    /// Records a refused link in the terminal of that name, linked and
    /// placeholder both.
    pub(crate) fn refused(&self, name: &TermName, line: &str) {
        for t in [self.get(name), self.placeholder(name)].into_iter().flatten() {
            t.refused(line.to_string());
        }
    }

    /// Adds the terminal of a link to neighbour `peer`, keeping one link
    /// per neighbour: of two links between the same pair, the one dialed
    /// by the smaller id stays. False when this one is the duplicate.
    pub(crate) fn link(&self, term: &Arc<Term>, me: &MachineId, peer: &MachineId) -> bool {
        let name = TermName::Net(peer.clone());
        let mut linked = self.linked.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = linked.get(&name) {
            let new_dialer = if term.dialed { me } else { peer };
            let old_dialer = if old.dialed { me } else { peer };
            if !(new_dialer < old_dialer || old.is_hungup()) {
                return false;
            }
            old.hangup();
        }
        linked.insert(name, term.clone());
        true
    }

    /// Removes the terminal of the link to `peer` if it is still `term`;
    /// says whether it was.
    pub(crate) fn unlink(&self, term: &Arc<Term>, peer: &MachineId) -> bool {
        let name = TermName::Net(peer.clone());
        let mut linked = self.linked.write().unwrap_or_else(|e| e.into_inner());
        let mine = linked.get(&name).is_some_and(|t| Arc::ptr_eq(t, term));
        if mine {
            linked.remove(&name);
        }
        mine
    }
}
