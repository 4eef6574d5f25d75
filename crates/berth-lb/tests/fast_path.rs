//! The HTTP/1.1 fast path end to end: a data plane on 127.0.0.1 in front of a raw
//! tokio backend that counts its connections and can misbehave on purpose, and
//! raw TCP clients that see exactly what goes over the wire.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use berth_lb::h1::parse::{self, Framing};
use berth_lb::h1::relay::{Body, Chunked};
use bytes::{Buf, BytesMut};
use common::*;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

/// A backend speaking HTTP/1.1 by hand. Paths:
/// - `/chunked`: a chunked response; `/until-close`: no length, then close;
/// - `/echo`: the request body back (length or chunked request);
/// - `/half`: half a response head, then close; `/bye`: answers, then closes;
/// - `/close`: answers with `Connection: close`; `/wait`: reports the request
///   on `waiting` and answers when `release` is notified;
/// - an `Upgrade` request: 101, then echoes bytes;
/// - anything else: `<connection number> <method> <path>` (HEAD: the length only).
struct RawBackend {
    addr: std::net::SocketAddr,
    conns: Arc<AtomicUsize>,
    waiting: mpsc::UnboundedReceiver<()>,
    release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawBackend {
    async fn start() -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let (tx, waiting) = mpsc::unbounded_channel();
        let (c, r) = (conns.clone(), release.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let id = c.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(backend_conn(stream, id, tx.clone(), r.clone()));
            }
        });
        RawBackend {
            addr,
            conns,
            waiting,
            release,
            task,
        }
    }

    fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// Everything on `port` forwarded here, health checks off, idle timeout 60 s.
    fn config(&self, port: u16) -> berth_lb::config::LbConfig {
        let mut tg = group(
            "tg",
            vec![berth_lb::config::Target {
                id: "raw".into(),
                address: "127.0.0.1".into(),
                port: self.addr.port(),
                deregistered_at_ms: None,
            }],
        );
        tg.health_check.enabled = false;
        config(port, 60, vec![default_rule(forward("tg"))], vec![tg])
    }
}

/// Reads until `buf` holds a complete head; `None` at EOF.
async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<()> {
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(());
        }
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

/// Reads the rest of a body of `framing` from `buf` and `stream`: the bytes as
/// they came (chunk framing included).
async fn read_body(stream: &mut TcpStream, buf: &mut BytesMut, framing: Framing) -> Vec<u8> {
    let mut body = Body::new(framing);
    let mut wire = Vec::new();
    loop {
        let used = body.advance(buf, |_| {}).unwrap();
        wire.extend_from_slice(&buf[..used]);
        buf.advance(used);
        if body.is_done() {
            return wire;
        }
        if stream.read_buf(buf).await.unwrap() == 0 {
            body.at_eof().unwrap();
            return wire;
        }
    }
}

fn dechunk(wire: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    Chunked::default()
        .feed(wire, |r| payload.extend_from_slice(&wire[r]))
        .unwrap();
    payload
}

