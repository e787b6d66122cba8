//! Dial strings: Plan 9's `net!address!service`, parsed and printed.
//!
//! | form | means |
//! | --- | --- |
//! | `mem!NAME` | an in-process listener registered under NAME |
//! | `unix!/abs/path.sock` | a Unix-domain stream socket |
//! | `tcp!HOST!PORT` | TCP; HOST is a name or an IP literal, `*` = all addresses |
//! | `ws!HOST!PORT` | WebSocket over TCP, one binary message per frame |
//!
//! Parsing is strict: every rejection names the part that is wrong, because a
//! dial string usually comes from a hand-written deployment file and the
//! person reading the error has to fix it there.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Longest Unix socket path the kernel accepts: `sun_path` is 108 bytes
/// including the terminating NUL.
pub(crate) const UNIX_PATH_MAX: usize = 107;

/// Longest mem name; names are registry keys, not data, so keep them short.
const MEM_NAME_MAX: usize = 255;

/// Longest host name DNS allows (RFC 1035), which also bounds IP literals.
const HOST_MAX: usize = 253;

/// The host part of a `tcp` or `ws` dial string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// `*`: every local address. Only meaningful when listening.
    Any,
    /// A host name (`localhost`) or an IP literal (`127.0.0.1`, `::1`).
    Name(String),
}

/// A parsed dial string: `mem!NAME`, `unix!/abs/path.sock`,
/// `tcp!HOST!PORT` or `ws!HOST!PORT`, where HOST may be `*` (all
/// addresses) for listening. Printing gives the canonical form, which
/// parses back to the same value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DialString {
    /// `mem!NAME`
    Mem(String),
    /// `unix!/abs/path.sock`
    Unix(PathBuf),
    /// `tcp!HOST!PORT`
    Tcp(Host, u16),
    /// `ws!HOST!PORT`
    Ws(Host, u16),
}

/// Why a dial string was rejected.
///
/// Displays as `bad dial string "INPUT": REASON`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad dial string {input:?}: {reason}")]
pub struct DialError {
    input: String,
    reason: String,
}

impl DialError {
    fn new(input: &str, reason: impl Into<String>) -> Self {
        DialError { input: input.to_owned(), reason: reason.into() }
    }

    /// The dial string as given.
    #[must_use]
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What is wrong with it, without the input.
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl DialString {
    /// True for transports that leave the machine (`tcp`, `ws`); these are
    /// the ones that need link security.
    #[must_use]
    pub fn is_network(&self) -> bool {
        matches!(self, DialString::Tcp(..) | DialString::Ws(..))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Any => f.write_str("*"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

impl fmt::Display for DialString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialString::Mem(name) => write!(f, "mem!{name}"),
            // Paths built by the parser are UTF-8, so this is lossless for
            // them; a hand-built non-UTF-8 path prints lossily.
            DialString::Unix(path) => write!(f, "unix!{}", path.display()),
            DialString::Tcp(host, port) => write!(f, "tcp!{host}!{port}"),
            DialString::Ws(host, port) => write!(f, "ws!{host}!{port}"),
        }
    }
}

impl FromStr for DialString {
    type Err = DialError;

    fn from_str(input: &str) -> Result<Self, DialError> {
        let err = |reason: String| DialError::new(input, reason);
        if input.is_empty() {
            return Err(err("empty dial string".into()));
        }
        let parts: Vec<&str> = input.split('!').collect();
        let net = parts[0];
        let rest = &parts[1..];
        match net {
            "mem" => {
                let [name] = exact(rest, "mem!NAME", &["name"]).map_err(err)?;
                parse_mem_name(name).map(DialString::Mem).map_err(err)
            }
            "unix" => {
                let [path] = exact(rest, "unix!/PATH", &["path"]).map_err(err)?;
                parse_unix_path(path).map(DialString::Unix).map_err(err)
            }
            "tcp" | "ws" => {
                let want = if net == "tcp" { "tcp!HOST!PORT" } else { "ws!HOST!PORT" };
                let [host, port] = exact(rest, want, &["host", "port"]).map_err(err)?;
                let host = parse_host(host).map_err(err)?;
                let port = parse_port(port).map_err(err)?;
                Ok(if net == "tcp" { DialString::Tcp(host, port) } else { DialString::Ws(host, port) })
            }
            "" => Err(err("missing network before '!' (want mem, unix, tcp or ws)".into())),
            other => Err(err(format!("unknown network {other:?} (want mem, unix, tcp or ws)"))),
        }
    }
}

/// Checks that exactly `N` parts follow the network and returns them, or says
/// which are missing / what is extra. `names` names the parts for messages.
fn exact<'a, const N: usize>(rest: &[&'a str], want: &str, names: &[&str; N]) -> Result<[&'a str; N], String> {
    if rest.len() < N {
        let missing = names[rest.len()..].join(" and ");
        return Err(format!("missing {missing} (want {want})"));
    }
    if rest.len() > N {
        let extra = rest[N..].join("!");
        return Err(format!("extra part {extra:?} after the {} (want {want})", names[N - 1]));
    }
    let mut out = [""; N];
    out.copy_from_slice(rest);
    Ok(out)
}

