//! What each subcommand does. Every arm is a call into the crates; the
//! only logic here is logging, signals and which router to talk to.

use std::process::ExitCode;

use clap::CommandFactory;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Cmd, RouterArg};

/// How long a command waits, once done, for blocking reads to finish.
const SHUTDOWN: std::time::Duration = std::time::Duration::from_millis(200);

/// Runs a parsed command line; the process's exit status.
pub fn main(cli: Cli) -> ExitCode {
    let default = if matches!(cli.cmd, Cmd::Up { .. }) { "info" } else { "warn" };
    crate::logging::init(cli.verbose, default);
    let result = tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|rt| {
        let r = rt.block_on(run(cli.cmd));
        // A blocking read may never end: fuse3's read of /dev/fuse while a
        // detached mount is still in use, a pty read while a process that
        // escaped its group holds the other end. Exiting ends them.
        rt.shutdown_timeout(SHUTDOWN);
        r
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The first SIGINT or SIGTERM cancels `stop`: stop cleanly. A second one
/// cancels `now`: stop at once (`mesh up` detaches its mounts and exits).
struct Signals {
    stop: CancellationToken,
    now: CancellationToken,
}

fn on_signal() -> Signals {
    let signals = Signals { stop: CancellationToken::new(), now: CancellationToken::new() };
    let (stop, now) = (signals.stop.clone(), signals.now.clone());
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        for token in [stop, now] {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            token.cancel();
        }
    });
    signals
}

fn router(r: &RouterArg) -> anyhow::Result<dial::DialString> {
    ns::client::pick_router(r.machine.as_deref(), r.router.as_deref()).map_err(anyhow::Error::msg)
}

/// The completion script for `shell` on standard output.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "mesh", &mut std::io::stdout());
    Ok(())
}

async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Up { deploy, machines, mount } => {
            let dep = match &deploy {
                Some(p) => ns::deploy::load(p)?,
                None => ns::deploy::builtin(),
            };
            let machines: Vec<_> = machines.iter().map(|m| ns::Name::new(m)).collect::<Result<_, _>>()?;
            if let Some(why) = srv::up::elsewhere(&dep, &machines) {
                return Err(crate::av::hand_over(&why));
            }
            let key_scope = srv::keys::scope(deploy.as_deref());
            let opts = srv::up::Options { machines, mount, key_scope, file: deploy.clone(), ..Default::default() };
            let signals = on_signal();
            srv::up::run(&dep, &opts, signals.stop, signals.now).await
        }
        Cmd::Demo { out } => {
            if !srv::demo::runs_here() {
                return Err(crate::av::hand_over("the demo records video"));
            }
            let rep = srv::demo::run(&out).await?;
            println!("{}", rep.summary());
            Ok(())
        }
        Cmd::Keygen { path } => {
            println!("{}", srv::keys::keygen(&path)?);
            Ok(())
        }
        Cmd::Send { path, reply_to, router: r } => srv::commands::send(&router(&r)?, &path, &reply_to).await,
        Cmd::Serve { name, router: r, command } => {
            srv::commands::serve(&router(&r)?, &name, command, on_signal().stop).await
        }
        Cmd::Ns { file, router: r, command } => {
            let code = srv::nsproc::run(srv::nsproc::Options { file, router: router(&r)?, command }).await?;
            std::process::exit(code)
        }
        Cmd::Routes { router: r } => srv::commands::cat(&router(&r)?, "/routes").await,
        Cmd::Ls { path, router: r } => srv::commands::ls(&router(&r)?, &path).await,
        Cmd::Cat { path, router: r } => srv::commands::cat(&router(&r)?, &path).await,
        Cmd::Graph { deploy, router: r } => {
            let graph = if r.given() {
                srv::graph::live(&router(&r)?).await?
            } else {
                match &deploy {
                    Some(p) => srv::graph::Graph::deployment(&ns::deploy::load(p)?, &p.display().to_string()),
                    None => srv::graph::Graph::deployment(&ns::deploy::builtin(), "built-in mesh (examples/abc.toml)"),
                }
            };
            print!("{}", graph.dot());
            Ok(())
        }
        Cmd::Completions { shell } => completions(shell),
        Cmd::Manual { out } => {
            let path = crate::manual::write(&out).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
            println!("{}", path.display());
            Ok(())
        }
    }
}
