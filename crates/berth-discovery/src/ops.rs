//! One function per Cloud Map operation over the state store, and the dispatch table
//! ([`Discovery::call`]). Inputs and outputs are `serde_json::Value`s shaped as the
//! model's members; the protocol (CBOR or JSON) is the front door's business.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use berth_state::{Compare, Op, Revision, StateError, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::error::DiscoveryError as E;
use crate::Context;

/// Largest and default page of the List* operations (the model's MaxResults: 1-100).
pub const MAX_RESULTS: usize = 100;
/// DiscoverInstances returns at most this many (the model's DiscoverMaxResults).
pub const MAX_DISCOVER_RESULTS: usize = 1000;
/// DiscoverInstances' default page.
pub const DEFAULT_DISCOVER_RESULTS: usize = 100;
/// Cloud Map's limit of tags per resource.
pub const MAX_TAGS: usize = 50;
/// Custom attributes per instance (Cloud Map quota).
pub const MAX_ATTRIBUTES: usize = 30;
/// SOA TTL of a namespace created without one (the Cloud Map console's default).
pub const DEFAULT_SOA_TTL: u64 = 15;
/// Largest DNS TTL (RFC 2181 §8).
pub const MAX_TTL: u64 = 2_147_483_647;
/// Compare-and-swap retries when another writer got there first.
const CAS_RETRIES: usize = 32;

pub(crate) const NS: &str = "/discovery/namespaces/";
const NS_NAME: &str = "/discovery/namespace-names/";
pub(crate) const SVC: &str = "/discovery/services/";
const SVC_NAME: &str = "/discovery/service-names/";
pub(crate) const INST: &str = "/discovery/instances/";
const OPS: &str = "/discovery/operations/";

pub const HEALTHY: &str = "HEALTHY";
pub const UNHEALTHY: &str = "UNHEALTHY";
pub const UNKNOWN: &str = "UNKNOWN";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Tag {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NamespaceRec {
    pub id: String,
    pub arn: String,
    pub name: String,
    /// DNS_PRIVATE or HTTP.
    #[serde(rename = "Type")]
    pub kind: String,
    pub description: Option<String>,
    pub creator_request_id: Option<String>,
    pub create_date: f64,
    /// The SOA's TTL (DNS namespaces only), seconds.
    pub soa_ttl: Option<u64>,
    pub vpc: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DnsRecord {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "TTL")]
    pub ttl: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DnsConfig {
    pub routing_policy: String,
    pub dns_records: Vec<DnsRecord>,
}

impl DnsConfig {
    pub fn ttl(&self, kind: &str) -> Option<u64> {
        self.dns_records
            .iter()
            .find(|r| r.kind == kind)
            .map(|r| r.ttl)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ServiceRec {
    pub id: String,
    pub arn: String,
    pub name: String,
    pub namespace_id: String,
    pub description: Option<String>,
    pub dns_config: Option<DnsConfig>,
    /// Whether the service has HealthCheckCustomConfig (its FailureThreshold is
    /// deprecated and always 1).
    pub custom_health: bool,
    /// HTTP, DNS_HTTP or DNS.
    #[serde(rename = "Type")]
    pub kind: String,
    pub create_date: f64,
    pub creator_request_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct InstanceRec {
    pub id: String,
    pub creator_request_id: Option<String>,
    pub attributes: BTreeMap<String, String>,
    /// HEALTHY, UNHEALTHY, or UNKNOWN (the service has no health check).
    pub health: String,
}

impl InstanceRec {
    /// What DNS and DiscoverInstances' HEALTHY filter count as healthy: HEALTHY, and
    /// UNKNOWN (no health check: Route 53 treats such records as healthy).
    pub fn serves(&self) -> bool {
        self.health != UNHEALTHY
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OperationRec {
    id: String,
    #[serde(rename = "Type")]
    kind: String,
    status: String,
    create_date: f64,
    update_date: f64,
    targets: BTreeMap<String, String>,
}

/// The Cloud Map API over the state store.
pub struct Discovery {
    pub(crate) store: Arc<dyn Store>,
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery").finish()
    }
}

pub(crate) fn now() -> f64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

fn random_id(len: usize) -> Result<String, E> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = vec![0u8; len];
    getrandom::getrandom(&mut raw).map_err(|e| E::Server(format!("no randomness: {e}")))?;
    // 252 = 7 * 36: the small bias of `% 36` on the rest does not matter for ids.
    Ok(raw
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect())
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &str) -> Result<T, E> {
    serde_json::from_str(value)
        .map_err(|e| E::Server(format!("stored record {key} is unreadable: {e}")))
}

fn encode<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn put(key: impl Into<String>, value: String) -> Op {
    Op::Put {
        key: key.into(),
        value,
    }
}

fn del(key: impl Into<String>) -> Op {
    Op::Delete { key: key.into() }
}

// ---- input helpers -----------------------------------------------------------------

fn opt_str<'a>(v: &'a Value, k: &str) -> Result<Option<&'a str>, E> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(E::InvalidInput(format!("{k} must be a string"))),
    }
}

fn req_str<'a>(v: &'a Value, k: &str) -> Result<&'a str, E> {
    opt_str(v, k)?.ok_or_else(|| E::InvalidInput(format!("{k} is required")))
}

fn opt_int(v: &Value, k: &str) -> Result<Option<i64>, E> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| E::InvalidInput(format!("{k} must be an integer"))),
    }
}

fn string_map(v: &Value, k: &str) -> Result<BTreeMap<String, String>, E> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k2, v2)| match v2 {
                Value::String(s) => Ok((k2.clone(), s.clone())),
                _ => Err(E::InvalidInput(format!("{k}.{k2} must be a string"))),
            })
            .collect(),
        Some(_) => Err(E::InvalidInput(format!("{k} must be a map of strings"))),
    }
}

fn string_list(v: &Value, k: &str) -> Result<Vec<String>, E> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| E::InvalidInput(format!("{k} must be a list of strings")))
            })
            .collect(),
        Some(_) => Err(E::InvalidInput(format!("{k} must be a list of strings"))),
    }
}

fn tags_input(v: &Value) -> Result<Vec<Tag>, E> {
    let tags: Vec<Tag> = match v.get("Tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(t) => {
            serde_json::from_value(t.clone()).map_err(|e| E::InvalidInput(format!("Tags: {e}")))?
        }
    };
    check_tags(&tags)?;
    Ok(tags)
}

