//! Requests on an open file that travel together, and their answers.
//!
//! What goes ahead of its answer on a file of a served directory (a
//! small write, a change of mode, owner or times that is certain) does
//! not need to leave at once: nobody waits for it. It waits up to
//! [`LINGER`] for company, and whatever else goes ahead meanwhile leaves
//! with it in one message, as NFSv4's compounds and SMB2's chained
//! requests do; so does the next request that waits for its answer (a
//! flush at close, a read, a sync), which sends them first. What `tar x`
//! does to each file after making it (a write, then its owner, mode and
//! times) is then one message each way instead of four, where every
//! message costs both routers a socket write, a wake-up and a read.
//!
//! A batch is [`BATCH`], then each message as a 4-byte little-endian
//! length and its bytes; its answer is a batch of the answers, in order.
//! The serving machine says it takes batches when the file is opened
//! (`TreeResp::Batching`); one that does not is sent each message alone.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

/// The first byte of a batch: a CBOR unsigned integer, as [`super::RAW`]
/// is, which no request or answer in CBOR starts with.
pub const BATCH: u8 = 1;
/// How long a message sent ahead waits for others before it leaves
/// alone: short beside a round trip's worth of work on the file, long
/// beside the gap between a program's calls.
pub const LINGER: Duration = Duration::from_millis(1);
/// Messages that leave together at most: half of what may go ahead of
/// its answers on a file (`pipe::WRITES_AHEAD`), so that two batches are
/// in flight and the serving machine works on one while the next goes.
pub const MAX_ITEMS: usize = 32;
/// Bytes that wait together at most.
pub const MAX_BYTES: usize = 256 << 10;
/// A message larger than this leaves at once (with those waiting): a
/// big write is worth sending while the writer makes the next.
pub const ITEM_MAX: usize = 16 << 10;
/// Messages in a batch received, at most: more is a bad message. With
/// reads of at most [`ITEM_MAX`], the answer stays well under a
/// message's limit.
pub const TAKEN_MAX: usize = 256;

/// One message of `items`, in order.
pub fn join(items: &[Bytes]) -> Bytes {
    let len = 1 + items.iter().map(|i| 4 + i.len()).sum::<usize>();
    let mut b = BytesMut::with_capacity(len);
    b.put_u8(BATCH);
    for i in items {
        b.put_u32_le(i.len() as u32);
        b.extend_from_slice(i);
    }
    b.freeze()
}

/// Whether `b` is a batch.
pub fn is_batch(b: &[u8]) -> bool {
    b.first() == Some(&BATCH)
}

/// The messages of batch `b`, each a slice of it.
pub fn split(b: &Bytes) -> Result<Vec<Bytes>, String> {
    if !is_batch(b) {
        return Err("bad tree message: not a batch".into());
    }
    let mut items = Vec::new();
    let mut at = 1;
    while at < b.len() {
        let len = b
            .get(at..at + 4)
            .and_then(|l| <[u8; 4]>::try_from(l).ok())
            .map(|l| u32::from_le_bytes(l) as usize)
            .ok_or("bad tree message: a batch cut in a length")?;
        let end =
            (at + 4).checked_add(len).filter(|&e| e <= b.len()).ok_or("bad tree message: a batch cut in a message")?;
        if items.len() == TAKEN_MAX {
            return Err(format!("bad tree message: a batch of more than {TAKEN_MAX}"));
        }
        items.push(b.slice(at + 4..end));
        at = end;
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_splits_into_what_was_joined() {
        let items = vec![Bytes::from_static(b"\0abc"), Bytes::new(), Bytes::from(vec![7u8; 70_000])];
        let b = join(&items);
        assert!(is_batch(&b));
        assert_eq!(split(&b).unwrap(), items);
        assert_eq!(split(&join(&[])).unwrap(), Vec::<Bytes>::new());
    }

    #[test]
    fn a_bad_batch_is_an_error_naming_what_is_wrong() {
        let b = join(&[Bytes::from_static(b"hello")]);
        for cut in 2..b.len() {
            let e = split(&b.slice(..cut)).unwrap_err();
            assert!(e.starts_with("bad tree message: a batch cut"), "{cut}: {e}");
        }
        assert!(split(&Bytes::from_static(b"\0")).unwrap_err().contains("not a batch"));
        let mut many = BytesMut::new();
        many.put_u8(BATCH);
        for _ in 0..=TAKEN_MAX {
            many.put_u32_le(0);
        }
        assert!(split(&many.freeze()).unwrap_err().contains(&format!("more than {TAKEN_MAX}")));
    }
}
