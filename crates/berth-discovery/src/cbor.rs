//! The CBOR subset Smithy RPC v2 CBOR uses (RFC 8949), mapped to and from
//! `serde_json::Value` so the operations never see the protocol.
//!
//! Decoding takes untrusted bytes: every length is checked against what is left of the
//! input before anything is allocated, nesting is bounded ([`MAX_DEPTH`]), and nothing
//! panics. Accepted: unsigned and negative integers, byte strings (become base64 text,
//! as the JSON protocol carries blobs), text strings, arrays, maps with text keys, tag 1
//! (epoch timestamps, become their number), half/single/double floats, false, true,
//! null and undefined (null); indefinite-length strings, arrays and maps (RFC 8949
//! §3.2.3), which botocore's parser also takes. Map entries whose value is null are
//! dropped, as botocore does.
//!
//! Encoding writes definite lengths and the shortest integer heads; numbers under the
//! keys the caller names as timestamps are written as tag 1 around the number (the
//! Smithy RPC v2 CBOR spec's timestamp encoding).

use base64::Engine as _;
use serde_json::{Map, Number, Value};

/// Deepest nesting of arrays, maps and tags accepted.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    #[error("CBOR input ends inside an item")]
    Truncated,
    #[error("CBOR input has {0} bytes after the first item")]
    Trailing(usize),
    #[error("CBOR nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("CBOR text string is not valid UTF-8")]
    BadUtf8,
    #[error("CBOR map key is not a text string")]
    NonTextKey,
    #[error("CBOR tag {0} is not used by this protocol")]
    UnsupportedTag(u64),
    #[error("CBOR float is not finite")]
    NotFinite,
    #[error("CBOR item with initial byte {0:#04x} is not valid here")]
    Invalid(u8),
}

