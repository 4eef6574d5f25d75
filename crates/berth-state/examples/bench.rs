//! Measures the embedded store: commit latency (one fdatasync per transaction), the
//! cost of a compaction for a given amount of live data, and commit latency with
//! watchers attached. Figures go into `docs/state.md`.
//!
//! `cargo run --release -p berth-state --example bench [DIR]` (DIR: where to put the
//! store; default a temporary directory under /tmp, which must be on a real disk for
//! the fsync figures to mean anything).

use std::time::{Duration, Instant};

use berth_state::{Embedded, Options, Store};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn report(what: &str, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "{what}: n={} p50={:?} p99={:?} max={:?}",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().unwrap()
    );
}

fn main() {
    let base = std::env::args().nth(1).map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir_in(base.as_deref().unwrap_or(std::path::Path::new("/tmp")))
        .expect("temporary directory");
    let value = "v".repeat(200);

    // 1. commit latency: 2000 puts of a 200-byte value to 10 keys
    let s = Embedded::open(&tmp.path().join("latency")).unwrap();
    let lat: Vec<_> = (0..2000)
        .map(|i| {
            let t = Instant::now();
            s.put(&format!("k/{}", i % 10), value.clone()).unwrap();
            t.elapsed()
        })
        .collect();
    report("put 200 B (fdatasync each)", lat);

    // 2. the same with 100 watchers on the prefix (not reading: 1000 events stay
    //    under the per-watcher queue bound)
    let watches: Vec<_> = (0..100).map(|_| s.watch("k/", None)).collect();
    let lat: Vec<_> = (0..1000)
        .map(|i| {
            let t = Instant::now();
            s.put(&format!("k/{}", i % 10), value.clone()).unwrap();
            t.elapsed()
        })
        .collect();
    report("put 200 B with 100 watchers", lat);
    drop(watches);
    drop(s);

    // 3. compaction: live data of 10,000 keys x 1 KiB (~10 MiB snapshot)
    for keys in [1_000usize, 10_000, 50_000] {
        let dir = tmp.path().join(format!("compact-{keys}"));
        let s = Embedded::open_with(&dir, Options::default()).unwrap();
        let kib = "x".repeat(1024);
        for chunk in (0..keys).collect::<Vec<_>>().chunks(500) {
            let ops = chunk
                .iter()
                .map(|i| berth_state::Op::Put {
                    key: format!("task/{i:08}"),
                    value: kib.clone(),
                })
                .collect();
            s.txn(&[], ops).unwrap();
        }
        drop(s);
        // an open folds the log into a snapshot: the same work as a compaction plus
        // reading the log back
        let t = Instant::now();
        let s = Embedded::open(&dir).unwrap();
        let open = t.elapsed();
        let snap = std::fs::metadata(dir.join("snapshot.json")).unwrap().len();
        // a compaction inside a commit: force one with a tiny log bound
        drop(s);
        let s = Embedded::open_with(
            &dir,
            Options {
                compact_log_bytes: 1,
                ..Options::default()
            },
        )
        .unwrap();
        // the bound is max(compact_log_bytes, snapshot size): write past the snapshot
        let mut worst = Duration::ZERO;
        let mut written = 0u64;
        while written <= snap + 2048 {
            let t = Instant::now();
            s.put("hot", kib.clone()).unwrap();
            worst = worst.max(t.elapsed());
            written += 1100;
        }
        println!(
            "live {keys} keys x 1 KiB (snapshot {:.1} MiB): open {open:?}, commit that compacts {worst:?}",
            snap as f64 / (1024.0 * 1024.0)
        );
    }
}
