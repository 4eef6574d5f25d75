//! The etcd engine: [`Store`] over etcd's v3 JSON gateway (`/v3/kv/range`,
//! `/v3/kv/txn`, `/v3/watch`), for more than one control-plane machine.
//!
//! Mapping (etcd's `api/etcdserverpb/rpc.proto`, in the gateway's JSON: keys and
//! values base64, 64-bit integers as strings, zero values left out):
//! - every berth key `k` is the etcd key `<namespace>k` (default [`ETCD_NAMESPACE`]);
//! - berth's [`Revision`] is etcd's revision: an entry's `mod_revision`, a listing's
//!   and a transaction's `header.revision`. It is global to the etcd cluster, so
//!   writes outside the namespace move it too (revisions only ever grow; nothing in
//!   berth relies on them being contiguous);
//! - [`Compare::at`] is `target: MOD, result: EQUAL`; [`Compare::absent`] is
//!   `target: VERSION, result: EQUAL, version: 0`;
//! - [`Store::txn`] is one etcd `Txn`: the ops on success, and on failure a range of
//!   each compared key, so the conflict names the first compare that failed, as the
//!   embedded engine does. etcd refuses two ops on one key in a transaction; the last
//!   op on a key is the one sent (the same final state);
//! - [`Store::list`] is a range from `<namespace>prefix` to the prefix's end, in pages
//!   of [`EtcdOptions::page_keys`], every page after the first read at the first
//!   page's revision (one consistent listing);
//! - [`Store::watch`] is a thread streaming `/v3/watch` (`start_revision`, `prev_kv`)
//!   into the same bounded queue as the embedded engine ([`WatchEnd::Lagged`] when the
//!   reader falls behind); etcd's `compact_revision` ends it with
//!   [`WatchEnd::Compacted`]; a broken stream is resumed from the next revision on the
//!   next endpoint, and ends with [`WatchEnd::Disconnected`] if no endpoint answers for
//!   [`EtcdOptions::retry_for`]. Dropping the [`Watch`] closes its connection, which
//!   cancels the watch in etcd.
//!
//! The [`Store`] trait's reads cannot return errors, so a read retries every endpoint
//! until [`EtcdOptions::retry_for`] has passed and then panics with the endpoints and
//! the last failure (a server without its store cannot answer anything correctly).
//! Writes report [`StateError::EtcdUnreachable`] / [`StateError::EtcdRefused`]; a
//! transaction is sent to the next endpoint only when the connection to one could not
//! be made (so it was never sent); a failure after sending leaves its outcome unknown,
//! as with any etcd client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::watch::{self, EventKind, Watch, WatchEnd, WatchEvent, WatchSender};
use crate::{Compare, Entry, Listing, Op, Revision, StateError, Store};

/// Default namespace: every berth key lives under it in etcd.
pub const ETCD_NAMESPACE: &str = "/berth/";
/// Default for [`EtcdOptions::retry_for`]: 30 s.
pub const ETCD_RETRY_FOR: Duration = Duration::from_secs(30);
/// Default for [`EtcdOptions::request_timeout`]: 10 s.
pub const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`EtcdOptions::page_keys`]: keys per range request of a listing.
pub const ETCD_PAGE_KEYS: usize = 1000;
/// How long a watch stream may stay silent before it is reconnected; etcd sends a
/// progress notification every 10 minutes to a watch that asks for them.
const WATCH_SILENCE: Duration = Duration::from_secs(11 * 60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Tuning of the etcd engine; [`EtcdOptions::default`] is what the server uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Reads, and watches that lost their stream, keep trying the endpoints this long
    /// before giving up. Unit: time.
    pub retry_for: Duration,
    /// One HTTP request to etcd may take this long. Unit: time.
    pub request_timeout: Duration,
    /// Keys per range request when listing a prefix. Unit: keys.
    pub page_keys: usize,
    /// A watcher whose queue would exceed this many events is cancelled
    /// ([`WatchEnd::Lagged`]). Unit: events.
    pub watch_buffer_events: usize,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            retry_for: ETCD_RETRY_FOR,
            request_timeout: ETCD_REQUEST_TIMEOUT,
            page_keys: ETCD_PAGE_KEYS,
            watch_buffer_events: crate::WATCH_BUFFER_EVENTS,
        }
    }
}

/// A live watch as the store sees it: closed with [`WatchEnd::Closed`] when the store
/// is dropped.
struct WatchHandle {
    sender: Arc<WatchSender>,
    conn: Arc<Mutex<Option<TcpStream>>>,
}

