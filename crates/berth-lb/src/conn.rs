//! One accepted client connection: the HTTP/1.1 fast path ([`crate::h1`]) first;
//! HTTP/2 with prior knowledge and the requests the fast path leaves aside go to
//! hyper's server (HTTP/1 and HTTP/2, upgrades) with every byte read so far
//! replayed. When the listener stops, both paths finish the request in flight and
//! close the connection.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::h1;
use crate::io::IdleIo;
use crate::prefixed::Prefixed;
use crate::proxy::{self, ConnCtx};

/// Serves a client connection until it closes; `stop` turns true when the
/// listener stops.
pub async fn serve(
    stream: TcpStream,
    ctx: Arc<ConnCtx>,
    idle: Duration,
    stop: watch::Receiver<bool>,
) {
    let io = IdleIo::new(stream, idle, ctx.busy.clone());
    if let Some((io, stop)) = h1::Conn::new(ctx.clone(), io, stop).serve().await {
        serve_hyper(ctx, io, stop).await;
    }
}

/// The rest of a connection on hyper's server.
async fn serve_hyper(
    ctx: Arc<ConnCtx>,
    io: Prefixed<IdleIo<TcpStream>>,
    mut stop: watch::Receiver<bool>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let service = service_fn(move |req| proxy::handle(ctx.clone(), req));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
