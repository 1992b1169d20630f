//! The data plane's encryption (`shared/spec/relay-protocol.md`, "Data plane"), sans-IO and
//! allocation-free in steady state.
//!
//! ChaCha20-Poly1305 with the tunnel's 32-byte key (`tunnel_encryption_key`, hex-decoded:
//! [`key_from_hex`]) and an empty AAD, in two framings:
//! - a **UDP datagram** is one QUIC datagram `[16-byte tunnel UUID][12-byte nonce][ciphertext]
//!   [16-byte tag]` ([`Sealer::seal`], [`Opener::open`]). The relay reads only the UUID, to
//!   know whose datagram it forwards;
//! - a **TCP stream** carries, after its JSON header, chunks `[u32 BE length][nonce ‖
//!   ciphertext ‖ tag]` (no UUID: the stream belongs to the tunnel) ([`Sealer::seal_chunk`],
//!   [`ChunkDecoder`]).
//!
//! ## The nonce
//! A ChaCha20-Poly1305 nonce must never repeat under one key; that is all the spec needs, as
//! nobody but the receiving edge ever looks inside. Ours is 12 bytes, `[8-byte big-endian
//! counter][4 bytes fixed per Sealer]`:
//! - the **counter** starts at the wall clock in microseconds since the Unix epoch (the caller
//!   passes it in: this module reads no clock) and adds 1 per datagram or chunk. A sender
//!   that restarts therefore starts above every counter it used before, as long as it sent
//!   fewer than one datagram per microsecond on average (a million a second) and its clock
//!   did not step back, without storing anything;
//! - the 4 **salt** bytes are random, drawn once per [`Sealer`]: the two edges share the key,
//!   and both start their counters at about the same time, so their counter ranges overlap;
//!   the salts tell them apart (two Sealers collide only if their 4 random bytes match, a
//!   2^-32 chance per pair, on top of overlapping counters).
//!
//! One Sealer per sending edge and tunnel serves its datagrams and all its TCP streams, so the
//! counter is unique across all of them, and increasing within each stream.
//!
//! ## Replays
//! The counter doubles as a sequence number. [`Opener`] keeps a sliding window of the last
//! [`REPLAY_WINDOW`] counters below the highest one seen (a bitmap, as IPsec and WireGuard do):
//! a datagram whose counter was already accepted, or is older than the window, is
//! [`OpenError::Replayed`]. Datagrams reordered by less than the window still go through, once.
//! The window is checked before decrypting (a cheap reject) and updated only after the tag
//! verified, so a forged datagram can never move it. A peer whose clock stepped back across a
//! restart has its datagrams dropped as replays until its counter passes its old highest (the
//! `replays_dropped` counter shows it). In a TCP stream QUIC already delivers in order,
//! once: [`ChunkDecoder`] requires strictly increasing counters, so a replayed or reordered
//! chunk (only a man in the middle could make one) breaks the stream.
//!
//! One [`Opener`] per tunnel for the tunnel's whole life (not one per connection): a fresh
//! window would take back datagrams recorded before a reconnection.
//!
//! ## Reflections
//! Both directions share the key, so a relay could hand an edge its own datagrams or TCP
//! chunks back, and they would open. An opener made by [`pair`] (or told the salt with
//! [`Opener::with_own_salt`]) refuses nonces that end with its own sealer's salt. What the
//! spec's framing cannot prevent (it authenticates no direction, stream or position) is a
//! relay moving a TCP stream's chunks into another stream of the same tunnel; the strictly
//! increasing counters within a stream limit that to chunks newer than the stream's last.

use std::fmt;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// The tunnel UUID that prefixes every datagram.
pub const UUID_LEN: usize = 16;
/// ChaCha20-Poly1305's nonce.
pub const NONCE_BYTES: usize = NONCE_LEN;
/// Poly1305's tag.
pub const TAG_LEN: usize = 16;
/// What a datagram adds to its payload.
pub const DATAGRAM_OVERHEAD: usize = UUID_LEN + NONCE_BYTES + TAG_LEN;
/// What a TCP chunk adds to its payload (length, nonce, tag).
pub const CHUNK_OVERHEAD: usize = 4 + NONCE_BYTES + TAG_LEN;
/// The largest payload of one TCP chunk: the sender cuts its reads to this.
pub const MAX_CHUNK_PAYLOAD: usize = 64 * 1024;
/// The largest length a chunk header may announce.
pub const MAX_CHUNK_LEN: usize = NONCE_BYTES + MAX_CHUNK_PAYLOAD + TAG_LEN;
/// Counters tracked below the highest one seen.
pub const REPLAY_WINDOW: u64 = 2048;

