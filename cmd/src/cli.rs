//! The command line, as clap declares it: one definition read by the
//! binary, by the generator of mesh(1) ([`crate::manual`]) and by the shell
//! completions, so `mesh help CMD`, the manual page and the completions
//! always say the same thing.
//!
//! Doc comments here are the help text: the first paragraph is the short
//! help, the whole comment the long help and the manual's description.
//! A new subcommand only needs its variant here (and its arm in
//! [`crate::run`]); then regenerate man/mesh.1 (`mesh manual --out man/`),
//! which a test of this crate checks.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A Plan 9-style namespace mesh: services, terminals and routes as files.
///
/// Every machine runs one router. Routers forward messages between services
/// by name, over as many hops as it takes, and each machine sees the whole
/// mesh as a file tree, mesh(4), mounted with FUSE. A deployment file,
/// mesh.toml(5), places machines and services; dial strings, dial(7), name
/// the links between them.
///
/// The commands that talk to a running router (send, serve, routes, ls,
/// cat, and graph with -m or --router) reach it on its Unix socket: -m ID
/// names the machine, --router a dial string; with neither they use the
/// only socket there is, or say which to pick.
#[derive(Parser)]
#[command(name = "mesh", version, propagate_version = true)]
pub struct Cli {
    /// More logging: -v info, -vv debug, -vvv trace. Without -v, RUST_LOG
    /// sets the filter (default: info for up, warn otherwise).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// How to reach a router.
#[derive(clap::Args)]
pub struct RouterArg {
    /// The machine whose router to use (its Unix socket).
    #[arg(short = 'm', long = "machine", value_name = "ID")]
    pub machine: Option<String>,
    /// The router's dial string, e.g. unix!/run/mesh/a.sock.
    #[arg(long, value_name = "DIALSTRING", conflicts_with = "machine")]
    pub router: Option<String>,
}

impl RouterArg {
    /// Whether a router was named at all (`mesh graph` reads a deployment
    /// file when none is).
    pub fn given(&self) -> bool {
        self.machine.is_some() || self.router.is_some()
    }
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the routers of a deployment (all of its machines, or those named).
    ///
    /// Each router listens and dials as the deployment file says, serves its
    /// machine's services and mounts its tree at the machine's mount point,
    /// until interrupted. With no file, the built-in three-machine mesh of
    /// examples/abc.toml: a, b and c on 127.0.0.1, .2 and .3, mounted at
    /// /tmp/mesh/a, /tmp/mesh/b and /tmp/mesh/c.
    ///
    /// To stop it, Ctrl-C (SIGINT) or SIGTERM once: blocked readers get end
    /// of file, each tree is unmounted (detached if a process still has a
    /// file open or its working directory there; that process then gets
    /// ENOTCONN), the routers stop and mesh up exits within a second. A
    /// second Ctrl-C stops it at once.
    Up {
        /// The deployment file; the built-in three-machine mesh when absent.
        #[arg(value_name = "DEPLOY")]
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
    ///
    /// The script is typed once the shell shows its prompt (an error after
    /// 15 s without one); the video lasts as long as the session, the last
    /// screen held until its end.
    Demo {
        /// Where to write the recording.
        #[arg(long, short, default_value = "out/demo.mp4", value_name = "FILE")]
        out: PathBuf,
    },
    /// Make a machine key pair; prints the public key for the peers' `peers`.
    Keygen {
        /// Where to write the key file (mode 0600; never overwritten).
        #[arg(value_name = "FILE")]
        path: PathBuf,
    },
    /// Send standard input as messages to PATH; print the replies.
    ///
    /// Each read of standard input is one message. Replies are copied to
    /// standard output until the service ends the conversation; an error
    /// on the way (no such service, no route to machine) is printed and
    /// the exit status is 1.
    Send {
        /// A service or conversation path: /svc/S, /n/M/svc/S, /n/M/svc/S/N.
        #[arg(value_name = "PATH")]
        path: String,
        /// Return path: replies go here first; repeat for a pipeline.
        #[arg(long = "reply-to", value_name = "PATH")]
        reply_to: Vec<String>,
        #[command(flatten)]
        router: RouterArg,
    },
    /// Offer a service from this process: CMD runs once per conversation.
    ///
    /// The service's messages are CMD's standard input, its standard output
    /// goes back as replies, and its exit ends the conversation, as for a
    /// service of kind exec. The service is withdrawn when mesh serve ends.
    ///
    /// Each CMD runs in a process group of its own. mesh serve ends when
    /// its router goes, or on SIGINT or SIGTERM, and kills the process
    /// groups of the conversations still running, background children
    /// included.
    Serve {
        /// The service name.
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        router: RouterArg,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Run CMD in a namespace of its own.
    ///
    /// CMD runs in a private mount namespace where the machine's mount
    /// point shows a private view of its tree, built from NSFILE: bind,
    /// mount and unmount lines in Plan 9's namespace(6) syntax (see
    /// mesh-namespace(5)), binds of mesh paths onto host paths, cd, and .
    /// to include another file. What CMD binds there is invisible to other
    /// processes and gone when it exits. mesh ns exits with CMD's status.
    /// It needs CAP_SYS_ADMIN (root).
    Ns {
        /// The namespace file; without it, the tree as it is.
        #[arg(short = 'f', long = "file", value_name = "NSFILE")]
        file: Option<PathBuf>,
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
    /// List a directory of the namespace, without FUSE.
    ///
    /// Any directory of mesh(4), other machines' trees under /n/M included,
    /// over as many hops as it takes; the names are those the mount shows.
    Ls {
        /// A directory of mesh(4), relative to the router's tree.
        #[arg(default_value = "/", value_name = "PATH")]
        path: String,
        #[command(flatten)]
        router: RouterArg,
    },
    /// Print a file of the namespace, without FUSE.
    ///
    /// Any file of mesh(4) but the streams, other machines' under /n/M and
    /// the files of served directories included. A stream file (data,
    /// clone, a trace) is refused: talk to a service with mesh send.
    Cat {
        /// A file of mesh(4): routes, machine, ctl, svc/S/info,
        /// term/T/status, n/M/..., svc/S/root/...
        #[arg(value_name = "PATH")]
        path: String,
        #[command(flatten)]
        router: RouterArg,
    },
    /// Print the mesh's topology as Graphviz DOT.
    ///
    /// Machines are boxes holding their services; an edge is a link
    /// between two machines, labelled with its transport and security, with
    /// each end's terminal name (net-M) beside it. From a deployment file
    /// (the built-in mesh when none is given) the arrows point from the
    /// machine that dials to the one that listens, and the pipelines are
    /// drawn stage by stage with the hops each crosses. With -m or
    /// --router the picture is live, as that router sees it: its own
    /// terminals and their state, every machine it routes to with the
    /// hops and path, and the links those paths cross. Render it with
    /// dot -Tsvg.
    Graph {
        /// The deployment file; the built-in three-machine mesh when absent.
        #[arg(value_name = "DEPLOY", conflicts_with_all = ["machine", "router"])]
        deploy: Option<PathBuf>,
        #[command(flatten)]
        router: RouterArg,
    },
    /// Print a completion script for SHELL.
    ///
    /// The script goes to standard output. install.sh installs, for bash,
    /// zsh and fish, small scripts that load it from the mesh on PATH, where
    /// each shell looks for completions, so they always match that mesh.
    Completions {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write the manual page mesh.1, generated from this definition.
    #[command(hide = true)]
    Manual {
        /// The directory to write mesh.1 into.
        #[arg(long, default_value = "man", value_name = "DIR")]
        out: PathBuf,
    },
}
