//! str -> `DialString`. An accepted dial string prints in a canonical form
//! that parses back to the same value and prints the same again.
#![no_main]

use dial::DialString;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let ds = match s.parse::<DialString>() {
        Ok(ds) => ds,
        Err(e) => {
            // The error carries the input and a reason, and says both.
            assert_eq!(e.input(), s);
            assert!(!e.reason().is_empty());
            return;
        }
    };
    let printed = ds.to_string();
    let back: DialString =
        printed.parse().unwrap_or_else(|e| panic!("{s:?} parsed as {ds:?}, printed as {printed:?}, which fails: {e}"));
    assert_eq!(back, ds);
    assert_eq!(back.to_string(), printed);
    // Only the port can be spelled two ways (leading zeros).
    match &ds {
        DialString::Mem(_) | DialString::Unix(_) => assert_eq!(printed, s),
        DialString::Tcp(..) | DialString::Ws(..) => {
            let head = |t: &str| t.rsplit_once('!').map(|(h, _)| h.to_string());
            assert_eq!(head(&printed), head(s));
        }
    }
});
