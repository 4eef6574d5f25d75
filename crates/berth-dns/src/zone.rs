//! The records berth is authoritative for and how a query is answered from them. Pure:
//! the zone is plain data built by its owner (Cloud Map, `berth-discovery`), and
//! [`respond`] maps query bytes to response bytes with the randomness handed in.
//!
//! What a query gets (the promises of `docs/dns.md`):
//! - a name inside a namespace with records of the asked type: those records,
//!   authoritative (AA); for multivalue sets at most [`MULTIVALUE_MAX`] of them, chosen
//!   at random when there are more (as Route 53 answers Cloud Map's MULTIVALUE); for
//!   weighted sets one at random;
//! - SRV answers carry the A records of their targets in the additional section;
//! - a name inside a namespace without records of that type (or an empty non-terminal
//!   such as `_tcp.ns`): NOERROR, no answers, the namespace's SOA in the authority
//!   section (NODATA, RFC 2308 §2.2); a name that does not exist: NXDOMAIN with the SOA
//!   (RFC 2308 §2.1);
//! - a name outside every namespace: REFUSED, never forwarded (nothing leaves the
//!   machine);
//! - over UDP, a response larger than the requester can take (512 octets without EDNS0,
//!   RFC 1035 §4.2.1; the OPT record's size with it, at most [`MAX_UDP_PAYLOAD`]) is
//!   sent with TC set and no records, so the requester retries over TCP.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use crate::wire::*;

/// Route 53 answers a multivalue query with up to eight healthy records.
pub const MULTIVALUE_MAX: usize = 8;
/// UDP payload berth accepts and advertises with EDNS0 (RFC 6891 §6.2.5; 1232 is the
/// DNS flag day 2020 value that avoids IP fragmentation).
pub const MAX_UDP_PAYLOAD: usize = 1232;
/// Largest response without EDNS0 (RFC 1035 §4.2.1).
pub const CLASSIC_UDP_PAYLOAD: usize = 512;
/// SOA timers (RFC 1912 §2.2 recommendations; Route 53 uses the same refresh/retry/expire).
const SOA_REFRESH: u32 = 7200;
const SOA_RETRY: u32 = 900;
const SOA_EXPIRE: u32 = 1_209_600;

/// How many records of a set a query gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Every record.
    All,
    /// Up to [`MULTIVALUE_MAX`], at random when there are more.
    Multivalue,
    /// One at random (Cloud Map's WEIGHTED: every instance has the same weight).
    One,
}

#[derive(Debug, Clone)]
struct RRset<T> {
    ttl: u32,
    pick: Pick,
    items: Vec<T>,
}

impl<T: Clone + PartialEq> RRset<T> {
    fn push(set: &mut Option<RRset<T>>, ttl: u32, pick: Pick, item: T) {
        let s = set.get_or_insert_with(|| RRset {
            ttl,
            pick,
            items: Vec::new(),
        });
        if !s.items.contains(&item) {
            s.items.push(item);
        }
    }

    fn chosen(&self, seed: u64) -> Vec<T> {
        let mut rng = SplitMix(seed);
        let n = self.items.len();
        match self.pick {
            Pick::One if n > 0 => vec![self.items[(rng.next() % n as u64) as usize].clone()],
            Pick::Multivalue if n > MULTIVALUE_MAX => {
                // A partial Fisher-Yates shuffle: MULTIVALUE_MAX distinct records.
                let mut idx: Vec<usize> = (0..n).collect();
                for i in 0..MULTIVALUE_MAX {
                    let j = i + (rng.next() % (n - i) as u64) as usize;
                    idx.swap(i, j);
                }
                idx[..MULTIVALUE_MAX]
                    .iter()
                    .map(|&i| self.items[i].clone())
                    .collect()
            }
            _ => self.items.clone(),
        }
    }
}

/// splitmix64: small, good enough to spread picks; the seed comes from the caller.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[derive(Debug, Clone, PartialEq)]
struct SrvData {
    port: u16,
    target: Name,
}

