//! `mesh graph`: the mesh's topology as Graphviz DOT.
//!
//! One picture from two sources:
//!
//! - [`Graph::deployment`]: what a deployment file says. Machines are
//!   clusters holding their services; each `dial` entry is a link, an arrow
//!   from the machine that dials to the one listening there, labelled with
//!   its transport and its security, each end carrying the name of the
//!   terminal it is on that machine (`net-M`). Pipelines are drawn stage by
//!   stage, each step resolved as a router would (a named machine, else
//!   the nearest replica by hops, ties broken by id) and labelled with the
//!   hops it crosses.
//! - [`live`]: what a running router knows, read with the no-FUSE client
//!   (`machine`, `routes`, `n`, `term/T/ctl`, `term/T/status`). Its own
//!   network terminals are links with their state and security; every
//!   machine it routes to gets its hops and path; the hops of those paths
//!   that are not its own links are drawn dashed: they are what the paths
//!   cross, not necessarily every link there is. The texts are turned into
//!   a graph by [`Graph::from_view`], which needs no router, so tests feed
//!   it text.
//!
//! [`Graph::dot`] prints either. The output is deterministic (machines,
//! services and links sorted), so it can be compared and committed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write;

use anyhow::Context;
use dial::{DialString, Host};
use ns::client::Client;
use ns::deploy::Deployment;
use ns::path::{bang_path, TermName};
use ns::MachineId;

/// What a router's texts could not be read as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// A line of `routes` that is not `service machine terminal hops path`.
    #[error("routes line {line}: want `service machine terminal hops path`, got {text:?}")]
    BadRoute { line: usize, text: String },
    /// A terminal's `ctl` that does not start `kind address state`.
    #[error("term/{term}/ctl: want `kind address state`, got {text:?}")]
    BadTermCtl { term: String, text: String },
    /// A `machine` file that does not hold a machine id.
    #[error("machine: want a machine id, got {text:?}")]
    BadMachine { text: String },
}

/// The topology, ready to print.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    title: String,
    /// A line under the title saying how to read the picture.
    legend: String,
    machines: BTreeMap<String, MachineNode>,
    /// Nodes for what links lead to but is not a known machine.
    strangers: BTreeMap<String, String>,
    links: Vec<Link>,
    flows: Vec<Flow>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MachineNode {
    /// Label lines under the id: mount, listen, hops...
    notes: Vec<String>,
    /// Service name and kind (empty when unknown, as in a live view).
    services: BTreeMap<String, String>,
    /// The router a live view was read from.
    here: bool,
}

/// How a link is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// A link that is, or will be, up.
    Up,
    /// A link that is down, or will be refused.
    Broken,
    /// A hop of a route's path; the link itself was not seen.
    Crossed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    from: String,
    to: String,
    /// Transport and security.
    label: String,
    /// The terminal's name on `from` and on `to`.
    tail: Option<TermName>,
    head: Option<TermName>,
    /// An arrow from the dialer; none when who dialed is unknown.
    directed: bool,
    look: Look,
    tooltip: String,
}

/// One step of a pipeline: from one stage's service to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Flow {
    pipeline: String,
    step: usize,
    from: String,
    to: String,
    hops: Option<usize>,
}

/// A live router's state as its files say it (see [`live`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// `machine`.
    pub machine: String,
    /// `routes`.
    pub routes: String,
    /// `ls n`: every machine it has a route to.
    pub machines: Vec<String>,
    /// Its network terminals.
    pub terms: Vec<TermView>,
}

/// One terminal of a [`View`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermView {
    /// `net-M`.
    pub name: TermName,
    /// `term/T/ctl`: `kind address state`.
    pub ctl: String,
    /// `term/T/status`, for its `security` line.
    pub status: String,
}

