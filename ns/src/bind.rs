//! The mount table of a namespace: Plan 9's `bind`, `unmount` and union
//! directories, over paths of the mesh tree.
//!
//! A table maps mount points (paths, as components) to the list of paths
//! that answer for them, in lookup order. `bind OLD NEW` replaces what NEW
//! shows by OLD; `bind -b` puts OLD before what NEW shows now, `bind -a`
//! after it, making a union directory; `-c` marks the member that takes
//! creates. As in Plan 9, OLD is taken as it is when bound: a bind of a
//! path that is itself bound binds what it shows, so resolution is one
//! step and binds can never form a loop.
//!
//! The table knows nothing of the files: the caller checks that OLD and
//! NEW exist, and tries the candidates [`MountTable::resolve`] gives in
//! order.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Where a bind puts OLD in NEW's union.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// `bind`: OLD alone.
    Replace,
    /// `bind -b`: OLD first.
    Before,
    /// `bind -a`: OLD last.
    After,
}

/// One member of a mount point's union.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub path: Vec<String>,
    /// Creates in the union go to the first member that allows them.
    pub create: bool,
}

/// Mount points and their unions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountTable {
    points: BTreeMap<Vec<String>, Vec<Member>>,
}

/// Unions longer than this are refused: each lookup tries every member.
pub const MAX_UNION: usize = 16;
/// Mount points per table.
pub const MAX_POINTS: usize = 1024;

/// Why creating in a directory is refused (Plan 9's wording).
pub const ENOCREATE: &str = "mounted directory forbids creation";

/// A mesh path as components: absolute, no `.`, `..` or empty names.
pub fn parse_path(p: &str) -> Result<Vec<String>, String> {
    if !p.starts_with('/') {
        return Err(format!("{p}: not an absolute path"));
    }
    let parts: Vec<String> = p.split('/').filter(|c| !c.is_empty()).map(String::from).collect();
    if parts.iter().any(|c| c == "." || c == "..") {
        return Err(format!("{p}: . and .. are not allowed"));
    }
    Ok(parts)
}

/// The arguments of `bind`: flags (`-a`, `-b`, `-c`, or `-ac`, `-bc`),
/// then OLD and NEW.
pub fn parse_bind(args: &[&str]) -> Result<(Order, bool, Vec<String>, Vec<String>), String> {
    let (flags, rest) = match args {
        [f, rest @ ..] if f.starts_with('-') => (&f[1..], rest),
        rest => ("", rest),
    };
    let (mut order, mut create) = (Order::Replace, false);
    for c in flags.chars() {
        match (c, order) {
            ('a', Order::Replace) => order = Order::After,
            ('b', Order::Replace) => order = Order::Before,
            ('c', _) if !create => create = true,
            _ => return Err(format!("bad flags -{flags}: want -a, -b or -c, -a and -b apart")),
        }
    }
    if flags.is_empty() && args.first().is_some_and(|f| f.starts_with('-')) {
        return Err("bad flag -".into());
    }
    match rest {
        [old, new] => Ok((order, create, parse_path(old)?, parse_path(new)?)),
        _ => Err("want bind [-a|-b|-c] OLD NEW".into()),
    }
}

/// The arguments of `unmount`: `[OLD] NEW`.
pub fn parse_unmount(args: &[&str]) -> Result<(Option<Vec<String>>, Vec<String>), String> {
    match args {
        [new] => Ok((None, parse_path(new)?)),
        [old, new] => Ok((Some(parse_path(old)?), parse_path(new)?)),
        _ => Err("want unmount [OLD] NEW".into()),
    }
}

/// A path as text: `/a/b`, or `/`.
pub fn show(path: &[String]) -> String {
    format!("/{}", path.join("/"))
}

impl MountTable {
    /// The paths that answer for `path`, in lookup order: `path` itself
    /// when no mount point covers it.
    pub fn resolve(&self, path: &[String]) -> Vec<Vec<String>> {
        for k in (0..=path.len()).rev() {
            if let Some(members) = self.points.get(&path[..k]) {
                return members
                    .iter()
                    .map(|m| {
                        let mut p = m.path.clone();
                        p.extend_from_slice(&path[k..]);
                        p
                    })
                    .collect();
            }
        }
        vec![path.to_vec()]
    }

    /// Whether `path` is a mount point with more than one member.
    pub fn is_union(&self, path: &[String]) -> bool {
        self.points.get(path).is_some_and(|m| m.len() > 1)
    }

