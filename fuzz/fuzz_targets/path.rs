//! str -> `Addr::parse` and `Name::new`. An accepted path prints back as
//! exactly the input (paths have one spelling) and survives the wire
//! encoding; an accepted name is the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ns::{Addr, Name};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = Name::new(s) {
        assert_eq!(n.as_str(), s);
        assert!(n.as_str().len() <= 63);
    }
    let Ok(a) = Addr::parse(s) else {
        return;
    };
    let printed = a.to_string();
    assert_eq!(printed, s, "an address has one spelling");
    assert_eq!(Addr::parse(&printed).as_ref(), Ok(&a));
    assert!(a.conv.is_none() || a.machine.is_some(), "a conversation names its machine");
    assert_ne!(a.conv, Some(0));
    let mut cbor = Vec::new();
    ciborium::into_writer(&a, &mut cbor).expect("CBOR to memory");
    let back: Addr = ciborium::from_reader(&cbor[..]).expect("an encoded address decodes");
    assert_eq!(back, a);
});
