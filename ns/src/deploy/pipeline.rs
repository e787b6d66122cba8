//! `[[pipelines]]`: a name and the addresses data goes through, in order.

use std::collections::BTreeMap;

use super::tree::{Node, Result};
use super::{Machine, Pipeline, Restart};
use crate::path::{Addr, MachineId, Name};

const KEYS: &[&str] = &["name", "stages", "restart"];

/// Reads the `pipelines` array; `machines` are the file's, for stages that
/// name one.
pub(super) fn pipelines(node: &Node<'_, '_>, machines: &BTreeMap<MachineId, Machine>) -> Result<Vec<Pipeline>> {
    let mut out: Vec<Pipeline> = Vec::new();
    for item in node.array()? {
        let p = pipeline(&item, machines)?;
        if let Some(first) = out.iter().find(|f| f.name == p.name) {
            // Present when parsed, so `get` finds it; the item is the fallback.
            let at = item.table()?.get("name").unwrap_or(item);
            return Err(at.err(format!("duplicate pipeline name \"{}\" (first on line {})", p.name, first.line)));
        }
        out.push(p);
    }
    Ok(out)
}

fn pipeline(node: &Node<'_, '_>, machines: &BTreeMap<MachineId, Machine>) -> Result<Pipeline> {
    let t = node.table()?;
    t.deny_unknown(KEYS)?;
    let name_node = t.get("name").ok_or_else(|| t.missing("name", "every pipeline has a name"))?;
    // Same rule as machine and service names, so a pipeline can be named
    // in paths and commands without quoting.
    let name: Name = name_node.parse()?;
    let stages_node = t.get("stages").ok_or_else(|| t.missing("stages", "a pipeline has stages"))?;
    let mut stages = Vec::new();
    for item in stages_node.array()? {
        let addr = Addr::parse(item.str()?).map_err(|e| item.err(e.to_string()))?;
        if addr.conv.is_some() {
            // Conversations exist only while someone holds them open.
            return Err(item.err(format!("{addr}: a stage names a service, not a conversation")));
        }
        if let Some(m) = &addr.machine {
            if !machines.contains_key(m) {
                return Err(item.err(format!("no machine \"{m}\" in this file")));
            }
        }
        stages.push(addr);
    }
    if stages.len() < 2 {
        return Err(stages_node.err(format!("a pipeline has at least 2 stages, this one has {}", stages.len())));
    }
    let restart = match t.get("restart") {
        Some(v) => v.str()?.parse().map_err(|e: String| v.err(e))?,
        None => Restart::default(),
    };
    Ok(Pipeline { name: name.to_string(), stages, restart, line: node.line() })
}
