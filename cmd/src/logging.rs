//! Logging to standard error: the level from `-v` or `RUST_LOG`, colour
//! only on a terminal, and one warning of the FUSE crate turned down.
//!
//! Colour: ANSI escapes only when standard error is a terminal and
//! `NO_COLOR` is unset or empty (no-color.org); a log written to a file
//! or a pipe stays plain text.
//!
//! fuse3 0.10 answers every FUSE_INTERRUPT request, which the kernel does
//! not expect: once the interrupted request has been answered (with
//! EINTR, as it should be), the kernel refuses the extra answer with
//! ENOENT and fuse3 logs a WARN, "may reply interrupted fuse request,
//! ignore this error", on every Ctrl-C of a reader. An interrupt is
//! normal, so [`Demote`] logs that event again at debug, under fuse3's own
//! target: `RUST_LOG=fuse3=debug` shows it, nothing else does.

use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// fuse3's target and the start of the warning [`Demote`] turns down.
const FUSE3_SESSION: &str = "fuse3::raw::session";
const INTERRUPTED: &str = "may reply interrupted fuse request";

/// Installs the logger: `default` level, or `-v`'s; `RUST_LOG` applies
/// when no `-v` is given.
pub fn init(verbose: u8, default: &str) {
    let level = match verbose {
        0 => default,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = if verbose == 0 {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level))
    } else {
        EnvFilter::new(level)
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(colour());
    tracing_subscriber::registry().with(Demote).with(filter).with(fmt).init();
}

/// Whether to colour the log: a terminal, and no `NO_COLOR`.
fn colour() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Drops fuse3's interrupt warning and logs it again at debug.
struct Demote;

impl<S: Subscriber> Layer<S> for Demote {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::WARN || meta.target() != FUSE3_SESSION {
            return true;
        }
        let mut text = Message(String::new());
        event.record(&mut text);
        if !text.0.starts_with(INTERRUPTED) {
            return true;
        }
        // The logger is the global default, so this nested event is
        // dispatched (and filtered by level and target) like any other.
        tracing::debug!(target: "fuse3::raw::session", "{}", text.0);
        false
    }
}

/// The `message` field of an event, as text.
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}
