//! RTP (RFC 3550) as used for MPEG-TS (RFC 2250, payload type 33): a no-panic header view,
//! a header writer, and receive-side sequence tracking.

pub const HEADER_LEN: usize = 12;
/// RTP payload type for MPEG-2 transport streams.
pub const PT_MP2T: u8 = 33;

/// What an RTP header says about where the payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub payload_type: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Offset of the payload in the datagram (after CSRCs and extension).
    pub payload_offset: usize,
    /// Payload length after removing padding.
    pub payload_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    TooShort,
    BadVersion(u8),
    BadLength,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::TooShort => f.write_str("datagram shorter than an RTP header"),
            HeaderError::BadVersion(v) => write!(f, "RTP version {v}, expected 2"),
            HeaderError::BadLength => f.write_str("CSRC/extension/padding longer than datagram"),
        }
    }
}

/// Parse the RTP header of `d`. Never panics.
pub fn parse(d: &[u8]) -> Result<Header, HeaderError> {
    if d.len() < HEADER_LEN {
        return Err(HeaderError::TooShort);
    }
    let version = d[0] >> 6;
    if version != 2 {
        return Err(HeaderError::BadVersion(version));
    }
    let padding = d[0] & 0x20 != 0;
    let extension = d[0] & 0x10 != 0;
    let csrc_count = usize::from(d[0] & 0x0F);
    let mut offset = HEADER_LEN + 4 * csrc_count;
    if extension {
        let ext = d.get(offset..offset + 4).ok_or(HeaderError::BadLength)?;
        offset += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    let mut end = d.len();
    if padding {
        let pad = usize::from(*d.last().ok_or(HeaderError::BadLength)?);
        end = end.checked_sub(pad).ok_or(HeaderError::BadLength)?;
    }
    if offset > end {
        return Err(HeaderError::BadLength);
    }
    Ok(Header {
        payload_type: d[1] & 0x7F,
        marker: d[1] & 0x80 != 0,
        seq: u16::from_be_bytes([d[2], d[3]]),
        timestamp: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
        ssrc: u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
        payload_offset: offset,
        payload_len: end - offset,
    })
}

/// Write a minimal 12-byte MP2T header.
pub fn write_header(buf: &mut [u8; HEADER_LEN], seq: u16, timestamp: u32, ssrc: u32) {
    buf[0] = 0x80;
    buf[1] = PT_MP2T;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&timestamp.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// Receive-side sequence accounting: packets lost (gaps) and packets out of order or
/// duplicated. A gap that is later filled counts once as lost and once as reordered, like
/// most receivers' simple counters; what matters to an operator is that either moves.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    highest: Option<u16>,
    pub lost: u64,
    pub reordered: u64,
    pub resets: u64,
}

/// A jump this large (either way) means the sender restarted, not a loss.
const MAX_GAP: u16 = 3000;

impl SeqTracker {
    /// Record `seq`; returns true when the packet is new and in order (or after a gap).
    pub fn record(&mut self, seq: u16) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return true;
        };
        let delta = seq.wrapping_sub(highest);
        if delta == 0 {
            self.reordered += 1;
            false
        } else if delta < 0x8000 {
            if delta > MAX_GAP {
                self.resets += 1;
            } else {
                self.lost += u64::from(delta - 1);
            }
            self.highest = Some(seq);
            true
        } else if highest.wrapping_sub(seq) > MAX_GAP {
            self.resets += 1;
            self.highest = Some(seq);
            true
        } else {
            self.reordered += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip() {
        let mut h = [0u8; HEADER_LEN];
        write_header(&mut h, 65535, 0xDEADBEEF, 7);
        let mut d = h.to_vec();
        d.extend_from_slice(&[0x47; 188]);
        let p = parse(&d).unwrap();
        assert_eq!(p.payload_type, PT_MP2T);
        assert_eq!(p.seq, 65535);
        assert_eq!(p.timestamp, 0xDEADBEEF);
        assert_eq!(p.ssrc, 7);
        assert_eq!((p.payload_offset, p.payload_len), (12, 188));
    }

    #[test]
    fn hostile_headers_are_errors() {
        assert_eq!(parse(&[0x80; 5]), Err(HeaderError::TooShort));
        assert_eq!(parse(&[0x40; 12]), Err(HeaderError::BadVersion(1)));
        // 15 CSRCs announced in a 12-byte datagram.
        let mut d = [0u8; 12];
        d[0] = 0x8F;
        assert_eq!(parse(&d), Err(HeaderError::BadLength));
        // Extension header missing.
        d[0] = 0x90;
        assert_eq!(parse(&d), Err(HeaderError::BadLength));
        // Padding longer than the datagram.
        let mut d = [0u8; 13];
        d[0] = 0xA0;
        d[12] = 200;
        assert_eq!(parse(&d), Err(HeaderError::BadLength));
    }

    #[test]
    fn extension_and_padding_are_skipped() {
        let mut d = vec![0x90 | 0x20, 33, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        d.extend_from_slice(&[0xBE, 0xDE, 0, 1, 1, 2, 3, 4]); // one-word extension
        d.extend_from_slice(&[0x47; 188]);
        d.extend_from_slice(&[0, 0, 3]); // 3 bytes padding
        let p = parse(&d).unwrap();
        assert_eq!((p.payload_offset, p.payload_len), (20, 188));
    }

    #[test]
    fn sequence_tracking_counts_loss_reorder_and_wrap() {
        let mut t = SeqTracker::default();
        for s in [65533u16, 65534, 65535, 0, 1] {
            assert!(t.record(s));
        }
        assert_eq!((t.lost, t.reordered), (0, 0));
        assert!(t.record(4)); // 2, 3 lost
        assert_eq!(t.lost, 2);
        assert!(!t.record(3)); // late
        assert!(!t.record(4)); // duplicate
        assert_eq!(t.reordered, 2);
        assert!(t.record(30_000)); // sender restart
        assert_eq!((t.lost, t.resets), (2, 1));
    }
}
