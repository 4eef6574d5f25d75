//! Arbitrary bytes as a DNS query: parsing must not panic; whatever parses re-encodes
//! to a message that parses; the server's answer over UDP fits the size limit and
//! parses too.
#![no_main]

use std::net::Ipv4Addr;

use berth_dns::wire::Message;
use berth_dns::{respond, Pick, Transport, Zone};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let again = Message::parse(&m.encode()).expect("re-encoded message parses");
        assert_eq!(again.questions, m.questions);
    }
    let mut z = Zone::new(1);
    z.add_namespace("forum.local", 15);
    z.add_a("users.forum.local", 10, Pick::Multivalue, Ipv4Addr::new(10, 0, 0, 1));
    z.add_srv("users.forum.local", 10, Pick::Multivalue, 80, "t1.users.forum.local");
    z.add_a("t1.users.forum.local", 10, Pick::All, Ipv4Addr::new(10, 0, 0, 1));
    for t in [Transport::Udp, Transport::Tcp] {
        if let Some(r) = respond(&z, data, t, data.len() as u64) {
            assert!(t == Transport::Tcp || r.len() <= berth_dns::zone::MAX_UDP_PAYLOAD);
            Message::parse(&r).expect("response parses");
        }
    }
});
