//! HTTP/1.x message heads (RFC 9112 §2–§6), pure: httparse fills a fixed array of
//! borrowed fields (no allocation), and one pass over the fields says what the
//! proxy needs — framing (§6.3), persistence (§9.3), and whether the request is one
//! the fast path leaves to hyper.

use std::mem::MaybeUninit;

use httparse::{Header, Status};

/// The largest head accepted, request or response (ALB's limit for a request head).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a head (hyper's default limit).
pub const MAX_HEADERS: usize = 100;
/// What an HTTP/2 connection with prior knowledge starts with (RFC 9113 §3.4), as
/// far as HTTP/1 parsing can tell it apart.
pub const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

/// Room for the fields of one head (left uninitialized: httparse writes the ones
/// it finds, so a parse costs nothing for the room it does not use).
pub type Fields<'b> = [MaybeUninit<Header<'b>>; MAX_HEADERS];

/// An empty field array for [`request`] and [`response`].
pub fn fields<'b>() -> Fields<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Why a head cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyFields,
    #[error("malformed head: {0}")]
    Malformed(httparse::Error),
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("Transfer-Encoding whose final coding is not chunked")]
    TransferCoding,
    #[error("both Transfer-Encoding and Content-Length")]
    LengthAndCoding,
}

/// A parsed request head, borrowing the read buffer.
#[derive(Debug)]
pub struct RequestHead<'b, 'h> {
    pub method: &'b str,
    /// The request target as sent (`/path?query` in origin form).
    pub target: &'b str,
    /// The `x` of `HTTP/1.x`.
    pub minor: u8,
    pub fields: &'h [Header<'b>],
    /// Bytes of the head, up to and including the empty line.
    pub len: usize,
}

/// A parsed response head, borrowing the read buffer.
#[derive(Debug)]
pub struct ResponseHead<'b, 'h> {
    pub status: u16,
    pub reason: &'b str,
    pub minor: u8,
    pub fields: &'h [Header<'b>],
    pub len: usize,
}

fn map_err(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyFields,
        e => HeadError::Malformed(e),
    }
}

/// A request head from the start of `buf`; `None` until the head is complete.
pub fn request<'b, 'h>(
    buf: &'b [u8],
    fields: &'h mut [MaybeUninit<Header<'b>>],
) -> Result<Option<RequestHead<'b, 'h>>, HeadError> {
    let mut req = httparse::Request::new(&mut []);
    match req
        .parse_with_uninit_headers(buf, fields)
        .map_err(map_err)?
    {
        Status::Partial if buf.len() >= MAX_HEAD => Err(HeadError::TooLarge),
        Status::Partial => Ok(None),
        Status::Complete(len) if len > MAX_HEAD => Err(HeadError::TooLarge),
        Status::Complete(len) => Ok(Some(RequestHead {
            method: req.method.unwrap_or(""),
            target: req.path.unwrap_or(""),
            minor: req.version.unwrap_or(1),
            fields: req.headers,
            len,
        })),
    }
}

/// A response head from the start of `buf`; `None` until the head is complete.
pub fn response<'b, 'h>(
    buf: &'b [u8],
    fields: &'h mut [MaybeUninit<Header<'b>>],
) -> Result<Option<ResponseHead<'b, 'h>>, HeadError> {
    let mut res = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, fields)
        .map_err(map_err)?
    {
        Status::Partial if buf.len() >= MAX_HEAD => Err(HeadError::TooLarge),
        Status::Partial => Ok(None),
        Status::Complete(len) if len > MAX_HEAD => Err(HeadError::TooLarge),
        Status::Complete(len) => Ok(Some(ResponseHead {
            status: res.code.unwrap_or(0),
            reason: res.reason.unwrap_or(""),
            minor: res.version.unwrap_or(1),
            fields: res.headers,
            len,
        })),
    }
}

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// The chunked coding, ending with the last chunk and the trailer section.
    Chunked,
    /// Everything until the sender closes (responses only).
    UntilClose,
}

/// What the fields of one head say, gathered in one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary<'b> {
    /// The first `Host` field.
    pub host: Option<&'b str>,
    /// `Content-Length` (repeated identical values are one).
    pub content_length: Option<u64>,
    /// Any `Transfer-Encoding` field.
    pub transfer_encoding: bool,
    /// The final transfer coding is `chunked`.
    pub chunked: bool,
    /// A `Connection` field names a field besides `close`, `keep-alive` and
    /// `upgrade` (those are hop-by-hop anyway): that field is hop-by-hop too.
    pub connection: bool,
    /// `Connection: close`.
    pub close: bool,
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
    /// `Connection: upgrade`.
    pub connection_upgrade: bool,
    /// An `Upgrade` field.
    pub upgrade: bool,
    /// An `Expect` field.
    pub expect: bool,
    /// How many `Cookie` fields.
    pub cookies: usize,
    /// The first `Cookie` field.
    pub cookie: Option<&'b str>,
}

