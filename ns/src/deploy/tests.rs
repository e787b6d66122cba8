//! Tests of the deployment file: the built-in mesh, a file using every key,
//! and one test per rule, each checking the key path and line it reports.

use std::path::PathBuf;

use super::*;
use crate::path::Name;

fn name(s: &str) -> Name {
    Name::new(s).expect("test name")
}

fn ds(s: &str) -> DialString {
    s.parse().expect("test dial string")
}

/// Parses `text`, which must fail, and checks where the error points.
#[track_caller]
fn fails(text: &str, key: &str, line: usize, msg: &str) {
    match parse(text, "t.toml") {
        Ok(d) => panic!("parsed, expected an error at {key}: {d:#?}"),
        Err(e) => {
            assert_eq!((e.key.as_str(), e.line), (key, line), "{e}");
            assert!(e.msg.contains(msg), "message {:?} lacks {msg:?}", e.msg);
            assert_eq!(e.file, "t.toml");
        }
    }
}

/// A machine with one service, for the rules about services.
fn with_service(service: &str) -> String {
    format!("[machines.a]\nservices = [\n  {{ name = \"s\", kind = \"registry\" }},\n  {service},\n]\n")
}

#[test]
fn builtin_is_the_example() {
    let example = include_str!("../../../examples/abc.toml");
    assert_eq!(parse(example, "examples/abc.toml"), Ok(builtin()));
    assert_eq!(example, BUILTIN, "examples/abc.toml must be a copy of ns/src/deploy/abc.toml");
}

