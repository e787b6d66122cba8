//! The terminal output both sides get: a screenful of coloured lines per
//! write, numbered, so every screen differs from the last.
//!
//! On the mesh the pty runs a small Python program that writes
//! [`chunk`]`(i)` every [`PERIOD_MS`] milliseconds for a fixed time (a
//! busy build log, say); the direct baseline feeds the same bytes to the
//! parser one write per frame. Python because it paces its writes without
//! a process per write, and setup.sh installs it already.

/// Milliseconds between writes: 200 screens a second, more than the
/// pipeline renders, so the output never runs dry.
pub const PERIOD_MS: u32 = 5;
const ROWS: usize = 24;
const FILL: &str = "continuous output: parsed on b, rendered on c";

/// The `i`th write: 24 lines (what [`SCRIPT`] writes, byte for byte).
pub fn chunk(i: u64) -> Vec<u8> {
    let mut s = String::new();
    for j in 0..ROWS as u64 {
        s.push_str(&format!("\x1b[3{}m{i:08}.{j:02}\x1b[0m {FILL}\r\n", (i + j) % 7 + 1));
    }
    s.into_bytes()
}

/// The pty's program: `python3 -c SCRIPT SECONDS`.
pub const SCRIPT: &str = r#"
import os, sys, time
end = time.monotonic() + float(sys.argv[1])
i = 0
while time.monotonic() < end:
    os.write(1, "".join("\x1b[3%dm%08d.%02d\x1b[0m %s\r\n" % ((i + j) % 7 + 1, i, j, sys.argv[2]) for j in range(24)).encode())
    i += 1
    time.sleep(float(sys.argv[3]) / 1000)
"#;

/// The pty's command line for a run of `secs` seconds.
pub fn command(secs: f64) -> Vec<String> {
    ["python3", "-c", SCRIPT, &format!("{secs}"), FILL, &PERIOD_MS.to_string()].map(String::from).to_vec()
}
