//! The forum example's shared parts: a small HTTP/1.1 server and client ([`http`]), a
//! DNS resolver that asks the nameservers of `/etc/resolv.conf` ([`dns`]), the
//! datastore's client ([`store`]) and what every service does at start ([`service`]).
//!
//! The programs are deliberately plain: std threads and blocking sockets, no runtime,
//! statically linked so that each image is `FROM scratch` plus one file.
#![forbid(unsafe_code)]

pub mod dns;
pub mod entity;
pub mod http;
pub mod messages;
pub mod service;
pub mod store;
