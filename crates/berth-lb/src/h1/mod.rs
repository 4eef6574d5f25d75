//! The HTTP/1.1 fast path: the common exchange done by hand, hyper for the rest.
//!
//! Per client connection, one read buffer; each request head is parsed in place
//! ([`parse`], httparse into a fixed array of fields), the rule and target are
//! chosen by [`crate::proxy::decide`] (the same function hyper's path uses), and
//! then either the load balancer answers itself (fixed response, redirect, error
//! page: [`rewrite::local_response`]) or the request goes to the target over a
//! pooled keep-alive connection ([`pool`]): the rewritten head and the body bytes
//! already read in one write, the rest of the body relayed ([`relay`]), the
//! response head rewritten for the client and its body relayed the same way.
//! Pipelined requests are parsed from what is left in the buffer.
//!
//! What the fast path leaves to hyper ([`crate::conn`] hands the connection over,
//! with every byte not yet used): HTTP/2 with prior knowledge, protocol upgrades
//! (WebSocket), `Expect: 100-continue`, `CONNECT`, and request targets not in
//! origin form.

mod forward;
pub mod parse;
pub mod pool;
pub mod relay;
pub mod rewrite;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::error::{log_error, page, ProxyError, PAGE_FIELDS};
use crate::io::IdleIo;
use crate::prefixed::Prefixed;
use crate::proxy::{
    decide, join_cookies, path_and_query, protocol_name, ConnCtx, Decision, Snapshot, StickyCookie,
};
use crate::rules::{self, RequestView};
use parse::{Framing, MAX_HEADERS};
use relay::{Body, READ_CHUNK};
use rewrite::Forwarded;

/// A client connection on the fast path.
pub(crate) struct Conn {
    ctx: Arc<ConnCtx>,
    io: IdleIo<TcpStream>,
    /// Bytes from the client not used yet.
    rbuf: BytesMut,
    /// Bytes from the target not used yet.
    ubuf: BytesMut,
    /// What goes to the target (kept whole until it answers, for a retry).
    out: Vec<u8>,
    /// What goes to the client.
    back: Vec<u8>,
    /// The client's address for `X-Forwarded-For`.
    client: String,
    /// Set when the listener stops: finish the request in flight, then close.
    stop: watch::Receiver<bool>,
}

/// How a request ended for the connection.
enum Step {
    /// Read the next request.
    Next,
    Close,
    /// Serve the rest with hyper.
    HandOver,
}

/// What the rest of an exchange needs to know about its request.
#[derive(Debug)]
struct Req {
    /// Bytes of the read buffer the request used (head and buffered body).
    used: usize,
    /// The rest of the request body, still to be read from the client.
    body: Body,
    head_method: bool,
    minor: u8,
    /// The client wants the connection kept.
    keep_alive: bool,
    /// The whole request is in `out` and may be sent again.
    replay: bool,
}

/// A request read and decided.
enum Prep<'s> {
    /// The head is not complete.
    Partial,
    HandOver,
    /// The head cannot be read: answer and close.
    Reject(ProxyError),
    /// Answered by the load balancer (the response is in `back`).
    Local(Req),
    /// To a target (the request head and buffered body are in `out`).
    Forward {
        req: Req,
        target: &'s crate::balance::TargetRt,
        cookies: [Option<StickyCookie<'s>>; 2],
        idle: Duration,
    },
}

impl Conn {
    pub(crate) fn new(
        ctx: Arc<ConnCtx>,
        io: IdleIo<TcpStream>,
        stop: watch::Receiver<bool>,
    ) -> Conn {
        Conn {
            client: ctx.peer.ip().to_canonical().to_string(),
            ctx,
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            ubuf: BytesMut::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(1024),
            back: Vec::with_capacity(1024),
            stop,
        }
    }

