//! Who may reach what, as the router applies it: the rules in force and
//! their reload, the check of each envelope for this machine
//! ([`Router::refused`]), and the events that tell a denial or a refusal
//! at most once in a while. A child of `router`, so that it reads the
//! router's own state (the policy lock, the told-events table).

use std::sync::Arc;

use tracing::debug;

use super::{lock, Inner, Router};
use crate::conv::RESERVED;
use crate::envelope::{Envelope, Kind};
use crate::error;
use crate::path::MachineId;
use crate::policy::{Access, Policy};

/// A denial of the same who and service is told again after this long.
const DENIAL_QUIET: std::time::Duration = std::time::Duration::from_secs(10);
/// Events told at most once in a while, remembered at most (beyond, the
/// quiet ones are forgotten, and new ones untold until there is room).
const MAX_TOLD: usize = 1024;

impl Router {
    /// Who may reach this machine's services from now on; conversations
    /// already open stay.
    pub fn set_policy(&self, p: Policy) {
        let open = p.is_open();
        *self.0.policy.write().unwrap_or_else(|e| e.into_inner()) = (Arc::new(p), open);
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.0.policy.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// What `user` on `machine` may do with `service` here; a denial is
    /// logged in `ctl` with who, what and the rule.
    pub fn access(&self, service: &str, machine: &MachineId, user: Option<&str>) -> Access {
        self.judge(
            machine,
            user,
            service,
            |p| p.check(service, machine, user),
            |p| format!("svc/{service}: {}", p.why(service)),
        )
    }

    /// What `user` on `machine` may do with this machine's tree outside
    /// its services (`ctl`: a write to a `ctl` file); a denial is logged
    /// as for a service.
    pub fn tree_access(&self, ctl: bool, machine: &MachineId, user: Option<&str>) -> Access {
        self.judge(machine, user, "/", |p| p.check_tree(ctl, machine, user), |p| format!("the tree: {}", p.why_tree()))
    }

    /// One check under the rules in force; a denial is told in `ctl` as
    /// `denied WHO WHAT`, once in a while per who and `what`.
    fn judge(
        &self,
        machine: &MachineId,
        user: Option<&str>,
        what: &str,
        check: impl FnOnce(&Policy) -> Access,
        why: impl FnOnce(&Policy) -> String,
    ) -> Access {
        let (policy, open) = self.0.policy.read().unwrap_or_else(|e| e.into_inner()).clone();
        if open {
            return Access::Full;
        }
        let a = check(&policy);
        if a == Access::Denied {
            let who = crate::policy::who(machine, user);
            let line = || format!("denied {who} {}", why(&policy));
            self.tell_once((who.clone(), what.to_string()), DENIAL_QUIET, line);
        }
        a
    }

    /// Tells `line` in `ctl` unless the same `key` was told less than
    /// `quiet` ago, so that a peer cannot push every other event out; the
    /// line is made only when told.
    pub(crate) fn tell_once(&self, key: (String, String), quiet: std::time::Duration, line: impl FnOnce() -> String) {
        let now = tokio::time::Instant::now();
        let mut told = lock(&self.0.told);
        if told.len() >= MAX_TOLD {
            told.retain(|_, at| now.duration_since(*at) < quiet);
        }
        let fresh = told.get(&key).is_none_or(|at| now.duration_since(*at) >= quiet);
        if fresh && told.len() < MAX_TOLD {
            let line = line();
            debug!("{line}");
            told.insert(key, now);
            drop(told);
            self.log_event(line);
        }
    }

    /// How `reload` reads the rules again: set by whoever started the
    /// router from a file.
    pub fn set_reloader(&self, f: impl Fn(&Router) -> Result<String, String> + Send + Sync + 'static) {
        let _ = self.0.reloader.set(Box::new(f));
    }

    /// Reads the rules again (`reload` in `ctl`, SIGHUP): what changed,
    /// or why nothing did, also told in `ctl`'s events. Links and open
    /// conversations stay as they are.
    pub fn reload(&self) -> Result<String, String> {
        let res = match self.0.reloader.get() {
            Some(f) => f(self),
            None => Err("nothing to reload: this router was not started from a deployment file".into()),
        };
        match &res {
            Ok(line) => self.log_event(format!("reload: {line}")),
            Err(e) => self.log_event(format!("reload failed, rules unchanged: {e}")),
        }
        res
    }
}

impl Router {
    /// Why the rules refuse an envelope for this machine, if they do:
    /// one addressed to a service by name (each message an opener sends)
    /// from a machine and user its `allow` rules do not admit; one
    /// written into a service's conversation by its number by anyone but
    /// its opener, unless they too may open the service (a writer knowing
    /// a number must not join a conversation it could not open). The
    /// router's own envelopes (no user) pass: what it opens for others,
    /// the tree server checked for them. The reserved tree service checks
    /// each operation itself.
    pub(super) fn refused(&self, env: &Envelope) -> Option<String> {
        // Errors and cancels written back by a conversation's downstream
        // (a pipeline's next stage) come from others than its opener.
        if self.0.policy_open() || !matches!(env.kind, Kind::Data | Kind::Eof) {
            return None;
        }
        let src = env.src.machine.as_ref().unwrap_or(self.id());
        if src == self.id() && env.user.is_none() {
            return None;
        }
        let service = env.dst.service.as_str();
        let what = match env.dst.conv {
            None if service == RESERVED => return None,
            None => format!("open svc/{service}"),
            Some(n) => match if n >> 32 == 0 {
                self.0.convs.opened_by(n, &env.src)
            } else {
                // A conversation a local client serves (`mesh serve`).
                self.0.clients.opened_by(&env.dst, &env.src)
            } {
                Some(false) => format!("write to {}", env.dst),
                _ => return None,
            },
        };
        if self.access(service, src, env.user.as_deref()) != Access::Denied {
            return None;
        }
        let who = crate::policy::who(src, env.user.as_deref());
        Some(error::detail(error::EPERM, format!("{who} may not {what}")))
    }
}

impl Inner {
    /// Whether the rules refuse no one (nothing to check).
    pub(super) fn policy_open(&self) -> bool {
        self.policy.read().unwrap_or_else(|e| e.into_inner()).1
    }
}

/// Reads a router's rules again (see [`Router::set_reloader`]).
pub(super) type Reloader = Box<dyn Fn(&Router) -> Result<String, String> + Send + Sync>;
