//! Program-specific information (ISO/IEC 13818-1 2.4.4): reassembling sections from TS
//! payloads, the MPEG-2 CRC, and no-panic views of the PAT and PMT.
//!
//! Nothing here allocates after construction: the assembler owns one fixed buffer of the
//! largest PAT/PMT section, and the table views borrow the section bytes.

/// The largest PAT or PMT section: 3 header bytes plus a section_length of at most 1021.
pub const MAX_SECTION: usize = 1024;
/// Table ids this module understands.
pub const TABLE_PAT: u8 = 0x00;
pub const TABLE_PMT: u8 = 0x02;

/// Why a section (or the payload carrying it) was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionError {
    /// A payload with payload_unit_start_indicator set but no pointer_field.
    MissingPointer,
    /// pointer_field points past the end of the payload.
    PointerOverrun(u8),
    /// A new section started before the previous one was complete: bytes were lost.
    Interrupted,
    /// section_length larger than a PAT/PMT may be (at most 1021).
    TooLong(u16),
    /// The section is shorter than its header and CRC, or its section_length disagrees with
    /// the bytes that make it up.
    BadLength,
    /// section_syntax_indicator is 0: not a long-form table section.
    NotLongForm,
    /// CRC_32 does not check out.
    BadCrc,
    /// A table's inner loop (program info, ES info) overruns the section.
    Truncated,
}

impl std::fmt::Display for SectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SectionError::MissingPointer => f.write_str("section start without pointer_field"),
            SectionError::PointerOverrun(p) => write!(f, "pointer_field {p} overruns payload"),
            SectionError::Interrupted => f.write_str("section cut short by the next one"),
            SectionError::TooLong(n) => write!(f, "section_length {n} exceeds 1021"),
            SectionError::BadLength => f.write_str("section length inconsistent"),
            SectionError::NotLongForm => f.write_str("section_syntax_indicator is 0"),
            SectionError::BadCrc => f.write_str("section CRC_32 mismatch"),
            SectionError::Truncated => f.write_str("table loop overruns the section"),
        }
    }
}

impl std::error::Error for SectionError {}

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04C1_1DB7
            } else {
                c << 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32/MPEG-2: polynomial 0x04C11DB7, initial 0xFFFFFFFF, not reflected, no final XOR.
/// (crc32fast implements the reflected IEEE variant, which is a different CRC.) Over a whole
/// section including its CRC_32 field the result is 0.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    data.iter().fold(0xFFFF_FFFF, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ b)]
    })
}

fn section_length(b1: u8, b2: u8) -> u16 {
    u16::from(b1 & 0x0F) << 8 | u16::from(b2)
}

/// A complete long-form section whose length and CRC have been checked.
#[derive(Debug, Clone, Copy)]
pub struct Section<'a> {
    bytes: &'a [u8],
}

impl<'a> Section<'a> {
    /// Header (8) + CRC (4): the shortest long-form section.
    const MIN_LEN: usize = 12;

    pub fn new(bytes: &'a [u8]) -> Result<Self, SectionError> {
        if bytes.len() < Self::MIN_LEN {
            return Err(SectionError::BadLength);
        }
        if bytes[1] & 0x80 == 0 {
            return Err(SectionError::NotLongForm);
        }
        if 3 + usize::from(section_length(bytes[1], bytes[2])) != bytes.len() {
            return Err(SectionError::BadLength);
        }
        if crc32_mpeg2(bytes) != 0 {
            return Err(SectionError::BadCrc);
        }
        Ok(Section { bytes })
    }

    pub fn table_id(&self) -> u8 {
        self.bytes[0]
    }

    /// transport_stream_id in a PAT, program_number in a PMT.
    pub fn table_id_extension(&self) -> u16 {
        u16::from_be_bytes([self.bytes[3], self.bytes[4]])
    }

    pub fn version(&self) -> u8 {
        (self.bytes[5] >> 1) & 0x1F
    }

    /// current_next_indicator: 0 means "the next table", not yet in force.
    pub fn current(&self) -> bool {
        self.bytes[5] & 0x01 != 0
    }

    pub fn section_number(&self) -> u8 {
        self.bytes[6]
    }

    pub fn last_section_number(&self) -> u8 {
        self.bytes[7]
    }

