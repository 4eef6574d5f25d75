//! Userland proxies for host port mappings, after Docker's `docker-proxy`: a process per
//! mapping accepts on the host port and opens its own connection to the task, so no NAT
//! rule is needed and nothing is routed (docs/net.md says why berth wants that).
//!
//! I/O is bound at the top: the caller hands in the bound listener or socket (so it can
//! choose the address, pass a socket inherited across an agent restart, or a test's
//! loopback socket) and a `shutdown` future.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// How long a TCP connection to the task may take to establish.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Docker's UDP proxy forgets a client after 90 s without traffic (`UDPConnTrackTimeout`).
pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most UDP clients tracked at once; datagrams from further new clients are dropped.
pub const MAX_UDP_FLOWS: usize = 1024;
/// Datagrams queued per UDP client towards the task before further ones are dropped.
pub const UDP_FLOW_QUEUE: usize = 64;
/// Largest UDP payload over IPv4 (65535 − 20 IP − 8 UDP header bytes).
const MAX_DATAGRAM: usize = 65507;

/// At most one warning per second for events clients can cause (STYLE: rate-limited logs).
struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    const INTERVAL: Duration = Duration::from_secs(1);

    fn new() -> Self {
        Self {
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` with the number of suppressed events since the last log, if one may log now.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Self::INTERVAL)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Forwards every connection accepted on `listener` to `target` until `shutdown` resolves,
/// then stops accepting and drops the connections in flight.
///
/// Each connection copies both ways with `copy_bidirectional`; when one side finishes
/// sending, the proxy shuts down writing towards the other side (a half-close), so
/// request/response protocols that signal the end of a request with `shutdown(SHUT_WR)`
/// work through it.
pub async fn run_tcp_proxy(
    listener: TcpListener,
    target: SocketAddr,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut conns = JoinSet::new();
    let mut accept_log = LogLimiter::new();
    let conn_log = Arc::new(std::sync::Mutex::new(LogLimiter::new()));
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((inbound, peer)) => {
                    conns.spawn(tcp_connection(inbound, peer, target, conn_log.clone()));
                }
                Err(error) => {
                    if let Some(suppressed) = accept_log.allow() {
                        tracing::warn!(%error, suppressed, "accept failed");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    conns.shutdown().await;
}

async fn tcp_connection(
    mut inbound: TcpStream,
    peer: SocketAddr,
    target: SocketAddr,
    log: Arc<std::sync::Mutex<LogLimiter>>,
) {
    let result = async {
        let mut outbound = tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(target))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        // Small writes pass straight through, as they would without the proxy.
        inbound.set_nodelay(true)?;
        outbound.set_nodelay(true)?;
        tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await
    }
    .await;
    match result {
        Ok((up, down)) => tracing::trace!(%peer, %target, up, down, "connection done"),
        Err(error) => {
            let allowed = log.lock().map(|mut l| l.allow()).unwrap_or(None);
            if let Some(suppressed) = allowed {
                tracing::debug!(%peer, %target, %error, suppressed, "connection failed");
            }
        }
    }
}

/// Forwards datagrams arriving on `socket` to `target` until `shutdown` resolves.
///
/// Each client address gets its own socket connected to `target`, so the task sees one
/// peer per client and its replies go back to the right client (from `socket`'s address).
/// A client's socket is closed after `idle_timeout` without traffic either way.
pub async fn run_udp_proxy(
    socket: UdpSocket,
    target: SocketAddr,
    idle_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let socket = Arc::new(socket);
    let mut flows: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<SocketAddr>();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut log = LogLimiter::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            Some(client) = done_rx.recv() => {
                // A new flow for the same client may already have replaced the ended one.
                if flows.get(&client).is_some_and(|tx| tx.is_closed()) {
                    flows.remove(&client);
                }
            }
            received = socket.recv_from(&mut buf) => {
                let (n, client) = match received {
                    Ok(r) => r,
                    Err(error) => {
                        if let Some(suppressed) = log.allow() {
                            tracing::warn!(%error, suppressed, "udp receive failed");
                        }
                        continue;
                    }
                };
                let tx = match flows.get(&client) {
                    Some(tx) if !tx.is_closed() => tx.clone(),
                    _ => {
                        flows.remove(&client);
                        if flows.len() >= MAX_UDP_FLOWS {
                            if let Some(suppressed) = log.allow() {
                                tracing::warn!(%client, suppressed, "too many udp clients; datagram dropped");
                            }
                            continue;
                        }
                        let upstream = match connect_udp(target).await {
                            Ok(u) => u,
                            Err(error) => {
                                if let Some(suppressed) = log.allow() {
                                    tracing::warn!(%target, %error, suppressed, "udp upstream socket failed");
                                }
                                continue;
                            }
                        };
                        let (tx, rx) = mpsc::channel(UDP_FLOW_QUEUE);
                        tasks.spawn(udp_flow(socket.clone(), upstream, client, rx, idle_timeout, done_tx.clone()));
                        flows.insert(client, tx.clone());
                        tx
                    }
                };
                // A full queue drops the datagram, as a congested link would.
                let _ = tx.try_send(buf[..n].to_vec());
            }
        }
    }
    tasks.shutdown().await;
}

async fn connect_udp(target: SocketAddr) -> io::Result<UdpSocket> {
    let any: IpAddr = match target {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = UdpSocket::bind((any, 0)).await?;
    sock.connect(target).await?;
    Ok(sock)
}

async fn udp_flow(
    listener: Arc<UdpSocket>,
    upstream: UdpSocket,
    client: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    idle_timeout: Duration,
    done: mpsc::UnboundedSender<SocketAddr>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        // A fresh timer each turn: any datagram either way restarts the idle period.
        tokio::select! {
            packet = rx.recv() => match packet {
                Some(p) => { let _ = upstream.send(&p).await; }
                None => break,
            },
            received = upstream.recv(&mut buf) => {
                // Errors here are ICMP reports (port unreachable) on the connected socket;
                // the client may retry, so the flow stays.
                if let Ok(n) = received {
                    let _ = listener.send_to(&buf[..n], client).await;
                }
            }
            () = tokio::time::sleep(idle_timeout) => break,
        }
    }
    // Close the queue before telling the loop, so it sees this flow as ended.
    drop(rx);
    let _ = done.send(client);
}

#[cfg(test)]
mod tests;
