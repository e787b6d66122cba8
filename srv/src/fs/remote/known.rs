//! What a machine knows of a file it made and has open on another
//! machine, so that a change of its mode, owner or times can be answered
//! before the serving machine does (see [`super::pipe::Pipe::attr_ahead`]).
//!
//! The answer the kernel keeps must be what the serving machine will
//! answer, or the kernel keeps a wrong size or mode. So a change goes
//! ahead only where its outcome is certain:
//!
//! - the file's attributes are known: from the answer that made it, or a
//!   change answered since, with the writes sent since counted in its
//!   size; a write since leaves its modification time unknown and a
//!   read its access time, unless the change sets them;
//! - the caller owns the file there and here (a caller the serving
//!   machine squashes made a file owned by `nobody`, and does not), so the
//!   local kernel's permission check (`default_permissions`) is the
//!   serving machine's;
//! - no size, and no set-user-ID or set-group-ID bit before or after,
//!   which a change of owner or a caller outside the group would clear.
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

    /// A write of `len` bytes at `offset` sent.
    pub(super) fn wrote(&mut self, offset: u64, len: u64) {
        if let Some(m) = self.entry.as_mut().and_then(|e| e.meta.as_mut()) {
            m.size = m.size.max(offset.saturating_add(len));
        }
        self.written = true;
    }

    pub(super) fn read(&mut self) {
        self.read = true;
    }

    /// What the file will be after `attrs` at time `now`, if certain
    /// (see the module's doc); `owns` says whether the caller owns a file
    /// of these attributes. Kept as the file's from then on.
    pub(super) fn predict(&mut self, attrs: &Attrs, now: (i64, u32), owns: impl Fn(&Entry) -> bool) -> Option<Entry> {
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
        let mut next = e.clone();
        let mut nm = m;
        if let Some(mode) = attrs.mode {
            next.mode = (mode & 0o7777) as u16;
        }
        let number = |id: Id| match id {
            Id::Router => None,
            Id::Num(n) => Some(n),
        };
        if let Some(u) = attrs.uid {
            nm.uid = number(u);
        }
        if let Some(g) = attrs.gid {
            nm.gid = number(g);
        }
        nm.atime = attrs.atime.unwrap_or(nm.atime);
        nm.mtime = attrs.mtime.unwrap_or(nm.mtime);
        nm.ctime = now;
        next.meta = Some(nm);
        self.entry = Some(next.clone());
        self.read &= attrs.atime.is_none();
        self.written &= attrs.mtime.is_none();
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
        assert!(k.predict(&Attrs { mode: Some(0o644), ..ATTRS }, NOW, |_| true).is_none());
        let t = k.predict(&Attrs { mtime: Some((6, 2)), ..ATTRS }, NOW, |_| true).unwrap();
        let m = t.meta.unwrap();
        assert_eq!((m.size, m.atime, m.mtime, m.ctime), (44, (1, 0), (6, 2), NOW));
        let t = k.predict(&TIMES, NOW, |_| true).unwrap();
        assert_eq!(t.meta.unwrap().atime, (5, 1));
        let o = k.predict(&Attrs { uid: Some(Id::Num(7)), gid: Some(Id::Router), ..ATTRS }, NOW, |_| true).unwrap();
        assert_eq!((o.meta.unwrap().uid, o.meta.unwrap().gid), (Some(7), None));
        let p = k.predict(&Attrs { mode: Some(0o100644), ..ATTRS }, NOW, |_| true).unwrap();
        assert_eq!(p.mode, 0o644);
        assert_eq!(p.meta.unwrap().mtime, (6, 2));
    }

    #[test]
    fn what_is_not_certain_is_asked() {
        // Nothing known (a file opened, not made here).
        assert!(Known::default().predict(&TIMES, NOW, |_| true).is_none());
        let mut k = known();
        // Another's file; a size; set-ID bits.
        assert!(k.predict(&TIMES, NOW, |_| false).is_none());
        assert!(k.predict(&Attrs { size: Some(0), ..ATTRS }, NOW, |_| true).is_none());
        assert!(k.predict(&Attrs { mode: Some(0o4755), ..ATTRS }, NOW, |_| true).is_none());
        assert!(k.predict(&Attrs { mode: Some(0o2755), ..ATTRS }, NOW, |_| true).is_none());
        // Not the access time left after a read.
        k.read();
        assert!(k.predict(&Attrs { mtime: Some((3, 0)), ..ATTRS }, NOW, |_| true).is_none());
        assert!(k.predict(&TIMES, NOW, |_| true).is_some());
        // Forgotten after an answer not foreseen.
        k.forget();
        assert!(k.predict(&TIMES, NOW, |_| true).is_none());
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
