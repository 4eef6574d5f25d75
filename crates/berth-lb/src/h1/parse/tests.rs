use super::*;
use proptest::prelude::*;

fn summary_of(head: &[u8]) -> Summary<'_> {
    let mut f = fields();
    let h = request(head, &mut f).unwrap().unwrap();
    summarize(h.fields).unwrap()
}

/// A complete head is parsed in place; one cut short is `None`; the head's
/// length leaves pipelined bytes after it alone.
#[test]
fn request_heads() {
    let buf = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\nGET /next";
    let mut f = fields();
    let h = request(buf, &mut f).unwrap().unwrap();
    assert_eq!((h.method, h.target, h.minor), ("GET", "/a?b=1", 1));
    assert_eq!(h.fields.len(), 2);
    assert_eq!(&buf[h.len..], b"GET /next");
    let mut f = fields();
    assert!(request(b"GET / HTTP/1.1\r\nHost: x\r\n", &mut f)
        .unwrap()
        .is_none());
}

/// Heads over 64 KiB and over 100 fields are refused; so is garbage.
#[test]
fn request_limits() {
    let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    big.resize(MAX_HEAD + 10, b'a');
    let mut f = fields();
    assert_eq!(request(&big, &mut f).unwrap_err(), HeadError::TooLarge);
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let mut f = fields();
    assert_eq!(
        request(&many, &mut f).unwrap_err(),
        HeadError::TooManyFields
    );
    let mut f = fields();
    assert!(matches!(
        request(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", &mut f),
        Err(HeadError::Malformed(_))
    ));
}

/// Response heads give status, reason and version.
#[test]
fn response_heads() {
    let buf = b"HTTP/1.0 404 Not Found\r\nContent-Length: 3\r\n\r\nabc";
    let mut f = fields();
    let h = response(buf, &mut f).unwrap().unwrap();
    assert_eq!((h.status, h.reason, h.minor), (404, "Not Found", 0));
    assert_eq!(&buf[h.len..], b"abc");
}

/// One pass finds Host, lengths, codings, connection options and cookies.
#[test]
fn summaries() {
    let s = summary_of(
        b"POST / HTTP/1.1\r\nhost: a\r\nHost: b\r\nContent-Length: 5\r\ncontent-length: 5\r\n\
          Connection: Keep-Alive, X-Priv\r\nconnection: close\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
    );
    assert_eq!(s.host, Some("a"));
    assert_eq!(s.content_length, Some(5));
    assert!(s.connection && s.close && s.keep_alive && !s.connection_upgrade);
    assert_eq!((s.cookies, s.cookie), (2, Some("a=1")));
    let s = summary_of(b"GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n");
    assert!(!s.connection, "only hop-by-hop fields named");
    let s = summary_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n");
    assert!(s.transfer_encoding && s.chunked);
    let s = summary_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
    assert!(s.transfer_encoding && !s.chunked);
    let mut f = fields();
    let h = request(
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        &mut f,
    )
    .unwrap()
    .unwrap();
    assert_eq!(summarize(h.fields).unwrap_err(), HeadError::ContentLength);
}

/// Content-Length: digits only; a list of one repeated value is that value.
#[test]
fn content_lengths() {
    assert_eq!(content_length(b"42"), Ok(42));
    assert_eq!(content_length(b"42, 42"), Ok(42));
    for bad in [
        &b""[..],
        b"-1",
        b"4 2",
        b"0x10",
        b"1, 2",
        b"99999999999999999999",
    ] {
        assert_eq!(
            content_length(bad),
            Err(HeadError::ContentLength),
            "{bad:?}"
        );
    }
}

/// Request framing: chunked, a length, none; smuggling-prone mixes refused.
#[test]
fn request_framings() {
    let f = |h: &[u8]| request_framing(&summary_of(h));
    assert_eq!(f(b"GET / HTTP/1.1\r\n\r\n"), Ok(Framing::Empty));
    assert_eq!(
        f(b"PUT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        Ok(Framing::Empty)
    );
    assert_eq!(
        f(b"PUT / HTTP/1.1\r\nContent-Length: 7\r\n\r\n"),
        Ok(Framing::Length(7))
    );
    assert_eq!(
        f(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Ok(Framing::Chunked)
    );
    assert_eq!(
        f(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
        Err(HeadError::LengthAndCoding)
    );
    assert_eq!(
        f(b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
        Err(HeadError::TransferCoding)
    );
}

/// Response framing: no body after HEAD and for 1xx/204/304; chunked beats a
/// length; another coding or no length reads until close.
#[test]
fn response_framings() {
    let len = summary_of(b"GET / HTTP/1.1\r\nContent-Length: 9\r\n\r\n");
    assert_eq!(response_framing(&len, 200, false), Framing::Length(9));
    assert_eq!(response_framing(&len, 200, true), Framing::Empty);
    for status in [100, 204, 304] {
        assert_eq!(response_framing(&len, status, false), Framing::Empty);
    }
    let both =
        summary_of(b"GET / HTTP/1.1\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(response_framing(&both, 200, false), Framing::Chunked);
    let gzip = summary_of(b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_eq!(response_framing(&gzip, 200, false), Framing::UntilClose);
    let none = summary_of(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(response_framing(&none, 200, false), Framing::UntilClose);
    let zero = summary_of(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(response_framing(&zero, 200, false), Framing::Empty);
}

/// HTTP/1.1 persists unless `close`; HTTP/1.0 only with `keep-alive`.
#[test]
fn persistence() {
    let plain = summary_of(b"GET / HTTP/1.1\r\n\r\n");
    let close = summary_of(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    let keep = summary_of(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n");
    assert!(persistent(1, &plain));
    assert!(!persistent(1, &close));
    assert!(!persistent(0, &plain));
    assert!(persistent(0, &keep));
}

/// Upgrades, Expect, CONNECT and non-origin-form targets go to hyper.
#[test]
fn left_to_hyper() {
    let check = |h: &[u8]| {
        let mut f = fields();
        let head = request(h, &mut f).unwrap().unwrap();
        let s = summarize(head.fields).unwrap();
        for_hyper(&head, &s)
    };
    assert!(!check(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(check(
        b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    ));
    assert!(!check(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"));
    assert!(check(
        b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    ));
    assert!(check(b"CONNECT a:443 HTTP/1.1\r\n\r\n"));
    assert!(check(b"GET http://a/ HTTP/1.1\r\n\r\n"));
    assert!(check(b"OPTIONS * HTTP/1.1\r\n\r\n"));
}

/// The hop-by-hop list, and fields a Connection field names.
#[test]
fn hop_by_hop_fields() {
    for name in [
        "Connection",
        "keep-alive",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Proxy-Authorization",
        "Proxy-Authenticate",
        "Proxy-Connection",
    ] {
        assert!(hop_by_hop(name), "{name}");
    }
    for name in ["Host", "Content-Length", "X-Forwarded-For", "Trailers"] {
        assert!(!hop_by_hop(name), "{name}");
    }
    let mut f = fields();
    let h = request(
        b"GET / HTTP/1.1\r\nConnection: x-a , X-B\r\nX-A: 1\r\n\r\n",
        &mut f,
    )
    .unwrap()
    .unwrap();
    assert!(named_by_connection("X-a", h.fields));
    assert!(named_by_connection("x-b", h.fields));
    assert!(!named_by_connection("x-c", h.fields));
}

proptest! {
    /// Any bytes: the parsers answer (complete, partial or an error), never panic,
    /// and a complete head's length is within the input.
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut f = fields();
        if let Ok(Some(h)) = request(&bytes, &mut f) {
            prop_assert!(h.len <= bytes.len());
            let _ = summarize(h.fields).map(|s| request_framing(&s));
        }
        let mut f = fields();
        if let Ok(Some(h)) = response(&bytes, &mut f) {
            prop_assert!(h.len <= bytes.len());
        }
    }

    /// Content-Length values round-trip.
    #[test]
    fn content_length_roundtrip(n in any::<u32>()) {
        prop_assert_eq!(content_length(n.to_string().as_bytes()), Ok(u64::from(n)));
    }
}
