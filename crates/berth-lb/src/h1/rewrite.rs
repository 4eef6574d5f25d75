//! The heads the proxy writes, pure, into a reused buffer: the request as the
//! target gets it, the response as the client gets it, and responses made by the
//! load balancer itself (fixed responses, redirects, error pages).
//!
//! Both directions drop the hop-by-hop fields and those `Connection` names (RFC 9110
//! §7.6.1) and frame the body themselves. The request keeps the client's `Host`
//! (the target's address if it had none, as hyper's client does), appends the
//! client to `X-Forwarded-For` and sets `X-Forwarded-Proto` and `-Port`, as ALB does.

use std::fmt::Write as _;

use httparse::Header;

use super::parse::{hop_by_hop, named_by_connection, RequestHead, ResponseHead, Summary};

/// What the load balancer adds to a forwarded request.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    /// The client's address as text (IPv4-mapped IPv6 as IPv4).
    pub client: &'a str,
    /// `http` or `https`.
    pub proto: &'a str,
    /// The listener's port.
    pub port: u16,
    /// `Host` for a request that has none: the target's `address:port`.
    pub default_host: &'a str,
}

/// Appends `n` in decimal.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn is(name: &str, lower: &str) -> bool {
    name.len() == lower.len() && name.eq_ignore_ascii_case(lower)
}

/// Whether a field is dropped when the message is forwarded.
fn hop(f: &Header<'_>, s: &Summary<'_>, fields: &[Header<'_>]) -> bool {
    hop_by_hop(f.name) || (s.connection && named_by_connection(f.name, fields))
}

/// The request head the target gets: HTTP/1.1, the client's fields but the
/// hop-by-hop ones, the `X-Forwarded-*` fields, and `Transfer-Encoding: chunked`
/// when the body is relayed chunked.
pub fn request_head(
    out: &mut Vec<u8>,
    head: &RequestHead<'_, '_>,
    s: &Summary<'_>,
    chunked: bool,
    fwd: &Forwarded<'_>,
) {
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut xff = false;
    for f in head.fields {
        if f.name.len() >= 15 && f.name.as_bytes()[..12].eq_ignore_ascii_case(b"x-forwarded-") {
            match f.name.len() {
                15 if is(f.name, "x-forwarded-for") => {
                    xff = true;
                    continue;
                }
                17 if is(f.name, "x-forwarded-proto") => continue,
                16 if is(f.name, "x-forwarded-port") => continue,
                _ => {}
            }
        }
        if hop(f, s, head.fields) {
            continue;
        }
        push_field(out, f.name.as_bytes(), f.value);
    }
    if s.host.is_none() {
        push_field(out, b"Host", fwd.default_host.as_bytes());
    }
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if xff {
        for f in head.fields.iter().filter(|f| is(f.name, "x-forwarded-for")) {
            out.extend_from_slice(f.value);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(fwd.client.as_bytes());
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: ");
    out.extend_from_slice(fwd.proto.as_bytes());
    out.extend_from_slice(b"\r\nX-Forwarded-Port: ");
    push_u64(out, u64::from(fwd.port));
    out.extend_from_slice(b"\r\n\r\n");
}

/// How the client's response is delimited and whether its connection stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFraming {
    /// The body is relayed with its chunk framing (`Transfer-Encoding: chunked`).
    pub chunked: bool,
    /// The target's `Content-Length` is kept (there is no transfer coding).
    pub keep_length: bool,
    /// `Connection: close` (`Some(true)`), `Connection: keep-alive` (`Some(false)`,
    /// for HTTP/1.0 clients), or no field.
    pub connection: Option<bool>,
}

/// `Date: ` and the current time as an HTTP-date, formatted at most once a second
/// per thread.
fn date_field(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        push_field(out, b"Date", c.1.as_bytes());
    });
}

fn connection_field(out: &mut Vec<u8>, connection: Option<bool>) {
    match connection {
        Some(true) => out.extend_from_slice(b"Connection: close\r\n"),
        Some(false) => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        None => {}
    }
}

/// The response head the client gets: HTTP/1.1 with the target's status and
/// reason, its fields but the hop-by-hop ones, the framing of [`ClientFraming`]
/// and the stickiness cookies.
pub fn response_head<C: std::fmt::Display>(
    out: &mut Vec<u8>,
    head: &ResponseHead<'_, '_>,
    s: &Summary<'_>,
    framing: ClientFraming,
    cookies: impl Iterator<Item = C>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(head.status));
    out.push(b' ');
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for f in head.fields {
        if hop(f, s, head.fields) || (!framing.keep_length && is(f.name, "content-length")) {
            continue;
        }
        push_field(out, f.name.as_bytes(), f.value);
    }
    if framing.chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    set_cookies(out, cookies);
    connection_field(out, framing.connection);
    out.extend_from_slice(b"\r\n");
}

fn set_cookies<C: std::fmt::Display>(out: &mut Vec<u8>, cookies: impl Iterator<Item = C>) {
    let mut text = String::new();
    for c in cookies {
        text.clear();
        let _ = write!(text, "{c}");
        push_field(out, b"Set-Cookie", text.as_bytes());
    }
}

/// A response of the load balancer's own: status, fields, a body (left out for
/// HEAD but counted in `Content-Length`), and the connection's fate.
pub fn local_response(
    out: &mut Vec<u8>,
    status: http::StatusCode,
    fields: &[(&str, &[u8])],
    body: &[u8],
    head_request: bool,
    close: Option<bool>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in fields {
        push_field(out, name.as_bytes(), value);
    }
    date_field(out);
    out.extend_from_slice(b"Content-Length: ");
    push_u64(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    connection_field(out, close);
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests;
