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
mod tests;
