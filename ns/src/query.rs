//! Reading the router's state without FUSE: `ls PATH` and `cat PATH` over
//! the Unix socket, for `mesh ls`, `mesh cat` and `mesh routes`.
//!
//! The files are the read-only ones of mesh(4); their text is produced by
//! the same functions the FUSE server uses, so both show the same thing.

use std::fmt::Write;

use crate::error::{self, ENOSERVICE};
use crate::path::bang_path;
use crate::router::Router;

/// Answers `ls PATH` or `cat PATH`.
pub fn answer(r: &Router, q: &str) -> Result<String, String> {
    let (verb, path) = q.split_once(' ').unwrap_or((q, "/"));
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match verb {
        "ls" => ls(r, &parts).map(|v| v.join("\n") + if v.is_empty() { "" } else { "\n" }),
        "cat" => cat(r, &parts),
        _ => Err(error::detail(error::EBADCTL, q)),
    }
}

fn not_found(parts: &[&str]) -> String {
    format!("'/{}' file does not exist", parts.join("/"))
}

fn ls(r: &Router, parts: &[&str]) -> Result<Vec<String>, String> {
    let names = match parts {
        [] => ["ctl", "machine", "n", "routes", "svc", "term"].map(String::from).to_vec(),
        ["svc"] => r.table().services().keys().map(|s| s.to_string()).collect(),
        ["svc", s] if r.table().nearest(s).is_some() => vec!["clone".into(), "data".into(), "info".into()],
        ["term"] => r.shown_terms().iter().map(|t| t.name.clone()).collect(),
        ["term", t] if r.shown_term(t).is_some() => vec!["ctl".into(), "data".into(), "status".into()],
        ["n"] => r.table().routes().iter().map(|rt| rt.machine.to_string()).collect(),
        _ => return Err(not_found(parts)),
    };
    Ok(names)
}

fn cat(r: &Router, parts: &[&str]) -> Result<String, String> {
    match parts {
        ["machine"] => Ok(format!("{}\n", r.id())),
        ["routes"] => Ok(r.routes()),
        ["ctl"] => Ok(ctl_text(r)),
        ["svc", s, "info"] => info(r, s),
        ["term", t, "ctl"] => r.shown_term(t).map(|t| t.ctl_text()).ok_or_else(|| not_found(parts)),
        ["term", t, "status"] => r.shown_term(t).map(|t| t.status_text()).ok_or_else(|| not_found(parts)),
        _ => Err(not_found(parts)),
    }
}

/// The `svc/S/info` file: where S lives from here.
pub fn info(r: &Router, service: &str) -> Result<String, String> {
    let t = r.table();
    let rt = t.nearest(service).ok_or_else(|| error::detail(ENOSERVICE, service))?;
    Ok(format!("{} {} {} {}\n", rt.machine, rt.term, rt.hops(), bang_path(&rt.path)))
}

/// The `ctl` file when read: identity, registry state, recent events.
pub fn ctl_text(r: &Router) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "machine {}", r.id());
    let _ = writeln!(out, "gossip {}", if r.config().gossip { "on" } else { "off" });
    if let Some((reg, up)) = r.registry_status() {
        let _ = writeln!(out, "registry {reg} {}", if up { "reachable" } else { "unreachable" });
    }
    for e in r.events() {
        let _ = writeln!(out, "event {e}");
    }
    out
}
