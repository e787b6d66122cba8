//! `mesh`: the command. Parses arguments and calls into the crates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// A Plan 9-style namespace mesh: services, terminals and routes as files.
#[derive(Parser)]
#[command(name = "mesh", version, about, propagate_version = true)]
struct Cli {
    /// More logging: -v info, -vv debug, -vvv trace. Without -v, RUST_LOG
    /// sets the filter (default: info for up, warn otherwise).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

/// How to reach a router.
#[derive(clap::Args)]
struct RouterArg {
    /// The machine whose router to use (its Unix socket).
    #[arg(short = 'm', long = "machine", value_name = "ID")]
    machine: Option<String>,
    /// The router's dial string, e.g. unix!/run/mesh/a.sock.
    #[arg(long, value_name = "DIALSTRING", conflicts_with = "machine")]
    router: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the routers of a deployment (all of its machines, or those named).
    Up {
        /// The deployment file; the built-in three-machine mesh when absent.
        deploy: Option<PathBuf>,
        /// A machine to run; repeat for several.
        #[arg(short = 'm', long = "machine", value_name = "ID")]
        machines: Vec<String>,
        /// Mount point, overriding the file's (one machine only).
        #[arg(long, value_name = "DIR")]
        mount: Option<PathBuf>,
    },
    /// The seed's scenario on one host: a terminal session on a, parsed on b,
    /// rendered on c's GPU, encoded on c, recorded on a as an MP4.
    Demo {
        /// Where to write the recording.
        #[arg(long, short, default_value = "out/demo.mp4", value_name = "FILE")]
        out: PathBuf,
    },
    /// Make a machine key pair; prints the public key for the peers' `peers`.
    Keygen {
        /// Where to write the key file (mode 0600; never overwritten).
        path: PathBuf,
    },
    /// Send standard input as messages to PATH; print the replies.
    Send {
        /// A service or conversation path: /svc/S, /n/M/svc/S, /n/M/svc/S/N.
        path: String,
        /// Return path: replies go here first; repeat for a pipeline.
        #[arg(long = "reply-to", value_name = "PATH")]
        reply_to: Vec<String>,
        #[command(flatten)]
        router: RouterArg,
    },
    /// Offer a service from this process: CMD runs once per conversation.
    Serve {
        /// The service name.
        name: String,
        #[command(flatten)]
        router: RouterArg,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Print the route table: service machine terminal hops path.
    Routes {
        #[command(flatten)]
        router: RouterArg,
    },
    /// List a directory of the namespace.
    Ls {
        #[arg(default_value = "/")]
        path: String,
        #[command(flatten)]
        router: RouterArg,
    },
    /// Print a file of the namespace.
    Cat {
        path: String,
        #[command(flatten)]
        router: RouterArg,
    },
}

fn init_logging(verbose: u8, default: &str) {
    use tracing_subscriber::EnvFilter;
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
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Cancelled on SIGINT or SIGTERM.
fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        t.cancel();
    });
    token
}

fn router(r: &RouterArg) -> anyhow::Result<dial::DialString> {
    ns::client::pick_router(r.machine.as_deref(), r.router.as_deref()).map_err(anyhow::Error::msg)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Up { deploy, machines, mount } => {
            let dep = match &deploy {
                Some(p) => ns::deploy::load(p)?,
                None => ns::deploy::builtin(),
            };
            let machines = machines.iter().map(|m| ns::Name::new(m)).collect::<Result<_, _>>()?;
            let key_scope = srv::keys::scope(deploy.as_deref());
            let opts = srv::up::Options { machines, mount, key_scope, ..Default::default() };
            srv::up::run(&dep, &opts, on_signal()).await
        }
        Cmd::Demo { out } => {
            let rep = srv::demo::run(&out).await?;
            println!("{}", rep.summary());
            Ok(())
        }
        Cmd::Keygen { path } => {
            println!("{}", srv::keys::keygen(&path)?);
            Ok(())
        }
        Cmd::Send { path, reply_to, router: r } => srv::commands::send(&router(&r)?, &path, &reply_to).await,
        Cmd::Serve { name, router: r, command } => srv::commands::serve(&router(&r)?, &name, command, on_signal()).await,
        Cmd::Routes { router: r } => srv::commands::query(&router(&r)?, "cat /routes").await,
        Cmd::Ls { path, router: r } => srv::commands::query(&router(&r)?, &format!("ls {path}")).await,
        Cmd::Cat { path, router: r } => srv::commands::query(&router(&r)?, &format!("cat {path}")).await,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = if matches!(cli.cmd, Cmd::Up { .. }) { "info" } else { "warn" };
    init_logging(cli.verbose, default);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}
