//! What a machine knows of a file it made and has open on another
//! machine, so that a change of its mode, owner or times can be answered
//! before the serving machine does (see [`super::pipe::Pipe::attr_ahead`]).
//!
//! The answer the kernel keeps must be what the serving machine will
//! answer, or the kernel keeps a wrong size or mode. So a change goes
//! ahead only where its outcome is certain:
//!
//! - the file's attributes are known: from the answer that made it, or a
//!   change answered since with nothing sent meanwhile, with the writes
//!   sent since counted in its size; a write since leaves its
//!   modification time unknown and a read its access time, unless the
//!   change sets them;
//! - nothing else changed the file through this mount: the pipe is
//!   [`Known::spoil`]ed for good when its descriptor is closed (what
//!   goes ahead after that has nobody to tell a failure to), when the
//!   file is opened again, and when one of its names is removed, linked
//!   or renamed (its size or link count would be foreseen wrong, and the
//!   kernel drops pages past a size it is told);
//! - the caller owns the file there and here (a caller the serving
//!   machine squashes made a file owned by `nobody`, and does not), so the
//!   local kernel's permission check (`default_permissions`) is the
//!   serving machine's; an owner changes only to what it is, and a group
//!   only to the caller's own (groups beyond it are counted differently
//!   on each machine);
//! - no size, and no set-user-ID or set-group-ID bit before or after,
//!   which a change of owner or a caller outside the group would clear.
//!
//! Which process may go ahead is the FUSE side's business: the one that
//! made the file, on the descriptor it made it with.
//!
//! The change time is this machine's clock; once the answer comes the
//! kernel is told to ask again, so it sees the serving machine's.

use crate::fs::dir::{Attrs, Id};
use crate::fs::tree::Entry;

/// Set-user-ID and set-group-ID.
const SXID: u32 = 0o6000;

/// The attributes of an open file as this machine last knew them.
#[derive(Clone, Debug, Default)]
pub(super) struct Known {
    entry: Option<Entry>,
    /// Read since: its access time may have moved there.
    read: bool,
    /// Written since: its modification time moved there.
    written: bool,
    /// Never foreseen again (see the module's doc).
    spoiled: bool,
    /// Bumped at each write or change sent: an answer to a request sent
    /// before is older than what is known.
    gen: u64,
}

impl Known {
    /// The serving machine's answer: now known.
    pub(super) fn answered(&mut self, e: &Entry) {
        self.entry = Some(e.clone()).filter(|e| e.meta.is_some());
        (self.read, self.written) = (false, false);
    }

    /// Nothing known any more (a change whose outcome was not foreseen).
    pub(super) fn forget(&mut self) {
        self.entry = None;
    }

    /// Nothing foreseen from now on.
    pub(super) fn spoil(&mut self) {
        self.entry = None;
        self.spoiled = true;
    }

    /// What [`Known::answered_since`] compares with.
    pub(super) fn gen(&self) -> u64 {
        self.gen
    }

    /// An answer to a request sent at `gen`: known if nothing was sent
    /// after it, else forgotten (it says what the file was before).
    pub(super) fn answered_since(&mut self, gen: u64, e: &Entry) {
        if gen == self.gen {
            self.answered(e);
        } else {
            self.forget();
        }
    }

    /// A write of `len` bytes at `offset` sent.
    pub(super) fn wrote(&mut self, offset: u64, len: u64) {
        if let Some(m) = self.entry.as_mut().and_then(|e| e.meta.as_mut()) {
            m.size = m.size.max(offset.saturating_add(len));
        }
        self.written = true;
        self.gen += 1;
    }

    pub(super) fn read(&mut self) {
        self.read = true;
    }

    /// What the file will be after `attrs` at time `now`, if certain
    /// (see the module's doc); `owns` says whether the caller owns a file
    /// of these attributes, `group` is the caller's own group as told.
    /// Kept as the file's from then on.
    pub(super) fn predict(
        &mut self,
        attrs: &Attrs,
        now: (i64, u32),
        owns: impl Fn(&Entry) -> bool,
        group: Id,
    ) -> Option<Entry> {
        if self.spoiled {
            return None;
        }
        let e = self.entry.as_ref()?;
        let m = e.meta?;
        if attrs.size.is_some() || *attrs == Attrs::default() || !owns(e) {
            return None;
        }
        if self.read && attrs.atime.is_none() || self.written && attrs.mtime.is_none() {
            return None;
        }
        if u32::from(e.mode) & SXID != 0 || attrs.mode.is_some_and(|m| m & SXID != 0) {
            return None;
        }
        // An owner stays as it is; a group becomes the caller's own.
        if attrs.uid.is_some_and(|u| u.told() != m.uid) || attrs.gid.is_some_and(|g| g.told() != m.gid && g != group) {
            return None;
        }
        let mut next = e.clone();
        let mut nm = m;
        if let Some(mode) = attrs.mode {
            next.mode = (mode & 0o7777) as u16;
        }
        nm.gid = attrs.gid.map_or(nm.gid, Id::told);
        nm.atime = attrs.atime.unwrap_or(nm.atime);
        nm.mtime = attrs.mtime.unwrap_or(nm.mtime);
        nm.ctime = now;
        next.meta = Some(nm);
        self.entry = Some(next.clone());
        self.read &= attrs.atime.is_none();
        self.written &= attrs.mtime.is_none();
        self.gen += 1;
        Some(next)
    }
}

