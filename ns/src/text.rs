//! The text of the router's own files that need more than one table: the
//! router `ctl` when read, and `svc/S/info`. The file tree (srv) serves
//! them to the mount, to other machines and to `mesh cat` alike.

use std::fmt::Write;

use crate::error::{self, ENOSERVICE};
use crate::path::bang_path;
use crate::router::Router;

/// The `svc/S/info` file: where S lives from here.
pub fn info(r: &Router, service: &str) -> Result<String, String> {
    let t = r.table();
    let rt = t.nearest(service).ok_or_else(|| error::detail(ENOSERVICE, service))?;
    Ok(format!("{} {} {} {}\n", rt.machine, rt.term, rt.hops(), bang_path(&rt.path)))
}

/// The `ctl` file when read: identity, registry state, the state of each
/// pipeline, recent events.
pub fn ctl_text(r: &Router) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "machine {}", r.id());
    let _ = writeln!(out, "gossip {}", if r.config().gossip { "on" } else { "off" });
    if let Some((reg, up)) = r.registry_status() {
        let _ = writeln!(out, "registry {reg} {}", if up { "reachable" } else { "unreachable" });
    }
    match r.pairs() {
        Some(p) => {
            let _ = writeln!(out, "{}", p.status());
        }
        None => {
            let _ = writeln!(out, "end-to-end off (insecure)");
        }
    }
    for (name, state) in r.states() {
        let _ = writeln!(out, "{name} {state}");
    }
    for e in r.events() {
        let _ = writeln!(out, "event {e}");
    }
    out
}