    /// Binds `old` onto `new`. The caller has checked that both exist.
    pub fn bind(&mut self, old: &[String], new: &[String], order: Order, create: bool) -> Result<(), String> {
        let olds: Vec<Member> = self.resolve(old).into_iter().map(|path| Member { path, create }).collect();
        let now: Vec<Member> = match self.points.get(new) {
            Some(m) => m.clone(),
            // NEW as it shows now, creates allowed where they were.
            None => self.resolve(new).into_iter().map(|path| Member { path, create: false }).collect(),
        };
        let members = match order {
            Order::Replace => olds,
            Order::Before => olds.into_iter().chain(now).collect(),
            Order::After => now.into_iter().chain(olds).collect(),
        };
        if members.len() > MAX_UNION {
            return Err(format!("{}: union of {} members, limit {MAX_UNION}", show(new), members.len()));
        }
        if !self.points.contains_key(new) && self.points.len() >= MAX_POINTS {
            return Err(format!("{MAX_POINTS} mount points, the limit"));
        }
        // Binding a path onto itself alone undoes nothing and means nothing.
        if members.len() == 1 && members[0].path == new && !create {
            self.points.remove(new);
            return Ok(());
        }
        self.points.insert(new.to_vec(), members);
        Ok(())
    }

    /// `unmount [OLD] NEW`: removes OLD from NEW's union, or every bind
    /// on NEW.
    pub fn unmount(&mut self, old: Option<&[String]>, new: &[String]) -> Result<(), String> {
        let olds = old.map(|o| self.resolve_outside(o, new));
        let Some(members) = self.points.get_mut(new) else {
            return Err(format!("{}: not a mount point", show(new)));
        };
        match (old, olds) {
            (Some(old), Some(olds)) => {
                let before = members.len();
                members.retain(|m| !olds.contains(&m.path));
                if members.len() == before {
                    return Err(format!("{} is not bound on {}", show(old), show(new)));
                }
                if members.is_empty() || (members.len() == 1 && members[0].path == new) {
                    self.points.remove(new);
                }
            }
            _ => {
                self.points.remove(new);
            }
        }
        Ok(())
    }

    /// OLD as an unmount names it: what it resolves to, and itself.
    fn resolve_outside(&self, old: &[String], new: &[String]) -> Vec<Vec<String>> {
        let mut v = vec![old.to_vec()];
        if old != new {
            v.extend(self.resolve(old));
        }
        v
    }

    /// Where a file created in directory `dir` goes: the first member of
    /// its union that allows creates. A directory under no mount point
    /// takes creates itself.
    pub fn create_in(&self, dir: &[String]) -> Result<Vec<String>, String> {
        for k in (0..=dir.len()).rev() {
            if let Some(members) = self.points.get(&dir[..k]) {
                // Below a mount point (not at it), the one member that
                // answered the lookup takes the create.
                let m = if k < dir.len() && members.len() == 1 {
                    Some(&members[0])
                } else {
                    members.iter().find(|m| m.create)
                };
                return match m {
                    Some(m) => {
                        let mut p = m.path.clone();
                        p.extend_from_slice(&dir[k..]);
                        Ok(p)
                    }
                    None => Err(format!("{ENOCREATE}: {}", show(dir))),
                };
            }
        }
        Ok(dir.to_vec())
    }