async fn backend_conn(
    mut stream: TcpStream,
    id: usize,
    waiting: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
) {
    let mut buf = BytesMut::new();
    while read_head(&mut stream, &mut buf).await.is_some() {
        let (method, path, len, framing, upgrade) = {
            let mut f = parse::fields();
            let head = parse::request(&buf, &mut f).unwrap().unwrap();
            let s = parse::summarize(head.fields).unwrap();
            (
                head.method.to_string(),
                head.target.to_string(),
                head.len,
                parse::request_framing(&s).unwrap(),
                s.upgrade,
            )
        };
        buf.advance(len);
        let body = read_body(&mut stream, &mut buf, framing).await;
        let body = if framing == Framing::Chunked {
            dechunk(&body)
        } else {
            body
        };
        let reply = |extra: &str, body: &[u8]| {
            let mut r = format!(
                "HTTP/1.1 200 OK\r\n{extra}Content-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(body);
            r
        };
        let out = match path.as_str() {
            _ if upgrade => {
                let _ = stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
                    .await;
                let mut b = [0u8; 1024];
                while let Ok(n) = stream.read(&mut b).await {
                    if n == 0 || stream.write_all(&b[..n]).await.is_err() {
                        break;
                    }
                }
                return;
            }
            "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
            "/until-close" => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil close").await;
                return;
            }
            "/echo" => reply("", &body),
            "/half" => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
                return;
            }
            "/bye" => {
                let _ = stream.write_all(&reply("", b"bye")).await;
                return;
            }
            "/close" => {
                let _ = stream.write_all(&reply("Connection: close\r\n", b"closing")).await;
                return;
            }
            "/wait" => {
                let _ = waiting.send(());
                release.notified().await;
                reply("", b"waited")
            }
            _ => {
                let text = format!("{id} {method} {path}");
                let mut r = reply("", text.as_bytes());
                if method == "HEAD" {
                    r.truncate(r.len() - text.len());
                }
                r
            }
        };
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// A response as a client reads it: status, head text (fields lowercased), body as on the wire.
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response (to a HEAD request if `head`) from the client connection.
async fn response(stream: &mut TcpStream, buf: &mut BytesMut, head: bool) -> Resp {
    read_head(stream, buf).await.expect("a response head");
    let (status, text, len, framing) = {
        let mut f = parse::fields();
        let h = parse::response(buf, &mut f).unwrap().unwrap();
        let s = parse::summarize(h.fields).unwrap();
        (
            h.status,
            String::from_utf8_lossy(&buf[..h.len]).to_lowercase(),
            h.len,
            parse::response_framing(&s, h.status, head),
        )
    };
    buf.advance(len);
    let body = read_body(stream, buf, framing).await;
    Resp {
        status,
        head: text,
        body,
    }
}

/// Whether the proxy closed the client connection (EOF with nothing more sent).
async fn closed(stream: &mut TcpStream, buf: &mut BytesMut) -> bool {
    buf.is_empty() && matches!(stream.read_buf(buf).await, Ok(0) | Err(_))
}

async fn connect(port: u16) -> (TcpStream, BytesMut) {
    (
        TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
        BytesMut::new(),
    )
}

/// A raw backend and a data plane (two threads) forwarding a free port to it.
async fn behind_raw() -> (RawBackend, berth_lb::DataPlane, u16) {
    let b = RawBackend::start().await;
    let port = free_port();
    let dp = data_plane();
    dp.apply(b.config(port)).unwrap();
    (b, dp, port)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: app\r\n\r\n")
}

/// Many requests on one client connection reach the target over one pooled
/// connection; pipelined requests are answered in order.
#[tokio::test]
async fn keep_alive_reuse_and_pipelining() {
    let (b, dp, port) = behind_raw().await;
    let (mut s, mut buf) = connect(port).await;
    for i in 0..10 {
        s.write_all(get(&format!("/seq/{i}")).as_bytes())
            .await
            .unwrap();
        let r = response(&mut s, &mut buf, false).await;
        assert_eq!((r.status, r.text()), (200, format!("1 GET /seq/{i}")));
    }
    let pipelined = format!("{}{}{}", get("/p/1"), get("/p/2"), get("/p/3"));
    s.write_all(pipelined.as_bytes()).await.unwrap();
    for i in 1..=3 {
        let r = response(&mut s, &mut buf, false).await;
        assert_eq!(r.text(), format!("1 GET /p/{i}"));
    }
    assert_eq!(b.conns(), 1, "one connection to the target for all");
    dp.shutdown();
}

/// A chunked response reaches an HTTP/1.1 client with its framing; an HTTP/1.0
/// client gets the payload, delimited by the close. A response without length
/// is delimited by the close too.
#[tokio::test]
async fn chunked_and_close_delimited_responses() {
    let (_backend, dp, port) = behind_raw().await;
    let (mut s, mut buf) = connect(port).await;
    s.write_all(get("/chunked").as_bytes()).await.unwrap();
    let r = response(&mut s, &mut buf, false).await;
    assert!(
        r.head.contains("transfer-encoding: chunked\r\n"),
        "{}",
        r.head
    );
    assert_eq!(r.body, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    s.write_all(b"GET /chunked HTTP/1.0\r\n\r\n").await.unwrap();
    let r = response(&mut s, &mut buf, false).await;
    assert!(!r.head.contains("transfer-encoding"), "{}", r.head);
    assert_eq!(r.text(), "hello world");
    assert!(closed(&mut s, &mut buf).await);

    let (mut s, mut buf) = connect(port).await;
    s.write_all(get("/until-close").as_bytes()).await.unwrap();
    let r = response(&mut s, &mut buf, false).await;
    assert!(r.head.contains("connection: close\r\n"), "{}", r.head);
    assert_eq!(r.text(), "until close");
    assert!(closed(&mut s, &mut buf).await);
    dp.shutdown();
}

/// Request bodies reach the target: with a length (sent in pieces) and chunked.
#[tokio::test]
async fn request_bodies() {
    let (_backend, dp, port) = behind_raw().await;
    let (mut s, mut buf) = connect(port).await;
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello")
        .await
        .unwrap();
    s.write_all(b" world").await.unwrap();
    assert_eq!(
        response(&mut s, &mut buf, false).await.text(),
        "hello world"
    );
    s.write_all(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        .await
        .unwrap();
    s.write_all(b"2\r\nde\r\n0\r\n\r\n").await.unwrap();
    assert_eq!(response(&mut s, &mut buf, false).await.text(), "abcde");
    dp.shutdown();
}

/// A HEAD response carries the length but no body: the next request on the
/// connection is read right after it.
#[tokio::test]
async fn head_has_no_body() {
    let (_backend, dp, port) = behind_raw().await;
    let (mut s, mut buf) = connect(port).await;
    s.write_all(b"HEAD /h HTTP/1.1\r\n\r\n").await.unwrap();
    let r = response(&mut s, &mut buf, true).await;
    assert_eq!(r.status, 200);
    assert!(r.head.contains("content-length: 9\r\n"), "{}", r.head);
    assert!(r.body.is_empty());
    s.write_all(get("/after").as_bytes()).await.unwrap();
    assert_eq!(
        response(&mut s, &mut buf, false).await.text(),
        "1 GET /after"
    );
    dp.shutdown();
}

/// `Connection: close` from the client closes after the response; from the
/// target it costs only the target's connection.
#[tokio::test]
async fn connection_close_either_side() {
    let (_backend, dp, port) = behind_raw().await;
    let (mut s, mut buf) = connect(port).await;
    s.write_all(b"GET /close HTTP/1.1\r\n\r\n").await.unwrap();
    let r = response(&mut s, &mut buf, false).await;
    assert_eq!(r.text(), "closing");
    assert!(!r.head.contains("connection: close"), "{}", r.head);
    s.write_all(b"GET /last HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let r = response(&mut s, &mut buf, false).await;
    assert_eq!(r.text(), "2 GET /last");
    assert!(r.head.contains("connection: close\r\n"), "{}", r.head);
    assert!(closed(&mut s, &mut buf).await);
    dp.shutdown();
}

/// A target that closes in the middle of a response head: ELB's 502 page. A
/// target that closed a pooled connection: the request is sent again on a new one.
#[tokio::test]
async fn bad_gateway_and_retry() {
    let (_backend, dp, port) = behind_raw().await;
    let (mut s, mut buf) = connect(port).await;
    s.write_all(get("/half").as_bytes()).await.unwrap();
    let r = response(&mut s, &mut buf, false).await;
    assert_eq!(r.status, 502);
    assert!(r.head.contains("server: awselb/2.0\r\n"), "{}", r.head);
    assert!(r.text().contains("502 Bad Gateway"));
    s.write_all(get("/bye").as_bytes()).await.unwrap();
    assert_eq!(response(&mut s, &mut buf, false).await.text(), "bye");
    // The connection /bye used is pooled, and closed by the target.
    s.write_all(get("/again").as_bytes()).await.unwrap();
    let r = response(&mut s, &mut buf, false).await;
    assert_eq!((r.status, r.text()), (200, "3 GET /again".to_string()));
    dp.shutdown();
}

/// Malformed and oversized heads: 400 and the connection closed.
#[tokio::test]
async fn bad_requests() {
    let (b, dp, port) = behind_raw().await;
    let (mut s, mut buf) = connect(port).await;
    s.write_all(b"GET / HTTP/1.1\r\nBad Field\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(response(&mut s, &mut buf, false).await.status, 400);
    assert!(closed(&mut s, &mut buf).await);
    let (mut s, mut buf) = connect(port).await;
    let big = format!(
        "GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(parse::MAX_HEAD)
    );
    // The proxy may answer (and close) before it has read everything.
    let _ = s.write_all(big.as_bytes()).await;
    assert_eq!(response(&mut s, &mut buf, false).await.status, 400);
    assert_eq!(b.conns(), 0);
    dp.shutdown();
}

/// After a fast-path request, an Upgrade on the same connection is handed to
/// hyper with the bytes already read, and then bytes flow both ways; HTTP/2 with
/// prior knowledge is served by hyper from the first byte.
#[tokio::test]
async fn upgrade_and_http2_go_to_hyper() {
    let (_backend, dp, port) = behind_raw().await;
    let (mut s, mut buf) = connect(port).await;
    let both = format!(
        "{}GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        get("/first")
    );
    s.write_all(both.as_bytes()).await.unwrap();
    assert_eq!(
        response(&mut s, &mut buf, false).await.text(),
        "1 GET /first"
    );
    read_head(&mut s, &mut buf).await.unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 101 "), "{buf:?}");
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    buf.advance(end);
    s.write_all(b"ping").await.unwrap();
    while buf.len() < 4 {
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
    }
    assert_eq!(&buf[..], b"ping");

    let h2: TestClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let r = send(
        &h2,
        get_req(port, "/over-h2").body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.ends_with(" GET /over-h2"), "{}", r.body);
    dp.shutdown();
}

/// A listener removed while a request waits on its target: that request is
/// answered (and its connection closed), an idle keep-alive connection is
/// closed at once. One data-plane thread (the current-thread runtime).
#[tokio::test]
async fn listener_removed_gracefully() {
    let mut b = RawBackend::start().await;
    let port = free_port();
    let dp = berth_lb::DataPlane::start("127.0.0.1".parse().unwrap(), 1).unwrap();
    dp.apply(b.config(port)).unwrap();
    let (mut idle, mut idle_buf) = connect(port).await;
    idle.write_all(get("/warm").as_bytes()).await.unwrap();
    assert_eq!(response(&mut idle, &mut idle_buf, false).await.status, 200);
    let (mut s, mut buf) = connect(port).await;
    s.write_all(get("/wait").as_bytes()).await.unwrap();
    b.waiting.recv().await.unwrap();
    dp.apply(berth_lb::config::LbConfig::default()).unwrap();
    assert!(
        closed(&mut idle, &mut idle_buf).await,
        "idle connection closed"
    );
    b.release.notify_one();
    let r = response(&mut s, &mut buf, false).await;
    assert_eq!((r.status, r.text()), (200, "waited".to_string()));
    assert!(r.head.contains("connection: close\r\n"), "{}", r.head);
    assert!(closed(&mut s, &mut buf).await);
    dp.shutdown();
}

/// The idle timeout closes a keep-alive connection that has sent nothing for
/// that long (1 s here), not sooner.
#[tokio::test]
async fn idle_connection_closed() {
    let b = RawBackend::start().await;
    let port = free_port();
    let dp = data_plane();
    let mut cfg = b.config(port);
    cfg.load_balancers[0].idle_timeout_secs = 1;
    dp.apply(cfg).unwrap();
    let (mut s, mut buf) = connect(port).await;
    s.write_all(get("/").as_bytes()).await.unwrap();
    assert_eq!(response(&mut s, &mut buf, false).await.status, 200);
    let start = std::time::Instant::now();
    assert!(closed(&mut s, &mut buf).await);
    let waited = start.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(900)
            && waited < std::time::Duration::from_secs(5),
        "closed after {waited:?}"
    );
    dp.shutdown();
}
