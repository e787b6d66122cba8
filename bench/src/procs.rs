//! Routers as separate processes, as they are deployed: one `mesh up -m
//! M` per machine from a deployment file written here, reached through
//! the router's client library on its Unix socket; and the raw TCP
//! baselines' far end as a process of its own ([`RawServer`], this
//! binary run as `mesh-bench --serve echo|sink`).
//!
//! Both are children of the bench: killed when dropped, and each reads
//! its standard input so that it exits when the bench dies.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use dial::DialString;
use ns::client::Client;

use crate::mesh::addr;

/// How long a router may take to listen, and a route to appear.
const START: Duration = Duration::from_secs(20);

/// A child killed (SIGTERM, then SIGKILL) when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Kid {
    /// Its CPU time and context switches so far.
    fn usage(&self) -> (Duration, u64) {
        (proc_cpu(self.0.id()), proc_switches(self.0.id()))
    }
}

/// The binary `name` built beside this one (same profile): next to it, or
/// one up from a test's `deps/`.
pub fn beside(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("no {name} binary beside {}: build it (cargo build -p {name})", exe.display()))
}

/// The `mesh` binary built beside this one.
pub fn mesh_bin() -> anyhow::Result<PathBuf> {
    beside("mesh")
}

/// A free port on `ip` (bound and let go: another process may take it
/// first, which shows as a router that does not start).
fn free_port(ip: &str) -> anyhow::Result<u16> {
    Ok(TcpListener::bind((ip, 0)).with_context(|| format!("bind {ip}"))?.local_addr()?.port())
}

/// Machines as router processes.
pub struct Deployed {
    dir: tempfile::TempDir,
    ids: Vec<String>,
    kids: Vec<Kid>,
    /// Their mounts, unmounted (lazily) if a router left one behind.
    mounts: Vec<PathBuf>,
}

impl Drop for Deployed {
    fn drop(&mut self) {
        self.kids.clear();
        for m in &self.mounts {
            if std::fs::read_to_string("/proc/self/mounts").is_ok_and(|t| t.contains(&*m.to_string_lossy())) {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }
}

/// What a machine of a [`Deployed`] has beside the probes: more keys
/// (TOML lines) and more services (inline tables).
#[derive(Clone, Default)]
pub struct Extra {
    pub keys: String,
    pub services: Vec<String>,
    /// The mount its keys ask for, to unmount if it is left behind.
    pub mount: Option<PathBuf>,
}

impl Deployed {
    /// Machines `ids` in a line over tcp, the i-th on 127.0.0.(i+1), each
    /// dialing the next, each offering `echo` and `sink`; links with Noise
    /// unless `plain` (`insecure = true`). Returns once the first routes
    /// to the last.
    pub async fn line(ids: &[&str], plain: bool) -> anyhow::Result<Deployed> {
        Deployed::line_with(ids, plain, &[]).await
    }

    /// [`Deployed::line`], the i-th machine with `extra[i]` too.
    pub async fn line_with(ids: &[&str], plain: bool, extra: &[Extra]) -> anyhow::Result<Deployed> {
        let dir = tempfile::tempdir()?;
        let mut text = String::new();
        let ports = (0..ids.len()).map(|i| free_port(&format!("127.0.0.{}", i + 1))).collect::<Result<Vec<_>, _>>()?;
        for (i, id) in ids.iter().enumerate() {
            text += &format!("[machines.{id}]\nlisten = [\"tcp!127.0.0.{}!{}\"]\n", i + 1, ports[i]);
            if i + 1 < ids.len() {
                text += &format!("dial = [\"tcp!127.0.0.{}!{}\"]\n", i + 2, ports[i + 1]);
            }
            if plain {
                text += "insecure = true\n";
            }
            let more = extra.get(i).cloned().unwrap_or_default();
            text += &more.keys;
            text += "\nservices = [{ name = \"echo\", kind = \"echo\" }, { name = \"sink\", kind = \"sink\" }";
            for s in &more.services {
                text += ", ";
                text += s;
            }
            text += "]\n\n";
        }
        let file = dir.path().join("line.toml");
        std::fs::write(&file, text)?;
        let mesh = mesh_bin()?;
        let mounts = extra.iter().filter_map(|e| e.mount.clone()).collect();
        let mut d = Deployed { ids: ids.iter().map(|s| s.to_string()).collect(), kids: Vec::new(), dir, mounts };
        for id in ids {
            let log = std::fs::File::create(d.dir.path().join(format!("{id}.log")))?;
            let child = Command::new(&mesh)
                .arg("up")
                .arg(&file)
                .args(["-m", id])
                .env("XDG_RUNTIME_DIR", d.dir.path())
                .env("XDG_STATE_HOME", d.dir.path().join("state"))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::piped())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("{} up", mesh.display()))?;
            d.kids.push(Kid(child));
            // Each makes the host's keys of the deployment if missing: one
            // at a time, so that they agree.
            d.wait_socket(id).await?;
        }
        let last = ids.last().ok_or_else(|| anyhow!("no machines"))?;
        d.wait_reach(&format!("/n/{last}/svc/echo")).await?;
        Ok(d)
    }