    /// The table as `bind` lines, one per member, in an order that
    /// rebuilds it: readable in `ctl`, and a namespace file in itself.
    pub fn lines(&self) -> String {
        let mut out = String::new();
        for (new, members) in &self.points {
            let mut line = |flag: &str, m: &Member| {
                let flags = match (flag, m.create) {
                    ("", false) => String::new(),
                    ("", true) => "-c ".into(),
                    (f, c) => format!("{f}{} ", if c { "c" } else { "" }),
                };
                let _ = writeln!(out, "bind {flags}{} {}", show(&m.path), show(new));
            };
            match members.iter().position(|m| m.path == *new) {
                None => {
                    for (i, m) in members.iter().enumerate() {
                        line(if i == 0 { "" } else { "-a" }, m);
                    }
                }
                // Befores are bound last first, so that they end in order.
                Some(at) => {
                    for m in members[..at].iter().rev() {
                        line("-b", m);
                    }
                    for m in &members[at + 1..] {
                        line("-a", m);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('/').filter(|c| !c.is_empty()).map(String::from).collect()
    }

    #[test]
    fn replace_and_below() {
        let mut t = MountTable::default();
        t.bind(&p("/n/c/svc/gpu"), &p("/svc/gpu"), Order::Replace, false).unwrap();
        assert_eq!(t.resolve(&p("/svc/gpu/data")), vec![p("/n/c/svc/gpu/data")]);
        assert_eq!(t.resolve(&p("/svc/gpu")), vec![p("/n/c/svc/gpu")]);
        assert_eq!(t.resolve(&p("/svc/other")), vec![p("/svc/other")]);
        assert!(!t.is_union(&p("/svc/gpu")));
    }

    #[test]
    fn union_order_after_and_before() {
        let mut t = MountTable::default();
        t.bind(&p("/n/b/svc"), &p("/svc"), Order::After, false).unwrap();
        assert_eq!(t.resolve(&p("/svc/x")), vec![p("/svc/x"), p("/n/b/svc/x")]);
        t.bind(&p("/n/c/svc"), &p("/svc"), Order::Before, false).unwrap();
        assert_eq!(t.resolve(&p("/svc")), vec![p("/n/c/svc"), p("/svc"), p("/n/b/svc")]);
        assert!(t.is_union(&p("/svc")));
        assert_eq!(t.lines(), "bind -b /n/c/svc /svc\nbind -a /n/b/svc /svc\n");
    }

    #[test]
    fn binds_take_old_as_it_is_and_never_loop() {
        let mut t = MountTable::default();
        t.bind(&p("/n/b/svc"), &p("/svc"), Order::Replace, false).unwrap();
        // /svc now shows b's; binding it elsewhere binds b's.
        t.bind(&p("/svc"), &p("/n/a/svc"), Order::Replace, false).unwrap();
        assert_eq!(t.resolve(&p("/n/a/svc/x")), vec![p("/n/b/svc/x")]);
        // And a bind onto itself through another path stays one step.
        t.bind(&p("/n/a/svc"), &p("/svc"), Order::Replace, false).unwrap();
        assert_eq!(t.resolve(&p("/svc/x")), vec![p("/n/b/svc/x")]);
    }

    #[test]
    fn unmount_one_member_or_all() {
        let mut t = MountTable::default();
        t.bind(&p("/n/b/svc"), &p("/svc"), Order::After, false).unwrap();
        t.bind(&p("/n/c/svc"), &p("/svc"), Order::After, false).unwrap();
        t.unmount(Some(&p("/n/b/svc")), &p("/svc")).unwrap();
        assert_eq!(t.resolve(&p("/svc")), vec![p("/svc"), p("/n/c/svc")]);
        assert!(t.unmount(Some(&p("/n/b/svc")), &p("/svc")).unwrap_err().contains("not bound"));
        t.unmount(None, &p("/svc")).unwrap();
        assert_eq!(t.resolve(&p("/svc")), vec![p("/svc")]);
        assert!(t.unmount(None, &p("/svc")).unwrap_err().contains("not a mount point"));
    }

    #[test]
    fn creates_go_where_c_says() {
        let mut t = MountTable::default();
        assert_eq!(t.create_in(&p("/x")).unwrap(), p("/x"));
        t.bind(&p("/n/b/d"), &p("/x"), Order::After, false).unwrap();
        assert!(t.create_in(&p("/x")).unwrap_err().starts_with(ENOCREATE));
        t.bind(&p("/n/c/d"), &p("/x"), Order::After, true).unwrap();
        assert_eq!(t.create_in(&p("/x")).unwrap(), p("/n/c/d"));
        // Below a plain bind, creates go through.
        t.bind(&p("/n/b/root"), &p("/y"), Order::Replace, false).unwrap();
        assert_eq!(t.create_in(&p("/y/sub")).unwrap(), p("/n/b/root/sub"));
    }

    #[test]
    fn bind_arguments() {
        assert_eq!(parse_bind(&["/a", "/b"]).unwrap(), (Order::Replace, false, p("/a"), p("/b")));
        assert_eq!(parse_bind(&["-ac", "/a", "/b"]).unwrap().0, Order::After);
        assert!(parse_bind(&["-ac", "/a", "/b"]).unwrap().1);
        assert_eq!(parse_bind(&["-b", "/a", "/b"]).unwrap().0, Order::Before);
        assert!(parse_bind(&["-ab", "/a", "/b"]).unwrap_err().contains("bad flags"));
        assert!(parse_bind(&["-x", "/a", "/b"]).is_err());
        assert!(parse_bind(&["/a"]).unwrap_err().contains("want bind"));
        assert!(parse_bind(&["a", "/b"]).unwrap_err().contains("not an absolute path"));
        assert!(parse_bind(&["/n/../etc", "/b"]).unwrap_err().contains(".."));
        assert_eq!(parse_unmount(&["/b"]).unwrap(), (None, p("/b")));
        assert!(parse_unmount(&[]).is_err());
    }

    #[test]
    fn unions_are_bounded() {
        let mut t = MountTable::default();
        for i in 0..MAX_UNION - 1 {
            t.bind(&p(&format!("/n/m{i}/svc")), &p("/svc"), Order::After, false).unwrap();
        }
        assert!(t.bind(&p("/n/zz/svc"), &p("/svc"), Order::After, false).unwrap_err().contains("limit"));
    }
}
