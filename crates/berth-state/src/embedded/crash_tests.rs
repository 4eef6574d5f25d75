//! Crash tests: a writer in a child process (this test binary, re-executed) is killed
//! with SIGKILL — at random moments, and at each named crash point inside a commit and
//! a compaction — and the store is reopened and checked against a model of what the
//! writer was told had committed.
//!
//! What kill -9 proves: no in-process state (buffers, half-applied maps, a compaction
//! between its steps) is needed to recover. It does not simulate losing the page cache
//! (power loss); `every_cut_of_the_log_opens_to_a_committed_state` covers torn appends.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

const CHILD_ENV: &str = "BERTH_STATE_CRASH_CHILD";
const CHILD_TEST: &str = "embedded::crash_tests::crash_child";
/// Small enough that the writer compacts every couple of dozen transactions.
const CHILD_COMPACT_LOG_BYTES: u64 = 2048;
/// Crash points only fire once the child has opened its store (the open writes a
/// snapshot too, and the points there are tested by the reopen after every kill).
pub(crate) static ARMED: AtomicBool = AtomicBool::new(false);

/// The writer's transaction for revision `r`: deterministic, so the expected state
/// after any revision can be computed. Several keys per transaction (atomicity shows),
/// and deletes (every 7th revision).
fn ops_for(r: Revision) -> Vec<Op> {
    let mut ops = vec![
        Op::Put {
            key: "w/last".into(),
            value: r.to_string(),
        },
        Op::Put {
            key: format!("w/k{}", r % 5),
            value: format!("v{r}-{}", "p".repeat((r % 13) as usize)),
        },
    ];
    if r.is_multiple_of(7) {
        ops.push(Op::Delete {
            key: format!("w/k{}", (r / 7) % 5),
        });
    }
    ops
}

/// The state after revisions 1..=rev of the writer: key → (value, mod_revision).
fn model(rev: Revision) -> BTreeMap<String, (String, Revision)> {
    let mut m = BTreeMap::new();
    for r in 1..=rev {
        for op in ops_for(r) {
            match op {
                Op::Put { key, value } => {
                    m.insert(key, (value, r));
                }
                Op::Delete { key } => {
                    m.remove(&key);
                }
            }
        }
    }
    m
}

/// One writer step on `s`, checked: the store hands out the next revision.
fn step(s: &Embedded) -> Revision {
    let want = s.revision() + 1;
    let got = s
        .txn(&[Compare::at("w/last", want - 1)], ops_for(want))
        .or_else(|e| match e {
            // the very first transaction: no w/last yet
            StateError::Conflict { .. } if want == 1 => {
                s.txn(&[Compare::absent("w/last")], ops_for(want))
            }
            e => Err(e),
        })
        .expect("writer txn");
    assert_eq!(got, want);
    got
}

/// The child: writes forever, printing each revision after `txn` returned. Does
/// nothing unless run by the parent tests below.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let limit: u64 = std::env::var("BERTH_STATE_CRASH_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    let s = Embedded::open_with(
        Path::new(&dir),
        Options {
            compact_log_bytes: CHILD_COMPACT_LOG_BYTES,
            ..Options::default()
        },
    )
    .expect("child opens the store");
    ARMED.store(true, Ordering::SeqCst);
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", s.revision()).unwrap();
    out.flush().unwrap();
    for _ in 0..limit {
        let r = step(&s);
        writeln!(out, "committed {r}").unwrap();
        out.flush().unwrap();
    }
}

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Running {
    /// A failed check must not leave a writer running: stop it by its id.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_writer(dir: &Path, crash_at: Option<&str>, limit: Option<u64>) -> Running {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env_remove("BERTH_STATE_CRASH_AT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(p) = crash_at {
        cmd.env("BERTH_STATE_CRASH_AT", p);
    }
    if let Some(l) = limit {
        cmd.env("BERTH_STATE_CRASH_LIMIT", l.to_string());
    }
    let mut child = cmd.spawn().expect("spawn writer child");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running { child, lines }
}

