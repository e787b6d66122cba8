//! Prints a [`Deployment`] as a deployment file, in the layout of the
//! examples: one table a machine, services as inline tables, defaults left
//! out, so the output is what a person would have written.

use std::fmt::Write;
use std::path::Path;

use super::tree::key_segment;
use super::{Deployment, Machine, Restart, ServiceSpec, Squash};

/// A TOML string literal, escaped by toml itself.
/// A rule as the file writes it: `["a", "b/alice"]`.
fn rules(w: &[crate::policy::Who]) -> String {
    list(&w.iter().map(|w| w.to_string()).collect::<Vec<_>>())
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn quote_path(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

fn list<T: ToString>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(|i| quote(&i.to_string())).collect();
    format!("[{}]", items.join(", "))
}

pub(super) fn deployment(d: &Deployment) -> String {
    let mut out = String::new();
    for m in d.machines.values() {
        machine(&mut out, m);
    }
    for p in &d.pipelines {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "[[pipelines]]\nname = {}\nstages = {}", quote(&p.name), list(&p.stages));
        if p.restart != Restart::default() {
            let _ = writeln!(out, "restart = {}", quote(p.restart.as_str()));
        }
        out.push('\n');
    }
    out
}

fn machine(out: &mut String, m: &Machine) {
    let id = key_segment(m.id.as_str());
    let mut lines = vec![format!("[machines.{id}]")];
    if !m.listen.is_empty() {
        lines.push(format!("listen = {}", list(&m.listen)));
    }
    if !m.dial.is_empty() {
        lines.push(format!("dial = {}", list(&m.dial)));
    }
    if let Some(p) = &m.mount {
        lines.push(format!("mount = {}", quote_path(p)));
    }
    if let Some(r) = &m.registry {
        lines.push(format!("registry = {}", quote(r.as_str())));
    }
    if !m.gossip {
        lines.push("gossip = false".into());
    }
    if let Some(p) = &m.key {
        lines.push(format!("key = {}", quote_path(p)));
    }
    if m.insecure {
        lines.push("insecure = true".into());
    }
    if m.allow_other {
        lines.push("allow_other = true".into());
    }
    if m.deny_by_default {
        lines.push("policy = \"deny\"".into());
    }
    if let Some(t) = &m.tree {
        lines.push(format!("tree = {}", rules(t)));
    }
    if let Some(c) = &m.ctl {
        lines.push(format!("ctl = {}", rules(c)));
    }
    if m.resume != super::DEFAULT_RESUME {
        // Whole milliseconds: what the parser takes back.
        lines.push(format!("resume = \"{}ms\"", m.resume.as_millis()));
    }
    if !m.services.is_empty() {
        lines.push("services = [".into());
        lines.extend(m.services.iter().map(|s| format!("  {},", service(s))));
        lines.push("]".into());
    }
    // A sub-table comes after every key of its parent table.
    if !m.peers.is_empty() {
        lines.push(format!("\n[machines.{id}.peers]"));
        for (peer, key) in &m.peers {
            lines.push(format!("{} = {}", key_segment(peer.as_str()), quote(key)));
        }
    }
    out.push_str(&lines.join("\n"));
    out.push_str("\n\n");
}

fn service(s: &ServiceSpec) -> String {
    let mut fields = vec![format!("name = {}", quote(s.name.as_str())), format!("kind = {}", quote(s.kind.as_str()))];
    if !s.command.is_empty() {
        fields.push(format!("command = {}", list(&s.command)));
    }
    if let Some(p) = &s.output {
        fields.push(format!("output = {}", quote_path(p)));
    }
    if let Some(p) = &s.root {
        fields.push(format!("root = {}", quote_path(p)));
    }
    if let Some(n) = s.fps {
        fields.push(format!("fps = {n}"));
    }
    if let Some(n) = s.bitrate {
        fields.push(format!("bitrate = {n}"));
    }
    if let Some((cols, rows)) = s.size {
        fields.push(format!("size = \"{cols}x{rows}\""));
    }
    if s.restart != Restart::Never {
        fields.push(format!("restart = {}", quote(s.restart.as_str())));
    }
    if s.squash != Squash::default() {
        fields.push(format!("squash = {}", quote(s.squash.as_str())));
    }
    if let Some(allow) = &s.allow {
        fields.push(format!("allow = {}", rules(allow)));
    }
    if !s.read.is_empty() {
        fields.push(format!("read = {}", rules(&s.read)));
    }
    format!("{{ {} }}", fields.join(", "))
}
