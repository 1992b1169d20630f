//! A read-only view of one 188-byte TS packet (ISO/IEC 13818-1, 2.4.3.2). Parsing never
//! panics, whatever the bytes: every accessor either reads a byte that [`Packet::new`]
//! already proved is there, or goes through a bounds-checked `get`.

pub const PACKET_LEN: usize = 188;
pub const SYNC_BYTE: u8 = 0x47;
pub const NULL_PID: u16 = 0x1FFF;

/// Bytes before the adaptation field or payload: sync, flags+PID (2), flags+CC.
const HEADER_LEN: usize = 4;

/// The 2-bit adaptation_field_control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdaptationControl {
    /// `00`: reserved; decoders discard such packets.
    Reserved,
    /// `01`: payload only.
    PayloadOnly,
    /// `10`: adaptation field only, no payload (the CC does not advance).
    AdaptationOnly,
    /// `11`: adaptation field followed by payload.
    AdaptationAndPayload,
}

/// Why the adaptation field or payload of a packet cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// adaptation_field_control is `00`.
    ReservedAdaptationControl,
    /// adaptation_field_length (the value given) runs past the end of the packet, or leaves
    /// no room for the payload the control bits promise.
    AdaptationOverrun(u8),
}

impl std::fmt::Display for PacketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PacketError::ReservedAdaptationControl => {
                f.write_str("adaptation_field_control is the reserved value 00")
            }
            PacketError::AdaptationOverrun(n) => {
                write!(f, "adaptation_field_length {n} overruns the packet")
            }
        }
    }
}

impl std::error::Error for PacketError {}

#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    bytes: &'a [u8; PACKET_LEN],
}

impl<'a> Packet<'a> {
    /// A view over `bytes` if it is exactly one packet starting with the sync byte.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        let bytes: &[u8; PACKET_LEN] = bytes.try_into().ok()?;
        (bytes[0] == SYNC_BYTE).then_some(Packet { bytes })
    }

    /// The whole 188 bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// transport_error_indicator: some layer below (a demodulator, an FEC decoder) flagged
    /// this packet as damaged. Nothing else in it should be trusted.
    pub fn transport_error(&self) -> bool {
        self.bytes[1] & 0x80 != 0
    }

    pub fn pusi(&self) -> bool {
        self.bytes[1] & 0x40 != 0
    }

    pub fn transport_priority(&self) -> bool {
        self.bytes[1] & 0x20 != 0
    }

    pub fn pid(&self) -> u16 {
        u16::from(self.bytes[1] & 0x1F) << 8 | u16::from(self.bytes[2])
    }

    /// transport_scrambling_control: 0 is clear, 1..=3 scrambled (user-defined keys).
    pub fn scrambling(&self) -> u8 {
        self.bytes[3] >> 6
    }

    pub fn adaptation_control(&self) -> AdaptationControl {
        match (self.bytes[3] >> 4) & 0x03 {
            0 => AdaptationControl::Reserved,
            1 => AdaptationControl::PayloadOnly,
            2 => AdaptationControl::AdaptationOnly,
            _ => AdaptationControl::AdaptationAndPayload,
        }
    }

    /// Whether the control bits announce a payload (not whether it is well formed).
    pub fn has_payload(&self) -> bool {
        matches!(
            self.adaptation_control(),
            AdaptationControl::PayloadOnly | AdaptationControl::AdaptationAndPayload
        )
    }

    pub fn cc(&self) -> u8 {
        self.bytes[3] & 0x0F
    }

    /// The adaptation field, if the control bits say there is one. A length of 0 (legal with
    /// a payload, used as one stuffing byte) gives a field with no flags set.
    pub fn adaptation(&self) -> Result<Option<Adaptation<'a>>, PacketError> {
        let max = match self.adaptation_control() {
            AdaptationControl::Reserved => return Err(PacketError::ReservedAdaptationControl),
            AdaptationControl::PayloadOnly => return Ok(None),
            // 183 fills the packet; shorter is out of spec but harmless, so accept it.
            AdaptationControl::AdaptationOnly => PACKET_LEN - HEADER_LEN - 1,
            // At least one payload byte must remain.
            AdaptationControl::AdaptationAndPayload => PACKET_LEN - HEADER_LEN - 2,
        };
        let len = self.bytes[HEADER_LEN];
        if usize::from(len) > max {
            return Err(PacketError::AdaptationOverrun(len));
        }
        let start = HEADER_LEN + 1;
        Ok(Some(Adaptation {
            field: &self.bytes[start..start + usize::from(len)],
        }))
    }

    /// The payload bytes, or `None` when there is no payload or the adaptation field is
    /// malformed (a payload we cannot locate is no payload).
    pub fn payload(&self) -> Option<&'a [u8]> {
        let start = match self.adaptation_control() {
            AdaptationControl::PayloadOnly => HEADER_LEN,
            AdaptationControl::AdaptationAndPayload => {
                let af = self.adaptation().ok()??;
                HEADER_LEN + 1 + af.field.len()
            }
            AdaptationControl::Reserved | AdaptationControl::AdaptationOnly => return None,
        };
        self.bytes.get(start..)
    }
}

