//! Top-level MP4 box headers, read as the bytes stream past.
//!
//! The display checks that what it records is MP4 (it starts with `ftyp`,
//! box headers are sane) and counts fragments (`moof` boxes) without
//! holding more than one header: payloads are skipped by length, across
//! message boundaries.

/// Reads the top-level box structure of a stream, chunk by chunk.
#[derive(Debug, Default)]
pub(crate) struct BoxScanner {
    hdr: [u8; 16],
    have: usize,
    /// Payload bytes of the current box still to pass.
    skip: u64,
    boxes: u64,
}

impl BoxScanner {
    pub(crate) fn new() -> BoxScanner {
        BoxScanner::default()
    }

    /// Takes the next chunk; returns how many `moof` boxes began in it.
    pub(crate) fn push(&mut self, mut data: &[u8]) -> Result<u64, String> {
        let mut moofs = 0;
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len() as u64);
                self.skip -= n;
                data = &data[n as usize..];
                continue;
            }
            // Gather the 8-byte header, or 16 bytes with a 64-bit size.
            let want = if self.have >= 8 && be32(&self.hdr[..4]) == 1 { 16 } else { 8 };
            let n = (want - self.have).min(data.len());
            self.hdr[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < want || (want == 8 && be32(&self.hdr[..4]) == 1) {
                continue;
            }
            let kind = &self.hdr[4..8];
            if !kind.iter().all(|c| (0x20..0x7f).contains(c)) {
                return Err(format!("not MP4: box type {:02x?}", kind));
            }
            if self.boxes == 0 && kind != b"ftyp" {
                return Err(format!("not MP4: starts with {:?}, not \"ftyp\"", String::from_utf8_lossy(kind)));
            }
            let size = match be32(&self.hdr[..4]) {
                1 => u64::from_be_bytes(self.hdr[8..16].try_into().unwrap_or_default()),
                // "To the end of the file" has no end in a stream.
                0 => return Err("box of unknown length in a stream".into()),
                n => n as u64,
            };
            if size < want as u64 {
                return Err(format!("box {:?} of {size} bytes", String::from_utf8_lossy(kind)));
            }
            if kind == b"moof" {
                moofs += 1;
            }
            self.boxes += 1;
            self.skip = size - want as u64;
            self.have = 0;
        }
        Ok(moofs)
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], payload: usize) -> Vec<u8> {
        let mut v = ((8 + payload) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.resize(8 + payload, 0xaa);
        v
    }

    #[test]
    fn counts_fragments_across_any_split() {
        let mut stream = bx(b"ftyp", 12);
        stream.extend(bx(b"moov", 100));
        for _ in 0..3 {
            stream.extend(bx(b"moof", 40));
            stream.extend(bx(b"mdat", 300));
        }
        // A 64-bit size box.
        stream.extend(1u32.to_be_bytes());
        stream.extend(b"mdat");
        stream.extend(20u64.to_be_bytes());
        stream.extend([0u8; 4]);
        for step in [1, 3, 7, 64, stream.len()] {
            let mut s = BoxScanner::new();
            let n: u64 = stream.chunks(step).map(|c| s.push(c).unwrap()).sum();
            assert_eq!(n, 3, "chunks of {step}");
            assert_eq!((s.have, s.skip), (0, 0));
        }
    }

    #[test]
    fn rejects_what_is_not_mp4() {
        assert!(BoxScanner::new().push(b"hello, world, this is text").is_err());
        assert!(BoxScanner::new().push(&bx(b"moov", 4)).is_err());
        let mut tiny = bx(b"ftyp", 0);
        tiny[3] = 4;
        assert!(BoxScanner::new().push(&tiny).is_err());
        let mut s = BoxScanner::new();
        s.push(&bx(b"ftyp", 4)).unwrap();
        assert!(s.push(&[0, 0, 0, 0, b'm', b'd', b'a', b't']).is_err());
    }
}
