//! The decision every request gets, and hyper's path for the requests the HTTP/1.1
//! fast path ([`crate::h1`]) leaves to it. [`decide`] is the one place a request
//! meets the configuration: the snapshot of the moment, the first matching rule,
//! and for a forward the group and target (stickiness cookies included); both
//! paths call it. Hyper's path then goes through its stages: `route` (decide),
//! `act` (fixed-response, redirect or forward), `forward` (headers rewritten,
//! hyper's pooled client, the target timeout) or `upgrade` (a connection of its
//! own, bytes copied both ways). Every stage returns a [`ProxyError`] that names
//! its side; the status is made once, in [`handle`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;

use crate::balance::{self, GroupRt, TargetRt};
use crate::config::{Action, Protocol, Rule};
use crate::error::{log_error, respond, ProxyError, RateLimited};
use crate::h1::parse::hop_by_hop;
use crate::h1::pool::Pool;
use crate::io::Busy;
use crate::rules::{self, RedirectInput, RequestView};

/// The body of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A body made of one buffer.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// ELB's connect timeout to targets.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener as requests see it.
#[derive(Debug)]
pub struct ListenerRt {
    pub protocol: Protocol,
    /// The load balancer's idle timeout: also how long a target may take to answer.
    pub idle_timeout: Duration,
    pub rules: Vec<Rule>,
}

/// The whole configuration at one moment; requests read the current one once and
/// keep it, so a swap never changes a request half-way.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub listeners: HashMap<u16, ListenerRt>,
    pub groups: HashMap<String, Arc<GroupRt>>,
}

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub snapshot: RwLock<Arc<Snapshot>>,
    /// hyper's pooled client, for requests on hyper's path (HTTP/2, handed over).
    pub client: Client<HttpConnector, Incoming>,
    /// Keep-alive connections to targets for the HTTP/1 fast path.
    pub pool: Pool,
    pub log_gate: RateLimited,
}

impl Shared {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One client connection.
#[derive(Debug)]
pub struct ConnCtx {
    pub shared: Arc<Shared>,
    /// The listener's port.
    pub port: u16,
    pub peer: SocketAddr,
    /// Requests in flight on the connection (the idle timeout waits for them).
    pub busy: Arc<AtomicUsize>,
}

/// The service of every listener connection: never fails, errors become ELB's pages.
pub async fn handle(
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let _busy = Busy::new(&ctx.busy);
    Ok(match route(&ctx, req).await {
        Ok(res) => res,
        Err(err) => {
            log_error(&ctx.shared.log_gate, ctx.port, &err);
            respond(&err)
        }
    })
}

/// The Host a request is for: the Host header, else the HTTP/2 `:authority`.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

impl Snapshot {
    /// The listener on `port` (none: no rule can match).
    pub fn listener(&self, port: u16) -> Result<&ListenerRt, ProxyError> {
        self.listeners.get(&port).ok_or(ProxyError::NoRule { port })
    }
}

/// A stickiness cookie for the response (`Set-Cookie` value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyCookie<'s> {
    pub name: &'static str,
    pub value: Cow<'s, str>,
    pub secs: u32,
}

impl std::fmt::Display for StickyCookie<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={}; Max-Age={}; Path=/",
            self.name, self.value, self.secs
        )
    }
}

/// What a listener does with a request: its first matching rule's action, with
/// the target chosen for a forward.
#[derive(Debug)]
pub enum Decision<'s> {
    Fixed {
        status: StatusCode,
        /// `None` if the configured type cannot be a field value.
        content_type: Option<&'s str>,
        body: &'s str,
    },
    Redirect {
        status: StatusCode,
        location: HeaderValue,
    },
    Forward {
        target: &'s TargetRt,
        /// The group's and the target's stickiness cookies, where on.
        cookies: [Option<StickyCookie<'s>>; 2],
    },
}

/// Whether `value` can be sent as a field value (visible characters, spaces, tabs).
fn field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// The request's cookies as one `Cookie` value: the field itself if there is one,
/// joined with `; ` if several (HTTP/2 clients send one field per cookie).
pub fn join_cookies<'a>(mut values: impl Iterator<Item = &'a str>) -> Option<Cow<'a, str>> {
    let first = values.next()?;
    match values.next() {
        None => Some(Cow::Borrowed(first)),
        Some(second) => {
            let mut all = format!("{first}; {second}");
            for v in values {
                all.push_str("; ");
                all.push_str(v);
            }
            Some(Cow::Owned(all))
        }
    }
}