#[derive(Debug, Clone, Default)]
struct Node {
    a: Option<RRset<Ipv4Addr>>,
    srv: Option<RRset<SrvData>>,
}

#[derive(Debug, Clone)]
struct Apex {
    name: Name,
    soa_ttl: u32,
}

/// How the query arrived: bounds the response size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The names berth serves. Build with [`Zone::add_namespace`], [`Zone::add_a`] and
/// [`Zone::add_srv`]; answer with [`respond`].
#[derive(Debug, Clone, Default)]
pub struct Zone {
    serial: u32,
    apexes: Vec<Apex>,
    nodes: HashMap<Name, Node>,
    /// Every name that has records, and its ancestors (empty non-terminals exist too).
    existing: HashSet<Name>,
}

impl Zone {
    /// An empty zone whose SOA records carry `serial`.
    pub fn new(serial: u32) -> Zone {
        Zone {
            serial,
            ..Zone::default()
        }
    }

    /// Makes berth authoritative for `name` and everything below it; NXDOMAIN and NODATA
    /// answers carry an SOA whose TTL and minimum are `soa_ttl` seconds. Returns false
    /// if `name` is not a valid domain name.
    pub fn add_namespace(&mut self, name: &str, soa_ttl: u32) -> bool {
        let Some(n) = Name::parse(name) else {
            return false;
        };
        self.apexes.push(Apex {
            name: n.key(),
            soa_ttl,
        });
        // The most specific namespace wins (a.b inside b).
        self.apexes
            .sort_by_key(|a| std::cmp::Reverse(a.name.labels.len()));
        true
    }

    fn node(&mut self, name: &str) -> Option<&mut Node> {
        let n = Name::parse(name)?.key();
        let mut up = n.clone();
        while !up.labels.is_empty() && self.existing.insert(up.clone()) {
            up = up.parent();
        }
        Some(self.nodes.entry(n).or_default())
    }

    /// Adds an A record (`ttl` seconds) to the set at `name`; the set's TTL and pick
    /// are those of its first record. Returns false if `name` is not valid.
    pub fn add_a(&mut self, name: &str, ttl: u32, pick: Pick, ip: Ipv4Addr) -> bool {
        match self.node(name) {
            Some(n) => {
                RRset::push(&mut n.a, ttl, pick, ip);
                true
            }
            None => false,
        }
    }

