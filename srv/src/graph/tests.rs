//! mesh graph: drawings of deployments and of live views, and bad router text named.

use super::*;

fn builtin() -> String {
    Graph::deployment(&ns::deploy::builtin(), "built-in").dot()
}

fn line_with<'a>(dot: &'a str, start: &str) -> &'a str {
    dot.lines()
        .map(str::trim)
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in\n{dot}"))
}

#[test]
fn builtin_has_its_machines_and_services_in_clusters() {
    let dot = builtin();
    assert!(dot.starts_with("// built-in: mesh graph"));
    assert!(dot.contains("digraph mesh {"));
    for m in ["a", "b", "c"] {
        assert!(dot.contains(&format!("subgraph \"cluster_{m}\" {{")), "{m}");
        assert!(line_with(&dot, &format!("\"{m}\" [shape=box")).contains(&format!("label=\"{m}\\n")));
    }
    assert!(line_with(&dot, "\"a\" [shape=box").contains("listen tcp!127.0.0.1!17001\\nmount /tmp/mesh/a\\nregistry b"));
    assert!(line_with(&dot, "\"b/svc/upper\" [").contains("label=\"upper\\n(exec)\""));
    assert!(line_with(&dot, "\"c/svc/gpu\" [").contains("label=\"gpu\""), "kind equal to name is said once");
    assert!(dot.contains("\"c\" -> \"c/svc/mp4-encoder\" [arrowhead=none"));
    assert!(dot.trim_end().ends_with('}'));
}

#[test]
fn builtin_links_go_from_dialer_to_listener_with_terminal_names() {
    let dot = builtin();
    let ab = line_with(&dot, "\"a\" -> \"b\" [");
    assert!(ab.contains("label=\"tcp noise\""), "{ab}");
    assert!(ab.contains("taillabel=\"net-b\""), "{ab}");
    assert!(ab.contains("headlabel=\"net-a\""), "{ab}");
    assert!(ab.contains("tooltip=\"tcp!127.0.0.2!17002\""), "{ab}");
    let bc = line_with(&dot, "\"b\" -> \"c\" [");
    assert!(bc.contains("label=\"ws noise\""), "{bc}");
    assert!(!dot.contains("\"a\" -> \"c\" ["), "a and c are not linked");
    assert!(!dot.contains("dir=none"), "a file says who dials");
}

#[test]
fn builtin_pipeline_steps_carry_their_hops() {
    let dot = builtin();
    let step = |from: &str, to: &str| line_with(&dot, &format!("\"{from}\" -> \"{to}\" [label=\"record")).to_string();
    assert!(step("a/svc/pty", "b/svc/parser").contains("record 1, 1 hop\""));
    assert!(step("b/svc/parser", "c/svc/gpu").contains("record 2, 1 hop\""));
    assert!(step("c/svc/gpu", "c/svc/mp4-encoder").contains("record 3, 0 hops\""));
    assert!(step("c/svc/mp4-encoder", "a/svc/display").contains("record 4, 2 hops\""));
}

const ODD: &str = r#"
[machines.x]
listen = ["tcp!*!9000"]
services = [{ name = "echo", kind = "exec", command = ["cat"] }]
[machines.y]
dial = ["tcp!x.example!9000", "ws!10.0.0.9!80"]
insecure = true
[machines.z]
listen = ["unix!/run/z.sock"]
dial = ["unix!/run/z.sock"]
services = [{ name = "echo", kind = "exec", command = ["cat"] }]
[machines.w]
dial = ["tcp!10.0.0.1!9000"]
services = [{ name = "src", kind = "exec", command = ["cat"] }]
[[pipelines]]
name = "p"
stages = ["/svc/src", "/svc/echo"]
"#;

#[test]
fn wildcard_listeners_strangers_and_refused_links() {
    let dep = ns::deploy::parse(ODD, "odd.toml").expect("valid test deployment");
    let dot = Graph::deployment(&dep, "odd.toml").dot();
    // tcp!*!9000 takes any host on its port; one end insecure is refused.
    let yx = line_with(&dot, "\"y\" -> \"x\" [");
    assert!(yx.contains("label=\"tcp refused: one end insecure\""), "{yx}");
    assert!(yx.contains("color=red"), "{yx}");
    // Dialing what no machine of the file listens on.
    assert!(
        dot.contains("\"ws!10.0.0.9!80\" [shape=box, style=dashed, label=\"ws!10.0.0.9!80\\nnot in the file\"]"),
        "{dot}"
    );
    assert!(line_with(&dot, "\"y\" -> \"ws!10.0.0.9!80\" [").contains("label=\"ws\""));
    // unix links are local: no Noise.
    assert!(line_with(&dot, "\"z\" -> \"z\" [").contains("label=\"unix local\""));
    assert!(line_with(&dot, "\"w\" -> \"x\" [").contains("label=\"tcp noise\""));
    // The nearest echo from w is x, one hop; z is unreachable.
    assert!(line_with(&dot, "\"w/svc/src\" -> \"x/svc/echo\" [").contains("p 1, 1 hop"));
}

