//! Deployment files for tests, and starting them with ports that work.
//!
//! [`Deploy`] describes machines on loopback addresses (`127.0.0.N`), each
//! listening on a port of its own, their links, mounts and services;
//! [`Deploy::abc`] is the line most tests run: a -tcp- b -ws- c.
//! [`Mesh::start`] writes the file and starts every machine in it.
//!
//! A router's port must be in the file before the router binds it, so it
//! is picked first and bound later, and something else may take it in
//! between. [`crate::port`] picks below the kernel's ephemeral range, where
//! outgoing connections never take ports; another test process still
//! may, so [`Mesh::with_ports`] waits for each router to listen and, if
//! one failed because its port was taken, stops what it started and
//! starts it all again with fresh ports.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::relay::Relay;
use crate::{port, Mesh};

/// Starts tried before giving up, each with fresh ports.
const ATTEMPTS: usize = 5;
/// How long a router may take to listen (or fail) on a busy machine.
const LISTEN_WAIT: Duration = Duration::from_secs(30);

/// A deployment file for a test, built machine by machine.
#[derive(Clone, Default)]
pub struct Deploy {
    machines: Vec<Machine>,
    tail: String,
}

#[derive(Clone)]
struct Machine {
    id: String,
    /// Listens on 127.0.0.`host`.
    host: u8,
    ws: bool,
    /// Machines it dials, and through a relay delaying each way by how
    /// much, if through one.
    dial: Vec<(String, Option<Duration>)>,
    mount: bool,
    services: Vec<String>,
    lines: Vec<String>,
}

impl Deploy {
    pub fn new() -> Deploy {
        Deploy::default()
    }

    /// a -tcp- b -ws- c on 127.0.0.1, .2 and .3: a dials b over tcp, b
    /// dials c over ws. No mounts, no services.
    pub fn abc() -> Deploy {
        Deploy::new().machine("a", 1).machine("b", 2).machine("c", 3).ws("c").dial("a", "b").dial("b", "c")
    }

    /// Machine `id`, listening over tcp on 127.0.0.`host`.
    pub fn machine(mut self, id: &str, host: u8) -> Deploy {
        self.machines.push(Machine {
            id: id.into(),
            host,
            ws: false,
            dial: Vec::new(),
            mount: false,
            services: Vec::new(),
            lines: Vec::new(),
        });
        self
    }

    fn get(&mut self, id: &str) -> &mut Machine {
        self.machines.iter_mut().find(|m| m.id == id).unwrap_or_else(|| panic!("no machine {id} in the deployment"))
    }

    /// `id` listens over ws instead of tcp.
    pub fn ws(mut self, id: &str) -> Deploy {
        self.get(id).ws = true;
        self
    }

    /// `from` dials `to`.
    pub fn dial(mut self, from: &str, to: &str) -> Deploy {
        self.get(from).dial.push((to.into(), None));
        self
    }

    /// `from` dials `to` through a relay that can go silent
    /// ([`Started::relay`]); `to` must listen over tcp.
    pub fn dial_relayed(mut self, from: &str, to: &str) -> Deploy {
        self.get(from).dial.push((to.into(), Some(Duration::ZERO)));
        self
    }

    /// `from` dials `to` through a relay that holds what it moves for
    /// `delay` each way (a long link: see [`Relay::delayed`]).
    pub fn dial_delayed(mut self, from: &str, to: &str, delay: Duration) -> Deploy {
        self.get(from).dial.push((to.into(), Some(delay)));
        self
    }

    /// `id` is mounted at `DIR/id`, DIR being the test's directory.
    pub fn mount(mut self, id: &str) -> Deploy {
        self.get(id).mount = true;
        self
    }

    /// A service of `id`, as an inline table:
    /// `{ name = "echo", kind = "exec", command = ["cat"] }`.
    pub fn service(mut self, id: &str, table: &str) -> Deploy {
        self.get(id).services.push(table.into());
        self
    }

    /// Another line of `id`'s table: `registry = "b"`, `gossip = false`.
    pub fn set(mut self, id: &str, line: &str) -> Deploy {
        self.get(id).lines.push(line.into());
        self
    }

    /// Text after the machines (`[[pipelines]]`).
    pub fn tail(mut self, text: &str) -> Deploy {
        self.tail.push_str(text);
        self
    }

    /// The machines, in the order they were added (and are started).
    pub fn ids(&self) -> Vec<String> {
        self.machines.iter().map(|m| m.id.clone()).collect()
    }

    /// The deployment file, with machine `i` (in the order added) on
    /// `ports[i]` and mounts under `dir`, for tests that write it
    /// themselves in [`Mesh::with_ports`]. No relays.
    pub fn render(&self, dir: &Path, ports: &[u16]) -> String {
        self.text(dir, ports, &[])
    }