/// The first counter of a [`Sealer`] made at wall-clock time `wall` (the caller reads the
/// clock): microseconds since the Unix epoch, 0 for a clock set before it.
pub fn counter_start(wall: std::time::SystemTime) -> u64 {
    wall.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The 32-byte key from the config's 64 hex digits (either case); `None` for anything else.
pub fn key_from_hex(text: &str) -> Option<[u8; 32]> {
    let b = text.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (byte, pair) in key.iter_mut().zip(b.chunks(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *byte = (hi << 4 | lo) as u8;
    }
    Some(key)
}

/// The sealer and opener of one edge's end of a tunnel, the opener refusing the sealer's
/// own datagrams and chunks (see "Reflections" in the module docs).
pub fn pair(
    key: &[u8; 32],
    tunnel: [u8; 16],
    start_counter: u64,
    salt: [u8; 4],
) -> (Sealer, Opener) {
    (
        Sealer::new(key, tunnel, start_counter, salt),
        Opener::new(key, tunnel).with_own_salt(salt),
    )
}

fn aead_key(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key"))
}

/// Encrypts what this edge sends into one tunnel: see the module docs for the nonce.
pub struct Sealer {
    key: LessSafeKey,
    tunnel: [u8; 16],
    counter: u64,
    salt: [u8; 4],
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Sealer")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for `tunnel` (its UUID bytes), whose first nonce counter is `start_counter`
    /// (the wall clock in microseconds since the Unix epoch) and whose nonces end with
    /// `salt` (4 random bytes).
    pub fn new(key: &[u8; 32], tunnel: [u8; 16], start_counter: u64, salt: [u8; 4]) -> Sealer {
        Sealer {
            key: aead_key(key),
            tunnel,
            counter: start_counter,
            salt,
        }
    }

    /// The counter the next nonce will carry.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Replace `out` with the datagram carrying `payload`. Reuses `out`'s capacity: with at
    /// least `payload.len() + DATAGRAM_OVERHEAD` of it, nothing is allocated.
    pub fn seal(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.tunnel);
        self.seal_after(UUID_LEN, payload, out);
    }

    /// Replace `out` with the TCP stream chunk carrying `payload` (at most
    /// [`MAX_CHUNK_PAYLOAD`] bytes: the caller reads no more at a time).
    pub fn seal_chunk(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        assert!(
            payload.len() <= MAX_CHUNK_PAYLOAD,
            "a TCP chunk of {} bytes is over {MAX_CHUNK_PAYLOAD}",
            payload.len()
        );
        out.clear();
        let len = (NONCE_BYTES + payload.len() + TAG_LEN) as u32;
        out.extend_from_slice(&len.to_be_bytes());
        self.seal_after(4, payload, out);
    }

    /// Append nonce, ciphertext and tag to `out`, which holds `prefix` bytes.
    fn seal_after(&mut self, prefix: usize, payload: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_BYTES];
        nonce[..8].copy_from_slice(&self.counter.to_be_bytes());
        nonce[8..].copy_from_slice(&self.salt);
        // 2^64 microseconds is 584 000 years: the counter does not wrap.
        self.counter = self.counter.wrapping_add(1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(payload);
        let body = prefix + NONCE_BYTES;
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut out[body..],
            )
            .expect("ChaCha20-Poly1305 seals any payload under 256 GiB");
        out.extend_from_slice(tag.as_ref());
    }
}

/// Why a datagram or a chunk was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Shorter than the framing's overhead.
    Short,
    /// A datagram that names another tunnel.
    WrongTunnel,
    /// The tag did not verify: altered, forged, or sealed with another key.
    Forged,
    /// Its counter was already accepted, or is below the replay window (or, in a TCP stream,
    /// not above the previous chunk's).
    Replayed,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpenError::Short => "datagram shorter than the tunnel framing",
            OpenError::WrongTunnel => "datagram for another tunnel",
            OpenError::Forged => "authentication tag did not verify",
            OpenError::Replayed => "counter already seen or too old (replay)",
        })
    }
}