/// The etcd engine; see the module documentation.
pub struct Etcd {
    client: Arc<Client>,
    watches: Mutex<Vec<WatchHandle>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.client.endpoints)
            .field("namespace", &self.client.namespace)
            .finish()
    }
}

/// What the engine needs to talk to etcd; shared with watch threads.
struct Client {
    /// `host:port` of each member.
    endpoints: Vec<String>,
    /// The endpoint tried first (the last one that answered).
    current: AtomicUsize,
    agent: ureq::Agent,
    namespace: String,
    opts: EtcdOptions,
}

/// Why one request failed.
enum CallError {
    /// No connection could be made: the request was not sent; try another endpoint.
    Connect { endpoint: String, reason: String },
    /// The connection broke after the request was sent: its outcome is unknown.
    Broken { endpoint: String, reason: String },
    /// etcd answered with an error.
    Refused {
        endpoint: String,
        status: u16,
        message: String,
    },
}

impl From<CallError> for StateError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Connect { endpoint, reason } | CallError::Broken { endpoint, reason } => {
                StateError::EtcdUnreachable { endpoint, reason }
            }
            CallError::Refused {
                endpoint,
                status,
                message,
            } => StateError::EtcdRefused {
                endpoint,
                status,
                message,
            },
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connect { endpoint, reason } | CallError::Broken { endpoint, reason } => {
                write!(f, "etcd at {endpoint}: {reason}")
            }
            CallError::Refused {
                endpoint,
                status,
                message,
            } => write!(f, "etcd at {endpoint} answered {status}: {message}"),
        }
    }
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .unwrap_or_default()
}

/// A gateway int64: a JSON string (or number); absent means 0.
fn int(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// The end of the range of keys starting with `prefix` (etcd's `clientv3.GetPrefixEnd`):
/// the prefix with its last byte below 0xff incremented and the rest cut off; `\0`
/// (to the end of the keyspace) if there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `host:port` from `host:port` or `http://host:port[/]`.
fn parse_endpoint(raw: &str) -> Result<String, StateError> {
    let bad = |reason: &str| StateError::EtcdUnreachable {
        endpoint: raw.to_string(),
        reason: reason.to_string(),
    };
    let rest = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("etcd://"))
        .unwrap_or(raw);
    if rest.contains("://") {
        return Err(bad("only http:// endpoints are supported (no TLS)"));
    }
    let hp = rest.trim_end_matches('/');
    match hp.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(hp.to_string()),
        _ => Err(bad("expected HOST:PORT")),
    }
}

impl Client {
    fn endpoint_list(&self) -> String {
        self.endpoints.join(",")
    }