/// The adaptation field body (after adaptation_field_length), ISO/IEC 13818-1 2.4.3.4.
#[derive(Debug, Clone, Copy)]
pub struct Adaptation<'a> {
    field: &'a [u8],
}

impl<'a> Adaptation<'a> {
    /// The field bytes after adaptation_field_length (empty for a length of 0).
    pub fn bytes(&self) -> &'a [u8] {
        self.field
    }

    fn flags(&self) -> u8 {
        self.field.first().copied().unwrap_or(0)
    }

    /// discontinuity_indicator: the continuity counter (and/or the time base) restarts here,
    /// so a CC jump on this packet is not an error.
    pub fn discontinuity(&self) -> bool {
        self.flags() & 0x80 != 0
    }

    /// random_access_indicator: a decoder can start here (usually a video key frame).
    pub fn random_access(&self) -> bool {
        self.flags() & 0x40 != 0
    }

    pub fn es_priority(&self) -> bool {
        self.flags() & 0x20 != 0
    }

    /// The PCR as a 27 MHz count (base * 300 + extension), if flagged and wholly present.
    pub fn pcr(&self) -> Option<u64> {
        if self.flags() & 0x10 == 0 {
            return None;
        }
        self.field.get(1..7).map(read_pcr)
    }

    /// The OPCR as a 27 MHz count, if flagged and wholly present. It follows the PCR.
    pub fn opcr(&self) -> Option<u64> {
        if self.flags() & 0x08 == 0 {
            return None;
        }
        let at = if self.flags() & 0x10 != 0 { 7 } else { 1 };
        self.field.get(at..at + 6).map(read_pcr)
    }
}