/// Reads a running router's state over its Unix socket and draws it.
pub async fn live(router: &DialString) -> anyhow::Result<Graph> {
    let client = Client::connect(router).await.with_context(|| format!("cannot reach the router at {router}"))?;
    let cat = |path: String| {
        let client = &client;
        async move { crate::browse::text(client, &path).await.map_err(|e| anyhow::anyhow!("cat {path}: {e}")) }
    };
    let ls = |path: &'static str| {
        let client = &client;
        async move { crate::browse::ls(client, path).await.map_err(|e| anyhow::anyhow!("ls {path}: {e}")) }
    };
    let machine = cat("/machine".into()).await?.trim().to_string();
    let routes = cat("/routes".into()).await?;
    let machines = ls("/n").await?;
    let mut terms = Vec::new();
    for line in ls("/term").await? {
        let Some(name) = line.parse::<TermName>().ok().filter(|n| n.machine().is_some()) else {
            continue;
        };
        // A terminal that went since the listing is simply not drawn.
        let (Ok(ctl), Ok(status)) = (cat(format!("/term/{name}/ctl")).await, cat(format!("/term/{name}/status")).await)
        else {
            continue;
        };
        terms.push(TermView { name, ctl, status });
    }
    let title = format!("mesh as {machine} sees it ({router})");
    Ok(Graph::from_view(&View { machine, routes, machines, terms }, &title)?)
}

impl Graph {
    /// The mesh a deployment file describes; `title` names the file.
    pub fn deployment(dep: &Deployment, title: &str) -> Graph {
        let legend = "arrows go from the machine that dials to the one that listens; blue: pipeline steps";
        let mut g = Graph { title: title.to_string(), legend: legend.into(), ..Graph::default() };
        for (id, m) in &dep.machines {
            let mut notes = Vec::new();
            notes.extend(m.listen.iter().map(|l| format!("listen {l}")));
            notes.extend(m.mount.iter().map(|p| format!("mount {}", p.display())));
            notes.extend(m.registry.iter().map(|r| format!("registry {r}")));
            if !m.gossip {
                notes.push("gossip off".into());
            }
            if m.insecure {
                notes.push("insecure".into());
            }
            let services = m.services.iter().map(|s| (s.name.to_string(), s.kind.as_str().to_string())).collect();
            g.machines.insert(id.to_string(), MachineNode { notes, services, here: false });
        }
        for (id, m) in &dep.machines {
            for ds in &m.dial {
                let link = match listener(dep, ds) {
                    Some(to) => {
                        let peer = &dep.machines[to.as_str()];
                        let (security, ok) = security(ds, m.insecure, peer.insecure);
                        Link {
                            from: id.to_string(),
                            to: to.clone(),
                            label: format!("{} {security}", net(ds)),
                            tail: Some(TermName::Net(peer.id.clone())),
                            head: Some(TermName::Net(id.clone())),
                            directed: true,
                            look: if ok { Look::Up } else { Look::Broken },
                            tooltip: ds.to_string(),
                        }
                    }
                    None => {
                        let to = ds.to_string();
                        g.strangers.insert(to.clone(), format!("{to}\nnot in the file"));
                        Link {
                            from: id.to_string(),
                            to,
                            label: net(ds).to_string(),
                            tail: None,
                            head: None,
                            directed: true,
                            look: Look::Up,
                            tooltip: ds.to_string(),
                        }
                    }
                };
                g.links.push(link);
            }
        }
        g.flows = flows(dep, &g.links);
        g
    }

