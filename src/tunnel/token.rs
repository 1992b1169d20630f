//! The tunnel's two authentication tokens (`shared/spec/relay-protocol.md`, "Bind token" and
//! "Direct mode"), both HMAC-SHA256 keyed with the *text* of a 64-hex-digit secret (its ASCII
//! bytes, not the 32 bytes it spells: that is how the manager and the relay compute them).
//!
//! - the relay **bind token**, `hex(HMAC(bind_secret, "<tunnel_id>:<direction>"))`, which
//!   the manager pre-registered with the relay for each end;
//! - the direct-mode **peer token**, `base64("<tunnel_id>:" + hex(HMAC(psk, tunnel_id)))`,
//!   which the dialling edge presents and the listening edge recomputes and compares in
//!   constant time ([`verify_peer_token`]).
//!
//! The base64 (standard alphabet, with padding) is the few lines below rather than a crate.

use ring::hmac;

use crate::config::TunnelDirection;
use crate::secret::ct_eq;

/// The relay bind token of this end of `tunnel_id`: 64 lowercase hex digits.
pub fn bind_token(bind_secret: &str, tunnel_id: &str, direction: TunnelDirection) -> String {
    let msg = format!("{tunnel_id}:{}", direction.as_str());
    hmac_hex(bind_secret, msg.as_bytes())
}

/// The direct-mode token the dialling edge sends in `peer_auth`.
pub fn peer_token(psk: &str, tunnel_id: &str) -> String {
    base64_encode(peer_token_text(psk, tunnel_id).as_bytes())
}

/// Whether `token` is [`peer_token`] of `psk` and `tunnel_id`. Not base64, or another
/// tunnel's, is `false`; the comparison takes the same time however much of it matched.
pub fn verify_peer_token(psk: &str, tunnel_id: &str, token: &str) -> bool {
    let Some(decoded) = base64_decode(token) else {
        return false;
    };
    // The expected text is a fixed 101 bytes for a UUID id: comparing lengths first says
    // nothing of the secret part.
    ct_eq(&decoded, peer_token_text(psk, tunnel_id).as_bytes())
}

/// `"<tunnel_id>:" + hex(HMAC(psk, tunnel_id))`, before base64.
fn peer_token_text(psk: &str, tunnel_id: &str) -> String {
    format!("{tunnel_id}:{}", hmac_hex(psk, tunnel_id.as_bytes()))
}

fn hmac_hex(key_text: &str, msg: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key_text.as_bytes());
    hex_lower(hmac::sign(&key, msg).as_ref())
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with `=` padding (RFC 4648 section 4).
fn base64_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The inverse of [`base64_encode`], strict: whole 4-character groups, padding only at the
/// end, no other character, and no stray bits under the padding (so each byte string has
/// exactly one accepted encoding).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let t = text.as_bytes();
    if !t.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(t.len() / 4 * 3);
    let groups = t.len() / 4;
    for (g, quad) in t.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && g + 1 != groups) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = n << 6 | u32::from(sextet(c)?);
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = 3 - pad;
        // The bits under the padding must be zero.
        if bytes[keep..].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&bytes[..keep]);
    }
    Some(out)
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors computed with python3's hmac, hashlib and base64 when this test was written:
    //   hmac.new(SECRET.encode(), f"{TID}:egress".encode(), hashlib.sha256).hexdigest()
    //   base64.b64encode((TID + ":" + hmac.new(PSK.encode(), TID.encode(),
    //       hashlib.sha256).hexdigest()).encode())
    const TID: &str = "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6";
    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const PSK: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
    const PEER_TOKEN: &str = "MDE5MmYzYTQtNWI2Yy03ZDhlLTlmYTAtYjFjMmQzZTRmNWE2OjljNTMzNDQxZTEzOTNjZjFlZWJlODU1MjRmY2IxNjQyOGVkYWY1NWFiNzY1OGRiMGIzYzViY2Q0NmRmMTNmNjU=";

    #[test]
    fn bind_tokens_match_python() {
        assert_eq!(
            bind_token(SECRET, TID, TunnelDirection::Egress),
            "829d5b71a4927dee3f338563456f18b9bdf6f8e11780769908c541445f6620c5"
        );
        assert_eq!(
            bind_token(SECRET, TID, TunnelDirection::Ingress),
            "8818277e23b206f1e1565088276bd5fc4f477958dec19a82051ee2495df5c3eb"
        );
    }

    #[test]
    fn peer_token_matches_python_and_verifies() {
        assert_eq!(peer_token(PSK, TID), PEER_TOKEN);
        assert!(verify_peer_token(PSK, TID, PEER_TOKEN));
        // Another key, another tunnel, a changed character, junk: refused.
        assert!(!verify_peer_token(SECRET, TID, PEER_TOKEN));
        let other = "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5a7";
        assert!(!verify_peer_token(PSK, other, PEER_TOKEN));
        assert!(verify_peer_token(PSK, other, &peer_token(PSK, other)));
        let mut t = PEER_TOKEN.to_string();
        t.replace_range(60..61, "A");
        assert!(!verify_peer_token(PSK, TID, &t));
        for bad in [
            "",
            "====",
            "not base64!",
            &PEER_TOKEN[..PEER_TOKEN.len() - 1],
        ] {
            assert!(!verify_peer_token(PSK, TID, bad), "{bad}");
        }
        // The right HMAC under the wrong prefix is refused too.
        let text = peer_token_text(PSK, TID);
        let hmac_part = &text[TID.len() + 1..];
        assert!(!verify_peer_token(
            PSK,
            TID,
            &base64_encode(format!("{other}:{hmac_part}").as_bytes())
        ));
    }

    #[test]
    fn base64_is_rfc_4648() {
        // RFC 4648 section 10's vectors.
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes(), "{enc}");
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        // Strict: no missing padding, no padding inside, no stray bits, no other alphabet.
        for bad in [
            "Zg", "Zg=", "Zg===", "Zm==Zm9v", "Zh==", "Zm9=", "Zm-v", "Zm9v\n",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }
}