/// 33-bit base at 90 kHz, 6 reserved bits, 9-bit extension at 27 MHz. `b` is 6 bytes.
fn read_pcr(b: &[u8]) -> u64 {
    let mut v = 0u64;
    for &x in b.iter().take(6) {
        v = v << 8 | u64::from(x);
    }
    let base = v >> 15;
    let ext = v & 0x1FF;
    base * 300 + ext
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A packet with the given header fields, payload bytes filled with `fill`.
    pub(crate) fn packet(pid: u16, pusi: bool, afc: u8, cc: u8, fill: u8) -> [u8; PACKET_LEN] {
        let mut p = [fill; PACKET_LEN];
        p[0] = SYNC_BYTE;
        p[1] = (u8::from(pusi) << 6) | (pid >> 8) as u8 & 0x1F;
        p[2] = pid as u8;
        p[3] = (afc & 3) << 4 | (cc & 0x0F);
        p
    }

    #[test]
    fn rejects_wrong_length_and_sync() {
        assert!(Packet::new(&[0x47; 187]).is_none());
        assert!(Packet::new(&[0x47; 189]).is_none());
        assert!(Packet::new(&[]).is_none());
        let mut p = packet(0x100, false, 1, 0, 0);
        p[0] = 0x48;
        assert!(Packet::new(&p).is_none());
    }

    #[test]
    fn header_fields() {
        let mut raw = packet(0x1ABC & 0x1FFF, true, 1, 9, 0xAA);
        raw[1] |= 0x80 | 0x20;
        raw[3] |= 0x80;
        let p = Packet::new(&raw).unwrap();
        assert_eq!(p.pid(), 0x1ABC);
        assert!(p.pusi() && p.transport_error() && p.transport_priority());
        assert_eq!(p.cc(), 9);
        assert_eq!(p.scrambling(), 2);
        assert_eq!(p.adaptation_control(), AdaptationControl::PayloadOnly);
        assert!(p.has_payload());
        assert!(p.adaptation().unwrap().is_none());
        assert_eq!(p.payload().unwrap().len(), 184);
        assert_eq!(p.bytes().len(), PACKET_LEN);

        let raw = packet(NULL_PID, false, 1, 0, 0xFF);
        let p = Packet::new(&raw).unwrap();
        assert_eq!(p.pid(), NULL_PID);
        assert!(!p.pusi() && !p.transport_error());
    }

    #[test]
    fn reserved_control_has_no_payload_and_is_an_error() {
        let raw = packet(0x100, false, 0, 0, 0);
        let p = Packet::new(&raw).unwrap();
        assert_eq!(p.adaptation_control(), AdaptationControl::Reserved);
        assert!(!p.has_payload());
        assert_eq!(
            p.adaptation().unwrap_err(),
            PacketError::ReservedAdaptationControl
        );
        assert!(p.payload().is_none());
    }

    #[test]
    fn adaptation_only_with_pcr() {
        let mut raw = packet(0x100, false, 2, 3, 0xFF);
        raw[4] = 183;
        raw[5] = 0x80 | 0x40 | 0x10; // discontinuity, random access, PCR
        // base = 0x1_2345_6789 (33 bits), ext = 0x155
        let base: u64 = 0x1_2345_6789;
        let ext: u64 = 0x155;
        let v = base << 15 | 0x3F << 9 | ext;
        raw[6..12].copy_from_slice(&v.to_be_bytes()[2..8]);
        let p = Packet::new(&raw).unwrap();
        assert!(!p.has_payload());
        assert!(p.payload().is_none());
        let af = p.adaptation().unwrap().unwrap();
        assert!(af.discontinuity() && af.random_access() && !af.es_priority());
        assert_eq!(af.pcr(), Some(base * 300 + ext));
        assert_eq!(af.opcr(), None);
        assert_eq!(af.bytes().len(), 183);
    }

    #[test]
    fn adaptation_and_payload_locates_payload() {
        let mut raw = packet(0x100, true, 3, 3, 0xEE);
        raw[4] = 7;
        raw[5] = 0x18; // PCR + OPCR flags, but only room for the PCR
        raw[6..12].copy_from_slice(&[0, 0, 0, 0, 0x80, 0x01]);
        let p = Packet::new(&raw).unwrap();
        let af = p.adaptation().unwrap().unwrap();
        assert_eq!(af.pcr(), Some(300 + 1));
        assert_eq!(af.opcr(), None, "OPCR flagged but truncated");
        assert_eq!(p.payload().unwrap().len(), 188 - 4 - 1 - 7);
    }

    #[test]
    fn zero_length_adaptation_is_one_stuffing_byte() {
        let mut raw = packet(0x100, false, 3, 0, 0);
        raw[4] = 0;
        let p = Packet::new(&raw).unwrap();
        let af = p.adaptation().unwrap().unwrap();
        assert!(!af.discontinuity() && af.pcr().is_none());
        assert_eq!(p.payload().unwrap().len(), 183);
    }

    #[test]
    fn overrunning_adaptation_length_is_an_error_not_a_panic() {
        let mut raw = packet(0x100, false, 3, 0, 0);
        raw[4] = 183; // leaves no payload although 11 promises one
        let p = Packet::new(&raw).unwrap();
        assert_eq!(
            p.adaptation().unwrap_err(),
            PacketError::AdaptationOverrun(183)
        );
        assert!(p.payload().is_none());
        raw[4] = 182; // one payload byte left: fine
        let p = Packet::new(&raw).unwrap();
        assert_eq!(p.payload().unwrap().len(), 1);

        let mut raw = packet(0x100, false, 2, 0, 0);
        raw[4] = 255;
        let p = Packet::new(&raw).unwrap();
        assert_eq!(
            p.adaptation().unwrap_err(),
            PacketError::AdaptationOverrun(255)
        );
    }
}
