//! `mesh-av`: `mesh` with the kinds that link FFmpeg (encoder, display)
//! and the demo's read-back. `mesh` hands `up` and `demo` to it when they
//! need them (see `mesh_cmd::av`); any other command works here too.

use std::process::ExitCode;

use clap::Parser;

/// As in `mesh` (see src/main.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    mesh_av::register();
    mesh_cmd::run::main(mesh_cmd::cli::Cli::parse())
}