impl std::error::Error for OpenError {}

const WINDOW_WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// Which counters were accepted among the [`REPLAY_WINDOW`] below the highest: bit
/// `c % REPLAY_WINDOW` of the ring of words stands for counter `c`.
#[derive(Debug, Clone)]
struct ReplayWindow {
    /// The highest counter accepted; `None` before the first.
    top: Option<u64>,
    bits: [u64; WINDOW_WORDS],
}

impl ReplayWindow {
    fn new() -> Self {
        ReplayWindow {
            top: None,
            bits: [0; WINDOW_WORDS],
        }
    }

    fn slot(counter: u64) -> (usize, u64) {
        let i = counter % REPLAY_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// Whether `counter` may be accepted (not seen, not too old).
    fn check(&self, counter: u64) -> bool {
        let Some(top) = self.top else {
            return true;
        };
        if counter > top {
            return true;
        }
        if top - counter >= REPLAY_WINDOW {
            return false;
        }
        let (w, bit) = Self::slot(counter);
        self.bits[w] & bit == 0
    }

    /// Record `counter` as accepted (after [`ReplayWindow::check`] and the tag).
    fn mark(&mut self, counter: u64) {
        match self.top {
            Some(top) if counter <= top => {}
            Some(top) if counter - top < REPLAY_WINDOW => {
                // The slots of top+1..=counter held counters now below the window.
                for c in top + 1..=counter {
                    let (w, bit) = Self::slot(c);
                    self.bits[w] &= !bit;
                }
                self.top = Some(counter);
            }
            _ => {
                self.bits = [0; WINDOW_WORDS];
                self.top = Some(counter);
            }
        }
        let (w, bit) = Self::slot(counter);
        self.bits[w] |= bit;
    }
}

/// Decrypts what the peer sent through one tunnel, in place, and drops replays.
pub struct Opener {
    key: LessSafeKey,
    tunnel: [u8; 16],
    window: ReplayWindow,
    /// This edge's own sealer's salt: a nonce that ends with it is a reflection.
    own_salt: Option<[u8; 4]>,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("top", &self.window.top)
            .finish_non_exhaustive()
    }
}

impl Opener {
    pub fn new(key: &[u8; 32], tunnel: [u8; 16]) -> Opener {
        Opener {
            key: aead_key(key),
            tunnel,
            window: ReplayWindow::new(),
            own_salt: None,
        }
    }

    /// Refuse what carries `salt`, this edge's own [`Sealer`]'s, as [`OpenError::Forged`]
    /// (it is not the peer's): see "Reflections" in the module docs.
    pub fn with_own_salt(mut self, salt: [u8; 4]) -> Opener {
        self.own_salt = Some(salt);
        self
    }

    /// The payload of `datagram`, decrypted in place (the returned slice lies inside it).
    pub fn open<'a>(&mut self, datagram: &'a mut [u8]) -> Result<&'a [u8], OpenError> {
        if datagram.len() < DATAGRAM_OVERHEAD {
            return Err(OpenError::Short);
        }
        let (uuid, sealed) = datagram.split_at_mut(UUID_LEN);
        // The UUID is public (the relay routes by it): a plain compare.
        if *uuid != self.tunnel {
            return Err(OpenError::WrongTunnel);
        }
        let counter = nonce_counter(sealed);
        if !self.window.check(counter) {
            return Err(OpenError::Replayed);
        }
        let plain = self.decrypt(sealed)?;
        self.window.mark(counter);
        Ok(plain)
    }

    /// `nonce ‖ ciphertext ‖ tag` decrypted in place; no replay check (the caller's).
    fn decrypt<'a>(&self, sealed: &'a mut [u8]) -> Result<&'a [u8], OpenError> {
        if sealed.len() < NONCE_BYTES + TAG_LEN {
            return Err(OpenError::Short);
        }
        let (nonce, body) = sealed.split_at_mut(NONCE_BYTES);
        if self.own_salt.is_some_and(|own| nonce[8..] == own) {
            return Err(OpenError::Forged);
        }
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Short)?;
        match self.key.open_in_place(nonce, Aad::empty(), body) {
            Ok(plain) => Ok(plain),
            Err(_) => Err(OpenError::Forged),
        }
    }
}