    /// Adds an SRV record (priority 1, weight 1, as Cloud Map writes them) pointing at
    /// `target`:`port`. Returns false if a name is not valid.
    pub fn add_srv(&mut self, name: &str, ttl: u32, pick: Pick, port: u16, target: &str) -> bool {
        let Some(target) = Name::parse(target) else {
            return false;
        };
        match self.node(name) {
            Some(n) => {
                RRset::push(&mut n.srv, ttl, pick, SrvData { port, target });
                true
            }
            None => false,
        }
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    fn soa(&self, apex: &Apex) -> Record {
        let mut mname = apex.name.clone();
        mname.labels.insert(0, b"ns1".to_vec());
        let mut rname = apex.name.clone();
        rname.labels.insert(0, b"hostmaster".to_vec());
        Record {
            name: apex.name.clone(),
            rtype: TYPE_SOA,
            class: CLASS_IN,
            ttl: apex.soa_ttl,
            data: RData::Soa {
                mname,
                rname,
                serial: self.serial,
                refresh: SOA_REFRESH,
                retry: SOA_RETRY,
                expire: SOA_EXPIRE,
                minimum: apex.soa_ttl,
            },
        }
    }

    fn a_records(&self, name: &Name, key: &Name, seed: u64) -> Vec<Record> {
        let Some(set) = self.nodes.get(key).and_then(|n| n.a.as_ref()) else {
            return Vec::new();
        };
        set.chosen(seed)
            .into_iter()
            .map(|ip| Record {
                name: name.clone(),
                rtype: TYPE_A,
                class: CLASS_IN,
                ttl: set.ttl,
                data: RData::A(ip),
            })
            .collect()
    }

    /// Fills `resp` (a copy of the query's header and question) with the answer.
    fn answer_into(&self, q: &Question, resp: &mut Message, seed: u64) {
        let key = q.name.key();
        let Some(apex) = self.apexes.iter().find(|a| key.is_within(&a.name)) else {
            resp.rcode = RCODE_REFUSED;
            return;
        };
        resp.aa = true;
        if !(key == apex.name || self.existing.contains(&key)) {
            resp.rcode = RCODE_NXDOMAIN;
            resp.authority.push(self.soa(apex));
            return;
        }
        let want = |t: u16| q.qtype == t || q.qtype == TYPE_ANY;
        if want(TYPE_SOA) && key == apex.name {
            resp.answers.push(self.soa(apex));
        }
        if want(TYPE_A) {
            resp.answers.extend(self.a_records(&q.name, &key, seed));
        }
        if want(TYPE_SRV) {
            if let Some(set) = self.nodes.get(&key).and_then(|n| n.srv.as_ref()) {
                for (i, s) in set.chosen(seed).into_iter().enumerate() {
                    let tkey = s.target.key();
                    resp.additional.extend(self.a_records(
                        &s.target,
                        &tkey,
                        seed.wrapping_add(i as u64 + 1),
                    ));
                    resp.answers.push(Record {
                        name: q.name.clone(),
                        rtype: TYPE_SRV,
                        class: CLASS_IN,
                        ttl: set.ttl,
                        data: RData::Srv {
                            priority: 1,
                            weight: 1,
                            port: s.port,
                            target: s.target,
                        },
                    });
                }
            }
        }
        if resp.answers.is_empty() {
            resp.authority.push(self.soa(apex));
        }
    }
}

/// Answers the query in `bytes`; `None` when nothing should be sent back (too short to
/// carry an id, or itself a response). `seed` picks among multivalue records.
pub fn respond(zone: &Zone, bytes: &[u8], transport: Transport, seed: u64) -> Option<Vec<u8>> {
    let (id, flags) = header_id_and_flags(bytes)?;
    if flags & 0x8000 != 0 {
        return None;
    }
    let mut resp = Message {
        id,
        qr: true,
        opcode: ((flags >> 11) & 0xF) as u8,
        rd: flags & 0x0100 != 0,
        ..Message::default()
    };
    let query = match Message::parse(bytes) {
        Ok(q) => q,
        Err(_) => {
            resp.rcode = RCODE_FORMERR;
            return Some(resp.encode());
        }
    };
    resp.questions = query.questions.clone();
    let opt = query.opt().cloned();
    let mut limit = match transport {
        Transport::Tcp => u16::MAX as usize,
        Transport::Udp => CLASSIC_UDP_PAYLOAD,
    };
    if let Some(o) = &opt {
        if transport == Transport::Udp {
            limit = (o.class as usize).clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD);
        }
    }
    let our_opt = |ext_rcode: u8| Record {
        name: Name::root(),
        rtype: TYPE_OPT,
        class: MAX_UDP_PAYLOAD as u16,
        ttl: (ext_rcode as u32) << 24,
        data: RData::Raw(Vec::new()),
    };
    if let Some(o) = &opt {
        // RFC 6891 §6.1.3: an unknown EDNS version gets BADVERS (extended rcode 16).
        if (o.ttl >> 16) & 0xFF != 0 {
            resp.additional.push(our_opt(1));
            return Some(resp.encode());
        }
    }
    if query.opcode != 0 {
        resp.rcode = RCODE_NOTIMP;
    } else if query.questions.len() != 1
        || query
            .additional
            .iter()
            .filter(|r| r.rtype == TYPE_OPT)
            .count()
            > 1
    {
        resp.rcode = RCODE_FORMERR;
    } else {
        let q = &query.questions[0];
        if !(q.qclass == CLASS_IN || q.qclass == CLASS_ANY) || matches!(q.qtype, 251 | 252) {
            // Other classes and zone transfers (IXFR, AXFR) are not served.
            resp.rcode = RCODE_REFUSED;
        } else {
            zone.answer_into(q, &mut resp, seed);
        }
    }
    if opt.is_some() {
        resp.additional.push(our_opt(0));
    }
    let mut out = resp.encode();
    if out.len() > limit {
        // RFC 2181 §9: set TC; the requester asks again over TCP.
        resp.tc = true;
        resp.answers.clear();
        resp.authority.clear();
        resp.additional.retain(|r| r.rtype == TYPE_OPT);
        out = resp.encode();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn forum() -> Zone {
        let mut z = Zone::new(7);
        assert!(z.add_namespace("forum.local", 30));
        for i in 1..=3 {
            let ip = Ipv4Addr::new(10, 0, 0, i);
            z.add_a("users.forum.local", 10, Pick::Multivalue, ip);
            let host = format!("t{i}.users.forum.local");
            z.add_a(&host, 10, Pick::All, ip);
            z.add_srv(
                "_users._tcp.forum.local",
                10,
                Pick::Multivalue,
                8000 + i as u16,
                &host,
            );
        }
        z
    }

    fn ask(z: &Zone, name: &str, qtype: u16, edns: Option<u16>, t: Transport) -> Message {
        let mut q = Message::query(99, Name::parse(name).unwrap(), qtype);
        if let Some(size) = edns {
            q.additional.push(Record {
                name: Name::root(),
                rtype: TYPE_OPT,
                class: size,
                ttl: 0,
                data: RData::Raw(vec![]),
            });
        }
        Message::parse(&respond(z, &q.encode(), t, 1).unwrap()).unwrap()
    }

    /// A queries get every registered address, authoritative, with the set's TTL;
    /// names are matched case-insensitively and echoed as asked.
    #[test]
    fn a_records() {
        let m = ask(&forum(), "USERS.forum.local", TYPE_A, None, Transport::Udp);
        assert_eq!(
            (m.id, m.qr, m.aa, m.rd, m.rcode),
            (99, true, true, true, RCODE_NOERROR)
        );
        assert_eq!(m.answer_ipv4s().len(), 3);
        assert!(m.answers.iter().all(|r| r.ttl == 10));
        assert_eq!(m.answers[0].name.labels[0], b"USERS");
    }

    /// SRV answers carry ports and targets, and the targets' A records as additional data.
    #[test]
    fn srv_records() {
        let m = ask(
            &forum(),
            "_users._tcp.forum.local",
            TYPE_SRV,
            None,
            Transport::Udp,
        );
        let mut ports: Vec<u16> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::Srv { port, .. } => *port,
                _ => 0,
            })
            .collect();
        ports.sort();
        assert_eq!(ports, vec![8001, 8002, 8003]);
        assert_eq!(m.additional.len(), 3);
    }

    /// Unknown names in a namespace: NXDOMAIN with the SOA; empty non-terminals and
    /// other types: NODATA with the SOA; outside: REFUSED without records.
    #[test]
    fn negative_answers() {
        let z = forum();
        let m = ask(&z, "nope.forum.local", TYPE_A, None, Transport::Udp);
        assert_eq!((m.rcode, m.aa, m.answers.len()), (RCODE_NXDOMAIN, true, 0));
        assert_eq!(m.authority[0].rtype, TYPE_SOA);
        assert_eq!(m.authority[0].ttl, 30);
        for (name, t) in [
            ("_tcp.forum.local", TYPE_A),
            ("users.forum.local", TYPE_AAAA),
            ("forum.local", TYPE_A),
        ] {
            let m = ask(&z, name, t, None, Transport::Udp);
            assert_eq!((m.rcode, m.answers.len()), (RCODE_NOERROR, 0), "{name}");
            assert_eq!(m.authority[0].rtype, TYPE_SOA, "{name}");
        }
        let m = ask(&z, "forum.local", TYPE_SOA, None, Transport::Udp);
        assert_eq!(m.answers[0].rtype, TYPE_SOA);
        let m = ask(&z, "example.com", TYPE_A, None, Transport::Udp);
        assert_eq!((m.rcode, m.aa), (RCODE_REFUSED, false));
        assert!(m.answers.is_empty() && m.authority.is_empty());
        let m = ask(&z, "local", TYPE_A, None, Transport::Udp);
        assert_eq!(m.rcode, RCODE_REFUSED);
    }

    /// More than eight multivalue records: eight distinct ones per answer; weighted: one.
    #[test]
    fn picks() {
        let mut z = Zone::new(1);
        z.add_namespace("n", 5);
        for i in 0..20 {
            z.add_a("m.n", 1, Pick::Multivalue, Ipv4Addr::new(10, 0, 1, i));
            z.add_a("w.n", 1, Pick::One, Ipv4Addr::new(10, 0, 1, i));
        }
        let mut seen = HashSet::new();
        for seed in 0..50 {
            let q = ask(&z, "m.n", TYPE_A, None, Transport::Udp);
            let _ = seed;
            let got = q.answer_ipv4s();
            assert_eq!(got.len(), MULTIVALUE_MAX);
            let distinct: HashSet<_> = got.iter().collect();
            assert_eq!(distinct.len(), MULTIVALUE_MAX);
            assert_eq!(
                ask(&z, "w.n", TYPE_A, None, Transport::Udp)
                    .answer_ipv4s()
                    .len(),
                1
            );
            let set = z.nodes[&Name::parse("m.n").unwrap()].a.clone().unwrap();
            seen.extend(set.chosen(seed));
        }
        assert!(
            seen.len() > MULTIVALUE_MAX,
            "different seeds pick different records"
        );
    }

    /// Over 512 octets without EDNS0: TC and no records; with EDNS0 the bigger size is
    /// used and the OPT record answered; TCP is never truncated.
    #[test]
    fn truncation() {
        let mut z = Zone::new(1);
        z.add_namespace("n", 5);
        for i in 0..40u16 {
            let host = format!("instance-with-a-long-name-{i}.svc.n");
            z.add_srv("svc.n", 1, Pick::All, i, &host);
        }
        let m = ask(&z, "svc.n", TYPE_SRV, None, Transport::Udp);
        assert!(m.tc && m.answers.is_empty());
        let m = ask(&z, "svc.n", TYPE_SRV, Some(4096), Transport::Udp);
        assert!(m.tc, "1232 octets are not enough either");
        assert_eq!(m.opt().unwrap().class as usize, MAX_UDP_PAYLOAD);
        let m = ask(&z, "svc.n", TYPE_SRV, None, Transport::Tcp);
        assert!(!m.tc);
        assert_eq!(m.answers.len(), 40);
    }

    /// Malformed queries: FORMERR with the id; responses and runts: no answer.
    #[test]
    fn malformed() {
        let z = forum();
        let r = respond(
            &z,
            &[0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5],
            Transport::Udp,
            0,
        )
        .unwrap();
        let m = Message::parse(&r).unwrap();
        assert_eq!((m.id, m.rcode), (0xABCD, RCODE_FORMERR));
        assert!(respond(&z, &[1, 2, 3], Transport::Udp, 0).is_none());
        assert!(respond(
            &z,
            &[0, 1, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            Transport::Udp,
            0
        )
        .is_none());
        let m = Message::parse(
            &respond(
                &z,
                &[0, 1, 0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                Transport::Udp,
                0,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(m.rcode, RCODE_NOTIMP);
    }

    proptest! {
        /// Whatever arrives, the answer fits the transport's limit and parses.
        #[test]
        fn any_query(bytes in prop::collection::vec(any::<u8>(), 0..300), seed in any::<u64>()) {
            let z = forum();
            if let Some(r) = respond(&z, &bytes, Transport::Udp, seed) {
                prop_assert!(r.len() <= MAX_UDP_PAYLOAD);
                prop_assert!(Message::parse(&r).is_ok());
            }
        }
    }
}
