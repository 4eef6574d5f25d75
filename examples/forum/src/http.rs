//! HTTP/1.1 as the forum needs it: a server (a thread per connection, keep-alive,
//! `Content-Length` bodies) and a client (one connection per request, to each address
//! a name resolves to in turn until one answers). Bodies are JSON.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

/// The largest request or response body accepted.
pub const MAX_BODY: usize = 1 << 20;
/// The longest request line or header line accepted.
const MAX_LINE: usize = 8 << 10;
/// A keep-alive connection idle this long is closed.
const IDLE: Duration = Duration::from_secs(75);
/// How long a client waits to connect, and for an answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

/// One request as a handler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// Query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first query parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as a JSON object, or the 400 to answer.
    pub fn json_object(&self) -> Result<serde_json::Map<String, Value>, Response> {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(Response::error(400, "the body must be a JSON object")),
            Err(e) => Err(Response::error(400, &format!("the body is not JSON: {e}"))),
        }
    }
}

/// A handler's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Response {
    pub fn json(status: u16, body: Value) -> Response {
        Response { status, body }
    }

    /// `{"message": ...}` with `status`.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, json!({ "message": message }))
    }
}

/// Errors of the server's connection loop and of the client.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("bad HTTP message: {0}")]
    Protocol(String),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: crate::dns::ResolveError,
    },
    #[error("no address of {host} answered: {last}")]
    Unreachable { host: String, last: io::Error },
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// `%XX` and `+` decoded (invalid escapes are kept as they are).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a request target into its path and decoded query parameters.
pub fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    (percent_decode(path), params)
}

fn read_line(r: &mut impl BufRead) -> Result<Option<String>, HttpError> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        return Err(HttpError::Protocol("line too long".into()));
    }
    let s = String::from_utf8(line).map_err(|_| HttpError::Protocol("not UTF-8".into()))?;
    Ok(Some(s.trim_end_matches(['\r', '\n']).to_string()))
}

/// The head's fields that matter here.
#[derive(Debug, Default)]
struct Head {
    content_length: usize,
    close: bool,
    keep_alive: bool,
}

fn read_head(r: &mut impl BufRead) -> Result<Head, HttpError> {
    let mut h = Head::default();
    for _ in 0..100 {
        let line = read_line(r)?.ok_or_else(|| HttpError::Protocol("truncated head".into()))?;
        if line.is_empty() {
            return Ok(h);
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| HttpError::Protocol(format!("bad header line {line:?}")))?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                h.content_length = value
                    .parse()
                    .map_err(|_| HttpError::Protocol(format!("content-length {value:?}")))?
            }
            "transfer-encoding" => {
                return Err(HttpError::Protocol(
                    "chunked bodies are not supported".into(),
                ))
            }
            "connection" => {
                let v = value.to_ascii_lowercase();
                h.close |= v.contains("close");
                h.keep_alive |= v.contains("keep-alive");
            }
            _ => {}
        }
    }
    Err(HttpError::Protocol("too many header lines".into()))
}

/// Answers requests on `listener` with `handler` until the process ends.
pub fn serve(listener: TcpListener, handler: Arc<dyn Fn(&Request) -> Response + Send + Sync>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let handler = handler.clone();
        std::thread::spawn(move || {
            let _ = connection(stream, handler.as_ref());
        });
    }
}

fn connection(stream: TcpStream, handler: &dyn Fn(&Request) -> Response) -> Result<(), HttpError> {
    stream.set_read_timeout(Some(IDLE))?;
    let _ = stream.set_nodelay(true);
    let mut out = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    loop {
        let Some(line) = read_line(&mut r)? else {
            return Ok(());
        };
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        let (Some(method), Some(target), Some(version)) =
            (parts.next(), parts.next(), parts.next())
        else {
            write_response(&mut out, &Response::error(400, "bad request line"), true)?;
            return Ok(());
        };
        let head = match read_head(&mut r) {
            Ok(h) => h,
            Err(e) => {
                write_response(&mut out, &Response::error(400, &e.to_string()), true)?;
                return Ok(());
            }
        };
        if head.content_length > MAX_BODY {
            write_response(
                &mut out,
                &Response::error(413, "the body is larger than 1 MiB"),
                true,
            )?;
            return Ok(());
        }
        let mut body = vec![0; head.content_length];
        r.read_exact(&mut body)?;
        let close = head.close || (version == "HTTP/1.0" && !head.keep_alive);
        let (path, query) = split_target(target);
        let req = Request {
            method: method.to_string(),
            path,
            query,
            body,
        };
        let res = handler(&req);
        write_response(&mut out, &res, close)?;
        if close {
            return Ok(());
        }
    }
}