/// The comma-separated tokens of a list-valued field, trimmed.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// One pass over a head's fields.
pub fn summarize<'b>(fields: &[Header<'b>]) -> Result<Summary<'b>, HeadError> {
    let mut s = Summary::default();
    for f in fields {
        let name = f.name.as_bytes();
        match name.len() {
            4 if s.host.is_none() && name.eq_ignore_ascii_case(b"host") => {
                s.host = std::str::from_utf8(f.value).ok();
            }
            6 if name.eq_ignore_ascii_case(b"cookie") => {
                s.cookies += 1;
                if s.cookie.is_none() {
                    s.cookie = std::str::from_utf8(f.value).ok();
                }
            }
            6 if name.eq_ignore_ascii_case(b"expect") => s.expect = true,
            7 if name.eq_ignore_ascii_case(b"upgrade") => s.upgrade = true,
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for t in tokens(f.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        s.close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        s.keep_alive = true;
                    } else if t.eq_ignore_ascii_case(b"upgrade") {
                        s.connection_upgrade = true;
                    } else {
                        s.connection = true;
                    }
                }
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let n = content_length(f.value)?;
                if s.content_length.is_some_and(|m| m != n) {
                    return Err(HeadError::ContentLength);
                }
                s.content_length = Some(n);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                s.transfer_encoding = true;
                // The final coding is the last token of the last field (§6.1).
                if let Some(last) = tokens(f.value).last() {
                    s.chunked = last.eq_ignore_ascii_case(b"chunked");
                }
            }
            _ => {}
        }
    }
    Ok(s)
}

/// A `Content-Length` value: digits only (a list of one repeated value allowed, §8.6).
fn content_length(value: &[u8]) -> Result<u64, HeadError> {
    let mut found = None;
    for t in value.split(|&b| b == b',').map(|t| t.trim_ascii()) {
        if t.is_empty() || t.len() > 19 || !t.iter().all(u8::is_ascii_digit) {
            return Err(HeadError::ContentLength);
        }
        let n = t.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|m| m != n) {
            return Err(HeadError::ContentLength);
        }
        found = Some(n);
    }
    found.ok_or(HeadError::ContentLength)
}

/// A request's body framing (§6.3): chunked, a length, or none. A transfer coding
/// other than chunked, or one beside a length, is refused (request smuggling).
pub fn request_framing(s: &Summary<'_>) -> Result<Framing, HeadError> {
    match (s.transfer_encoding, s.content_length) {
        (true, Some(_)) => Err(HeadError::LengthAndCoding),
        (true, None) if s.chunked => Ok(Framing::Chunked),
        (true, None) => Err(HeadError::TransferCoding),
        (false, Some(0) | None) => Ok(Framing::Empty),
        (false, Some(n)) => Ok(Framing::Length(n)),
    }
}

/// A response's body framing (§6.3): none after HEAD and for 1xx, 204 and 304;
/// else chunked, a length, or until the target closes.
pub fn response_framing(s: &Summary<'_>, status: u16, head_request: bool) -> Framing {
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Framing::Empty;
    }
    match (s.transfer_encoding, s.content_length) {
        (true, _) if s.chunked => Framing::Chunked,
        (true, _) => Framing::UntilClose,
        (false, Some(0)) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::UntilClose,
    }
}

/// Whether the sender wants the connection kept after this message (§9.3):
/// HTTP/1.1 unless `close`, HTTP/1.0 only with `keep-alive`.
pub fn persistent(minor: u8, s: &Summary<'_>) -> bool {
    !s.close && (minor >= 1 || s.keep_alive)
}

/// Requests the fast path leaves to hyper: protocol upgrades (WebSocket), `Expect`
/// (100-continue), `CONNECT`, and targets not in origin form (absolute or `*`).
pub fn for_hyper(head: &RequestHead<'_, '_>, s: &Summary<'_>) -> bool {
    (s.upgrade && s.connection_upgrade)
        || s.expect
        || head.method == "CONNECT"
        || !head.target.starts_with('/')
}

/// Methods whose request may be sent twice (RFC 9110 §9.2.2).
pub fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
    )
}

/// RFC 9110 §7.6.1's hop-by-hop fields (and the legacy `Keep-Alive`,
/// `Proxy-Connection`), which a proxy does not forward.
pub fn hop_by_hop(name: &str) -> bool {
    let n = name.as_bytes();
    match n.len() {
        2 => n.eq_ignore_ascii_case(b"te"),
        7 => n.eq_ignore_ascii_case(b"trailer") || n.eq_ignore_ascii_case(b"upgrade"),
        10 => n.eq_ignore_ascii_case(b"connection") || n.eq_ignore_ascii_case(b"keep-alive"),
        16 => n.eq_ignore_ascii_case(b"proxy-connection"),
        17 => n.eq_ignore_ascii_case(b"transfer-encoding"),
        18 => n.eq_ignore_ascii_case(b"proxy-authenticate"),
        19 => n.eq_ignore_ascii_case(b"proxy-authorization"),
        _ => false,
    }
}

/// Whether a `Connection` field among `fields` names `name` (so it is hop-by-hop).
pub fn named_by_connection(name: &str, fields: &[Header<'_>]) -> bool {
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
        .flat_map(|f| tokens(f.value))
        .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

#[cfg(test)]
mod tests;
