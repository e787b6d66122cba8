//! Changing the tree: create, mkdir, symlink, link, mknod, remove,
//! rename, setattr, and writes at offsets; readlink and statfs, which
//! only served directories answer. Only served directories (`svc/S/root/...`, here or on other
//! machines) change; everywhere else these are refused, and setattr is
//! accepted and means nothing (a shell's `>` truncates a ctl file first).

use std::sync::Arc;

use ns::error::{self, EPERM};
use ns::MachineId;

use super::dir::locks::{Lock, Owner};
use super::dir::{self, Access, Attrs, Root, StatFs};
use super::errors::{ENOATTR, ENOTSUP, ESTALE, EXDEV};
use super::handle::{Handle, Told};
use super::io::{blocking, quick, sized};
use super::remote::{self, RemoteFile, Removal};
use super::tree::{Entry, Node};
use super::Namespace;

async fn write_local(f: &Arc<std::fs::File>, offset: u64, data: bytes::Bytes) -> Result<usize, String> {
    let f = f.clone();
    sized(data.len(), move || dir::write_at(&f, offset, &data)).await
}

fn refused(path: &[String]) -> String {
    error::detail(EPERM, format!("/{} is not in a served directory", path.join("/")))
}

/// Where a path that may change lives.
enum Place {
    Here(Arc<Root>, Vec<String>),
    There(MachineId, Vec<String>),
}

impl Namespace {
    /// The served directory a path is in.
    fn place(&self, path: &[String]) -> Result<Place, String> {
        let node = match self.resolve(path) {
            Ok(node) => node,
            // A new name: refused at once where its directory is the tree's own.
            Err(e) => match path.split_last().map(|(_, dir)| self.resolve(dir)) {
                Some(Ok(Node::Stored(..) | Node::Remote(..))) | None | Some(Err(_)) => return Err(e),
                Some(Ok(_)) => return Err(refused(path)),
            },
        };
        match node {
            Node::Stored(s, rel) => Ok(Place::Here(self.root(&s)?, rel)),
            Node::Remote(m, rest) if m != *self.router().id() => Ok(Place::There(m, rest)),
            Node::Remote(_, rest) => self.place(&rest),
            _ => Err(refused(path)),
        }
    }

