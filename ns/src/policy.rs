//! Who may reach what (issue 18): the rules of the deployment file's
//! `allow`, `read` and `policy` keys, and the check a serving router
//! makes on every new conversation and every tree operation.
//!
//! A rule names machines and users: `"*"` (anyone), `"M"` (anyone on
//! machine M), `"M/U"` (user U on machine M), `"*/U"` (user U on any
//! machine). A service with `allow` admits those it names; one without
//! follows its machine's `policy` (`"allow"`, the default, admits anyone;
//! `"deny"` no one). A `dir` service's `read` names those who may read
//! its files but not change them. The user is the name, on the machine a
//! conversation starts from, of the process's user (a local client's
//! uid, a FUSE caller's); a conversation the router itself opens (a
//! pipeline, a tree's coherence) has no user and matches only rules for
//! the whole machine.
//!
//! [`Policy::check`] allocates nothing and takes a lookup and a scan of
//! the service's rule: it runs on every envelope that opens a
//! conversation.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::path::{MachineId, ServiceName};

/// One entry of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Who {
    /// `*`: anyone.
    Anyone,
    /// `M`: anyone on machine M.
    Machine(MachineId),
    /// `M/U`: user U on machine M.
    User(MachineId, String),
    /// `*/U`: user U on any machine.
    UserAnywhere(String),
}

impl Who {
    fn admits(&self, machine: &MachineId, user: Option<&str>) -> bool {
        match self {
            Who::Anyone => true,
            Who::Machine(m) => m == machine,
            Who::User(m, u) => m == machine && user == Some(u.as_str()),
            Who::UserAnywhere(u) => user == Some(u.as_str()),
        }
    }

    /// The machine it names, if one.
    pub fn machine(&self) -> Option<&MachineId> {
        match self {
            Who::Machine(m) | Who::User(m, _) => Some(m),
            _ => None,
        }
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Anyone => f.write_str("*"),
            Who::Machine(m) => write!(f, "{m}"),
            Who::User(m, u) => write!(f, "{m}/{u}"),
            Who::UserAnywhere(u) => write!(f, "*/{u}"),
        }
    }
}

impl std::str::FromStr for Who {
    type Err = String;

    fn from_str(s: &str) -> Result<Who, String> {
        let want = || format!("{s:?} is not a rule: want \"MACHINE\", \"MACHINE/USER\", \"*/USER\" or \"*\"");
        let (m, u) = match s.split_once('/') {
            Some((m, u)) => (m, Some(u)),
            None => (s, None),
        };
        if let Some(u) = u {
            if !is_user_name(u) {
                return Err(format!("{}: {u:?} is not a user name", want()));
            }
        }
        match (m, u) {
            ("*", None) => Ok(Who::Anyone),
            ("*", Some(u)) => Ok(Who::UserAnywhere(u.to_string())),
            (m, u) => {
                let m: MachineId = m.parse().map_err(|e| format!("{}: {e}", want()))?;
                Ok(match u {
                    Some(u) => Who::User(m, u.to_string()),
                    None => Who::Machine(m),
                })
            }
        }
    }
}

/// A user name as Debian's `adduser` takes it, and the `uidN` this
/// module gives a uid with no name.
pub fn is_user_name(u: &str) -> bool {
    let mut chars = u.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    first_ok && u.len() <= 32 && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c))
}

/// What a rule says of one service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// `allow`: who may open it (and change a dir service's files); `None`
    /// when the key is absent (the machine's `policy` decides).
    pub allow: Option<Vec<Who>>,
    /// `read` (dir services): who may read its files, not change them.
    pub read: Vec<Who>,
}

/// What a caller may do with a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Full,
    /// Read its files only (a dir service's `read`).
    Read,
    Denied,
}

/// One machine's rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `policy = "deny"`: services without `allow` are closed.
    pub deny_by_default: bool,
    pub rules: HashMap<ServiceName, Rule>,
    /// `tree`: who may reach the rest of this machine's tree from another
    /// machine (its listings, routes, terminals, `ctl` files to read, and
    /// other machines' trees passed on); its services keep their own
    /// rules. `None`: anyone.
    pub tree: Option<Vec<Who>>,
    /// `ctl`: who may write its `ctl` files (the router's, its
    /// terminals') from another machine; the others who may reach the
    /// tree read them. `None`: anyone, or no one under `policy = "deny"`.
    pub ctl: Option<Vec<Who>>,
}

impl Policy {
    /// Whether nothing is ever refused (no rule, policy allow): the check
    /// is skipped.
    pub fn is_open(&self) -> bool {
        !self.deny_by_default
            && self.tree.is_none()
            && self.ctl.is_none()
            && self.rules.values().all(|r| r.allow.is_none())
    }

    /// What `user` on `machine` may do with this machine's tree outside
    /// its services: read it, and write its `ctl` files.
    pub fn check_tree(&self, ctl: bool, machine: &MachineId, user: Option<&str>) -> Access {
        let admits = |rule: &Option<Vec<Who>>, default: bool| match rule {
            Some(r) => r.iter().any(|w| w.admits(machine, user)),
            None => default,
        };
        if !admits(&self.tree, true) {
            return Access::Denied;
        }
        if !ctl || admits(&self.ctl, !self.deny_by_default) {
            Access::Full
        } else {
            Access::Read
        }
    }

    /// The rule that decided about the tree, for the event of a denial.
    pub fn why_tree(&self) -> String {
        let names = |r: &[Who]| r.iter().map(|w| format!("{:?}", w.to_string())).collect::<Vec<_>>().join(", ");
        match &self.tree {
            Some(t) => format!("tree = [{}]", names(t)),
            None => "tree open".into(),
        }
    }

