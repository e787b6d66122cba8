//! The inode table of the FUSE server: a node per file, kept while the
//! kernel holds a lookup on it.
//!
//! A file of a served directory is one node whatever its names (hard
//! links) and wherever it moves: its node number comes from its identity
//! on the serving machine ([`super::super::tree::file_id`]), so it is the
//! same after the kernel forgot it and looked it up again, and `ls -i`,
//! `tar` and `du` see hard links as one file. The tree's own files, which
//! have no such identity, get a node per path from a counter. fuse3 gives
//! the node number as the inode number, so the two ranges are apart:
//! counted nodes stay below [`IDENTIFIED`], identified ones at or above.
//!
//! A rename moves a node's name, an exchange swaps two, a removal takes
//! the name away (an open file keeps its node).

use std::collections::HashMap;

/// The root directory's node.
pub const ROOT: u64 = 1;

/// Where identified nodes start: above any counted one, below 2^63 so
/// that the inode number is positive wherever it is taken as signed.
const IDENTIFIED: u64 = 1 << 62;

/// Whether node `ino` is a file of a served directory.
pub fn served(ino: u64) -> bool {
    ino >= IDENTIFIED
}

/// The node of a file with identity `id`.
pub fn node_of(id: u64) -> u64 {
    (id & (IDENTIFIED - 1)) | IDENTIFIED
}

struct Node {
    /// Its names the kernel knows, the first the one it is reached by.
    paths: Vec<String>,
    /// The last name it had, once removed: an open file is still asked
    /// about by its inode (fstat, fchmod), and answers by its handle.
    last: Option<String>,
    /// Lookups the kernel holds.
    looked: u64,
    /// Its identity, for a file of a served directory.
    id: Option<u64>,
}

impl Node {
    /// `path` names it now: the first name, the one it is reached by.
    /// Another may have gone behind the mount's back (removed on the
    /// serving machine, its inode number since reused for this file).
    fn confirm(&mut self, path: &str) {
        self.paths.retain(|p| p != path);
        self.paths.insert(0, path.to_string());
    }
}

/// Nodes by number, and the node of each path the kernel knows.
#[derive(Default)]
pub struct Inodes {
    by_ino: HashMap<u64, Node>,
    by_path: HashMap<String, u64>,
    /// How many paths of `by_path` lie below each path that has any: a
    /// removal or rename of a path with none below it (a file) need not
    /// look through them all.
    below: HashMap<String, usize>,
    next: u64,
}

impl Inodes {
    pub fn path(&self, ino: u64) -> Option<String> {
        if ino == ROOT {
            return Some("/".into());
        }
        self.by_ino.get(&ino).and_then(|n| n.paths.first().or(n.last.as_ref()).cloned())
    }

    /// The node `path` would have, without counting a lookup: the one the
    /// kernel holds, else the file's own, else none (`u64::MAX`, which
    /// readdir may show).
    pub fn node(&self, path: &str, id: Option<u64>) -> u64 {
        match (id, self.by_path.get(path)) {
            (Some(id), _) => node_of(id),
            (None, Some(&ino)) => ino,
            (None, None) => u64::MAX,
        }
    }

