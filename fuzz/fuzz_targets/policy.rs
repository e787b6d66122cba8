//! str -> `policy::Who`, the entries of `allow`, `read`, `tree` and `ctl`. An accepted
//! rule prints back as exactly the input (a rule has one spelling), and a
//! policy made of accepted rules answers every check without panicking,
//! admitting what its rule says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ns::policy::{Access, Policy, Rule, Who};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let rules: Vec<Who> = s.split(',').filter_map(|w| w.parse().ok()).collect();
    for (w, text) in rules.iter().zip(s.split(',').filter(|w| w.parse::<Who>().is_ok())) {
        assert_eq!(w.to_string(), text, "a rule has one spelling");
    }
    let mut p = Policy::default();
    p.rules.insert("s".parse().expect("valid"), Rule { allow: Some(rules.clone()), read: vec![] });
    // The same rule for the machine's tree and its ctl files.
    p.tree = Some(rules.clone());
    p.ctl = Some(rules.clone());
    for w in &rules {
        let (m, u) = match w {
            Who::Anyone => ("x".parse().expect("valid"), None),
            Who::Machine(m) => (m.clone(), None),
            Who::User(m, u) => (m.clone(), Some(u.as_str())),
            Who::UserAnywhere(u) => ("y".parse().expect("valid"), Some(u.as_str())),
        };
        assert_eq!(p.check("s", &m, u), Access::Full, "{w} admits what it names");
        assert_eq!(p.check_tree(true, &m, u), Access::Full, "{w} admits to the tree what it names");
    }
});
