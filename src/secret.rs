//! Secrets in memory: comparing them without leaking through timing, and a holder that
//! cannot reach a log line: its `Debug` prints nothing of it, it has no `Display`, and it
//! does not implement `Serialize` (a struct that holds one derives `Serialize` only by naming
//! [`serialize`] on that field, so the wire formats that must carry it say so, and nothing
//! that dumps a value as JSON into a log can print it by accident).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

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

/// A token or password held by the node, or a value that may carry one (a config object
/// pushed by the manager, a frame holding the `auth` credentials). `Debug` prints
/// `Secret(..)`: a log line that formats one shows nothing of it.
#[derive(Clone)]
pub struct Secret<T = String>(T);

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

impl<T> Secret<T> {
    /// The value itself, for the few places that must use it (send, store, apply).
    pub fn reveal(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.into())
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Equal secrets, compared as [`Secret::matches`] does (in constant time).
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other.expose())
    }
}

impl Eq for Secret {}

/// Plain equality: a JSON value held as a secret (a pushed config object) is compared as
/// a whole with another one the node holds, never against a guess, so there is nothing to
/// learn from the time it takes.
impl PartialEq for Secret<Value> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Secret)
    }
}

/// Writes the secret itself, for `#[serde(serialize_with = "crate::secret::serialize")]` on
/// a field of a wire message that must carry it (the manager's `auth` frame).
pub fn serialize<S: Serializer, T: Serialize>(secret: &Secret<T>, s: S) -> Result<S::Ok, S::Error> {
    secret.0.serialize(s)
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
        assert_eq!(s, Secret::from("0123456789abcdef"));
        assert_ne!(s, Secret::from("0123456789abcdeF"));
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_eq!(format!("{:?}", Some(s)), "Some(Secret(..))");
    }

    #[test]
    fn a_secret_reads_from_json_and_writes_only_where_a_field_says_so() {
        #[derive(Deserialize, Debug)]
        struct Auth {
            token: Secret,
            config: Secret<Value>,
        }
        let a: Auth =
            serde_json::from_str(r#"{"token":"s3cret","config":{"key":"s3cret2"}}"#).unwrap();
        assert_eq!(a.token.expose(), "s3cret");
        assert_eq!(a.config.reveal()["key"], "s3cret2");
        let text = format!("{a:?} {:#?}", a);
        assert!(!text.contains("s3cret"), "{text}");

        #[derive(Serialize)]
        struct Out {
            #[serde(serialize_with = "serialize")]
            token: Secret,
        }
        assert_eq!(
            serde_json::to_string(&Out { token: a.token }).unwrap(),
            r#"{"token":"s3cret"}"#
        );
    }
}
