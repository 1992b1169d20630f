//! AMF0 (Adobe's Action Message Format, version 0): the encoding of RTMP commands
//! (`connect`, `publish`, `_result`, `onStatus`, ...) and of `onMetaData`.
//!
//! Only what a publisher sends and a server answers: numbers, booleans, strings, objects,
//! null/undefined, ECMA and strict arrays, dates. Decoding never panics and never allocates
//! ahead of the bytes it has seen: a declared count or length is checked against what is
//! left before anything is reserved, and nesting is bounded by [`MAX_DEPTH`].

use std::fmt;

/// Objects inside objects deeper than this are refused (a stack bound, not a real need:
/// commands nest two levels).
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub enum Amf {
    Number(f64),
    Bool(bool),
    String(String),
    Object(Vec<(String, Amf)>),
    Null,
    Undefined,
    EcmaArray(Vec<(String, Amf)>),
    StrictArray(Vec<Amf>),
    Date(f64),
}

impl Amf {
    pub fn str(s: &str) -> Amf {
        Amf::String(s.to_owned())
    }

    pub fn object(props: &[(&str, Amf)]) -> Amf {
        Amf::Object(
            props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// A property of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Amf> {
        match self {
            Amf::Object(p) | Amf::EcmaArray(p) => p.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Why AMF0 bytes did not decode: what was wrong and at which byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmfError {
    /// The bytes ended inside a value.
    Truncated { at: usize },
    /// A type marker this decoder does not know (AMF3 switch, references, XML, ...).
    UnknownMarker { marker: u8, at: usize },
    /// Objects nested deeper than [`MAX_DEPTH`].
    TooDeep { at: usize },
}

impl fmt::Display for AmfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmfError::Truncated { at } => write!(f, "AMF0 value truncated at byte {at}"),
            AmfError::UnknownMarker { marker, at } => {
                write!(f, "unknown AMF0 type marker {marker:#04x} at byte {at}")
            }
            AmfError::TooDeep { at } => write!(f, "AMF0 objects nested too deep at byte {at}"),
        }
    }
}

impl std::error::Error for AmfError {}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AmfError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(AmfError::Truncated { at: self.pos })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, AmfError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, AmfError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, AmfError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self) -> Result<f64, AmfError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }

    fn string(&mut self, len: usize) -> Result<String, AmfError> {
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    /// Properties up to the empty-key object-end marker.
    fn props(&mut self, depth: usize) -> Result<Vec<(String, Amf)>, AmfError> {
        let mut props = Vec::new();
        loop {
            let len = usize::from(self.u16()?);
            if len == 0 {
                let at = self.pos;
                match self.u8()? {
                    0x09 => return Ok(props),
                    marker => return Err(AmfError::UnknownMarker { marker, at }),
                }
            }
            let key = self.string(len)?;
            let value = self.value(depth + 1)?;
            props.push((key, value));
        }
    }

    fn value(&mut self, depth: usize) -> Result<Amf, AmfError> {
        if depth > MAX_DEPTH {
            return Err(AmfError::TooDeep { at: self.pos });
        }
        let at = self.pos;
        Ok(match self.u8()? {
            0x00 => Amf::Number(self.f64()?),
            0x01 => Amf::Bool(self.u8()? != 0),
            0x02 => {
                let len = usize::from(self.u16()?);
                Amf::String(self.string(len)?)
            }
            0x03 => Amf::Object(self.props(depth)?),
            0x05 => Amf::Null,
            0x06 => Amf::Undefined,
            0x08 => {
                // The count is a hint (often wrong in the wild); the end marker decides.
                self.u32()?;
                Amf::EcmaArray(self.props(depth)?)
            }
            0x0a => {
                let n = self.u32()? as usize;
                // Every element takes at least one byte: a count beyond what is left is a lie.
                if n > self.data.len() - self.pos {
                    return Err(AmfError::Truncated { at });
                }
                let mut items = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Amf::StrictArray(items)
            }
            0x0b => {
                let ms = self.f64()?;
                self.u16()?; // time zone, reserved
                Amf::Date(ms)
            }
            0x0c => {
                let len = self.u32()? as usize;
                Amf::String(self.string(len)?)
            }
            marker => return Err(AmfError::UnknownMarker { marker, at }),
        })
    }
}

/// Decodes every value in `data` (a command is a sequence of values).
pub fn decode_all(data: &[u8]) -> Result<Vec<Amf>, AmfError> {
    let mut r = Reader { data, pos: 0 };
    let mut out = Vec::new();
    while r.pos < data.len() {
        out.push(r.value(0)?);
    }
    Ok(out)
}