    /// Machine `id`'s router's Unix socket.
    pub fn socket(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("mesh/{id}.sock"))
    }

    fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{id}.log"))).unwrap_or_default()
    }

    /// Waits until machine `id`'s router accepts on its Unix socket.
    async fn wait_socket(&self, id: &str) -> anyhow::Result<()> {
        let until = Instant::now() + START;
        // Accepting, not only there: a socket is bound before it listens.
        while std::os::unix::net::UnixStream::connect(self.socket(id)).is_err() {
            if Instant::now() > until {
                bail!("router {id} did not start:\n{}", self.log(id));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Waits until the first machine's echo round trip to `path` works.
    async fn wait_reach(&self, path: &str) -> anyhow::Result<()> {
        let c = self.client(0).await?;
        let until = Instant::now() + START;
        loop {
            let mut conv = c.open(addr(path)?, Vec::new());
            let ok = tokio::time::timeout(Duration::from_secs(2), crate::rpc::mesh_round_trip(&mut conv)).await;
            match ok {
                Ok(Ok(())) => return Ok(()),
                _ if Instant::now() > until => {
                    bail!(
                        "{} cannot reach {path}:\n{}",
                        self.ids[0],
                        self.ids.iter().map(|i| self.log(i)).collect::<String>()
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// A client of the `i`th router, on its Unix socket.
    pub async fn client(&self, i: usize) -> anyhow::Result<Client> {
        let id = self.ids.get(i).ok_or_else(|| anyhow!("no machine {i}"))?;
        let ds: DialString = format!("unix!{}", self.socket(id).display()).parse().map_err(|e| anyhow!("{e}"))?;
        Client::connect(&ds).await.with_context(|| format!("connect to {id}"))
    }

    /// The router processes' CPU time so far (user + system), from /proc.
    pub fn cpu(&self) -> Duration {
        self.kids.iter().map(|k| k.usage().0).sum()
    }

    /// The `i`th router's CPU time and context switches so far.
    pub fn usage(&self, i: usize) -> (Duration, u64) {
        self.kids.get(i).map(Kid::usage).unwrap_or_default()
    }
}

/// Context switches of every thread of process `pid` (voluntary and
/// not), from /proc: each is a thread put to sleep or off its CPU, the
/// wake-ups a round trip pays.
fn proc_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    let mut n = 0;
    for t in tasks.flatten() {
        let Ok(s) = std::fs::read_to_string(t.path().join("status")) else { continue };
        for l in s.lines() {
            if let Some(v) =
                l.strip_prefix("voluntary_ctxt_switches:").or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                n += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    n
}

/// CPU time of process `pid`, from /proc/PID/stat; zero where unreadable.
fn proc_cpu(pid: u32) -> Duration {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return Duration::ZERO };
    // Fields after the command name (which may hold spaces), from 3 on.
    let Some(rest) = s.rsplit_once(')').map(|r| r.1) else { return Duration::ZERO };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15: 11 and 12 here.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros((ticks(11) + ticks(12)) * 1_000_000 / hz)
}

/// The far end of the raw TCP baselines, a process of its own: echoes
/// (ping-pong) or swallows (stream) what each connection sends.
pub struct RawServer {
    kid: Kid,
    pub addr: SocketAddr,
}

impl RawServer {
    /// Starts `mesh-bench --serve MODE` listening on `ip`.
    pub fn start(mode: &str, ip: &str) -> anyhow::Result<RawServer> {
        let bench = beside("mesh-bench")?;
        let mut child = Command::new(&bench)
            .args(["--serve", mode, "--listen", ip])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("{} --serve {mode}", bench.display()))?;
        let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let kid = Kid(child);
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        let addr = line.trim().parse().with_context(|| format!("raw server said {line:?}"))?;
        Ok(RawServer { kid, addr })
    }

    /// Its CPU time and context switches so far.
    pub fn usage(&self) -> (Duration, u64) {
        self.kid.usage()
    }

    /// A connection to it, as the mesh's tcp links are set (no delay), with
    /// a timeout so that nothing waits for ever.
    pub fn connect(&self) -> anyhow::Result<TcpStream> {
        let s = TcpStream::connect(self.addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(s)
    }
}

/// `mesh-bench --serve MODE --listen IP`: prints the address it listens
/// on, serves each connection on a thread of its own, exits when its
/// standard input closes.
pub fn serve(mode: &str, ip: &str) -> anyhow::Result<()> {
    let (echo, relay) = match mode.split_once('=') {
        Some(("relay", to)) => (false, Some(to.parse::<SocketAddr>().with_context(|| format!("relay to {to}"))?)),
        _ if mode == "echo" => (true, None),
        _ if mode == "sink" => (false, None),
        _ => bail!("--serve echo, sink or relay=ADDR, not {mode:?}"),
    };
    let l = TcpListener::bind((ip, 0)).with_context(|| format!("bind {ip}"))?;
    println!("{}", l.local_addr()?);
    std::io::stdout().flush()?;
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        let _ = s.set_nodelay(true);
        if let Some(to) = relay {
            // A plain relay: a thread each way, each byte read passed on.
            let Ok(next) = TcpStream::connect(to) else { continue };
            let _ = next.set_nodelay(true);
            let (Ok(s2), Ok(n2)) = (s.try_clone(), next.try_clone()) else { continue };
            for (mut from, mut to) in [(s, next), (n2, s2)] {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 20];
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
            continue;
        }
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if echo && s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

/// The machine's load averages, as /proc/loadavg has them (1, 5, 15 min).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}
