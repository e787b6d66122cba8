//! The document's top level and `[machines.ID]` tables, and the checks that
//! span machines: listen addresses used twice, registries that are not there.

use std::collections::{BTreeMap, HashMap};

use dial::{DialString, Host};

use super::service::{self, ServiceKind};
use super::tree::{Node, Result, Src, Table};
use super::{pipeline, Deployment, Machine};
use crate::path::{MachineId, Name};

const TOP_KEYS: &[&str] = &["machines", "pipelines"];

const MACHINE_KEYS: &[&str] = &[
    "listen",
    "dial",
    "mount",
    "registry",
    "gossip",
    "key",
    "peers",
    "insecure",
    "allow_other",
    "resume",
    "policy",
    "tree",
    "ctl",
    "services",
];

/// Where a value was found, for errors that point back at an earlier one.
struct Seen {
    path: String,
    line: usize,
}

/// Reads and checks the whole document.
pub(super) fn document(src: &Src<'_>, root: Table<'_, '_>) -> Result<Deployment> {
    root.deny_unknown(TOP_KEYS)?;
    let Some(machines_node) = root.get("machines") else {
        return Err(src.err("machines", 0, "missing: a deployment has at least one machine"));
    };
    let table = machines_node.table()?;
    let mut machines = BTreeMap::new();
    // Two routers cannot listen on one address, wherever they run.
    let mut listens: HashMap<DialString, Seen> = HashMap::new();
    // `registry = "b"` can only be checked once every machine is known.
    let mut registries: Vec<(MachineId, Node<'_, '_>)> = Vec::new();
    for e in table.entries() {
        let id = Name::new(e.key).map_err(|err| table.key_err(&e, err.to_string()))?;
        let m = machine(id.clone(), &e.node, &mut listens)?;
        if let (Some(reg), Some(node)) = (&m.registry, e.node.table()?.get("registry")) {
            registries.push((reg.clone(), node));
        }
        machines.insert(id, m);
    }
    if machines.is_empty() {
        return Err(machines_node.err("a deployment has at least one machine"));
    }
    for (reg, node) in &registries {
        check_registry(&machines, reg, node)?;
    }
    for e in table.entries() {
        check_rules(&machines, &e.node)?;
    }
    let pipelines = match root.get("pipelines") {
        Some(node) => pipeline::pipelines(&node, &machines)?,
        None => Vec::new(),
    };
    Ok(Deployment { machines, pipelines })
}

fn machine(id: MachineId, node: &Node<'_, '_>, listens: &mut HashMap<DialString, Seen>) -> Result<Machine> {
    let t = node.table()?;
    t.deny_unknown(MACHINE_KEYS)?;
    let mut m = Machine {
        id,
        listen: Vec::new(),
        dial: Vec::new(),
        mount: None,
        registry: None,
        gossip: true,
        key: None,
        peers: BTreeMap::new(),
        insecure: false,
        allow_other: false,
        resume: super::DEFAULT_RESUME,
        deny_by_default: false,
        tree: None,
        ctl: None,
        services: Vec::new(),
    };
    for e in t.entries() {
        let v = &e.node;
        match e.key {
            "listen" => m.listen = listen(v, listens)?,
            "dial" => m.dial = dials(v)?,
            "mount" => {
                let p = service::path(v)?;
                if !p.is_absolute() {
                    return Err(v.err(format!("mount point {p:?} is not absolute")));
                }
                m.mount = Some(p);
            }
            "registry" => m.registry = Some(v.parse()?),
            "gossip" => m.gossip = v.bool()?,
            "key" => m.key = Some(service::path(v)?),
            "peers" => m.peers = peers(v)?,
            "insecure" => m.insecure = v.bool()?,
            "allow_other" => m.allow_other = v.bool()?,
            "resume" => m.resume = duration(v, MAX_RESUME)?,
            "policy" => {
                m.deny_by_default = match v.str()? {
                    "allow" => false,
                    "deny" => true,
                    other => return Err(v.err(format!("unknown policy {other:?}: want \"allow\" or \"deny\""))),
                }
            }
            "tree" => m.tree = Some(service::rules(v)?),
            "ctl" => m.ctl = Some(service::rules(v)?),
            "services" => m.services = services(v)?,
            // deny_unknown leaves no other key.
            _ => return Err(t.key_err(&e, "unknown key")),
        }
    }
    Ok(m)
}