    /// The deployment file, with machine `i` on `ports[i]`, relayed dials
    /// through the relays' ports, mounts under `dir`.
    fn text(&self, dir: &Path, ports: &[u16], relays: &[(String, String, Relay)]) -> String {
        let listen = |id: &str| {
            let i = self.machines.iter().position(|m| m.id == id).unwrap_or_else(|| panic!("no machine {id}"));
            let m = &self.machines[i];
            format!("{}!127.0.0.{}!{}", if m.ws { "ws" } else { "tcp" }, m.host, ports[i])
        };
        let mut t = String::new();
        for m in &self.machines {
            let _ = writeln!(t, "[machines.{}]\nlisten = [\"{}\"]", m.id, listen(&m.id));
            let dials: Vec<String> = m
                .dial
                .iter()
                .map(|(to, relayed)| match relays.iter().find(|r| relayed.is_some() && r.0 == m.id && r.1 == *to) {
                    Some(r) => format!("\"tcp!127.0.0.1!{}\"", r.2.port()),
                    None => format!("\"{}\"", listen(to)),
                })
                .collect();
            if !dials.is_empty() {
                let _ = writeln!(t, "dial = [{}]", dials.join(", "));
            }
            if m.mount {
                let _ = writeln!(t, "mount = \"{}/{}\"", dir.display(), m.id);
            }
            for l in &m.lines {
                let _ = writeln!(t, "{l}");
            }
            if !m.services.is_empty() {
                let _ = writeln!(t, "services = [\n  {},\n]", m.services.join(",\n  "));
            }
            t.push('\n');
        }
        t.push_str(&self.tail);
        t
    }
}

/// A deployment started by [`Mesh::start`].
pub struct Started {
    /// The deployment file, to start a machine of it again.
    pub file: PathBuf,
    ports: Vec<(String, u16)>,
    relays: Vec<(String, String, Relay)>,
}

impl Started {
    /// The port machine `id` listens on.
    pub fn port(&self, id: &str) -> u16 {
        self.ports.iter().find(|p| p.0 == id).map(|p| p.1).unwrap_or_else(|| panic!("no machine {id}"))
    }

    /// The relay `from` dials `to` through.
    pub fn relay(&self, from: &str, to: &str) -> &Relay {
        self.relays.iter().find(|r| r.0 == from && r.1 == to).map(|r| &r.2).unwrap_or_else(|| panic!("no relay"))
    }
}

impl Mesh {
    /// Writes `deploy` as `DIR/name` and starts each of its machines as
    /// its own `mesh up` process, in order, with fresh ports until none
    /// is taken. Returns once each listens.
    pub fn start(&mut self, name: &str, deploy: &Deploy) -> Started {
        let n = deploy.machines.len();
        self.with_ports(n, |m, ports| {
            let relays: Vec<(String, String, Relay)> = deploy
                .machines
                .iter()
                .flat_map(|from| {
                    from.dial.iter().filter_map(move |d| d.1.map(|delay| (from.id.clone(), d.0.clone(), delay)))
                })
                .map(|(from, to, delay)| {
                    let i = deploy.machines.iter().position(|m| m.id == to).unwrap_or_else(|| panic!("no {to}"));
                    let target = format!("127.0.0.{}:{}", deploy.machines[i].host, ports[i]);
                    let relay = Relay::delayed(target.parse().unwrap_or_else(|e| panic!("{target}: {e}")), delay);
                    (from, to, relay)
                })
                .collect();
            let file = m.file(name, &deploy.text(m.dir.path(), ports, &relays));
            for id in deploy.ids() {
                m.up(&file, &id);
            }
            Started { file, ports: deploy.ids().into_iter().zip(ports.iter().copied()).collect(), relays }
        })
    }

    /// Calls `start` with `n` fresh ports from [`port`]; `start` starts
    /// routers with [`Mesh::up`] only. Waits until each router it started
    /// listens (its local socket is made after its network listeners); if
    /// one exited because its address was in use, stops all it started and
    /// calls `start` again with fresh ports.
    pub fn with_ports<T>(&mut self, n: usize, mut start: impl FnMut(&mut Mesh, &[u16]) -> T) -> T {
        for attempt in 1..=ATTEMPTS {
            let ports: Vec<u16> = (0..n).map(|_| port()).collect();
            let first = self.children.len();
            let started = start(self, &ports);
            match self.wait_listening(first) {
                None => return started,
                Some(id) if attempt < ATTEMPTS => {
                    eprintln!("router {id}: a port of {ports:?} is taken; starting again with fresh ports");
                    drop(started);
                    self.stop_from(first);
                }
                Some(id) => panic!("router {id}: ports taken {ATTEMPTS} times\n{}", self.log(&id)),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Waits for the routers from child `first` on to listen or exit; the
    /// first that exited for an address in use, if any.
    fn wait_listening(&mut self, first: usize) -> Option<String> {
        let deadline = Instant::now() + LISTEN_WAIT;
        let mut waiting: Vec<usize> = (first..self.children.len()).collect();
        while !waiting.is_empty() && Instant::now() < deadline {
            let mut still = Vec::new();
            for i in waiting {
                let name = self.children[i].0.clone();
                if self.dir.path().join(format!("mesh/{name}.sock")).exists() {
                    continue;
                }
                match self.children[i].1.try_wait() {
                    // Any other failure is the test's to see, with the log.
                    Ok(Some(_)) if self.log(&name).contains("Address already in use") => return Some(name),
                    Ok(Some(_)) | Err(_) => {}
                    Ok(None) => still.push(i),
                }
            }
            waiting = still;
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Stops the children from `first` on and forgets them.
    fn stop_from(&mut self, first: usize) {
        let stopped: Vec<_> = self.children.drain(first..).collect();
        for (name, mut c) in stopped {
            crate::stop(&mut c, Instant::now() + Duration::from_secs(3));
            let _ = std::fs::remove_file(self.dir.path().join(format!("mesh/{name}.sock")));
        }
    }
}
