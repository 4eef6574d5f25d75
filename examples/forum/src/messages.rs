//! The messages service: a message names a user and a topic, which it asks the users
//! and topics services about (by their service-discovery names) before it stores it.
//!
//! - `POST /messages {"user_id": 1, "topic_id": 1, "text": "hi"}` → 201, or 422 naming
//!   the user or topic that does not exist, or 503 when a service cannot be asked
//! - `GET /messages?topic_id=1` → 200, the topic's messages; `GET /messages` → all
//! - `GET /health` → 200

use serde_json::{json, Map, Value};

use crate::entity::text_field;
use crate::http::{self, Request, Response};
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct Messages {
    /// `host:port` of the users service.
    pub users: String,
    /// `host:port` of the topics service.
    pub topics: String,
    pub store: Store,
}

/// An id field: a positive integer, or a string of digits.
fn id_field(obj: &Map<String, Value>, field: &str) -> Result<u64, Response> {
    let id = match obj.get(field) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        None => return Err(Response::error(422, &format!("{field} is required"))),
        _ => None,
    };
    id.filter(|i| *i > 0)
        .ok_or_else(|| Response::error(422, &format!("{field} must be a positive integer id")))
}

impl Messages {
    /// Whether `collection` (`users`) at `authority` has `id`.
    fn exists(&self, authority: &str, collection: &str, id: u64) -> Result<(), Response> {
        let what = crate::entity::singular(collection);
        match http::request(authority, "GET", &format!("/{collection}/{id}"), None) {
            Ok((200, _)) => Ok(()),
            Ok((404, _)) => Err(Response::error(422, &format!("{what} {id} does not exist"))),
            Ok((status, body)) => Err(Response::error(
                503,
                &format!("the {collection} service ({authority}) answered {status}: {body}"),
            )),
            Err(e) => Err(Response::error(
                503,
                &format!("cannot ask the {collection} service: {e}"),
            )),
        }
    }

    fn post(&self, r: &Request) -> Result<Response, Response> {
        let obj = r.json_object()?;
        let user = id_field(&obj, "user_id")?;
        let topic = id_field(&obj, "topic_id")?;
        let text = text_field(&obj, "text")?;
        self.exists(&self.users, "users", user)?;
        self.exists(&self.topics, "topics", topic)?;
        let msg = json!({"user_id": user, "topic_id": topic, "text": text});
        let Value::Object(msg) = msg else {
            unreachable!("a JSON object literal")
        };
        self.store
            .create("messages", msg)
            .map(|v| Response::json(201, v))
            .map_err(|e| e.response())
    }

    pub fn handle(&self, r: &Request) -> Response {
        match (r.method.as_str(), r.path.trim_end_matches('/')) {
            (_, "/health") => crate::service::health("messages"),
            ("POST", "/messages") => self.post(r).unwrap_or_else(|e| e),
            ("GET", "/messages") => {
                let filter = r.param("topic_id").map(|t| ("topic_id", t));
                self.store
                    .list("messages", filter)
                    .map(|v| Response::json(200, v))
                    .unwrap_or_else(|e| e.response())
            }
            (_, "/messages") => Response::error(405, "/messages takes POST and GET"),
            _ => Response::error(404, "this is the messages service: try /messages"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::Entity;
    use crate::store::Collections;
    use std::net::TcpListener;
    use std::sync::Arc;

    fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || http::serve(l, Arc::new(handler)));
        a
    }

    /// The whole forum on loopback: stores, users, topics and messages, as in the demo.
    #[test]
    fn forum_on_loopback() {
        let store = |_| {
            let c = Arc::new(Collections::default());
            Store {
                authority: start(move |r| c.handle(r)),
            }
        };
        let users = Entity {
            collection: "users",
            field: "name",
            store: store(0),
        };
        let topics = Entity {
            collection: "topics",
            field: "title",
            store: store(1),
        };
        let (u, t) = (
            start(move |r| users.handle(r)),
            start(move |r| topics.handle(r)),
        );
        let m = Messages {
            users: u.clone(),
            topics: t.clone(),
            store: store(2),
        };
        let m = start(move |r| m.handle(r));

        let (s, ada) = http::request(&u, "POST", "/users", Some(&json!({"name": "ada"}))).unwrap();
        assert_eq!((s, &ada["name"]), (201, &json!("ada")));
        let (s, _) = http::request(&u, "POST", "/users", Some(&json!({"name": ""}))).unwrap();
        assert_eq!(s, 422);
        let (s, topic) =
            http::request(&t, "POST", "/topics", Some(&json!({"title": "rust"}))).unwrap();
        assert_eq!(s, 201);
        let (s, got) = http::request(&u, "GET", &format!("/users/{}", ada["id"]), None).unwrap();
        assert_eq!((s, got), (200, ada.clone()));
        assert_eq!(http::request(&u, "GET", "/users/99", None).unwrap().0, 404);

        let post = json!({"user_id": ada["id"], "topic_id": topic["id"], "text": "hello"});
        let (s, msg) = http::request(&m, "POST", "/messages", Some(&post)).unwrap();
        assert_eq!((s, &msg["text"]), (201, &json!("hello")));
        let (s, body) = http::request(
            &m,
            "POST",
            "/messages",
            Some(&json!({"user_id": 42, "topic_id": topic["id"], "text": "x"})),
        )
        .unwrap();
        assert_eq!(
            (s, body["message"].as_str().unwrap()),
            (422, "user 42 does not exist")
        );
        let (s, body) = http::request(
            &m,
            "POST",
            "/messages",
            Some(&json!({"user_id": 1, "topic_id": 7, "text": "x"})),
        )
        .unwrap();
        assert_eq!(
            (s, body["message"].as_str().unwrap()),
            (422, "topic 7 does not exist")
        );
        let (s, list) = http::request(
            &m,
            "GET",
            &format!("/messages?topic_id={}", topic["id"]),
            None,
        )
        .unwrap();
        assert_eq!((s, list), (200, json!([msg])));
        assert_eq!(
            http::request(&m, "GET", "/messages?topic_id=2", None)
                .unwrap()
                .1,
            json!([])
        );

        // A service that cannot be reached is a 503 naming it.
        let gone = Messages {
            users: "127.0.0.1:1".into(),
            topics: t,
            store: Store {
                authority: "127.0.0.1:1".into(),
            },
        };
        let r = gone.post(&Request {
            method: "POST".into(),
            path: "/messages".into(),
            query: vec![],
            body: post.to_string().into_bytes(),
        });
        let r = r.unwrap_err();
        assert_eq!(r.status, 503);
        assert!(r.body["message"]
            .as_str()
            .unwrap()
            .contains("users service"));
    }
}