fn parse_mem_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("empty mem name".into());
    }
    if name == "*" {
        return Err(any_not_allowed("mem"));
    }
    if name.len() > MEM_NAME_MAX {
        return Err(format!("mem name is {} bytes, longer than {MEM_NAME_MAX}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("mem name {name:?} has character {c:?} (allowed: letters, digits, '.', '_', '-')"));
    }
    Ok(name.to_owned())
}

fn parse_unix_path(path: &str) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("empty unix path".into());
    }
    if path == "*" {
        return Err(any_not_allowed("unix"));
    }
    if !path.starts_with('/') {
        return Err(format!("unix path {path:?} is not absolute"));
    }
    if path.contains('\0') {
        return Err("unix path contains a NUL byte".into());
    }
    // Checked here rather than at bind time so the deployment file is
    // rejected when loaded, not when the router first listens.
    if path.len() > UNIX_PATH_MAX {
        return Err(format!("unix path is {} bytes, longer than the {UNIX_PATH_MAX} the kernel allows", path.len()));
    }
    Ok(PathBuf::from(path))
}

fn parse_host(host: &str) -> Result<Host, String> {
    if host.is_empty() {
        return Err("empty host".into());
    }
    if host == "*" {
        return Ok(Host::Any);
    }
    if host.len() > HOST_MAX {
        return Err(format!("host is {} bytes, longer than {HOST_MAX}", host.len()));
    }
    // Names, IPv4 and IPv6 literals (with an optional %scope) only; anything
    // else cannot resolve and would only fail later with a vaguer message.
    if let Some(c) = host.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'))) {
        return Err(format!("host {host:?} has character {c:?}"));
    }
    Ok(Host::Name(host.to_owned()))
}

fn parse_port(port: &str) -> Result<u16, String> {
    if port.is_empty() {
        return Err("empty port".into());
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {port:?} is not a number (want 0-65535)"));
    }
    // All digits, so the only possible failure is overflow.
    port.parse::<u16>().map_err(|_| format!("port {port} out of range (want 0-65535)"))
}

