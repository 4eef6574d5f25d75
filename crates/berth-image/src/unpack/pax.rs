//! PAX extended headers (POSIX.1-2008 `pax`, "pax Extended Header") and the subset of
//! their keys a container layer needs. Pure: bytes in, fields out.

/// The fields a PAX `x` header overrides for the entry that follows it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PaxFields {
    pub(crate) path: Option<Vec<u8>>,
    pub(crate) linkpath: Option<Vec<u8>>,
    pub(crate) size: Option<u64>,
    pub(crate) uid: Option<u64>,
    pub(crate) gid: Option<u64>,
    /// Seconds and nanoseconds since the epoch (may be negative).
    pub(crate) mtime: Option<(i64, u32)>,
    /// `SCHILY.xattr.<name>` records, in order.
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why a PAX header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaxProblem {
    /// A record is not `<len> <key>=<value>\n`.
    #[error("malformed pax record")]
    Malformed,
    /// A numeric record (`size`, `uid`, `gid`, `mtime`) does not parse.
    #[error("invalid number in pax record {0}")]
    BadNumber(String),
    /// GNU sparse files are not supported.
    #[error("gnu sparse files are not supported")]
    Sparse,
}

const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// Parses a PAX extended header body; later records win, as in GNU tar.
pub(crate) fn parse(bytes: &[u8]) -> Result<PaxFields, PaxProblem> {
    let mut out = PaxFields::default();
    for rec in tar::PaxExtensions::new(bytes) {
        let rec = rec.map_err(|_| PaxProblem::Malformed)?;
        let key = rec.key_bytes();
        let value = rec.value_bytes();
        let num = |key: &str| -> Result<u64, PaxProblem> {
            std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| PaxProblem::BadNumber(key.to_string()))
        };
        match key {
            b"path" => out.path = Some(value.to_vec()),
            b"linkpath" => out.linkpath = Some(value.to_vec()),
            b"size" => out.size = Some(num("size")?),
            b"uid" => out.uid = Some(num("uid")?),
            b"gid" => out.gid = Some(num("gid")?),
            b"mtime" => {
                out.mtime = Some(parse_time(value).ok_or(PaxProblem::BadNumber("mtime".into()))?)
            }
            k if k.starts_with(b"GNU.sparse.") => return Err(PaxProblem::Sparse),
            k if k.starts_with(XATTR_PREFIX) => {
                let name = k[XATTR_PREFIX.len()..].to_vec();
                out.xattrs.retain(|(n, _)| *n != name);
                out.xattrs.push((name, value.to_vec()));
            }
            // atime, ctime, uname, gname, comment, charset, LIBARCHIVE.*: not needed.
            _ => {}
        }
    }
    Ok(out)
}

/// `[-]seconds[.fraction]` as in the PAX `mtime` record.
fn parse_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    if !neg {
        return Some((secs, nanos));
    }
    // -1.25 is 1.25 s before the epoch: (-2 s, 0.75 s).
    if nanos == 0 {
        Some((-secs, 0))
    } else {
        Some((-secs - 1, 1_000_000_000 - nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes never panic the PAX parser, and a parsed mtime's
        /// nanoseconds are always below one second.
        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(f) = parse(&bytes) {
                prop_assert!(f.mtime.is_none_or(|(_, ns)| ns < 1_000_000_000));
            }
        }

        /// Any `[-]digits[.digits]` mtime parses with nanoseconds below one second.
        #[test]
        fn mtimes_parse(secs in 0i64..1i64 << 40, frac in "[0-9]{0,12}", neg: bool) {
            let text = format!("{}{secs}{}{frac}", if neg { "-" } else { "" }, if frac.is_empty() { "" } else { "." });
            let (s, ns) = parse_time(text.as_bytes()).unwrap();
            prop_assert!(ns < 1_000_000_000);
            let want = if neg { s <= -secs } else { s == secs };
            prop_assert!(want);
        }
    }

    fn rec(key: &str, value: &[u8]) -> Vec<u8> {
        let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body_len + 1;
        while len != body_len + len.to_string().len() {
            len = body_len + len.to_string().len();
        }
        let mut out = format!("{len} {key}=").into_bytes();
        out.extend_from_slice(value);
        out.push(b'\n');
        out
    }

    /// Path, ids, time and xattrs are read; later records win.
    #[test]
    fn parses_fields() {
        let mut b = rec("path", b"a/long/name");
        b.extend(rec("uid", b"100000"));
        b.extend(rec("mtime", b"1700000000.5"));
        b.extend(rec("SCHILY.xattr.user.x", b"1"));
        b.extend(rec("SCHILY.xattr.user.x", b"2"));
        b.extend(rec("atime", b"whatever"));
        let f = parse(&b).unwrap();
        assert_eq!(f.path.as_deref(), Some(&b"a/long/name"[..]));
        assert_eq!(f.uid, Some(100000));
        assert_eq!(f.mtime, Some((1_700_000_000, 500_000_000)));
        assert_eq!(f.xattrs, vec![(b"user.x".to_vec(), b"2".to_vec())]);
    }

    /// Bad numbers, sparse files and garbage are refused.
    #[test]
    fn refuses_bad_records() {
        assert_eq!(
            parse(&rec("uid", b"-1")),
            Err(PaxProblem::BadNumber("uid".into()))
        );
        assert_eq!(
            parse(&rec("GNU.sparse.map", b"0,1")),
            Err(PaxProblem::Sparse)
        );
        assert_eq!(parse(b"99 x"), Err(PaxProblem::Malformed));
        assert_eq!(parse_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_time(b"12x"), None);
    }
}
