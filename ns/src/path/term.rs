//! Terminal names: `local`, `loopback` and `net-M`, the names of a
//! router's terminals in `term/`, `routes` and ctl messages.
//!
//! Text is parsed into a [`TermName`] once, where it comes in (a ctl
//! message, a path, a line of `routes` read back), and typed from there
//! on; the text form is written only by [`TermName`]'s `Display`.

use std::fmt;
use std::str::FromStr;

use super::MachineId;

/// The name of one of a router's terminals.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TermName {
    /// The services of this machine.
    Local,
    /// What the router sends itself.
    Loopback,
    /// The link to neighbour M: `net-M`.
    Net(MachineId),
}

impl TermName {
    /// The neighbour at the other end, for `net-M`.
    pub fn machine(&self) -> Option<&MachineId> {
        match self {
            TermName::Net(m) => Some(m),
            _ => None,
        }
    }
}

impl fmt::Display for TermName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TermName::Local => f.write_str("local"),
            TermName::Loopback => f.write_str("loopback"),
            TermName::Net(m) => write!(f, "net-{m}"),
        }
    }
}

/// Text that is not a terminal name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad terminal name {0:?}: want local, loopback or net-MACHINE")]
pub struct BadTermName(pub String);

impl FromStr for TermName {
    type Err = BadTermName;

    fn from_str(s: &str) -> Result<TermName, BadTermName> {
        match s {
            "local" => Ok(TermName::Local),
            "loopback" => Ok(TermName::Loopback),
            _ => s
                .strip_prefix("net-")
                .and_then(|m| m.parse().ok())
                .map(TermName::Net)
                .ok_or_else(|| BadTermName(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_print_and_parse_back() {
        let b: MachineId = "b".parse().expect("valid");
        let long: MachineId = "gpu-1.lab".parse().expect("valid");
        for (name, text) in [
            (TermName::Local, "local"),
            (TermName::Loopback, "loopback"),
            (TermName::Net(b), "net-b"),
            (TermName::Net(long), "net-gpu-1.lab"),
        ] {
            assert_eq!(name.to_string(), text);
            assert_eq!(text.parse::<TermName>(), Ok(name));
        }
    }

    #[test]
    fn bad_names_are_refused_naming_the_text() {
        for bad in ["", "net-", "net", "net-B", "net-a/b", "Local", "client-1", " local", "net-a "] {
            let err = bad.parse::<TermName>().expect_err(bad);
            assert_eq!(err, BadTermName(bad.to_string()));
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn names_sort_as_their_text() {
        let mut names: Vec<TermName> =
            ["net-b", "loopback", "net-a", "local", "net-a1"].iter().map(|s| s.parse().expect("valid")).collect();
        names.sort();
        let text: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        assert_eq!(text, ["local", "loopback", "net-a", "net-a1", "net-b"]);
    }
}