    /// The mesh as one router's files describe it; `title` names it.
    pub fn from_view(v: &View, title: &str) -> Result<Graph, GraphError> {
        let legend = "solid: this router's terminals; dashed: hops its routes cross";
        let mut g = Graph { title: title.to_string(), legend: legend.into(), ..Graph::default() };
        let here = v.machine.clone();
        let here_id: MachineId = here.parse().map_err(|_| GraphError::BadMachine { text: here.clone() })?;
        g.machines
            .insert(here.clone(), MachineNode { notes: vec!["this router".into()], here: true, ..Default::default() });
        for m in &v.machines {
            g.machines.entry(m.clone()).or_default();
        }
        let mut paths: BTreeMap<String, (usize, TermName, Vec<MachineId>)> = BTreeMap::new();
        for (i, line) in v.routes.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let bad = || GraphError::BadRoute { line: i + 1, text: line.to_string() };
            let [service, machine, term, hops, path] = fields(line).ok_or_else(bad)?;
            let hops: usize = hops.parse().map_err(|_| bad())?;
            let term: TermName = term.parse().map_err(|_| bad())?;
            let path: Vec<MachineId> = path.split('!').map(str::parse).collect::<Result<_, _>>().map_err(|_| bad())?;
            g.machines.entry(machine.to_string()).or_default().services.insert(service.to_string(), String::new());
            paths.insert(machine.to_string(), (hops, term, path));
        }
        for (m, (hops, term, path)) in &paths {
            if *m != here {
                let node = g.machines.entry(m.clone()).or_default();
                node.notes.push(format!("{hops} hop{} via {term}", if *hops == 1 { "" } else { "s" }));
                node.notes.push(bang_path(path));
            }
        }
        let mut drawn: BTreeSet<(String, String)> = BTreeSet::new();
        for t in &v.terms {
            let Some(peer) = t.name.machine().map(|m| m.to_string()) else { continue };
            // What follows the state, should a later ctl say more, is not ours.
            let head: Vec<&str> = t.ctl.split_whitespace().take(3).collect();
            let [_kind, addr, state] = <[&str; 3]>::try_from(head)
                .map_err(|_| GraphError::BadTermCtl { term: t.name.to_string(), text: t.ctl.clone() })?;
            let security = t.status.lines().find_map(|l| l.strip_prefix("security ")).unwrap_or("");
            let transport = addr.parse::<DialString>().map(|ds| net(&ds).to_string()).unwrap_or_default();
            // Security means something only on a link that is up.
            let secured = if state == "up" { security.split(' ').next().unwrap_or("") } else { "" };
            let label = [transport.as_str(), secured, state]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            g.machines.entry(peer.clone()).or_default();
            drawn.insert(pair(&here, &peer));
            g.links.push(Link {
                from: here.clone(),
                to: peer,
                label,
                tail: Some(t.name.clone()),
                head: Some(TermName::Net(here_id.clone())),
                directed: false,
                look: if state == "up" { Look::Up } else { Look::Broken },
                tooltip: format!("{addr} {security}").trim().to_string(),
            });
        }
        for (_, _, path) in paths.values() {
            for hop in path.windows(2) {
                let p = pair(hop[0].as_str(), hop[1].as_str());
                if drawn.insert(p.clone()) {
                    for m in [&p.0, &p.1] {
                        g.machines.entry(m.clone()).or_default();
                    }
                    g.links.push(Link {
                        from: hop[0].to_string(),
                        to: hop[1].to_string(),
                        label: String::new(),
                        tail: Some(TermName::Net(hop[1].clone())),
                        head: Some(TermName::Net(hop[0].clone())),
                        directed: false,
                        look: Look::Crossed,
                        tooltip: "a hop of a route from here".into(),
                    });
                }
            }
        }
        Ok(g)
    }

    /// The graph in Graphviz's DOT language.
    pub fn dot(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w, "// {}: mesh graph; render with dot -Tsvg", self.title);
        let _ = writeln!(w, "digraph mesh {{");
        let label =
            if self.legend.is_empty() { self.title.clone() } else { format!("{}\n{}", self.title, self.legend) };
        let _ = writeln!(
            w,
            "  graph [label={}, labelloc=t, fontname=\"Helvetica\", fontsize=12, nodesep=0.4, ranksep=0.8];",
            q(&label)
        );
        let _ = writeln!(w, "  node [fontname=\"Helvetica\", fontsize=10];");
        let _ = writeln!(
            w,
            "  edge [fontname=\"Helvetica\", fontsize=9, labelfontsize=9, labeldistance=2.5, labelfontcolor=gray30];"
        );
        for (id, m) in &self.machines {
            let _ = writeln!(w, "  subgraph {} {{", q(&format!("cluster_{id}")));
            let _ = writeln!(w, "    graph [label=\"\", style=rounded, color=gray60];");
            let label =
                std::iter::once(id.as_str()).chain(m.notes.iter().map(String::as_str)).collect::<Vec<_>>().join("\n");
            let style = if m.here {
                "\"rounded,filled,bold\", fillcolor=lightyellow"
            } else {
                "\"rounded,filled\", fillcolor=gray95"
            };
            let _ = writeln!(w, "    {} [shape=box, style={style}, label={}];", q(id), q(&label));
            for (name, kind) in &m.services {
                let label = if kind.is_empty() || kind == name { name.clone() } else { format!("{name}\n({kind})") };
                let _ = writeln!(w, "    {} [shape=ellipse, label={}];", q(&service_id(id, name)), q(&label));
                let _ = writeln!(
                    w,
                    "    {} -> {} [arrowhead=none, style=dotted, color=gray50];",
                    q(id),
                    q(&service_id(id, name))
                );
            }
            let _ = writeln!(w, "  }}");
        }
        for (id, label) in &self.strangers {
            let _ = writeln!(w, "  {} [shape=box, style=dashed, label={}];", q(id), q(label));
        }
        for l in &self.links {
            let mut attrs = vec![format!("label={}", q(&l.label)), format!("tooltip={}", q(&l.tooltip))];
            attrs.extend(l.tail.as_ref().map(|t| format!("taillabel={}", q(&t.to_string()))));
            attrs.extend(l.head.as_ref().map(|h| format!("headlabel={}", q(&h.to_string()))));
            if !l.directed {
                attrs.push("dir=none".into());
            }
            attrs.push(
                match l.look {
                    Look::Up => "penwidth=2",
                    Look::Broken => "penwidth=2, color=red, fontcolor=red, style=dashed",
                    Look::Crossed => "style=dashed, color=gray40",
                }
                .into(),
            );
            let _ = writeln!(w, "  {} -> {} [{}];", q(&l.from), q(&l.to), attrs.join(", "));
        }
        for f in &self.flows {
            let hops = match f.hops {
                Some(1) => ", 1 hop".to_string(),
                Some(h) => format!(", {h} hops"),
                None => ", no path".to_string(),
            };
            let label = format!("{} {}{hops}", f.pipeline, f.step);
            let _ = writeln!(
                w,
                "  {} -> {} [label={}, style=dashed, color=royalblue, fontcolor=royalblue, constraint=false];",
                q(&f.from),
                q(&f.to),
                q(&label)
            );
        }
        let _ = writeln!(w, "}}");
        out
    }
}

