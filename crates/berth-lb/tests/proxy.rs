//! The proxy end to end: a data plane on 127.0.0.1, tiny hyper backends, real clients.

mod common;

use std::time::Duration;

use berth_lb::config::{Action, Condition, WeightedTargetGroup};
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn v(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Path, host, method, header and query conditions each pick their rule, in
/// priority order, and the default rule takes the rest.
#[tokio::test]
async fn routes_by_conditions() {
    let (users, topics) = (
        Backend::start("users").await,
        Backend::start("topics").await,
    );
    let port = free_port();
    let dp = data_plane();
    let rules = vec![
        rule(
            1,
            vec![Condition::PathPattern(v(&["/users*"]))],
            forward("tg-users"),
        ),
        rule(
            2,
            vec![Condition::PathPattern(v(&["/topics*"]))],
            forward("tg-topics"),
        ),
        rule(
            3,
            vec![Condition::HostHeader(v(&["*.admin.example"]))],
            fixed(200, "admin"),
        ),
        rule(
            4,
            vec![Condition::HttpMethod(v(&["DELETE"]))],
            fixed(405, "no deletes"),
        ),
        rule(
            5,
            vec![Condition::HttpHeader {
                name: "X-Canary".into(),
                values: v(&["on"]),
            }],
            fixed(200, "canary"),
        ),
        rule(
            6,
            vec![Condition::QueryString(vec![(Some("v".into()), "2".into())])],
            fixed(200, "v2"),
        ),
        default_rule(fixed(404, "nothing here")),
    ];
    let groups = vec![
        group("tg-users", vec![users.target()]),
        group("tg-topics", vec![topics.target()]),
    ];
    dp.apply(config(port, 60, rules, groups)).unwrap();
    let c = client();

    let r = get(&c, port, "/users/1?x=y").await;
    assert_eq!((r.status, r.backend()), (200, "users"));
    assert_eq!(get(&c, port, "/topics").await.backend(), "topics");
    let r = send(
        &c,
        get_req(port, "/")
            .header("host", "ops.ADMIN.example:8080")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "admin"));
    let r = send(
        &c,
        http::Request::delete(format!("http://127.0.0.1:{port}/x"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (405, "no deletes"));
    let r = send(
        &c,
        get_req(port, "/")
            .header("x-canary", "ON")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.body, "canary");
    assert_eq!(get(&c, port, "/?a=1&V=2").await.body, "v2");
    let r = get(&c, port, "/Users").await;
    assert_eq!((r.status, r.body.as_str()), (404, "nothing here"));
    assert_eq!(r.headers["content-type"], "text/plain");
    dp.shutdown();
}

/// A forward to weighted groups splits requests roughly by weight (1:3 over 400).
#[tokio::test]
async fn weighted_split() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let port = free_port();
    let dp = data_plane();
    let action = Action::Forward {
        target_groups: vec![
            WeightedTargetGroup {
                arn: "tg-a".into(),
                weight: 1,
            },
            WeightedTargetGroup {
                arn: "tg-b".into(),
                weight: 3,
            },
        ],
        stickiness_secs: None,
    };
    let groups = vec![
        group("tg-a", vec![a.target()]),
        group("tg-b", vec![b.target()]),
    ];
    dp.apply(config(port, 60, vec![default_rule(action)], groups))
        .unwrap();
    let c = client();
    for _ in 0..400 {
        assert_eq!(get(&c, port, "/").await.status, 200);
    }
    let (ha, hb) = (a.hits(), b.hits());
    assert_eq!(ha + hb, 400);
    assert!((60..=140).contains(&ha), "a got {ha}, b got {hb}");
    dp.shutdown();
}

/// Fixed responses carry status, content type and body; redirects build the
/// Location from ELB's reserved keys.
#[tokio::test]
async fn fixed_response_and_redirect() {
    let port = free_port();
    let dp = data_plane();
    let redirect = Action::Redirect {
        protocol: "HTTPS".into(),
        host: "#{host}".into(),
        port: "443".into(),
        path: "/new/#{path}".into(),
        query: "#{query}&from=#{port}".into(),
        status: 301,
    };
    let rules = vec![
        rule(1, vec![Condition::PathPattern(v(&["/old/*"]))], redirect),
        default_rule(Action::FixedResponse {
            status: 503,
            content_type: Some("application/json".into()),
            body: r#"{"down":true}"#.into(),
        }),
    ];
    dp.apply(config(port, 60, rules, vec![])).unwrap();
    let c = client();
    let r = get(&c, port, "/anything").await;
    assert_eq!((r.status, r.body.as_str()), (503, r#"{"down":true}"#));
    assert_eq!(r.headers["content-type"], "application/json");
    let r = send(
        &c,
        get_req(port, "/old/a?q=1")
            .header("host", "shop.example:81")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.headers["location"],
        format!("https://shop.example/new/old/a?q=1&from={port}")
    );
    dp.shutdown();
}

/// The target sees X-Forwarded-For appended, -Proto and -Port set, the Host kept,
/// and no hop-by-hop fields.
#[tokio::test]
async fn forwarded_headers() {
    let b = Backend::start("b").await;
    let port = free_port();
    let dp = data_plane();
    dp.apply(behind(port, &[&b])).unwrap();
    let c = client();
    let r = send(
        &c,
        get_req(port, "/headers")
            .header("host", "app.example")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https")
            .header("connection", "x-private")
            .header("x-private", "1")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    let lines: Vec<&str> = r.body.lines().collect();
    assert!(
        lines.contains(&"x-forwarded-for: 203.0.113.7, 127.0.0.1"),
        "{}",
        r.body
    );
    assert!(lines.contains(&"x-forwarded-proto: http"), "{}", r.body);
    assert!(
        lines.contains(&format!("x-forwarded-port: {port}").as_str()),
        "{}",
        r.body
    );
    assert!(lines.contains(&"host: app.example"), "{}", r.body);
    assert!(!r.body.contains("x-private"), "{}", r.body);
    dp.shutdown();
}

/// ELB's status codes: 503 without targets, 502 when the target refuses, 504 when
/// it answers later than the idle timeout.
#[tokio::test]
async fn error_statuses() {
    let slow = Backend::start("slow").await;
    let port = free_port();
    let dp = data_plane();
    let mut refused = slow.target();
    refused.port = free_port();
    let rules = vec![
        rule(
            1,
            vec![Condition::PathPattern(v(&["/empty"]))],
            forward("tg-empty"),
        ),
        rule(
            2,
            vec![Condition::PathPattern(v(&["/refused"]))],
            forward("tg-refused"),
        ),
        rule(
            3,
            vec![Condition::PathPattern(v(&["/unknown"]))],
            forward("tg-nope"),
        ),
        default_rule(forward("tg-slow")),
    ];
    let groups = vec![
        group("tg-empty", vec![]),
        group("tg-refused", vec![refused]),
        group("tg-slow", vec![slow.target()]),
    ];
    dp.apply(config(port, 1, rules, groups)).unwrap();
    let c = client();
    let r = get(&c, port, "/empty").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["server"], "awselb/2.0");
    assert_eq!(get(&c, port, "/unknown").await.status, 503);
    assert_eq!(get(&c, port, "/refused").await.status, 502);
    assert_eq!(get(&c, port, "/x?ms=2500").await.status, 504);
    assert_eq!(get(&c, port, "/x").await.status, 200);
    dp.shutdown();
}

/// apply() with new rules while a slow request is in flight: that request
/// finishes from its target; the next request follows the new rules.
#[tokio::test]
async fn apply_keeps_requests_in_flight() {
    let b = Backend::start("b").await;
    let port = free_port();
    let dp = data_plane();
    let groups = vec![group("tg", vec![b.target()])];
    dp.apply(config(
        port,
        60,
        vec![default_rule(forward("tg"))],
        groups.clone(),
    ))
    .unwrap();
    let c = client();
    let slow = tokio::spawn({
        let c = c.clone();
        async move { get(&c, port, "/s?ms=1500").await }
    });
    eventually(
        "slow request reached the backend",
        Duration::from_secs(5),
        || async { b.hits() == 1 },
    )
    .await;
    dp.apply(config(
        port,
        60,
        vec![default_rule(fixed(200, "new rules"))],
        groups,
    ))
    .unwrap();
    assert_eq!(get(&c, port, "/").await.body, "new rules");
    let r = slow.await.unwrap();
    assert_eq!((r.status, r.backend()), (200, "b"));
    dp.shutdown();
}

/// A listener removed by apply() stops accepting; a new one is bound.
#[tokio::test]
async fn listeners_come_and_go() {
    let (p1, p2) = (free_port(), free_port());
    let dp = data_plane();
    dp.apply(config(
        p1,
        60,
        vec![default_rule(fixed(200, "one"))],
        vec![],
    ))
    .unwrap();
    assert_eq!(dp.listening_ports(), vec![p1]);
    let c = client();
    assert_eq!(get(&c, p1, "/").await.body, "one");
    dp.apply(config(
        p2,
        60,
        vec![default_rule(fixed(200, "two"))],
        vec![],
    ))
    .unwrap();
    assert_eq!(get(&c, p2, "/").await.body, "two");
    assert_eq!(dp.listening_ports(), vec![p2]);
    eventually("old listener closed", Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", p1))
            .await
            .is_err()
    })
    .await;
    dp.shutdown();
}

/// An HTTP/2 client with prior knowledge (h2c) is served on the same port.
#[tokio::test]
async fn http2_prior_knowledge() {
    let b = Backend::start("b").await;
    let port = free_port();
    let dp = data_plane();
    dp.apply(behind(port, &[&b])).unwrap();
    let h2: TestClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let res = h2
        .request(
            get_req(port, "/headers")
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-backend"], "b");
    dp.shutdown();
}

/// A WebSocket-style upgrade is proxied, then bytes flow both ways.
#[tokio::test]
async fn upgrade_echo() {
    let b = Backend::start("b").await;
    let port = free_port();
    let dp = data_plane();
    dp.apply(behind(port, &[&b])).unwrap();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "head so far: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for msg in [&b"hello"[..], b"world"] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    }
    dp.shutdown();
}

/// With stickiness on the group, a client holding the AWSALB cookie stays on its target.
#[tokio::test]
async fn sticky_sessions() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let port = free_port();
    let dp = data_plane();
    let mut tg = group("tg", vec![a.target(), b.target()]);
    tg.stickiness_secs = Some(60);
    dp.apply(config(
        port,
        60,
        vec![default_rule(forward("tg"))],
        vec![tg],
    ))
    .unwrap();
    let c = client();
    let first = get(&c, port, "/").await;
    let cookie = first.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("AWSALB="), "{cookie}");
    for _ in 0..6 {
        let r = send(
            &c,
            get_req(port, "/")
                .header("cookie", &cookie)
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.backend(), first.backend());
    }
    dp.shutdown();
}

/// shutdown() outside an async context stops the listeners and frees their ports,
/// on one data-plane thread (current-thread runtime) and on several.
#[test]
fn shutdown_outside_a_runtime_frees_ports() {
    for threads in [1, 2] {
        let port = free_port();
        let dp = berth_lb::DataPlane::start("127.0.0.1".parse().unwrap(), threads).unwrap();
        dp.apply(config(
            port,
            60,
            vec![default_rule(fixed(200, "x"))],
            vec![],
        ))
        .unwrap();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        dp.shutdown();
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "{threads} threads"
        );
    }
}

/// apply() reports a listener it cannot bind and an HTTPS listener, and applies the rest.
#[tokio::test]
async fn apply_reports_what_it_cannot_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let ok = free_port();
    let dp = data_plane();
    let mut cfg = config(busy, 60, vec![default_rule(fixed(200, "x"))], vec![]);
    let mut second = cfg.load_balancers[0].listeners[0].clone();
    second.port = ok;
    let mut https = second.clone();
    https.port = free_port();
    https.protocol = berth_lb::config::Protocol::Https;
    cfg.load_balancers[0].listeners.extend([second, https]);
    let errors = dp.apply(cfg).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        matches!(errors[0], berth_lb::ApplyError::Https { .. }),
        "{errors:?}"
    );
    assert!(
        matches!(errors[1], berth_lb::ApplyError::Bind { .. }),
        "{errors:?}"
    );
    assert_eq!(dp.listening_ports(), vec![ok]);
    assert_eq!(get(&client(), ok, "/").await.body, "x");
    dp.shutdown();
}
