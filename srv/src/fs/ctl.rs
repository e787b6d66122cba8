//! Control files: the messages each `ctl` takes, parsed and applied.
//!
//! Router `ctl`: `dial DIALSTRING`, `hangup TERMINAL`, `reload`,
//! `mount DIALSTRING /n/NAME`, `bind [-a|-b|-c] OLD NEW`, `unmount [OLD] NEW`. Terminal `ctl`: `hangup`, `redial`.
//! Conversation `ctl`: `replyto PATH...`, `hangup` (on either end's ctl,
//! for both ends), and what the service's kind takes (a pty: `size COLS
//! ROWS`). A service's own `ctl`, for kinds with settings: the encoder's
//! `fps N`, `bitrate N`. Several messages per write are allowed, one per
//! line; the first bad one fails the write with `bad ctl message: ...`,
//! which is also logged and shown in `M/ctl`.

use dial::DialString;
use ns::error::{self, EBADCTL};
use ns::path::TermName;
use ns::{Addr, Router};

/// What a ctl file controls.
#[derive(Clone, Debug)]
pub enum Target {
    Router,
    Term(String),
    Conv(String, u64),
    /// A service's own ctl: messages for its kind, not one conversation.
    Service(String),
}

/// The longest ctl write accepted.
pub const MAX_CTL: usize = 64 << 10;

fn bad(why: impl std::fmt::Display) -> String {
    error::detail(EBADCTL, why)
}

/// Applies every line of a write to `target`.
pub async fn apply(ns: &super::Namespace, target: &Target, data: &[u8]) -> Result<(), String> {
    let r = ns.router();
    let res = apply_all(ns, target, data).await;
    if let Err(e) = &res {
        tracing::warn!(?target, "{e}");
        r.log_event(e.clone());
    }
    res
}

async fn apply_all(ns: &super::Namespace, target: &Target, data: &[u8]) -> Result<(), String> {
    let r = ns.router();
    if data.len() > MAX_CTL {
        return Err(bad(format!("{} bytes, limit {MAX_CTL}", data.len())));
    }
    let text = std::str::from_utf8(data).map_err(|_| bad("not UTF-8"))?;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match target {
            Target::Router => router_ctl(ns, &words).await?,
            Target::Term(t) => term_ctl(r, t, &words)?,
            Target::Conv(s, n) => conv_ctl(ns, s, *n, line, &words)?,
            Target::Service(s) => match ns.kind_ctl(s) {
                Some(hook) => hook(0, line).map_err(|e| if e.starts_with(EBADCTL) { e } else { bad(e) })?,
                None => return Err(bad(format!("service {s} takes no ctl messages"))),
            },
        }
    }
    Ok(())
}

async fn router_ctl(ns: &super::Namespace, w: &[&str]) -> Result<(), String> {
    let r = ns.router();
    match w {
        ["bind", args @ ..] => {
            let (order, create, old, new) = ns::bind::parse_bind(args).map_err(|e| bad(format!("bind: {e}")))?;
            ns.bind(&old, &new, order, create).await.map_err(bad)
        }
        ["unmount", args @ ..] => {
            let (old, new) = ns::bind::parse_unmount(args).map_err(|e| bad(format!("unmount: {e}")))?;
            ns.unmount(old.as_deref(), &new).map_err(bad)
        }
        ["dial", ds] => {
            let ds: DialString = ds.parse().map_err(|e| bad(format!("dial: {e}")))?;
            if !ds.is_network() && !matches!(ds, DialString::Unix(_) | DialString::Mem(_)) {
                return Err(bad(format!("dial: {ds}: not a dialable address")));
            }
            r.dial_now(ds.clone()).await.map(|_| ()).map_err(|e| bad(format!("dial {ds}: {e}")))
        }
        ["hangup", t] => {
            let name: TermName = t.parse().map_err(|e| bad(format!("hangup: {e}")))?;
            match r.term(&name) {
                Some(term) if name.machine().is_some() => {
                    term.hangup();
                    Ok(())
                }
                Some(_) => Err(bad(format!("hangup: {name} is not a network terminal"))),
                None => Err(bad(format!("hangup: no terminal {name}"))),
            }
        }
        ["mount", ds, place] => {
            let ds: DialString = ds.parse().map_err(|e| bad(format!("mount: {e}")))?;
            let name = place
                .strip_prefix("/n/")
                .filter(|n| !n.contains('/'))
                .ok_or_else(|| bad(format!("mount: {place}: want /n/NAME")))?;
            let name: ns::MachineId = name.parse().map_err(|e| bad(format!("mount: {e}")))?;
            r.dial_expecting(ds.clone(), Some(&name)).await.map(|_| ()).map_err(|e| bad(format!("mount: {e}")))
        }
        ["reload"] => r.reload().map(|_| ()).map_err(|e| bad(format!("reload: {e}"))),
        [verb, ..] => Err(bad(format!("unknown message {verb:?} (want dial, hangup, mount, bind, unmount or reload)"))),
        [] => Ok(()),
    }
}