/// Splits a line into exactly `N` space-separated fields.
fn fields<const N: usize>(line: &str) -> Option<[&str; N]> {
    let v: Vec<&str> = line.split_whitespace().collect();
    v.try_into().ok()
}

/// An unordered pair, to draw each link once.
fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

fn service_id(machine: &str, service: &str) -> String {
    format!("{machine}/svc/{service}")
}

/// The transport's name, the dial string's first part.
fn net(ds: &DialString) -> &'static str {
    match ds {
        DialString::Mem(_) => "mem",
        DialString::Unix(_) => "unix",
        DialString::Tcp(..) => "tcp",
        DialString::Ws(..) => "ws",
    }
}

/// How a link dialed on `ds` is secured, and whether it can come up: the
/// network transports run Noise unless both ends are insecure; one
/// insecure end means the handshake fails and the link is refused.
fn security(ds: &DialString, dialer_insecure: bool, listener_insecure: bool) -> (&'static str, bool) {
    if !ds.is_network() {
        return ("local", true);
    }
    match (dialer_insecure, listener_insecure) {
        (false, false) => ("noise", true),
        (true, true) => ("insecure", true),
        _ => ("refused: one end insecure", false),
    }
}

/// The machine listening where `ds` dials: the same dial string, else a
/// `*` listener on its transport and port, else the only listener on its
/// transport and port (a host name the file spells differently).
fn listener(dep: &Deployment, ds: &DialString) -> Option<String> {
    let same_port = |l: &DialString| match (l, ds) {
        (DialString::Tcp(_, a), DialString::Tcp(_, b)) | (DialString::Ws(_, a), DialString::Ws(_, b)) => a == b,
        _ => false,
    };
    let find = |ok: &dyn Fn(&DialString) -> bool| -> Vec<String> {
        dep.machines.values().filter(|m| m.listen.iter().any(ok)).map(|m| m.id.to_string()).collect()
    };
    let exact = find(&|l| l == ds);
    if let Some(m) = exact.into_iter().next() {
        return Some(m);
    }
    let any = find(&|l| same_port(l) && matches!(l, DialString::Tcp(Host::Any, _) | DialString::Ws(Host::Any, _)));
    if let Some(m) = any.into_iter().next() {
        return Some(m);
    }
    let port = find(&|l| same_port(l));
    if port.len() == 1 {
        return port.into_iter().next();
    }
    None
}

