//! The request path's errors: each knows which side caused it and whether a retry
//! can help, and is turned into ELB's status code once, at the edge ([`respond`]).
//! Logs a client can trigger go through [`RateLimited`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Response, StatusCode};

use crate::h1::parse::HeadError;
use crate::proxy::{full, ProxyBody};

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something the load balancer cannot route.
    Client,
    /// A target failed (refused, timed out, broke the protocol) or there is none.
    Upstream,
    /// The configuration (a listener without a matching rule, a forward action with
    /// no group of weight above 0).
    Internal,
}

/// Why a request got no answer from a target.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no rule of listener {port} matches the request")]
    NoRule { port: u16 },
    #[error("forward action has no target group of weight above 0")]
    NoGroup,
    #[error("target group {0} has no registered targets that can take requests")]
    NoTargets(String),
    #[error("connect to target {target}")]
    Connect {
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("target {target} sent no response within {secs} s")]
    Timeout { target: String, secs: u64 },
    #[error("exchange with target {target}")]
    Upstream {
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("request cannot be forwarded: {0}")]
    BadRequest(String),
    #[error("request head cannot be read")]
    BadHead(#[source] HeadError),
}

impl ProxyError {
    pub fn side(&self) -> Side {
        match self {
            ProxyError::NoRule { .. } | ProxyError::NoGroup => Side::Internal,
            ProxyError::NoTargets(_)
            | ProxyError::Connect { .. }
            | ProxyError::Timeout { .. }
            | ProxyError::Upstream { .. } => Side::Upstream,
            ProxyError::BadRequest(_) | ProxyError::BadHead(_) => Side::Client,
        }
    }

    /// Whether sending the same request again may succeed (another target, later).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ProxyError::NoTargets(_) | ProxyError::Connect { .. } | ProxyError::Timeout { .. }
        )
    }

    /// ELB's status for the error: 503 without targets, 502 when a target cannot be
    /// reached or answers badly, 504 when it answers too late, 400 for the client's
    /// own mistakes.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRule { .. } | ProxyError::NoGroup | ProxyError::NoTargets(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            // ALB answers 400 also for heads over its size limits.
            ProxyError::BadRequest(_) | ProxyError::BadHead(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// The body of ELB's error page for `status`.
pub fn page(status: StatusCode) -> String {
    format!(
        "<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n<center><h1>{status}</h1></center>\r\n</body>\r\n</html>\r\n"
    )
}

/// The fields of ELB's error pages besides their length.
pub const PAGE_FIELDS: [(&str, &[u8]); 2] =
    [("Content-Type", b"text/html"), ("Server", b"awselb/2.0")];

/// The response for an error, shaped like ELB's (a small HTML page, `Server: awselb/2.0`).
pub fn respond(err: &ProxyError) -> Response<ProxyBody> {
    let status = err.status();
    let mut res = Response::new(full(Bytes::from(page(status))));
    *res.status_mut() = status;
    for (name, value) in PAGE_FIELDS {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            header::HeaderValue::from_bytes(value),
        ) {
            res.headers_mut().insert(n, v);
        }
    }
    res
}

/// A log gate: at most `per_window` lines each `window`; the lines held back are
/// counted and reported with the next line let through.
#[derive(Debug)]
pub struct RateLimited {
    per_window: u32,
    window: Duration,
    state: Mutex<(Instant, u32, u64)>,
}

impl RateLimited {
    pub fn new(per_window: u32, window: Duration) -> RateLimited {
        RateLimited {
            per_window,
            window,
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// `Some(suppressed since the last line)` if a line may be written now.
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(s.0) >= self.window {
            *s = (now, 0, s.2);
        }
        if s.1 < self.per_window {
            s.1 += 1;
            let suppressed = s.2;
            s.2 = 0;
            Some(suppressed)
        } else {
            s.2 += 1;
            None
        }
    }
}

/// Logs a request-path error (rate-limited: any client can cause one).
pub fn log_error(gate: &RateLimited, port: u16, err: &ProxyError) {
    if let Some(suppressed) = gate.allow(Instant::now()) {
        let mut chain = String::new();
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::warn!(
            listener = port,
            side = ?err.side(),
            status = err.status().as_u16(),
            retryable = err.retryable(),
            suppressed,
            "{err}{chain}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each error maps to ELB's status and names its side.
    #[test]
    fn statuses_and_sides() {
        let io = || Box::new(std::io::Error::other("x")) as Box<_>;
        let cases = [
            (ProxyError::NoRule { port: 80 }, 503, Side::Internal),
            (ProxyError::NoTargets("tg".into()), 503, Side::Upstream),
            (
                ProxyError::Connect {
                    target: "t".into(),
                    source: io(),
                },
                502,
                Side::Upstream,
            ),
            (
                ProxyError::Timeout {
                    target: "t".into(),
                    secs: 1,
                },
                504,
                Side::Upstream,
            ),
            (
                ProxyError::Upstream {
                    target: "t".into(),
                    source: io(),
                },
                502,
                Side::Upstream,
            ),
            (ProxyError::BadRequest("x".into()), 400, Side::Client),
            (ProxyError::BadHead(HeadError::TooLarge), 400, Side::Client),
        ];
        for (err, status, side) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.side(), side, "{err}");
            assert_eq!(respond(&err).status().as_u16(), status);
        }
    }

    /// The gate lets `per_window` lines through per window and counts the rest.
    #[test]
    fn rate_limit() {
        let gate = RateLimited::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(gate.allow(t0), Some(0));
        assert_eq!(gate.allow(t0), Some(0));
        assert_eq!(gate.allow(t0), None);
        assert_eq!(gate.allow(t0), None);
        assert_eq!(gate.allow(t0 + Duration::from_secs(1)), Some(2));
    }
}