    /// The table body: after the 8-byte header, before the CRC.
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[8..self.bytes.len() - 4]
    }

    /// PAT entries as (program_number, PID); program 0 names the network PID. A trailing
    /// partial entry is ignored.
    pub fn pat_entries(&self) -> impl Iterator<Item = (u16, u16)> + 'a {
        self.body().chunks_exact(4).map(|e| {
            (
                u16::from_be_bytes([e[0], e[1]]),
                u16::from_be_bytes([e[2] & 0x1F, e[3]]),
            )
        })
    }

    /// View the section as a PMT.
    pub fn pmt(&self) -> Result<Pmt<'a>, SectionError> {
        let body = self.body();
        let head = body.get(..4).ok_or(SectionError::Truncated)?;
        let pcr_pid = u16::from_be_bytes([head[0] & 0x1F, head[1]]);
        let info_len = usize::from(section_length(head[2], head[3]));
        let info_end = 4 + info_len;
        let program_info = body.get(4..info_end).ok_or(SectionError::Truncated)?;
        let es = &body[info_end..];
        // Walk once so a truncated loop is an error here rather than a silently short list.
        let mut rest = es;
        while !rest.is_empty() {
            let n = rest.get(3..5).ok_or(SectionError::Truncated)?;
            let len = 5 + usize::from(section_length(n[0], n[1]));
            rest = rest.get(len..).ok_or(SectionError::Truncated)?;
        }
        Ok(Pmt {
            pcr_pid,
            program_info,
            es,
        })
    }
}

/// A PMT body (ISO/IEC 13818-1 2.4.4.8) whose elementary stream loop is known to be whole.
#[derive(Debug, Clone, Copy)]
pub struct Pmt<'a> {
    pub pcr_pid: u16,
    pub program_info: &'a [u8],
    es: &'a [u8],
}

/// One elementary stream of a PMT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmtStream<'a> {
    pub stream_type: u8,
    pub pid: u16,
    pub descriptors: &'a [u8],
}

impl<'a> Pmt<'a> {
    pub fn streams(&self) -> impl Iterator<Item = PmtStream<'a>> + 'a {
        let mut rest = self.es;
        std::iter::from_fn(move || {
            let h = rest.get(..5)?;
            let len = usize::from(section_length(h[3], h[4]));
            let descriptors = rest.get(5..5 + len)?;
            let s = PmtStream {
                stream_type: h[0],
                pid: u16::from_be_bytes([h[1] & 0x1F, h[2]]),
                descriptors,
            };
            rest = &rest[5 + len..];
            Some(s)
        })
    }
}

/// (tag, body) pairs of a descriptor loop; stops at a truncated descriptor.
pub fn descriptors(mut d: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&tag, rest) = d.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let body = rest.get(..usize::from(len))?;
        d = &rest[usize::from(len)..];
        Some((tag, body))
    })
}

/// A short human name for an elementary stream, from its stream_type and, for the generic
/// "PES private data" type 0x06 (how DVB carries AC-3, subtitles and teletext), from its
/// descriptors.
pub fn stream_kind(stream_type: u8, descriptors_bytes: &[u8]) -> &'static str {
    match stream_type {
        0x01 => "mpeg1-video",
        0x02 => "mpeg2-video",
        0x03 | 0x04 => "mpeg-audio",
        0x05 => "private-sections",
        0x06 => private_kind(descriptors_bytes),
        0x0F => "aac",
        0x10 => "mpeg4-video",
        0x11 => "aac-latm",
        0x15 => "metadata",
        0x1B => "h264",
        0x24 => "h265",
        0x81 => "ac3",
        0x86 => "scte35",
        0x87 => "eac3",
        0x80..=0xFF => "private",
        _ => "other",
    }
}

fn private_kind(d: &[u8]) -> &'static str {
    for (tag, body) in descriptors(d) {
        let kind = match tag {
            // registration_descriptor: a format_identifier from the SMPTE-RA.
            0x05 => match body.get(..4) {
                Some(b"AC-3") => "ac3",
                Some(b"EAC3") => "eac3",
                Some(b"Opus") => "opus",
                Some(b"KLVA") => "klv",
                Some(b"HEVC") => "h265",
                _ => continue,
            },
            0x56 => "teletext",
            0x59 => "dvb-subtitle",
            0x6A => "ac3",
            0x7A => "eac3",
            0x7B => "dts",
            0x7C => "aac",
            _ => continue,
        };
        return kind;
    }
    "private"
}

