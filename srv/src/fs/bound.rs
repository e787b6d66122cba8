//! The tree through a namespace's binds: what FUSE serves.
//!
//! Every path-taking operation of [`Bound`] resolves its path through the
//! mount table ([`ns::bind::MountTable`]) and tries the candidates in
//! order: a lookup finds the first member of a union that has the name, a
//! listing merges the members' entries (the first of each name wins, as
//! lookups do), and creates go to the member bound with `-c`.
//!
//! The tree served to other machines (`remote`) does not go through
//! here: a machine's binds are its own, and two machines binding each
//! other's paths could otherwise send a lookup round in circles.

use std::collections::HashSet;

use ns::bind::{show, Order};

use super::dir::{Access, Attrs, StatFs};
use super::handle::Handle;
use super::remote::Removal;
use super::tree::Entry;
use super::Namespace;

/// A namespace seen through its binds.
pub struct Bound<'a>(pub &'a Namespace);

impl Namespace {
    /// This namespace through its binds.
    pub fn bound(&self) -> Bound<'_> {
        Bound(self)
    }

    /// `bind [-a|-b|-c] OLD NEW` on this namespace: both must exist;
    /// OLD is taken as this namespace shows it now.
    pub async fn bind(&self, old: &[String], new: &[String], order: Order, create: bool) -> Result<(), String> {
        let b = self.bound();
        let (o, n) = (b.stat(old).await, b.stat(new).await);
        let (o, n) =
            (o.map_err(|e| format!("bind: {}: {e}", show(old)))?, n.map_err(|e| format!("bind: {}: {e}", show(new)))?);
        if order != Order::Replace && (o.kind != super::FileKind::Dir || n.kind != super::FileKind::Dir) {
            return Err(format!("bind: a union needs two directories: {} {}", show(old), show(new)));
        }
        self.binds_mut().bind(old, new, order, create)
    }

    /// `unmount [OLD] NEW` on this namespace.
    pub fn unmount(&self, old: Option<&[String]>, new: &[String]) -> Result<(), String> {
        self.binds_mut().unmount(old, new).map_err(|e| format!("unmount: {e}"))
    }
}