    /// Serves requests until the connection closes, or returns it (every byte
    /// not used replayed first) for hyper to serve.
    pub(crate) async fn serve(
        mut self,
    ) -> Option<(Prefixed<IdleIo<TcpStream>>, watch::Receiver<bool>)> {
        let mut first = true;
        loop {
            match self.request(first).await {
                Step::Next => first = false,
                Step::Close => {
                    let _ = self.io.shutdown().await;
                    return None;
                }
                Step::HandOver => {
                    let prefix = self.rbuf.split().freeze();
                    return Some((Prefixed::new(prefix, self.io), self.stop));
                }
            }
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Reads one request and sees it through.
    async fn request(&mut self, first: bool) -> Step {
        loop {
            if !self.rbuf.is_empty() {
                let snap = self.ctx.shared.snapshot();
                self.out.clear();
                self.back.clear();
                let prep = prepare(
                    &self.ctx,
                    &snap,
                    &self.rbuf,
                    first,
                    &self.client,
                    self.stopping(),
                    &mut self.out,
                    &mut self.back,
                );
                match prep {
                    Prep::Partial => {}
                    Prep::HandOver => return Step::HandOver,
                    Prep::Reject(err) => {
                        log_error(&self.ctx.shared.log_gate, self.ctx.port, &err);
                        error_response(&mut self.back, &err, false, Some(true));
                        let _ = self.io.write_all(&self.back).await;
                        return Step::Close;
                    }
                    Prep::Local(req) => {
                        self.rbuf.advance(req.used);
                        if self.io.write_all(&self.back).await.is_err() || !req.keep_alive {
                            return Step::Close;
                        }
                        return Step::Next;
                    }
                    Prep::Forward {
                        req,
                        target,
                        cookies,
                        idle,
                    } => return self.forward(req, target, &cookies, idle).await,
                }
            } else if self.stopping() {
                return Step::Close;
            }
            if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                self.rbuf.reserve(READ_CHUNK);
            }
            let read = if self.rbuf.is_empty() {
                // Between requests: the listener's stop closes the connection.
                tokio::select! {
                    biased;
                    r = self.io.read_buf(&mut self.rbuf) => r,
                    _ = self.stop.wait_for(|s| *s) => return Step::Close,
                }
            } else {
                self.io.read_buf(&mut self.rbuf).await
            };
            match read {
                Ok(0) | Err(_) => return Step::Close,
                Ok(_) => {}
            }
        }
    }

    /// Answers with ELB's page for `err`; the connection stays if the request
    /// was read whole and the client wants it kept.
    async fn fail(&mut self, err: ProxyError, req: &Req, body_done: bool) -> Step {
        log_error(&self.ctx.shared.log_gate, self.ctx.port, &err);
        let close = !req.keep_alive || !body_done || self.stopping();
        self.back.clear();
        error_response(&mut self.back, &err, req.head_method, Some(close));
        if self.io.write_all(&self.back).await.is_err() || close {
            Step::Close
        } else {
            Step::Next
        }
    }
}

/// ELB's error page for `err`; `close` as in [`rewrite::local_response`].
fn error_response(back: &mut Vec<u8>, err: &ProxyError, head_method: bool, close: Option<bool>) {
    let status = err.status();
    rewrite::local_response(
        back,
        status,
        &PAGE_FIELDS,
        page(status).as_bytes(),
        head_method,
        close,
    );
}

/// Parses the request at the start of `buf`, decides it, and writes what goes out
/// next: the target's request head and buffered body into `out`, or the load
/// balancer's own response into `back`.
#[allow(clippy::too_many_arguments)]
fn prepare<'s>(
    ctx: &ConnCtx,
    snap: &'s Snapshot,
    buf: &[u8],
    first: bool,
    client: &str,
    stopping: bool,
    out: &mut Vec<u8>,
    back: &mut Vec<u8>,
) -> Prep<'s> {
    if first && buf.starts_with(parse::H2_PREFACE_START) {
        return Prep::HandOver;
    }
    if first && parse::H2_PREFACE_START.starts_with(buf) {
        return Prep::Partial;
    }
    let mut fields = parse::fields();
    let head = match parse::request(buf, &mut fields) {
        Ok(Some(head)) => head,
        Ok(None) => return Prep::Partial,
        Err(e) => return Prep::Reject(ProxyError::BadHead(e)),
    };
    let summary = match parse::summarize(head.fields) {
        Ok(s) => s,
        Err(e) => return Prep::Reject(ProxyError::BadHead(e)),
    };
    if parse::for_hyper(&head, &summary) {
        return Prep::HandOver;
    }
    let framing = match parse::request_framing(&summary) {
        Ok(f) => f,
        Err(e) => return Prep::Reject(ProxyError::BadHead(e)),
    };
    // The body bytes already read, and what is left of the body after them.
    let mut body = Body::new(framing);
    let buffered = match body.advance(&buf[head.len..], |_| {}) {
        Ok(n) => n,
        Err(e) => return Prep::Reject(ProxyError::BadRequest(format!("chunked body: {e}"))),
    };
    let head_method = head.method == "HEAD";
    let mut req = Req {
        used: head.len + buffered,
        replay: body.is_done() && (framing == Framing::Empty || parse::idempotent(head.method)),
        body,
        head_method,
        minor: head.minor,
        keep_alive: parse::persistent(head.minor, &summary) && !stopping,
    };

    let (path, query) = path_and_query(head.target);
    let listener = snap.listener(ctx.port);
    // The fields as the rules see them, only if a rule looks at any.
    let mut pairs;
    let headers: &[(&str, &str)] = match &listener {
        Ok(l) if rules::uses_headers(&l.rules) => {
            pairs = [("", ""); MAX_HEADERS];
            let mut n = 0;
            for f in head.fields {
                if let Ok(v) = std::str::from_utf8(f.value) {
                    pairs[n] = (f.name, v);
                    n += 1;
                }
            }
            &pairs[..n]
        }
        _ => &[],
    };
    let cookies = if summary.cookies > 1 {
        join_cookies(
            head.fields
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case("cookie"))
                .filter_map(|f| std::str::from_utf8(f.value).ok()),
        )
    } else {
        summary.cookie.map(std::borrow::Cow::Borrowed)
    };
    let view = RequestView {
        method: head.method,
        path,
        query,
        host: summary.host.unwrap_or(""),
        headers,
        client_ip: ctx.peer.ip(),
    };
    let decided =
        listener.and_then(|l| Ok((l, decide(snap, l, ctx.port, &view, cookies.as_deref())?)));
    // A body the load balancer answers without reading: close after answering.
    let local_close = |req: &mut Req| {
        req.keep_alive &= req.body.is_done();
        Some(!req.keep_alive).filter(|c| *c || req.minor == 0)
    };
    match decided {
        Err(err) => {
            log_error(&ctx.shared.log_gate, ctx.port, &err);
            let close = local_close(&mut req);
            error_response(back, &err, head_method, close);
            Prep::Local(req)
        }
        Ok((
            _,
            Decision::Fixed {
                status,
                content_type,
                body,
            },
        )) => {
            let close = local_close(&mut req);
            let ct = content_type.map(|ct| ("Content-Type", ct.as_bytes()));
            rewrite::local_response(
                back,
                status,
                ct.as_slice(),
                body.as_bytes(),
                head_method,
                close,
            );
            Prep::Local(req)
        }
        Ok((_, Decision::Redirect { status, location })) => {
            let close = local_close(&mut req);
            rewrite::local_response(
                back,
                status,
                &[("Location", location.as_bytes())],
                b"",
                head_method,
                close,
            );
            Prep::Local(req)
        }
        Ok((listener, Decision::Forward { target, cookies })) => {
            let fwd = Forwarded {
                client,
                proto: protocol_name(listener.protocol),
                port: ctx.port,
                default_host: &target.authority,
            };
            rewrite::request_head(out, &head, &summary, framing == Framing::Chunked, &fwd);
            out.extend_from_slice(&buf[head.len..req.used]);
            Prep::Forward {
                req,
                target,
                cookies,
                idle: listener.idle_timeout,
            }
        }
    }
}

#[cfg(test)]
mod tests;
