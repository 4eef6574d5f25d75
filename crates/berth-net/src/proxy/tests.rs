//! Loopback-only tests of the proxies: the far end is a listener in this process.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// A server that reads to EOF, then answers `pong:` + what it read and closes.
async fn pong_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut data = Vec::new();
                s.read_to_end(&mut data).await.unwrap();
                s.write_all(b"pong:").await.unwrap();
                s.write_all(&data).await.unwrap();
            });
        }
    });
    addr
}

async fn start_tcp(
    target: SocketAddr,
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let h = tokio::spawn(run_tcp_proxy(l, target, async {
        let _ = rx.await;
    }));
    (addr, tx, h)
}

/// Bytes go both ways and the client's half-close reaches the server, whose close then
/// reaches the client; several connections work side by side.
#[tokio::test]
async fn tcp_forwards_with_half_close() {
    let (proxy, stop, handle) = start_tcp(pong_server().await).await;
    let mut clients = Vec::new();
    for i in 0..8u8 {
        clients.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(proxy).await.unwrap();
            let payload = vec![i; 100_000];
            c.write_all(&payload).await.unwrap();
            c.shutdown().await.unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).await.unwrap();
            assert_eq!(&got[..5], b"pong:");
            assert_eq!(&got[5..], &payload[..]);
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    stop.send(()).unwrap();
    handle.await.unwrap();
    // Stopped: the port no longer accepts.
    assert!(TcpStream::connect(proxy).await.is_err());
}

/// A target that refuses connections closes the client's connection; the proxy keeps going.
#[tokio::test]
async fn tcp_target_down() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let (proxy, stop, handle) = start_tcp(dead).await;
    for _ in 0..2 {
        let mut c = TcpStream::connect(proxy).await.unwrap();
        let mut buf = Vec::new();
        let n = c.read_to_end(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
    }
    stop.send(()).unwrap();
    handle.await.unwrap();
}

/// An echo server that prefixes each reply with the port it saw the datagram come from.
async fn udp_echo() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = s.recv_from(&mut buf).await.unwrap();
            let mut reply = format!("{}:", from.port()).into_bytes();
            reply.extend_from_slice(&buf[..n]);
            s.send_to(&reply, from).await.unwrap();
        }
    });
    addr
}

async fn recv_str(s: &UdpSocket) -> String {
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf))
        .await
        .expect("reply in time")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Each client gets its own upstream socket (the server sees distinct source ports), replies
/// return to the right client, a client keeps its socket while active, and after the idle
/// timeout a new socket is used.
#[tokio::test]
async fn udp_per_client_sockets_and_idle_timeout() {
    let target = udp_echo().await;
    let listen = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let proxy = listen.local_addr().unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let idle = Duration::from_millis(300);
    let handle = tokio::spawn(run_udp_proxy(listen, target, idle, async {
        let _ = rx.await;
    }));

    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    a.connect(proxy).await.unwrap();
    b.connect(proxy).await.unwrap();
    a.send(b"one").await.unwrap();
    let ra = recv_str(&a).await;
    b.send(b"two").await.unwrap();
    let rb = recv_str(&b).await;
    let (pa, msg_a) = ra.split_once(':').unwrap();
    let (pb, msg_b) = rb.split_once(':').unwrap();
    assert_eq!((msg_a, msg_b), ("one", "two"));
    assert_ne!(pa, pb, "each client has its own upstream socket");

    a.send(b"again").await.unwrap();
    let again = recv_str(&a).await;
    assert_eq!(again, format!("{pa}:again"), "same flow while active");

    tokio::time::sleep(idle * 3).await;
    a.send(b"later").await.unwrap();
    let later = recv_str(&a).await;
    let (pl, msg) = later.split_once(':').unwrap();
    assert_eq!(msg, "later");
    assert_ne!(pl, pa, "the idle flow was closed and a new one made");

    stop.send(()).unwrap();
    handle.await.unwrap();
}

/// The log limiter lets one event a second through and counts the rest.
#[test]
fn log_limiter() {
    let mut l = LogLimiter::new();
    assert_eq!(l.allow(), Some(0));
    assert_eq!(l.allow(), None);
    assert_eq!(l.allow(), None);
    l.last = Some(Instant::now() - Duration::from_secs(2));
    assert_eq!(l.allow(), Some(2));
}
