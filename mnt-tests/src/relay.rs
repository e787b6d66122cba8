//! A TCP relay that can go silent: the way to cut a link for real without
//! closing it. Frozen, it keeps every connection open but moves no byte
//! either way and answers nothing, as a pulled cable or a dead switch
//! would; new connections are accepted and then ignored the same way.
//! Dropping it closes everything. It listens on a port the kernel picks
//! (port 0), so no test ever races another for it.
//!
//! It can also stand for a long link ([`Relay::delayed`]): each chunk it
//! reads is written on after the one-way delay, in order, as a path of
//! that latency would deliver it (this kernel has no `netem`).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(20);

/// A running relay from a port of 127.0.0.1 to `target`.
pub struct Relay {
    port: u16,
    frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    pub fn start(target: SocketAddr) -> Relay {
        Relay::delayed(target, Duration::ZERO)
    }

    /// A relay that holds what it moves for `delay` each way.
    pub fn delayed(target: SocketAddr, delay: Duration) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").expect("relay bind");
        let port = l.local_addr().expect("relay address").port();
        l.set_nonblocking(true).expect("relay nonblocking");
        let frozen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (frozen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut pipes = Vec::new();
            while !s.load(SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        if let Ok(t) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
                            for (from, to) in [(&c, &t), (&t, &c)] {
                                let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else { continue };
                                let (f, s) = (f.clone(), s.clone());
                                pipes.push(std::thread::spawn(move || pipe(from, to, &f, &s, delay)));
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
                    Err(_) => std::thread::sleep(TICK),
                }
            }
            for p in pipes {
                let _ = p.join();
            }
        });
        Relay { port, frozen, stop, thread: Some(thread) }
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops moving bytes, keeping every connection open.
    pub fn freeze(&self) {
        self.frozen.store(true, SeqCst);
    }

    pub fn thaw(&self) {
        self.frozen.store(false, SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read, until
/// either closes or the relay stops; while frozen, reads nothing, so the
/// sender's buffers fill as on a dead wire.
fn pipe(mut from: TcpStream, mut to: TcpStream, frozen: &AtomicBool, stop: &AtomicBool, delay: Duration) {
    let _ = from.set_read_timeout(Some(TICK));
    // Chunks on the wire: at most 4,096 of 64 KiB.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Instant, Vec<u8>)>(4096);
    let writer = std::thread::spawn(move || {
        for (due, chunk) in rx {
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(SeqCst) {
        if frozen.load(SeqCst) {
            std::thread::sleep(TICK);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => break,
        }
    }
    drop(tx);
    let _ = writer.join();
}