/// The longest grace period a lost link may be given: an hour of senders
/// waiting is already more than anyone wants.
const MAX_RESUME: std::time::Duration = std::time::Duration::from_secs(3600);

/// A duration: a whole number and a unit, `ms`, `s` or `m` (`"30s"`,
/// `"500ms"`, `"2m"`; `"0s"` is zero), at most `max`.
fn duration(v: &Node<'_, '_>, max: std::time::Duration) -> Result<std::time::Duration> {
    use std::time::Duration;
    let s = v.str()?;
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let want = || v.err(format!("{s:?} is not a duration: want a whole number and ms, s or m, as \"30s\""));
    let n: u64 = num.parse().map_err(|_| want())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(want()),
    };
    if d > max {
        return Err(v.err(format!("{s:?} is longer than {}s", max.as_secs())));
    }
    Ok(d)
}

fn listen(v: &Node<'_, '_>, listens: &mut HashMap<DialString, Seen>) -> Result<Vec<DialString>> {
    let mut out = Vec::new();
    for item in v.array()? {
        let ds: DialString = item.parse()?;
        if let Some(first) = listens.get(&ds) {
            return Err(item.err(format!("{ds} is already listened on by {} (line {})", first.path, first.line)));
        }
        listens.insert(ds.clone(), Seen { path: item.path().to_string(), line: item.line() });
        out.push(ds);
    }
    Ok(out)
}

fn dials(v: &Node<'_, '_>) -> Result<Vec<DialString>> {
    let mut out: Vec<DialString> = Vec::new();
    for item in v.array()? {
        let ds: DialString = item.parse()?;
        if matches!(ds, DialString::Tcp(Host::Any, _) | DialString::Ws(Host::Any, _)) {
            return Err(item.err(format!("cannot dial {ds}: '*' (all addresses) is only for listen")));
        }
        if out.contains(&ds) {
            return Err(item.err(format!("{ds} is dialed twice")));
        }
        out.push(ds);
    }
    Ok(out)
}

/// `[machines.ID.peers]`: machine id = public key. Only the shape is
/// checked until link security defines the key format.
fn peers(v: &Node<'_, '_>) -> Result<BTreeMap<MachineId, String>> {
    let t = v.table()?;
    let mut out = BTreeMap::new();
    for e in t.entries() {
        let id = Name::new(e.key).map_err(|err| t.key_err(&e, err.to_string()))?;
        out.insert(id, e.node.str()?.to_string());
    }
    Ok(out)
}

fn services(v: &Node<'_, '_>) -> Result<Vec<super::ServiceSpec>> {
    let mut out: Vec<super::ServiceSpec> = Vec::new();
    for item in v.array()? {
        let s = service::service(&item)?;
        if let Some(first) = out.iter().find(|f| f.name == s.name) {
            return Err(item
                .err(format!("duplicate service name \"{}\" on this machine (first on line {})", s.name, first.line)));
        }
        out.push(s);
    }
    Ok(out)
}

/// The machines named by the `allow` and `read` rules of a machine's
/// services are machines of this file: a name that is not is a typo that
/// would lock someone out, or let no one in.
fn check_rules(machines: &BTreeMap<MachineId, Machine>, node: &Node<'_, '_>) -> Result<()> {
    let check = |v: Option<Node<'_, '_>>| -> Result<()> {
        for item in v.map(|v| v.array()).transpose()?.unwrap_or_default() {
            let who: crate::policy::Who = item.str()?.parse().map_err(|e: String| item.err(e))?;
            if let Some(m) = who.machine().filter(|m| !machines.contains_key(*m)) {
                return Err(item.err(format!("no machine \"{m}\" in this file")));
            }
        }
        Ok(())
    };
    let t = node.table()?;
    check(t.get("tree"))?;
    check(t.get("ctl"))?;
    let Some(services) = t.get("services") else { return Ok(()) };
    for svc in services.array()? {
        let t = svc.table()?;
        check(t.get("allow"))?;
        check(t.get("read"))?;
    }
    Ok(())
}

fn check_registry(machines: &BTreeMap<MachineId, Machine>, reg: &MachineId, node: &Node<'_, '_>) -> Result<()> {
    let Some(m) = machines.get(reg) else {
        return Err(node.err(format!("no machine \"{reg}\" in this file")));
    };
    if !m.services.iter().any(|s| s.kind == ServiceKind::Registry) {
        return Err(node.err(format!("machine \"{reg}\" runs no service of kind registry")));
    }
    Ok(())
}
