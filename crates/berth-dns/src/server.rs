//! The DNS listener: UDP and TCP (RFC 1035 §4.2, TCP messages with a two-octet length
//! prefix, RFC 7766 §8) over sockets the caller binds, answering from the latest zone
//! of a `watch` channel. Nothing is ever forwarded.

use std::sync::atomic::{AtomicU64, Ordering};
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

/// Serves `udp` and `tcp` until the returned future is dropped (abort its task to
/// stop). Each query is answered from the zone current when it arrives.
pub async fn serve(udp: UdpSocket, tcp: TcpListener, zone: watch::Receiver<Arc<Zone>>) {
    tokio::join!(serve_udp(udp, zone.clone()), serve_tcp(tcp, zone));
}

async fn serve_udp(udp: UdpSocket, zone: watch::Receiver<Arc<Zone>>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match udp.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors surfacing on the socket and the like: keep serving.
                tracing::debug!(error = %e, "dns udp receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let z = zone.borrow().clone();
        if let Some(resp) = respond(&z, &buf[..n], Transport::Udp, seed()) {
            if let Err(e) = udp.send_to(&resp, peer).await {
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
