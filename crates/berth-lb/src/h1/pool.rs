//! Keep-alive connections to targets, by target address, for the HTTP/1 fast path:
//! a connection goes back after a complete exchange the target did not close, and
//! the next request to that address takes the most recently used one (the one
//! least likely to have been closed by the target's own idle timeout). Entries
//! older than the pool's age limit are dropped; each address keeps at most
//! `max_idle`. The pool outlives configuration snapshots: an `apply` that keeps a
//! target keeps its connections, and one that removes it drops them.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::io::IdleIo;

/// A connection to a target; its idle timeout is the listener's target timeout.
pub type Upstream = IdleIo<TcpStream>;

struct Idle {
    conn: Upstream,
    since: Instant,
}

/// Idle connections to targets.
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, VecDeque<Idle>>>,
    max_idle: usize,
    max_age: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("max_idle", &self.max_idle)
            .field("max_age", &self.max_age)
            .finish()
    }
}

impl Pool {
    /// At most `max_idle` connections per address, none kept longer than `max_age`.
    pub fn new(max_idle: usize, max_age: Duration) -> Pool {
        Pool {
            idle: Mutex::new(HashMap::new()),
            max_idle,
            max_age,
        }
    }

    /// The most recently returned connection to `addr` that is not too old.
    pub fn take(&self, addr: SocketAddr) -> Option<Upstream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&addr)?;
        let entry = list.pop_back()?;
        if entry.since.elapsed() < self.max_age {
            return Some(entry.conn);
        }
        // The newest is too old: so are the rest.
        list.clear();
        None
    }

    /// Gives back a connection after a complete exchange.
    pub fn put(&self, addr: SocketAddr, conn: Upstream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        list.push_back(Idle {
            conn,
            since: Instant::now(),
        });
        while list.len() > self.max_idle
            || list
                .front()
                .is_some_and(|e| e.since.elapsed() >= self.max_age)
        {
            list.pop_front();
        }
    }

    /// Drops the connections to addresses `keep` says no to.
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|addr, _| keep(addr));
    }

    /// How many idle connections to `addr` there are.
    pub fn idle(&self, addr: SocketAddr) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.get(&addr).map_or(0, VecDeque::len)
    }
}

/// A new connection to a target, within `connect_timeout`.
pub async fn connect(
    addr: SocketAddr,
    connect_timeout: Duration,
    idle: Duration,
) -> io::Result<Upstream> {
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(IdleIo::new(stream, idle, Arc::new(AtomicUsize::new(0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(listener: &tokio::net::TcpListener) -> Upstream {
        let addr = listener.local_addr().unwrap();
        connect(addr, Duration::from_secs(1), Duration::from_secs(60))
            .await
            .unwrap()
    }

    /// The pool hands back the newest connection first, keeps at most `max_idle`
    /// per address, and forgets addresses `retain` drops.
    #[tokio::test]
    async fn newest_first_bounded() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::new(2, Duration::from_secs(60));
        assert!(pool.take(addr).is_none());
        let mut ports = Vec::new();
        for _ in 0..3 {
            let c = pair(&listener).await;
            ports.push(c.get_ref().local_addr().unwrap().port());
            pool.put(addr, c);
        }
        assert_eq!(pool.idle(addr), 2);
        let newest = pool.take(addr).unwrap();
        assert_eq!(newest.get_ref().local_addr().unwrap().port(), ports[2]);
        pool.retain(|a| *a != addr);
        assert!(pool.take(addr).is_none());
    }

    /// Connections older than the age limit are not handed out.
    #[tokio::test]
    async fn too_old_is_dropped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::new(8, Duration::ZERO);
        pool.put(addr, pair(&listener).await);
        assert!(pool.take(addr).is_none());
    }
}