fn check_tags(tags: &[Tag]) -> Result<(), E> {
    if tags.len() > MAX_TAGS {
        return Err(E::TooManyTags(format!(
            "a resource can have at most {MAX_TAGS} tags, got {}",
            tags.len()
        )));
    }
    for t in tags {
        if t.key.is_empty() || t.key.len() > 128 || t.value.len() > 256 {
            return Err(E::InvalidInput(format!(
                "tag '{}': keys are 1-128 characters and values at most 256",
                t.key
            )));
        }
    }
    Ok(())
}

/// The id in an id or an ARN (`…:namespace/ns-…`, `…:service/srv-…`).
fn id_of(s: &str) -> &str {
    match s.strip_prefix("arn:") {
        Some(_) => s.rsplit('/').next().unwrap_or(s),
        None => s,
    }
}

/// `(start, max)` of a page from `NextToken` (hex of `offset:N`) and `MaxResults`.
fn page(v: &Value, default: usize, limit: usize) -> Result<(usize, usize), E> {
    let max = match opt_int(v, "MaxResults")? {
        None => default,
        Some(m) if m >= 1 && m as usize <= limit => m as usize,
        Some(m) => {
            return Err(E::InvalidInput(format!(
                "MaxResults must be between 1 and {limit}, got {m}"
            )))
        }
    };
    let start = match opt_str(v, "NextToken")? {
        None | Some("") => 0,
        Some(t) => hex::decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse().ok()))
            .ok_or_else(|| E::InvalidInput("NextToken is not one berth issued".into()))?,
    };
    Ok((start, max))
}

fn paginate<T>(items: Vec<T>, (start, max): (usize, usize)) -> (Vec<T>, Option<String>) {
    let total = items.len();
    let page = items.into_iter().skip(start).take(max).collect();
    let next = (start + max < total).then(|| hex::encode(format!("offset:{}", start + max)));
    (page, next)
}

fn with_next(mut out: Map<String, Value>, next: Option<String>) -> Value {
    if let Some(n) = next {
        out.insert("NextToken".into(), n.into());
    }
    Value::Object(out)
}

/// A filter of the List* operations (`Name`, `Values`, `Condition`, default EQ).
struct Filter {
    name: String,
    values: Vec<String>,
    condition: String,
}

fn filters(v: &Value) -> Result<Vec<Filter>, E> {
    let Some(list) = v.get("Filters").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|f| {
            let f = Filter {
                name: req_str(f, "Name")?.to_string(),
                values: string_list(f, "Values")?,
                condition: opt_str(f, "Condition")?.unwrap_or("EQ").to_string(),
            };
            let n = f.values.len();
            let ok = match f.condition.as_str() {
                "EQ" | "BEGINS_WITH" => n == 1,
                "IN" => n >= 1,
                "BETWEEN" => n == 2,
                _ => false,
            };
            if !ok {
                return Err(E::InvalidInput(format!(
                    "filter {}: condition {} with {n} values is not valid (EQ and BEGINS_WITH take one value, IN one or more, BETWEEN two)",
                    f.name, f.condition
                )));
            }
            Ok(f)
        })
        .collect()
}

impl Filter {
    /// Whether `value` passes; `allowed` are the conditions this filter name takes.
    fn matches(&self, value: &str, allowed: &[&str]) -> Result<bool, E> {
        if !allowed.contains(&self.condition.as_str()) {
            return Err(E::InvalidInput(format!(
                "filter {} takes the conditions {}, not {}",
                self.name,
                allowed.join(", "),
                self.condition
            )));
        }
        Ok(match self.condition.as_str() {
            "EQ" => self.values[0] == value,
            "IN" => self.values.iter().any(|x| x == value),
            "BEGINS_WITH" => value.starts_with(&self.values[0]),
            _ => {
                let n: f64 = value.parse().unwrap_or(0.0);
                let a: f64 = self.values[0].parse().map_err(|_| bad_between(self))?;
                let b: f64 = self.values[1].parse().map_err(|_| bad_between(self))?;
                a <= n && n <= b
            }
        })
    }
}

/// The `key` page of `items` that pass the request's Filters: `field(item, name)` is
/// the value filter `name` tests and the conditions it takes (`None`: `name` is not a
/// filter of this list, which `names` lists).
fn filtered_page<T>(
    v: &Value,
    items: Vec<T>,
    key: &str,
    names: &str,
    field: impl Fn(&T, &str) -> Option<(String, &'static [&'static str])>,
    render: impl Fn(&T) -> Value,
) -> Result<Value, E> {
    let fs = filters(v)?;
    let mut out = Vec::new();
    for item in items {
        let mut keep = true;
        for f in &fs {
            let (value, allowed) = field(&item, &f.name).ok_or_else(|| {
                E::InvalidInput(format!("filter '{}' is not one of {names}", f.name))
            })?;
            keep &= f.matches(&value, allowed)?;
        }
        if keep {
            out.push(render(&item));
        }
    }
    let (items, next) = paginate(out, page(v, MAX_RESULTS, MAX_RESULTS)?);
    let mut m = Map::new();
    m.insert(key.into(), Value::Array(items));
    Ok(with_next(m, next))
}

fn bad_between(f: &Filter) -> E {
    E::InvalidInput(format!(
        "filter {}: BETWEEN takes two epoch timestamps",
        f.name
    ))
}

// ---- validation ---------------------------------------------------------------------

/// A label of 1-63 letters, digits, `-` and `_`, not starting or ending with `-`.
fn dns_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// A DNS namespace name: labels of letters, digits, `-` and `_`, 1-63 octets each, at
/// most 253 characters (the model's NamespaceNamePrivate).
fn check_dns_name(name: &str) -> Result<(), E> {
    let n = name.strip_suffix('.').unwrap_or(name);
    let ok = !n.is_empty() && n.len() <= 253 && n.split('.').all(dns_label);
    if ok {
        Ok(())
    } else {
        Err(E::InvalidInput(format!(
            "Namespace name '{name}' is not a valid DNS name: labels of 1-63 letters, digits, '-' or '_', at most 253 characters"
        )))
    }
}

/// A service name (the model's ServiceName: DNS labels, at most 127 characters).
fn check_service_name(name: &str) -> Result<(), E> {
    let ok = name.len() <= 127 && name.split('.').all(dns_label);
    if ok {
        Ok(())
    } else {
        Err(E::InvalidInput(format!(
            "Service name '{name}' is not valid: labels of 1-63 letters, digits, '-' or '_', at most 127 characters"
        )))
    }
}

fn check_description(v: &Value, k: &str) -> Result<Option<String>, E> {
    match opt_str(v, k)? {
        Some(d) if d.chars().count() > 1024 => Err(E::InvalidInput(
            "Description is at most 1024 characters".into(),
        )),
        d => Ok(d.map(str::to_string)),
    }
}