#[test]
fn builtin_mesh() {
    let d = builtin();
    let ids: Vec<&str> = d.machines.keys().map(|m| m.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let (a, b, c) = (d.machine("a").unwrap(), d.machine("b").unwrap(), d.machine("c").unwrap());
    assert_eq!(a.listen, [ds("tcp!127.0.0.1!17001")]);
    assert_eq!(a.dial, [ds("tcp!127.0.0.2!17002")]);
    assert_eq!(b.listen, [ds("tcp!127.0.0.2!17002")]);
    assert_eq!(b.dial, [ds("ws!127.0.0.3!17003")]);
    assert_eq!(c.listen, [ds("ws!127.0.0.3!17003")]);
    assert!(c.dial.is_empty());
    for m in [a, b, c] {
        assert_eq!(m.mount, Some(PathBuf::from(format!("/tmp/mesh/{}", m.id))));
        assert!(m.gossip && !m.insecure && !m.allow_other && m.key.is_none() && m.peers.is_empty());
    }
    assert_eq!(a.registry, Some(name("b")));
    assert_eq!((b.registry.as_ref(), c.registry.as_ref()), (None, None));

    let kinds = |m: &Machine| -> Vec<(String, ServiceKind)> {
        m.services.iter().map(|s| (s.name.to_string(), s.kind)).collect()
    };
    use ServiceKind::*;
    assert_eq!(kinds(a), [("pty".into(), Pty), ("display".into(), Display)]);
    assert_eq!(kinds(b), [("parser".into(), Parser), ("registry".into(), Registry), ("upper".into(), Exec)]);
    assert_eq!(kinds(c), [("gpu".into(), Gpu), ("mp4-encoder".into(), Encoder)]);
    assert_eq!(a.services[0].command, ["bash", "--norc", "-i"]);
    assert_eq!(a.services[1].output, Some(PathBuf::from("out/demo.mp4")));
    assert_eq!(b.services[2].command, ["tr", "a-z", "A-Z"]);
    let line_of = |needle: &str| BUILTIN.lines().position(|l| l.contains(needle)).unwrap() + 1;
    assert_eq!(b.services[2].line, line_of("name = \"upper\""));

    assert_eq!(d.pipelines.len(), 1);
    let p = &d.pipelines[0];
    assert_eq!(p.name, "record");
    assert_eq!(p.line, line_of("[[pipelines]]"));
    let stages: Vec<String> = p.stages.iter().map(|s| s.to_string()).collect();
    assert_eq!(stages, ["/svc/pty", "/svc/parser", "/svc/gpu", "/svc/mp4-encoder", "/n/a/svc/display"]);
}

/// Every key of the format, with values unlike the defaults.
const FULL: &str = r#"
[machines."net.x"]
listen = ["tcp!*!18001", "unix!/run/mesh/x.sock", "mem!x"]
dial = ["ws!y.example!18002"]
mount = "/mnt/x"
registry = "y"
gossip = false
key = "keys/x.key"
insecure = true
allow_other = true
services = [
  { name = "sh", kind = "pty", command = ["sh"], size = "132x43", restart = "on-failure" },
  { name = "screen", kind = "parser", size = "80x24", fps = 30 },
  { name = "enc", kind = "encoder", fps = 240, bitrate = 4000000 },
  { name = "files", kind = "dir", root = "/srv/files", squash = "none" },
]

[machines."net.x".peers]
y = "ed25519:AAAA"

[machines.y]
listen = ["ws!0.0.0.0!18002"]
resume = "2m"

[[machines.y.services]]
name = "registry"
kind = "registry"

[[machines.y.services]]
name = "show"
kind = "display"

[[pipelines]]
name = "p1"
stages = ["/svc/sh", "/n/y/svc/show"]
restart = "always"
"#;

#[test]
fn full_file() {
    let d = parse(FULL, "full.toml").unwrap_or_else(|e| panic!("{e}"));
    let x = d.machine("net.x").unwrap();
    assert_eq!(x.id, name("net.x"));
    assert_eq!(x.listen, [ds("tcp!*!18001"), ds("unix!/run/mesh/x.sock"), ds("mem!x")]);
    assert_eq!(x.dial, [ds("ws!y.example!18002")]);
    assert_eq!(x.mount, Some(PathBuf::from("/mnt/x")));
    assert_eq!(x.registry, Some(name("y")));
    assert!(!x.gossip && x.insecure && x.allow_other);
    assert_eq!(x.resume, super::DEFAULT_RESUME);
    assert_eq!(d.machine("y").unwrap().resume, std::time::Duration::from_secs(120));
    assert_eq!(x.key, Some(PathBuf::from("keys/x.key")));
    assert_eq!(x.peers.get("y").map(String::as_str), Some("ed25519:AAAA"));

    let s = &x.services;
    assert_eq!(
        (s[0].kind, &s[0].command, s[0].size, s[0].line),
        (ServiceKind::Pty, &vec!["sh".to_string()], Some((132, 43)), 12)
    );
    assert_eq!((s[1].size, s[1].fps, s[1].bitrate), (Some((80, 24)), Some(30), None));
    assert_eq!((s[2].fps, s[2].bitrate), (Some(240), Some(4_000_000)));
    assert_eq!((s[3].kind, s[3].root.as_deref()), (ServiceKind::Dir, Some(std::path::Path::new("/srv/files"))));
    assert_eq!((s[3].squash, s[2].squash), (crate::deploy::Squash::None, crate::deploy::Squash::Root));
    assert_eq!((s[0].restart, s[1].restart), (Restart::OnFailure, Restart::Never));

    let y = d.machine("y").unwrap();
    assert!(y.gossip && !y.insecure && !y.allow_other && y.mount.is_none());
    assert_eq!(y.services.len(), 2);
    assert_eq!(
        (y.services[1].name.as_str(), y.services[1].kind, y.services[1].line),
        ("show", ServiceKind::Display, 29)
    );
    assert_eq!(y.services[1].output, None);
    assert_eq!((d.pipelines[0].name.as_str(), d.pipelines[0].line), ("p1", 33));
    assert_eq!(d.pipelines[0].restart, Restart::Always);
}

/// Line numbers are the only thing `to_toml` cannot keep.
fn without_lines(mut d: Deployment) -> Deployment {
    for m in d.machines.values_mut() {
        m.services.iter_mut().for_each(|s| s.line = 0);
    }
    d.pipelines.iter_mut().for_each(|p| p.line = 0);
    d
}

#[test]
fn to_toml_round_trips() {
    for d in [builtin(), parse(FULL, "full.toml").unwrap()] {
        let text = d.to_toml();
        let back = parse(&text, "out.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(without_lines(back), without_lines(d), "{text}");
    }
}

#[test]
fn kinds_print_as_parsed() {
    for k in ServiceKind::ALL {
        assert_eq!(k.to_string().parse::<ServiceKind>(), Ok(k));
    }
}

#[test]
fn error_display_and_load() {
    let e = parse("[machines.a]\nlisten = 3\n", "x.toml").unwrap_err();
    assert_eq!(e.to_string(), "x.toml:2: machines.a.listen: expected an array, found integer");
    let e = load(std::path::Path::new("/nonexistent/mesh.toml")).unwrap_err();
    assert_eq!((e.file.as_str(), e.line, e.key.as_str()), ("/nonexistent/mesh.toml", 0, "read"));
    assert_eq!(e.to_string(), "/nonexistent/mesh.toml: file does not exist");
    let dir = std::env::temp_dir().join(format!("deploy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("abc.toml");
    std::fs::write(&file, BUILTIN).unwrap();
    assert_eq!(load(&file), Ok(builtin()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn syntax_errors_keep_their_line() {
    fails("[machines.a]\n\nlisten = [\"tcp!h!1\"\n", "syntax", 3, "");
    fails("[machines.a]\nmount = \"/a\"\nmount = \"/b\"\n", "syntax", 3, "duplicate key `mount`");
    fails("[machines.a]\ngossip = yes\n", "syntax", 2, "column 10");
}

#[test]
fn unknown_keys() {
    fails("[machines.a]\n[other]\n", "other", 2, "unknown key");
    fails("[machines.a]\nlisten = []\nlistne = []\n", "machines.a.listne", 3, "unknown key");
    fails(
        &with_service("{ name = \"x\", kind = \"gpu\", colour = 1 }"),
        "machines.a.services[1].colour",
        4,
        "unknown key",
    );
    fails(
        "[machines.a]\n[[pipelines]]\nname = \"p\"\nstages = [\"/svc/a\", \"/svc/b\"]\nstage = 1\n",
        "pipelines[0].stage",
        5,
        "unknown key",
    );
}

#[test]
fn wrong_types() {
    fails("machines = 1\n", "machines", 1, "expected a table, found integer");
    fails("[machines]\na = 1\n", "machines.a", 2, "expected a table");
    fails("[machines.a]\ngossip = \"yes\"\n", "machines.a.gossip", 2, "expected true or false");
    fails("[machines.a]\nlisten = [1]\n", "machines.a.listen[0]", 2, "expected a string");
    fails("[machines.a]\nservices = [\"gpu\"]\n", "machines.a.services[0]", 2, "expected a table");
    fails("[machines.a]\n[pipelines]\n", "pipelines", 2, "expected an array");
}

#[test]
fn needs_a_machine() {
    fails("", "machines", 1, "at least one machine");
    fails("# nothing\n\n[machines]\n", "machines", 3, "at least one machine");
}

#[test]
fn names() {
    fails("[machines.a]\n[machines.B]\n", "machines.B", 2, r#"bad name "B""#);
    fails("[machines.\"x y\"]\n", "machines.\"x y\"", 1, r#"bad name "x y""#);
    fails(&with_service("{ name = \"Gpu\", kind = \"gpu\" }"), "machines.a.services[1].name", 4, r#"bad name "Gpu""#);
    fails("[machines.a]\n[machines.a.peers]\n_b = \"k\"\n", "machines.a.peers._b", 3, r#"bad name "_b""#);
    fails("[machines.a]\nregistry = \"\"\n", "machines.a.registry", 2, r#"bad name """#);
}

#[test]
fn dial_strings() {
    fails(
        "[machines.a]\nlisten = [\"tcp!h!1\",\n  \"tcp!h\"]\n",
        "machines.a.listen[1]",
        3,
        r#"bad dial string "tcp!h": missing port"#,
    );
    fails("[machines.a]\ndial = [\"ws!*!1\"]\n", "machines.a.dial[0]", 2, "'*' (all addresses) is only for listen");
    fails("[machines.a]\ndial = [\"tcp!h!1\", \"tcp!h!1\"]\n", "machines.a.dial[1]", 2, "dialed twice");
    fails(
        "[machines.a]\nlisten = [\"tcp!h!1\"]\n[machines.b]\nlisten = [\"mem!m\", \"tcp!h!1\"]\n",
        "machines.b.listen[1]",
        4,
        "tcp!h!1 is already listened on by machines.a.listen[0] (line 2)",
    );
}

#[test]
fn mount_is_absolute() {
    fails("[machines.a]\nmount = \"tmp/a\"\n", "machines.a.mount", 2, "not absolute");
    fails("[machines.a]\nmount = \"\"\n", "machines.a.mount", 2, "empty path");
}

#[test]
fn registry_must_exist() {
    fails("[machines.a]\nregistry = \"z\"\n", "machines.a.registry", 2, r#"no machine "z" in this file"#);
    fails(
        "[machines.a]\nregistry = \"b\"\n[machines.b]\n",
        "machines.a.registry",
        2,
        r#"machine "b" runs no service of kind registry"#,
    );
    // A machine may use its own registry.
    assert!(parse(
        &format!("{}registry = \"a\"\n", "[machines.a]\nservices = [{ name = \"r\", kind = \"registry\" }]\n"),
        "t"
    )
    .is_ok());
}

#[test]
fn service_kinds() {
    fails(&with_service("{ name = \"x\", kind = \"tpu\" }"), "machines.a.services[1].kind", 4, r#"unknown kind "tpu""#);
    fails(&with_service("{ name = \"x\" }"), "machines.a.services[1].kind", 4, "missing");
    fails(&with_service("{ kind = \"gpu\" }"), "machines.a.services[1].name", 4, "missing");
    fails(
        &with_service("{ name = \"x\", kind = \"gpu\", command = [\"x\"] }"),
        "machines.a.services[1].command",
        4,
        "not a key of kind gpu",
    );
    fails(
        &with_service("{ name = \"x\", kind = \"exec\", root = \"/\" }"),
        "machines.a.services[1].root",
        4,
        "not a key of kind exec",
    );
    // The probes take nothing but their name.
    let d =
        parse(&with_service("{ name = \"e\", kind = \"echo\" }, { name = \"swallow\", kind = \"sink\" }"), "p.toml")
            .unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<ServiceKind> = d.machine("a").unwrap().services.iter().map(|s| s.kind).collect();
    assert!(kinds.ends_with(&[ServiceKind::Echo, ServiceKind::Sink]), "{kinds:?}");
    fails(
        &with_service("{ name = \"x\", kind = \"echo\", command = [\"cat\"] }"),
        "machines.a.services[1].command",
        4,
        "not a key of kind echo",
    );
}

#[test]
fn allow_read_and_policy_make_a_machines_rules() {
    let text = r#"
[machines.a]
policy = "deny"
services = [
  { name = "secret", kind = "exec", command = ["cat"], allow = ["b", "a/alice", "*/bob"] },
  { name = "files", kind = "dir", root = "/srv", allow = ["a"], read = ["*"] },
  { name = "open", kind = "echo", allow = ["*"] },
  { name = "shut", kind = "sink" },
  { name = "shelf", kind = "dir", root = "/srv/shelf", read = ["*"] },
]

[machines.b]
"#;
    let d = parse(text, "p.toml").unwrap_or_else(|e| panic!("{e}"));
    let p = d.machine("a").unwrap().policy();
    let (a, b, c): (MachineId, MachineId, MachineId) = (name("a"), name("b"), name("c"));
    use crate::policy::Access::*;
    assert_eq!(p.check("secret", &b, None), Full);
    assert_eq!(p.check("secret", &a, Some("alice")), Full);
    assert_eq!(p.check("secret", &a, Some("carol")), Denied);
    assert_eq!(p.check("secret", &c, Some("bob")), Full);
    assert_eq!((p.check("files", &a, None), p.check("files", &b, Some("x"))), (Full, Read));
    assert_eq!((p.check("open", &c, None), p.check("shut", &a, None)), (Full, Denied));
    assert!(d.machine("b").unwrap().policy().is_open());
    // `read` alone: everyone reads, no one changes (not everyone, as the
    // machine's default would have it without rules).
    assert_eq!((p.check("shelf", &a, None), p.check("shelf", &c, None)), (Read, Read));
    // Written back, read again: the same rules.
    let again = parse(&d.to_toml(), "again.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.machine("a").unwrap().policy(), p);
}

#[test]
fn tree_and_ctl_rule_a_machines_own_files() {
    let text =
        "[machines.a]\ntree = [\"b\", \"c/root\"]\nctl = [\"b/root\"]\n[machines.b]\n[machines.c]\npolicy = \"deny\"\n";
    let d = parse(text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let p = d.machine("a").unwrap().policy();
    let (b, c): (MachineId, MachineId) = (name("b"), name("c"));
    use crate::policy::Access::*;
    assert!(!p.is_open());
    // The tree: b and c's root; the ctl files: b's root writes, the
    // others who reach the tree read.
    assert_eq!(p.check_tree(false, &b, Some("x")), Full);
    assert_eq!(p.check_tree(false, &c, Some("x")), Denied);
    assert_eq!(p.check_tree(false, &c, Some("root")), Full);
    assert_eq!(p.check_tree(true, &b, Some("root")), Full);
    assert_eq!(p.check_tree(true, &b, Some("x")), Read);
    assert_eq!(p.check_tree(true, &c, Some("x")), Denied);
    // Services keep their own rules: none here, and policy allow.
    assert_eq!(p.check("svc", &c, Some("x")), Full);
    // Without the keys: the tree is open, ctl writable unless deny.
    let c_rules = d.machine("c").unwrap().policy();
    assert_eq!(c_rules.check_tree(true, &b, None), Read);
    assert_eq!(d.machine("b").unwrap().policy().check_tree(true, &c, None), Full);
    let again = parse(&d.to_toml(), "again.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.machine("a").unwrap().policy(), p);
}

#[test]
fn bad_rules_name_their_line_and_key() {
    let svc = |extra: &str| format!("[machines.a]\nservices = [\n  {{ name = \"s\", kind = \"echo\"{extra} }},\n]\n");
    fails(&svc(", allow = [\"a/Alice\"]"), "machines.a.services[0].allow[0]", 3, "is not a user name");
    fails(&svc(", allow = [\"a\", \"A!\"]"), "machines.a.services[0].allow[1]", 3, "is not a rule");
    fails(&svc(", allow = [\"zz\"]"), "machines.a.services[0].allow[0]", 3, "no machine \"zz\" in this file");
    fails(&svc(", allow = \"a\""), "machines.a.services[0].allow", 3, "");
    fails(&svc(", read = [\"a\"]"), "machines.a.services[0].read", 3, "not a key of kind echo");
    fails("[machines.a]\npolicy = \"maybe\"\n", "machines.a.policy", 2, "unknown policy \"maybe\"");
    fails("[machines.a]\ntree = [\"zz\"]\n", "machines.a.tree[0]", 2, "no machine \"zz\" in this file");
    fails("[machines.a]\nctl = [\"a/B\"]\n", "machines.a.ctl[0]", 2, "is not a user name");
    fails("[machines.a]\ntree = \"a\"\n", "machines.a.tree", 2, "");
}

#[test]
fn resume_is_a_duration() {
    for (v, ms) in [("\"0s\"", 0), ("\"500ms\"", 500), ("\"30s\"", 30_000), ("\"2m\"", 120_000)] {
        let d = parse(&format!("[machines.a]\nresume = {v}\n"), "r.toml").unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(d.machine("a").unwrap().resume, std::time::Duration::from_millis(ms), "{v}");
    }
    for v in ["\"30\"", "\"s\"", "\"-1s\"", "\"1.5s\"", "\"3h\""] {
        fails(&format!("[machines.a]\nresume = {v}\n"), "machines.a.resume", 2, "is not a duration");
    }
    fails("[machines.a]\nresume = \"61m\"\n", "machines.a.resume", 2, "longer than 3600s");
    fails("[machines.a]\nresume = 30\n", "machines.a.resume", 2, "");
}

#[test]
fn service_requirements() {
    fails(&with_service("{ name = \"x\", kind = \"exec\" }"), "machines.a.services[1].command", 4, "missing");
    // restart: a pty's, not an exec's (its exit is its answer).
    fails(
        &with_service("{ name = \"x\", kind = \"exec\", command = [\"cat\"], restart = \"always\" }"),
        "machines.a.services[1].restart",
        4,
        "not a key of kind exec",
    );
    fails(
        &with_service("{ name = \"x\", kind = \"pty\", command = [\"sh\"], restart = \"now\" }"),
        "machines.a.services[1].restart",
        4,
        "unknown restart \"now\"",
    );
    fails(
        &with_service("{ name = \"x\", kind = \"pty\", command = [] }"),
        "machines.a.services[1].command",
        4,
        "empty command",
    );
    fails(
        &with_service("{ name = \"x\", kind = \"exec\", command = [\"\"] }"),
        "machines.a.services[1].command",
        4,
        "empty program",
    );
    fails(&with_service("{ name = \"x\", kind = \"dir\" }"), "machines.a.services[1].root", 4, "missing");
    fails(
        &with_service("{ name = \"x\", kind = \"dir\", root = \"/srv\", squash = \"nobody\" }"),
        "machines.a.services[1].squash",
        4,
        "want \"root\", \"none\" or \"all\"",
    );
    fails(
        &with_service("{ name = \"x\", kind = \"exec\", command = [\"cat\"], squash = \"all\" }"),
        "machines.a.services[1].squash",
        4,
        "not a key of kind exec",
    );
    fails(
        &with_service("{ name = \"x\", kind = \"display\", output = \"\" }"),
        "machines.a.services[1].output",
        4,
        "empty path",
    );
    fails(
        "[machines.a]\n\n[[machines.a.services]]\nname = \"x\"\nkind = \"exec\"\n",
        "machines.a.services[0].command",
        3,
        "missing",
    );
}

#[test]
fn service_numbers() {
    let at = "machines.a.services[1]";
    fails(
        &with_service("{ name = \"x\", kind = \"encoder\", fps = 0 }"),
        &format!("{at}.fps"),
        4,
        "out of range: want 1 to 240",
    );
    fails(&with_service("{ name = \"x\", kind = \"encoder\", fps = 241 }"), &format!("{at}.fps"), 4, "out of range");
    fails(
        &with_service("{ name = \"x\", kind = \"encoder\", fps = 2.5 }"),
        &format!("{at}.fps"),
        4,
        "expected an integer",
    );
    fails(
        &with_service("{ name = \"x\", kind = \"encoder\", bitrate = 0 }"),
        &format!("{at}.bitrate"),
        4,
        "want bits a second, 1 to 4294967295",
    );
    fails(
        &with_service("{ name = \"x\", kind = \"encoder\", bitrate = 4294967296 }"),
        &format!("{at}.bitrate"),
        4,
        "out of range",
    );
    for bad in ["80x0", "1001x2", "80*24", "80x", "x24", "+80x24", "80x24x1"] {
        fails(
            &with_service(&format!("{{ name = \"x\", kind = \"parser\", size = \"{bad}\" }}")),
            &format!("{at}.size"),
            4,
            "want COLSxROWS",
        );
    }
    let d = parse(&with_service("{ name = \"x\", kind = \"parser\", size = \"1000x1\", fps = 1 }"), "t").unwrap();
    assert_eq!(
        (d.machines[&name("a")].services[1].size, d.machines[&name("a")].services[1].fps),
        (Some((1000, 1)), Some(1))
    );
}

#[test]
fn duplicate_services() {
    fails(
        &with_service("{ name = \"s\", kind = \"gpu\" }"),
        "machines.a.services[1]",
        4,
        "duplicate service name \"s\" on this machine (first on line 3)",
    );
    // The same name on two machines is a replicated service.
    assert!(parse("[machines.a]\nservices = [{ name = \"g\", kind = \"gpu\" }]\n[machines.b]\nservices = [{ name = \"g\", kind = \"gpu\" }]\n", "t").is_ok());
}

#[test]
fn pipelines() {
    let file = |stages: &str| format!("[machines.a]\n\n[[pipelines]]\nname = \"p\"\nstages = {stages}\n");
    fails(&file("[\"/svc/x\"]"), "pipelines[0].stages", 5, "at least 2 stages, this one has 1");
    fails(&file("[\"/svc/x\", \"svc/y\"]"), "pipelines[0].stages[1]", 5, r#"bad path "svc/y""#);
    fails(&file("[\"/svc/x\", \"/n/b/svc/y\"]"), "pipelines[0].stages[1]", 5, r#"no machine "b" in this file"#);
    fails(&file("[\"/svc/x\", \"/n/a/svc/y/3\"]"), "pipelines[0].stages[1]", 5, "not a conversation");
    fails("[machines.a]\n[[pipelines]]\nstages = [\"/svc/x\", \"/svc/y\"]\n", "pipelines[0].name", 2, "missing");
    fails("[machines.a]\n[[pipelines]]\nname = \"p\"\n", "pipelines[0].stages", 2, "missing");
    fails("[machines.a]\n[[pipelines]]\nname = \"P q\"\nstages = []\n", "pipelines[0].name", 3, "bad name");
    let two = "[machines.a]\n[[pipelines]]\nname = \"p\"\nstages = [\"/svc/x\", \"/svc/y\"]\n";
    fails(&format!("{two}{}", &two[13..]), "pipelines[1].name", 6, "duplicate pipeline name \"p\" (first on line 2)");
    // restart: on-failure unless said.
    assert_eq!(parse(two, "t").unwrap().pipelines[0].restart, Restart::OnFailure);
    for r in Restart::ALL {
        let d = parse(&format!("{two}restart = \"{}\"\n", r.as_str()), "t").unwrap();
        assert_eq!(d.pipelines[0].restart, r);
    }
    fails(&format!("{two}restart = \"sometimes\"\n"), "pipelines[0].restart", 5, "unknown restart \"sometimes\"");
    fails(&format!("{two}restart = 3\n"), "pipelines[0].restart", 5, "string");
}