    /// The node the kernel knows as `path`.
    pub fn node_at(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// How many names of node `ino` the kernel knows.
    pub fn names(&self, ino: u64) -> usize {
        self.by_ino.get(&ino).map_or(0, |n| n.paths.len())
    }

    /// The node of `path`, naming the file `id` if it has one; counts a
    /// lookup.
    pub fn get_or_add(&mut self, path: &str, id: Option<u64>) -> u64 {
        if path == "/" {
            return ROOT;
        }
        let want = id.map(node_of);
        match self.by_path.get(path).copied() {
            // The same file as before under this name.
            Some(ino) if want.is_none_or(|w| w == ino) => {
                if let Some(n) = self.by_ino.get_mut(&ino) {
                    n.looked += 1;
                    n.confirm(path);
                }
                return ino;
            }
            // Another file took the name (made there since, elsewhere).
            Some(_) => self.unname(path),
            None => {}
        }
        let ino = want.unwrap_or_else(|| {
            self.next = self.next.max(ROOT) + 1;
            self.next
        });
        let n = self.by_ino.entry(ino).or_insert_with(|| Node { paths: Vec::new(), last: None, looked: 0, id });
        n.looked += 1;
        n.confirm(path);
        self.put(path.to_string(), ino);
        ino
    }

    /// `path` names node `ino`.
    fn put(&mut self, path: String, ino: u64) {
        let fresh = !self.by_path.contains_key(&path);
        if fresh {
            for a in ancestors(&path) {
                match self.below.get_mut(a) {
                    Some(n) => *n += 1,
                    None => {
                        self.below.insert(a.to_string(), 1);
                    }
                }
            }
        }
        self.by_path.insert(path, ino);
    }

    /// `path` names nothing.
    fn take(&mut self, path: &str) -> Option<u64> {
        let ino = self.by_path.remove(path)?;
        for a in ancestors(path) {
            if let Some(n) = self.below.get_mut(a) {
                *n -= 1;
                if *n == 0 {
                    self.below.remove(a);
                }
            }
        }
        Some(ino)
    }

    /// The kernel forgets `k` lookups of node `ino`; true when it no
    /// longer knows the node at all.
    pub fn forget(&mut self, ino: u64, k: u64) -> bool {
        let Some(n) = self.by_ino.get_mut(&ino) else { return false };
        n.looked = n.looked.saturating_sub(k);
        if n.looked > 0 {
            return false;
        }
        if let Some(n) = self.by_ino.remove(&ino) {
            for p in n.paths {
                // The path may name a newer node by now.
                if self.by_path.get(&p) == Some(&ino) {
                    self.take(&p);
                }
            }
        }
        true
    }

    /// The identity of node `ino`'s file, for one of a served directory.
    pub fn id(&self, ino: u64) -> Option<u64> {
        self.by_ino.get(&ino).and_then(|n| n.id)
    }

    /// The node the kernel knows as `name` in directory node `dir`.
    pub fn child(&self, dir: u64, name: &str) -> Option<u64> {
        let n = self.by_ino.get(&dir)?;
        n.paths.iter().find_map(|p| self.by_path.get(&super::child(p, name)).copied())
    }

    /// The node of directory `dir` (a path), if the kernel knows it.
    fn dir_node(&self, dir: &str) -> Option<u64> {
        if dir.is_empty() {
            Some(ROOT)
        } else {
            self.by_path.get(dir).copied()
        }
    }

    /// The nodes of served files the kernel knows, and each of their
    /// names as (directory node, name).
    pub fn served(&self) -> (Vec<u64>, Vec<(u64, String)>) {
        let names = (self.by_path.iter().filter(|(_, &i)| i >= IDENTIFIED))
            .filter_map(|(p, _)| {
                let (dir, name) = p.rsplit_once('/')?;
                Some((self.dir_node(dir)?, name.to_string()))
            })
            .collect();
        (self.by_ino.keys().copied().filter(|&i| i >= IDENTIFIED).collect(), names)
    }

    /// The names the kernel knows in the directory holding node `ino`'s
    /// first name, as (directory node, name, node).
    pub fn siblings(&self, ino: u64) -> Vec<(u64, String, u64)> {
        let Some(path) = self.path(ino) else { return Vec::new() };
        let Some((dir, _)) = path.rsplit_once('/') else { return Vec::new() };
        let Some(dnode) = self.dir_node(dir) else { return Vec::new() };
        let prefix = format!("{dir}/");
        let name = |p: &str| p.strip_prefix(&prefix).filter(|n| !n.contains('/')).map(String::from);
        self.by_path.iter().filter_map(|(p, &i)| name(p).map(|n| (dnode, n, i))).collect()
    }

    /// Takes the name `path` from whatever node has it.
    fn unname(&mut self, path: &str) {
        if let Some(ino) = self.take(path) {
            if let Some(n) = self.by_ino.get_mut(&ino) {
                n.paths.retain(|p| p != path);
                if n.paths.is_empty() {
                    n.last = Some(path.to_string());
                }
            }
        }
    }

    /// `path` and everything below it, as (path, node).
    fn under(&self, path: &str) -> Vec<(String, u64)> {
        if !self.below.contains_key(path) {
            return self.by_path.get(path).map(|&i| vec![(path.to_string(), i)]).unwrap_or_default();
        }
        let prefix = format!("{path}/");
        self.by_path
            .iter()
            .filter(|(p, _)| *p == path || p.starts_with(&prefix))
            .map(|(p, &i)| (p.clone(), i))
            .collect()
    }

    /// `path` was removed: a file made there later is another node, while
    /// the kernel may still hold the old one (an open file).
    pub fn detach(&mut self, path: &str) {
        for (p, _) in self.under(path) {
            self.unname(&p);
        }
    }

    /// `from` is now `to`, and so is everything below it.
    pub fn rename(&mut self, from: &str, to: &str) {
        self.detach(to);
        let moved = self.under(from);
        self.move_all(moved, from, to);
    }

    /// `a` and `b` swapped places, each with everything below it.
    pub fn exchange(&mut self, a: &str, b: &str) {
        let (under_a, under_b) = (self.under(a), self.under(b));
        self.detach(a);
        self.detach(b);
        self.move_all(under_a, a, b);
        self.move_all(under_b, b, a);
    }

    /// Gives each (path, node) of `moved`, below `from`, its place below `to`.
    fn move_all(&mut self, moved: Vec<(String, u64)>, from: &str, to: &str) {
        for (p, ino) in moved {
            let np = format!("{to}{}", &p[from.len()..]);
            if self.by_path.get(&p) == Some(&ino) {
                self.take(&p);
            }
            self.put(np.clone(), ino);
            if let Some(n) = self.by_ino.get_mut(&ino) {
                n.paths.retain(|x| *x != p && *x != np);
                n.paths.insert(0, np);
            }
        }
    }
}

/// The directories above `path` (`/a/b/c`: `/a`, `/a/b`).
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(|(i, _)| &path[..i]).filter(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_links_are_one_node_and_keep_it_through_renames_and_forgets() {
        let mut t = Inodes::default();
        let a = t.get_or_add("/d/a", Some(7));
        let b = t.get_or_add("/d/b", Some(7));
        assert_eq!(a, b);
        assert!(a >= IDENTIFIED);
        // One name goes: the file is still reached by the other.
        t.detach("/d/a");
        assert_eq!(t.path(a).as_deref(), Some("/d/b"));
        // Both gone: the last name stays for the open file's sake.
        t.detach("/d/b");
        assert_eq!(t.path(a).as_deref(), Some("/d/b"));
        assert_eq!(t.get_or_add("/d/b", Some(7)), a);
        t.rename("/d/b", "/e/c");
        assert_eq!(t.path(a).as_deref(), Some("/e/c"));
        assert_eq!(t.get_or_add("/e/c", Some(7)), a);
        t.forget(a, 4);
        assert_eq!(t.path(a), None);
        // Looked up again after the kernel forgot it: the same number.
        assert_eq!(t.get_or_add("/e/c", Some(7)), a);
        // A name removed behind the mount's back, its inode number reused
        // for a file looked up by another name: reached by the new one.
        assert_eq!(t.get_or_add("/f/new", Some(7)), a);
        assert_eq!(t.path(a).as_deref(), Some("/f/new"));
        // Another file made under the name is another node.
        let other = t.get_or_add("/e/c", Some(8));
        assert_ne!(other, a);
        assert_eq!(t.path(other).as_deref(), Some("/e/c"));
        // Files of the tree's own are counted, below identified ones.
        let own = t.get_or_add("/routes", None);
        assert!((ROOT + 1..IDENTIFIED).contains(&own));
        assert_eq!(t.get_or_add("/routes", None), own);
        assert_eq!(t.node("/routes", None), own);
        assert_eq!(t.node("/nowhere", None), u64::MAX);
        assert_eq!(t.node("/nowhere", Some(9)), node_of(9));
    }

    #[test]
    fn an_exchange_swaps_nodes_with_what_is_below() {
        let mut t = Inodes::default();
        let (x, y) = (t.get_or_add("/x", Some(1)), t.get_or_add("/y", Some(2)));
        let inner = t.get_or_add("/x/in", Some(3));
        t.exchange("/x", "/y");
        assert_eq!((t.path(x).as_deref(), t.path(y).as_deref()), (Some("/y"), Some("/x")));
        assert_eq!(t.path(inner).as_deref(), Some("/y/in"));
    }

    /// `under` by a look through every path, as it was.
    fn scanned(t: &Inodes, path: &str) -> Vec<(String, u64)> {
        let prefix = format!("{path}/");
        let mut v: Vec<_> = (t.by_path.iter().filter(|(p, _)| *p == path || p.starts_with(&prefix)))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn what_lies_below_a_path_is_counted_through_every_change() {
        let mut t = Inodes::default();
        for (i, p) in ["/d", "/d/e", "/d/e/f", "/d/g", "/dx", "/dx/h", "/d/e/f/i"].iter().enumerate() {
            t.get_or_add(p, Some(i as u64 + 1));
        }
        let check = |t: &Inodes| {
            for p in ["/d", "/d/e", "/d/e/f", "/d/e/f/i", "/d/g", "/dx", "/dx/h", "/q", "/q/e", "/q/e/f"] {
                let mut got = t.under(p);
                got.sort();
                assert_eq!(got, scanned(t, p), "{p}");
            }
        };
        check(&t);
        t.rename("/d/e", "/q");
        check(&t);
        t.exchange("/q", "/dx");
        check(&t);
        t.detach("/d");
        check(&t);
        let f = t.get_or_add("/q/e/f", Some(3));
        t.forget(f, 10);
        check(&t);
        assert!(t.below.values().all(|&n| n > 0));
    }
}