fn check_ttl(ttl: i64, what: &str) -> Result<u64, E> {
    if ttl < 0 || ttl as u64 > MAX_TTL {
        return Err(E::InvalidInput(format!(
            "{what} TTL must be between 0 and {MAX_TTL} seconds, got {ttl}"
        )));
    }
    Ok(ttl as u64)
}

/// DnsRecords as Cloud Map accepts them for berth's DNS: A and SRV, each at most once.
fn dns_records(v: &Value) -> Result<Vec<DnsRecord>, E> {
    let list = v
        .get("DnsRecords")
        .and_then(Value::as_array)
        .ok_or_else(|| E::InvalidInput("DnsConfig.DnsRecords is required".into()))?;
    if list.is_empty() {
        return Err(E::InvalidInput(
            "DnsConfig.DnsRecords needs at least one record".into(),
        ));
    }
    let mut out: Vec<DnsRecord> = Vec::new();
    for r in list {
        let kind = req_str(r, "Type")?;
        let ttl = opt_int(r, "TTL")?
            .ok_or_else(|| E::InvalidInput("DnsRecord.TTL is required".into()))?;
        match kind {
            "A" | "SRV" => {}
            "AAAA" | "CNAME" => {
                return Err(E::InvalidInput(format!(
                    "berth's DNS serves A and SRV records; {kind} records are not supported"
                )))
            }
            other => {
                return Err(E::InvalidInput(format!(
                    "DnsRecord.Type '{other}' is not one of A, AAAA, SRV, CNAME"
                )))
            }
        }
        if out.iter().any(|x| x.kind == kind) {
            return Err(E::InvalidInput(format!(
                "DnsRecords lists type {kind} twice"
            )));
        }
        out.push(DnsRecord {
            kind: kind.to_string(),
            ttl: check_ttl(ttl, "DnsRecord")?,
        });
    }
    Ok(out)
}

fn check_instance_id(id: &str) -> Result<(), E> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_/:.@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(E::InvalidInput(format!(
            "InstanceId '{id}' is not valid: 1-64 of letters, digits and _/:.@-"
        )))
    }
}

/// Checks an instance's attributes against its service; returns its initial health.
fn check_attributes(svc: &ServiceRec, a: &BTreeMap<String, String>) -> Result<String, E> {
    if a.len() > MAX_ATTRIBUTES {
        return Err(E::InvalidInput(format!(
            "an instance has at most {MAX_ATTRIBUTES} attributes, got {}",
            a.len()
        )));
    }
    for (k, v) in a {
        if k.is_empty() || k.len() > 255 || v.len() > 1024 {
            return Err(E::InvalidInput(format!(
                "attribute '{k}': keys are 1-255 characters and values at most 1024"
            )));
        }
    }
    if let Some(ip) = a.get("AWS_INSTANCE_IPV4") {
        ip.parse::<std::net::Ipv4Addr>().map_err(|_| {
            E::InvalidInput(format!("AWS_INSTANCE_IPV4 '{ip}' is not an IPv4 address"))
        })?;
    }
    if let Some(p) = a.get("AWS_INSTANCE_PORT") {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => {
                return Err(E::InvalidInput(format!(
                    "AWS_INSTANCE_PORT '{p}' is not a port (1-65535)"
                )))
            }
        }
    }
    if let Some(dns) = &svc.dns_config {
        for r in &dns.dns_records {
            let need = match r.kind.as_str() {
                "A" => "AWS_INSTANCE_IPV4",
                _ => "AWS_INSTANCE_PORT",
            };
            if !a.contains_key(need) {
                return Err(E::InvalidInput(format!(
                    "service {} has a {} record: the instance needs the attribute {need}",
                    svc.name, r.kind
                )));
            }
            if r.kind == "SRV" && !a.contains_key("AWS_INSTANCE_IPV4") {
                return Err(E::InvalidInput(format!(
                    "service {} has an SRV record: the instance needs AWS_INSTANCE_IPV4 for the record's target",
                    svc.name
                )));
            }
        }
    }
    match (
        a.get("AWS_INIT_HEALTH_STATUS").map(String::as_str),
        svc.custom_health,
    ) {
        (None, true) => Ok(HEALTHY.into()),
        (None, false) => Ok(UNKNOWN.into()),
        (Some(s @ (HEALTHY | UNHEALTHY)), true) => Ok(s.into()),
        (Some(s), true) => Err(E::InvalidInput(format!(
            "AWS_INIT_HEALTH_STATUS must be HEALTHY or UNHEALTHY, got '{s}'"
        ))),
        (Some(_), false) => Err(E::InvalidInput(
            "AWS_INIT_HEALTH_STATUS is only valid for services with HealthCheckCustomConfig".into(),
        )),
    }
}

// ---- the operations -----------------------------------------------------------------

impl Discovery {
    pub fn new(store: Arc<dyn Store>) -> Discovery {
        Discovery {
            store,
            changes: watch::channel(0).0,
        }
    }

