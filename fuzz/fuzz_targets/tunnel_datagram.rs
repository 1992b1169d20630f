//! The tunnel's data plane on arbitrary bytes, with a fixed key: arbitrary datagrams and TCP
//! chunk streams never open (nor panic), and the input's own bytes sealed, in pieces, open
//! back to themselves exactly once, while any flipped bit is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quoll::tunnel::seal::{
    ChunkDecoder, MAX_CHUNK_LEN, MAX_CHUNK_PAYLOAD, OpenError, Opener, Sealer, UUID_LEN,
};

const KEY: [u8; 32] = [0x5e; 32];
const UUID: [u8; 16] = [
    0x01, 0x92, 0xf3, 0xa4, 0x5b, 0x6c, 0x7d, 0x8e, 0x9f, 0xa0, 0xb1, 0xc2, 0xd3, 0xe4, 0xf5, 0xa6,
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(first).max(1);
    let mut opener = Opener::new(&KEY, UUID);

    // Arbitrary bytes: never accepted, with or without our UUID in front.
    assert!(opener.open(&mut rest.to_vec()).is_err());
    let mut prefixed = UUID.to_vec();
    prefixed.extend_from_slice(rest);
    assert!(opener.open(&mut prefixed).is_err());
    let mut chunks = ChunkDecoder::new();
    'raw: for piece in rest.chunks(step) {
        chunks.push(piece);
        assert!(chunks.buffered() <= 4 + MAX_CHUNK_LEN + step);
        loop {
            match chunks.next_chunk(&opener) {
                Ok(Some(_)) => panic!("an arbitrary chunk opened"),
                Ok(None) => break,
                Err(_) => break 'raw,
            }
        }
    }

    // The input sealed piece by piece: each opens once to itself; a flipped bit is refused.
    let mut sealer = Sealer::new(&KEY, UUID, 1_780_000_000_000_000, [1, 2, 3, 4]);
    let mut wire = Vec::new();
    let mut stream = Vec::new();
    for piece in rest.chunks(step) {
        sealer.seal(piece, &mut wire);
        let mut flipped = wire.clone();
        let at = UUID_LEN + usize::from(piece[0]) * 7 % (wire.len() - UUID_LEN);
        flipped[at] ^= 1 << (piece[0] % 8);
        assert!(opener.open(&mut flipped).is_err());
        assert_eq!(opener.open(&mut wire.clone()).unwrap(), piece);
        assert_eq!(opener.open(&mut wire), Err(OpenError::Replayed));
        sealer.seal_chunk(&piece[..piece.len().min(MAX_CHUNK_PAYLOAD)], &mut wire);
        stream.extend_from_slice(&wire);
    }
    let mut chunks = ChunkDecoder::new();
    let mut got = Vec::new();
    for piece in stream.chunks(step) {
        chunks.push(piece);
        while let Some(p) = chunks.next_chunk(&opener).unwrap() {
            got.extend_from_slice(p);
        }
    }
    assert_eq!(got, rest);
    assert!(chunks.is_at_boundary());
});
