//! A read-only view of one 188-byte TS packet. Parsing never panics, whatever the bytes.

pub const PACKET_LEN: usize = 188;
pub const SYNC_BYTE: u8 = 0x47;
pub const NULL_PID: u16 = 0x1FFF;

#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    bytes: &'a [u8],
}

impl<'a> Packet<'a> {
    /// A view over `bytes` if it is exactly one packet starting with the sync byte.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        (bytes.len() == PACKET_LEN && bytes[0] == SYNC_BYTE).then_some(Packet { bytes })
    }

    pub fn pid(&self) -> u16 {
        u16::from(self.bytes[1] & 0x1F) << 8 | u16::from(self.bytes[2])
    }

    pub fn pusi(&self) -> bool {
        self.bytes[1] & 0x40 != 0
    }

    pub fn cc(&self) -> u8 {
        self.bytes[3] & 0x0F
    }
}
