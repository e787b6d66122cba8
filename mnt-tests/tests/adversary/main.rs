//! The adversarial suite: what doc/guarantees.md promises, tried the way
//! a hostile client, a heavy load or a real network would try it. Each
//! case prints what it measured (`measured: ...` lines; run with
//! `--nocapture` to see them) and fails when a promise breaks.
//!
//! - [`cut`]: real link cuts between network namespaces.
//! - [`kill`]: writers and readers blocked on congested files, killed.
//! - [`load`]: storms of concurrent conversations to one service.
//! - [`flood`]: floods of unauthenticated connections on tcp and ws.
//! - [`users`]: a second local user on a shared mount.
//!
//! The attack clients are small and live beside the cases that use them.

mod cut;
mod flood;
mod kill;
mod load;
mod users;

/// Prints one measurement, and keeps it where CI shows it.
pub fn measured(case: &str, what: std::fmt::Arguments) {
    mnt_tests::measured(&format!("{case}: {what}"));
}
