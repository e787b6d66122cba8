//! The conversations that crossed a link.
//!
//! A link that dies may take envelopes with it: those queued in its
//! writer, those in the kernel's buffers, those on a wire gone silent. No
//! conversation may lose a message without its ends hearing of it, so
//! every network terminal remembers the conversation ends whose envelopes
//! crossed it; when the link goes, each of those ends gets `link lost`
//! (see `Router::link_lost_here`). An end leaves the set when its conversation
//! hangs up or fails across the link, so the set holds what is open.
//!
//! What is sent is not yet delivered, though: a conversation's last
//! answer, its `Eof` and its hangup may all go into a link already cut
//! and not yet known to be, leaving the other end waiting. So an ended
//! conversation lingers until the link is known to have carried what it
//! sent: a pong for a ping sent after it ended ([`Crossed::confirmed`];
//! the ping went the same way, after it). A link lost before that tells
//! its ends too; telling an end that is gone does nothing. However long
//! a loaded router takes to notice a cut, an ended conversation waits
//! for it; [`Crossed::set_linger`] only bounds the wait.
//!
//! Each end is kept with the address it talks to. An end that opened a
//! service by name (`/n/M/svc/S`, `/svc/S`) writes to that name for its
//! whole life, hangup included, so the first answer from a conversation
//! of S (`/n/M/svc/S/N`) replaces the name with that end: then either
//! end's hangup, whichever crosses first, clears both. A conversation's
//! ends send their last messages in order, hangup last (see
//! `ConvTable::send_controls`), so no `Eof` arrives after its hangup to
//! bring an end back.
//!
//! When the link goes, both ends of each remembered conversation hear of
//! it, the remembered end and the one it talks to (see [`Crossed::take`]):
//! with another path between the two machines, a conversation's envelopes
//! may cross the link one way only, and an end that never crossed it may
//! be the one waiting for what was lost on it.
//!
//! A link is closed (silent too long, a failed write) a while before its
//! task takes the set and moves the routes off it; a loaded router may
//! take tens of milliseconds. What is sent to it then finds it closed and
//! is lost: both its ends hear of it from the sender's router (see
//! `Router::lost_at`), an error on its way going round as it was. Once
//! taken, the set notes nothing more and the link takes nothing more, so
//! no envelope slips in between.
//!
//! The set is bounded: past [`MAX_CROSSED`] ends, new ones are counted as
//! untracked (shown in the terminal's status) rather than growing memory.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::conv::lock;
use crate::envelope::{Envelope, Kind};
use crate::path::Addr;

/// Conversation ends remembered per link, open ones and ended ones each.
pub const MAX_CROSSED: usize = 1 << 16;

/// The most an ended conversation lingers unconfirmed, unless told
/// otherwise: far longer than any cut takes to be noticed.
const DEFAULT_LINGER: Duration = Duration::from_secs(60);

/// The ends of conversations that crossed one link, each with the last
/// address it talked to (so that a hangup clears both ends).
pub struct Crossed {
    ends: Mutex<Ends>,
    untracked: AtomicU64,
    /// How long an ended conversation lingers, in microseconds.
    linger_us: AtomicU64,
}

#[derive(Default)]
struct Ends {
    open: HashMap<Addr, Addr>,
    /// Taken: the link is gone, and nothing more may cross it.
    closed: bool,
    /// Ended conversations, oldest first: when, and the two ends.
    ended: VecDeque<(Instant, Addr, Addr)>,
}

impl Default for Crossed {
    fn default() -> Crossed {
        Crossed {
            ends: Default::default(),
            untracked: AtomicU64::new(0),
            linger_us: AtomicU64::new(DEFAULT_LINGER.as_micros() as u64),
        }
    }
}

/// Whether writing to `to` reaches end `end`: its own address, or the
/// name of its service (on its machine, or on any).
fn names(to: &Addr, end: &Addr) -> bool {
    to == end
        || (to.conv.is_none()
            && to.service == end.service
            && to.machine.as_ref().is_none_or(|m| end.machine.as_ref() == Some(m)))
}

