//! The inode table of the FUSE server: a node per path, kept while the
//! kernel holds a lookup on it; a rename moves nodes, an exchange swaps
//! them, a removal detaches the path (an open file keeps its node).

use std::collections::HashMap;

/// The root directory's node.
pub const ROOT: u64 = 1;

/// Paths by inode and back; an inode lives while the kernel looks it up.
#[derive(Default)]
pub struct Inodes {
    by_ino: HashMap<u64, (String, u64)>,
    by_path: HashMap<String, u64>,
    next: u64,
}

impl Inodes {
    pub fn path(&self, ino: u64) -> Option<String> {
        if ino == ROOT {
            return Some("/".into());
        }
        self.by_ino.get(&ino).map(|(p, _)| p.clone())
    }

    /// The node of `path`, if the kernel holds one.
    pub fn node(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    pub fn get_or_add(&mut self, path: &str) -> u64 {
        if path == "/" {
            return ROOT;
        }
        if let Some(&ino) = self.by_path.get(path) {
            if let Some(e) = self.by_ino.get_mut(&ino) {
                e.1 += 1;
            }
            return ino;
        }
        self.next = self.next.max(ROOT) + 1;
        let ino = self.next;
        self.by_ino.insert(ino, (path.to_string(), 1));
        self.by_path.insert(path.to_string(), ino);
        ino
    }

    pub fn forget(&mut self, ino: u64, n: u64) {
        if let Some(e) = self.by_ino.get_mut(&ino) {
            e.1 = e.1.saturating_sub(n);
            if e.1 == 0 {
                let (p, _) = self.by_ino.remove(&ino).unwrap_or_default();
                // The path may name a newer inode by now (removed, created).
                if self.by_path.get(&p) == Some(&ino) {
                    self.by_path.remove(&p);
                }
            }
        }
    }

    /// `path` and everything below it, as (path, inode).
    fn under(&self, path: &str) -> Vec<(String, u64)> {
        let prefix = format!("{path}/");
        self.by_path
            .iter()
            .filter(|(p, _)| *p == path || p.starts_with(&prefix))
            .map(|(p, &i)| (p.clone(), i))
            .collect()
    }

    /// `path` was removed: a file made there later is a new inode, while
    /// the kernel may still hold the old one (an open file).
    pub fn detach(&mut self, path: &str) {
        for (p, _) in self.under(path) {
            self.by_path.remove(&p);
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

    /// Gives each (path, inode) of `moved`, below `from`, its place below `to`.
    fn move_all(&mut self, moved: Vec<(String, u64)>, from: &str, to: &str) {
        for (p, ino) in moved {
            let np = format!("{to}{}", &p[from.len()..]);
            if self.by_path.get(&p) == Some(&ino) {
                self.by_path.remove(&p);
            }
            self.by_path.insert(np.clone(), ino);
            if let Some(e) = self.by_ino.get_mut(&ino) {
                e.0 = np;
            }
        }
    }
}
