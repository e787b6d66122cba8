//! Pseudo-terminals: opening a pair, setting its window size, starting a
//! command with it as the controlling terminal.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::sys::termios::{self, InputFlags, SetArg};
use tokio::process::{Child, Command};

/// What `TERM` says to the command: the parser understands xterm's
/// sequences, 256 colours and direct colour included.
const TERM: &str = "xterm-256color";

nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

/// Opens a pty pair of `cols` x `rows`: (master, slave). The master is
/// non-blocking, for the reactor.
pub(super) fn open(cols: u16, rows: u16) -> nix::Result<(OwnedFd, OwnedFd)> {
    // Close-on-exec on both ends from the start (not openpty(3), which
    // leaves a window): a process another thread forks meanwhile, such as
    // an exec service's, must not inherit them, or the master would not
    // read EIO while that process lives.
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::pty::posix_openpt(flags | OFlag::O_NONBLOCK)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    let slave = nix::fcntl::open(name.as_str(), flags, Mode::empty())?;
    let master = OwnedFd::from(master);
    set_size(&master, cols, rows)?;
    // UTF-8 input: backspace then erases a whole character in cooked mode.
    let mut t = termios::tcgetattr(&slave)?;
    t.input_flags |= InputFlags::IUTF8;
    termios::tcsetattr(&slave, SetArg::TCSANOW, &t)?;
    Ok((master, slave))
}

/// Sets the window size; the kernel sends SIGWINCH to the terminal's
/// foreground process group when it changes.
pub(super) fn set_size(fd: &impl AsRawFd, cols: u16, rows: u16) -> nix::Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: the fd is open for the duration of the call and `ws` is a
    // valid winsize that the kernel only reads.
    unsafe { tiocswinsz(fd.as_raw_fd(), &ws) }?;
    Ok(())
}

/// Starts `command` on the pty whose slave is `slave`: a session leader
/// with the slave as controlling terminal and standard input, output and
/// error. Killed if the returned child is dropped still running.
pub(super) fn spawn(command: &[String], slave: OwnedFd) -> io::Result<Child> {
    let (prog, args) = command.split_first().ok_or_else(|| io::Error::other("empty command"))?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env("TERM", TERM)
        // Inherited values would override the window size the pty reports.
        .env_remove("COLUMNS")
        .env_remove("LINES")
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave))
        .kill_on_drop(true);
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (setsid, ioctl), touching no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            // A session of its own, whose controlling terminal is the pty
            // (standard input is the slave by now): job control, Ctrl-C
            // and hangup then work as on a real terminal.
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}