/// Reassembles PSI sections of one PID from consecutive TS payloads, in a fixed buffer.
pub struct SectionAssembler {
    buf: Box<[u8; MAX_SECTION]>,
    len: usize,
    active: bool,
}

impl Default for SectionAssembler {
    fn default() -> Self {
        Self::new()
    }
}

impl SectionAssembler {
    pub fn new() -> Self {
        SectionAssembler {
            buf: Box::new([0; MAX_SECTION]),
            len: 0,
            active: false,
        }
    }

    /// Drop any section in progress (after a continuity error, its bytes are suspect).
    pub fn reset(&mut self) {
        self.len = 0;
        self.active = false;
    }

    /// Take one TS payload. Calls `on_section` with each complete section (not yet CRC
    /// checked). On an error the section in progress is dropped, but sections completed
    /// earlier in the same payload have already been delivered.
    pub fn push(
        &mut self,
        payload: &[u8],
        pusi: bool,
        mut on_section: impl FnMut(&[u8]),
    ) -> Result<(), SectionError> {
        let mut interrupted = false;
        match self.push_inner(payload, pusi, &mut on_section, &mut interrupted) {
            Err(e) => {
                self.reset();
                Err(e)
            }
            // The lost section is reported, but the one that started after it goes on.
            Ok(()) if interrupted => Err(SectionError::Interrupted),
            Ok(()) => Ok(()),
        }
    }

    fn push_inner(
        &mut self,
        payload: &[u8],
        pusi: bool,
        on_section: &mut impl FnMut(&[u8]),
        interrupted: &mut bool,
    ) -> Result<(), SectionError> {
        if !pusi {
            // Without a section start, bytes after a completed section are stuffing.
            if self.active && self.fill(payload)?.1 {
                on_section(&self.buf[..self.len]);
                self.reset();
            }
            return Ok(());
        }
        let (&ptr, rest) = payload.split_first().ok_or(SectionError::MissingPointer)?;
        let tail = rest
            .get(..usize::from(ptr))
            .ok_or(SectionError::PointerOverrun(ptr))?;
        if self.active {
            // The bytes before the new section finish the one in progress.
            if self.fill(tail)?.1 {
                on_section(&self.buf[..self.len]);
            } else {
                *interrupted = true;
            }
            self.reset();
        }
        let mut data = &rest[usize::from(ptr)..];
        // 0xFF where a table_id would be is stuffing up to the end of the packet.
        while data.first().is_some_and(|&t| t != 0xFF) {
            self.active = true;
            let (used, done) = self.fill(data)?;
            if !done {
                break; // continues in the next packet
            }
            on_section(&self.buf[..self.len]);
            self.reset();
            data = &data[used..];
        }
        Ok(())
    }

    /// Append what `data` holds of the section in progress. Returns the bytes used and
    /// whether the section is now complete.
    fn fill(&mut self, data: &[u8]) -> Result<(usize, bool), SectionError> {
        let mut used = 0;
        if self.len < 3 {
            let n = (3 - self.len).min(data.len());
            self.buf[self.len..self.len + n].copy_from_slice(&data[..n]);
            self.len += n;
            used = n;
            if self.len < 3 {
                return Ok((used, false));
            }
        }
        let sl = section_length(self.buf[1], self.buf[2]);
        let total = 3 + usize::from(sl);
        if total > MAX_SECTION {
            return Err(SectionError::TooLong(sl));
        }
        let n = (total - self.len).min(data.len() - used);
        self.buf[self.len..self.len + n].copy_from_slice(&data[used..used + n]);
        self.len += n;
        used += n;
        Ok((used, self.len == total))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A long-form section with a correct CRC.
    pub(crate) fn section(table_id: u8, ext: u16, version: u8, body: &[u8]) -> Vec<u8> {
        let section_length = 5 + body.len() + 4;
        let mut s = vec![
            table_id,
            0xB0 | (section_length >> 8) as u8,
            section_length as u8,
        ];
        s.extend_from_slice(&ext.to_be_bytes());
        s.push(0xC1 | (version & 0x1F) << 1);
        s.extend_from_slice(&[0, 0]);
        s.extend_from_slice(body);
        let crc = crc32_mpeg2(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        s
    }

    pub(crate) fn pat(tsid: u16, version: u8, programs: &[(u16, u16)]) -> Vec<u8> {
        let mut body = Vec::new();
        for &(n, pid) in programs {
            body.extend_from_slice(&n.to_be_bytes());
            body.extend_from_slice(&(0xE000 | pid).to_be_bytes());
        }
        section(TABLE_PAT, tsid, version, &body)
    }

    /// streams: (stream_type, pid, descriptors)
    pub(crate) fn pmt(
        program: u16,
        version: u8,
        pcr_pid: u16,
        streams: &[(u8, u16, &[u8])],
    ) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(0xE000 | pcr_pid).to_be_bytes());
        body.extend_from_slice(&[0xF0, 0x00]);
        for &(st, pid, d) in streams {
            body.push(st);
            body.extend_from_slice(&(0xE000 | pid).to_be_bytes());
            body.extend_from_slice(&(0xF000 | d.len() as u16).to_be_bytes());
            body.extend_from_slice(d);
        }
        section(TABLE_PMT, program, version, &body)
    }