impl Crossed {
    /// Notes an envelope crossing the link, `out` or in. False once the
    /// link is gone ([`Crossed::take`]): an envelope noted then would be
    /// remembered by no one, so it must not be sent (see `Term::send`).
    pub fn note(&self, env: &Envelope, out: bool) -> bool {
        match env.kind {
            Kind::Data | Kind::Eof | Kind::Cancel => {
                let mut guard = lock(&self.ends);
                if guard.closed {
                    return false;
                }
                if env.src.conv.is_none() {
                    return true;
                }
                let ends = &mut guard.open;
                // The common case, a known end talking to the same peer,
                // costs one lookup and no allocation.
                if ends.get(&env.src).is_some_and(|p| names(&env.dst, p)) {
                    return true;
                }
                // The first answer of a service: the end that opened it by
                // name learns which end it talks to.
                if env.dst.conv.is_some() {
                    if let Some(p) = ends.get_mut(&env.dst).filter(|p| p.conv.is_none() && names(p, &env.src)) {
                        *p = env.src.clone();
                    }
                }
                if ends.len() >= MAX_CROSSED && !ends.contains_key(&env.src) {
                    self.untracked.fetch_add(1, Relaxed);
                    return true;
                }
                ends.insert(env.src.clone(), env.dst.clone());
                true
            }
            // Last words out are remembered until they are queued (then
            // `ended` moves them): lost with the link before that, their
            // end still hears of it, though it never crossed before.
            Kind::Hangup | Kind::Error(_) if out => {
                let mut guard = lock(&self.ends);
                if guard.closed {
                    return false;
                }
                let (end, partner) = match env.src.conv {
                    Some(_) => (&env.src, &env.dst),
                    None => (&env.dst, &env.src),
                };
                if end.conv.is_some() && (guard.open.len() < MAX_CROSSED || guard.open.contains_key(end)) {
                    guard.open.entry(end.clone()).or_insert_with(|| partner.clone());
                }
                true
            }
            Kind::Hangup | Kind::Error(_) => {
                self.ended(&env.src, &env.dst);
                true
            }
            // Credit lost unnoticed would stall its writer for ever.
            Kind::Credit(_) => !lock(&self.ends).closed,
            _ => true,
        }
    }

    /// A conversation's end `src` said its last to `dst` (a hangup or an
    /// error): its record moves to the ended ones. Called once that last
    /// envelope is queued on the link, so that a ping queued later also
    /// goes after it (see [`Crossed::confirmed`]).
    pub fn ended(&self, src: &Addr, dst: &Addr) {
        let mut guard = lock(&self.ends);
        let Ends { open, ended, .. } = &mut *guard;
        let now = Instant::now();
        for a in [src, dst] {
            if let Some(partner) = open.remove(a) {
                if open.get(&partner) == Some(a) {
                    open.remove(&partner);
                }
                ended.push_back((now, a.clone(), partner));
            }
        }
        let linger = self.linger();
        while ended.front().is_some_and(|e| now.duration_since(e.0) > linger) || ended.len() > MAX_CROSSED {
            ended.pop_front();
        }
    }

    /// The link carried everything sent before `sent` (a pong answered a
    /// ping sent then): conversations that ended before need not linger.
    pub fn confirmed(&self, sent: Instant) {
        let mut guard = lock(&self.ends);
        while guard.ended.front().is_some_and(|e| e.0 < sent) {
            guard.ended.pop_front();
        }
    }

    /// Sets the most ended conversations linger unconfirmed: longer than
    /// a cut of the link can take to be noticed.
    pub fn set_linger(&self, d: Duration) {
        self.linger_us.store(d.as_micros() as u64, Relaxed);
    }

    fn linger(&self) -> Duration {
        Duration::from_micros(self.linger_us.load(Relaxed))
    }

    /// Takes every remembered end, and every end they talk to, once
    /// each: the link is gone.
    ///
    /// The partners count because an envelope lost with the link was on
    /// its way to one, and that end need never have crossed the link
    /// itself: its own envelopes may go another way (a reply goes the
    /// replier's route, a request the asker's). Partners known only by a
    /// service's name are left out: there is no end to address, and the
    /// router across the link, which saw every envelope that reached that
    /// service, holds the end it talks to and fails it when it loses the
    /// link too.
    ///
    /// Conversations that ended lately count too: their last envelopes
    /// may have been lost with the link. Nothing is noted after.
    pub fn take(&self) -> Vec<Addr> {
        let mut guard = lock(&self.ends);
        let Ends { open, ended, closed } = &mut *guard;
        *closed = true;
        let (now, linger) = (Instant::now(), self.linger());
        let lately = ended.drain(..).filter(|e| now.duration_since(e.0) <= linger).map(|(_, a, p)| (a, p));
        let all: Vec<(Addr, Addr)> = open.drain().chain(lately).collect();
        let mut v: Vec<Addr> = Vec::with_capacity(all.len() * 2);
        for (end, partner) in all {
            v.push(end);
            if partner.conv.is_some() && partner.machine.is_some() {
                v.push(partner);
            }
        }
        v.sort();
        v.dedup();
        v
    }

