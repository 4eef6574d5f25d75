//! The datastore each service owns: collections of JSON objects with ids given in
//! order, over HTTP (`POST /{collection}`, `GET /{collection}?field=value`,
//! `GET /{collection}/{id}`). [`Collections`] is the store's logic; [`Store`] the
//! client the services use.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Map, Value};

use crate::http::{self, HttpError, Request, Response};

/// A store's contents: collection name → objects in id order.
#[derive(Debug, Default)]
pub struct Collections {
    inner: Mutex<BTreeMap<String, Vec<Value>>>,
}

fn valid_collection(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// Whether `field` of `v` is `want` (a string, or a number written out).
fn field_is(v: &Value, field: &str, want: &str) -> bool {
    match &v[field] {
        Value::String(s) => s == want,
        Value::Number(n) => n.to_string() == want,
        Value::Bool(b) => b.to_string() == want,
        _ => false,
    }
}

impl Collections {
    /// The store's HTTP API.
    pub fn handle(&self, r: &Request) -> Response {
        if r.path == "/health" {
            return crate::service::health("store");
        }
        let mut parts = r.path.trim_matches('/').splitn(2, '/');
        let coll = parts.next().unwrap_or_default();
        let id = parts.next();
        if !valid_collection(coll) {
            return Response::error(404, "no such collection: names are lowercase letters and _");
        }
        let mut all = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match (r.method.as_str(), id) {
            ("POST", None) => {
                let mut obj = match r.json_object() {
                    Ok(o) => o,
                    Err(e) => return e,
                };
                let items = all.entry(coll.to_string()).or_default();
                let id = items.len() as u64 + 1;
                obj.insert("id".into(), json!(id));
                let v = Value::Object(obj);
                items.push(v.clone());
                Response::json(201, v)
            }
            ("GET", None) => {
                let items = all.get(coll).map(Vec::as_slice).unwrap_or_default();
                let list: Vec<&Value> = items
                    .iter()
                    .filter(|v| r.query.iter().all(|(k, want)| field_is(v, k, want)))
                    .collect();
                Response::json(200, json!(list))
            }
            ("GET", Some(id)) => {
                let found = id
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| all.get(coll)?.get(i.checked_sub(1)?));
                match found {
                    Some(v) => Response::json(200, v.clone()),
                    None => Response::error(404, &format!("no {coll} {id}")),
                }
            }
            _ => Response::error(405, "the store takes POST /{collection}, GET /{collection}[?field=value] and GET /{collection}/{id}"),
        }
    }
}

/// A client of one store, at `host:port` (a Cloud Map name in the demo).
#[derive(Debug, Clone)]
pub struct Store {
    pub authority: String,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the datastore at {0} cannot be reached: {1}")]
    Unreachable(String, #[source] HttpError),
    #[error("the datastore at {0} answered {1}: {2}")]
    Status(String, u16, Value),
}

impl StoreError {
    /// The answer a service gives for it: 503, the datastore is not there.
    pub fn response(&self) -> Response {
        Response::error(503, &self.to_string())
    }
}

impl Store {
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        ok: &[u16],
    ) -> Result<(u16, Value), StoreError> {
        let (status, v) = http::request(&self.authority, method, path, body)
            .map_err(|e| StoreError::Unreachable(self.authority.clone(), e))?;
        if ok.contains(&status) {
            Ok((status, v))
        } else {
            Err(StoreError::Status(self.authority.clone(), status, v))
        }
    }

    /// Stores `obj` in `coll`; the stored object with its id.
    pub fn create(&self, coll: &str, obj: Map<String, Value>) -> Result<Value, StoreError> {
        Ok(self
            .call(
                "POST",
                &format!("/{coll}"),
                Some(&Value::Object(obj)),
                &[201],
            )?
            .1)
    }

    /// The object `id` of `coll`, `None` if there is none.
    pub fn get(&self, coll: &str, id: &str) -> Result<Option<Value>, StoreError> {
        let (status, v) = self.call("GET", &format!("/{coll}/{id}"), None, &[200, 404])?;
        Ok((status == 200).then_some(v))
    }

    /// The objects of `coll` whose `field` is `value` (all of them with no filter).
    pub fn list(&self, coll: &str, filter: Option<(&str, &str)>) -> Result<Value, StoreError> {
        let path = match filter {
            Some((f, v)) => format!("/{coll}?{f}={}", encode(v)),
            None => format!("/{coll}"),
        };
        Ok(self.call("GET", &path, None, &[200])?.1)
    }
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, body: &str) -> Request {
        let (path, query) = http::split_target(target);
        Request {
            method: method.into(),
            path,
            query,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn collections() {
        let c = Collections::default();
        let r = c.handle(&req(
            "POST",
            "/messages",
            r#"{"topic_id": 2, "text": "a b"}"#,
        ));
        assert_eq!((r.status, r.body["id"].clone()), (201, json!(1)));
        c.handle(&req(
            "POST",
            "/messages",
            r#"{"topic_id": "3", "text": "c"}"#,
        ));
        c.handle(&req("POST", "/messages", r#"{"topic_id": 3, "text": "d"}"#));
        let r = c.handle(&req("GET", "/messages?topic_id=3", ""));
        let texts: Vec<&str> = r
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["c", "d"]);
        let r = c.handle(&req(
            "GET",
            &format!("/messages?text={}", encode("a b")),
            "",
        ));
        assert_eq!(r.body.as_array().unwrap().len(), 1);
        assert_eq!(c.handle(&req("GET", "/messages/2", "")).body["text"], "c");
        assert_eq!(c.handle(&req("GET", "/messages/9", "")).status, 404);
        assert_eq!(c.handle(&req("GET", "/messages/0", "")).status, 404);
        assert_eq!(c.handle(&req("GET", "/users", "")).body, json!([]));
        assert_eq!(c.handle(&req("POST", "/Bad!", "{}")).status, 404);
        assert_eq!(c.handle(&req("POST", "/users", "[1]")).status, 400);
        assert_eq!(c.handle(&req("DELETE", "/users/1", "")).status, 405);
    }
}