fn put_str_body(s: &str, out: &mut Vec<u8>) {
    // A key or a short string: longer ones are written as long strings by `encode`.
    let b = &s.as_bytes()[..s.len().min(0xffff)];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_props(props: &[(String, Amf)], out: &mut Vec<u8>) {
    for (k, v) in props {
        if k.is_empty() {
            continue; // an empty key would read as the end marker
        }
        put_str_body(k, out);
        encode(v, out);
    }
    out.extend_from_slice(&[0, 0, 0x09]);
}

/// Appends one value.
pub fn encode(v: &Amf, out: &mut Vec<u8>) {
    match v {
        Amf::Number(n) => {
            out.push(0x00);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf::Bool(b) => out.extend_from_slice(&[0x01, u8::from(*b)]),
        Amf::String(s) if s.len() > 0xffff => {
            out.push(0x0c);
            out.extend_from_slice(&(s.len().min(u32::MAX as usize) as u32).to_be_bytes());
            out.extend_from_slice(&s.as_bytes()[..s.len().min(u32::MAX as usize)]);
        }
        Amf::String(s) => {
            out.push(0x02);
            put_str_body(s, out);
        }
        Amf::Object(p) => {
            out.push(0x03);
            put_props(p, out);
        }
        Amf::Null => out.push(0x05),
        Amf::Undefined => out.push(0x06),
        Amf::EcmaArray(p) => {
            out.push(0x08);
            out.extend_from_slice(&(p.len().min(u32::MAX as usize) as u32).to_be_bytes());
            put_props(p, out);
        }
        Amf::StrictArray(items) => {
            out.push(0x0a);
            out.extend_from_slice(&(items.len().min(u32::MAX as usize) as u32).to_be_bytes());
            for i in items {
                encode(i, out);
            }
        }
        Amf::Date(ms) => {
            out.push(0x0b);
            out.extend_from_slice(&ms.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
    }
}

/// Encodes a sequence of values (a command).
pub fn encode_all(values: &[Amf]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        encode(v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_command_round_trips() {
        let cmd = vec![
            Amf::str("connect"),
            Amf::Number(1.0),
            Amf::object(&[
                ("app", Amf::str("live")),
                ("type", Amf::str("nonprivate")),
                ("tcUrl", Amf::str("rtmp://127.0.0.1:1935/live")),
                ("fpad", Amf::Bool(false)),
                ("nested", Amf::object(&[("x", Amf::Null)])),
            ]),
            Amf::Undefined,
            Amf::EcmaArray(vec![("duration".into(), Amf::Number(0.0))]),
            Amf::StrictArray(vec![Amf::Number(1.0), Amf::str("a")]),
            Amf::Date(1.5e12),
            Amf::String("x".repeat(70_000)),
        ];
        let bytes = encode_all(&cmd);
        let back = decode_all(&bytes).unwrap();
        assert_eq!(back, cmd);
        assert_eq!(back[2].get("app").and_then(Amf::as_str), Some("live"));
    }

    #[test]
    fn known_bytes_decode() {
        // "publish", 5, null, "key", "live" as ffmpeg sends it.
        let mut b = vec![0x02, 0, 7];
        b.extend_from_slice(b"publish");
        b.push(0);
        b.extend_from_slice(&5f64.to_be_bytes());
        b.push(5);
        b.extend_from_slice(&[2, 0, 3]);
        b.extend_from_slice(b"key");
        b.extend_from_slice(&[2, 0, 4]);
        b.extend_from_slice(b"live");
        let v = decode_all(&b).unwrap();
        assert_eq!(
            v,
            vec![
                Amf::str("publish"),
                Amf::Number(5.0),
                Amf::Null,
                Amf::str("key"),
                Amf::str("live")
            ]
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic_or_a_huge_allocation() {
        assert_eq!(
            decode_all(&[0x00, 1, 2]),
            Err(AmfError::Truncated { at: 1 })
        );
        assert_eq!(
            decode_all(&[0x11]),
            Err(AmfError::UnknownMarker {
                marker: 0x11,
                at: 0
            })
        );
        // A strict array claiming 4 billion elements.
        assert!(decode_all(&[0x0a, 0xff, 0xff, 0xff, 0xff, 5]).is_err());
        // A long string claiming 4 GB.
        assert!(decode_all(&[0x0c, 0xff, 0xff, 0xff, 0xff]).is_err());
        // Deep nesting.
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend_from_slice(&[0x03, 0, 1, b'a']);
        }
        assert!(matches!(decode_all(&deep), Err(AmfError::TooDeep { .. })));
        // Every prefix of a valid command fails cleanly.
        let bytes = encode_all(&[Amf::str("connect"), Amf::object(&[("a", Amf::Null)])]);
        for n in 0..bytes.len() {
            let _ = decode_all(&bytes[..n]);
        }
    }
}
