//! `mesh demo`'s recording, on a mesh of its own (Unix-socket links in a
//! temporary directory, not the built-in addresses): the demo waits for
//! the shell's prompt before typing, so the first screen the parser sees is
//! the prompt alone, and the recording lasts the whole session.

use std::fmt::Write as _;

use dial::Identity;

/// Three machines as the built-in mesh has them, on Unix sockets, with
/// keys of their own; the shell's prompt is `demo$ `.
fn deployment(dir: &std::path::Path) -> ns::deploy::Deployment {
    let d = dir.display();
    let ids = ["a", "b", "c"];
    let mut keys = Vec::new();
    for id in ids {
        let k = Identity::generate();
        k.save(dir.join(format!("{id}.key"))).unwrap();
        keys.push(k.public().to_string());
    }
    let peers = |me: usize| {
        let mut s = String::new();
        for (i, id) in ids.iter().enumerate().filter(|(i, _)| *i != me) {
            let _ = write!(s, "{}{id} = \"{}\"", if s.is_empty() { "" } else { ", " }, keys[i]);
        }
        format!("key = \"{d}/{}.key\"\npeers = {{ {s} }}", ids[me])
    };
    let text = format!(
        r#"
[machines.a]
listen = ["unix!{d}/a.link"]
dial = ["unix!{d}/b.link"]
{pa}
services = [
  {{ name = "pty", kind = "pty", command = ["env", "PS1=demo$ ", "bash", "--norc", "--noprofile", "-i"], size = "40x8" }},
  {{ name = "display", kind = "display" }},
]

[machines.b]
listen = ["unix!{d}/b.link"]
dial = ["unix!{d}/c.link"]
{pb}
services = [ {{ name = "parser", kind = "parser", size = "40x8" }} ]

[machines.c]
listen = ["unix!{d}/c.link"]
{pc}
services = [
  {{ name = "gpu", kind = "gpu" }},
  {{ name = "mp4-encoder", kind = "encoder" }},
]

[[pipelines]]
name = "record"
stages = ["/svc/pty", "/svc/parser", "/svc/gpu", "/svc/mp4-encoder", "/n/a/svc/display"]
"#,
        pa = peers(0),
        pb = peers(1),
        pc = peers(2),
    );
    ns::deploy::parse(&text, "demo.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_screen_is_the_prompt_with_nothing_typed_before_it() {
    mesh_av::register();
    let dir = tempfile::tempdir().unwrap();
    let dep = deployment(dir.path());
    let out = dir.path().join("out/demo.mp4");
    let script = [("PS1='you@a$ '; clear", 300), ("echo hello", 300), ("exit", 100)];
    let report = tokio::time::timeout(std::time::Duration::from_secs(120), srv::demo::record(dep, &script, &out))
        .await
        .expect("the demo ends within 2 minutes")
        .unwrap_or_else(|e| panic!("the demo failed: {e:#}"));
    eprintln!("{}; first screen {:?}", report.summary(), report.first_screen);
    // Not "P", nor the prompt after echoed keystrokes: the prompt alone.
    assert_eq!(report.first_screen, "demo$");
    // Typed, run and recorded to the end: the shell's exit ended it.
    let video = report.video.expect("read back");
    assert!(video.frames >= 3, "{}", report.summary());
    assert!(video.seconds >= 0.5, "{}", report.summary());
}
