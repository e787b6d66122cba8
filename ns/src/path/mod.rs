//! Names and paths of the mesh namespace.
//!
//! A machine id and a service name are `[a-z0-9][a-z0-9._-]{0,62}`. An
//! address ([`Addr`]) names a service or one conversation of it:
//! `/svc/S`, `/n/M/svc/S`, `/n/M/svc/S/N`. A router's terminals are
//! named by a [`TermName`]: `local`, `loopback`, `net-M`.
//!
//! Names are interned: decoding an envelope looks its names up in a small
//! global table instead of allocating, so the forwarding path allocates no
//! strings per message.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock, RwLock};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

mod term;

pub use term::{BadTermName, TermName};

/// A machine id or a service name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<str>);

/// Names a machine.
pub type MachineId = Name;
/// Names a service.
pub type ServiceName = Name;

/// Why a name or path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("bad name {0:?}: want [a-z0-9][a-z0-9._-]{{0,62}}")]
    BadName(String),
    #[error("bad path {0:?}: want /svc/NAME, /n/MACHINE/svc/NAME or /n/MACHINE/svc/NAME/N")]
    BadPath(String),
}

/// Interned names beyond this many are allocated but not kept, so a peer
/// inventing names cannot grow the table without bound.
const INTERN_CAP: usize = 1 << 16;

fn interned() -> &'static RwLock<HashSet<Arc<str>>> {
    static TABLE: OnceLock<RwLock<HashSet<Arc<str>>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// Whether `s` is a valid machine id or service name.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..].iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'))
}

impl Name {
    /// Validates and interns `s`.
    pub fn new(s: &str) -> Result<Name, PathError> {
        if !valid_name(s) {
            return Err(PathError::BadName(s.to_string()));
        }
        if let Some(n) = interned().read().ok().and_then(|t| t.get(s).cloned()) {
            return Ok(Name(n));
        }
        let n: Arc<str> = Arc::from(s);
        if let Ok(mut t) = interned().write() {
            if t.len() < INTERN_CAP {
                t.insert(n.clone());
            }
        }
        Ok(Name(n))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Name::new(s)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a machine or service name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name, E> {
                Name::new(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// A service, or one conversation of it, optionally on a named machine.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    /// `None` for `/svc/S`: the nearest replica.
    pub machine: Option<MachineId>,
    pub service: ServiceName,
    /// `Some(N)` for conversation N.
    pub conv: Option<u64>,
}

impl Addr {
    /// `/svc/S`.
    pub fn service(service: ServiceName) -> Addr {
        Addr { machine: None, service, conv: None }
    }

    /// `/n/M/svc/S`.
    pub fn on(machine: MachineId, service: ServiceName) -> Addr {
        Addr { machine: Some(machine), service, conv: None }
    }

    /// `/n/M/svc/S/N`.
    pub fn conv(machine: MachineId, service: ServiceName, n: u64) -> Addr {
        Addr { machine: Some(machine), service, conv: Some(n) }
    }

    /// This address without its conversation number.
    pub fn service_addr(&self) -> Addr {
        Addr { machine: self.machine.clone(), service: self.service.clone(), conv: None }
    }

    /// Parses a path; `s` names the whole string in the error.
    pub fn parse(s: &str) -> Result<Addr, PathError> {
        let bad = || PathError::BadPath(s.to_string());
        let rest = s.strip_prefix('/').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let name = |p: &str| Name::new(p).map_err(|_| bad());
        match parts.as_slice() {
            ["svc", svc] => Ok(Addr::service(name(svc)?)),
            ["n", m, "svc", svc] => Ok(Addr::on(name(m)?, name(svc)?)),
            ["n", m, "svc", svc, n] => {
                let n: u64 = n.parse().map_err(|_| bad())?;
                if n == 0 || !n.to_string().eq(parts[4]) {
                    return Err(bad());
                }
                Ok(Addr::conv(name(m)?, name(svc)?, n))
            }
            _ => Err(bad()),
        }
    }
}

impl FromStr for Addr {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Addr::parse(s)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = &self.machine {
            write!(f, "/n/{m}")?;
        }
        write!(f, "/svc/{}", self.service)?;
        if let Some(n) = self.conv {
            write!(f, "/{n}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// On the wire an address is a tuple, its names interned on decode.
impl Serialize for Addr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.machine, &self.service, &self.conv).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (machine, service, conv) = <(Option<Name>, Name, Option<u64>)>::deserialize(d)?;
        if conv.is_some() && machine.is_none() {
            return Err(de::Error::custom("conversation address without machine"));
        }
        Ok(Addr { machine, service, conv })
    }
}

/// At most this many machines crossed by one envelope, its sender's and
/// its receiver's routers included; the next hop is an error. A route is
/// kept, and advertised, only while its path (both ends included) is no
/// longer: a request over it and the reply or error back then both fit.
pub const HOP_LIMIT: usize = 32;

/// Formats a machine path the way `routes` shows it: `a!b!c`.
pub fn bang_path(path: &[MachineId]) -> String {
    let mut s = String::new();
    for (i, m) in path.iter().enumerate() {
        if i > 0 {
            s.push('!');
        }
        s.push_str(m.as_str());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "gpu", "mp4-encoder", "net.b_2", &"x".repeat(63)] {
            assert!(Name::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "-a", ".a", "a/b", "a b", "é", &"x".repeat(64)] {
            assert_eq!(Name::new(bad), Err(PathError::BadName(bad.to_string())), "{bad}");
        }
    }

    #[test]
    fn paths_round_trip() {
        for p in ["/svc/upper", "/n/a/svc/display", "/n/c/svc/gpu/17"] {
            assert_eq!(Addr::parse(p).unwrap().to_string(), p);
        }
        for bad in [
            "svc/x",
            "/svc/",
            "/svc/x/1",
            "/n/a/svc",
            "/n/a/svc/x/0",
            "/n/a/svc/x/01",
            "/n/A/svc/x",
            "/n/a/svc/x/y/z",
            "/svc/../x",
        ] {
            assert!(Addr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cbor_round_trip_interns() {
        let a = Addr::parse("/n/c/svc/gpu/3").unwrap();
        let mut buf = Vec::new();
        ciborium::into_writer(&a, &mut buf).unwrap();
        let b: Addr = ciborium::from_reader(&buf[..]).unwrap();
        assert_eq!(a, b);
        assert!(Arc::ptr_eq(&a.service.0, &b.service.0), "decoded names are interned");
    }
}