    /// How many ends of open conversations are remembered now.
    pub fn len(&self) -> usize {
        lock(&self.ends).open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends not remembered because the set was full.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn env(kind: Kind, src: &str, dst: &str) -> Envelope {
        Envelope::new(1, Addr::parse(src).unwrap(), Addr::parse(dst).unwrap(), kind, Bytes::new())
    }

    #[test]
    fn remembers_both_ends_and_forgets_on_hangup() {
        let c = Crossed::default();
        c.note(&env(Kind::Data, "/n/a/svc/x/1", "/n/c/svc/upper"), false);
        c.note(&env(Kind::Data, "/n/c/svc/upper/7", "/n/a/svc/x/1"), false);
        c.note(&env(Kind::Data, "/n/a/svc/x/1", "/n/c/svc/upper/7"), false);
        assert_eq!(c.len(), 2);
        // Routing chatter and credit do not count.
        c.note(&env(Kind::Credit(1), "/n/a/svc/y/2", "/n/c/svc/upper/8"), false);
        assert_eq!(c.len(), 2);
        c.note(&env(Kind::Hangup, "/n/a/svc/x/1", "/n/c/svc/upper/7"), false);
        assert!(c.is_empty());
    }

    #[test]
    fn either_hangup_clears_a_conversation_opened_by_name() {
        // A tree operation: one request to the router's tree server, its
        // answer, then each end hangs up; the asker's hangup is addressed
        // to the service's name, not to the end that answered.
        for first in ["asker", "server"] {
            let c = Crossed::default();
            c.note(&env(Kind::Data, "/n/a/svc/x/1", "/n/c/svc/router"), false);
            c.note(&env(Kind::Data, "/n/c/svc/router/7", "/n/a/svc/x/1"), false);
            let asker = [
                env(Kind::Eof, "/n/a/svc/x/1", "/n/c/svc/router"),
                env(Kind::Hangup, "/n/a/svc/x/1", "/n/c/svc/router"),
            ];
            let server = [
                env(Kind::Eof, "/n/c/svc/router/7", "/n/a/svc/x/1"),
                env(Kind::Hangup, "/n/c/svc/router/7", "/n/a/svc/x/1"),
            ];
            let (one, two) = if first == "asker" { (asker, server) } else { (server, asker) };
            c.note(&one[0], false);
            c.note(&one[1], false);
            assert!(c.is_empty(), "{first} hung up first");
            // What the other end says last, before its hangup, is
            // remembered only until that hangup.
            c.note(&two[0], false);
            c.note(&two[1], false);
            assert!(c.is_empty(), "both hung up, {first} first");
        }
        // By service name alone, and more data after the answer.
        let c = Crossed::default();
        c.note(&env(Kind::Data, "/n/a/svc/x/2", "/svc/upper"), false);
        c.note(&env(Kind::Data, "/n/c/svc/upper/9", "/n/a/svc/x/2"), false);
        c.note(&env(Kind::Data, "/n/a/svc/x/2", "/svc/upper"), false);
        assert_eq!(c.len(), 2);
        c.note(&env(Kind::Hangup, "/n/a/svc/x/2", "/svc/upper"), false);
        assert!(c.is_empty());
    }

    fn addrs(v: &[&str]) -> Vec<Addr> {
        v.iter().map(|s| Addr::parse(s).unwrap()).collect()
    }

    #[test]
    fn take_empties_the_set() {
        let c = Crossed::default();
        c.note(&env(Kind::Eof, "/n/a/svc/x/1", "/n/c/svc/upper"), false);
        c.note(&env(Kind::Data, "/n/b/svc/y/3", "/n/c/svc/upper"), false);
        // Partners known by name only are not ends to address.
        assert_eq!(c.take(), addrs(&["/n/a/svc/x/1", "/n/b/svc/y/3"]));
        assert!(c.is_empty());
    }

    #[test]
    fn take_gives_the_partner_of_an_end_that_crossed_one_way() {
        // The triangle a-b-c: a asks by way of b, c answers over the
        // direct link (c's route to a). Only c's end crossed the link,
        // but a's end waits for what was on it.
        let c = Crossed::default();
        c.note(&env(Kind::Data, "/n/c/svc/cat/7", "/n/a/svc/x/1"), false);
        assert_eq!(c.take(), addrs(&["/n/a/svc/x/1", "/n/c/svc/cat/7"]));
        // The other way: a's request crossed, c's answer went by b (its
        // route to a). c's end waits for the request lost on the link.
        let c = Crossed::default();
        c.note(&env(Kind::Data, "/n/a/svc/x/1", "/n/c/svc/cat/7"), false);
        assert_eq!(c.take(), addrs(&["/n/a/svc/x/1", "/n/c/svc/cat/7"]));
        // Both ways: each end once.
        let c = Crossed::default();
        c.note(&env(Kind::Data, "/n/a/svc/x/1", "/n/c/svc/cat"), false);
        c.note(&env(Kind::Data, "/n/c/svc/cat/7", "/n/a/svc/x/1"), false);
        c.note(&env(Kind::Data, "/n/a/svc/x/1", "/n/c/svc/cat/7"), false);
        c.note(&env(Kind::Data, "/n/a/svc/x/2", "/svc/cat"), false);
        assert_eq!(c.take(), addrs(&["/n/a/svc/x/1", "/n/a/svc/x/2", "/n/c/svc/cat/7"]));
        assert!(c.is_empty());
    }

    #[test]
    fn an_ended_conversation_lingers_for_a_loss_noticed_late() {
        // An answer, its Eof and its hangup may all have gone into a cut
        // not noticed yet: the asker still waits.
        let c = Crossed::default();
        c.note(&env(Kind::Data, "/n/a/svc/x/1", "/n/c/svc/cat"), false);
        c.note(&env(Kind::Data, "/n/c/svc/cat/7", "/n/a/svc/x/1"), false);
        c.note(&env(Kind::Eof, "/n/c/svc/cat/7", "/n/a/svc/x/1"), false);
        c.note(&env(Kind::Hangup, "/n/c/svc/cat/7", "/n/a/svc/x/1"), false);
        assert!(c.is_empty(), "nothing open");
        assert_eq!(c.take(), addrs(&["/n/a/svc/x/1", "/n/c/svc/cat/7"]));
        assert!(c.take().is_empty(), "taken once");
        // Past the linger, forgotten.
        let c = Crossed::default();
        c.set_linger(Duration::from_millis(1));
        c.note(&env(Kind::Data, "/n/c/svc/cat/7", "/n/a/svc/x/1"), false);
        c.note(&env(Kind::Hangup, "/n/c/svc/cat/7", "/n/a/svc/x/1"), false);
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.take().is_empty());
    }

