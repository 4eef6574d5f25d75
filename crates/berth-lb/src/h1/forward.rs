//! One request to a target on the fast path: a pooled connection (or a new one),
//! the request out, the response head back and rewritten, the body relayed, and
//! the connection back to the pool when the exchange left it clean. A reused
//! connection that fails before any byte of response is retried once on a new
//! one when the request can be sent again (no body, or idempotent and read
//! whole), as haproxy and nginx do: the target may have closed it while idle.

use std::io;
use std::time::Duration;

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::parse::{self, Framing, HeadError};
use super::pool::{self, Upstream};
use super::relay::{self, Body, RelayError, READ_CHUNK};
use super::rewrite::{self, ClientFraming};
use super::{Conn, Req, Step};
use crate::balance::TargetRt;
use crate::error::ProxyError;
use crate::proxy::{StickyCookie, CONNECT_TIMEOUT};

/// How an exchange with a target went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("send request")]
    Send(#[source] io::Error),
    #[error("relay request body")]
    RequestBody(#[source] RelayError),
    #[error("read response")]
    Read(#[source] io::Error),
    #[error("closed the connection before a complete response head")]
    Closed,
    #[error("response head")]
    Head(#[source] HeadError),
    #[error("101 Switching Protocols to a request that asked for no upgrade")]
    UnaskedUpgrade,
    #[error("response body")]
    Body(#[source] relay::ChunkError),
}

enum Failure {
    /// The target failed before any byte of response (a reused connection may
    /// have been closed by it in the meantime).
    Early(ExchangeError),
    Upstream(ExchangeError),
    Timeout,
    /// The client went away while sending its body.
    Client,
}

fn read_failure(e: io::Error, answered: bool) -> Failure {
    if e.kind() == io::ErrorKind::TimedOut {
        Failure::Timeout
    } else if answered {
        Failure::Upstream(ExchangeError::Read(e))
    } else {
        Failure::Early(ExchangeError::Read(e))
    }
}

/// The response as the exchange goes on with it.
struct Plan {
    head_len: usize,
    body: Body,
    /// Relay the payload only (an HTTP/1.0 client and a chunked response).
    dechunk: bool,
    /// The target lets the connection be used again.
    reuse: bool,
    /// Close the client's connection after the response.
    close: bool,
}

enum Head {
    Partial,
    /// A 1xx response before the final one (dropped, as hyper's client does).
    Interim(usize),
    Final(Plan),
}

/// Parses the response head at the start of `buf`; for the final response writes
/// the client's head into `back`.
fn response_head<C: std::fmt::Display>(
    buf: &[u8],
    req: &Req,
    cookies: impl Iterator<Item = C>,
    stopping: bool,
    back: &mut Vec<u8>,
) -> Result<Head, ExchangeError> {
    let mut fields = parse::fields();
    let Some(head) = parse::response(buf, &mut fields).map_err(ExchangeError::Head)? else {
        return Ok(Head::Partial);
    };
    if head.status == 101 {
        return Err(ExchangeError::UnaskedUpgrade);
    }
    if (100..200).contains(&head.status) {
        return Ok(Head::Interim(head.len));
    }
    let s = parse::summarize(head.fields).map_err(ExchangeError::Head)?;
    let framing = parse::response_framing(&s, head.status, req.head_method);
    let dechunk = framing == Framing::Chunked && req.minor == 0;
    let close = !req.keep_alive || stopping || dechunk || framing == Framing::UntilClose;
    let client = ClientFraming {
        chunked: framing == Framing::Chunked && !dechunk,
        keep_length: !s.transfer_encoding,
        connection: if close {
            Some(true)
        } else {
            Some(false).filter(|_| req.minor == 0)
        },
    };
    rewrite::response_head(back, &head, &s, client, cookies);
    Ok(Head::Final(Plan {
        head_len: head.len,
        body: Body::new(framing),
        dechunk,
        reuse: parse::persistent(head.minor, &s) && framing != Framing::UntilClose,
        close,
    }))
}

impl Conn {
    /// Sends the prepared request (`out`) to `target` and relays the response.
    pub(super) async fn forward(
        &mut self,
        mut req: Req,
        target: &TargetRt,
        cookies: &[Option<StickyCookie<'_>>; 2],
        idle: Duration,
    ) -> Step {
        self.rbuf.advance(req.used);
        let ctx = self.ctx.clone();
        let mut retried = false;
        let (mut up, plan) = loop {
            let (mut up, reused) = match ctx.shared.pool.take(target.addr) {
                Some(mut up) => {
                    up.reset(idle);
                    (up, true)
                }
                None => match pool::connect(target.addr, CONNECT_TIMEOUT, idle).await {
                    Ok(up) => (up, false),
                    Err(e) => {
                        let err = ProxyError::Connect {
                            target: target.authority.clone(),
                            source: Box::new(e),
                        };
                        let done = req.body.is_done();
                        return self.fail(err, &req, done).await;
                    }
                },
            };
            let upstream = |source: ExchangeError| ProxyError::Upstream {
                target: target.authority.clone(),
                source: Box::new(source),
            };
            match self.exchange(&mut up, &mut req, cookies).await {
                Ok(plan) => break (up, plan),
                Err(Failure::Early(_)) if reused && req.replay && !retried => retried = true,
                Err(Failure::Client) => return Step::Close,
                Err(Failure::Early(e) | Failure::Upstream(e)) => {
                    let done = req.body.is_done();
                    return self.fail(upstream(e), &req, done).await;
                }
                Err(Failure::Timeout) => {
                    let err = ProxyError::Timeout {
                        target: target.authority.clone(),
                        secs: idle.as_secs(),
                    };
                    let done = req.body.is_done();
                    return self.fail(err, &req, done).await;
                }
            }
        };
        // The client's idle time starts again with the response (hyper's path
        // counts the wait for the target as busy).
        self.io.touch();
        let mut body = plan.body;
        self.ubuf.advance(plan.head_len);
        if let Err(e) =
            relay::take_buffered(&mut body, &mut self.ubuf, &mut self.back, plan.dechunk)
        {
            let err = ProxyError::Upstream {
                target: target.authority.clone(),
                source: Box::new(ExchangeError::Body(e)),
            };
            return self.fail(err, &req, true).await;
        }
        if self.io.write_all(&self.back).await.is_err() {
            return Step::Close;
        }
        if !body.is_done() {
            let relayed = relay::copy(
                &mut body,
                &mut up,
                &mut self.ubuf,
                &mut self.io,
                plan.dechunk,
                &mut self.back,
            )
            .await;
            if let Err(e) = relayed {
                tracing::debug!(listener = ctx.port, target = %target.authority, "relay response body: {e}");
                return Step::Close;
            }
        }
        if plan.reuse && self.ubuf.is_empty() {
            ctx.shared.pool.put(target.addr, up);
        }
        if plan.close {
            Step::Close
        } else {
            Step::Next
        }
    }

    /// Writes the request, relays the rest of its body, and reads the response
    /// head into `ubuf` (its client version into `back`).
    async fn exchange(
        &mut self,
        up: &mut Upstream,
        req: &mut Req,
        cookies: &[Option<StickyCookie<'_>>; 2],
    ) -> Result<Plan, Failure> {
        up.write_all(&self.out)
            .await
            .map_err(|e| Failure::Early(ExchangeError::Send(e)))?;
        if !req.body.is_done() {
            relay::copy(
                &mut req.body,
                &mut self.io,
                &mut self.rbuf,
                up,
                false,
                &mut self.back,
            )
            .await
            .map_err(|e| match e {
                RelayError::Write(e) if e.kind() == io::ErrorKind::TimedOut => Failure::Timeout,
                RelayError::Write(e) => Failure::Upstream(ExchangeError::Send(e)),
                RelayError::Framing(e) => {
                    Failure::Upstream(ExchangeError::RequestBody(RelayError::Framing(e)))
                }
                RelayError::Read(_) | RelayError::Truncated => Failure::Client,
            })?;
        }
        self.ubuf.clear();
        let mut answered = false;
        loop {
            if !self.ubuf.is_empty() {
                answered = true;
                self.back.clear();
                let cookies = cookies.iter().flatten();
                match response_head(&self.ubuf, req, cookies, self.stopping(), &mut self.back) {
                    Ok(Head::Partial) => {}
                    Ok(Head::Interim(n)) => {
                        self.ubuf.advance(n);
                        continue;
                    }
                    Ok(Head::Final(plan)) => return Ok(plan),
                    Err(e) => return Err(Failure::Upstream(e)),
                }
            }
            if self.ubuf.capacity() - self.ubuf.len() < 1024 {
                self.ubuf.reserve(READ_CHUNK);
            }
            match up.read_buf(&mut self.ubuf).await {
                Ok(0) if answered => return Err(Failure::Upstream(ExchangeError::Closed)),
                Ok(0) => return Err(Failure::Early(ExchangeError::Closed)),
                Ok(_) => {}
                Err(e) => return Err(read_failure(e, answered)),
            }
        }
    }
}
