//! Frame bytes -> `Envelope::decode`. Whatever decodes must re-encode to a
//! frame that decodes to the same envelope, with the data still a slice of
//! that frame. The frame in two parts, as a secured link hands up a clear
//! body (`Envelope::decode_frame`), split where the input's last byte
//! says: it decodes only when split where the data starts, and then to
//! the same envelope.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ns::envelope::{HOP_LIMIT, MAX_RETURN_PATH};
use ns::Envelope;

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    let split = data.last().map_or(0, |&b| data.len() * b as usize / 256);
    let parts = dial::Frame::new(frame.slice(..split), frame.slice(split..));
    let two = Envelope::decode_frame(parts);
    let Ok(env) = Envelope::decode(frame.clone()) else {
        assert!(two.is_err(), "two parts decoded where one did not");
        return;
    };
    if let Ok(two) = two {
        assert_eq!(two, env);
    }
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