    /// One POST to the first endpoint that accepts a connection, starting at the one
    /// that answered last.
    fn call(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let endpoint = &self.endpoints[idx];
            match self.call_one(endpoint, path, body) {
                Err(e @ CallError::Connect { .. }) => last = Some(e),
                other => {
                    self.current.store(idx, Ordering::Relaxed);
                    return other;
                }
            }
        }
        Err(last.expect("at least one endpoint"))
    }

    fn call_one(&self, endpoint: &str, path: &str, body: &Value) -> Result<Value, CallError> {
        let url = format!("http://{endpoint}{path}");
        let resp = self
            .agent
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(&body.to_string());
        match resp {
            Ok(r) => serde_json::from_reader(r.into_reader()).map_err(|e| CallError::Broken {
                endpoint: endpoint.to_string(),
                reason: format!("unreadable answer to {path}: {e}"),
            }),
            Err(ureq::Error::Status(status, r)) => {
                // The gateway puts gRPC trailers after an error body, which the chunked
                // decoder may refuse: keep what was read and parse the first JSON value.
                let mut raw = Vec::new();
                let _ = r.into_reader().take(64 * 1024).read_to_end(&mut raw);
                let message = serde_json::Deserializer::from_slice(&raw)
                    .into_iter::<Value>()
                    .next()
                    .and_then(Result::ok)
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&raw).into_owned());
                Err(CallError::Refused {
                    endpoint: endpoint.to_string(),
                    status,
                    message,
                })
            }
            Err(ureq::Error::Transport(t)) => {
                let reason = t.to_string();
                let endpoint = endpoint.to_string();
                match t.kind() {
                    ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => {
                        Err(CallError::Connect { endpoint, reason })
                    }
                    _ => Err(CallError::Broken { endpoint, reason }),
                }
            }
        }
    }

    /// A read: retried on every endpoint until [`EtcdOptions::retry_for`] passed; an
    /// answer etcd refuses is returned.
    fn read(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.call(path, body) {
                Err(e @ (CallError::Connect { .. } | CallError::Broken { .. }))
                    if started.elapsed() < self.opts.retry_for =>
                {
                    tracing::warn!(error = %e, "etcd read failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    /// A read the [`Store`] trait cannot report failing: see the module documentation.
    fn read_or_panic(&self, path: &str, body: &Value) -> Value {
        match self.read(path, body) {
            Ok(v) => v,
            Err(e) => panic!(
                "etcd state store ({}) failed a read for {:?}: {e}",
                self.endpoint_list(),
                self.opts.retry_for
            ),
        }
    }

    fn key(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.namespace).into_bytes()
    }

    /// The berth key of an etcd key from a response (the namespace cut off).
    fn berth_key(&self, etcd_key: &Value) -> String {
        let raw = unb64(etcd_key);
        let s = String::from_utf8_lossy(&raw);
        s.strip_prefix(&self.namespace).unwrap_or(&s).to_string()
    }

    fn entry(&self, kv: &Value) -> (String, Entry) {
        (
            self.berth_key(&kv["key"]),
            Entry {
                value: String::from_utf8_lossy(&unb64(&kv["value"])).into_owned(),
                mod_revision: int(&kv["mod_revision"]),
            },
        )
    }

    fn current_revision(&self) -> Result<Revision, CallError> {
        let v = self.read(
            "/v3/kv/range",
            &json!({"key": b64(&self.key("")), "count_only": true}),
        )?;
        Ok(int(&v["header"]["revision"]))
    }

    fn list_with_revision(&self, prefix: &str) -> Listing {
        let start = self.key(prefix);
        let end = prefix_end(&start);
        'again: loop {
            let mut entries = Vec::new();
            let mut from = start.clone();
            let mut revision = 0;
            loop {
                let mut req = json!({
                    "key": b64(&from),
                    "range_end": b64(&end),
                    "limit": self.opts.page_keys,
                });
                if revision != 0 {
                    req["revision"] = json!(revision.to_string());
                }
                let v = match self.read("/v3/kv/range", &req) {
                    Ok(v) => v,
                    // the first page's revision was compacted while paging: start over
                    Err(CallError::Refused { ref message, .. })
                        if revision != 0 && message.contains("compacted") =>
                    {
                        continue 'again;
                    }
                    Err(e) => panic!(
                        "etcd state store ({}) failed to list {prefix:?}: {e}",
                        self.endpoint_list()
                    ),
                };
                if revision == 0 {
                    revision = int(&v["header"]["revision"]);
                }
                let kvs = v["kvs"].as_array().cloned().unwrap_or_default();
                if let Some(last) = kvs.last() {
                    from = unb64(&last["key"]);
                    from.push(0);
                }
                entries.extend(kvs.iter().map(|kv| self.entry(kv)));
                if !v["more"].as_bool().unwrap_or(false) || kvs.is_empty() {
                    return Listing { revision, entries };
                }
            }
        }
    }
}

impl Etcd {
    /// Connects to etcd at `endpoints` (`HOST:PORT` or `http://HOST:PORT`), keeping
    /// every key under `namespace` (e.g. [`ETCD_NAMESPACE`]), with default options.
    pub fn connect(endpoints: &[String], namespace: &str) -> Result<Etcd, StateError> {
        Self::connect_with(endpoints, namespace, EtcdOptions::default())
    }

    /// As [`Etcd::connect`], with `opts`. Fails with [`StateError::EtcdUnreachable`]
    /// if no endpoint answers (one try each: a server should not start against a
    /// store it cannot reach).
    pub fn connect_with(
        endpoints: &[String],
        namespace: &str,
        opts: EtcdOptions,
    ) -> Result<Etcd, StateError> {
        if endpoints.is_empty() {
            return Err(StateError::EtcdUnreachable {
                endpoint: String::new(),
                reason: "no endpoints given".into(),
            });
        }
        let endpoints = endpoints
            .iter()
            .map(|e| parse_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout(opts.request_timeout)
            .build();
        let client = Client {
            endpoints,
            current: AtomicUsize::new(0),
            agent,
            namespace: namespace.to_string(),
            opts,
        };
        client.call(
            "/v3/kv/range",
            &json!({"key": b64(&client.key("")), "count_only": true}),
        )?;
        Ok(Etcd {
            client: Arc::new(client),
            watches: Mutex::new(Vec::new()),
        })
    }

    /// The namespace every key lives under in etcd.
    pub fn namespace(&self) -> &str {
        &self.client.namespace
    }

    /// Compacts etcd's history up to `rev` (watches from before it end with
    /// [`WatchEnd::Compacted`]). etcd's own `--auto-compaction-*` flags do this in
    /// production; berth never compacts on its own.
    pub fn compact(&self, rev: Revision) -> Result<(), StateError> {
        self.client.call(
            "/v3/kv/compaction",
            &json!({"revision": rev.to_string(), "physical": true}),
        )?;
        Ok(())
    }

    fn lock_watches(&self) -> std::sync::MutexGuard<'_, Vec<WatchHandle>> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for Etcd {
    fn get(&self, key: &str) -> Option<Entry> {
        let v = self
            .client
            .read_or_panic("/v3/kv/range", &json!({"key": b64(&self.client.key(key))}));
        v["kvs"]
            .as_array()
            .and_then(|kvs| kvs.first())
            .map(|kv| self.client.entry(kv).1)
    }

    fn list(&self, prefix: &str) -> Vec<(String, Entry)> {
        self.client.list_with_revision(prefix).entries
    }

    fn list_with_revision(&self, prefix: &str) -> Listing {
        self.client.list_with_revision(prefix)
    }

    fn txn(&self, compares: &[Compare], ops: Vec<Op>) -> Result<Revision, StateError> {
        let c = &self.client;
        let compare: Vec<Value> = compares
            .iter()
            .map(|cmp| {
                let key = b64(&c.key(&cmp.key));
                match cmp.mod_revision {
                    Some(rev) => json!({"key": key, "target": "MOD", "result": "EQUAL",
                                        "mod_revision": rev.to_string()}),
                    None => json!({"key": key, "target": "VERSION", "result": "EQUAL",
                                   "version": "0"}),
                }
            })
            .collect();
        // etcd refuses two ops on one key in a txn; the last one decides the outcome.
        let mut last: Vec<Op> = Vec::with_capacity(ops.len());
        for op in ops.into_iter().rev() {
            let key = match &op {
                Op::Put { key, .. } | Op::Delete { key } => key,
            };
            if !last.iter().any(|o| match o {
                Op::Put { key: k, .. } | Op::Delete { key: k } => k == key,
            }) {
                last.push(op);
            }
        }
        last.reverse();
        let success: Vec<Value> = last
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => json!({"request_put": {
                    "key": b64(&c.key(key)), "value": b64(value.as_bytes())}}),
                Op::Delete { key } => json!({"request_delete_range": {
                    "key": b64(&c.key(key))}}),
            })
            .collect();
        let failure: Vec<Value> = compares
            .iter()
            .map(|cmp| json!({"request_range": {"key": b64(&c.key(&cmp.key)), "keys_only": true}}))
            .collect();
        let v = c.call(
            "/v3/kv/txn",
            &json!({"compare": compare, "success": success, "failure": failure}),
        )?;
        if v["succeeded"].as_bool().unwrap_or(false) {
            return Ok(int(&v["header"]["revision"]));
        }
        // Which compare failed: the ranges read in the same transaction say.
        let responses = v["responses"].as_array().cloned().unwrap_or_default();
        for (cmp, resp) in compares.iter().zip(responses.iter()) {
            let current = resp["response_range"]["kvs"]
                .as_array()
                .and_then(|kvs| kvs.first())
                .map(|kv| int(&kv["mod_revision"]));
            if current != cmp.mod_revision {
                return Err(StateError::Conflict {
                    key: cmp.key.clone(),
                });
            }
        }
        Err(StateError::Conflict {
            key: compares.first().map(|c| c.key.clone()).unwrap_or_default(),
        })
    }

    fn revision(&self) -> Revision {
        match self.client.current_revision() {
            Ok(r) => r,
            Err(e) => panic!(
                "etcd state store ({}) failed to report its revision: {e}",
                self.client.endpoint_list()
            ),
        }
    }

    fn watch(&self, prefix: &str, from_revision: Option<Revision>) -> Watch {
        let from = from_revision.unwrap_or_else(|| self.revision());
        let (tx, rx) = watch::channel(prefix, self.client.opts.watch_buffer_events);
        let tx = Arc::new(tx);
        let conn: Arc<Mutex<Option<TcpStream>>> = Arc::new(Mutex::new(None));
        {
            let conn = conn.clone();
            tx.on_drop(move || shutdown(&conn));
        }
        let mut watches = self.lock_watches();
        watches.retain(|w| w.sender.is_live());
        watches.push(WatchHandle {
            sender: tx.clone(),
            conn: conn.clone(),
        });
        drop(watches);
        let client = self.client.clone();
        let prefix = prefix.to_string();
        let spawned = std::thread::Builder::new()
            .name("etcd-watch".into())
            .spawn(move || watch_loop(&client, &prefix, from, &tx, &conn));
        if let Err(e) = spawned {
            // the closure (and its sender) is gone; end the watch through the handle
            if let Some(w) = self.lock_watches().last() {
                w.sender.close(WatchEnd::Disconnected {
                    revision: from,
                    reason: format!("cannot start the watch thread: {e}"),
                });
            }
        }
        rx
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for w in self.lock_watches().drain(..) {
            w.sender.close(WatchEnd::Closed);
            shutdown(&w.conn);
        }
    }
}

