//! DNS messages on the wire (RFC 1035 §4): parsing of untrusted bytes and encoding with
//! name compression. Pure: no I/O, no allocation bounded by anything but the input.
//!
//! Parsing never panics and never loops: compression pointers may point anywhere
//! earlier *or* later in the message (RFC 1035 §4.1.4 does not forbid forward
//! pointers), so the number of jumps per name is bounded ([`MAX_POINTER_JUMPS`]) and a
//! name is at most 255 octets (§2.3.4).

use std::net::Ipv4Addr;

/// Record types berth answers for (RFC 1035 §3.2.2, RFC 2782, RFC 6891).
pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_ANY: u16 = 255;
/// The Internet class.
pub const CLASS_IN: u16 = 1;
pub const CLASS_ANY: u16 = 255;

/// Response codes (RFC 1035 §4.1.1).
pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;

/// Longest name on the wire, length octets included (RFC 1035 §2.3.4).
pub const MAX_NAME_OCTETS: usize = 255;
/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_OCTETS: usize = 63;
/// Compression pointers followed per name before the name is refused: a name has at
/// most 127 labels, so more jumps than that can only be a loop.
pub const MAX_POINTER_JUMPS: usize = 128;
/// Records of one section parsed at most (a query has a handful; this bounds the work
/// a hostile message with a huge count can cause).
pub const MAX_SECTION_RECORDS: usize = 256;

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message ends inside {0}")]
    Truncated(&'static str),
    #[error("label longer than 63 octets")]
    LabelTooLong,
    #[error("name longer than 255 octets")]
    NameTooLong,
    #[error("compression pointer loop or too many pointers")]
    PointerLoop,
    #[error("reserved label type {0:#04x}")]
    BadLabelType(u8),
    #[error("{0} section has more than {MAX_SECTION_RECORDS} records")]
    TooManyRecords(&'static str),
    #[error("record data of type {0} is malformed")]
    BadRdata(u16),
}

/// A domain name: its labels, as sent (case kept; compare with [`Name::key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Name {
    pub labels: Vec<Vec<u8>>,
}

impl Name {
    /// The root name.
    pub fn root() -> Self {
        Name { labels: Vec::new() }
    }

    /// Parses dotted text (`a.b.c`, a trailing dot optional). Labels may not be empty
    /// or longer than 63 octets; the name may not exceed 255 octets.
    pub fn parse(text: &str) -> Option<Name> {
        let t = text.strip_suffix('.').unwrap_or(text);
        if t.is_empty() {
            return Some(Name::root());
        }
        let labels: Vec<Vec<u8>> = t.split('.').map(|l| l.as_bytes().to_vec()).collect();
        let n = Name { labels };
        let ok = n
            .labels
            .iter()
            .all(|l| !l.is_empty() && l.len() <= MAX_LABEL_OCTETS)
            && n.wire_len() <= MAX_NAME_OCTETS;
        ok.then_some(n)
    }

    /// Octets on the wire, uncompressed.
    pub fn wire_len(&self) -> usize {
        self.labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1
    }

    /// The name lowercased (ASCII only, RFC 4343): the form names are compared in.
    pub fn key(&self) -> Name {
        Name {
            labels: self.labels.iter().map(|l| l.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether `self` is `zone` or below it (case-insensitive).
    pub fn is_within(&self, zone: &Name) -> bool {
        self.labels.len() >= zone.labels.len()
            && self
                .labels
                .iter()
                .rev()
                .zip(zone.labels.iter().rev())
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
    }

    /// The name without its first label (the root stays the root).
    pub fn parent(&self) -> Name {
        Name {
            labels: self.labels.iter().skip(1).cloned().collect(),
        }
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.labels.is_empty() {
            return f.write_str(".");
        }
        for (i, l) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            for &b in l {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    write!(f, "{}", b as char)?;
                } else {
                    write!(f, "\\{b:03}")?;
                }
            }
        }
        Ok(())
    }
}

/// A question (RFC 1035 §4.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: u16,
    pub qclass: u16,
}