/// The counter in the first 8 bytes of a nonce (at least 8 bytes are there: checked before).
fn nonce_counter(sealed: &[u8]) -> u64 {
    let mut c = [0u8; 8];
    c.copy_from_slice(&sealed[..8]);
    u64::from_be_bytes(c)
}

/// Why a TCP stream's chunks stopped making sense: the stream must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk header announced `len` bytes: over [`MAX_CHUNK_LEN`], or under the nonce and
    /// tag.
    BadLength { len: usize },
    /// The chunk did not open: forged, or its counter not above the previous chunk's.
    Open(OpenError),
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::BadLength { len } => write!(
                f,
                "TCP chunk of {len} bytes (between {} and {MAX_CHUNK_LEN} expected)",
                NONCE_BYTES + TAG_LEN
            ),
            ChunkError::Open(e) => write!(f, "TCP chunk: {e}"),
        }
    }
}

impl std::error::Error for ChunkError {}

/// Cuts a TCP stream's chunks out of its bytes (after the JSON header) and opens them, sans-IO:
/// [`ChunkDecoder::push`] what the stream gave, then [`ChunkDecoder::next_chunk`] until `None`.
///
/// The buffer never holds more than one maximal chunk and its header if the shell reads at
/// most [`ChunkDecoder::wanted`] bytes at a time (one read more otherwise), and once it has
/// grown to that it is reused: nothing is allocated per chunk. An error is final.
#[derive(Debug)]
pub struct ChunkDecoder {
    buf: Vec<u8>,
    /// Start of the bytes not yet consumed.
    start: usize,
    /// The counter of the last chunk opened.
    last: Option<u64>,
    error: Option<ChunkError>,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkDecoder {
    pub fn new() -> Self {
        ChunkDecoder {
            buf: Vec::new(),
            start: 0,
            last: None,
            error: None,
        }
    }

    /// Add bytes read from the stream (dropped after an error).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        // Drop what was handed out; moving the rest down keeps the capacity.
        if self.start > 0 {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// How many more bytes complete the chunk being read (its header first). At least 1.
    pub fn wanted(&self) -> usize {
        let pending = &self.buf[self.start..];
        match chunk_len(pending) {
            None => 4 - pending.len(),
            Some(len) => (4 + len).saturating_sub(pending.len()).max(1),
        }
    }

    /// Bytes held and not yet opened.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether the stream ended cleanly here: no partial chunk held (for the shell at the
    /// stream's end; bytes left over mean it was cut mid-chunk).
    pub fn is_at_boundary(&self) -> bool {
        self.buffered() == 0 && self.error.is_none()
    }

    /// The next chunk's payload, decrypted in place; `None` until a whole chunk is in.
    pub fn next_chunk(&mut self, opener: &Opener) -> Result<Option<&[u8]>, ChunkError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let pending = &self.buf[self.start..];
        let Some(len) = chunk_len(pending) else {
            return Ok(None);
        };
        if !(NONCE_BYTES + TAG_LEN..=MAX_CHUNK_LEN).contains(&len) {
            return self.fail(ChunkError::BadLength { len });
        }
        if pending.len() < 4 + len {
            return Ok(None);
        }
        let at = self.start + 4;
        let counter = nonce_counter(&self.buf[at..]);
        if self.last.is_some_and(|last| counter <= last) {
            return self.fail(ChunkError::Open(OpenError::Replayed));
        }
        self.start = at + len;
        match opener.decrypt(&mut self.buf[at..at + len]) {
            Ok(plain) => {
                self.last = Some(counter);
                Ok(Some(plain))
            }
            Err(e) => {
                let e = ChunkError::Open(e);
                self.error = Some(e);
                Err(e)
            }
        }
    }

    fn fail(&mut self, e: ChunkError) -> Result<Option<&[u8]>, ChunkError> {
        self.error = Some(e);
        self.buf = Vec::new();
        self.start = 0;
        Err(e)
    }
}

/// The length a chunk header announces, once its 4 bytes are in.
fn chunk_len(pending: &[u8]) -> Option<usize> {
    let h: [u8; 4] = pending.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(h) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];
    const TUNNEL: [u8; 16] = [0xa6; 16];
    const START: u64 = 1_780_000_000_000_000;