    /// A receiver that sees a new value after every write this API makes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Runs `attempt` (which reads and returns the compares and writes of one
    /// transaction) until its transaction commits, retrying on conflicts.
    fn cas<T>(
        &self,
        mut attempt: impl FnMut() -> Result<(Vec<Compare>, Vec<Op>, T), E>,
    ) -> Result<T, E> {
        for _ in 0..CAS_RETRIES {
            let (compares, ops, out) = attempt()?;
            match self.store.txn(&compares, ops) {
                Ok(_) => {
                    self.changed();
                    return Ok(out);
                }
                Err(StateError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(E::Server(
            "too many concurrent writers; try again".to_string(),
        ))
    }

    fn operation(kind: &str, targets: &[(&str, &str)]) -> Result<(String, Op), E> {
        let id = format!("{}-{}", random_id(32)?, random_id(8)?);
        let t = now();
        let rec = OperationRec {
            id: id.clone(),
            kind: kind.into(),
            status: "SUCCESS".into(),
            create_date: t,
            update_date: t,
            targets: targets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let op = put(format!("{OPS}{id}"), encode(&rec));
        Ok((id, op))
    }

    /// The record at `key` and its revision, or `missing()`.
    fn record<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        missing: impl FnOnce() -> E,
    ) -> Result<(T, Revision), E> {
        let e = self.store.get(key).ok_or_else(missing)?;
        Ok((decode(key, &e.value)?, e.mod_revision))
    }

    /// Every record under `prefix`.
    fn records<T: serde::de::DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, E> {
        self.store
            .list(prefix)
            .iter()
            .map(|(k, e)| decode(k, &e.value))
            .collect()
    }

    pub(crate) fn namespace(&self, id: &str) -> Result<(NamespaceRec, Revision), E> {
        self.record(&format!("{NS}{}", id_of(id)), || {
            E::NamespaceNotFound(format!("No namespace exists with ID: {id}"))
        })
    }

    pub(crate) fn namespaces(&self) -> Result<Vec<NamespaceRec>, E> {
        self.records(NS)
    }

    pub(crate) fn service(&self, id: &str) -> Result<(ServiceRec, Revision), E> {
        self.record(&format!("{SVC}{}", id_of(id)), || {
            E::ServiceNotFound(format!("No service exists with ID: {id}"))
        })
    }

    pub(crate) fn services(&self) -> Result<Vec<ServiceRec>, E> {
        self.records(SVC)
    }

    pub(crate) fn instances(&self, service_id: &str) -> Result<Vec<InstanceRec>, E> {
        self.records(&format!("{INST}{service_id}/"))
    }

    fn create_namespace(&self, v: &Value, ctx: &Context, kind: &str) -> Result<Value, E> {
        let name = req_str(v, "Name")?.trim_end_matches('.').to_string();
        let (soa_ttl, vpc) = if kind == "DNS_PRIVATE" {
            check_dns_name(&name)?;
            let vpc = req_str(v, "Vpc")?.to_string();
            let ttl = match v.pointer("/Properties/DnsProperties/SOA/TTL") {
                None => DEFAULT_SOA_TTL,
                Some(t) => check_ttl(
                    t.as_i64()
                        .ok_or_else(|| E::InvalidInput("SOA.TTL must be an integer".into()))?,
                    "SOA",
                )?,
            };
            (Some(ttl), Some(vpc))
        } else {
            let ok = !name.is_empty()
                && name.len() <= 1024
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(E::InvalidInput(format!(
                    "HTTP namespace name '{name}' is not valid: 1-1024 letters, digits, '-' or '_'"
                )));
            }
            (None, None)
        };
        let tags = tags_input(v)?;
        let description = check_description(v, "Description")?;
        let creator = opt_str(v, "CreatorRequestId")?.map(str::to_string);
        let name_key = format!("{NS_NAME}{}", name.to_ascii_lowercase());
        self.cas(|| {
            if let Some(e) = self.store.get(&name_key) {
                let (existing, _) = self.namespace(&e.value)?;
                return Err(E::NamespaceAlreadyExists {
                    message: format!("Namespace {name} already exists ({})", existing.id),
                    namespace_id: existing.id,
                    creator_request_id: existing.creator_request_id,
                });
            }
            let id = format!("ns-{}", random_id(16)?);
            let rec = NamespaceRec {
                arn: format!(
                    "arn:aws:servicediscovery:{}:{}:namespace/{id}",
                    ctx.region, ctx.account
                ),
                id: id.clone(),
                name: name.clone(),
                kind: kind.into(),
                description: description.clone(),
                creator_request_id: creator.clone(),
                create_date: now(),
                soa_ttl,
                vpc: vpc.clone(),
                tags: tags.clone(),
            };
            let (op_id, op) = Self::operation("CREATE_NAMESPACE", &[("NAMESPACE", &id)])?;
            Ok((
                vec![
                    Compare::absent(&name_key),
                    Compare::absent(format!("{NS}{id}")),
                ],
                vec![
                    put(format!("{NS}{id}"), encode(&rec)),
                    put(name_key.clone(), id.clone()),
                    op,
                ],
                json!({ "OperationId": op_id }),
            ))
        })
    }

    fn render_namespace(&self, ns: &NamespaceRec, ctx: &Context, summary: bool) -> Value {
        let count = self
            .services()
            .map(|s| s.iter().filter(|s| s.namespace_id == ns.id).count())
            .unwrap_or(0);
        let mut props = json!({ "HttpProperties": { "HttpName": ns.name } });
        if let Some(ttl) = ns.soa_ttl {
            props["DnsProperties"] = json!({
                "HostedZoneId": format!("Z{}", ns.id.trim_start_matches("ns-").to_ascii_uppercase()),
                "SOA": { "TTL": ttl },
            });
        }
        let mut out = json!({
            "Id": ns.id, "Arn": ns.arn, "ResourceOwner": ctx.account, "Name": ns.name,
            "Type": ns.kind, "ServiceCount": count, "Properties": props, "CreateDate": ns.create_date,
        });
        if let Some(d) = &ns.description {
            out["Description"] = d.clone().into();
        }
        if let (false, Some(c)) = (summary, &ns.creator_request_id) {
            out["CreatorRequestId"] = c.clone().into();
        }
        out
    }

    fn get_namespace(&self, v: &Value, ctx: &Context) -> Result<Value, E> {
        let (ns, _) = self.namespace(req_str(v, "Id")?)?;
        Ok(json!({ "Namespace": self.render_namespace(&ns, ctx, false) }))
    }

    fn list_namespaces(&self, v: &Value, ctx: &Context) -> Result<Value, E> {
        const EQ_IN: &[&str] = &["EQ", "IN"];
        const EQ_BEGINS: &[&str] = &["EQ", "BEGINS_WITH"];
        filtered_page(
            v,
            self.namespaces()?,
            "Namespaces",
            "TYPE, NAME, HTTP_NAME, RESOURCE_OWNER",
            |ns, name| match name {
                "TYPE" => Some((ns.kind.clone(), EQ_IN)),
                "NAME" | "HTTP_NAME" => Some((ns.name.clone(), EQ_BEGINS)),
                "RESOURCE_OWNER" => Some((ctx.account.clone(), &["EQ"])),
                _ => None,
            },
            |ns| self.render_namespace(ns, ctx, true),
        )
    }

    fn delete_namespace(&self, v: &Value) -> Result<Value, E> {
        let id = req_str(v, "Id")?;
        self.cas(|| {
            let (ns, rev) = self.namespace(id)?;
            let n = self
                .services()?
                .iter()
                .filter(|s| s.namespace_id == ns.id)
                .count();
            if n > 0 {
                return Err(E::ResourceInUse(format!(
                    "Namespace {} has {n} service(s); delete them first",
                    ns.id
                )));
            }
            let (op_id, op) = Self::operation("DELETE_NAMESPACE", &[("NAMESPACE", &ns.id)])?;
            Ok((
                vec![Compare::at(format!("{NS}{}", ns.id), rev)],
                vec![
                    del(format!("{NS}{}", ns.id)),
                    del(format!("{NS_NAME}{}", ns.name.to_ascii_lowercase())),
                    op,
                ],
                json!({ "OperationId": op_id }),
            ))
        })
    }

    fn update_private_dns_namespace(&self, v: &Value) -> Result<Value, E> {
        let id = req_str(v, "Id")?;
        let change = v
            .get("Namespace")
            .ok_or_else(|| E::InvalidInput("Namespace is required".into()))?;
        let description = check_description(change, "Description")?;
        let ttl = match change.pointer("/Properties/DnsProperties/SOA/TTL") {
            None => None,
            Some(t) => Some(check_ttl(
                t.as_i64()
                    .ok_or_else(|| E::InvalidInput("SOA.TTL must be an integer".into()))?,
                "SOA",
            )?),
        };
        self.cas(|| {
            let (mut ns, rev) = self.namespace(id)?;
            if ns.kind != "DNS_PRIVATE" {
                return Err(E::InvalidInput(format!(
                    "namespace {} is {}, not a private DNS namespace",
                    ns.id, ns.kind
                )));
            }
            if description.is_some() {
                ns.description = description.clone();
            }
            if ttl.is_some() {
                ns.soa_ttl = ttl;
            }
            let (op_id, op) = Self::operation("UPDATE_NAMESPACE", &[("NAMESPACE", &ns.id)])?;
            let key = format!("{NS}{}", ns.id);
            Ok((
                vec![Compare::at(&key, rev)],
                vec![put(key, encode(&ns)), op],
                json!({ "OperationId": op_id }),
            ))
        })
    }

    fn create_service(&self, v: &Value, ctx: &Context) -> Result<Value, E> {
        let name = req_str(v, "Name")?.to_string();
        check_service_name(&name)?;
        let ns_id = opt_str(v, "NamespaceId")?
            .or(v.pointer("/DnsConfig/NamespaceId").and_then(Value::as_str))
            .ok_or_else(|| E::InvalidInput("NamespaceId is required".into()))?
            .to_string();
        let tags = tags_input(v)?;
        let description = check_description(v, "Description")?;
        let creator = opt_str(v, "CreatorRequestId")?.map(str::to_string);
        if v.get("HealthCheckConfig").is_some_and(|h| !h.is_null()) {
            return Err(E::InvalidInput(
                "HealthCheckConfig (Route 53 health checks) is for public DNS namespaces; use HealthCheckCustomConfig".into(),
            ));
        }
        let custom_health = v
            .get("HealthCheckCustomConfig")
            .is_some_and(|h| !h.is_null());
        let http_only = match opt_str(v, "Type")? {
            None => false,
            Some("HTTP") => true,
            Some(t) => return Err(E::InvalidInput(format!("Type '{t}' is not HTTP"))),
        };
        let dns_config = match v.get("DnsConfig") {
            None | Some(Value::Null) => None,
            Some(d) => {
                let policy = opt_str(d, "RoutingPolicy")?.unwrap_or("MULTIVALUE");
                if !matches!(policy, "MULTIVALUE" | "WEIGHTED") {
                    return Err(E::InvalidInput(format!(
                        "RoutingPolicy '{policy}' is not MULTIVALUE or WEIGHTED"
                    )));
                }
                Some(DnsConfig {
                    routing_policy: policy.into(),
                    dns_records: dns_records(d)?,
                })
            }
        };
        if http_only && dns_config.is_some() {
            return Err(E::InvalidInput(
                "a service of Type HTTP has no DnsConfig".into(),
            ));
        }
        self.cas(|| {
            let (ns, ns_rev) = self.namespace(&ns_id)?;
            if ns.kind == "HTTP" && dns_config.is_some() {
                return Err(E::InvalidInput(format!(
                    "namespace {} is an HTTP namespace: its services have no DnsConfig",
                    ns.id
                )));
            }
            let name_key = format!("{SVC_NAME}{}/{}", ns.id, name.to_ascii_lowercase());
            if let Some(e) = self.store.get(&name_key) {
                let (s, _) = self.service(&e.value)?;
                return Err(E::ServiceAlreadyExists {
                    message: format!(
                        "Service {name} already exists in namespace {} ({})",
                        ns.id, s.id
                    ),
                    service_id: s.id,
                    service_arn: s.arn,
                    creator_request_id: s.creator_request_id,
                });
            }
            let id = format!("srv-{}", random_id(16)?);
            // DNS_HTTP: found by DNS and DiscoverInstances; HTTP: DiscoverInstances only.
            let kind = if dns_config.is_some() {
                "DNS_HTTP"
            } else {
                "HTTP"
            };
            let rec = ServiceRec {
                arn: format!(
                    "arn:aws:servicediscovery:{}:{}:service/{id}",
                    ctx.region, ctx.account
                ),
                id: id.clone(),
                name: name.clone(),
                namespace_id: ns.id.clone(),
                description: description.clone(),
                dns_config: dns_config.clone(),
                custom_health,
                kind: kind.into(),
                create_date: now(),
                creator_request_id: creator.clone(),
                tags: tags.clone(),
            };
            let ns_key = format!("{NS}{}", ns.id);
            Ok((
                // The namespace is re-put so a concurrent DeleteNamespace conflicts.
                vec![Compare::at(&ns_key, ns_rev), Compare::absent(&name_key)],
                vec![
                    put(format!("{SVC}{id}"), encode(&rec)),
                    put(name_key.clone(), id.clone()),
                    put(ns_key, encode(&ns)),
                ],
                rec,
            ))
        })
        .map(|rec| json!({ "Service": self.render_service(&rec, ctx, false) }))
    }

    fn render_service(&self, s: &ServiceRec, ctx: &Context, summary: bool) -> Value {
        let count = self.instances(&s.id).map(|i| i.len()).unwrap_or(0);
        let mut out = json!({
            "Id": s.id, "Arn": s.arn, "ResourceOwner": ctx.account, "Name": s.name,
            "Type": s.kind, "InstanceCount": count, "CreateDate": s.create_date,
            "CreatedByAccount": ctx.account,
        });
        if !summary {
            out["NamespaceId"] = s.namespace_id.clone().into();
            if let Some(c) = &s.creator_request_id {
                out["CreatorRequestId"] = c.clone().into();
            }
        }
        if let Some(d) = &s.description {
            out["Description"] = d.clone().into();
        }
        if let Some(d) = &s.dns_config {
            out["DnsConfig"] = json!({
                "NamespaceId": s.namespace_id,
                "RoutingPolicy": d.routing_policy,
                "DnsRecords": d.dns_records,
            });
        }
        if s.custom_health {
            out["HealthCheckCustomConfig"] = json!({ "FailureThreshold": 1 });
        }
        out
    }

    fn get_service(&self, v: &Value, ctx: &Context) -> Result<Value, E> {
        let (s, _) = self.service(req_str(v, "Id")?)?;
        Ok(json!({ "Service": self.render_service(&s, ctx, false) }))
    }

    fn list_services(&self, v: &Value, ctx: &Context) -> Result<Value, E> {
        filtered_page(
            v,
            self.services()?,
            "Services",
            "NAMESPACE_ID, RESOURCE_OWNER",
            |s, name| match name {
                "NAMESPACE_ID" => Some((s.namespace_id.clone(), &["EQ", "IN"])),
                "RESOURCE_OWNER" => Some((ctx.account.clone(), &["EQ"])),
                _ => None,
            },
            |s| self.render_service(s, ctx, true),
        )
    }

    fn update_service(&self, v: &Value) -> Result<Value, E> {
        let id = req_str(v, "Id")?;
        let change = v
            .get("Service")
            .ok_or_else(|| E::InvalidInput("Service is required".into()))?;
        if change
            .get("HealthCheckConfig")
            .is_some_and(|h| !h.is_null())
        {
            return Err(E::InvalidInput(
                "HealthCheckConfig (Route 53 health checks) is for public DNS namespaces".into(),
            ));
        }
        let description = check_description(change, "Description")?;
        let records = match change.get("DnsConfig") {
            None | Some(Value::Null) => None,
            Some(d) => Some(dns_records(d)?),
        };
        self.cas(|| {
            let (mut s, rev) = self.service(id)?;
            if let Some(r) = &records {
                let Some(dns) = s.dns_config.as_mut() else {
                    return Err(E::InvalidInput(format!(
                        "service {} has no DnsConfig to update",
                        s.id
                    )));
                };
                dns.dns_records = r.clone();
                // Registered instances must still fit the records (AWS checks the same).
                for i in self.instances(&s.id)? {
                    check_attributes(&s, &i.attributes)?;
                }
            }
            if description.is_some() {
                s.description = description.clone();
            }
            let (op_id, op) = Self::operation("UPDATE_SERVICE", &[("SERVICE", &s.id)])?;
            let key = format!("{SVC}{}", s.id);
            Ok((
                vec![Compare::at(&key, rev)],
                vec![put(key, encode(&s)), op],
                json!({ "OperationId": op_id }),
            ))
        })
    }

    fn delete_service(&self, v: &Value) -> Result<Value, E> {
        let id = req_str(v, "Id")?;
        self.cas(|| {
            let (s, rev) = self.service(id)?;
            let n = self.instances(&s.id)?.len();
            if n > 0 {
                return Err(E::ResourceInUse(format!(
                    "Service {} has {n} registered instance(s); deregister them first",
                    s.id
                )));
            }
            Ok((
                vec![Compare::at(format!("{SVC}{}", s.id), rev)],
                vec![
                    del(format!("{SVC}{}", s.id)),
                    del(format!(
                        "{SVC_NAME}{}/{}",
                        s.namespace_id,
                        s.name.to_ascii_lowercase()
                    )),
                ],
                json!({}),
            ))
        })
    }

    /// Registers (or replaces) an instance of a service; returns the operation id. The
    /// entry point for ECS services with `serviceRegistries` as well as the API.
    pub fn register_instance(
        &self,
        service: &str,
        instance_id: &str,
        creator_request_id: Option<&str>,
        attributes: BTreeMap<String, String>,
    ) -> Result<String, E> {
        check_instance_id(instance_id)?;
        self.cas(|| {
            let (s, rev) = self.service(service)?;
            let health = check_attributes(&s, &attributes)?;
            let rec = InstanceRec {
                id: instance_id.to_string(),
                creator_request_id: creator_request_id.map(str::to_string),
                attributes: attributes.clone(),
                health,
            };
            let (op_id, op) = Self::operation(
                "REGISTER_INSTANCE",
                &[("INSTANCE", instance_id), ("SERVICE", &s.id)],
            )?;
            let key = format!("{SVC}{}", s.id);
            Ok((
                // The service is re-put so a concurrent DeleteService conflicts.
                vec![Compare::at(&key, rev)],
                vec![
                    put(format!("{INST}{}/{instance_id}", s.id), encode(&rec)),
                    put(key, encode(&s)),
                    op,
                ],
                op_id,
            ))
        })
    }

    /// Deregisters an instance; returns the operation id ([`E::InstanceNotFound`] if it
    /// is not registered).
    pub fn deregister_instance(&self, service: &str, instance_id: &str) -> Result<String, E> {
        let (s, _) = self.service(service)?;
        let key = format!("{INST}{}/{instance_id}", s.id);
        self.cas(|| {
            let e = self.store.get(&key).ok_or_else(|| {
                E::InstanceNotFound(format!(
                    "No instance {instance_id} is registered with service {}",
                    s.id
                ))
            })?;
            let (op_id, op) = Self::operation(
                "DEREGISTER_INSTANCE",
                &[("INSTANCE", instance_id), ("SERVICE", &s.id)],
            )?;
            Ok((
                vec![Compare::at(&key, e.mod_revision)],
                vec![del(key.clone()), op],
                op_id,
            ))
        })
    }

    /// Sets a custom-health instance HEALTHY or UNHEALTHY (UpdateInstanceCustomHealthStatus).
    pub fn set_instance_health(
        &self,
        service: &str,
        instance_id: &str,
        healthy: bool,
    ) -> Result<(), E> {
        let (s, _) = self.service(service)?;
        if !s.custom_health {
            return Err(E::CustomHealthNotFound(format!(
                "service {} has no HealthCheckCustomConfig",
                s.id
            )));
        }
        let key = format!("{INST}{}/{instance_id}", s.id);
        self.cas(|| {
            let e = self.store.get(&key).ok_or_else(|| {
                E::InstanceNotFound(format!(
                    "No instance {instance_id} is registered with service {}",
                    s.id
                ))
            })?;
            let mut rec: InstanceRec = decode(&key, &e.value)?;
            rec.health = if healthy { HEALTHY } else { UNHEALTHY }.into();
            Ok((
                vec![Compare::at(&key, e.mod_revision)],
                vec![put(key.clone(), encode(&rec))],
                (),
            ))
        })
    }

    /// The service id behind an id or ARN, if it exists (ECS `registryArn`s are ARNs).
    pub fn service_id(&self, id_or_arn: &str) -> Option<String> {
        self.service(id_or_arn).ok().map(|(s, _)| s.id)
    }

    fn get_instance(&self, v: &Value, ctx: &Context) -> Result<Value, E> {
        let (s, _) = self.service(req_str(v, "ServiceId")?)?;
        let iid = req_str(v, "InstanceId")?;
        let i = self
            .instances(&s.id)?
            .into_iter()
            .find(|i| i.id == iid)
            .ok_or_else(|| {
                E::InstanceNotFound(format!(
                    "No instance {iid} is registered with service {}",
                    s.id
                ))
            })?;
        let mut out =
            json!({ "Id": i.id, "Attributes": i.attributes, "CreatedByAccount": ctx.account });
        if let Some(c) = i.creator_request_id {
            out["CreatorRequestId"] = c.into();
        }
        Ok(json!({ "ResourceOwner": ctx.account, "Instance": out }))
    }

    fn list_instances(&self, v: &Value, ctx: &Context) -> Result<Value, E> {
        let (s, _) = self.service(req_str(v, "ServiceId")?)?;
        let all: Vec<Value> = self
            .instances(&s.id)?
            .into_iter()
            .map(|i| json!({ "Id": i.id, "Attributes": i.attributes, "CreatedByAccount": ctx.account }))
            .collect();
        let (items, next) = paginate(all, page(v, MAX_RESULTS, MAX_RESULTS)?);
        let mut m = Map::new();
        m.insert("ResourceOwner".into(), ctx.account.clone().into());
        m.insert("Instances".into(), Value::Array(items));
        Ok(with_next(m, next))
    }

    fn find_service(&self, ns_name: &str, svc_name: &str) -> Result<(NamespaceRec, ServiceRec), E> {
        let ns_name = ns_name.trim_end_matches('.');
        let ns = self
            .namespaces()?
            .into_iter()
            .find(|n| n.name.eq_ignore_ascii_case(ns_name))
            .ok_or_else(|| {
                E::NamespaceNotFound(format!("No namespace exists with name: {ns_name}"))
            })?;
        let s = self
            .services()?
            .into_iter()
            .find(|s| s.namespace_id == ns.id && s.name.eq_ignore_ascii_case(svc_name))
            .ok_or_else(|| {
                E::ServiceNotFound(format!(
                    "No service named {svc_name} exists in namespace {}",
                    ns.name
                ))
            })?;
        Ok((ns, s))
    }

    fn discover_instances(&self, v: &Value) -> Result<Value, E> {
        let (ns, s) =
            self.find_service(req_str(v, "NamespaceName")?, req_str(v, "ServiceName")?)?;
        let (_, max) = page(
            &json!({ "MaxResults": v.get("MaxResults") }),
            DEFAULT_DISCOVER_RESULTS,
            MAX_DISCOVER_RESULTS,
        )?;
        let query = string_map(v, "QueryParameters")?;
        let optional = string_map(v, "OptionalParameters")?;
        let filter = opt_str(v, "HealthStatus")?.unwrap_or("HEALTHY");
        let listing = self.store.list(&format!("{INST}{}/", s.id));
        let revision = listing
            .iter()
            .map(|(_, e)| e.mod_revision)
            .max()
            .unwrap_or(0);
        let mut instances: Vec<InstanceRec> = listing
            .iter()
            .map(|(k, e)| decode(k, &e.value))
            .collect::<Result<_, _>>()?;
        let has = |i: &InstanceRec, m: &BTreeMap<String, String>| {
            m.iter().all(|(k, v)| i.attributes.get(k) == Some(v))
        };
        instances.retain(|i| has(i, &query));
        if instances.iter().any(|i| has(i, &optional)) {
            instances.retain(|i| has(i, &optional));
        }
        instances = match filter {
            "ALL" => instances,
            "HEALTHY" => instances.into_iter().filter(InstanceRec::serves).collect(),
            "UNHEALTHY" => instances.into_iter().filter(|i| !i.serves()).collect(),
            "HEALTHY_OR_ELSE_ALL" => {
                if instances.iter().any(InstanceRec::serves) {
                    instances.into_iter().filter(InstanceRec::serves).collect()
                } else {
                    instances
                }
            }
            other => {
                return Err(E::InvalidInput(format!(
                    "HealthStatus '{other}' is not HEALTHY, UNHEALTHY, ALL or HEALTHY_OR_ELSE_ALL"
                )))
            }
        };
        let out: Vec<Value> = instances
            .into_iter()
            .take(max)
            .map(|i| {
                json!({
                    "InstanceId": i.id, "NamespaceName": ns.name, "ServiceName": s.name,
                    "HealthStatus": i.health, "Attributes": i.attributes,
                })
            })
            .collect();
        Ok(json!({ "Instances": out, "InstancesRevision": revision }))
    }

    fn get_instances_health_status(&self, v: &Value) -> Result<Value, E> {
        let (s, _) = self.service(req_str(v, "ServiceId")?)?;
        let all = self.instances(&s.id)?;
        let wanted = string_list(v, "Instances")?;
        let mut list: Vec<(String, String)> = Vec::new();
        if wanted.is_empty() {
            list.extend(all.into_iter().map(|i| (i.id, i.health)));
        } else {
            for w in wanted {
                let i = all.iter().find(|i| i.id == w).ok_or_else(|| {
                    E::InstanceNotFound(format!(
                        "No instance {w} is registered with service {}",
                        s.id
                    ))
                })?;
                list.push((i.id.clone(), i.health.clone()));
            }
        }
        let (items, next) = paginate(list, page(v, MAX_RESULTS, MAX_RESULTS)?);
        let mut m = Map::new();
        m.insert(
            "Status".into(),
            Value::Object(items.into_iter().map(|(k, h)| (k, h.into())).collect()),
        );
        Ok(with_next(m, next))
    }

    fn update_instance_custom_health_status(&self, v: &Value) -> Result<Value, E> {
        let healthy = match req_str(v, "Status")? {
            HEALTHY => true,
            UNHEALTHY => false,
            other => {
                return Err(E::InvalidInput(format!(
                    "Status '{other}' is not HEALTHY or UNHEALTHY"
                )))
            }
        };
        self.set_instance_health(req_str(v, "ServiceId")?, req_str(v, "InstanceId")?, healthy)?;
        Ok(json!({}))
    }

    fn get_operation(&self, v: &Value, ctx: &Context) -> Result<Value, E> {
        let id = req_str(v, "OperationId")?;
        let key = format!("{OPS}{id}");
        let e = self
            .store
            .get(&key)
            .ok_or_else(|| E::OperationNotFound(format!("No operation exists with ID: {id}")))?;
        let o: OperationRec = decode(&key, &e.value)?;
        Ok(json!({ "Operation": {
            "Id": o.id, "OwnerAccount": ctx.account, "Type": o.kind, "Status": o.status,
            "CreateDate": o.create_date, "UpdateDate": o.update_date, "Targets": o.targets,
        }}))
    }

    fn list_operations(&self, v: &Value) -> Result<Value, E> {
        let mut ops: Vec<OperationRec> = self.records(OPS)?;
        ops.sort_by(|a, b| a.create_date.total_cmp(&b.create_date));
        const EQ_IN: &[&str] = &["EQ", "IN"];
        filtered_page(
            v,
            ops,
            "Operations",
            "NAMESPACE_ID, SERVICE_ID, STATUS, TYPE, UPDATE_DATE",
            |o, name| {
                let target = |t: &str| o.targets.get(t).cloned().unwrap_or_default();
                match name {
                    "NAMESPACE_ID" => Some((target("NAMESPACE"), &["EQ"])),
                    "SERVICE_ID" => Some((target("SERVICE"), &["EQ"])),
                    "STATUS" => Some((o.status.clone(), EQ_IN)),
                    "TYPE" => Some((o.kind.clone(), EQ_IN)),
                    "UPDATE_DATE" => Some((o.update_date.to_string(), &["BETWEEN"])),
                    _ => None,
                }
            },
            |o| json!({ "Id": o.id, "Status": o.status }),
        )
    }

    /// The store key of the namespace or service an ARN names.
    fn tagged(&self, arn: &str) -> Result<String, E> {
        let not_found = || E::ResourceNotFound(format!("No resource exists with ARN: {arn}"));
        let (_, rest) = arn
            .strip_prefix("arn:")
            .and_then(|r| r.split_once(":servicediscovery:"))
            .ok_or_else(not_found)?;
        let key = match rest.rsplit_once(':').map(|(_, r)| r) {
            Some(r) if r.starts_with("namespace/") => format!("{NS}{}", id_of(arn)),
            Some(r) if r.starts_with("service/") => format!("{SVC}{}", id_of(arn)),
            _ => return Err(not_found()),
        };
        if self.store.get(&key).is_none() {
            return Err(not_found());
        }
        Ok(key)
    }

    fn retag(&self, arn: &str, f: impl Fn(&mut Vec<Tag>) -> Result<(), E>) -> Result<Value, E> {
        self.cas(|| {
            let key = self.tagged(arn)?;
            let e = self.store.get(&key).ok_or_else(|| {
                E::ResourceNotFound(format!("No resource exists with ARN: {arn}"))
            })?;
            let mut doc: Value = decode(&key, &e.value)?;
            let mut tags: Vec<Tag> =
                serde_json::from_value(doc["Tags"].clone()).unwrap_or_default();
            f(&mut tags)?;
            doc["Tags"] = serde_json::to_value(&tags).unwrap_or_default();
            Ok((
                vec![Compare::at(&key, e.mod_revision)],
                vec![put(key.clone(), doc.to_string())],
                json!({}),
            ))
        })
    }

    fn dispatch(&self, op: &str, v: &Value, ctx: &Context) -> Result<Value, E> {
        match op {
            "CreatePrivateDnsNamespace" => self.create_namespace(v, ctx, "DNS_PRIVATE"),
            "CreateHttpNamespace" => self.create_namespace(v, ctx, "HTTP"),
            "CreatePublicDnsNamespace" | "UpdatePublicDnsNamespace" => Err(E::InvalidInput(
                "berth serves private DNS and HTTP namespaces only: public DNS namespaces would need the internet's DNS".into(),
            )),
            "GetNamespace" => self.get_namespace(v, ctx),
            "ListNamespaces" => self.list_namespaces(v, ctx),
            "DeleteNamespace" => self.delete_namespace(v),
            "UpdatePrivateDnsNamespace" => self.update_private_dns_namespace(v),
            "CreateService" => self.create_service(v, ctx),
            "GetService" => self.get_service(v, ctx),
            "ListServices" => self.list_services(v, ctx),
            "UpdateService" => self.update_service(v),
            "DeleteService" => self.delete_service(v),
            "RegisterInstance" => {
                let attrs = string_map(v, "Attributes")?;
                self.register_instance(
                    req_str(v, "ServiceId")?,
                    req_str(v, "InstanceId")?,
                    opt_str(v, "CreatorRequestId")?,
                    attrs,
                )
                .map(|id| json!({ "OperationId": id }))
            }
            "DeregisterInstance" => self
                .deregister_instance(req_str(v, "ServiceId")?, req_str(v, "InstanceId")?)
                .map(|id| json!({ "OperationId": id })),
            "GetInstance" => self.get_instance(v, ctx),
            "ListInstances" => self.list_instances(v, ctx),
            "DiscoverInstances" => self.discover_instances(v),
            "GetInstancesHealthStatus" => self.get_instances_health_status(v),
            "UpdateInstanceCustomHealthStatus" => self.update_instance_custom_health_status(v),
            "GetOperation" => self.get_operation(v, ctx),
            "ListOperations" => self.list_operations(v),
            "TagResource" => {
                let add: Vec<Tag> = serde_json::from_value(v.get("Tags").cloned().unwrap_or_default())
                    .map_err(|e| E::InvalidInput(format!("Tags: {e}")))?;
                check_tags(&add)?;
                self.retag(req_str(v, "ResourceARN")?, |tags| {
                    for t in &add {
                        tags.retain(|x| x.key != t.key);
                        tags.push(t.clone());
                    }
                    check_tags(tags)
                })
            }
            "UntagResource" => {
                let keys = string_list(v, "TagKeys")?;
                self.retag(req_str(v, "ResourceARN")?, |tags| {
                    tags.retain(|t| !keys.contains(&t.key));
                    Ok(())
                })
            }
            "ListTagsForResource" => {
                let key = self.tagged(req_str(v, "ResourceARN")?)?;
                let doc: Value = self
                    .store
                    .get(&key)
                    .map(|e| decode(&key, &e.value))
                    .transpose()?
                    .unwrap_or_default();
                Ok(json!({ "Tags": doc.get("Tags").cloned().unwrap_or(json!([])) }))
            }
            other => Err(E::UnknownOperation(format!(
                "berth's Cloud Map does not serve the operation {other}"
            ))),
        }
    }

    /// Runs operation `op` with its input (the model's members as JSON).
    pub fn call(&self, op: &str, input: &Value, ctx: &Context) -> Result<Value, E> {
        if !input.is_object() {
            return Err(E::Serialization(
                "the request body must be a map of the operation's members".into(),
            ));
        }
        self.dispatch(op, input, ctx)
    }
}
