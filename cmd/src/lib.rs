//! The `mesh` command as a library, so that the binary, the generator of
//! its manual page and the shell completions share one definition.
//!
//! Modules:
//!
//! - [`cli`]: the clap definition of every subcommand and option.
//! - [`manual`]: mesh(1), generated from [`cli`] plus hand-written
//!   sections, committed as man/mesh.1.
//! - [`logging`]: the logger on standard error (colour only on a
//!   terminal; fuse3's interrupt warning at debug).
//! - [`run`]: what each subcommand does: it parses nothing and decides
//!   little, calling into the crates (`srv`, `ns`).
//! - [`av`]: handing `mesh up` and `mesh demo` to the `mesh-av` binary
//!   when they need the kinds that link FFmpeg.
//!
//! Two binaries share it: `mesh` (src/main.rs) and `mesh-av`
//! (src/bin/mesh-av.rs), which registers those kinds first.

pub mod av;
pub mod cli;
pub mod logging;
pub mod manual;
pub mod run;
