use super::*;
use crate::h1::parse;

const FWD: Forwarded<'static> = Forwarded {
    client: "192.0.2.9",
    proto: "http",
    port: 8080,
    default_host: "10.0.0.1:80",
};

fn rewrite_request(raw: &[u8], chunked: bool) -> String {
    let mut f = parse::fields();
    let head = parse::request(raw, &mut f).unwrap().unwrap();
    let s = parse::summarize(head.fields).unwrap();
    let mut out = Vec::new();
    request_head(&mut out, &head, &s, chunked, &FWD);
    String::from_utf8(out).unwrap()
}

/// The target's request: HTTP/1.1, fields kept in order but the hop-by-hop ones
/// and those Connection names, X-Forwarded-For appended to every earlier value,
/// -Proto and -Port replaced, Host kept.
#[test]
fn request_rewritten() {
    let got = rewrite_request(
        b"GET /p?q=1 HTTP/1.0\r\nHost: app.example\r\nConnection: keep-alive, X-Secret\r\n\
          X-Secret: s\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 203.0.113.7\r\n\
          x-forwarded-for: 198.51.100.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 1\r\n\
          TE: trailers\r\nAccept: */*\r\n\r\n",
        false,
    );
    assert_eq!(
        got,
        "GET /p?q=1 HTTP/1.1\r\nHost: app.example\r\nAccept: */*\r\n\
         X-Forwarded-For: 203.0.113.7, 198.51.100.1, 192.0.2.9\r\n\
         X-Forwarded-Proto: http\r\nX-Forwarded-Port: 8080\r\n\r\n"
    );
}

/// No Host: the target's address, as hyper's client sends; a chunked body keeps
/// its Transfer-Encoding, which is otherwise hop-by-hop.
#[test]
fn request_without_host_chunked() {
    let got = rewrite_request(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        true,
    );
    assert_eq!(
        got,
        "POST / HTTP/1.1\r\nHost: 10.0.0.1:80\r\nTransfer-Encoding: chunked\r\n\
         X-Forwarded-For: 192.0.2.9\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 8080\r\n\r\n"
    );
}

fn rewrite_response(raw: &[u8], framing: ClientFraming, cookies: &[&str]) -> String {
    let mut f = parse::fields();
    let head = parse::response(raw, &mut f).unwrap().unwrap();
    let s = parse::summarize(head.fields).unwrap();
    let mut out = Vec::new();
    response_head(&mut out, &head, &s, framing, cookies.iter());
    String::from_utf8(out).unwrap()
}

/// The client's response: hop-by-hop fields gone, the chunk framing declared
/// again, a Content-Length beside a transfer coding dropped, cookies and the
/// connection's fate added.
#[test]
fn response_rewritten() {
    let raw = b"HTTP/1.1 200 Fine\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\
                Connection: x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Keep: 1\r\n\r\n";
    let framing = ClientFraming {
        chunked: true,
        keep_length: false,
        connection: Some(true),
    };
    assert_eq!(
        rewrite_response(raw, framing, &["AWSALB=abc; Max-Age=60; Path=/"]),
        "HTTP/1.1 200 Fine\r\nX-Keep: 1\r\nTransfer-Encoding: chunked\r\n\
         Set-Cookie: AWSALB=abc; Max-Age=60; Path=/\r\nConnection: close\r\n\r\n"
    );
    let framing = ClientFraming {
        chunked: false,
        keep_length: true,
        connection: Some(false),
    };
    assert_eq!(
        rewrite_response(
            b"HTTP/1.0 204 No Content\r\nContent-Length: 0\r\n\r\n",
            framing,
            &[]
        ),
        "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
    );
}

/// The response without its `Date` field, and that field's time (which must be now).
fn without_date(out: &[u8]) -> String {
    let text = String::from_utf8(out.to_vec()).unwrap();
    let line = text
        .split("\r\n")
        .find(|l| l.starts_with("Date: "))
        .unwrap_or_else(|| panic!("no Date field: {text:?}"));
    let when = httpdate::parse_http_date(&line["Date: ".len()..]).unwrap();
    let off = std::time::SystemTime::now()
        .duration_since(when)
        .unwrap_or_default();
    assert!(off < std::time::Duration::from_secs(5), "{line}");
    text.replace(&format!("{line}\r\n"), "")
}

/// The load balancer's own responses count their body, leave it out for HEAD, and
/// carry the date.
#[test]
fn local_responses() {
    let mut out = Vec::new();
    local_response(
        &mut out,
        http::StatusCode::SERVICE_UNAVAILABLE,
        &[("Content-Type", b"text/plain")],
        b"down",
        false,
        None,
    );
    assert_eq!(
        without_date(&out),
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\ndown"
    );
    out.clear();
    local_response(
        &mut out,
        http::StatusCode::OK,
        &[],
        b"body",
        true,
        Some(true),
    );
    assert_eq!(
        without_date(&out),
        "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"
    );
}

/// Numbers in decimal, 0 and the largest included.
#[test]
fn decimal() {
    for n in [0, 7, 10, 8080, u64::MAX] {
        let mut out = Vec::new();
        push_u64(&mut out, n);
        assert_eq!(out, n.to_string().as_bytes());
    }
}