/// The decision for one request, made the same way on both paths (the HTTP/1 fast
/// path and hyper's): the first rule of `listener` that matches `view`, and for a
/// forward the group (sticky cookie, else weight) and the target (sticky cookie,
/// else round-robin). `cookies` is the request's `Cookie` value.
pub fn decide<'s>(
    snap: &'s Snapshot,
    listener: &'s ListenerRt,
    port: u16,
    view: &RequestView<'_>,
    cookies: Option<&str>,
) -> Result<Decision<'s>, ProxyError> {
    let action = &rules::match_rule(&listener.rules, view)
        .ok_or(ProxyError::NoRule { port })?
        .action;
    match action {
        Action::FixedResponse {
            status,
            content_type,
            body,
        } => Ok(Decision::Fixed {
            status: StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
            content_type: Some(
                content_type
                    .as_deref()
                    .unwrap_or("text/plain; charset=utf-8"),
            )
            .filter(|ct| field_value(ct)),
            body,
        }),
        Action::Redirect { status, .. } => {
            let input = RedirectInput {
                protocol: protocol_name(listener.protocol),
                host: rules::host_without_port(view.host),
                port,
                path: view.path,
                query: view.query,
            };
            let location = rules::redirect_location(action, &input).unwrap_or_default();
            let location = HeaderValue::from_str(&location)
                .map_err(|_| ProxyError::BadRequest(format!("redirect to {location:?}")))?;
            Ok(Decision::Redirect {
                status: StatusCode::from_u16(*status).unwrap_or(StatusCode::FOUND),
                location,
            })
        }
        Action::Forward {
            target_groups,
            stickiness_secs,
        } => {
            let group_cookie = stickiness_secs
                .and(cookies)
                .and_then(|c| balance::find_cookie(c, balance::GROUP_COOKIE));
            let arn = balance::pick_group(target_groups, group_cookie, balance::random())
                .ok_or(ProxyError::NoGroup)?;
            let group = snap
                .groups
                .get(arn)
                .ok_or_else(|| ProxyError::NoTargets(arn.to_string()))?;
            let target_cookie = group
                .config
                .stickiness_secs
                .and(cookies)
                .and_then(|c| balance::find_cookie(c, balance::TARGET_COOKIE));
            let target = group
                .pick(target_cookie)
                .ok_or_else(|| ProxyError::NoTargets(arn.to_string()))?;
            let cookies = [
                stickiness_secs.map(|secs| StickyCookie {
                    name: balance::GROUP_COOKIE,
                    value: Cow::Owned(balance::cookie_value(arn)),
                    secs,
                }),
                group.config.stickiness_secs.map(|secs| StickyCookie {
                    name: balance::TARGET_COOKIE,
                    value: Cow::Borrowed(target.cookie.as_str()),
                    secs,
                }),
            ];
            Ok(Decision::Forward { target, cookies })
        }
    }
}

/// Splits a request target in origin form into path and query (without `?`).
pub fn path_and_query(target: &str) -> (&str, &str) {
    target.split_once('?').unwrap_or((target, ""))
}

async fn route(ctx: &ConnCtx, req: Request<Incoming>) -> Result<Response<ProxyBody>, ProxyError> {
    let snap = ctx.shared.snapshot();
    let listener = snap.listener(ctx.port)?;
    let host = request_host(&req).unwrap_or_default();
    let decision = {
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v)))
            .collect();
        let cookies = join_cookies(
            req.headers()
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let view = RequestView {
            method: req.method().as_str(),
            path: req.uri().path(),
            query: req.uri().query().unwrap_or(""),
            host: &host,
            headers: &headers,
            client_ip: ctx.peer.ip(),
        };
        decide(&snap, listener, ctx.port, &view, cookies.as_deref())?
    };
    match decision {
        Decision::Fixed {
            status,
            content_type,
            body,
        } => {
            let mut res = Response::new(full(body.to_string()));
            *res.status_mut() = status;
            if let Some(v) = content_type.and_then(|ct| HeaderValue::from_str(ct).ok()) {
                res.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            Ok(res)
        }
        Decision::Redirect { status, location } => {
            let mut res = Response::new(full(Bytes::new()));
            *res.status_mut() = status;
            res.headers_mut().insert(header::LOCATION, location);
            Ok(res)
        }
        Decision::Forward { target, cookies } => {
            let mut res = if is_upgrade(&req) {
                upgrade(ctx, listener, host, target, req).await?
            } else {
                forward(ctx, listener, host, target, req).await?
            };
            for c in cookies.iter().flatten() {
                if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
                    res.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            Ok(res)
        }
    }
}

/// `http` or `https`, as `X-Forwarded-Proto` and redirects name a listener's protocol.
pub fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Http => "http",
        Protocol::Https => "https",
    }
}