/// Record data berth understands; anything else is kept as raw octets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: Name,
    },
    Soa {
        mname: Name,
        rname: Name,
        serial: u32,
        refresh: u32,
        retry: u32,
        expire: u32,
        minimum: u32,
    },
    /// Data of any other type (including OPT options), uninterpreted.
    Raw(Vec<u8>),
}

/// A resource record (RFC 1035 §4.1.3). For OPT (RFC 6891 §6.1.2) `class` is the
/// requester's UDP payload size and `ttl` carries the extended RCODE and flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: Name,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    pub data: RData,
}

/// A whole message. Header flags are spelled out; counts come from the sections.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub id: u16,
    pub qr: bool,
    pub opcode: u8,
    pub aa: bool,
    pub tc: bool,
    pub rd: bool,
    pub ra: bool,
    /// The Z and AD/CD bits, kept as sent (3 bits).
    pub z: u8,
    pub rcode: u8,
    pub questions: Vec<Question>,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
}

/// The fixed header's flags and counts, readable from any message of 12 octets or more
/// (so even a message whose body is garbage can be answered with FORMERR).
pub fn header_id_and_flags(bytes: &[u8]) -> Option<(u16, u16)> {
    if bytes.len() < 12 {
        return None;
    }
    Some((
        u16::from_be_bytes([bytes[0], bytes[1]]),
        u16::from_be_bytes([bytes[2], bytes[3]]),
    ))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(ParseError::Truncated(what))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A possibly compressed name starting at the current position.
    fn name(&mut self) -> Result<Name, ParseError> {
        let (name, next) = read_name(self.buf, self.pos)?;
        self.pos = next;
        Ok(name)
    }
}

/// Reads a name at `start`; returns it and the position after it (after the first
/// pointer, if the name was compressed).
fn read_name(buf: &[u8], start: usize) -> Result<(Name, usize), ParseError> {
    let mut labels = Vec::new();
    let mut pos = start;
    let mut after: Option<usize> = None;
    let mut jumps = 0;
    let mut octets = 1;
    loop {
        let len = *buf.get(pos).ok_or(ParseError::Truncated("a name"))?;
        match len & 0xC0 {
            0x00 => {
                if len == 0 {
                    return Ok((Name { labels }, after.unwrap_or(pos + 1)));
                }
                let l = len as usize;
                let label = buf
                    .get(pos + 1..pos + 1 + l)
                    .ok_or(ParseError::Truncated("a label"))?;
                octets += l + 1;
                if octets > MAX_NAME_OCTETS {
                    return Err(ParseError::NameTooLong);
                }
                labels.push(label.to_vec());
                pos += 1 + l;
            }
            0xC0 => {
                let lo = *buf.get(pos + 1).ok_or(ParseError::Truncated("a pointer"))?;
                jumps += 1;
                if jumps > MAX_POINTER_JUMPS {
                    return Err(ParseError::PointerLoop);
                }
                if after.is_none() {
                    after = Some(pos + 2);
                }
                pos = (((len & 0x3F) as usize) << 8) | lo as usize;
            }
            other => return Err(ParseError::BadLabelType(other)),
        }
    }
}