    /// Makes `rel` in `root` with `make`, its directory watched first for
    /// whoever asks (see `dir::watch`), so that the entry made (`entry` of
    /// what `make` gives) may be kept.
    async fn made_here<T: Send + 'static>(
        &self,
        root: Arc<Root>,
        rel: Vec<String>,
        make: impl FnOnce(&Root, &[String]) -> Result<T, String> + Send + 'static,
        entry: fn(&mut T) -> &mut Entry,
    ) -> Result<T, String> {
        let (co, who) = (self.coherence().clone(), dir::watch::asker());
        quick(move || {
            let watched = root.watch_parent(&rel, &co.watcher, &who);
            let mut made = make(&root, &rel)?;
            dir::watch_all(entry(&mut made), watched);
            Ok(made)
        })
        .await
    }

    /// A change of names on machine `m` by `change`, which answers with
    /// the directories it changed as they are after it, kept (see
    /// `coherence`); and whether `m` tells of changes to what it made.
    async fn changed_there<T>(
        &self,
        m: &MachineId,
        change: impl std::future::Future<Output = Result<(T, Vec<Entry>), String>>,
    ) -> Result<(T, bool), String> {
        let (epoch, gen) = (self.told_before(m), self.coherence().gen());
        let (done, dirs) = change.await?;
        self.coherence().fill(m, epoch, dirs, gen);
        Ok((done, self.coherence().still(m, epoch)))
    }

    /// An entry made on machine `m` by `make` (see [`Self::changed_there`]).
    async fn made_there(
        &self,
        m: &MachineId,
        make: impl std::future::Future<Output = Result<(Entry, Vec<Entry>), String>>,
    ) -> Result<Entry, String> {
        let (mut e, told) = self.changed_there(m, make).await?;
        dir::told_if(&mut e, told);
        Ok(e)
    }

    /// Creates a regular file (or opens it, unless `excl`), open as `access`.
    pub async fn create(
        &self,
        path: &[String],
        mode: u32,
        access: Access,
        excl: bool,
    ) -> Result<(Entry, Handle), String> {
        match self.place(path)? {
            Place::Here(root, rel) => {
                let make = move |r: &Root, rel: &[String]| r.create(rel, mode, access, excl);
                let (f, e) = self.made_here(root, rel, make, |m| &mut m.1).await?;
                // Made, it is watched or never will be: its name is gone
                // from its maker's view only by a change it is told of.
                let told = Told::new(e.meta.is_some_and(|m| m.watched), None);
                Ok((e, Handle::Stored(Arc::new(f), Arc::new(told))))
            }
            Place::There(m, rest) => {
                let create = remote::create(self.router(), &m, &rest, mode, access, excl);
                let ((mut e, h), told) = self.changed_there(&m, create).await?;
                dir::told_if(&mut e, told);
                Ok((e, h))
            }
        }
    }

    pub async fn mkdir(&self, path: &[String], mode: u32) -> Result<Entry, String> {
        match self.place(path)? {
            Place::Here(root, rel) => {
                // Watched itself as soon as made: the maker knows its
                // names, and is told of every one made after.
                let (co, who) = (self.coherence().clone(), dir::watch::asker());
                let make = move |r: &Root, rel: &[String]| {
                    let mut e = r.mkdir(rel, mode)?;
                    let id = e.meta.as_ref().and_then(|m| m.id);
                    let empty = r.watch_empty(rel, id, &co.watcher, &who);
                    if let Some(m) = e.meta.as_mut() {
                        m.empty_told = empty;
                    }
                    Ok(e)
                };
                self.made_here(root, rel, make, |e| e).await
            }
            Place::There(m, rest) => self.made_there(&m, remote::mkdir(self.sessions(), &m, &rest, mode)).await,
        }
    }

    /// Makes symbolic link `path` to `target`.
    pub async fn symlink(&self, path: &[String], target: &str) -> Result<Entry, String> {
        let target = target.to_string();
        match self.place(path)? {
            Place::Here(root, rel) => self.made_here(root, rel, move |r, rel| r.symlink(rel, &target), |e| e).await,
            Place::There(m, rest) => self.made_there(&m, remote::symlink(self.sessions(), &m, &rest, &target)).await,
        }
    }

    /// The target of symbolic link `path`.
    pub async fn readlink(&self, path: &[String]) -> Result<String, String> {
        match self.place(path)? {
            Place::Here(root, rel) => quick(move || root.readlink(&rel)).await,
            Place::There(m, rest) => remote::readlink(self.sessions(), &m, &rest).await,
        }
    }

    /// Gives file `from` the further name `to`, in the same served
    /// directory (across two, EXDEV, as between file systems).
    pub async fn link(&self, from: &[String], to: &[String]) -> Result<Entry, String> {
        match (self.place(from)?, self.place(to)?) {
            (Place::Here(a, f), Place::Here(b, t)) if Arc::ptr_eq(&a, &b) => {
                self.made_here(a, t, move |r, t| r.link(&f, t), |e| e).await
            }
            (Place::There(m, f), Place::There(n, t)) if m == n => {
                self.made_there(&m, remote::link(self.sessions(), &m, &f, &t)).await
            }
            _ => Err(EXDEV.into()),
        }
    }

    /// Makes a fifo, a socket, a device node or an empty regular file.
    pub async fn mknod(&self, path: &[String], mode: u32, rdev: u64) -> Result<Entry, String> {
        match self.place(path)? {
            Place::Here(root, rel) => self.made_here(root, rel, move |r, rel| r.mknod(rel, mode, rdev), |e| e).await,
            Place::There(m, rest) => self.made_there(&m, remote::mknod(self.sessions(), &m, &rest, mode, rdev)).await,
        }
    }

    /// Extended attribute `name` (`user.*`) of a file of a served
    /// directory; other names and other files have none.
    pub async fn getxattr(&self, path: &[String], name: &str) -> Result<Vec<u8>, String> {
        let name = name.to_string();
        match self.xattr_place(path, &name, ENOATTR)? {
            Place::Here(root, rel) => quick(move || root.getxattr(&rel, &name)).await,
            Place::There(m, rest) => remote::getxattr(self.sessions(), &m, &rest, &name).await,
        }
    }

    pub async fn setxattr(&self, path: &[String], name: &str, value: &[u8], flags: u32) -> Result<(), String> {
        let (name, value) = (name.to_string(), value.to_vec());
        match self.xattr_place(path, &name, ENOTSUP)? {
            Place::Here(root, rel) => quick(move || root.setxattr(&rel, &name, &value, flags)).await,
            Place::There(m, rest) => remote::setxattr(self.sessions(), &m, &rest, &name, value, flags).await,
        }
    }

    /// The `user.*` attribute names of a file; none off served directories.
    pub async fn listxattr(&self, path: &[String]) -> Result<Vec<String>, String> {
        match self.place(path) {
            Ok(Place::Here(root, rel)) => quick(move || root.listxattr(&rel)).await,
            Ok(Place::There(m, rest)) => remote::listxattr(self.sessions(), &m, &rest).await,
            Err(_) => self.stat(path).await.map(|_| Vec::new()),
        }
    }

    pub async fn removexattr(&self, path: &[String], name: &str) -> Result<(), String> {
        let name = name.to_string();
        match self.xattr_place(path, &name, ENOATTR)? {
            Place::Here(root, rel) => quick(move || root.removexattr(&rel, &name)).await,
            Place::There(m, rest) => remote::removexattr(self.sessions(), &m, &rest, &name).await,
        }
    }

    /// Where attribute `name` of `path` is kept: only `user.*` names of
    /// files of served directories are asked for; the rest are answered
    /// here, at once, with `other` (see [`dir::xattr`]).
    fn xattr_place(&self, path: &[String], name: &str, other: &str) -> Result<Place, String> {
        if dir::xattr::check(name).is_err() {
            return Err(error::detail(other, name));
        }
        self.place(path).map_err(|_| error::detail(ENOTSUP, "attributes off served directories"))
    }

    /// Allocates, punches or zeroes a range of an open file of a served
    /// directory (fallocate(2)).
    pub async fn allocate(&self, h: &Handle, offset: u64, len: u64, mode: u32) -> Result<(), String> {
        match h {
            Handle::Stored(f, _) => {
                let f = f.clone();
                blocking(move || dir::allocate(&f, offset, len, mode)).await
            }
            Handle::RemoteFile(RemoteFile::Stored(p)) => p.allocate(offset, len, mode).await,
            _ => Err(error::detail(ENOTSUP, "fallocate off served directories")),
        }
    }

    /// Takes, changes or drops (`F_UNLCK`) `owner`'s record lock on an
    /// open file of a served directory, without waiting (a conflict is
    /// EAGAIN); with `get`, says what would conflict instead. `owner` is
    /// FUSE's lock owner on this machine; from another machine's tree
    /// server, [`Namespace::lock_for`] names the machine too.
    pub async fn lock(&self, h: &Handle, owner: u64, l: Lock, get: bool) -> Result<Lock, String> {
        match h {
            Handle::RemoteFile(RemoteFile::Stored(p)) => p.lock(owner, l, get).await,
            _ => self.lock_for(h, (self.router().id().to_string(), owner), l, get).await,
        }
    }

    /// [`Namespace::lock`] for an owner on any machine, on a file here.
    pub async fn lock_for(&self, h: &Handle, owner: Owner, l: Lock, get: bool) -> Result<Lock, String> {
        let Handle::Stored(f, _) = h else { return Err(error::detail(ENOTSUP, "locks off served directories")) };
        let (f, locks) = (f.clone(), self.locks.clone());
        quick(move || {
            let what = |e| super::errors::os(e, "lock");
            if get {
                locks.get(&f, &owner, &l).map_err(what)
            } else {
                locks.set(&f, &owner, &l).map(|_| l).map_err(what)
            }
        })
        .await
    }

    /// Drops every lock of `owner` (FUSE's, on this machine) on an open
    /// file of a served directory, here or there: its process closed a
    /// descriptor of the file, which ends its POSIX locks.
    pub async fn unlock_owner(&self, h: &Handle, owner: u64) {
        let all = Lock { start: 0, end: u64::MAX, typ: libc::F_UNLCK, pid: 0 };
        match h {
            Handle::RemoteFile(RemoteFile::Stored(p)) => {
                let _ = p.lock(owner, all, false).await;
            }
            _ => self.unlock_all(h, &(self.router().id().to_string(), owner)),
        }
    }

    /// Drops `owner`'s locks on an open file of a served directory here.
    pub fn unlock_all(&self, h: &Handle, owner: &Owner) {
        if let Handle::Stored(f, _) = h {
            self.locks.drop_owner(f, owner);
        }
    }

    /// The file system of the served directory `path` is in.
    pub async fn statfs(&self, path: &[String]) -> Result<StatFs, String> {
        match self.place(path)? {
            Place::Here(root, _) => quick(move || root.statfs()).await,
            Place::There(m, rest) => remote::statfs(self.sessions(), &m, &rest).await,
        }
    }

    /// Removes a file, or an empty directory when `dir`.
    pub async fn remove(&self, path: &[String], dir: bool) -> Result<(), String> {
        match self.place(path)? {
            Place::Here(root, rel) => quick(move || root.remove(&rel, dir)).await,
            Place::There(m, rest) => {
                self.changed_there(&m, remote::remove(self.sessions(), &m, &rest, dir)).await.map(drop)
            }
        }
    }

    /// A removal sent ahead (`fuse::removals`), if its directory is still
    /// the one it was answered in.
    pub async fn remove_checked(&self, r: &Removal) -> Result<(), String> {
        if let (Some(id), Some((_, dir))) = (r.parent, r.path.split_last()) {
            let e = self.stat(dir).await?;
            if e.meta.and_then(|m| m.id) != Some(id) {
                return Err(error::detail(ESTALE, format!("/{}", dir.join("/"))));
            }
        }
        self.remove(&r.path, r.dir).await
    }

    /// Removals sent ahead, each on its own and in order: what became of
    /// each. Those of one other machine go in one request, checked there;
    /// a machine that does not know it (an older one), or refuses it as a
    /// whole (one path's rules), is asked for each alone.
    pub async fn remove_all(&self, paths: &[Removal]) -> Vec<Result<(), String>> {
        let mut out: Vec<Result<(), String>> = Vec::with_capacity(paths.len());
        // Each other machine's: where they stand in `paths`, and the
        // removals as named there.
        type There = (MachineId, Vec<usize>, Vec<Removal>);
        let mut there: Vec<There> = Vec::new();
        for (i, r) in paths.iter().enumerate() {
            out.push(Ok(()));
            match self.place(&r.path) {
                Ok(Place::There(m, rest)) => {
                    let r = Removal { path: rest, ..r.clone() };
                    match there.iter_mut().find(|t| t.0 == m) {
                        Some(t) => {
                            t.1.push(i);
                            t.2.push(r);
                        }
                        None => there.push((m, vec![i], vec![r])),
                    }
                }
                Ok(Place::Here(..)) => out[i] = self.remove_checked(r).await,
                Err(e) => out[i] = Err(e),
            }
        }
        for (m, at, rs) in there {
            match self.changed_there(&m, remote::removes(self.sessions(), &m, &rs)).await {
                Ok((done, _)) => {
                    for (&i, r) in at.iter().zip(done) {
                        out[i] = r;
                    }
                }
                Err(e) if e.starts_with("bad tree message") || e.ends_with("before open") || refused_by_rules(&e) => {
                    for (&i, r) in at.iter().zip(&rs) {
                        // An older machine cannot check the directory: only
                        // files and directories as they are named.
                        let one = remote::remove(self.sessions(), &m, &r.path, r.dir);
                        out[i] = self.changed_there(&m, one).await.map(drop);
                    }
                }
                // Lost on the way: done there or not, never asked twice.
                Err(e) => {
                    for &i in &at {
                        out[i] = Err(e.clone());
                    }
                }
            }
        }
        out
    }

    /// Renames within one served directory; across two, EXDEV (so `mv`
    /// copies). `flags` as renameat2(2)'s.
    pub async fn rename(&self, from: &[String], to: &[String], flags: u32) -> Result<(), String> {
        match (self.place(from)?, self.place(to)?) {
            (Place::Here(a, f), Place::Here(b, t)) if Arc::ptr_eq(&a, &b) => {
                quick(move || a.rename(&f, &t, flags)).await
            }
            (Place::There(m, f), Place::There(n, t)) if m == n => {
                self.changed_there(&m, remote::rename(self.sessions(), &m, &f, &t, flags)).await.map(drop)
            }
            _ => Err(EXDEV.into()),
        }
    }

    /// Changes a file's size, mode or times: through `h` when the file is
    /// open (it may have been renamed or removed since), else by path.
    pub async fn set_attr(&self, path: &[String], h: Option<&Handle>, attrs: Attrs) -> Result<Entry, String> {
        if let Some(h @ (Handle::Stored(..) | Handle::RemoteFile(RemoteFile::Stored(_)))) = h {
            let mut e = self.handle_attr(h, attrs).await?;
            e.name = path.last().cloned().unwrap_or_default();
            return Ok(e);
        }
        let mut e = match self.place(path) {
            Ok(Place::Here(root, rel)) => quick(move || root.set_attr(&rel, &attrs)).await?,
            Ok(Place::There(m, rest)) => remote::set_attr(self.sessions(), &m, &rest, attrs).await?,
            // The tree's own files have nothing to change.
            Err(_) => return self.stat(path).await,
        };
        e.name = path.last().cloned().unwrap_or_default();
        Ok(e)
    }

    /// Changes an open file of a served directory (nothing set: its status).
    pub async fn handle_attr(&self, h: &Handle, attrs: Attrs) -> Result<Entry, String> {
        match h {
            Handle::Stored(f, told) => {
                let (f, told, co) = (f.clone(), told.clone(), self.coherence().clone());
                quick(move || {
                    // Watched before the look, as at open.
                    let watched = told.check(&co.watcher);
                    let mut e = dir::file_attr(&f, &attrs, "", "open file")?;
                    dir::watch_all(&mut e, watched);
                    Ok(e)
                })
                .await
            }
            // Kept as a look at its name is (see `Namespace::stat`).
            Handle::RemoteFile(RemoteFile::Stored(p)) => {
                let epoch = self.told_before(p.machine());
                let mut e = p.attr(attrs).await?;
                dir::told_if(&mut e, self.coherence().still(p.machine(), epoch));
                Ok(e)
            }
            _ => Err(error::detail(EPERM, "not a file of a served directory")),
        }
    }

    /// Writes at an offset: files of served directories; other files take
    /// the write as one message, as [`Namespace::write`] does.
    pub async fn write_at(&self, h: &Handle, offset: u64, data: &[u8]) -> Result<usize, String> {
        match h {
            Handle::Stored(f, _) => write_local(f, offset, bytes::Bytes::copy_from_slice(data)).await,
            Handle::RemoteFile(RemoteFile::Stored(p)) => p.write_at(offset, data).await,
            _ => self.write(h, data).await,
        }
    }

    /// [`Namespace::write_at`] of bytes already owned: a local file takes
    /// them without a copy.
    pub async fn write_bytes(&self, h: &Handle, offset: u64, data: bytes::Bytes) -> Result<usize, String> {
        match h {
            Handle::Stored(f, _) => write_local(f, offset, data).await,
            _ => self.write_at(h, offset, &data).await,
        }
    }

    /// A read of an open file of a served directory as one message: `tag`,
    /// then the bytes (without a copy when the file is here).
    pub async fn read_tagged(&self, h: &Handle, offset: u64, size: usize, tag: u8) -> Result<bytes::Bytes, String> {
        match h {
            Handle::Stored(f, _) => {
                let f = f.clone();
                sized(size, move || dir::read_after(&f, offset, size, &[tag])).await.map(bytes::Bytes::from)
            }
            _ => {
                let d = self.read(h, offset, size).await?;
                let mut b = bytes::BytesMut::with_capacity(d.len() + 1);
                b.extend_from_slice(&[tag]);
                b.extend_from_slice(&d);
                Ok(b.freeze())
            }
        }
    }

    /// Takes the answers of writes sent ahead on an open file of another
    /// machine; with `tell`, says the first error among them (a flush),
    /// else keeps it for the writer (a look at the file).
    pub async fn settle_writes(&self, h: &Handle, tell: bool) -> Result<(), String> {
        match h {
            Handle::RemoteFile(RemoteFile::Stored(p)) if tell => p.settle_writes().await,
            Handle::RemoteFile(RemoteFile::Stored(p)) => p.drain().await,
            _ => Ok(()),
        }
    }

    /// Drops what was read ahead of an open file of another machine.
    pub async fn forget_ahead(&self, h: &Handle) {
        if let Handle::RemoteFile(RemoteFile::Stored(p)) = h {
            p.forget_ahead().await;
        }
    }

    /// Flushes an open file of a served directory to its disk.
    pub async fn sync(&self, h: &Handle) -> Result<(), String> {
        match h {
            Handle::Stored(f, _) => {
                let f = f.clone();
                blocking(move || f.sync_data().map_err(|e| super::errors::io(&e, "sync"))).await
            }
            Handle::RemoteFile(RemoteFile::Stored(p)) => p.sync().await,
            _ => Ok(()),
        }
    }
}

/// A batch refused by the rules of one of its paths (`allow`, `read`).
fn refused_by_rules(e: &str) -> bool {
    matches!(super::errors::errno(e), libc::EPERM | libc::EACCES | libc::EROFS)
}
