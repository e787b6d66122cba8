//! Looking into a served directory: what a name is and what a directory
//! holds, each directory looked into watched first for whoever asks
//! ([`super::watch`]), so that a change after the look is told.

use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode};

use super::watch::{Asker, Watcher};
use super::{beneath, entry, errors, fd_entry, watch_all, Entry, Root};

impl Root {
    /// What `rel` is; a symbolic link is itself (lstat).
    pub fn stat(&self, rel: &[String]) -> Result<Entry, String> {
        self.stat_told(rel, None)
    }

    /// [`Root::stat`], watching the directory that holds `rel` for `told`
    /// first (the root itself for the root), so that a change after the
    /// look is told.
    pub fn stat_told(&self, rel: &[String], told: Option<(&Watcher, &Asker)>) -> Result<Entry, String> {
        let what = beneath::join(rel);
        let Some((w, who)) = told else {
            let fd = self.at(rel, OFlag::O_PATH | OFlag::O_NOFOLLOW, Mode::empty())?;
            return fd_entry(rel.last().map_or("", |s| s), fd, &what);
        };
        let mut e = match rel.split_last() {
            None => {
                let watched = w.watch(self.fd.as_fd(), who);
                let mut e = fd_entry("", &self.fd, &what)?;
                watch_all(&mut e, watched);
                return Ok(e);
            }
            Some((name, dirs)) => {
                beneath::check(rel)?;
                let dir = self.at(dirs, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())?;
                let watched = w.watch(dir.as_fd(), who);
                let st =
                    fstatat(&dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| errors::os(e, &what))?;
                let mut e = entry(name, &st).ok_or_else(errors::not_served)?;
                watch_all(&mut e, watched);
                e
            }
        };
        e.name = rel.last().cloned().unwrap_or_default();
        Ok(e)
    }

    /// Directory `rel` as it is now, watched itself for `who`: any change
    /// in it (a name made, removed or renamed, its own attributes) is
    /// then told.
    pub fn dir_now(&self, rel: &[String], w: &Watcher, who: &Asker) -> Result<Entry, String> {
        let fd = self.at(rel, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())?;
        let watched = w.watch(fd.as_fd(), who);
        let mut e = fd_entry(rel.last().map_or("", |s| s), &fd, &beneath::join(rel))?;
        watch_all(&mut e, watched);
        Ok(e)
    }

    /// Watches the directory that holds `rel` for `who` (see
    /// [`Root::stat_told`]).
    pub fn watch_parent(&self, rel: &[String], w: &Watcher, who: &Asker) -> bool {
        let Some((_, dirs)) = rel.split_last() else { return w.watch(self.fd.as_fd(), who) };
        beneath::check(rel).is_ok()
            && self.at(dirs, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).is_ok_and(|d| w.watch(d.as_fd(), who))
    }

    /// Watches directory `rel` itself, the one with identity `id`, for
    /// `who`, and says whether it was empty once watched: then `who` knows all its names (none) and is
    /// told of each made from now on (see `tree::Meta::empty_told`).
    pub fn watch_empty(&self, rel: &[String], id: Option<u64>, w: &Watcher, who: &Asker) -> bool {
        let Ok(fd) = self.at(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()) else { return false };
        // The directory made, not another renamed to its name meanwhile.
        let made = fstat(&fd).is_ok_and(|st| id == Some(crate::fs::tree::file_id(st.st_dev, st.st_ino)));
        if !made || !w.watch(fd.as_fd(), who) {
            return false;
        }
        let Ok(mut dir) = nix::dir::Dir::from_fd(fd) else { return false };
        let empty = dir.iter().all(|d| d.is_ok_and(|d| matches!(d.file_name().to_bytes(), b"." | b"..")));
        empty
    }

    /// The files in a directory that are served, by name.
    pub fn list(&self, rel: &[String]) -> Result<Vec<Entry>, String> {
        self.list_told(rel, None)
    }

    /// [`Root::list`], watching the directory for `told` first.
    pub fn list_told(&self, rel: &[String], told: Option<(&Watcher, &Asker)>) -> Result<Vec<Entry>, String> {
        let what = beneath::join(rel);
        let fd = self.at(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
        let watched = told.is_some_and(|(w, who)| w.watch(fd.as_fd(), who));
        let stat_fd = fd.try_clone().map_err(|e| errors::io(&e, &what))?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| errors::os(e, &what))?;
        let mut out = Vec::new();
        let mut whole = true;
        for d in dir.iter() {
            let d = d.map_err(|e| errors::os(e, &what))?;
            let Ok(name) = d.file_name().to_str() else {
                tracing::debug!(dir = %what, name = ?d.file_name(), "not UTF-8: not served");
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            // A name gone since it was read is told of; any other that
            // cannot be shown leaves the listing short of a name that is
            // there, so nothing in it may be taken for all the names (see
            // `fuse::listed`).
            let st = match fstatat(&stat_fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(_) => {
                    whole = false;
                    continue;
                }
            };
            match entry(name, &st) {
                Some(e) => out.push(e),
                None => whole = false,
            }
        }
        for e in &mut out {
            watch_all(e, watched && whole);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
