//! str -> `ns::deploy::parse`. A deployment that parses prints, with
//! `to_toml`, a file that parses back to it (all but line numbers), and
//! printing that gives the same text again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ns::deploy::{self, Deployment};

/// The deployment with every line number zeroed: `to_toml` cannot keep them.
fn unlined(mut d: Deployment) -> Deployment {
    for m in d.machines.values_mut() {
        for s in &mut m.services {
            s.line = 0;
        }
    }
    for p in &mut d.pipelines {
        p.line = 0;
    }
    d
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let d = match deploy::parse(text, "fuzz.toml") {
        Ok(d) => d,
        Err(e) => {
            assert_eq!(e.file, "fuzz.toml");
            assert!(!e.key.is_empty() && !e.msg.is_empty(), "{e:?}");
            return;
        }
    };
    let printed = d.to_toml();
    let back = deploy::parse(&printed, "printed.toml")
        .unwrap_or_else(|e| panic!("to_toml of {d:#?} gives\n{printed}\nwhich fails: {e}"));
    assert_eq!(back.to_toml(), printed);
    assert_eq!(unlined(back), unlined(d), "printed as\n{printed}");
});
