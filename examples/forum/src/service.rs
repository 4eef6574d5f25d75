//! What every forum program does at start: `PROGRAM health` checks the running
//! service (the container health check: `["CMD", "/users", "health"]`), otherwise
//! it listens on `PORT` (8080) and serves until SIGTERM or SIGINT.

use std::net::TcpListener;
use std::sync::Arc;

use crate::http::{self, Request, Response};

/// The port every forum service listens on unless `PORT` says otherwise.
pub const DEFAULT_PORT: u16 = 8080;

/// `VERSION` from the environment (the image's tag in the demo), `v1` if unset;
/// every response carries it in `X-Forum-Version`.
pub fn version() -> String {
    std::env::var("VERSION").unwrap_or_else(|_| "v1".into())
}

fn port() -> u16 {
    std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(DEFAULT_PORT)
}

/// An environment variable the service cannot start without.
pub fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => {
            eprintln!("{name} is not set: it names the host:port of a service this one needs");
            std::process::exit(2);
        }
    }
}

/// The health answer every service gives at `GET /health`.
pub fn health(name: &str) -> Response {
    Response::json(
        200,
        serde_json::json!({"service": name, "status": "ok", "version": version()}),
    )
}

/// Runs service `name`: the health check subcommand, or the server with the handler
/// `make` builds (after the health check, which needs no configuration).
pub fn run<H>(name: &str, make: impl FnOnce() -> H)
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    if std::env::args().nth(1).as_deref() == Some("health") {
        let code = match http::request(&format!("127.0.0.1:{}", port()), "GET", "/health", None) {
            Ok((200, _)) => 0,
            Ok((status, _)) => {
                eprintln!("{name}: /health answered {status}");
                1
            }
            Err(e) => {
                eprintln!("{name}: /health: {e}");
                1
            }
        };
        std::process::exit(code);
    }
    let handler = make();
    match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    eprintln!("signal {sig}: stopping");
                    std::process::exit(0);
                }
            });
        }
        Err(e) => eprintln!("cannot handle signals: {e}"),
    }
    let listener = match TcpListener::bind(("0.0.0.0", port())) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{name}: cannot listen on port {}: {e}", port());
            std::process::exit(1);
        }
    };
    eprintln!("{name} {} listening on port {}", version(), port());
    http::serve(listener, Arc::new(handler));
}
