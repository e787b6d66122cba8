//! Handing a command to the `mesh-av` binary: `mesh up` of machines that
//! run the kinds linking FFmpeg (encoder, display), and `mesh demo`.
//!
//! `mesh` does not link FFmpeg's libraries, so it starts in a few
//! milliseconds (see the `mesh-av` crate); `mesh-av` is the same command
//! with them. The hand-over is an exec with the same arguments and
//! environment, so the process, its pid and its signals stay the
//! caller's. `mesh-av` is looked for beside `mesh`, then on `PATH`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;

const AV: &str = "mesh-av";

/// Runs this command line as `mesh-av` instead; returns only if it could
/// not, with why.
pub fn hand_over(why: &str) -> anyhow::Error {
    let me = std::env::current_exe().ok();
    let beside = me.as_ref().map(|m| m.with_file_name(AV)).filter(|p| p.is_file());
    if let (Some(me), Some(av)) = (&me, &beside) {
        let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if modified(av) < modified(me) {
            tracing::warn!("{} is older than {}: build both (cargo build -p mesh)", av.display(), me.display());
        }
    }
    tracing::info!("{why}: running {AV}");
    let program = beside.unwrap_or_else(|| PathBuf::from(AV));
    let err = std::process::Command::new(&program).args(std::env::args_os().skip(1)).exec();
    let place =
        me.as_ref().and_then(|m| m.parent()).map_or_else(String::new, |d| format!(" beside {} or", d.display()));
    anyhow::anyhow!(
        "{why}, which the {AV} binary runs, and it is not{place} on PATH ({err}); cargo build -p mesh builds it"
    )
}
