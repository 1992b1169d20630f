//! Secrets in memory: comparing them without leaking through timing, and a holder whose
//! `Debug` cannot print them.

use std::fmt;

/// Equal-length byte strings compared without an early exit, so timing does not tell how
/// much of a secret (or a pin) matched. Different lengths are unequal at once: callers that
/// must not reveal a secret's length compare digests (see [`Secret::matches`]).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn digest(bytes: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, bytes)
}

/// A token or password held by the node. It has no `Display`, and `Debug` prints
/// `Secret(..)`: a log line that formats one shows nothing of it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// Whether `candidate` is this secret. Both sides are hashed first and the digests
    /// compared in constant time: neither how much of the secret matched nor its length
    /// shows in the time taken.
    pub fn matches(&self, candidate: &str) -> bool {
        ct_eq(
            digest(candidate.as_bytes()).as_ref(),
            digest(self.0.as_bytes()).as_ref(),
        )
    }

    /// The secret itself, for the few places that must send or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn a_secret_matches_only_itself_and_never_prints() {
        let s = Secret::new("0123456789abcdef");
        assert!(s.matches("0123456789abcdef"));
        assert!(!s.matches("0123456789abcdeF"));
        assert!(!s.matches("0123456789abcde"));
        assert!(!s.matches(""));
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_eq!(format!("{:?}", Some(s)), "Some(Secret(..))");
    }
}