    /// What `user` on `machine` may do with `service`.
    pub fn check(&self, service: &str, machine: &MachineId, user: Option<&str>) -> Access {
        let rule = self.rules.get(service);
        let full = match rule.and_then(|r| r.allow.as_ref()) {
            Some(allow) => allow.iter().any(|w| w.admits(machine, user)),
            None => !self.deny_by_default,
        };
        if full {
            Access::Full
        } else if rule.is_some_and(|r| r.read.iter().any(|w| w.admits(machine, user))) {
            Access::Read
        } else {
            Access::Denied
        }
    }

    /// The rule that decided about `service`, for the event of a denial.
    pub fn why(&self, service: &str) -> String {
        match self.rules.get(service).and_then(|r| r.allow.as_ref()) {
            Some(allow) => {
                let names: Vec<String> = allow.iter().map(|w| format!("{:?}", w.to_string())).collect();
                format!("allow = [{}]", names.join(", "))
            }
            None if self.deny_by_default => "policy = \"deny\"".into(),
            None => "policy = \"allow\"".into(),
        }
    }

    /// The machines the rules name, to check against a deployment.
    pub fn machines(&self) -> HashSet<&MachineId> {
        let rules = self.rules.values().flat_map(|r| r.allow.iter().flatten().chain(&r.read));
        let tree = self.tree.iter().flatten().chain(self.ctl.iter().flatten());
        rules.chain(tree).filter_map(Who::machine).collect()
    }
}

/// Who asks, as rules and denials spell it: `M/U`, or `M` for the
/// router of M itself.
pub fn who(machine: &MachineId, user: Option<&str>) -> String {
    match user {
        Some(u) => format!("{machine}/{u}"),
        None => machine.to_string(),
    }
}

/// The name of user `uid` on this machine, `uidN` when it has none (or
/// one no rule could spell); looked up once per uid.
pub fn user_name(uid: u32) -> Arc<str> {
    static NAMES: Mutex<Option<HashMap<u32, Arc<str>>>> = Mutex::new(None);
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let names = names.get_or_insert_with(HashMap::new);
    if let Some(n) = names.get(&uid) {
        return n.clone();
    }
    let n: Arc<str> = spelled(uid, lookup(uid)).into();
    // A machine has few users; the cache stays small.
    if names.len() < 4096 {
        names.insert(uid, n.clone());
    }
    n
}

/// How user `uid`, named `name` in the password database, travels: the
/// name, or `uidN` for a uid without one. A name rules could not spell
/// (upper case, `@`, too long) is its number too, so every name that
/// travels is one a rule can name and a router will take; and so is an
/// account named like a number (`uid0`), which would otherwise pass for
/// the nameless user of that number.
fn spelled(uid: u32, name: Option<String>) -> String {
    let numeric =
        |n: &str| n.strip_prefix("uid").is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    name.filter(|n| is_user_name(n) && !numeric(n)).unwrap_or_else(|| format!("uid{uid}"))
}

fn lookup(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: an all-zero passwd is a valid value to be filled in.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: the buffers outlive the call and their lengths are given.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded: pw_name points into `buf`, NUL-ended.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    name.to_str().ok().map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_looks_like_a_number_travels_as_its_own_number() {
        assert_eq!(spelled(1000, Some("alice".into())), "alice");
        assert_eq!(spelled(1000, None), "uid1000");
        assert_eq!(spelled(1000, Some("Alice".into())), "uid1000");
        // An account named uid0 is not the nameless user 0.
        assert_eq!(spelled(1001, Some("uid0".into())), "uid1001");
        assert_eq!(spelled(1001, Some("uid1001".into())), "uid1001");
        assert_eq!(spelled(1001, Some("uidx".into())), "uidx");
    }

    fn m(s: &str) -> MachineId {
        s.parse().expect("valid")
    }

    fn who(v: &[&str]) -> Vec<Who> {
        v.iter().map(|s| s.parse().expect("a rule")).collect()
    }

    #[test]
    fn rules_parse_and_print_back() {
        for s in ["*", "a", "a/alice", "*/bob", "net.x/_svc-1"] {
            assert_eq!(s.parse::<Who>().map(|w| w.to_string()).as_deref(), Ok(s));
        }
        for bad in ["", "a/", "/alice", "a/Alice", "a/b/c", "A!", "a/al ice", "**"] {
            assert!(bad.parse::<Who>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn allow_read_and_the_machine_default() {
        let mut p = Policy::default();
        p.rules.insert("secret".parse().expect("valid"), Rule { allow: Some(who(&["b", "a/alice"])), read: vec![] });
        p.rules.insert("files".parse().expect("valid"), Rule { allow: Some(who(&["b"])), read: who(&["*"]) });
        assert!(!p.is_open());
        assert_eq!(p.check("secret", &m("b"), None), Access::Full);
        assert_eq!(p.check("secret", &m("a"), Some("alice")), Access::Full);
        assert_eq!(p.check("secret", &m("a"), Some("bob")), Access::Denied);
        assert_eq!(p.check("secret", &m("a"), None), Access::Denied, "the router of a is not alice");
        assert_eq!(p.check("files", &m("c"), Some("carol")), Access::Read);
        assert_eq!(p.check("other", &m("c"), None), Access::Full, "no rule, policy allow");
        p.deny_by_default = true;
        assert_eq!(p.check("other", &m("c"), None), Access::Denied);
        assert_eq!(p.why("other"), "policy = \"deny\"");
        assert_eq!(p.why("secret"), "allow = [\"b\", \"a/alice\"]");
        assert!(Policy::default().is_open());
    }

    #[test]
    fn users_have_names() {
        assert_eq!(&*user_name(0), "root");
        assert_eq!(&*user_name(4_000_000_000), "uid4000000000");
    }
}
