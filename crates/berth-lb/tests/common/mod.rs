//! The tests' harness: tiny hyper backends on 127.0.0.1:0, free ports for
//! listeners, configuration builders, a client, and polling instead of sleeping.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_lb::config::{
    Action, Condition, HealthCheck, LbConfig, Listener, LoadBalancer, Protocol, Rule, Target,
    TargetGroup, WeightedTargetGroup,
};
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A backend: answers its name (`x-backend` header and body), `/health` with the
/// status set in `health`, `/slow?ms=N` after N ms, `/headers` with the request's
/// headers, and echoes bytes after any `Upgrade` request.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub health: Arc<AtomicU16>,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Arc::new(AtomicU16::new(200));
        let hits = Arc::new(AtomicUsize::new(0));
        let (n, h, c) = (name.to_string(), health.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (n, h, c) = (n.clone(), h.clone(), c.clone());
                let svc = hyper::service::service_fn(move |req| {
                    answer(n.clone(), h.clone(), c.clone(), req)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades(),
                );
            }
        });
        Backend {
            name: name.into(),
            addr,
            health,
            hits,
            task,
        }
    }

    pub fn target(&self) -> Target {
        Target {
            id: format!("{}-{}", self.name, self.addr.port()),
            address: "127.0.0.1".into(),
            port: self.addr.port(),
            deregistered_at_ms: None,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn answer(
    name: String,
    health: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        let status = health.load(Ordering::SeqCst);
        return Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    hits.fetch_add(1, Ordering::SeqCst);
    if req.headers().contains_key(http::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = upgrade.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Ok(Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    if let Some(ms) = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|ms| ms.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut body = format!("{name}\n");
    if path == "/headers" {
        for (k, v) in req.headers() {
            body.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
        }
    }
    Ok(Response::builder()
        .header("x-backend", &name)
        .header("connection", "keep-alive")
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}

/// A port nothing listens on now (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn forward(arn: &str) -> Action {
    Action::Forward {
        target_groups: vec![WeightedTargetGroup {
            arn: arn.into(),
            weight: 1,
        }],
        stickiness_secs: None,
    }
}

pub fn fixed(status: u16, body: &str) -> Action {
    Action::FixedResponse {
        status,
        content_type: Some("text/plain".into()),
        body: body.into(),
    }
}

pub fn rule(priority: u32, conditions: Vec<Condition>, action: Action) -> Rule {
    Rule {
        arn: format!("rule/{priority}"),
        priority: Some(priority),
        conditions,
        action,
    }
}

pub fn default_rule(action: Action) -> Rule {
    Rule {
        arn: "rule/default".into(),
        priority: None,
        conditions: vec![],
        action,
    }
}

/// Health checks every second on `/health`, healthy after 2, unhealthy after 2.
pub fn fast_check() -> HealthCheck {
    HealthCheck {
        path: "/health".into(),
        interval_secs: 1,
        timeout_secs: 1,
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        ..HealthCheck::default()
    }
}

pub fn group(arn: &str, targets: Vec<Target>) -> TargetGroup {
    TargetGroup {
        arn: arn.into(),
        name: arn.into(),
        protocol: Protocol::Http,
        port: 80,
        health_check: fast_check(),
        deregistration_delay_secs: 300,
        stickiness_secs: None,
        targets,
    }
}

/// One load balancer with one listener on `port`.
pub fn config(port: u16, idle_secs: u32, rules: Vec<Rule>, groups: Vec<TargetGroup>) -> LbConfig {
    LbConfig {
        load_balancers: vec![LoadBalancer {
            arn: "lb".into(),
            name: "lb".into(),
            idle_timeout_secs: idle_secs,
            listeners: vec![Listener {
                arn: "listener".into(),
                port,
                protocol: Protocol::Http,
                rules,
            }],
        }],
        target_groups: groups,
    }
}

/// Everything on `port` forwarded to the backends (group `tg`).
pub fn behind(port: u16, backends: &[&Backend]) -> LbConfig {
    let targets = backends.iter().map(|b| b.target()).collect();
    config(
        port,
        60,
        vec![default_rule(forward("tg"))],
        vec![group("tg", targets)],
    )
}

pub fn data_plane() -> berth_lb::DataPlane {
    berth_lb::DataPlane::start("127.0.0.1".parse().unwrap(), 2).unwrap()
}

pub type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn backend(&self) -> &str {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> Reply {
    let res = client
        .request(req)
        .await
        .expect("request through the listener");
    let status = res.status().as_u16();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub fn get_req(port: u16, path: &str) -> http::request::Builder {
    Request::get(format!("http://127.0.0.1:{port}{path}"))
}

pub async fn get(client: &TestClient, port: u16, path: &str) -> Reply {
    send(client, get_req(port, path).body(Full::default()).unwrap()).await
}

/// Polls `check` every 20 ms until it holds; panics with `what` after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
