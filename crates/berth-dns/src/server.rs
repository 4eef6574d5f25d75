//! The DNS listener: UDP and TCP (RFC 1035 §4.2, TCP messages with a two-octet length
//! prefix, RFC 7766 §8) over sockets the caller binds, answering from the latest zone
//! of a `watch` channel. Nothing is ever forwarded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};

use crate::zone::{respond, Transport, Zone};

/// Concurrent TCP connections served; more wait in the kernel's accept queue.
pub const MAX_TCP_CONNECTIONS: usize = 256;
/// A TCP connection idle this long is closed (RFC 7766 §6.2.3 suggests seconds).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

static SEED: AtomicU64 = AtomicU64::new(0x5EED);

fn seed() -> u64 {
    SEED.fetch_add(0x9E37_79B9, Ordering::Relaxed)
}

/// How often the UDP thread looks whether it should stop.
const UDP_STOP_POLL: Duration = Duration::from_millis(200);

/// Serves `udp` and `tcp` until the returned future is dropped (abort its task to
/// stop). Each query is answered from the zone current when it arrives.
///
/// UDP is served by a thread of its own doing blocking receives: under load a query is
/// one `recvfrom` and one `sendto`, with no readiness polling or task wake-ups between
/// them (what makes a DNS server fast). The thread ends within [`UDP_STOP_POLL`] of the
/// future being dropped, closing the socket.
pub async fn serve(udp: UdpSocket, tcp: TcpListener, zone: watch::Receiver<Arc<Zone>>) {
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let udp = match udp.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "dns udp socket");
            return;
        }
    };
    let (flag, z) = (stop.0.clone(), zone.clone());
    let spawned = std::thread::Builder::new()
        .name("berth-dns-udp".into())
        .spawn(move || serve_udp(udp, z, &flag));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the dns udp thread");
    }
    serve_tcp(tcp, zone).await;
    drop(stop);
}

/// Sets the flag when the serving future is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn serve_udp(udp: std::net::UdpSocket, zone: watch::Receiver<Arc<Zone>>, stop: &AtomicBool) {
    if let Err(e) = udp
        .set_nonblocking(false)
        .and_then(|_| udp.set_read_timeout(Some(UDP_STOP_POLL)))
    {
        tracing::error!(error = %e, "dns udp socket");
        return;
    }
    let mut buf = vec![0u8; 65535];
    while !stop.load(Ordering::Relaxed) {
        let (n, peer) = match udp.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                // ICMP errors surfacing on the socket and the like: keep serving.
                tracing::debug!(error = %e, "dns udp receive failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let z = zone.borrow().clone();
        if let Some(resp) = respond(&z, &buf[..n], Transport::Udp, seed()) {
            if let Err(e) = udp.send_to(&resp, peer) {
                tracing::debug!(%peer, error = %e, "dns udp send failed");
            }
        }
    }
}

async fn serve_tcp(tcp: TcpListener, zone: watch::Receiver<Arc<Zone>>) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match tcp.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "dns tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let zone = zone.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, zone).await {
                tracing::debug!(%peer, error = %e, "dns tcp connection ended");
            }
            drop(permit);
        });
    }
}

async fn connection(mut s: TcpStream, zone: watch::Receiver<Arc<Zone>>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 65535];
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, s.read_exact(&mut len)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        };
        let n = u16::from_be_bytes(len) as usize;
        tokio::time::timeout(TCP_IDLE_TIMEOUT, s.read_exact(&mut buf[..n]))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow query"))??;
        let z = zone.borrow().clone();
        let Some(resp) = respond(&z, &buf[..n], Transport::Tcp, seed()) else {
            continue;
        };
        let mut out = Vec::with_capacity(resp.len() + 2);
        out.extend_from_slice(&(resp.len() as u16).to_be_bytes());
        out.extend_from_slice(&resp);
        s.write_all(&out).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::*;
    use std::net::Ipv4Addr;

    fn query(name: &str) -> Vec<u8> {
        Message::query(7, Name::parse(name).unwrap(), TYPE_A).encode()
    }

    /// Both transports answer from the zone, and a new zone sent on the channel is used
    /// for the next query.
    #[tokio::test]
    async fn udp_and_tcp() {
        let mut z = Zone::new(1);
        z.add_namespace("n", 5);
        z.add_a("a.n", 5, crate::Pick::All, Ipv4Addr::new(10, 1, 2, 3));
        let (tx, rx) = watch::channel(Arc::new(z));
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (ua, ta) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let server = tokio::spawn(serve(udp, tcp, rx));

        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(&query("a.n"), ua).await.unwrap();
        let mut buf = [0u8; 512];
        let n = c.recv(&mut buf).await.unwrap();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(m.answers[0].data, RData::A(Ipv4Addr::new(10, 1, 2, 3)));

        tx.send(Arc::new(Zone::new(2))).unwrap();
        let mut s = TcpStream::connect(ta).await.unwrap();
        let q = query("a.n");
        s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
        s.write_all(&q).await.unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.unwrap();
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await.unwrap();
        assert_eq!(Message::parse(&body).unwrap().rcode, RCODE_REFUSED);
        server.abort();
    }
}