fn read_record(r: &mut Reader<'_>) -> Result<Record, ParseError> {
    let name = r.name()?;
    let rtype = r.u16("a record type")?;
    let class = r.u16("a record class")?;
    let ttl = r.u32("a record ttl")?;
    let rdlen = r.u16("a record length")? as usize;
    let start = r.pos;
    let raw = r.take(rdlen, "record data")?;
    let end = start + rdlen;
    let bad = || ParseError::BadRdata(rtype);
    let data = match rtype {
        TYPE_A if rdlen == 4 => RData::A(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        TYPE_A => return Err(bad()),
        TYPE_SRV => {
            if rdlen < 7 {
                return Err(bad());
            }
            let (target, next) = read_name(r.buf, start + 6)?;
            if next != end {
                return Err(bad());
            }
            RData::Srv {
                priority: u16::from_be_bytes([raw[0], raw[1]]),
                weight: u16::from_be_bytes([raw[2], raw[3]]),
                port: u16::from_be_bytes([raw[4], raw[5]]),
                target,
            }
        }
        TYPE_SOA => {
            let (mname, p) = read_name(r.buf, start)?;
            let (rname, p) = read_name(r.buf, p)?;
            if p + 20 != end {
                return Err(bad());
            }
            let n = |i: usize| {
                let b = &r.buf[p + i * 4..p + i * 4 + 4];
                u32::from_be_bytes([b[0], b[1], b[2], b[3]])
            };
            RData::Soa {
                mname,
                rname,
                serial: n(0),
                refresh: n(1),
                retry: n(2),
                expire: n(3),
                minimum: n(4),
            }
        }
        _ => RData::Raw(raw.to_vec()),
    };
    Ok(Record {
        name,
        rtype,
        class,
        ttl,
        data,
    })
}

impl Message {
    /// A recursion-desired query for `name` (class IN).
    pub fn query(id: u16, name: Name, qtype: u16) -> Message {
        Message {
            id,
            rd: true,
            questions: vec![Question {
                name,
                qtype,
                qclass: CLASS_IN,
            }],
            ..Message::default()
        }
    }

    /// Parses a whole message. Octets after the last counted record are ignored (as
    /// most servers do).
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        let mut r = Reader { buf: bytes, pos: 0 };
        let id = r.u16("the header")?;
        let flags = r.u16("the header")?;
        let qd = r.u16("the header")? as usize;
        let an = r.u16("the header")? as usize;
        let ns = r.u16("the header")? as usize;
        let ar = r.u16("the header")? as usize;
        let mut m = Message {
            id,
            qr: flags & 0x8000 != 0,
            opcode: ((flags >> 11) & 0xF) as u8,
            aa: flags & 0x0400 != 0,
            tc: flags & 0x0200 != 0,
            rd: flags & 0x0100 != 0,
            ra: flags & 0x0080 != 0,
            z: ((flags >> 4) & 0x7) as u8,
            rcode: (flags & 0xF) as u8,
            ..Message::default()
        };
        if qd > MAX_SECTION_RECORDS {
            return Err(ParseError::TooManyRecords("question"));
        }
        for _ in 0..qd {
            let name = r.name()?;
            let qtype = r.u16("a question")?;
            let qclass = r.u16("a question")?;
            m.questions.push(Question {
                name,
                qtype,
                qclass,
            });
        }
        for (count, section, what) in [
            (an, &mut m.answers, "answer"),
            (ns, &mut m.authority, "authority"),
            (ar, &mut m.additional, "additional"),
        ] {
            if count > MAX_SECTION_RECORDS {
                return Err(ParseError::TooManyRecords(what));
            }
            for _ in 0..count {
                section.push(read_record(&mut r)?);
            }
        }
        Ok(m)
    }

    /// The header's flags word.
    pub fn flags(&self) -> u16 {
        ((self.qr as u16) << 15)
            | (((self.opcode & 0xF) as u16) << 11)
            | ((self.aa as u16) << 10)
            | ((self.tc as u16) << 9)
            | ((self.rd as u16) << 8)
            | ((self.ra as u16) << 7)
            | (((self.z & 0x7) as u16) << 4)
            | (self.rcode & 0xF) as u16
    }

    /// The addresses of the A records in the answer section, sorted.
    pub fn answer_ipv4s(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self
            .answers
            .iter()
            .filter_map(|r| match r.data {
                RData::A(ip) => Some(ip),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    /// The requester's EDNS0 OPT record, if any (RFC 6891 §6.1.1).
    pub fn opt(&self) -> Option<&Record> {
        self.additional.iter().find(|r| r.rtype == TYPE_OPT)
    }

    /// Encodes the message, compressing names (RFC 1035 §4.1.4).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer {
            out: Vec::with_capacity(512),
            names: Vec::new(),
        };
        w.out.extend_from_slice(&self.id.to_be_bytes());
        w.out.extend_from_slice(&self.flags().to_be_bytes());
        for n in [
            self.questions.len(),
            self.answers.len(),
            self.authority.len(),
            self.additional.len(),
        ] {
            w.out
                .extend_from_slice(&(n.min(u16::MAX as usize) as u16).to_be_bytes());
        }
        for q in &self.questions {
            w.name(&q.name);
            w.out.extend_from_slice(&q.qtype.to_be_bytes());
            w.out.extend_from_slice(&q.qclass.to_be_bytes());
        }
        for r in self
            .answers
            .iter()
            .chain(&self.authority)
            .chain(&self.additional)
        {
            w.record(r);
        }
        w.out
    }
}

struct Writer<'a> {
    out: Vec<u8>,
    /// Name suffixes already written and their offsets, for compression: a response
    /// holds a handful of names, so a scan (ASCII case-insensitive, no allocation)
    /// beats hashing owned copies.
    names: Vec<(&'a [Vec<u8>], u16)>,
}

fn same_suffix(a: &[Vec<u8>], b: &[Vec<u8>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
}

impl<'a> Writer<'a> {
    fn name(&mut self, name: &'a Name) {
        for i in 0..name.labels.len() {
            let suffix = &name.labels[i..];
            if let Some((_, off)) = self.names.iter().find(|(n, _)| same_suffix(n, suffix)) {
                self.out.extend_from_slice(&(0xC000 | *off).to_be_bytes());
                return;
            }
            // Only offsets below 0x4000 can be pointed at (14 bits).
            if self.out.len() < 0x4000 {
                self.names.push((suffix, self.out.len() as u16));
            }
            let l = &name.labels[i];
            self.out.push(l.len() as u8);
            self.out.extend_from_slice(l);
        }
        self.out.push(0);
    }

    fn record(&mut self, r: &'a Record) {
        self.name(&r.name);
        self.out.extend_from_slice(&r.rtype.to_be_bytes());
        self.out.extend_from_slice(&r.class.to_be_bytes());
        self.out.extend_from_slice(&r.ttl.to_be_bytes());
        let len_at = self.out.len();
        self.out.extend_from_slice(&[0, 0]);
        match &r.data {
            RData::A(ip) => self.out.extend_from_slice(&ip.octets()),
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                self.out.extend_from_slice(&priority.to_be_bytes());
                self.out.extend_from_slice(&weight.to_be_bytes());
                self.out.extend_from_slice(&port.to_be_bytes());
                // RFC 2782: the target "MUST NOT" be compressed... except that RFC
                // 3597 §4 allows decompression of SRV; write it whole to be safe.
                for l in &target.labels {
                    self.out.push(l.len() as u8);
                    self.out.extend_from_slice(l);
                }
                self.out.push(0);
            }
            RData::Soa {
                mname,
                rname,
                serial,
                refresh,
                retry,
                expire,
                minimum,
            } => {
                self.name(mname);
                self.name(rname);
                for n in [serial, refresh, retry, expire, minimum] {
                    self.out.extend_from_slice(&n.to_be_bytes());
                }
            }
            RData::Raw(b) => self.out.extend_from_slice(b),
        }
        let len = (self.out.len() - len_at - 2).min(u16::MAX as usize) as u16;
        self.out[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn query(name: &str, qtype: u16) -> Message {
        Message::query(0x1234, Name::parse(name).unwrap(), qtype)
    }

    /// A query encodes to the bytes RFC 1035 describes and parses back.
    #[test]
    fn query_round_trip() {
        let q = query("web.forum.local", TYPE_A);
        let b = q.encode();
        assert_eq!(&b[..12], &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[12..17], b"\x03web\x05");
        assert_eq!(Message::parse(&b).unwrap(), q);
    }

    /// Names repeated in a response are compressed to pointers, case-insensitively.
    #[test]
    fn compression() {
        let mut m = query("web.forum.local", TYPE_A);
        for i in 0..3 {
            m.answers.push(Record {
                name: Name::parse("WEB.forum.local").unwrap(),
                rtype: TYPE_A,
                class: CLASS_IN,
                ttl: 10,
                data: RData::A(Ipv4Addr::new(10, 0, 0, i)),
            });
        }
        let b = m.encode();
        // header 12 + question (17 + 4) + 3 answers of (2 pointer + 10 + 4)
        assert_eq!(b.len(), 12 + 21 + 3 * 16);
        let back = Message::parse(&b).unwrap();
        assert_eq!(back.answers.len(), 3);
        assert_eq!(back.answers[0].name.key(), m.answers[0].name.key());
    }

    /// Pointer loops, truncation and oversized names are errors, not hangs or panics.
    #[test]
    fn hostile_names() {
        let mut b = query("a", TYPE_A).encode();
        // question name is at 12: make it point at itself
        b.truncate(12);
        b.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(Message::parse(&b), Err(ParseError::PointerLoop));
        let mut long = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.push(0);
        long.extend_from_slice(&[0, 1, 0, 1]);
        assert_eq!(Message::parse(&long), Err(ParseError::NameTooLong));
        assert!(matches!(
            Message::parse(&[0, 1, 0, 0, 0, 1]),
            Err(ParseError::Truncated(_))
        ));
        let mut bad = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 1, 0, 1];
        assert_eq!(Message::parse(&bad), Err(ParseError::BadLabelType(0x40)));
        bad[5] = 255;
        bad[4] = 255;
        assert!(Message::parse(&bad).is_err());
    }

    /// Name text parsing: limits and trailing dots.
    #[test]
    fn name_parse() {
        assert_eq!(Name::parse("a.b.").unwrap(), Name::parse("a.b").unwrap());
        assert!(Name::parse("a..b").is_none());
        assert!(Name::parse(&"x".repeat(64)).is_none());
        assert!(Name::parse("Web.Forum")
            .unwrap()
            .is_within(&Name::parse("forum").unwrap()));
        assert!(!Name::parse("forum")
            .unwrap()
            .is_within(&Name::parse("a.forum").unwrap()));
        assert_eq!(Name::parse("a.b").unwrap().to_string(), "a.b");
    }

    fn arb_name() -> impl Strategy<Value = Name> {
        // Lowercase only: compression is case-insensitive, so a second spelling of a
        // name would come back in the first one's case.
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..20), 0..6).prop_map(|labels| {
            Name {
                labels: labels.into_iter().map(|l| l.to_ascii_lowercase()).collect(),
            }
        })
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            arb_name(),
            any::<u32>(),
            prop_oneof![
                any::<[u8; 4]>().prop_map(|o| (TYPE_A, RData::A(Ipv4Addr::from(o)))),
                (any::<u16>(), any::<u16>(), any::<u16>(), arb_name()).prop_map(
                    |(priority, weight, port, target)| (
                        TYPE_SRV,
                        RData::Srv {
                            priority,
                            weight,
                            port,
                            target
                        }
                    )
                ),
                (arb_name(), arb_name(), any::<[u32; 5]>()).prop_map(|(mname, rname, n)| (
                    TYPE_SOA,
                    RData::Soa {
                        mname,
                        rname,
                        serial: n[0],
                        refresh: n[1],
                        retry: n[2],
                        expire: n[3],
                        minimum: n[4]
                    }
                )),
                prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| (TYPE_OPT, RData::Raw(b))),
            ],
        )
            .prop_map(|(name, ttl, (rtype, data))| Record {
                name,
                rtype,
                class: CLASS_IN,
                ttl,
                data,
            })
    }

    proptest! {
        /// Any bytes: parse returns, and whatever parses re-encodes to something that
        /// parses to the same message.
        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(m) = Message::parse(&bytes) {
                prop_assert_eq!(Message::parse(&m.encode()).unwrap().questions, m.questions);
            }
        }

        /// Messages round-trip through encode and parse (compression included).
        #[test]
        fn round_trip(id in any::<u16>(), flags in any::<u16>(),
                      qs in prop::collection::vec((arb_name(), any::<u16>()), 0..3),
                      ans in prop::collection::vec(arb_record(), 0..5),
                      add in prop::collection::vec(arb_record(), 0..3)) {
            let mut m = Message::parse(&[0; 12]).unwrap();
            m.id = id;
            m.qr = flags & 1 != 0; m.aa = flags & 2 != 0; m.tc = flags & 4 != 0;
            m.rd = flags & 8 != 0; m.ra = flags & 16 != 0;
            m.opcode = (flags >> 5) as u8 & 0xF; m.rcode = (flags >> 9) as u8 & 0xF;
            m.z = (flags >> 13) as u8 & 7;
            m.questions = qs.into_iter().map(|(name, qtype)| Question { name, qtype, qclass: CLASS_IN }).collect();
            m.answers = ans;
            m.additional = add;
            prop_assert_eq!(Message::parse(&m.encode()).unwrap(), m);
        }
    }
}
