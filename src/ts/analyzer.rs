//! Per-flow TS analysis for stats: continuity errors, PCR and error counters, and the
//! PAT/PMT picture.
//!
//! `feed` runs on every packet of a flow, so in steady state it does not allocate: CC state
//! and PID roles are fixed 8 KiB tables, section buffers are allocated when a PID becomes a
//! PSI PID, and tables are only re-parsed (and their `Vec`s touched) when a version changes.

use serde::Serialize;

use super::continuity::{ContinuityTracker, Verdict};
use super::packet::{AdaptationControl, NULL_PID, PACKET_LEN, Packet};
use super::psi::{Section, SectionAssembler, SectionError, TABLE_PAT, TABLE_PMT, stream_kind};

/// Programs kept from the PAT. Memory stays bounded whatever a stream announces; real
/// multiplexes carry a few dozen at most. Extra programs are counted, not listed.
pub const MAX_PROGRAMS: usize = 64;
/// Elementary streams kept per PMT, for the same reason.
pub const MAX_STREAMS: usize = 32;

const PAT_PID: u16 = 0;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TsInfo {
    /// Packets fed, including null packets and damaged ones.
    pub packets: u64,
    pub cc_errors: u64,
    /// Packets with transport_error_indicator set (damaged before they reached us).
    pub transport_errors: u64,
    pub null_packets: u64,
    /// Packets with transport_scrambling_control other than 0.
    pub scrambled_packets: u64,
    /// Packets carrying a PCR (any PID).
    pub pcr_count: u64,
    /// PAT/PMT sections whose CRC_32 did not check out (the table was ignored).
    pub bad_crcs: u64,
    /// Packets or sections that break the syntax: reserved adaptation_field_control,
    /// overrunning adaptation field or pointer_field, truncated or overlong sections.
    pub malformed: u64,
    /// Programs the PAT listed beyond [`MAX_PROGRAMS`] (or streams beyond [`MAX_STREAMS`]).
    pub dropped_entries: u64,
    pub transport_stream_id: Option<u16>,
    pub pat_version: Option<u8>,
    pub programs: Vec<ProgramInfo>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ProgramInfo {
    pub number: u16,
    pub pmt_pid: u16,
    /// The null PID (8191) until the PMT has been seen, or when the program has no PCR.
    pub pcr_pid: u16,
    /// `None` until a PMT for this program has been parsed.
    pub pmt_version: Option<u8>,
    pub streams: Vec<StreamInfo>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StreamInfo {
    pub pid: u16,
    pub stream_type: u8,
    /// "h264", "h265", "aac", "mpeg2-video", "mpeg-audio", "ac3", "private", ...
    pub kind: &'static str,
}

/// Counters and tables: everything a section callback may update. Kept apart from the
/// section assemblers so a callback can borrow it while an assembler is borrowed.
#[derive(Default)]
struct Tables {
    info: TsInfo,
    /// Sections of the current PAT version already applied, by section_number.
    pat_sections: [u64; 4],
    /// The PAT changed: PMT PIDs must be re-registered once the packet is done.
    remap: bool,
}

pub struct TsAnalyzer {
    cc: ContinuityTracker,
    /// For each PID, 1 + the index of its section assembler, or 0 when it carries no PSI we
    /// follow. `MAX_PROGRAMS + 1` fits in a byte.
    psi_index: Box<[u8; 8192]>,
    /// (PID, assembler); index 0 is the PAT's. Entries past `active` are kept for reuse.
    assemblers: Vec<(u16, SectionAssembler)>,
    active: usize,
    tables: Tables,
}

impl Default for TsAnalyzer {
    fn default() -> Self {
        Self::new()
    }
}

impl TsAnalyzer {
    pub fn new() -> Self {
        let mut psi_index = Box::new([0u8; 8192]);
        psi_index[usize::from(PAT_PID)] = 1;
        TsAnalyzer {
            cc: ContinuityTracker::new(),
            psi_index,
            assemblers: vec![(PAT_PID, SectionAssembler::new())],
            active: 1,
            tables: Tables::default(),
        }
    }

    /// Feed whole packets (a multiple of 188 bytes; a trailing partial packet is ignored).
    pub fn feed(&mut self, packets: &[u8]) {
        for raw in packets.chunks_exact(PACKET_LEN) {
            self.packet(raw);
        }
    }

    fn packet(&mut self, raw: &[u8]) {
        let t = &mut self.tables.info;
        t.packets += 1;
        let Some(p) = Packet::new(raw) else {
            t.malformed += 1;
            return;
        };
        if p.transport_error() {
            // PID, CC and everything else may be the damaged bits: don't let them poison
            // the continuity state of some other PID.
            t.transport_errors += 1;
            return;
        }
        let pid = p.pid();
        if pid == NULL_PID {
            t.null_packets += 1;
            return;
        }
        if p.adaptation_control() == AdaptationControl::Reserved {
            t.malformed += 1;
            return;
        }
        let Ok(af) = p.adaptation() else {
            t.malformed += 1;
            return;
        };
        if af.is_some_and(|a| a.pcr().is_some()) {
            t.pcr_count += 1;
        }
        let discontinuity = af.is_some_and(|a| a.discontinuity());
        let verdict = self.cc.check(pid, p.cc(), p.has_payload(), discontinuity);
        if verdict == Verdict::Error {
            t.cc_errors += 1;
        }
        if p.scrambling() != 0 {
            // PSI is never scrambled; a scrambled PSI PID is noise to the assembler.
            t.scrambled_packets += 1;
            return;
        }
        let idx = usize::from(self.psi_index[usize::from(pid)]);
        if idx == 0 || verdict == Verdict::Duplicate {
            return;
        }
        let Some(payload) = p.payload() else {
            return;
        };
        let Some((_, asm)) = self.assemblers.get_mut(idx - 1) else {
            return;
        };
        if verdict == Verdict::Error {
            // Packets were lost: the section in progress has a hole in it.
            asm.reset();
        }
        let tables = &mut self.tables;
        let r = asm.push(payload, p.pusi(), |s| tables.section(pid, s));
        if r.is_err() {
            tables.info.malformed += 1;
        }
        if self.tables.remap {
            self.remap();
        }
    }

    /// Point the section assemblers at the PMT PIDs of the current PAT.
    fn remap(&mut self) {
        self.tables.remap = false;
        for (pid, asm) in &mut self.assemblers[1..self.active] {
            self.psi_index[usize::from(*pid)] = 0;
            asm.reset();
        }
        self.active = 1;
        for prog in &self.tables.info.programs {
            let pid = prog.pmt_pid;
            // A PID already followed (several programs may share a PMT PID), the PAT's own
            // PID, or the null PID get no new assembler.
            if pid == NULL_PID || self.psi_index[usize::from(pid)] != 0 {
                continue;
            }
            if self.active == self.assemblers.len() {
                self.assemblers.push((pid, SectionAssembler::new()));
            } else {
                self.assemblers[self.active].0 = pid;
            }
            self.active += 1;
            self.psi_index[usize::from(pid)] = self.active as u8;
        }
    }

    pub fn cc_errors(&self) -> u64 {
        self.tables.info.cc_errors
    }

    pub fn info(&self) -> TsInfo {
        self.tables.info.clone()
    }
}

impl Tables {
    fn section(&mut self, pid: u16, bytes: &[u8]) {
        let section = match Section::new(bytes) {
            Ok(s) => s,
            Err(SectionError::BadCrc) => {
                self.info.bad_crcs += 1;
                return;
            }
            Err(_) => {
                self.info.malformed += 1;
                return;
            }
        };
        // A table marked "next" is announced ahead of time; it takes effect when it is
        // resent as current.
        if !section.current() {
            return;
        }
        match (pid, section.table_id()) {
            (PAT_PID, TABLE_PAT) => self.pat(section),
            (PAT_PID, _) => {}
            (_, TABLE_PMT) => self.pmt(pid, section),
            // Other tables share PMT PIDs in some streams; they are not ours to judge.
            _ => {}
        }
    }

    fn pat(&mut self, s: Section<'_>) {
        let info = &mut self.info;
        let (version, tsid, n) = (s.version(), s.table_id_extension(), s.section_number());
        let bit = 1u64 << (n % 64);
        let word = usize::from(n / 64);
        let same = info.pat_version == Some(version) && info.transport_stream_id == Some(tsid);
        if same && self.pat_sections[word] & bit != 0 {
            return; // unchanged: the common case, a few times a second
        }
        if !same {
            info.pat_version = Some(version);
            info.transport_stream_id = Some(tsid);
            info.programs.clear();
            self.pat_sections = [0; 4];
        }
        self.pat_sections[word] |= bit;
        for (number, pmt_pid) in s.pat_entries() {
            // Program 0 points at the network information table, not a program.
            if number == 0 || info.programs.iter().any(|p| p.number == number) {
                continue;
            }
            if info.programs.len() == MAX_PROGRAMS {
                info.dropped_entries += 1;
                continue;
            }
            info.programs.push(ProgramInfo {
                number,
                pmt_pid,
                pcr_pid: NULL_PID,
                pmt_version: None,
                streams: Vec::new(),
            });
        }
        self.remap = true;
    }

    fn pmt(&mut self, pid: u16, s: Section<'_>) {
        let info = &mut self.info;
        let number = s.table_id_extension();
        let Some(prog) = info
            .programs
            .iter_mut()
            .find(|p| p.number == number && p.pmt_pid == pid)
        else {
            return; // a PMT the PAT does not list
        };
        if prog.pmt_version == Some(s.version()) {
            return;
        }
        let pmt = match s.pmt() {
            Ok(p) => p,
            Err(_) => {
                info.malformed += 1;
                return;
            }
        };
        prog.pcr_pid = pmt.pcr_pid;
        prog.pmt_version = Some(s.version());
        prog.streams.clear();
        for es in pmt.streams() {
            if prog.streams.len() == MAX_STREAMS {
                info.dropped_entries += 1;
                continue;
            }
            prog.streams.push(StreamInfo {
                pid: es.pid,
                stream_type: es.stream_type,
                kind: stream_kind(es.stream_type, es.descriptors),
            });
        }
    }
}

/// Builders for well-formed streams, shared by the unit tests here and elsewhere in `ts`.
#[cfg(test)]
pub(crate) mod testgen {
    use super::super::packet::{PACKET_LEN, SYNC_BYTE};

    /// Split a PSI section into packets on `pid` (pointer_field 0, 0xFF stuffing),
    /// numbering them from `*cc`.
    pub fn psi_packets(pid: u16, section: &[u8], cc: &mut u8) -> Vec<u8> {
        let mut out = Vec::new();
        let mut data = vec![0u8];
        data.extend_from_slice(section);
        for (i, part) in data.chunks(184).enumerate() {
            let mut p = [0xFFu8; PACKET_LEN];
            p[0] = SYNC_BYTE;
            p[1] = (if i == 0 { 0x40 } else { 0 }) | (pid >> 8) as u8;
            p[2] = pid as u8;
            p[3] = 0x10 | *cc;
            *cc = (*cc + 1) & 0x0F;
            p[4..4 + part.len()].copy_from_slice(part);
            out.extend_from_slice(&p);
        }
        out
    }

    /// One payload-only packet on `pid` with CC `cc`.
    pub fn es_packet(pid: u16, cc: u8) -> [u8; PACKET_LEN] {
        let mut p = [0x55u8; PACKET_LEN];
        p[0] = SYNC_BYTE;
        p[1] = (pid >> 8) as u8 & 0x1F;
        p[2] = pid as u8;
        p[3] = 0x10 | (cc & 0x0F);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::super::packet::tests::packet;
    use super::super::psi::tests::{pat, pmt};
    use super::testgen::*;
    use super::*;

    fn pcr_packet(pid: u16, cc: u8, pcr_base: u64) -> [u8; PACKET_LEN] {
        let mut p = packet(pid, false, 2, cc, 0xFF);
        p[4] = 183;
        p[5] = 0x10;
        let v = pcr_base << 15 | 0x3F << 9;
        p[6..12].copy_from_slice(&v.to_be_bytes()[2..8]);
        p
    }

    /// PAT + PMT for one H.264/AAC program, then `n` packets of video and audio.
    fn stream(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut pat_cc, mut pmt_cc) = (0, 0);
        out.extend(psi_packets(0, &pat(7, 1, &[(1, 0x1000)]), &mut pat_cc));
        out.extend(psi_packets(
            0x1000,
            &pmt(1, 2, 0x100, &[(0x1B, 0x100, &[]), (0x0F, 0x101, &[])]),
            &mut pmt_cc,
        ));
        for i in 0..n {
            out.extend_from_slice(&es_packet(0x100 + (i % 2) as u16, (i / 2) as u8));
        }
        out
    }

    #[test]
    fn pat_and_pmt_give_the_program_picture() {
        let mut a = TsAnalyzer::new();
        a.feed(&stream(100));
        let info = a.info();
        assert_eq!(info.packets, 102);
        assert_eq!(info.cc_errors, 0);
        assert_eq!(info.transport_stream_id, Some(7));
        assert_eq!(info.pat_version, Some(1));
        assert_eq!(
            info.programs,
            vec![ProgramInfo {
                number: 1,
                pmt_pid: 0x1000,
                pcr_pid: 0x100,
                pmt_version: Some(2),
                streams: vec![
                    StreamInfo {
                        pid: 0x100,
                        stream_type: 0x1B,
                        kind: "h264"
                    },
                    StreamInfo {
                        pid: 0x101,
                        stream_type: 0x0F,
                        kind: "aac"
                    },
                ],
            }]
        );
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["programs"][0]["streams"][0]["kind"], "h264");
        assert_eq!(json["programs"][0]["pmt_pid"], 0x1000);
        assert_eq!(json["cc_errors"], 0);
    }

    #[test]
    fn psi_spanning_two_packets() {
        let programs: Vec<(u16, u16)> = (1..=50).map(|i| (i, 0x1000 + i)).collect();
        let section = pat(1, 0, &programs);
        let mut cc = 0;
        let pkts = psi_packets(0, &section, &mut cc);
        assert_eq!(pkts.len(), 2 * PACKET_LEN);
        let mut a = TsAnalyzer::new();
        a.feed(&pkts[..PACKET_LEN]);
        assert!(
            a.info().programs.is_empty(),
            "half a section is not a table"
        );
        a.feed(&pkts[PACKET_LEN..]);
        let info = a.info();
        assert_eq!(info.programs.len(), 50);
        assert_eq!(info.programs[49].pmt_pid, 0x1000 + 50);
        assert_eq!(info.programs[0].pcr_pid, NULL_PID);
        assert_eq!(info.programs[0].pmt_version, None);
    }

    #[test]
    fn lost_packet_inside_a_section_drops_it() {
        let programs: Vec<(u16, u16)> = (1..=100).map(|i| (i, 0x1000 + i)).collect();
        let section = pat(1, 0, &programs); // 412 bytes: three packets
        let mut cc = 0;
        let pkts = psi_packets(0, &section, &mut cc);
        let mut a = TsAnalyzer::new();
        a.feed(&pkts[..PACKET_LEN]);
        a.feed(&pkts[2 * PACKET_LEN..]);
        let info = a.info();
        assert_eq!(info.cc_errors, 1);
        assert!(info.programs.is_empty());
        assert_eq!(info.bad_crcs, 0, "the hole is noticed before the CRC");
    }

    #[test]
    fn bad_crc_is_counted_and_table_ignored() {
        let mut s = pat(1, 0, &[(1, 0x1000)]);
        let last = s.len() - 1;
        s[last] ^= 0x01;
        let mut cc = 0;
        let mut a = TsAnalyzer::new();
        a.feed(&psi_packets(0, &s, &mut cc));
        let info = a.info();
        assert_eq!(info.bad_crcs, 1);
        assert!(info.programs.is_empty());
        assert_eq!(info.pat_version, None);
    }

    #[test]
    fn version_change_replaces_programs_and_unchanged_is_not_reparsed() {
        let mut a = TsAnalyzer::new();
        let mut cc = 0;
        a.feed(&psi_packets(
            0,
            &pat(1, 0, &[(1, 0x1000), (2, 0x1001)]),
            &mut cc,
        ));
        let mut pcc = 0;
        a.feed(&psi_packets(
            0x1000,
            &pmt(1, 0, 0x100, &[(0x02, 0x100, &[])]),
            &mut pcc,
        ));
        assert_eq!(a.info().programs.len(), 2);
        assert_eq!(a.info().programs[0].streams[0].kind, "mpeg2-video");
        // Same PMT version with different content: not re-parsed (the version says "same").
        a.feed(&psi_packets(
            0x1000,
            &pmt(1, 0, 0x100, &[(0x1B, 0x100, &[])]),
            &mut pcc,
        ));
        assert_eq!(a.info().programs[0].streams[0].kind, "mpeg2-video");
        // New PMT version: re-parsed.
        a.feed(&psi_packets(
            0x1000,
            &pmt(1, 1, 0x100, &[(0x24, 0x100, &[])]),
            &mut pcc,
        ));
        assert_eq!(a.info().programs[0].streams[0].kind, "h265");
        // New PAT version drops program 2 and moves program 1's PMT.
        a.feed(&psi_packets(0, &pat(1, 1, &[(1, 0x1100)]), &mut cc));
        let info = a.info();
        assert_eq!(info.pat_version, Some(1));
        assert_eq!(info.programs.len(), 1);
        assert_eq!(info.programs[0].pmt_pid, 0x1100);
        assert!(info.programs[0].streams.is_empty());
        // The old PMT PID is no longer followed; the new one is.
        a.feed(&psi_packets(
            0x1000,
            &pmt(1, 5, 0x100, &[(0x03, 0x100, &[])]),
            &mut pcc,
        ));
        assert!(a.info().programs[0].streams.is_empty());
        let mut ncc = 0;
        a.feed(&psi_packets(
            0x1100,
            &pmt(1, 5, 0x200, &[(0x03, 0x200, &[])]),
            &mut ncc,
        ));
        assert_eq!(a.info().programs[0].streams[0].kind, "mpeg-audio");
        assert_eq!(a.info().programs[0].pcr_pid, 0x200);
        assert_eq!(a.info().cc_errors, 0);
    }

    #[test]
    fn counters_for_null_tei_scrambled_pcr_and_malformed() {
        let mut a = TsAnalyzer::new();
        let mut tei = es_packet(0x100, 5);
        tei[1] |= 0x80;
        let mut scr = es_packet(0x101, 0);
        scr[3] |= 0xC0;
        let reserved = packet(0x102, false, 0, 0, 0);
        let mut overrun = packet(0x103, false, 3, 0, 0);
        overrun[4] = 200;
        let mut bad_sync = es_packet(0x104, 0);
        bad_sync[0] = 0;
        for p in [
            es_packet(NULL_PID, 3),
            es_packet(NULL_PID, 9),
            tei,
            scr,
            reserved,
            overrun,
            bad_sync,
            pcr_packet(0x100, 0, 1234),
            pcr_packet(0x100, 0, 1235),
        ] {
            a.feed(&p);
        }
        let i = a.info();
        assert_eq!(i.packets, 9);
        assert_eq!(i.null_packets, 2);
        assert_eq!(i.transport_errors, 1);
        assert_eq!(i.scrambled_packets, 1);
        assert_eq!(i.malformed, 3);
        assert_eq!(i.pcr_count, 2);
        assert_eq!(i.cc_errors, 0);
    }

    #[test]
    fn cc_rules_through_the_analyzer() {
        let mut a = TsAnalyzer::new();
        let mut disc = packet(0x100, false, 3, 9, 0x55);
        disc[4] = 1;
        disc[5] = 0x80;
        let seq = [
            es_packet(0x100, 0),
            es_packet(0x100, 1),
            es_packet(0x100, 1),     // duplicate: fine
            pcr_packet(0x100, 1, 0), // adaptation only: CC stays
            es_packet(0x100, 2),
            es_packet(0x100, 4), // gap: error
            disc,                // discontinuity: new baseline
            es_packet(0x100, 10),
            es_packet(0x100, 10),
            es_packet(0x100, 10), // second duplicate: error
        ];
        for p in seq {
            a.feed(&p);
        }
        assert_eq!(a.cc_errors(), 2);
    }

    #[test]
    fn duplicate_psi_packet_is_not_assembled_twice() {
        let programs: Vec<(u16, u16)> = (1..=50).map(|i| (i, 0x1000 + i)).collect();
        let mut cc = 0;
        let pkts = psi_packets(0, &pat(1, 0, &programs), &mut cc);
        let mut a = TsAnalyzer::new();
        a.feed(&pkts[..PACKET_LEN]);
        a.feed(&pkts[..PACKET_LEN]);
        a.feed(&pkts[PACKET_LEN..]);
        let i = a.info();
        assert_eq!((i.cc_errors, i.malformed, i.bad_crcs), (0, 0, 0));
        assert_eq!(i.programs.len(), 50);
    }

    #[test]
    fn shared_pmt_pid_and_limits() {
        let mut programs: Vec<(u16, u16)> = vec![(1, 0x1000), (2, 0x1000)];
        programs.extend((3..=(MAX_PROGRAMS as u16 + 5)).map(|i| (i, 0x1000 + i)));
        let mut cc = 0;
        let mut a = TsAnalyzer::new();
        a.feed(&psi_packets(0, &pat(1, 0, &programs), &mut cc));
        let mut pcc = 0;
        for n in [1, 2] {
            a.feed(&psi_packets(
                0x1000,
                &pmt(n, 0, 0x100 + n, &[(0x1B, 0x100 + n, &[])]),
                &mut pcc,
            ));
        }
        let i = a.info();
        assert_eq!(i.programs.len(), MAX_PROGRAMS);
        assert_eq!(i.dropped_entries, 5);
        assert_eq!(i.programs[0].pcr_pid, 0x101);
        assert_eq!(i.programs[1].pcr_pid, 0x102);
    }
}