/// Hops from `from` to every machine it reaches over links that come up.
fn distances(links: &[Link], from: &str) -> HashMap<String, usize> {
    let mut next: HashMap<&str, Vec<&str>> = HashMap::new();
    for l in links.iter().filter(|l| l.look == Look::Up) {
        next.entry(&l.from).or_default().push(&l.to);
        next.entry(&l.to).or_default().push(&l.from);
    }
    let mut dist = HashMap::from([(from.to_string(), 0)]);
    let mut queue = VecDeque::from([from]);
    while let Some(m) = queue.pop_front() {
        let d = dist[m];
        for n in next.get(m).into_iter().flatten() {
            if !dist.contains_key(*n) {
                dist.insert(n.to_string(), d + 1);
                queue.push_back(n);
            }
        }
    }
    dist
}

/// Each pipeline's steps. A stage on a named machine is there; `/svc/S`
/// is resolved from the previous stage's machine, as the router there
/// would: the nearest machine serving S, ties broken by id. The first
/// stage is where the pipeline starts ([`crate::pipeline::home`]).
fn flows(dep: &Deployment, links: &[Link]) -> Vec<Flow> {
    let mut out = Vec::new();
    for p in &dep.pipelines {
        let Some(home) = crate::pipeline::home(dep, p) else { continue };
        let mut at = home.to_string();
        let mut prev: Option<String> = None;
        for (i, stage) in p.stages.iter().enumerate() {
            let dist = distances(links, &at);
            let machine = match &stage.machine {
                Some(m) => Some(m.to_string()),
                None => dep
                    .machines
                    .values()
                    .filter(|m| m.services.iter().any(|s| s.name == stage.service))
                    .filter_map(|m| dist.get(m.id.as_str()).map(|d| (*d, m.id.to_string())))
                    .min()
                    .map(|(_, m)| m),
            };
            let Some(machine) = machine else { break };
            let node = service_id(&machine, stage.service.as_str());
            if let Some(from) = prev {
                out.push(Flow {
                    pipeline: p.name.clone(),
                    step: i,
                    from,
                    to: node.clone(),
                    hops: dist.get(&machine).copied(),
                });
            }
            prev = Some(node);
            at = machine;
        }
    }
    out
}