    #[test]
    fn crc_check_value() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
        let s = pat(1, 0, &[(1, 0x100)]);
        assert_eq!(crc32_mpeg2(&s), 0);
    }

    #[test]
    fn pat_view() {
        let s = pat(0x1234, 5, &[(0, 0x10), (1, 0x100), (2, 0x200)]);
        let sec = Section::new(&s).unwrap();
        assert_eq!(sec.table_id(), TABLE_PAT);
        assert_eq!(sec.table_id_extension(), 0x1234);
        assert_eq!(sec.version(), 5);
        assert!(sec.current());
        assert_eq!((sec.section_number(), sec.last_section_number()), (0, 0));
        let e: Vec<_> = sec.pat_entries().collect();
        assert_eq!(e, [(0, 0x10), (1, 0x100), (2, 0x200)]);
    }

    #[test]
    fn section_errors() {
        let mut s = pat(1, 0, &[(1, 0x100)]);
        assert_eq!(Section::new(&s[..11]).unwrap_err(), SectionError::BadLength);
        assert_eq!(
            Section::new(&s[..s.len() - 1]).unwrap_err(),
            SectionError::BadLength
        );
        let last = s.len() - 1;
        s[last] ^= 1;
        assert_eq!(Section::new(&s).unwrap_err(), SectionError::BadCrc);
        s[1] &= 0x7F;
        assert_eq!(Section::new(&s).unwrap_err(), SectionError::NotLongForm);
    }

    #[test]
    fn pmt_view_and_kinds() {
        let ac3: &[u8] = &[0x6A, 1, 0];
        let reg: &[u8] = &[
            0x0A, 4, b'e', b'n', b'g', 0, 0x05, 4, b'O', b'p', b'u', b's',
        ];
        let s = pmt(
            1,
            3,
            0x101,
            &[
                (0x1B, 0x101, &[]),
                (0x0F, 0x102, &[]),
                (0x06, 0x103, ac3),
                (0x06, 0x104, reg),
                (0x06, 0x105, &[]),
            ],
        );
        let sec = Section::new(&s).unwrap();
        let p = sec.pmt().unwrap();
        assert_eq!(p.pcr_pid, 0x101);
        assert!(p.program_info.is_empty());
        let kinds: Vec<_> = p
            .streams()
            .map(|s| (s.pid, stream_kind(s.stream_type, s.descriptors)))
            .collect();
        assert_eq!(
            kinds,
            [
                (0x101, "h264"),
                (0x102, "aac"),
                (0x103, "ac3"),
                (0x104, "opus"),
                (0x105, "private")
            ]
        );
        assert_eq!(stream_kind(0x24, &[]), "h265");
        assert_eq!(stream_kind(0x02, &[]), "mpeg2-video");
        assert_eq!(stream_kind(0x03, &[]), "mpeg-audio");
        assert_eq!(stream_kind(0x81, &[]), "ac3");
        assert_eq!(stream_kind(0xC0, &[]), "private");
        assert_eq!(stream_kind(0x30, &[]), "other");
    }

    #[test]
    fn pmt_with_overrunning_es_info_is_truncated() {
        // Claims 10 bytes of ES info but carries 2.
        let body = [0xE1, 0x00, 0xF0, 0x00, 0x1B, 0xE1, 0x00, 0xF0, 10, 1, 2];
        let s = section(TABLE_PMT, 1, 0, &body);
        assert_eq!(
            Section::new(&s).unwrap().pmt().unwrap_err(),
            SectionError::Truncated
        );
        let body = [0xE1, 0x00, 0xF0, 0x20];
        let s = section(TABLE_PMT, 1, 0, &body);
        assert_eq!(
            Section::new(&s).unwrap().pmt().unwrap_err(),
            SectionError::Truncated
        );
    }

    fn collect(
        a: &mut SectionAssembler,
        payload: &[u8],
        pusi: bool,
    ) -> (Vec<Vec<u8>>, Result<(), SectionError>) {
        let mut out = Vec::new();
        let r = a.push(payload, pusi, |s| out.push(s.to_vec()));
        (out, r)
    }

    #[test]
    fn assembler_single_packet_and_stuffing() {
        let mut a = SectionAssembler::new();
        let s = pat(1, 0, &[(1, 0x100)]);
        let mut p = vec![0u8];
        p.extend_from_slice(&s);
        p.resize(184, 0xFF);
        let (out, r) = collect(&mut a, &p, true);
        assert_eq!((out, r), (vec![s], Ok(())));
    }

    #[test]
    fn assembler_spans_packets_and_uses_pointer_field() {
        let mut a = SectionAssembler::new();
        let programs: Vec<(u16, u16)> = (1..=60).map(|i| (i, 0x100 + i)).collect();
        let s = pat(1, 0, &programs); // 8 + 240 + 4 = 252 bytes: two packets
        let next = pat(1, 1, &[(1, 0x100)]);
        let mut p1 = vec![0u8];
        p1.extend_from_slice(&s[..183]);
        let (out, r) = collect(&mut a, &p1, true);
        assert!(out.is_empty() && r.is_ok());
        // Second packet: the rest of the first section, then a new one (pointer_field says
        // where it starts), then stuffing.
        let rest = &s[183..];
        let mut p2 = vec![rest.len() as u8];
        p2.extend_from_slice(rest);
        p2.extend_from_slice(&next);
        p2.resize(184, 0xFF);
        let (out, r) = collect(&mut a, &p2, true);
        assert_eq!(out, vec![s.clone(), next]);
        assert!(r.is_ok());

        // Same section split across a PUSI packet and a continuation packet.
        let mut p1 = vec![0u8];
        p1.extend_from_slice(&s[..100]);
        assert!(collect(&mut a, &p1, true).0.is_empty());
        let mut p2 = s[100..].to_vec();
        p2.resize(184, 0xFF);
        assert_eq!(collect(&mut a, &p2, false).0, vec![s]);
    }

    #[test]
    fn assembler_header_split_across_packets() {
        let mut a = SectionAssembler::new();
        let s = pat(1, 0, &[(1, 0x100)]);
        // A section whose first 2 bytes end one packet.
        let mut p1 = vec![181u8];
        p1.extend_from_slice(&[0xFF; 181]);
        p1.extend_from_slice(&s[..2]);
        assert_eq!(p1.len(), 184);
        assert!(collect(&mut a, &p1, true).0.is_empty());
        let (out, r) = collect(&mut a, &s[2..], false);
        assert_eq!((out, r), (vec![s], Ok(())));
    }

    #[test]
    fn assembler_errors() {
        let mut a = SectionAssembler::new();
        assert_eq!(
            collect(&mut a, &[], true).1,
            Err(SectionError::MissingPointer)
        );
        assert_eq!(
            collect(&mut a, &[5, 0, 0], true).1,
            Err(SectionError::PointerOverrun(5))
        );
        // section_length 0xFFF
        assert_eq!(
            collect(&mut a, &[0, 0, 0xBF, 0xFF], true).1,
            Err(SectionError::TooLong(0xFFF))
        );
        // Continuation without a start is ignored.
        assert_eq!(collect(&mut a, &[1, 2, 3], false), (vec![], Ok(())));
        // A section interrupted by a new start.
        let s = pat(1, 0, &[(1, 0x100)]);
        let mut p = vec![0u8];
        p.extend_from_slice(&s[..5]);
        assert_eq!(collect(&mut a, &p, true), (vec![], Ok(())));
        let mut p = vec![0u8];
        p.extend_from_slice(&s);
        let (out, r) = collect(&mut a, &p, true);
        assert_eq!(out, vec![s]);
        assert_eq!(r, Err(SectionError::Interrupted));
    }
}