    #[test]
    fn an_ended_conversation_goes_once_the_link_is_known_to_have_carried_it() {
        let c = Crossed::default();
        c.note(&env(Kind::Data, "/n/c/svc/cat/7", "/n/a/svc/x/1"), false);
        c.note(&env(Kind::Hangup, "/n/c/svc/cat/7", "/n/a/svc/x/1"), false);
        // A pong for a ping sent before it ended proves nothing of it.
        c.confirmed(Instant::now() - Duration::from_secs(1));
        let kept = Crossed::default();
        kept.note(&env(Kind::Data, "/n/c/svc/cat/8", "/n/a/svc/x/2"), false);
        kept.note(&env(Kind::Hangup, "/n/c/svc/cat/8", "/n/a/svc/x/2"), false);
        kept.confirmed(Instant::now() - Duration::from_secs(1));
        assert_eq!(kept.take(), addrs(&["/n/a/svc/x/2", "/n/c/svc/cat/8"]));
        // One for a ping sent after: it was carried, nothing lingers.
        std::thread::sleep(Duration::from_millis(2));
        c.confirmed(Instant::now());
        assert!(c.take().is_empty());
    }

    #[test]
    fn bounded() {
        let c = Crossed::default();
        for i in 0..(MAX_CROSSED as u64 + 10) {
            c.note(&env(Kind::Data, &format!("/n/a/svc/x/{}", i + 1), "/n/c/svc/upper"), false);
        }
        assert_eq!(c.len(), MAX_CROSSED);
        assert_eq!(c.untracked(), 10);
    }

    #[test]
    fn nothing_crosses_once_taken_and_last_words_count_until_queued() {
        let c = Crossed::default();
        // An error from a router to an end that never crossed, not yet
        // queued when the link goes: its end is taken.
        assert!(c.note(&env(Kind::Error("x".into()), "/n/c/svc/router", "/n/a/svc/x/1"), true));
        // A hangup out, queued: it lingers as any ended conversation.
        assert!(c.note(&env(Kind::Hangup, "/n/c/svc/cat/7", "/n/b/svc/y/2"), true));
        c.ended(&Addr::parse("/n/c/svc/cat/7").unwrap(), &Addr::parse("/n/b/svc/y/2").unwrap());
        assert_eq!(c.take(), addrs(&["/n/a/svc/x/1", "/n/b/svc/y/2", "/n/c/svc/cat/7"]));
        // After, nothing may cross: it would be remembered by no one.
        for kind in [Kind::Data, Kind::Eof, Kind::Hangup, Kind::Error("x".into()), Kind::Credit(1)] {
            assert!(!c.note(&env(kind, "/n/c/svc/cat/8", "/n/a/svc/x/3"), true));
        }
        assert!(c.take().is_empty());
    }
}