/// A DOT quoted string.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> String {
        Graph::deployment(&ns::deploy::builtin(), "built-in").dot()
    }

    fn line_with<'a>(dot: &'a str, start: &str) -> &'a str {
        dot.lines()
            .map(str::trim)
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in\n{dot}"))
    }

    #[test]
    fn builtin_has_its_machines_and_services_in_clusters() {
        let dot = builtin();
        assert!(dot.starts_with("// built-in: mesh graph"));
        assert!(dot.contains("digraph mesh {"));
        for m in ["a", "b", "c"] {
            assert!(dot.contains(&format!("subgraph \"cluster_{m}\" {{")), "{m}");
            assert!(line_with(&dot, &format!("\"{m}\" [shape=box")).contains(&format!("label=\"{m}\\n")));
        }
        assert!(
            line_with(&dot, "\"a\" [shape=box").contains("listen tcp!127.0.0.1!17001\\nmount /tmp/mesh/a\\nregistry b")
        );
        assert!(line_with(&dot, "\"b/svc/upper\" [").contains("label=\"upper\\n(exec)\""));
        assert!(line_with(&dot, "\"c/svc/gpu\" [").contains("label=\"gpu\""), "kind equal to name is said once");
        assert!(dot.contains("\"c\" -> \"c/svc/mp4-encoder\" [arrowhead=none"));
        assert!(dot.trim_end().ends_with('}'));
    }

    #[test]
    fn builtin_links_go_from_dialer_to_listener_with_terminal_names() {
        let dot = builtin();
        let ab = line_with(&dot, "\"a\" -> \"b\" [");
        assert!(ab.contains("label=\"tcp noise\""), "{ab}");
        assert!(ab.contains("taillabel=\"net-b\""), "{ab}");
        assert!(ab.contains("headlabel=\"net-a\""), "{ab}");
        assert!(ab.contains("tooltip=\"tcp!127.0.0.2!17002\""), "{ab}");
        let bc = line_with(&dot, "\"b\" -> \"c\" [");
        assert!(bc.contains("label=\"ws noise\""), "{bc}");
        assert!(!dot.contains("\"a\" -> \"c\" ["), "a and c are not linked");
        assert!(!dot.contains("dir=none"), "a file says who dials");
    }

    #[test]
    fn builtin_pipeline_steps_carry_their_hops() {
        let dot = builtin();
        let step =
            |from: &str, to: &str| line_with(&dot, &format!("\"{from}\" -> \"{to}\" [label=\"record")).to_string();
        assert!(step("a/svc/pty", "b/svc/parser").contains("record 1, 1 hop\""));
        assert!(step("b/svc/parser", "c/svc/gpu").contains("record 2, 1 hop\""));
        assert!(step("c/svc/gpu", "c/svc/mp4-encoder").contains("record 3, 0 hops\""));
        assert!(step("c/svc/mp4-encoder", "a/svc/display").contains("record 4, 2 hops\""));
    }

    const ODD: &str = r#"
