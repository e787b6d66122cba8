//! Text of a namespace file -> `ns::nsfile::parse_lines`, and each bind
//! line it accepts -> a mount table. The parser accepts a line or names
//! its line in the error; a table never grows a union past its bound, and
//! resolution through it always gives at least one path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ns::bind::{MountTable, MAX_UNION};
use ns::nsfile::{parse_lines, Item, Op};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let items = match parse_lines("f.ns", text) {
        Ok(items) => items,
        Err(e) => {
            assert!(e.starts_with("f.ns:"), "error without its line: {e}");
            return;
        }
    };
    let mut t = MountTable::default();
    for item in items {
        let Item::Line(l) = item else { continue };
        assert!(l.line >= 1 && l.line <= text.lines().count());
        match l.op {
            Op::Bind { order, create, old, new } => {
                let _ = t.bind(&old, &new, order, create);
                let got = t.resolve(&new);
                assert!(!got.is_empty() && got.len() <= MAX_UNION);
            }
            Op::Unmount { old, new } => {
                let _ = t.unmount(old.as_deref(), &new);
            }
            _ => {}
        }
    }
    let _ = t.lines();
});
