//! `mesh`: the command. Parses the command line ([`mesh_cmd::cli`]) and
//! hands it to [`mesh_cmd::run`].

use std::process::ExitCode;

use clap::Parser;

/// Routers pass large frames between threads; mimalloc keeps freed blocks
/// for reuse where glibc unmaps them, which cost a page fault per 4 KiB of
/// every megabyte relayed (see README, Dependencies).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    mesh_cmd::run::main(mesh_cmd::cli::Cli::parse())
}