    fn pair() -> (Sealer, Opener) {
        (
            Sealer::new(&KEY, TUNNEL, START, [1, 2, 3, 4]),
            Opener::new(&KEY, TUNNEL),
        )
    }

    fn sealed(s: &mut Sealer, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        s.seal(payload, &mut out);
        out
    }

    #[test]
    fn the_counter_starts_at_the_wall_clock_in_microseconds() {
        use std::time::{Duration, UNIX_EPOCH};
        let t = UNIX_EPOCH + Duration::from_micros(1_780_000_000_123_456);
        assert_eq!(counter_start(t), 1_780_000_000_123_456);
        assert_eq!(counter_start(UNIX_EPOCH - Duration::from_secs(1)), 0);
        // A later start is above every counter an earlier sealer used at under 1 per µs.
        let mut s = Sealer::new(&KEY, TUNNEL, counter_start(t), [0; 4]);
        for _ in 0..1000 {
            sealed(&mut s, b"");
        }
        assert!(counter_start(t + Duration::from_millis(2)) > s.counter());
    }

    #[test]
    fn key_from_hex_takes_64_digits() {
        let k = key_from_hex(&"0A".repeat(32)).unwrap();
        assert_eq!(k, [10; 32]);
        assert_eq!(key_from_hex(&"0a".repeat(31)), None);
        assert_eq!(key_from_hex(&format!("{}zz", "00".repeat(31))), None);
        assert_eq!(key_from_hex(&"0a".repeat(33)), None);
    }

    #[test]
    fn a_datagram_is_laid_out_as_the_spec_says_and_round_trips() {
        let (mut s, mut o) = pair();
        let payload = b"one UDP datagram of TS";
        let mut d = sealed(&mut s, payload);
        assert_eq!(d.len(), payload.len() + DATAGRAM_OVERHEAD);
        assert_eq!(&d[..16], TUNNEL);
        assert_eq!(&d[16..24], START.to_be_bytes());
        assert_eq!(&d[24..28], [1, 2, 3, 4]);
        assert_ne!(&d[28..28 + payload.len()], payload, "encrypted");
        assert_eq!(o.open(&mut d).unwrap(), payload);
        // The counter goes up by one per datagram; empty payloads are datagrams too.
        let mut e = sealed(&mut s, b"");
        assert_eq!(&e[16..24], (START + 1).to_be_bytes());
        assert_eq!(o.open(&mut e).unwrap(), b"");
        assert_eq!(s.counter(), START + 2);
    }

    /// A known answer computed with python3's `cryptography` (ChaCha20Poly1305(KEY)
    /// .encrypt(counter_be8 + salt, b"known answer", None), prefixed with the UUID and nonce)
    /// when this test was written.
    #[test]
    fn a_datagram_matches_an_independent_implementation() {
        let (mut s, mut o) = pair();
        let d = sealed(&mut s, b"known answer");
        let expected = "a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6000652e68bb3400001020304\
                        237fbf95abcbf57eedebcf5876f3354df9c55fb02a29e9b675506188";
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
        assert_eq!(o.open(&mut d.clone()).unwrap(), b"known answer");
    }

    /// Independently of our own sealer: ring's open of the spec's framing with a nonce we
    /// build by hand gives the payload back.
    #[test]
    fn a_datagram_opens_with_a_plain_chacha20_poly1305() {
        let (mut s, _) = pair();
        let mut d = sealed(&mut s, b"interop");
        let key = aead_key(&KEY);
        let nonce = Nonce::try_assume_unique_for_key(&d[16..28]).unwrap();
        let plain = key
            .open_in_place(nonce, Aad::empty(), &mut d[28..])
            .unwrap();
        assert_eq!(plain, b"interop");
    }