fn any_not_allowed(net: &str) -> String {
    format!("'*' (all addresses) applies only to tcp and ws, not {net}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<DialString, DialError> {
        s.parse()
    }

    fn reason(s: &str) -> String {
        match parse(s) {
            Ok(ds) => panic!("{s:?} parsed as {ds:?}, expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn round_trips() {
        for s in [
            "mem!router",
            "mem!a.b_c-9",
            "unix!/run/mesh/a.sock",
            "tcp!127.0.0.1!17001",
            "tcp!localhost!0",
            "tcp!*!17001",
            "tcp!::1!65535",
            "ws!127.0.0.1!17003",
            "ws!*!0",
        ] {
            let ds = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(ds.to_string(), s);
            assert_eq!(parse(&ds.to_string()), Ok(ds));
        }
    }

    #[test]
    fn parses_to_variants() {
        assert_eq!(parse("mem!x"), Ok(DialString::Mem("x".into())));
        assert_eq!(parse("unix!/tmp/x.sock"), Ok(DialString::Unix(PathBuf::from("/tmp/x.sock"))));
        assert_eq!(parse("tcp!h!1"), Ok(DialString::Tcp(Host::Name("h".into()), 1)));
        assert_eq!(parse("ws!*!2"), Ok(DialString::Ws(Host::Any, 2)));
    }

    #[test]
    fn is_network() {
        assert!(parse("tcp!h!1").unwrap().is_network());
        assert!(parse("ws!h!1").unwrap().is_network());
        assert!(!parse("mem!h").unwrap().is_network());
        assert!(!parse("unix!/h").unwrap().is_network());
    }

    #[test]
    fn error_messages() {
        let cases = [
            ("", r#"bad dial string "": empty dial string"#),
            ("foo!x", r#"bad dial string "foo!x": unknown network "foo" (want mem, unix, tcp or ws)"#),
            ("!x", r#"bad dial string "!x": missing network before '!' (want mem, unix, tcp or ws)"#),
            ("tcp", r#"bad dial string "tcp": missing host and port (want tcp!HOST!PORT)"#),
            ("tcp!h", r#"bad dial string "tcp!h": missing port (want tcp!HOST!PORT)"#),
            ("ws!h", r#"bad dial string "ws!h": missing port (want ws!HOST!PORT)"#),
            ("mem", r#"bad dial string "mem": missing name (want mem!NAME)"#),
            ("unix", r#"bad dial string "unix": missing path (want unix!/PATH)"#),
            ("tcp!h!1!x!y", r#"bad dial string "tcp!h!1!x!y": extra part "x!y" after the port (want tcp!HOST!PORT)"#),
            ("mem!a!b", r#"bad dial string "mem!a!b": extra part "b" after the name (want mem!NAME)"#),
            ("unix!/a!b", r#"bad dial string "unix!/a!b": extra part "b" after the path (want unix!/PATH)"#),
            ("tcp!h!http", r#"bad dial string "tcp!h!http": port "http" is not a number (want 0-65535)"#),
            ("tcp!h!-1", r#"bad dial string "tcp!h!-1": port "-1" is not a number (want 0-65535)"#),
            ("tcp!h!65536", r#"bad dial string "tcp!h!65536": port 65536 out of range (want 0-65535)"#),
            (
                "ws!h!99999999999999999999",
                r#"bad dial string "ws!h!99999999999999999999": port 99999999999999999999 out of range (want 0-65535)"#,
            ),
            ("tcp!h!", r#"bad dial string "tcp!h!": empty port"#),
            ("tcp!!1", r#"bad dial string "tcp!!1": empty host"#),
            ("ws!a b!1", r#"bad dial string "ws!a b!1": host "a b" has character ' '"#),
            ("unix!x.sock", r#"bad dial string "unix!x.sock": unix path "x.sock" is not absolute"#),
            ("unix!", r#"bad dial string "unix!": empty unix path"#),
            ("unix!*", r#"bad dial string "unix!*": '*' (all addresses) applies only to tcp and ws, not unix"#),
            ("mem!", r#"bad dial string "mem!": empty mem name"#),
            ("mem!*", r#"bad dial string "mem!*": '*' (all addresses) applies only to tcp and ws, not mem"#),
            (
                "mem!a/b",
                r#"bad dial string "mem!a/b": mem name "a/b" has character '/' (allowed: letters, digits, '.', '_', '-')"#,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(reason(input), want, "input {input:?}");
        }
    }

    #[test]
    fn length_limits() {
        let long_path = format!("unix!/{}", "a".repeat(UNIX_PATH_MAX));
        assert!(reason(&long_path).ends_with("longer than the 107 the kernel allows"));
        let ok_path = format!("unix!/{}", "a".repeat(UNIX_PATH_MAX - 1));
        assert!(parse(&ok_path).is_ok());
        assert!(reason(&format!("mem!{}", "a".repeat(256))).ends_with("longer than 255"));
        assert!(reason(&format!("tcp!{}!1", "a".repeat(254))).ends_with("longer than 253"));
    }

    #[test]
    fn error_accessors() {
        let e = parse("tcp!h").unwrap_err();
        assert_eq!(e.input(), "tcp!h");
        assert_eq!(e.reason(), "missing port (want tcp!HOST!PORT)");
    }
}
