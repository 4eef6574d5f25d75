//! AWS Cloud Map (the ServiceDiscovery API, `Route53AutoNaming_v20170314`): private DNS
//! and HTTP namespaces, services, instances, health, operations and tags, kept in the
//! state store; and the DNS zone they make for `berth-dns`.
//!
//! - [`cbor`]: the CBOR subset of Smithy RPC v2 CBOR (what boto3 sends by default),
//!   mapped to `serde_json::Value`;
//! - [`ops`]: one function per operation and the dispatch table ([`Discovery::call`]);
//!   [`Discovery::register_instance`] / [`Discovery::deregister_instance`] are also
//!   the entry points for ECS services with `serviceRegistries`;
//! - [`zone`]: [`Discovery::zone`], the DNS records of the private namespaces;
//! - [`error`]: Cloud Map's error types and their HTTP statuses.
//!
//! The boundary: the front door authenticates, picks the protocol ([`Protocol`]) and
//! hands in an operation name and its decoded input; this crate returns the output as
//! a `serde_json::Value` or a typed [`DiscoveryError`], which [`encode_output`] and
//! [`encode_error`] render for the protocol the call came in.
//!
//! State (JSON documents in [`berth_state::Store`], written with compare-and-swap):
//! - `/discovery/namespaces/<ns-id>` and `/discovery/namespace-names/<name>` → id;
//! - `/discovery/services/<srv-id>` and `/discovery/service-names/<ns-id>/<name>` → id;
//! - `/discovery/instances/<srv-id>/<instance-id>`: attributes and health;
//! - `/discovery/operations/<id>`: every operation, SUCCESS at once.
//!
//! Creating a service re-writes its namespace, and registering an instance its service,
//! in the same transaction, so a concurrent delete of the parent conflicts and retries
//! (then sees the child and answers ResourceInUse).
#![forbid(unsafe_code)]

pub mod cbor;
pub mod error;
pub mod ops;
pub mod zone;

pub use error::DiscoveryError;
pub use ops::Discovery;

use serde_json::{json, Value};

/// Per-call facts the front door knows.
#[derive(Debug, Clone)]
pub struct Context {
    /// The region of the call's SigV4 credential scope (goes into ARNs).
    pub region: String,
    /// The 12-digit account id (goes into ARNs).
    pub account: String,
}

/// The Smithy service name: the JSON `X-Amz-Target` prefix and the RPC v2 CBOR path
/// segment (`/service/<it>/operation/<Op>`; botocore builds both from `targetPrefix`).
pub const TARGET_PREFIX: &str = "Route53AutoNaming_v20170314";

/// The wire protocols Cloud Map clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Smithy RPC v2 CBOR: `POST /service/…/operation/<Op>`, `application/cbor`.
    Cbor,
    /// AWS JSON 1.1: `X-Amz-Target: Route53AutoNaming_v20170314.<Op>`.
    Json,
}

/// Members whose values are timestamps (the model's `Timestamp` shapes): CBOR tag 1.
fn is_timestamp(key: &str) -> bool {
    matches!(key, "CreateDate" | "UpdateDate")
}

/// Decodes a request body.
pub fn decode_input(protocol: Protocol, body: &[u8]) -> Result<Value, DiscoveryError> {
    match protocol {
        Protocol::Cbor => cbor::decode(body)
            .map_err(|e| DiscoveryError::Serialization(format!("request body: {e}"))),
        Protocol::Json if body.iter().all(u8::is_ascii_whitespace) => Ok(json!({})),
        Protocol::Json => serde_json::from_slice(body).map_err(|e| {
            DiscoveryError::Serialization(format!("could not parse the request body: {e}"))
        }),
    }
}

/// Encodes an operation's output.
pub fn encode_output(protocol: Protocol, v: &Value) -> Vec<u8> {
    match protocol {
        Protocol::Cbor => cbor::encode(v, &is_timestamp),
        Protocol::Json => v.to_string().into_bytes(),
    }
}

/// An error body: `__type`, `message` (what botocore's parsers read) and the modeled
/// members (`Message`, `NamespaceId`, …).
pub fn error_body(
    protocol: Protocol,
    type_name: &str,
    message: &str,
    extra: serde_json::Map<String, Value>,
) -> Vec<u8> {
    let mut m = extra;
    m.insert("__type".into(), type_name.into());
    m.insert("message".into(), message.into());
    m.insert("Message".into(), message.into());
    encode_output(protocol, &Value::Object(m))
}

/// The body of `e`, as [`error_body`].
pub fn encode_error(protocol: Protocol, e: &DiscoveryError) -> Vec<u8> {
    error_body(protocol, e.type_name(), &e.to_string(), e.members())
}

#[cfg(test)]
mod tests;