    #[test]
    fn a_flipped_bit_anywhere_after_the_uuid_is_forged() {
        let (mut s, _) = pair();
        let good = sealed(&mut s, b"sixteen bytes!!!");
        for byte in UUID_LEN..good.len() {
            for bit in 0..8 {
                let mut o = Opener::new(&KEY, TUNNEL);
                let mut d = good.clone();
                d[byte] ^= 1 << bit;
                assert_eq!(o.open(&mut d), Err(OpenError::Forged), "byte {byte}");
                // And the forgery did not move the window: the genuine one still opens.
                let mut d = good.clone();
                assert!(o.open(&mut d).is_ok(), "byte {byte} bit {bit}");
            }
        }
        // A flipped bit in the UUID names another tunnel.
        let mut o = Opener::new(&KEY, TUNNEL);
        let mut d = good.clone();
        d[3] ^= 0x10;
        assert_eq!(o.open(&mut d), Err(OpenError::WrongTunnel));
        // The wrong key is a forgery too.
        let mut d = good.clone();
        assert_eq!(
            Opener::new(&[8; 32], TUNNEL).open(&mut d),
            Err(OpenError::Forged)
        );
    }

    #[test]
    fn short_and_foreign_datagrams_are_refused() {
        let (mut s, mut o) = pair();
        let d = sealed(&mut s, b"");
        for len in 0..d.len() {
            let mut cut = d[..len].to_vec();
            assert_eq!(o.open(&mut cut), Err(OpenError::Short), "{len}");
        }
        let mut other = Sealer::new(&KEY, [0xa7; 16], START, [0; 4]);
        let mut d = sealed(&mut other, b"x");
        assert_eq!(o.open(&mut d), Err(OpenError::WrongTunnel));
    }

    #[test]
    fn a_replayed_datagram_is_refused() {
        let (mut s, mut o) = pair();
        let d = sealed(&mut s, b"once");
        assert!(o.open(&mut d.clone()).is_ok());
        assert_eq!(o.open(&mut d.clone()), Err(OpenError::Replayed));
        // Still refused after newer ones.
        for _ in 0..10 {
            assert!(o.open(&mut sealed(&mut s, b"n")).is_ok());
        }
        assert_eq!(o.open(&mut d.clone()), Err(OpenError::Replayed));
    }

    #[test]
    fn reordering_within_the_window_is_accepted_once_and_older_is_refused() {
        let (mut s, mut o) = pair();
        let all: Vec<Vec<u8>> = (0..3000)
            .map(|i: u32| sealed(&mut s, &i.to_be_bytes()))
            .collect();
        // The newest first, then every one of the previous 2047 in reverse: all accepted.
        assert!(o.open(&mut all[2999].clone()).is_ok());
        for i in (2999 - 2047..2999).rev() {
            assert_eq!(
                o.open(&mut all[i].clone()).unwrap(),
                (i as u32).to_be_bytes()
            );
        }
        // Each exactly once.
        for (i, d) in all.iter().enumerate().skip(2999 - 2047) {
            assert_eq!(o.open(&mut d.clone()), Err(OpenError::Replayed), "{i}");
        }
        // 2048 below the top and older: outside the window, refused although never seen.
        for i in [0, 500, 2999 - 2048] {
            assert_eq!(o.open(&mut all[i].clone()), Err(OpenError::Replayed), "{i}");
        }
        // Gaps: counters skipped over stay acceptable while in the window.
        let (mut s, mut o) = pair();
        let all: Vec<Vec<u8>> = (0..10).map(|_| sealed(&mut s, b"g")).collect();
        for i in [0, 5, 9, 2, 7] {
            assert!(o.open(&mut all[i].clone()).is_ok(), "{i}");
        }
        for i in [0, 5, 9, 2, 7] {
            assert_eq!(o.open(&mut all[i].clone()), Err(OpenError::Replayed));
        }
        for i in [1, 3, 4, 6, 8] {
            assert!(o.open(&mut all[i].clone()).is_ok(), "{i}");
        }
    }