/// Whether the serving machine's answer is what was foreseen: all but the
/// change time, which is its clock (and the name, which an answer about
/// an open file does not give).
pub(super) fn as_foreseen(got: &Entry, foreseen: &Entry) -> bool {
    let strip = |e: &Entry| {
        let mut m = e.meta;
        if let Some(m) = m.as_mut() {
            m.ctime = (0, 0);
        }
        (e.kind, e.mode, m)
    };
    strip(got) == strip(foreseen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::tree::{FileKind, Meta};

    fn made() -> Entry {
        let meta = Meta { size: 0, atime: (1, 0), mtime: (1, 0), ctime: (1, 0), nlink: 1, ..Meta::default() };
        Entry { name: "f".into(), kind: FileKind::Stored, mode: 0o600, meta: Some(meta) }
    }

    fn known() -> Known {
        let mut k = Known::default();
        k.answered(&made());
        k
    }

    const NOW: (i64, u32) = (9, 9);
    const TIMES: Attrs = Attrs { atime: Some((5, 1)), mtime: Some((6, 2)), ..ATTRS };
    const ATTRS: Attrs = Attrs { size: None, mode: None, atime: None, mtime: None, uid: None, gid: None };

    #[test]
    fn what_tar_does_to_a_file_it_made_is_foreseen() {
        let mut k = known();
        k.wrote(0, 44);
        // After a write, only a change that sets the modification time
        // is certain (tar leaves the access time: UTIME_OMIT).
        assert!(k.predict(&Attrs { mode: Some(0o644), ..ATTRS }, NOW, |_| true, Id::Router).is_none());
        let t = k.predict(&Attrs { mtime: Some((6, 2)), ..ATTRS }, NOW, |_| true, Id::Router).unwrap();
        let m = t.meta.unwrap();
        assert_eq!((m.size, m.atime, m.mtime, m.ctime), (44, (1, 0), (6, 2), NOW));
        let t = k.predict(&TIMES, NOW, |_| true, Id::Router).unwrap();
        assert_eq!(t.meta.unwrap().atime, (5, 1));
        // tar as root: an owner and group as they are.
        let o = k
            .predict(&Attrs { uid: Some(Id::Router), gid: Some(Id::Router), ..ATTRS }, NOW, |_| true, Id::Num(9))
            .unwrap();
        assert_eq!((o.meta.unwrap().uid, o.meta.unwrap().gid), (None, None));
        // A group that is the caller's own.
        let o = k.predict(&Attrs { gid: Some(Id::Num(9)), ..ATTRS }, NOW, |_| true, Id::Num(9)).unwrap();
        assert_eq!(o.meta.unwrap().gid, Some(9));
        let p = k.predict(&Attrs { mode: Some(0o100644), ..ATTRS }, NOW, |_| true, Id::Router).unwrap();
        assert_eq!(p.mode, 0o644);
        assert_eq!(p.meta.unwrap().mtime, (6, 2));
    }

    #[test]
    fn what_is_not_certain_is_asked() {
        // Nothing known (a file opened, not made here).
        assert!(Known::default().predict(&TIMES, NOW, |_| true, Id::Router).is_none());
        let mut k = known();
        // Another's file; a size; set-ID bits.
        assert!(k.predict(&TIMES, NOW, |_| false, Id::Router).is_none());
        assert!(k.predict(&Attrs { size: Some(0), ..ATTRS }, NOW, |_| true, Id::Router).is_none());
        assert!(k.predict(&Attrs { mode: Some(0o4755), ..ATTRS }, NOW, |_| true, Id::Router).is_none());
        assert!(k.predict(&Attrs { mode: Some(0o2755), ..ATTRS }, NOW, |_| true, Id::Router).is_none());
        // Not the access time left after a read.
        k.read();
        assert!(k.predict(&Attrs { mtime: Some((3, 0)), ..ATTRS }, NOW, |_| true, Id::Router).is_none());
        assert!(k.predict(&TIMES, NOW, |_| true, Id::Router).is_some());
        // Another owner, or another group than the caller's.
        assert!(k.predict(&Attrs { uid: Some(Id::Num(7)), ..ATTRS }, NOW, |_| true, Id::Router).is_none());
        assert!(k.predict(&Attrs { gid: Some(Id::Num(7)), ..ATTRS }, NOW, |_| true, Id::Num(9)).is_none());
        // An answer to a request sent before a write says the file as it
        // was: not taken.
        let g = k.gen();
        k.wrote(0, 1);
        k.answered_since(g, &made());
        assert!(k.predict(&TIMES, NOW, |_| true, Id::Router).is_none());
        k.answered_since(k.gen(), &made());
        assert!(k.predict(&TIMES, NOW, |_| true, Id::Router).is_some());
        // Spoiled for good: an answer does not bring it back.
        k.spoil();
        k.answered(&made());
        assert!(k.predict(&TIMES, NOW, |_| true, Id::Router).is_none());
        // Forgotten after an answer not foreseen.
        let mut k = known();
        k.forget();
        assert!(k.predict(&TIMES, NOW, |_| true, Id::Router).is_none());
    }

    #[test]
    fn the_change_time_is_the_serving_machines() {
        let a = made();
        let mut b = made();
        b.meta.as_mut().unwrap().ctime = (77, 7);
        b.name = String::new();
        assert!(as_foreseen(&b, &a));
        b.mode = 0o644;
        assert!(!as_foreseen(&b, &a));
    }
}
