use super::*;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::RwLock;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::balance;
use crate::config::{Action, Condition, Protocol, Rule, WeightedTargetGroup};
use crate::error::RateLimited;
use crate::h1::pool::Pool;
use crate::proxy::{ListenerRt, Shared};

const PORT: u16 = 8080;

fn ctx() -> ConnCtx {
    ConnCtx {
        shared: Arc::new(Shared {
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            pool: Pool::new(1, Duration::from_secs(1)),
            log_gate: RateLimited::new(0, Duration::from_secs(1)),
        }),
        port: PORT,
        peer: "192.0.2.9:5000".parse().unwrap(),
        busy: Arc::new(AtomicUsize::new(0)),
    }
}

/// `/fixed*` answered by the load balancer, the rest forwarded to 10.0.0.1:80.
fn snapshot() -> Snapshot {
    let group = balance::tests::group(vec![balance::tests::target(1, false, false)], false);
    let rules = vec![
        Rule {
            arn: "fixed".into(),
            priority: Some(1),
            conditions: vec![Condition::PathPattern(vec!["/fixed*".into()])],
            action: Action::FixedResponse {
                status: 418,
                content_type: None,
                body: "teapot".into(),
            },
        },
        Rule {
            arn: "default".into(),
            priority: None,
            conditions: vec![],
            action: Action::Forward {
                target_groups: vec![WeightedTargetGroup {
                    arn: "tg".into(),
                    weight: 1,
                }],
                stickiness_secs: None,
            },
        },
    ];
    Snapshot {
        listeners: HashMap::from([(
            PORT,
            ListenerRt {
                protocol: Protocol::Http,
                idle_timeout: Duration::from_secs(60),
                rules,
            },
        )]),
        groups: HashMap::from([("tg".to_string(), Arc::new(group))]),
    }
}

struct Prepared {
    kind: &'static str,
    req: Option<Req>,
    out: String,
    back: String,
}

fn run(snap: &Snapshot, buf: &[u8], first: bool) -> Prepared {
    let (mut out, mut back) = (Vec::new(), Vec::new());
    let prep = prepare(
        &ctx(),
        snap,
        buf,
        first,
        "192.0.2.9",
        false,
        &mut out,
        &mut back,
    );
    let (kind, req) = match prep {
        Prep::Partial => ("partial", None),
        Prep::HandOver => ("hand over", None),
        Prep::Reject(e) => {
            assert_eq!(e.status().as_u16(), 400, "{e}");
            ("reject", None)
        }
        Prep::Local(req) => ("local", Some(req)),
        Prep::Forward { req, target, .. } => {
            assert_eq!(target.authority, "10.0.0.1:80");
            ("forward", Some(req))
        }
    };
    Prepared {
        kind,
        req,
        out: String::from_utf8(out).unwrap(),
        back: String::from_utf8(back).unwrap(),
    }
}

/// The HTTP/2 preface (or its start) on a new connection goes to hyper; an
/// unfinished head waits for more bytes; a smuggling-prone head is refused.
#[test]
fn hand_over_partial_reject() {
    let snap = snapshot();
    assert_eq!(
        run(&snap, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", true).kind,
        "hand over"
    );
    assert_eq!(run(&snap, b"PRI * HT", true).kind, "partial");
    assert_eq!(
        run(&snap, b"GET / HTTP/1.1\r\nHost:", false).kind,
        "partial"
    );
    assert_eq!(
        run(
            &snap,
            b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            false
        )
        .kind,
        "hand over"
    );
    let smuggle = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(run(&snap, smuggle, false).kind, "reject");
}

/// A fixed response is written whole; a body the load balancer does not read
/// (not all buffered) closes the connection after the answer.
#[test]
fn fixed_responses() {
    let snap = snapshot();
    let p = run(&snap, b"GET /fixed HTTP/1.1\r\n\r\nGET /next", false);
    assert_eq!(p.kind, "local");
    assert!(
        p.back.starts_with("HTTP/1.1 418 I'm a teapot\r\n"),
        "{}",
        p.back
    );
    assert!(
        p.back.ends_with("Content-Length: 6\r\n\r\nteapot"),
        "{}",
        p.back
    );
    let req = p.req.unwrap();
    assert!(req.keep_alive);
    assert_eq!(req.used, b"GET /fixed HTTP/1.1\r\n\r\n".len());
    let p = run(
        &snap,
        b"POST /fixed HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
        false,
    );
    assert!(!p.req.unwrap().keep_alive);
    assert!(p.back.contains("Connection: close\r\n"), "{}", p.back);
}

/// A forwarded request: the rewritten head and the buffered body in one buffer,
/// the pipelined request after it left alone; replayable only when whole and safe.
#[test]
fn forwarded_requests() {
    let snap = snapshot();
    let raw = b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n";
    let p = run(&snap, raw, false);
    assert_eq!(p.kind, "forward");
    assert!(p
        .out
        .starts_with("PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"));
    assert!(
        p.out.ends_with("X-Forwarded-Port: 8080\r\n\r\nabc"),
        "{}",
        p.out
    );
    let req = p.req.unwrap();
    assert_eq!(&raw[req.used..], b"GET / HTTP/1.1\r\n\r\n");
    assert!(req.replay && req.body.is_done());
    let p = run(
        &snap,
        b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        false,
    );
    assert!(!p.req.unwrap().replay, "POST with a body is not sent twice");
    let p = run(
        &snap,
        b"PUT /x HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc",
        false,
    );
    let req = p.req.unwrap();
    assert!(!req.replay && !req.body.is_done());
}

/// No listener in the snapshot: ELB's 503 page, and the connection stays.
#[test]
fn no_listener() {
    let p = run(&Snapshot::default(), b"GET / HTTP/1.1\r\n\r\n", false);
    assert_eq!(p.kind, "local");
    assert!(p.back.starts_with("HTTP/1.1 503 "), "{}", p.back);
    assert!(p.back.contains("Server: awselb/2.0\r\n"));
    assert!(p.req.unwrap().keep_alive);
}
