//! The etcd engine against a private etcd: the engine-independent Store tests
//! (`berth_state::conformance`), plus what only a remote store has (endpoints that do
//! not answer, a restarted etcd, etcd's own limits).
//!
//! Each test starts its own `etcd` (Debian's `etcd-server`) on free loopback ports with
//! a temporary data directory, and kills it by pid when done, also on failure.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_state::conformance::{self, Harness, Subject};
use berth_state::{Etcd, EtcdOptions, Op, StateError, Store, WatchEnd};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private etcd; killed (by pid) and its directory removed on drop.
struct PrivateEtcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client: u16,
    peer: u16,
    name: String,
}

impl PrivateEtcd {
    fn start() -> PrivateEtcd {
        let dir = tempfile::tempdir().unwrap();
        let mut e = PrivateEtcd {
            child: None,
            client: free_port(),
            peer: free_port(),
            name: format!("berth-test-{}-{}", std::process::id(), free_port()),
            dir,
        };
        e.spawn();
        e
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts etcd (again, on the same ports and data) and waits until it answers.
    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client);
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap();
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .arg("--initial-cluster")
            .arg(format!("{}={peer}", self.name))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "the etcd binary is not on PATH: install it with `apt-get install etcd-server` \
                 (make test does)"
            ),
            Err(e) => panic!("cannot start etcd: {e}"),
        };
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if Etcd::connect(&[self.endpoint()], "/probe/").is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("etcd exited with {status}: {}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "etcd did not answer within 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Kills etcd by its pid and reaps it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}

struct EtcdHarness {
    endpoint: String,
    next: std::sync::atomic::AtomicUsize,
}

impl Harness for EtcdHarness {
    fn subject(&self, watch_buffer_events: usize) -> Subject {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let opts = EtcdOptions {
            // small pages, so the large-listing test pages
            page_keys: 100,
            watch_buffer_events,
            ..EtcdOptions::default()
        };
        let store = Arc::new(
            Etcd::connect_with(
                std::slice::from_ref(&self.endpoint),
                &format!("/t{n}/"),
                opts,
            )
            .unwrap(),
        );
        let weak = Arc::downgrade(&store);
        Subject {
            store,
            // berth's "gone at and below rev" is etcd's compaction at rev + 1
            compact: Box::new(move |rev| {
                if let Some(s) = weak.upgrade() {
                    s.compact(rev + 1).unwrap();
                }
            }),
        }
    }
}

/// Every engine-independent Store test passes on etcd, one after another (revisions
/// are global to the etcd, so the tests must not write at the same time).
#[test]
fn conformance_against_a_private_etcd() {
    let etcd = PrivateEtcd::start();
    conformance::run_all(&EtcdHarness {
        endpoint: etcd.endpoint(),
        next: Default::default(),
    });
}

/// An endpoint that refuses connections is skipped for the next one; when none answers
/// the error names the endpoint.
#[test]
fn unreachable_endpoints_are_skipped_and_named() {
    let etcd = PrivateEtcd::start();
    let dead = format!("127.0.0.1:{}", free_port());
    let s = Etcd::connect(&[dead.clone(), etcd.endpoint()], "/berth/").unwrap();
    s.put("k", "v".into()).unwrap();
    assert_eq!(s.get("k").unwrap().value, "v");
    let err = Etcd::connect(std::slice::from_ref(&dead), "/berth/").unwrap_err();
    assert!(
        matches!(&err, StateError::EtcdUnreachable { endpoint, .. } if endpoint == &dead),
        "{err:?}"
    );
    assert!(err.to_string().contains(&dead), "{err}");
    assert!(Etcd::connect(&["https://127.0.0.1:1".into()], "/b/").is_err());
}

/// A store whose reads and watches retry for `retry_for`, a watch on `jobs/`, and the
/// revision of a first put the watch has delivered.
fn watched_store(etcd: &PrivateEtcd, retry_for: Duration) -> (Etcd, berth_state::Watch, u64) {
    let opts = EtcdOptions {
        retry_for,
        ..EtcdOptions::default()
    };
    let s = Etcd::connect_with(&[etcd.endpoint()], "/berth/", opts).unwrap();
    let mut w = s.watch("jobs/", None);
    let r = s.put("jobs/1", "a".into()).unwrap();
    let got = w.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(got.revision, r);
    (s, w, r)
}

/// A watch outlives a restart of etcd: it resumes from the next revision, missing
/// nothing; a write while etcd is down fails with `EtcdUnreachable`; the store's data
/// and revisions are etcd's, so they survive.
#[test]
fn watch_resumes_after_etcd_restarts() {
    let mut etcd = PrivateEtcd::start();
    let (s, mut w, r1) = watched_store(&etcd, Duration::from_secs(20));
    etcd.kill();
    let err = s.put("jobs/2", "b".into()).unwrap_err();
    assert!(matches!(err, StateError::EtcdUnreachable { .. }), "{err:?}");
    etcd.spawn();
    let r2 = s.put("jobs/2", "b".into()).unwrap();
    let e = w
        .recv_timeout(Duration::from_secs(20))
        .expect("the watch resumed")
        .unwrap();
    assert_eq!((e.key.as_str(), e.revision), ("jobs/2", r2));
    assert_eq!(s.get("jobs/1").unwrap().mod_revision, r1);
}

/// A watch whose etcd never comes back ends with `Disconnected` after the retry window,
/// having delivered what it had.
#[test]
fn watch_ends_when_etcd_stays_away() {
    let mut etcd = PrivateEtcd::start();
    let (_s, mut w, r) = watched_store(&etcd, Duration::from_secs(2));
    etcd.kill();
    match w.recv_timeout(Duration::from_secs(30)) {
        Some(Err(WatchEnd::Disconnected { revision, reason })) => {
            assert_eq!(revision, r);
            assert!(reason.contains(&etcd.endpoint()), "{reason}");
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

/// etcd's own limits come back as `EtcdRefused` with its message (here
/// `--max-txn-ops`, 128 by default), not as a conflict.
#[test]
fn etcd_limits_are_refusals() {
    let etcd = PrivateEtcd::start();
    let s = Etcd::connect(&[etcd.endpoint()], "/berth/").unwrap();
    let ops = (0..200)
        .map(|i| Op::Put {
            key: format!("k{i}"),
            value: "v".into(),
        })
        .collect();
    match s.txn(&[], ops) {
        Err(StateError::EtcdRefused {
            status, message, ..
        }) => {
            assert_eq!(status, 400);
            assert!(message.contains("too many operations"), "{message}");
        }
        other => panic!("expected EtcdRefused, got {other:?}"),
    }
    assert!(s.list("").is_empty());
}
