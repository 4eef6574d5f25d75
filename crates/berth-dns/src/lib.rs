//! berth's DNS server for Cloud Map's private namespaces.
//!
//! - [`wire`]: RFC 1035 messages — parsing untrusted bytes (bounded, never panics),
//!   encoding with name compression; A, SRV, SOA, EDNS0 OPT;
//! - [`zone`]: the records served ([`Zone`], built by `berth-discovery` from the
//!   state store) and [`respond`], the pure query → response function;
//! - [`server`]: [`serve`], the UDP and TCP listeners over sockets the caller binds.
//!
//! The boundary: berth is authoritative for its namespaces and nothing else. A name
//! outside every namespace is REFUSED: no query is forwarded, nothing leaves the
//! machine. See `docs/dns.md` for the promises and their tests.
#![forbid(unsafe_code)]

pub mod server;
pub mod wire;
pub mod zone;

pub use server::serve;
pub use zone::{respond, Pick, Transport, Zone};