    #[test]
    fn the_window_slides_over_jumps_and_a_restarted_sender_is_accepted() {
        let (mut s, mut o) = pair();
        let first = sealed(&mut s, b"a");
        assert!(o.open(&mut first.clone()).is_ok());
        // A jump of more than the window: everything before is too old, the bitmap is clean.
        let mut far = Sealer::new(&KEY, TUNNEL, START + 10_000, [9; 4]);
        let f0 = sealed(&mut far, b"b");
        let f1 = sealed(&mut far, b"c");
        assert!(o.open(&mut f1.clone()).is_ok());
        assert!(o.open(&mut f0.clone()).is_ok(), "one below the new top");
        assert_eq!(o.open(&mut first.clone()), Err(OpenError::Replayed));
        // A jump of less than the window clears exactly the slots it passes.
        let mut near = Sealer::new(&KEY, TUNNEL, START + 10_001 + 1500, [5; 4]);
        let n0 = sealed(&mut near, b"d");
        assert!(o.open(&mut n0.clone()).is_ok());
        assert_eq!(o.open(&mut f0.clone()), Err(OpenError::Replayed));
        assert_eq!(o.open(&mut f1.clone()), Err(OpenError::Replayed));
        // A sender restarted a second later (new salt, counter from the clock): accepted.
        let mut restarted = Sealer::new(&KEY, TUNNEL, START + 1_000_000, [0xee; 4]);
        assert!(o.open(&mut sealed(&mut restarted, b"e")).is_ok());
    }

    #[test]
    fn a_forgery_with_a_far_counter_does_not_move_the_window() {
        let (mut s, mut o) = pair();
        let d0 = sealed(&mut s, b"0");
        let d1 = sealed(&mut s, b"1");
        assert!(o.open(&mut d1.clone()).is_ok());
        // A forged datagram claiming a counter far ahead: refused, and d0 (one below the
        // top) must still open.
        let mut forged = d1.clone();
        forged[16..24].copy_from_slice(&(START + 1_000_000).to_be_bytes());
        assert_eq!(o.open(&mut forged), Err(OpenError::Forged));
        assert!(o.open(&mut d0.clone()).is_ok());
    }

    #[test]
    fn an_edges_own_datagrams_and_chunks_reflected_back_are_refused() {
        let (mut ours, mut our_opener) = super::pair(&KEY, TUNNEL, START, [1, 2, 3, 4]);
        let (mut peer, _) = super::pair(&KEY, TUNNEL, START, [5, 6, 7, 8]);
        let mine = sealed(&mut ours, b"to the peer");
        assert_eq!(our_opener.open(&mut mine.clone()), Err(OpenError::Forged));
        // The peer's own opener takes it, and ours takes the peer's.
        let (_, mut peer_opener) = super::pair(&KEY, TUNNEL, START, [5, 6, 7, 8]);
        assert!(peer_opener.open(&mut mine.clone()).is_ok());
        assert!(our_opener.open(&mut sealed(&mut peer, b"back")).is_ok());
        // TCP chunks the same.
        let mut d = ChunkDecoder::new();
        d.push(&chunks(&mut ours, &[b"echo?"]));
        assert_eq!(
            d.next_chunk(&our_opener),
            Err(ChunkError::Open(OpenError::Forged))
        );
        let mut d = ChunkDecoder::new();
        d.push(&chunks(&mut peer, &[b"echo!"]));
        assert_eq!(d.next_chunk(&our_opener).unwrap().unwrap(), b"echo!");
    }

    #[test]
    fn seal_reuses_the_output_buffer() {
        let (mut s, mut o) = pair();
        let mut out = Vec::with_capacity(2000);
        let ptr = out.as_ptr();
        for n in [1316, 0, 1500, 7] {
            let payload = vec![n as u8; n];
            s.seal(&payload, &mut out);
            assert_eq!(out.as_ptr(), ptr);
            assert_eq!(o.open(&mut out).unwrap(), payload);
        }
    }

    fn chunks(s: &mut Sealer, payloads: &[&[u8]]) -> Vec<u8> {
        let mut stream = Vec::new();
        let mut out = Vec::new();
        for p in payloads {
            s.seal_chunk(p, &mut out);
            stream.extend_from_slice(&out);
        }
        stream
    }

    #[test]
    fn tcp_chunks_are_laid_out_as_the_spec_says_and_round_trip_whatever_the_reads() {
        let (mut s, o) = pair();
        let big = vec![0x5a; MAX_CHUNK_PAYLOAD];
        let payloads: [&[u8]; 4] = [b"GET / HTTP/1.1\r\n", b"", &big, b"tail"];
        let stream = chunks(&mut s, &payloads);
        // [u32 BE len][nonce ‖ ct ‖ tag], no UUID.
        assert_eq!(&stream[..4], (16u32 + 12 + 16).to_be_bytes());
        assert_eq!(&stream[4..12], START.to_be_bytes());
        for step in [1, 3, 4, 100, 70_000, stream.len()] {
            let mut d = ChunkDecoder::new();
            let mut got: Vec<Vec<u8>> = Vec::new();
            for piece in stream.chunks(step) {
                d.push(piece);
                while let Some(p) = d.next_chunk(&o).unwrap() {
                    got.push(p.to_vec());
                }
            }
            assert_eq!(got, payloads.map(<[u8]>::to_vec), "step {step}");
            assert!(d.is_at_boundary());
        }
        // Cut mid-chunk: not at a boundary.
        let mut d = ChunkDecoder::new();
        d.push(&stream[..10]);
        assert_eq!(d.next_chunk(&o), Ok(None));
        assert!(!d.is_at_boundary());
        assert_eq!(d.wanted(), 16 + 12 + 16 + 4 - 10);
    }