fn write_response(out: &mut impl Write, res: &Response, close: bool) -> Result<(), HttpError> {
    let body = if res.body.is_null() {
        Vec::new()
    } else {
        let mut b = serde_json::to_vec(&res.body).unwrap_or_default();
        b.push(b'\n');
        b
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Forum-Version: {}\r\n{}\r\n",
        res.status,
        reason(res.status),
        body.len(),
        crate::service::version(),
        if close { "Connection: close\r\n" } else { "" }
    );
    let mut msg = head.into_bytes();
    msg.extend_from_slice(&body);
    out.write_all(&msg)?;
    out.flush()?;
    Ok(())
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Sends one request to `authority` (`host:port`; the host is resolved with
/// [`crate::dns::resolve`] and its addresses tried in turn, starting at a different one
/// each call) and returns the status and the JSON body (`Null` when empty or not JSON).
pub fn request(
    authority: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), HttpError> {
    let (host, port) = authority
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .unwrap_or((authority, 80));
    let ips: Vec<IpAddr> = crate::dns::resolve(host).map_err(|source| HttpError::Resolve {
        host: host.to_string(),
        source,
    })?;
    let start = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
    for i in 0..ips.len() {
        let addr = SocketAddr::new(ips[(start + i) % ips.len()], port);
        match TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT) {
            Ok(s) => return exchange(s, authority, method, path, body),
            Err(e) => last = e,
        }
    }
    Err(HttpError::Unreachable {
        host: authority.to_string(),
        last,
    })
}

fn exchange(
    mut s: TcpStream,
    authority: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), HttpError> {
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let payload = body
        .map(|b| serde_json::to_vec(b).unwrap_or_default())
        .unwrap_or_default();
    let mut msg = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    )
    .into_bytes();
    msg.extend_from_slice(&payload);
    s.write_all(&msg)?;
    let mut r = BufReader::new(s);
    let status_line =
        read_line(&mut r)?.ok_or_else(|| HttpError::Protocol("no response".into()))?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| HttpError::Protocol(format!("status line {status_line:?}")))?;
    let head = read_head(&mut r)?;
    if head.content_length > MAX_BODY {
        return Err(HttpError::Protocol("response body too large".into()));
    }
    let mut buf = vec![0; head.content_length];
    r.read_exact(&mut buf)?;
    Ok((status, serde_json::from_slice(&buf).unwrap_or(Value::Null)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_decoding() {
        let (p, q) = split_target("/messages?topic_id=3&x=a%20b+c&flag");
        assert_eq!(p, "/messages");
        assert_eq!(
            q,
            vec![
                ("topic_id".into(), "3".into()),
                ("x".into(), "a b c".into()),
                ("flag".into(), "".into())
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    /// A server and the client over loopback: JSON both ways, keep-alive, errors.
    #[test]
    fn server_and_client() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            serve(
                l,
                Arc::new(|r: &Request| match r.json_object() {
                    Ok(m) => {
                        Response::json(201, json!({"got": m, "path": r.path, "q": r.param("q")}))
                    }
                    Err(e) => e,
                }),
            )
        });
        let (status, body) =
            request(&addr.to_string(), "POST", "/x?q=1", Some(&json!({"a": 1}))).unwrap();
        assert_eq!(status, 201);
        assert_eq!(body, json!({"got": {"a": 1}, "path": "/x", "q": "1"}));
        let (status, body) = request(&addr.to_string(), "GET", "/x", None).unwrap();
        assert_eq!(status, 400);
        assert!(body["message"].as_str().unwrap().contains("not JSON"));

        // Two requests on one keep-alive connection.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        let mut r = BufReader::new(s);
        for path in ["/a", "/b"] {
            assert!(read_line(&mut r)
                .unwrap()
                .unwrap()
                .starts_with("HTTP/1.1 201"));
            let h = read_head(&mut r).unwrap();
            let mut b = vec![0; h.content_length];
            r.read_exact(&mut b).unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["path"], path);
        }
    }
}