/// Waits for the child's "ready" line; returns the revision it opened at.
fn wait_ready(r: &Running) -> Revision {
    loop {
        let line = r
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("writer child starts within 30 s");
        // libtest may have printed "test ... " on the same line before it
        if let Some((_, rev)) = line.split_once("ready ") {
            return rev.trim().parse().unwrap();
        }
    }
}

/// The highest revision the child reported as committed (all its output read).
fn last_reported(r: &Running, mut last: Revision) -> Revision {
    while let Ok(line) = r.lines.recv_timeout(Duration::from_secs(5)) {
        if let Some(rev) = line.strip_prefix("committed ") {
            let rev: Revision = rev.parse().unwrap();
            assert_eq!(rev, last + 1, "the child reports contiguous revisions");
            last = rev;
        }
    }
    last
}

/// Reopens the store after a crash and checks it holds exactly the writer's
/// transactions up to `reported` (or one more: the one in flight when it died, whose
/// fsync may have finished), nothing partial; then that it keeps working.
fn check_recovered(dir: &Path, reported: Revision) -> Revision {
    let s = Embedded::open(dir).unwrap_or_else(|e| panic!("reopen after kill: {e}"));
    let rev = s.revision();
    assert!(
        rev == reported || rev == reported + 1,
        "recovered revision {rev}, the writer reported {reported}"
    );
    let got: BTreeMap<String, (String, Revision)> = s
        .list("")
        .into_iter()
        .map(|(k, e)| (k, (e.value, e.mod_revision)))
        .collect();
    assert_eq!(got, model(rev), "state at revision {rev}");
    // still works: the next transaction gets the next revision and is durable
    assert_eq!(step(&s), rev + 1);
    rev + 1
}

/// A simple generator for kill delays, seeded from the clock (printed on failure).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Kill -9 at random moments, 30 times (bounded to 60 s): after each, every revision
/// the writer reported is there, nothing else but the one in flight, nothing partial,
/// revisions contiguous (the model checks every key's mod_revision), and the store
/// accepts the next write.
#[test]
fn survives_kill_at_random_moments() {
    const KILLS: usize = 30;
    const TIME_BOUND: Duration = Duration::from_secs(60);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = XorShift(seed);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut expected_start = 0;
    let mut mid_compaction = 0;
    let mut kills = 0;
    while kills < KILLS && started.elapsed() < TIME_BOUND {
        let mut w = spawn_writer(dir.path(), None, None);
        let opened = wait_ready(&w);
        assert_eq!(opened, expected_start, "seed {seed}");
        std::thread::sleep(Duration::from_micros(rng.next() % 80_000));
        w.child.kill().unwrap(); // SIGKILL
        let status = w.child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "seed {seed}: {status:?}");
        kills += 1;
        if dir.path().join(SNAPSHOT_TMP).exists() {
            mid_compaction += 1;
        }
        let reported = last_reported(&w, opened);
        expected_start = check_recovered(dir.path(), reported);
    }
    eprintln!(
        "{kills} kills in {:?}; {mid_compaction} left a temporary snapshot (killed \
         mid-compaction); final revision {expected_start}",
        started.elapsed()
    );
    assert!(kills >= 10, "only {kills} kills within {TIME_BOUND:?}");
    assert!(expected_start > kills as u64);
}

/// Kill -9 at each named step of a commit and of a compaction (and of the snapshot
/// write inside it): the reopened store holds exactly the committed transactions.
#[test]
fn survives_kill_at_every_crash_point() {
    let points = [
        "txn:before-fsync",
        "txn:after-fsync",
        "snapshot:before-fsync",
        "snapshot:before-rename",
        "snapshot:before-dir-fsync",
        "compact:before-truncate",
        "compact:after-truncate",
    ];
    for point in points {
        let dir = tempfile::tempdir().unwrap();
        let mut start = 0;
        // twice per point: the second run crashes in a store that already recovered once
        for round in 0..2 {
            let mut w = spawn_writer(dir.path(), Some(point), Some(5_000));
            let opened = wait_ready(&w);
            assert_eq!(opened, start);
            let status = w.child.wait().unwrap();
            assert_eq!(
                status.signal(),
                Some(9),
                "{point} round {round}: the child reached the crash point"
            );
            let reported = last_reported(&w, opened);
            start = check_recovered(dir.path(), reported);
        }
    }
}