    #[test]
    fn a_bad_chunk_ends_the_stream() {
        let (mut s, o) = pair();
        // Oversized or undersized header: refused before the body.
        for len in [MAX_CHUNK_LEN + 1, 27, 0, u32::MAX as usize] {
            let mut d = ChunkDecoder::new();
            d.push(&(len as u32).to_be_bytes());
            assert_eq!(d.next_chunk(&o), Err(ChunkError::BadLength { len }));
            d.push(b"more");
            assert_eq!(d.buffered(), 0);
            assert!(d.next_chunk(&o).is_err(), "final");
        }
        // The largest allowed is accepted.
        let mut d = ChunkDecoder::new();
        let mut out = Vec::new();
        s.seal_chunk(&vec![1; MAX_CHUNK_PAYLOAD], &mut out);
        assert_eq!(out.len(), 4 + MAX_CHUNK_LEN);
        d.push(&out);
        assert_eq!(d.next_chunk(&o).unwrap().unwrap().len(), MAX_CHUNK_PAYLOAD);
        // A flipped bit: forged, and final.
        let mut stream = chunks(&mut s, &[b"abc", b"def"]);
        stream[10] ^= 1;
        let mut d = ChunkDecoder::new();
        d.push(&stream);
        assert_eq!(d.next_chunk(&o), Err(ChunkError::Open(OpenError::Forged)));
        assert!(d.next_chunk(&o).is_err());
        // A replayed (or reordered) chunk breaks the stream.
        let a = chunks(&mut s, &[b"a"]);
        let b = chunks(&mut s, &[b"b"]);
        for order in [[&a, &a], [&b, &a]] {
            let mut d = ChunkDecoder::new();
            d.push(order[0]);
            assert!(d.next_chunk(&o).unwrap().is_some());
            d.push(order[1]);
            assert_eq!(d.next_chunk(&o), Err(ChunkError::Open(OpenError::Replayed)));
        }
        // Another key: forged.
        let mut d = ChunkDecoder::new();
        d.push(&a);
        assert_eq!(
            d.next_chunk(&Opener::new(&[0; 32], TUNNEL)),
            Err(ChunkError::Open(OpenError::Forged))
        );
        assert!(
            ChunkError::BadLength { len: 1 }
                .to_string()
                .contains("65564")
        );
    }

    #[test]
    #[should_panic(expected = "over 65536")]
    fn sealing_an_oversized_chunk_is_a_bug() {
        let (mut s, _) = pair();
        s.seal_chunk(&vec![0; MAX_CHUNK_PAYLOAD + 1], &mut Vec::new());
    }

    /// Random bytes into the opener and the chunk decoder: never a panic, never accepted.
    #[test]
    fn random_bytes_never_panic_nor_open() {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut o = Opener::new(&KEY, TUNNEL);
        for _ in 0..3_000 {
            let len = (next() % 120) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Half of them with the right UUID, so the window and the tag are exercised.
            if len >= 16 && next() % 2 == 0 {
                bytes[..16].copy_from_slice(&TUNNEL);
            }
            assert!(o.open(&mut bytes.clone()).is_err());
            if len >= 4 && next() % 2 == 0 {
                let body = (len - 4) as u32;
                bytes[..4].copy_from_slice(&body.to_be_bytes());
            }
            let mut d = ChunkDecoder::new();
            for piece in bytes.chunks(1 + (next() % 13) as usize) {
                d.push(piece);
                assert!(!matches!(d.next_chunk(&o), Ok(Some(_))));
            }
        }
    }
}