[machines.x]
listen = ["tcp!*!9000"]
services = [{ name = "echo", kind = "exec", command = ["cat"] }]
[machines.y]
dial = ["tcp!x.example!9000", "ws!10.0.0.9!80"]
insecure = true
[machines.z]
listen = ["unix!/run/z.sock"]
dial = ["unix!/run/z.sock"]
services = [{ name = "echo", kind = "exec", command = ["cat"] }]
[machines.w]
dial = ["tcp!10.0.0.1!9000"]
services = [{ name = "src", kind = "exec", command = ["cat"] }]
[[pipelines]]
name = "p"
stages = ["/svc/src", "/svc/echo"]
"#;

    #[test]
    fn wildcard_listeners_strangers_and_refused_links() {
        let dep = ns::deploy::parse(ODD, "odd.toml").expect("valid test deployment");
        let dot = Graph::deployment(&dep, "odd.toml").dot();
        // tcp!*!9000 takes any host on its port; one end insecure is refused.
        let yx = line_with(&dot, "\"y\" -> \"x\" [");
        assert!(yx.contains("label=\"tcp refused: one end insecure\""), "{yx}");
        assert!(yx.contains("color=red"), "{yx}");
        // Dialing what no machine of the file listens on.
        assert!(
            dot.contains("\"ws!10.0.0.9!80\" [shape=box, style=dashed, label=\"ws!10.0.0.9!80\\nnot in the file\"]"),
            "{dot}"
        );
        assert!(line_with(&dot, "\"y\" -> \"ws!10.0.0.9!80\" [").contains("label=\"ws\""));
        // unix links are local: no Noise.
        assert!(line_with(&dot, "\"z\" -> \"z\" [").contains("label=\"unix local\""));
        assert!(line_with(&dot, "\"w\" -> \"x\" [").contains("label=\"tcp noise\""));
        // The nearest echo from w is x, one hop; z is unreachable.
        assert!(line_with(&dot, "\"w/svc/src\" -> \"x/svc/echo\" [").contains("p 1, 1 hop"));
    }

    fn view() -> View {
        View {
            machine: "a".into(),
            routes: "display a local 0 a\nparser b net-b 1 a!b\ngpu c net-b 2 a!b!c\n".into(),
            machines: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            terms: vec![
                TermView {
                    name: "net-b".parse().expect("a terminal name"),
                    ctl: "net tcp!127.0.0.2!17002 up\n".into(),
                    status: "in 1 envelopes 2 bytes\nsecurity noise 0123abcd (b)\n".into(),
                },
                TermView {
                    name: "net-e".parse().expect("a terminal name"),
                    ctl: "net ws!10.0.0.5!80 down\n".into(),
                    status: "security insecure\n".into(),
                },
            ],
        }
    }

    #[test]
    fn live_view_draws_terminals_paths_and_hops() {
        let dot = Graph::from_view(&view(), "live").expect("valid view").dot();
        let ab = line_with(&dot, "\"a\" -> \"b\" [");
        assert!(ab.contains("label=\"tcp noise up\""), "{ab}");
        assert!(ab.contains("dir=none"), "who dialed is not known: {ab}");
        assert!(ab.contains("taillabel=\"net-b\", headlabel=\"net-a\""), "{ab}");
        assert!(ab.contains("tooltip=\"tcp!127.0.0.2!17002 noise 0123abcd (b)\""), "{ab}");
        let ae = line_with(&dot, "\"a\" -> \"e\" [");
        assert!(ae.contains("label=\"ws down\"") && ae.contains("color=red"), "{ae}");
        // b-c is only known from the path a!b!c.
        let bc = line_with(&dot, "\"b\" -> \"c\" [");
        assert!(bc.contains("style=dashed, color=gray40"), "{bc}");
        assert_eq!(dot.matches("\"a\" -> \"b\" [").count(), 1, "the hop a!b is the terminal, drawn once");
        assert!(line_with(&dot, "\"a\" [shape=box").contains("label=\"a\\nthis router\""));
        assert!(line_with(&dot, "\"c\" [shape=box").contains("label=\"c\\n2 hops via net-b\\na!b!c\""));
        assert!(line_with(&dot, "\"b\" [shape=box").contains("1 hop via net-b"));
        // d has a route but no services; it is still a machine.
        assert!(dot.contains("subgraph \"cluster_d\""));
        assert!(dot.contains("\"c/svc/gpu\" [shape=ellipse, label=\"gpu\"]"));
    }

    #[test]
    fn bad_router_text_is_named() {
        let mut v = view();
        v.routes = "display a local 0 a\nparser b net-b one a!b\n".into();
        let e = Graph::from_view(&v, "live").unwrap_err();
        assert_eq!(e, GraphError::BadRoute { line: 2, text: "parser b net-b one a!b".into() });
        assert!(e.to_string().starts_with("routes line 2: want `service machine terminal hops path`"));
        // A terminal, or a machine of the path, that is no name is bad text.
        for line in ["parser b net-B 1 a!b", "parser b net-b 1 a!B", "parser b client-1 1 a!b"] {
            let mut v = view();
            v.routes = format!("{line}\n");
            let e = Graph::from_view(&v, "live").unwrap_err();
            assert_eq!(e, GraphError::BadRoute { line: 1, text: line.into() });
        }
        let mut v = view();
        v.machine = "A!".into();
        let e = Graph::from_view(&v, "live").unwrap_err();
        assert_eq!(e, GraphError::BadMachine { text: "A!".into() });
        assert_eq!(e.to_string(), "machine: want a machine id, got \"A!\"");
        let mut v = view();
        v.terms[0].ctl = "net\n".into();
        assert!(matches!(Graph::from_view(&v, "live"), Err(GraphError::BadTermCtl { term, .. }) if term == "net-b"));
        // More after the state is not an error.
        v.terms[0].ctl = "net tcp!127.0.0.2!17002 up since 12:00\n".into();
        assert!(Graph::from_view(&v, "live").expect("ctl with more fields").dot().contains("label=\"tcp noise up\""));
    }

    #[test]
    fn quoting() {
        assert_eq!(q("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
        let g = Graph { title: "say \"hi\"".into(), ..Graph::default() };
        assert!(g.dot().contains(r#"label="say \"hi\"""#));
    }
}
