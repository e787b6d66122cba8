//! Error strings of the mesh, with Plan 9 wording, declared once.
//!
//! An error travels in an envelope as its string; the FUSE edge and the
//! commands map it to an errno with [`errno`], the one table there is.

pub const ENOSERVICE: &str = "no such service";
pub const ENOROUTE: &str = "no route to machine";
pub const EHOPS: &str = "hop limit";
pub const EHUNGUP: &str = "conversation hung up";
pub const EBADCTL: &str = "bad ctl message";
pub const EOVERRUN: &str = "conversation overrun";
pub const ETOOBIG: &str = "message too large";
pub const ENOCONV: &str = "no such conversation";
pub const EBADPATH: &str = "bad path";
pub const ESHUTDOWN: &str = "router shutting down";
pub const EPERM: &str = "permission denied";
pub const ELINK: &str = "link lost";
/// A change asked of a dir service whose rules let the caller only read.
pub const EROFS: &str = "read-only file system";
/// A service refused a conversation it has no room for now: its bound on
/// processes is reached and its queue full, or the wait for a place
/// ended. Mapped to EBUSY, not EAGAIN: data files block, and a program
/// reads EAGAIN on a blocking file as "poll and try again" (a busy loop,
/// or Python's BlockingIOError), where this is a final answer.
pub const EBUSY: &str = "service busy";
/// No end-to-end session could be made with a machine: it did not
/// answer the handshake, or refused it, or its answer did not prove its
/// pinned key.
pub const EAUTH: &str = "authentication failed";
/// A message failed its end-to-end check at the machine it was for:
/// changed on the way, forged, replayed, or sealed under a session the
/// machine does not know (one of the two restarted).
pub const EBADSEAL: &str = "end-to-end check failed";

/// The errno for an error string. Strings carrying detail after a colon
/// (`no such service: gpu`) map by their leading constant.
pub fn errno(err: &str) -> i32 {
    const TABLE: &[(&str, i32)] = &[
        (ENOSERVICE, libc::ENOENT),
        (ENOROUTE, libc::EHOSTUNREACH),
        (EHOPS, libc::ELOOP),
        (EHUNGUP, libc::EPIPE),
        (EBADCTL, libc::EINVAL),
        (EOVERRUN, libc::ENOBUFS),
        (ETOOBIG, libc::EMSGSIZE),
        (ENOCONV, libc::ENOENT),
        (EBADPATH, libc::EINVAL),
        (ESHUTDOWN, libc::ESHUTDOWN),
        (EPERM, libc::EACCES),
        (ELINK, libc::ECONNRESET),
        (EROFS, libc::EROFS),
        (EBUSY, libc::EBUSY),
        (EAUTH, libc::EACCES),
        (EBADSEAL, libc::EBADMSG),
    ];
    TABLE.iter().find(|(s, _)| err.starts_with(s)).map(|&(_, e)| e).unwrap_or(libc::EIO)
}

/// `what: detail`, the form every detailed error takes.
pub fn detail(what: &str, detail: impl std::fmt::Display) -> String {
    format!("{what}: {detail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_by_prefix() {
        assert_eq!(errno("no such service: gpu"), libc::ENOENT);
        assert_eq!(errno(ENOROUTE), libc::EHOSTUNREACH);
        assert_eq!(errno(EHOPS), libc::ELOOP);
        assert_eq!(errno("service busy: cat: 256 running and 1024 waiting"), libc::EBUSY);
        assert_eq!(errno("something else"), libc::EIO);
    }
}