fn term_ctl(r: &Router, t: &str, w: &[&str]) -> Result<(), String> {
    let name: TermName = t.parse().map_err(bad)?;
    let term = r.term_table().shown_one(&name).ok_or_else(|| bad(format!("no terminal {name}")))?;
    match w {
        ["hangup"] if name.machine().is_some() => {
            // The link ends, its session too; a dialed link is dialed
            // afresh by its dialer with backoff, an accepted one by the
            // peer.
            term.hangup();
            Ok(())
        }
        ["redial"] if name.machine().is_some() => {
            // Only the connection ends: a link with a session resumes on
            // a new one, and nothing that crossed it notices.
            term.end_connection();
            Ok(())
        }
        ["hangup"] | ["redial"] => Err(bad(format!("{name} is not a network terminal"))),
        [verb, ..] => Err(bad(format!("unknown message {verb:?} (want hangup or redial)"))),
        [] => Ok(()),
    }
}

fn conv_ctl(ns: &super::Namespace, s: &str, n: u64, line: &str, w: &[&str]) -> Result<(), String> {
    let r = ns.router();
    match w {
        ["replyto", paths @ ..] => {
            let reply = paths
                .iter()
                .map(|p| Addr::parse(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("replyto: {e}")))?;
            if reply.len() > ns::envelope::MAX_RETURN_PATH {
                return Err(bad(format!("replyto: {} paths, limit {}", reply.len(), ns::envelope::MAX_RETURN_PATH)));
            }
            if r.convs().set_reply(n, reply) {
                Ok(())
            } else {
                Err(bad(format!("replyto: no conversation {s}/{n}")))
            }
        }
        // Any conversation listed under svc/S: opened here through clone or
        // data, or the service's end of one opened from elsewhere.
        ["hangup"] => {
            let listed = r.convs().status(n).is_some_and(|c| c.path.service.as_str() == s);
            if listed && r.convs().hangup(n) {
                Ok(())
            } else {
                Err(bad(format!("hangup: no conversation {s}/{n}")))
            }
        }
        // The service's kind may take messages of its own (a pty: size).
        [verb, ..] => match ns.kind_ctl(s) {
            Some(hook) => hook(n, line).map_err(|e| if e.starts_with(EBADCTL) { e } else { bad(e) }),
            None => Err(bad(format!("unknown message {verb:?} (want replyto or hangup)"))),
        },
        [] => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// A terminal's ctl parses its name once: text that is no terminal
    /// name is refused naming the text; a real name that is not a link,
    /// or not there, is told apart.
    #[tokio::test]
    async fn terminal_names_are_parsed_and_bad_ones_named() {
        let stop = CancellationToken::new();
        let r = Router::new(ns::Config::new("a".parse().expect("valid")), stop.clone());
        let err = |t: &str| term_ctl(&r, t, &["hangup"]).expect_err(t);
        assert!(err("bogus").contains("bad terminal name \"bogus\""), "{}", err("bogus"));
        assert!(err("net-B").contains("bad terminal name \"net-B\""), "{}", err("net-B"));
        assert!(err("local").ends_with("local is not a network terminal"), "{}", err("local"));
        assert!(err("net-zz").ends_with("no terminal net-zz"), "{}", err("net-zz"));
        stop.cancel();
    }
}