fn shutdown(conn: &Mutex<Option<TcpStream>>) {
    if let Some(s) = conn.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = s.shutdown(Shutdown::Both);
    }
}

/// How one watch stream ended.
enum StreamEnd {
    /// The watch is over (ended, dropped, lagged): stop.
    Done,
    /// The stream broke after delivering events up to the given revision: reconnect.
    Broken(String),
}

/// Streams the watch, reconnecting from the next revision until it ends.
fn watch_loop(
    client: &Client,
    prefix: &str,
    from: Revision,
    tx: &WatchSender,
    conn: &Mutex<Option<TcpStream>>,
) {
    let mut next = from + 1;
    let mut failing_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(50);
    let mut attempt = client.current.load(Ordering::Relaxed);
    loop {
        if !tx.is_live() {
            return;
        }
        let endpoint = &client.endpoints[attempt % client.endpoints.len()];
        let reason = match stream_once(client, endpoint, prefix, &mut next, tx, conn) {
            Ok(StreamEnd::Done) => return,
            // the stream had been established: the clock starts again now
            Ok(StreamEnd::Broken(reason)) => {
                failing_since = None;
                backoff = Duration::from_millis(50);
                reason
            }
            Err(reason) => reason,
        };
        if !tx.is_live() {
            return;
        }
        let since = *failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= client.opts.retry_for {
            tx.close(WatchEnd::Disconnected {
                revision: next - 1,
                reason: format!("etcd ({}) unreachable: {reason}", client.endpoint_list()),
            });
            return;
        }
        tracing::warn!(endpoint, reason, next, "etcd watch stream broke; resuming");
        attempt += 1;
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One watch connection: sends the create request and feeds events to `tx` until the
/// stream ends. `Err`: no watch was established (etcd did not say `created`).
fn stream_once(
    client: &Client,
    endpoint: &str,
    prefix: &str,
    next: &mut Revision,
    tx: &WatchSender,
    conn: &Mutex<Option<TcpStream>>,
) -> Result<StreamEnd, String> {
    let addr = endpoint
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {endpoint}: {e}"))?
        .next()
        .ok_or_else(|| format!("{endpoint} resolves to nothing"))?;
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
    stream
        .set_read_timeout(Some(WATCH_SILENCE))
        .map_err(|e| e.to_string())?;
    {
        let mut slot = conn.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(stream.try_clone().map_err(|e| e.to_string())?);
    }
    // dropped (or store closed) while connecting: the hook found no stream to close
    if !tx.is_live() {
        shutdown(conn);
        return Ok(StreamEnd::Done);
    }
    let key = client.key(prefix);
    let body = json!({"create_request": {
        "key": b64(&key),
        "range_end": b64(&prefix_end(&key)),
        "start_revision": next.to_string(),
        "prev_kv": true,
        "progress_notify": true,
    }})
    .to_string();
    let request = format!(
        "POST /v3/watch HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    (&stream)
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send the watch to {endpoint}: {e}"))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("no answer from {endpoint}: {e}"))?;
    let status = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut chunked = false;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| format!("broken answer from {endpoint}: {e}"))?;
        if n == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    if status != "200" {
        let mut rest = String::new();
        let _ = reader.take(4096).read_to_string(&mut rest);
        return Err(format!(
            "{endpoint} answered the watch with {status}: {rest}"
        ));
    }
    let body: Box<dyn Read> = if chunked {
        Box::new(Chunked {
            inner: reader,
            left: 0,
            done: false,
        })
    } else {
        Box::new(reader)
    };
    let mut created = false;
    let broken = |created: bool, reason: String| {
        if created {
            Ok(StreamEnd::Broken(reason))
        } else {
            Err(reason)
        }
    };
    for msg in serde_json::Deserializer::from_reader(body).into_iter::<Value>() {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => return broken(created, format!("watch stream from {endpoint}: {e}")),
        };
        let result = &msg["result"];
        if result.is_null() {
            let err = msg["error"]["message"].as_str().unwrap_or("no result");
            return broken(created, format!("{endpoint}: {err}"));
        }
        if result["created"].as_bool() == Some(true) {
            created = true;
        }
        let compact = int(&result["compact_revision"]);
        if compact != 0 {
            tx.close(WatchEnd::Compacted {
                from_revision: *next - 1,
                compact_revision: compact - 1,
            });
            shutdown(conn);
            return Ok(StreamEnd::Done);
        }
        if result["canceled"].as_bool() == Some(true) {
            let reason = result["cancel_reason"]
                .as_str()
                .unwrap_or("canceled by etcd");
            return broken(created, format!("{endpoint}: {reason}"));
        }
        let events = result["events"].as_array().cloned().unwrap_or_default();
        // one send per revision: a revision's events arrive all or none
        let mut batch: Vec<Arc<WatchEvent>> = Vec::new();
        let mut batch_rev = 0;
        for ev in &events {
            let kv = &ev["kv"];
            let rev = int(&kv["mod_revision"]);
            if rev != batch_rev && !batch.is_empty() {
                if !tx.send(batch_rev, &batch) {
                    shutdown(conn);
                    return Ok(StreamEnd::Done);
                }
                *next = batch_rev + 1;
                batch.clear();
            }
            batch_rev = rev;
            let delete = ev["type"].as_str() == Some("DELETE");
            let prev = &ev["prev_kv"];
            batch.push(Arc::new(WatchEvent {
                revision: rev,
                kind: if delete {
                    EventKind::Delete
                } else {
                    EventKind::Put
                },
                key: client.berth_key(&kv["key"]),
                value: (!delete)
                    .then(|| String::from_utf8_lossy(&unb64(&kv["value"])).into_owned()),
                prev_value: (!prev.is_null())
                    .then(|| String::from_utf8_lossy(&unb64(&prev["value"])).into_owned()),
            }));
        }
        if !batch.is_empty() {
            if !tx.send(batch_rev, &batch) {
                shutdown(conn);
                return Ok(StreamEnd::Done);
            }
            *next = batch_rev + 1;
        }
    }
    broken(created, format!("{endpoint} closed the watch stream"))
}

/// HTTP/1.1 chunked transfer decoding (RFC 9112 §7.1) of a response body.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            // the CRLF that ends the previous chunk, then the size line
            loop {
                line.clear();
                if self.inner.read_line(&mut line)? == 0 {
                    self.done = true;
                    return Ok(0);
                }
                if !line.trim().is_empty() {
                    break;
                }
            }
            let size = line.trim().split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(size, 16).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.done = true;
            return Ok(0);
        }
        self.left -= n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The range end of a prefix is etcd's GetPrefixEnd.
    #[test]
    fn prefix_end_matches_etcd() {
        assert_eq!(prefix_end(b"/berth/a"), b"/berth/b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    /// Endpoints are HOST:PORT, with an optional http:// or etcd:// scheme; TLS is refused.
    #[test]
    fn endpoints_parse() {
        assert_eq!(parse_endpoint("127.0.0.1:2379").unwrap(), "127.0.0.1:2379");
        assert_eq!(parse_endpoint("http://h:1/").unwrap(), "h:1");
        assert_eq!(parse_endpoint("etcd://h:1").unwrap(), "h:1");
        assert!(parse_endpoint("https://h:1").is_err());
        assert!(parse_endpoint("h").is_err());
        assert!(parse_endpoint(":1").is_err());
    }

    /// Chunked bodies decode across chunk boundaries and stop at the last chunk.
    #[test]
    fn chunked_decodes() {
        let raw = b"5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\n";
        let mut out = String::new();
        Chunked {
            inner: &raw[..],
            left: 0,
            done: false,
        }
        .read_to_string(&mut out)
        .unwrap();
        assert_eq!(out, "hello, world");
    }

    /// Gateway integers are strings, sometimes numbers, absent when zero.
    #[test]
    fn ints_parse() {
        assert_eq!(int(&json!("42")), 42);
        assert_eq!(int(&json!(42)), 42);
        assert_eq!(int(&Value::Null), 0);
    }
}
