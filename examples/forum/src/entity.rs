//! The users and topics services: one collection each, objects with one required
//! text field (`name` for users, `title` for topics), kept in the service's own store.
//!
//! - `POST /users {"name": "ada"}` → 201 `{"id": 1, "name": "ada"}`
//! - `GET /users` → 200, every user; `GET /users/1` → 200 or 404
//! - `GET /health` → 200

use serde_json::{Map, Value};

use crate::http::{Request, Response};
use crate::store::Store;

/// The longest text field accepted.
pub const MAX_TEXT: usize = 1000;

/// One entity service.
#[derive(Debug, Clone)]
pub struct Entity {
    /// The collection and path: `users`.
    pub collection: &'static str,
    /// The one required field: `name`.
    pub field: &'static str,
    pub store: Store,
}

/// A required, non-empty text field of at most [`MAX_TEXT`] characters.
pub fn text_field(obj: &Map<String, Value>, field: &str) -> Result<String, Response> {
    match obj.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_TEXT => {
            Ok(s.clone())
        }
        Some(Value::String(_)) => Err(Response::error(
            422,
            &format!("{field} must be 1 to {MAX_TEXT} characters"),
        )),
        Some(_) => Err(Response::error(422, &format!("{field} must be a string"))),
        None => Err(Response::error(422, &format!("{field} is required"))),
    }
}

impl Entity {
    pub fn handle(&self, r: &Request) -> Response {
        if r.path == "/health" {
            return crate::service::health(self.collection);
        }
        let base = format!("/{}", self.collection);
        let rest = match r.path.strip_prefix(&base) {
            Some(rest) => rest.trim_end_matches('/'),
            None => {
                return Response::error(
                    404,
                    &format!("this is the {} service: try {base}", self.collection),
                )
            }
        };
        let result = match (r.method.as_str(), rest) {
            ("POST", "") => {
                let obj = match r.json_object() {
                    Ok(o) => o,
                    Err(e) => return e,
                };
                let value = match text_field(&obj, self.field) {
                    Ok(v) => v,
                    Err(e) => return e,
                };
                let mut clean = Map::new();
                clean.insert(self.field.into(), Value::String(value));
                self.store
                    .create(self.collection, clean)
                    .map(|v| Response::json(201, v))
            }
            ("GET", "") => self
                .store
                .list(self.collection, None)
                .map(|v| Response::json(200, v)),
            ("GET", id) if id.len() > 1 => {
                let id = &id[1..];
                self.store
                    .get(self.collection, id)
                    .map(|found| match found {
                        Some(v) => Response::json(200, v),
                        None => Response::error(
                            404,
                            &format!("there is no {} with id {id}", singular(self.collection)),
                        ),
                    })
            }
            _ => {
                return Response::error(
                    405,
                    &format!("{base} takes POST and GET, {base}/ID takes GET"),
                )
            }
        };
        result.unwrap_or_else(|e| e.response())
    }
}

/// `users` → `user`.
pub fn singular(collection: &str) -> &str {
    collection.strip_suffix('s').unwrap_or(collection)
}
