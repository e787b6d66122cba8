//! The demo's view of its shell: a pipeline stage right after the pty that
//! passes the output on unchanged and keeps its own emulation of the
//! screen, so the demo can wait for the shell's prompt before typing.
//!
//! Typing too early is what put a stray "P" in the first frame: the
//! terminal echoes keystrokes that arrive before the shell has started,
//! ahead of its prompt. Waiting needs to see the screen, which only the
//! stages after the pty do; a pass-through stage on the pty's own machine
//! costs one delivery inside that router per chunk, and the recording goes
//! on exactly as before.
//!
//! The prompt is recognised without knowing its text (the shell's `PS1`
//! is the user's): some output, the cursor after text on its row, and
//! then [`SETTLE`] of quiet. A shell waiting for input is quiet; one still
//! starting up (or printing a banner) is not, or has its cursor at the
//! start of a line.

use std::time::Duration;

use futures::future::BoxFuture;
use ns::conv::{Conv, Msg, Service};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long the screen must stay still, the cursor after text, for the
/// shell to count as waiting at its prompt.
pub const SETTLE: Duration = Duration::from_millis(200);

/// What the tap has seen of the terminal.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Chunks of output so far.
    pub chunks: u64,
    /// The first screen with text on it: what the recording first shows.
    pub first: Option<String>,
    /// The screen now, rows without trailing blanks, trailing empty rows
    /// dropped.
    pub text: String,
    /// The text of the cursor's row left of the cursor.
    pub before_cursor: String,
    /// When the latest output came.
    pub at: Option<Instant>,
}

impl Seen {
    /// Whether the shell waits at its prompt: output came, the cursor is
    /// after text, and nothing came for [`SETTLE`].
    fn at_prompt(&self) -> bool {
        !self.before_cursor.trim().is_empty() && self.at.is_some_and(|t| t.elapsed() >= SETTLE)
    }
}

/// The tap: a pipeline stage that passes everything on and keeps
/// [`Seen`] up to date.
pub struct Tap {
    size: (u16, u16),
    seen: watch::Sender<Seen>,
}

impl Tap {
    /// A tap for a terminal of `size` (columns, rows), and the receiver of
    /// what it sees.
    pub fn new(size: (u16, u16)) -> (Tap, watch::Receiver<Seen>) {
        let (seen, rx) = watch::channel(Seen::default());
        (Tap { size, seen }, rx)
    }
}

impl Service for Tap {
    fn serve(&self, conv: Conv) -> BoxFuture<'static, ()> {
        let (cols, rows) = self.size;
        let seen = self.seen.clone();
        Box::pin(async move {
            let Conv { mut rx, tx } = conv;
            let mut vt = vt100::Parser::new(rows, cols, 0);
            while let Some(m) = rx.recv().await {
                match m {
                    Msg::Data(b) => {
                        if !b.is_empty() {
                            vt.process(&b);
                            seen.send_modify(|s| look(s, vt.screen()));
                        }
                        // The next stage gone ends the session; its error
                        // reaches the pty through this conversation.
                        if tx.send(b).await.is_err() {
                            return;
                        }
                    }
                    Msg::Eof => {
                        tx.eof().await;
                        return;
                    }
                    Msg::Error(e) => {
                        tx.send_error(&e).await;
                        return;
                    }
                }
            }
        })
    }
}

/// Notes a new chunk's screen.
fn look(s: &mut Seen, screen: &vt100::Screen) {
    let rows: Vec<String> = screen.rows(0, screen.size().1).map(|r| r.trim_end().to_string()).collect();
    let (row, col) = screen.cursor_position();
    // Blank cells left of the cursor count: a prompt often ends in one.
    let line = rows.get(row as usize).map(String::as_str).unwrap_or_default();
    s.before_cursor = line.chars().chain(std::iter::repeat(' ')).take(col as usize).collect();
    s.text = rows.join("\n").trim_end().to_string();
    s.chunks += 1;
    s.at = Some(Instant::now());
    if s.first.is_none() && !s.text.is_empty() {
        s.first = Some(s.text.clone());
    }
}

/// Waits until the shell waits at its prompt, for at most `limit`.
/// Returns what the tap has seen then; the error says what the screen
/// showed instead.
pub async fn prompt(seen: &mut watch::Receiver<Seen>, limit: Duration) -> Result<Seen, String> {
    let deadline = Instant::now() + limit;
    loop {
        let s = seen.borrow_and_update().clone();
        if s.at_prompt() {
            return Ok(s);
        }
        // Look again when output comes, or when the quiet may be enough:
        // only text before the cursor can become a prompt by waiting.
        let settled = s.at.filter(|_| !s.before_cursor.trim().is_empty()).map(|t| t + SETTLE);
        let recheck = settled.map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            changed = seen.changed() => {
                if changed.is_err() {
                    return Err("the shell's output ended before its prompt".into());
                }
            }
            () = tokio::time::sleep_until(recheck) => {}
        }
        if Instant::now() >= deadline && !seen.borrow().at_prompt() {
            let s = seen.borrow();
            let screen = if s.chunks == 0 { "nothing".to_string() } else { format!("{:?}", s.text) };
            return Err(format!("the shell showed no prompt within {limit:?} (its screen: {screen})"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen_after(chunks: &[&[u8]]) -> Seen {
        let mut vt = vt100::Parser::new(4, 20, 0);
        let mut s = Seen::default();
        for c in chunks {
            vt.process(c);
            look(&mut s, vt.screen());
        }
        s
    }

    #[test]
    fn the_first_screen_is_the_first_with_text() {
        let s = seen_after(&[b"\x1b[?2004h", b"bash-5.2$ ", b"ls\r\n"]);
        assert_eq!(s.first.as_deref(), Some("bash-5.2$"));
        assert_eq!(s.text, "bash-5.2$ ls");
        assert_eq!(s.before_cursor, "");
        assert_eq!(s.chunks, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_prompt_is_text_before_the_cursor_then_quiet() {
        let (tx, mut rx) = watch::channel(Seen::default());
        let mut vt = vt100::Parser::new(4, 20, 0);
        let show = |vt: &mut vt100::Parser, b: &[u8]| {
            vt.process(b);
            tx.send_modify(|s| look(s, vt.screen()));
        };
        // A banner line, then the prompt 100 ms later.
        show(&mut vt, b"welcome\r\n");
        let t0 = Instant::now();
        let wait = tokio::spawn(async move { prompt(&mut rx, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        show(&mut vt, b"$ ");
        let s = wait.await.unwrap().unwrap();
        assert_eq!(s.before_cursor, "$ ");
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(100) + SETTLE, "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_prompt_is_an_error_that_shows_the_screen() {
        let (tx, mut rx) = watch::channel(Seen::default());
        let e = prompt(&mut rx, Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(e, "the shell showed no prompt within 2s (its screen: nothing)");
        let mut vt = vt100::Parser::new(4, 20, 0);
        vt.process(b"starting...\r\n");
        tx.send_modify(|s| look(s, vt.screen()));
        let e = prompt(&mut rx, Duration::from_secs(2)).await.unwrap_err();
        assert!(e.ends_with("(its screen: \"starting...\")"), "{e}");
    }
}