/// Decodes exactly one item; an empty input is an empty map (an operation without
/// input members may send no body).
pub fn decode(bytes: &[u8]) -> Result<Value, CborError> {
    if bytes.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let mut d = Decoder { buf: bytes, pos: 0 };
    let v = d.item(0)?.ok_or(CborError::Invalid(0xFF))?;
    match bytes.len() - d.pos {
        0 => Ok(v),
        n => Err(CborError::Trailing(n)),
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

const BREAK: u8 = 0xFF;

impl Decoder<'_> {
    fn byte(&mut self) -> Result<u8, CborError> {
        let b = *self.buf.get(self.pos).ok_or(CborError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&[u8], CborError> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(CborError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// The argument of a head with additional info `info` (RFC 8949 §3).
    fn arg(&mut self, initial: u8) -> Result<u64, CborError> {
        let info = initial & 0x1F;
        Ok(match info {
            0..=23 => info as u64,
            24 => self.byte()? as u64,
            25 => u16::from_be_bytes(self.take(2)?.try_into().unwrap_or([0; 2])) as u64,
            26 => u32::from_be_bytes(self.take(4)?.try_into().unwrap_or([0; 4])) as u64,
            27 => u64::from_be_bytes(self.take(8)?.try_into().unwrap_or([0; 8])),
            _ => return Err(CborError::Invalid(initial)),
        })
    }

    fn at_break(&mut self) -> Result<bool, CborError> {
        match self.buf.get(self.pos) {
            Some(&BREAK) => {
                self.pos += 1;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(CborError::Truncated),
        }
    }

    /// A string's bytes, definite or indefinite (chunks of the same major type).
    fn string(&mut self, initial: u8) -> Result<Vec<u8>, CborError> {
        let major = initial >> 5;
        if initial & 0x1F != 31 {
            let n = self.arg(initial)?;
            return Ok(self.take(n)?.to_vec());
        }
        let mut out = Vec::new();
        while !self.at_break()? {
            let c = self.byte()?;
            if c >> 5 != major || c & 0x1F == 31 {
                return Err(CborError::Invalid(c));
            }
            let n = self.arg(c)?;
            out.extend_from_slice(self.take(n)?);
        }
        Ok(out)
    }

    fn text(&mut self, initial: u8) -> Result<String, CborError> {
        String::from_utf8(self.string(initial)?).map_err(|_| CborError::BadUtf8)
    }

    /// One item; `None` for undefined-as-absent is not used: undefined is null.
    fn item(&mut self, depth: usize) -> Result<Option<Value>, CborError> {
        if depth > MAX_DEPTH {
            return Err(CborError::TooDeep);
        }
        let initial = self.byte()?;
        let v = match initial >> 5 {
            0 => Value::Number(self.arg(initial)?.into()),
            1 => {
                let n = self.arg(initial)?;
                match i64::try_from(n) {
                    Ok(n) => Value::Number((-1 - n).into()),
                    // Below i64::MIN: only a float can hold it.
                    Err(_) => float(-1.0 - n as f64)?,
                }
            }
            2 => Value::String(
                base64::engine::general_purpose::STANDARD.encode(self.string(initial)?),
            ),
            3 => Value::String(self.text(initial)?),
            4 => {
                let mut items = Vec::new();
                if initial & 0x1F == 31 {
                    while !self.at_break()? {
                        items.push(self.item(depth + 1)?.unwrap_or(Value::Null));
                    }
                } else {
                    let n = self.arg(initial)?;
                    // Each item takes at least one byte: no allocation beyond the input.
                    if n > (self.buf.len() - self.pos) as u64 {
                        return Err(CborError::Truncated);
                    }
                    for _ in 0..n {
                        items.push(self.item(depth + 1)?.unwrap_or(Value::Null));
                    }
                }
                Value::Array(items)
            }
            5 => {
                let mut map = Map::new();
                let indefinite = initial & 0x1F == 31;
                let mut left = if indefinite { 0 } else { self.arg(initial)? };
                if left > (self.buf.len() - self.pos) as u64 {
                    return Err(CborError::Truncated);
                }
                loop {
                    if indefinite {
                        if self.at_break()? {
                            break;
                        }
                    } else if left == 0 {
                        break;
                    } else {
                        left -= 1;
                    }
                    let k = self.byte()?;
                    if k >> 5 != 3 {
                        return Err(CborError::NonTextKey);
                    }
                    let key = self.text(k)?;
                    match self.item(depth + 1)? {
                        Some(Value::Null) | None => {}
                        Some(v) => {
                            map.insert(key, v);
                        }
                    }
                }
                Value::Object(map)
            }
            6 => {
                let tag = self.arg(initial)?;
                if tag != 1 {
                    return Err(CborError::UnsupportedTag(tag));
                }
                match self.item(depth + 1)? {
                    Some(v @ Value::Number(_)) => v,
                    _ => return Err(CborError::Invalid(initial)),
                }
            }
            _ => match initial & 0x1F {
                20 => Value::Bool(false),
                21 => Value::Bool(true),
                22 | 23 => Value::Null,
                25 => float(half(u16::from_be_bytes(
                    self.take(2)?.try_into().unwrap_or([0; 2]),
                )))?,
                26 => float(f32::from_be_bytes(self.take(4)?.try_into().unwrap_or([0; 4])) as f64)?,
                27 => float(f64::from_be_bytes(
                    self.take(8)?.try_into().unwrap_or([0; 8]),
                ))?,
                _ => return Err(CborError::Invalid(initial)),
            },
        };
        Ok(Some(v))
    }
}

fn float(f: f64) -> Result<Value, CborError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or(CborError::NotFinite)
}

/// IEEE 754 half precision to double (RFC 8949 Appendix D).
fn half(h: u16) -> f64 {
    let exp = (h >> 10) & 0x1F;
    let mant = (h & 0x3FF) as f64;
    let v = match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (mant + 1024.0) * 2f64.powi(e as i32 - 25),
    };
    if h & 0x8000 != 0 {
        -v
    } else {
        v
    }
}

/// Encodes `v`; numbers directly under a key for which `is_timestamp` holds become
/// tag 1 timestamps.
pub fn encode(v: &Value, is_timestamp: &dyn Fn(&str) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(&mut out, v, false, is_timestamp);
    out
}

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xFF => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xFFFF => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xFFFF_FFFF => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn write(out: &mut Vec<u8>, v: &Value, timestamp: bool, is_ts: &dyn Fn(&str) -> bool) {
    match v {
        Value::Null => out.push(0xF6),
        Value::Bool(b) => out.push(if *b { 0xF5 } else { 0xF4 }),
        Value::Number(n) => {
            if timestamp {
                head(out, 6, 1);
            }
            if let Some(u) = n.as_u64() {
                head(out, 0, u);
            } else if let Some(i) = n.as_i64() {
                head(out, 1, (-1 - i) as u64);
            } else {
                out.push(0xFB);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_be_bytes());
            }
        }
        Value::String(s) => {
            head(out, 3, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Array(a) => {
            head(out, 4, a.len() as u64);
            for x in a {
                write(out, x, false, is_ts);
            }
        }
        Value::Object(m) => {
            head(out, 5, m.len() as u64);
            for (k, x) in m {
                head(out, 3, k.len() as u64);
                out.extend_from_slice(k.as_bytes());
                write(out, x, is_ts(k), is_ts);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn no_ts(_: &str) -> bool {
        false
    }

    /// RFC 8949 Appendix A examples decode to the values it lists.
    #[test]
    fn rfc_examples() {
        let cases: &[(&[u8], Value)] = &[
            (&[0x00], json!(0)),
            (&[0x18, 0x64], json!(100)),
            (
                &[0x1b, 0, 0, 0, 0xe8, 0xd4, 0xa5, 0x10, 0],
                json!(1_000_000_000_000u64),
            ),
            (&[0x38, 0x63], json!(-100)),
            (&[0xf9, 0x3c, 0x00], json!(1.0)),
            (&[0xf9, 0xc4, 0x00], json!(-4.0)),
            (&[0xfa, 0x47, 0xc3, 0x50, 0x00], json!(100000.0)),
            (
                &[0xfb, 0x3f, 0xf1, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a],
                json!(1.1),
            ),
            (&[0xf4], json!(false)),
            (&[0xf6], Value::Null),
            (&[0xc1, 0x1a, 0x51, 0x4b, 0x67, 0xb0], json!(1363896240)),
            (&[0x64, 0x49, 0x45, 0x54, 0x46], json!("IETF")),
            (&[0x83, 0x01, 0x02, 0x03], json!([1, 2, 3])),
            (
                &[0xa2, 0x61, 0x61, 0x01, 0x61, 0x62, 0x82, 0x02, 0x03],
                json!({"a": 1, "b": [2, 3]}),
            ),
            (
                &[
                    0x7f, 0x65, 0x73, 0x74, 0x72, 0x65, 0x61, 0x64, 0x6d, 0x69, 0x6e, 0x67, 0xff,
                ],
                json!("streaming"),
            ),
            (
                &[0x9f, 0x01, 0x82, 0x02, 0x03, 0x9f, 0x04, 0x05, 0xff, 0xff],
                json!([1, [2, 3], [4, 5]]),
            ),
            (
                &[
                    0xbf, 0x61, 0x61, 0x01, 0x61, 0x62, 0x9f, 0x02, 0x03, 0xff, 0xff,
                ],
                json!({"a": 1, "b": [2, 3]}),
            ),
            (&[0x42, 0x01, 0x02], json!("AQI=")),
            (&[0xa1, 0x61, 0x61, 0xf6], json!({})),
            (&[], json!({})),
        ];
        for (bytes, want) in cases {
            assert_eq!(&decode(bytes).unwrap(), want, "{bytes:02x?}");
        }
    }

    /// Hostile inputs are typed errors.
    #[test]
    fn refusals() {
        assert_eq!(
            decode(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(CborError::Truncated)
        );
        assert_eq!(decode(&[0x01, 0x02]), Err(CborError::Trailing(1)));
        assert_eq!(decode(&[0xa1, 0x01, 0x01]), Err(CborError::NonTextKey));
        assert_eq!(decode(&[0x62, 0xff, 0xfe]), Err(CborError::BadUtf8));
        assert_eq!(decode(&[0xc2, 0x40]), Err(CborError::UnsupportedTag(2)));
        assert_eq!(decode(&[0xf9, 0x7c, 0x00]), Err(CborError::NotFinite));
        assert_eq!(decode(&[0x1c]), Err(CborError::Invalid(0x1c)));
        assert_eq!(decode(&[0xff]), Err(CborError::Invalid(0xff)));
        assert_eq!(decode(&[0x81; 200]), Err(CborError::TooDeep));
        assert_eq!(
            decode(&[0x7f, 0x41, 0x00, 0xff]),
            Err(CborError::Invalid(0x41))
        );
    }

    /// Timestamps go out as tag 1 under the named keys only; integers take the
    /// shortest head.
    #[test]
    fn encoding() {
        let v = json!({"CreateDate": 1.5, "N": 500});
        let b = encode(&v, &|k| k == "CreateDate");
        assert_eq!(
            b,
            [
                &[0xa2, 0x6a][..],
                b"CreateDate",
                &[0xc1, 0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0x61, b'N', 0x19, 0x01, 0xf4]
            ]
            .concat()
        );
        assert_eq!(decode(&b).unwrap(), v);
        assert_eq!(encode(&json!(-1), &no_ts), [0x20]);
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(|n| json!(n)),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e15f64..1e15).prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6).prop_map(|m| {
                    // Null map values are dropped on decode (as botocore does).
                    Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect())
                }),
            ]
        })
    }

    proptest! {
        /// Any value round-trips through encode and decode.
        #[test]
        fn round_trip(v in arb_value()) {
            let b = encode(&v, &|k| k.starts_with('a'));
            prop_assert_eq!(decode(&b).unwrap(), v);
        }

        /// Any bytes: decode returns without panicking.
        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