impl Bound<'_> {
    fn candidates(&self, path: &[String]) -> Vec<Vec<String>> {
        self.0.binds().resolve(path)
    }

    /// The first candidate that exists, with its entry (named as asked).
    async fn find(&self, path: &[String]) -> Result<(Vec<String>, Entry), String> {
        let mut first_err = None;
        for c in self.candidates(path) {
            match self.0.stat(&c).await {
                Ok(mut e) => {
                    e.name = path.last().cloned().unwrap_or_default();
                    return Ok((c, e));
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| format!("'{}' file does not exist", show(path))))
    }

    pub async fn stat(&self, path: &[String]) -> Result<Entry, String> {
        self.find(path).await.map(|(_, e)| e)
    }

    /// The path to act on: where nothing is bound over it, the path
    /// itself, with no look first (the act says if it is missing, and a
    /// look at another machine's file is a round trip); in a union, the
    /// first member that has it.
    async fn target(&self, path: &[String]) -> Result<Vec<String>, String> {
        let mut cands = self.candidates(path);
        match (cands.pop(), cands.is_empty()) {
            (Some(only), true) => Ok(only),
            _ => self.find(path).await.map(|(c, _)| c),
        }
    }

    /// A directory's entries; of a union, every member's, each name once.
    pub async fn list(&self, path: &[String]) -> Result<Vec<Entry>, String> {
        let cands = self.candidates(path);
        if cands.len() == 1 {
            return self.0.list(&cands[0]).await;
        }
        let (mut out, mut seen, mut first_err, mut any) = (Vec::new(), HashSet::new(), None, false);
        for c in cands {
            match self.0.list(&c).await {
                Ok(v) => {
                    any = true;
                    out.extend(v.into_iter().filter(|e| seen.insert(e.name.clone())));
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if any {
            Ok(out)
        } else {
            Err(first_err.unwrap_or_else(|| "not a directory".into()))
        }
    }

    pub async fn open_with(&self, path: &[String], access: Access) -> Result<Handle, String> {
        let c = self.target(path).await?;
        self.0.open_with(&c, access).await
    }

    /// Where a new file `path` goes: its directory's creating member.
    fn create_path(&self, path: &[String]) -> Result<Vec<String>, String> {
        let Some((name, dir)) = path.split_last() else { return Err(super::errors::EISDIR.into()) };
        let mut p = self.0.binds().create_in(dir)?;
        p.push(name.clone());
        Ok(p)
    }

    pub async fn create(
        &self,
        path: &[String],
        mode: u32,
        access: Access,
        excl: bool,
    ) -> Result<(Entry, Handle), String> {
        // An existing file opens where it is, as a lookup finds it; where
        // that is the one place a new file would go too, with no look.
        let made_at = self.create_path(path);
        let cands = self.candidates(path);
        let one_place = matches!((&made_at, cands.as_slice()), (Ok(p), [c]) if p == c);
        if !excl && !one_place {
            if let Ok((c, _)) = self.find(path).await {
                return self.0.create(&c, mode, access, excl).await;
            }
        }
        let p = made_at?;
        self.0.create(&p, mode, access, excl).await.map(|(mut e, h)| {
            e.name = path.last().cloned().unwrap_or_default();
            (e, h)
        })
    }

    pub async fn mkdir(&self, path: &[String], mode: u32) -> Result<Entry, String> {
        let p = self.create_path(path)?;
        self.0.mkdir(&p, mode).await
    }

    pub async fn symlink(&self, path: &[String], target: &str) -> Result<Entry, String> {
        let p = self.create_path(path)?;
        self.0.symlink(&p, target).await
    }

    pub async fn mknod(&self, path: &[String], mode: u32, rdev: u64) -> Result<Entry, String> {
        let p = self.create_path(path)?;
        self.0.mknod(&p, mode, rdev).await
    }

    pub async fn readlink(&self, path: &[String]) -> Result<String, String> {
        let c = self.target(path).await?;
        self.0.readlink(&c).await
    }

    pub async fn link(&self, from: &[String], to: &[String]) -> Result<Entry, String> {
        let f = self.target(from).await?;
        let t = self.create_path(to)?;
        self.0.link(&f, &t).await
    }

    pub async fn getxattr(&self, path: &[String], name: &str) -> Result<Vec<u8>, String> {
        let c = self.target(path).await?;
        self.0.getxattr(&c, name).await
    }

    pub async fn setxattr(&self, path: &[String], name: &str, value: &[u8], flags: u32) -> Result<(), String> {
        let c = self.target(path).await?;
        self.0.setxattr(&c, name, value, flags).await
    }

    pub async fn listxattr(&self, path: &[String]) -> Result<Vec<String>, String> {
        let c = self.target(path).await?;
        self.0.listxattr(&c).await
    }

    pub async fn removexattr(&self, path: &[String], name: &str) -> Result<(), String> {
        let c = self.target(path).await?;
        self.0.removexattr(&c, name).await
    }

    pub async fn statfs(&self, path: &[String]) -> Result<StatFs, String> {
        let c = self.target(path).await?;
        self.0.statfs(&c).await
    }

    pub async fn remove(&self, path: &[String], dir: bool) -> Result<(), String> {
        let c = self.target(path).await?;
        self.0.remove(&c, dir).await
    }

    /// Removals sent ahead, each on its own and in order (see
    /// `Namespace::remove_all`).
    pub async fn remove_all(&self, paths: &[Removal]) -> Vec<Result<(), String>> {
        let mut targets = Vec::with_capacity(paths.len());
        let mut out: Vec<Option<Result<(), String>>> = Vec::with_capacity(paths.len());
        for r in paths {
            match self.target(&r.path).await {
                Ok(c) => {
                    targets.push(Removal { path: c, ..r.clone() });
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        let mut done = self.0.remove_all(&targets).await.into_iter();
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| done.next().unwrap_or_else(|| Err("remove: no answer".into()))))
            .collect()
    }

    pub async fn rename(&self, from: &[String], to: &[String], flags: u32) -> Result<(), String> {
        let f = self.target(from).await?;
        let t = match self.target(to).await {
            Ok(t) => t,
            Err(_) => self.create_path(to)?,
        };
        self.0.rename(&f, &t, flags).await
    }

    /// Through `h` when the file is open (it may be gone from `path`).
    pub async fn set_attr(&self, path: &[String], h: Option<&Handle>, attrs: Attrs) -> Result<Entry, String> {
        if let Some(h) = h.filter(|h| super::handle_kind(h) == super::FileKind::Stored) {
            return self.0.set_attr(path, Some(h), attrs).await;
        }
        let c = self.target(path).await?;
        self.0.set_attr(&c, h, attrs).await
    }
}