fn view() -> View {
    View {
        machine: "a".into(),
        routes: "display a local 0 a\nparser b net-b 1 a!b\ngpu c net-b 2 a!b!c\n".into(),
        machines: vec!["a".into(), "b".into(), "c".into(), "d".into()],
        terms: vec![
            TermView {
                name: "net-b".parse().expect("a terminal name"),
                ctl: "net tcp!127.0.0.2!17002 up\n".into(),
                status: "in 1 envelopes 2 bytes\nsecurity noise 0123abcd (b)\n".into(),
            },
            TermView {
                name: "net-e".parse().expect("a terminal name"),
                ctl: "net ws!10.0.0.5!80 down\n".into(),
                status: "security insecure\n".into(),
            },
        ],
    }
}

#[test]
fn live_view_draws_terminals_paths_and_hops() {
    let dot = Graph::from_view(&view(), "live").expect("valid view").dot();
    let ab = line_with(&dot, "\"a\" -> \"b\" [");
    assert!(ab.contains("label=\"tcp noise up\""), "{ab}");
    assert!(ab.contains("dir=none"), "who dialed is not known: {ab}");
    assert!(ab.contains("taillabel=\"net-b\", headlabel=\"net-a\""), "{ab}");
    assert!(ab.contains("tooltip=\"tcp!127.0.0.2!17002 noise 0123abcd (b)\""), "{ab}");
    let ae = line_with(&dot, "\"a\" -> \"e\" [");
    assert!(ae.contains("label=\"ws down\"") && ae.contains("color=red"), "{ae}");
    // b-c is only known from the path a!b!c.
    let bc = line_with(&dot, "\"b\" -> \"c\" [");
    assert!(bc.contains("style=dashed, color=gray40"), "{bc}");
    assert_eq!(dot.matches("\"a\" -> \"b\" [").count(), 1, "the hop a!b is the terminal, drawn once");
    assert!(line_with(&dot, "\"a\" [shape=box").contains("label=\"a\\nthis router\""));
    assert!(line_with(&dot, "\"c\" [shape=box").contains("label=\"c\\n2 hops via net-b\\na!b!c\""));
    assert!(line_with(&dot, "\"b\" [shape=box").contains("1 hop via net-b"));
    // d has a route but no services; it is still a machine.
    assert!(dot.contains("subgraph \"cluster_d\""));
    assert!(dot.contains("\"c/svc/gpu\" [shape=ellipse, label=\"gpu\"]"));
}

#[test]
fn bad_router_text_is_named() {
    let mut v = view();
    v.routes = "display a local 0 a\nparser b net-b one a!b\n".into();
    let e = Graph::from_view(&v, "live").unwrap_err();
    assert_eq!(e, GraphError::BadRoute { line: 2, text: "parser b net-b one a!b".into() });
    assert!(e.to_string().starts_with("routes line 2: want `service machine terminal hops path`"));
    // A terminal, or a machine of the path, that is no name is bad text.
    for line in ["parser b net-B 1 a!b", "parser b net-b 1 a!B", "parser b client-1 1 a!b"] {
        let mut v = view();
        v.routes = format!("{line}\n");
        let e = Graph::from_view(&v, "live").unwrap_err();
        assert_eq!(e, GraphError::BadRoute { line: 1, text: line.into() });
    }
    let mut v = view();
    v.machine = "A!".into();
    let e = Graph::from_view(&v, "live").unwrap_err();
    assert_eq!(e, GraphError::BadMachine { text: "A!".into() });
    assert_eq!(e.to_string(), "machine: want a machine id, got \"A!\"");
    let mut v = view();
    v.terms[0].ctl = "net\n".into();
    assert!(matches!(Graph::from_view(&v, "live"), Err(GraphError::BadTermCtl { term, .. }) if term == "net-b"));
    // More after the state is not an error.
    v.terms[0].ctl = "net tcp!127.0.0.2!17002 up since 12:00\n".into();
    assert!(Graph::from_view(&v, "live").expect("ctl with more fields").dot().contains("label=\"tcp noise up\""));
}

#[test]
fn quoting() {
    assert_eq!(q("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
    let g = Graph { title: "say \"hi\"".into(), ..Graph::default() };
    assert!(g.dot().contains(r#"label="say \"hi\"""#));
}
