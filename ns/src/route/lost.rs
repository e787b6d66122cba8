//! Lost links: what a report of one names, and how the table sets aside
//! the paths over it until their neighbours replace them or the report
//! expires (the module doc of [`super`] says how, [`crate::gossip`] why).

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Advert, Change, RouteTable};
use crate::path::MachineId;

/// A link between two machines, either way round: what a report of a lost
/// link names. Its ends are kept in order (see [`Link::new`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Link(pub MachineId, pub MachineId);

impl Link {
    /// The link between `a` and `b`, the same whichever comes first.
    pub fn new(a: MachineId, b: MachineId) -> Link {
        if a <= b {
            Link(a, b)
        } else {
            Link(b, a)
        }
    }

    /// Whether `m` is one of its ends.
    pub fn has_end(&self, m: &MachineId) -> bool {
        self.0 == *m || self.1 == *m
    }

    /// Whether `path` goes over it, in either direction.
    pub fn crossed_by(&self, path: &[MachineId]) -> bool {
        path.windows(2).any(|w| (w[0] == self.0 && w[1] == self.1) || (w[0] == self.1 && w[1] == self.0))
    }
}

/// At most this many links are taken from one announcement, and at most
/// `MAX_SUSPECT` are held at once: each is checked against every advert
/// that arrives while it is held, and reports only speed up what
/// withdrawals would do anyway.
pub const MAX_LOST_PER_ANNOUNCE: usize = 64;
const MAX_SUSPECT: usize = 256;

/// The log of lost links gossip passes on keeps this many.
const LOST_LOG: usize = 1024;

impl RouteTable {
    /// Takes a report from `peer` that `link` is lost, with its update for
    /// `machines`: sets aside every advert for those crossing the link,
    /// whichever neighbour sent it, noting them in `touched`, and logs the
    /// link for gossip when it set anything aside (else no one learned a
    /// path over it from here, and no one needs the report from here).
    /// Only the machines the update names are looked at, so the work is
    /// that of the update, not of the table; adverts for others crossing
    /// the link are replaced by their own neighbours' reports.
    pub(super) fn link_lost(
        &mut self,
        peer: &MachineId,
        link: Link,
        until: Instant,
        machines: &[MachineId],
        touched: &mut BTreeSet<MachineId>,
    ) {
        if link.0 == link.1 || self.suspect.contains_key(&link) || self.suspect.len() >= MAX_SUSPECT {
            return;
        }
        let gave = |ads: &HashMap<MachineId, Advert>| {
            machines.iter().any(|m| ads.get(m).is_some_and(|ad| link.crossed_by(&ad.path)))
        };
        if !link.has_end(peer) && !self.peers.get(peer).is_some_and(gave) {
            return;
        }
        self.suspect.insert(link.clone(), until);
        let mut any = false;
        for (p, ads) in &mut self.peers {
            for m in machines {
                if !ads.get(m).is_some_and(|ad| link.crossed_by(&ad.path)) {
                    continue;
                }
                if let Some(ad) = ads.remove(m) {
                    self.aside.entry(p.clone()).or_default().insert(m.clone(), (ad, link.clone()));
                    touched.insert(m.clone());
                    any = true;
                }
            }
        }
        if any {
            self.log_lost(link);
        }
    }

    /// The suspect link `path` crosses, if any.
    pub(super) fn suspect_crossed(&self, path: &[MachineId]) -> Option<Link> {
        if self.suspect.is_empty() {
            return None;
        }
        self.suspect.keys().find(|l| l.crossed_by(path)).cloned()
    }

    pub(super) fn log_lost(&mut self, link: Link) {
        self.lost_log.push_back(link);
        while self.lost_log.len() > LOST_LOG {
            self.lost_log.pop_front();
            self.lost_start += 1;
        }
    }

    /// When the first report of a lost link expires, if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.suspect.values().min().copied()
    }

    /// Forgets the reports that expired by `now`, and takes back the
    /// adverts set aside for them that their neighbours never replaced:
    /// those paths were not dead after all (the link came back), or their
    /// neighbour would have said so by now.
    pub fn expire(&mut self, now: Instant) -> Change {
        let before = self.suspect.len();
        self.suspect.retain(|_, until| *until > now);
        if self.suspect.len() == before {
            return Change::default();
        }
        let mut touched = BTreeSet::new();
        let mut aside = std::mem::take(&mut self.aside);
        for (p, ads) in &mut aside {
            let back: Vec<MachineId> =
                ads.iter().filter(|(_, (_, l))| !self.suspect.contains_key(l)).map(|(m, _)| m.clone()).collect();
            for m in back {
                let Some((ad, _)) = ads.remove(&m) else { continue };
                match self.suspect_crossed(&ad.path) {
                    Some(l) => {
                        ads.insert(m, (ad, l));
                    }
                    None => {
                        if let Some(cur) = self.peers.get_mut(p) {
                            cur.insert(m.clone(), ad);
                            touched.insert(m);
                        }
                    }
                }
            }
        }
        aside.retain(|_, ads| !ads.is_empty());
        self.aside = aside;
        self.recompute(touched)
    }

    /// The links lost since number `seen` (a [`RouteTable::lost_end`]
    /// read earlier), oldest first; `None` when the log no longer reaches
    /// that far back.
    pub fn lost_since(&self, seen: u64) -> Option<impl Iterator<Item = &Link>> {
        let skip = seen.checked_sub(self.lost_start)?;
        Some(self.lost_log.iter().skip(skip as usize))
    }

    /// The number the next lost link will have.
    pub fn lost_end(&self) -> u64 {
        self.lost_start + self.lost_log.len() as u64
    }
}
