//! Frame bytes -> `Envelope::decode`. Whatever decodes must re-encode to a
//! frame that decodes to the same envelope, with the data still a slice of
//! that frame.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ns::envelope::{HOP_LIMIT, MAX_RETURN_PATH};
use ns::Envelope;

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    let Ok(env) = Envelope::decode(frame.clone()) else {
        return;
    };
    assert!(env.via.len() <= HOP_LIMIT, "decoded {} hops", env.via.len());
    assert!(env.reply.len() <= MAX_RETURN_PATH, "decoded a return path of {}", env.reply.len());
    // The data is the frame's tail, not a copy.
    assert!(env.data.len() <= frame.len());
    assert_eq!(&frame[frame.len() - env.data.len()..], &env.data[..]);
    let again = env.encode();
    let back = Envelope::decode(again.clone()).expect("a re-encoded envelope decodes");
    assert_eq!(back, env);
    // Our own encoding is canonical: encoding twice gives the same bytes.
    assert_eq!(back.encode(), again);
});
