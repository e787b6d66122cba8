//! CBOR messages: the one encoder and decoder of the protocols carried in
//! conversations (the registry's, the tree's, the pipeline's snapshots
//! and frames).
//!
//! Envelopes have their own encoding (see [`crate::envelope`]): a header
//! in CBOR with the payload after it, uncopied.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encodes `v` as one message.
pub fn encode<T: Serialize + ?Sized>(v: &T) -> Bytes {
    let mut buf = Vec::new();
    // Writing to memory fails only if `T`'s own `Serialize` does, and none
    // of the message types can: they are plain data.
    ciborium::into_writer(v, &mut buf).expect("CBOR encoding to memory");
    Bytes::from(buf)
}

/// Decodes one message; `what` names it in the error ("bad `what`: ...").
pub fn decode<T: DeserializeOwned>(b: &[u8], what: &str) -> Result<T, String> {
    from_bytes(b).map_err(|e| format!("bad {what}: {e}"))
}

/// Decodes one message; the error is only what was wrong, for callers
/// with an error type of their own.
pub fn from_bytes<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    ciborium::from_reader(b).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = (7u32, "seven".to_string(), vec![1u8, 2]);
        assert_eq!(decode::<(u32, String, Vec<u8>)>(&encode(&v), "test message").unwrap(), v);
    }

    #[test]
    fn errors_say_what_was_bad() {
        let e = decode::<(u32, String)>(&[0xff, 0x00], "test message").unwrap_err();
        assert!(e.starts_with("bad test message: "), "{e}");
        let e = decode::<u32>(&encode("text"), "tree message").unwrap_err();
        assert!(e.starts_with("bad tree message: "), "{e}");
    }
}
