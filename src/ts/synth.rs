//! A synthetic, well-formed transport stream for tests, benches and fuzz seeds: one program
//! (H.264 video carrying the PCR, AAC audio), PAT and PMT repeated, null packets mixed in,
//! continuity counters correct. Generating packets does not allocate, so it can feed
//! allocation-counting tests and benchmarks directly.

use super::packet::{NULL_PID, PACKET_LEN, SYNC_BYTE};
use super::psi::crc32_mpeg2;

pub const PMT_PID: u16 = 0x1000;
pub const VIDEO_PID: u16 = 0x100;
pub const AUDIO_PID: u16 = 0x101;
pub const PROGRAM: u16 = 1;
pub const TRANSPORT_STREAM_ID: u16 = 1;

/// PAT and PMT once every this many packets.
const PSI_EVERY: u64 = 200;
/// A null packet once every this many packets.
const NULL_EVERY: u64 = 50;
/// A PCR on every this many video packets.
const PCR_EVERY: u64 = 20;

pub struct StreamGen {
    n: u64,
    video_packets: u64,
    /// CC per PID: PAT, PMT, video, audio.
    cc: [u8; 4],
    pat: [u8; PACKET_LEN],
    pmt: [u8; PACKET_LEN],
}

impl Default for StreamGen {
    fn default() -> Self {
        Self::new()
    }
}

fn header(p: &mut [u8; PACKET_LEN], pid: u16, pusi: bool, afc: u8, cc: u8) {
    p[0] = SYNC_BYTE;
    p[1] = u8::from(pusi) << 6 | (pid >> 8) as u8 & 0x1F;
    p[2] = pid as u8;
    p[3] = afc << 4 | cc & 0x0F;
}

/// One section in one packet, pointer_field 0, 0xFF stuffing.
fn psi_packet(pid: u16, table_id: u8, ext: u16, body: &[u8]) -> [u8; PACKET_LEN] {
    let mut p = [0xFF; PACKET_LEN];
    header(&mut p, pid, true, 1, 0);
    p[4] = 0; // pointer_field
    let section_length = 5 + body.len() + 4;
    let s = &mut p[5..];
    s[0] = table_id;
    s[1] = 0xB0 | (section_length >> 8) as u8;
    s[2] = section_length as u8;
    s[3..5].copy_from_slice(&ext.to_be_bytes());
    s[5] = 0xC1; // version 0, current
    s[6] = 0;
    s[7] = 0;
    s[8..8 + body.len()].copy_from_slice(body);
    let end = 8 + body.len();
    let crc = crc32_mpeg2(&s[..end]);
    s[end..end + 4].copy_from_slice(&crc.to_be_bytes());
    p
}

impl StreamGen {
    pub fn new() -> Self {
        let [pn0, pn1] = PROGRAM.to_be_bytes();
        let [pp0, pp1] = (0xE000 | PMT_PID).to_be_bytes();
        let pat = psi_packet(0, 0x00, TRANSPORT_STREAM_ID, &[pn0, pn1, pp0, pp1]);
        let [v0, v1] = (0xE000 | VIDEO_PID).to_be_bytes();
        let [a0, a1] = (0xE000 | AUDIO_PID).to_be_bytes();
        let pmt_body = [
            v0, v1, 0xF0, 0x00, // PCR PID, no program info
            0x1B, v0, v1, 0xF0, 0x00, // H.264
            0x0F, a0, a1, 0xF0, 0x00, // AAC
        ];
        let pmt = psi_packet(PMT_PID, 0x02, PROGRAM, &pmt_body);
        StreamGen {
            n: 0,
            video_packets: 0,
            cc: [0; 4],
            pat,
            pmt,
        }
    }

    /// Packets generated so far.
    pub fn packets(&self) -> u64 {
        self.n
    }

    fn bump(&mut self, i: usize) -> u8 {
        let cc = self.cc[i];
        self.cc[i] = (cc + 1) & 0x0F;
        cc
    }

    /// Write the next packet into `out`.
    pub fn next_packet(&mut self, out: &mut [u8; PACKET_LEN]) {
        let n = self.n;
        self.n += 1;
        match n % PSI_EVERY {
            0 => {
                *out = self.pat;
                out[3] |= self.bump(0);
                return;
            }
            1 => {
                *out = self.pmt;
                out[3] |= self.bump(1);
                return;
            }
            _ => {}
        }
        if n % NULL_EVERY == 2 {
            out.fill(0xFF);
            header(out, NULL_PID, false, 1, 0);
            return;
        }
        // Payload bytes vary with n and include stray sync bytes, like real ES data.
        out.fill(n as u8);
        out[100] = SYNC_BYTE;
        if n % 4 == 3 {
            let cc = self.bump(3);
            header(out, AUDIO_PID, n % 32 == 3, 1, cc);
            return;
        }
        let cc = self.bump(2);
        let with_pcr = self.video_packets.is_multiple_of(PCR_EVERY);
        self.video_packets += 1;
        if with_pcr {
            header(out, VIDEO_PID, true, 3, cc);
            out[4] = 7; // adaptation_field_length: flags + PCR
            out[5] = 0x50; // random access + PCR
            // 27 MHz clock advancing ~1 ms per PCR packet.
            let pcr = self.video_packets * 27_000;
            let base = pcr / 300;
            let ext = pcr % 300;
            let v = (base & 0x1_FFFF_FFFF) << 15 | 0x3F << 9 | ext;
            out[6..12].copy_from_slice(&v.to_be_bytes()[2..8]);
        } else {
            header(out, VIDEO_PID, false, 1, cc);
        }
    }

    /// Fill `out` with as many whole packets as fit; returns the bytes written.
    pub fn fill(&mut self, out: &mut [u8]) -> usize {
        let mut written = 0;
        for chunk in out.chunks_exact_mut(PACKET_LEN) {
            if let Ok(p) = <&mut [u8; PACKET_LEN]>::try_from(chunk) {
                self.next_packet(p);
                written += PACKET_LEN;
            }
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::super::analyzer::TsAnalyzer;
    use super::*;

    #[test]
    fn generated_stream_is_clean_and_described() {
        let mut g = StreamGen::new();
        let mut buf = vec![0u8; 1000 * PACKET_LEN];
        assert_eq!(g.fill(&mut buf), buf.len());
        let mut a = TsAnalyzer::new();
        a.feed(&buf);
        let i = a.info();
        assert_eq!(i.packets, 1000);
        assert_eq!((i.cc_errors, i.bad_crcs, i.malformed), (0, 0, 0));
        assert_eq!(i.null_packets, 20);
        assert!(i.pcr_count > 30);
        assert_eq!(i.programs.len(), 1);
        let p = &i.programs[0];
        assert_eq!(
            (p.number, p.pmt_pid, p.pcr_pid),
            (PROGRAM, PMT_PID, VIDEO_PID)
        );
        let kinds: Vec<_> = p.streams.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, ["h264", "aac"]);
    }
}
