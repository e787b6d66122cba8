//! Pipelines kept running by their `restart` key, across router
//! processes: a lost link fails a pipeline that crosses it, and it is
//! started again (`on-failure`, the default), or left ended (`never`); a
//! pipeline whose first stage ends is started again only with `always`.
//! Their state and each end are in the home router's `ctl`.

use std::time::{Duration, Instant};

use mnt_tests::{sh_ok, until, Deploy, Mesh};

const T: Duration = Duration::from_secs(30);

fn lines(p: &std::path::Path) -> usize {
    std::fs::read_to_string(p).map(|s| s.lines().count()).unwrap_or(0)
}

#[test]
fn pipelines_come_back_after_a_lost_link_as_their_restart_key_says() {
    let mut m = Mesh::new();
    let dir = m.dir.path().to_path_buf();
    let d = dir.display();
    let keep = |name: &str| {
        format!(r#"{{ name = "{name}", kind = "exec", command = ["sh", "-c", "cat >> {d}/{name}.txt"] }}"#)
    };
    let deploy = Deploy::new()
        .machine("a", 1)
        .machine("b", 2)
        .dial("a", "b")
        .mount("a")
        .service(
            "a",
            r#"{ name = "tick", kind = "exec", command = ["sh", "-c", "while :; do echo tick; sleep 0.1; done"] }"#,
        )
        .service("a", r#"{ name = "once", kind = "exec", command = ["sh", "-c", "echo once"] }"#)
        .service("b", r#"{ name = "upper", kind = "exec", command = ["tr", "a-z", "A-Z"] }"#)
        .service("a", &keep("kept"))
        .service("a", &keep("never"))
        .service("a", &keep("again"))
        .service("a", &keep("ended"))
        .tail(
            r#"[[pipelines]]
name = "kept"
stages = ["/svc/tick", "/n/b/svc/upper", "/n/a/svc/kept"]

[[pipelines]]
name = "never"
stages = ["/svc/tick", "/n/b/svc/upper", "/n/a/svc/never"]
restart = "never"

[[pipelines]]
name = "again"
stages = ["/svc/once", "/n/b/svc/upper", "/n/a/svc/again"]
restart = "always"

[[pipelines]]
name = "ended"
stages = ["/svc/once", "/n/b/svc/upper", "/n/a/svc/ended"]
"#,
        );
    m.start("ab.toml", &deploy);
    let (kept, never, again, ended) =
        (dir.join("kept.txt"), dir.join("never.txt"), dir.join("again.txt"), dir.join("ended.txt"));
    let ctl = dir.join("a/ctl");
    let ctl_text = || std::fs::read_to_string(&ctl).unwrap_or_default();
    until("both tick pipelines run through b", T, || lines(&kept) >= 5 && lines(&never) >= 5);
    assert!(std::fs::read_to_string(&kept).unwrap().lines().all(|l| l == "TICK"));
    // A first stage that ends: started again with `always` (after 1 s,
    // then 2 s), not with the default.
    until("`always` runs its pipeline again", T, || lines(&again) >= 2);
    until("the default leaves it ended", T, || ctl_text().contains("pipeline ended ended restarts 0"));
    assert_eq!(lines(&ended), 1);
    assert_eq!(std::fs::read_to_string(&again).unwrap().lines().next(), Some("ONCE"));

    // The link to b is lost: hung up, its session ended (a redial would
    // resume it, and nothing would fail).
    sh_ok(&format!("echo hangup > {d}/a/term/net-b/ctl"), T);
    let cut = Instant::now();
    until("the lost link is told in ctl", T, || ctl_text().contains("pipeline never ended restarts 0"));
    let before = lines(&kept);
    until("the default starts it again and it runs through b", T, || lines(&kept) >= before + 5);
    eprintln!("kept running again {:?} after the hangup", cut.elapsed());
    let text = ctl_text();
    assert!(text.contains("pipeline kept running restarts 1"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("event pipeline kept ended: ") && l.ends_with("; restart 1 in 1s")),
        "{text}"
    );
    // `never` stays ended: nothing more comes through it.
    let stopped = lines(&never);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lines(&never), stopped, "a pipeline with restart = \"never\" ran again");
    assert!(lines(&kept) > before + 5, "the restarted pipeline stopped");
}
