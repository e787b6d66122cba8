//! `mesh`: the command. Parses the command line ([`mesh_cmd::cli`]) and
//! hands it to [`mesh_cmd::run`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    mesh_cmd::run::main(mesh_cmd::cli::Cli::parse())
}