/// An HTTP/1.1 protocol upgrade (WebSocket): `Connection: upgrade` and `Upgrade`.
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_has(req.headers(), "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// RFC 9110 §7.6.1: the hop-by-hop fields, and every field `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .chain(headers.keys().filter(|n| hop_by_hop(n.as_str())).cloned())
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// The request as the target gets it: origin host kept, hop-by-hop fields removed
/// (unless `upgrade`), `X-Forwarded-For` appended, `-Proto` and `-Port` set, an
/// absolute URI for the pooled client, HTTP/1.1.
fn upstream_request(
    ctx: &ConnCtx,
    listener: &ListenerRt,
    host: &str,
    target: &TargetRt,
    req: Request<Incoming>,
    upgrade: bool,
) -> Result<Request<Incoming>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    if !upgrade {
        strip_hop_by_hop(&mut parts.headers);
    }
    if !host.is_empty() && !parts.headers.contains_key(header::HOST) {
        let h = HeaderValue::from_str(host)
            .map_err(|_| ProxyError::BadRequest(format!("host {host:?}")))?;
        parts.headers.insert(header::HOST, h);
    }
    let mut xff = String::new();
    for prev in parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        xff.push_str(prev);
        xff.push_str(", ");
    }
    xff.push_str(&ctx.peer.ip().to_canonical().to_string());
    let xff = HeaderValue::from_str(&xff)
        .map_err(|_| ProxyError::BadRequest("x-forwarded-for".into()))?;
    parts.headers.insert("x-forwarded-for", xff);
    parts.headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(protocol_name(listener.protocol)),
    );
    parts
        .headers
        .insert("x-forwarded-port", HeaderValue::from(ctx.port));
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = if upgrade {
        pq.parse::<Uri>()
    } else {
        format!("http://{}{pq}", target.authority).parse::<Uri>()
    }
    .map_err(|e| ProxyError::BadRequest(format!("uri: {e}")))?;
    parts.version = Version::HTTP_11;
    Ok(Request::from_parts(parts, body))
}

async fn forward(
    ctx: &ConnCtx,
    listener: &ListenerRt,
    host: String,
    target: &TargetRt,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let up = upstream_request(ctx, listener, &host, target, req, false)?;
    let sent = tokio::time::timeout(listener.idle_timeout, ctx.shared.client.request(up)).await;
    let res = match sent {
        Err(_) => {
            return Err(ProxyError::Timeout {
                target: target.authority.clone(),
                secs: listener.idle_timeout.as_secs(),
            })
        }
        Ok(Err(e)) if e.is_connect() => {
            return Err(ProxyError::Connect {
                target: target.authority.clone(),
                source: Box::new(e),
            })
        }
        Ok(Err(e)) => {
            return Err(ProxyError::Upstream {
                target: target.authority.clone(),
                source: Box::new(e),
            })
        }
        Ok(Ok(res)) => res,
    };
    let (mut parts, body) = res.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body.boxed()))
}

/// A protocol upgrade: its own connection to the target (never pooled), the
/// request with its `Upgrade` fields, and on `101` the two upgraded connections
/// joined until either side closes.
async fn upgrade(
    ctx: &ConnCtx,
    listener: &ListenerRt,
    host: String,
    target: &TargetRt,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let up = upstream_request(ctx, listener, &host, target, req, true)?;
    let connect_err = |source: Box<dyn std::error::Error + Send + Sync>| ProxyError::Connect {
        target: target.authority.clone(),
        source,
    };
    let stream = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(&target.authority),
    )
    .await
    {
        Err(e) => return Err(connect_err(Box::new(e))),
        Ok(Err(e)) => return Err(connect_err(Box::new(e))),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let upstream_err = |source: hyper::Error| ProxyError::Upstream {
        target: target.authority.clone(),
        source: Box::new(source),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(upstream_err)?;
    tokio::spawn(conn.with_upgrades());
    let mut res = match tokio::time::timeout(listener.idle_timeout, sender.send_request(up)).await {
        Err(_) => {
            return Err(ProxyError::Timeout {
                target: target.authority.clone(),
                secs: listener.idle_timeout.as_secs(),
            })
        }
        Ok(r) => r.map_err(upstream_err)?,
    };
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut res);
        tokio::spawn(async move {
            if let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade) {
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
    }
    Ok(res.map(|b| b.boxed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hop-by-hop fields and the fields `Connection` names are removed; others stay.
    #[test]
    fn hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-keep"]);
    }

    /// An upgrade needs HTTP/1.1, an Upgrade field and `upgrade` in Connection.
    #[test]
    fn upgrade_detection() {
        let req = |conn: &str, version| {
            Request::builder()
                .version(version)
                .header(header::CONNECTION, conn)
                .header(header::UPGRADE, "websocket")
                .body(())
                .unwrap()
        };
        assert!(is_upgrade(&req("keep-alive, Upgrade", Version::HTTP_11)));
        assert!(!is_upgrade(&req("keep-alive", Version::HTTP_11)));
        assert!(!is_upgrade(&req("upgrade", Version::HTTP_10)));
    }
}
