//! Snapshots: unpacked once, verified before they get their name, safe to share.

use std::fs;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;
use crate::testutil::{gzip, sha256, Layer};

type Opened = Result<Box<dyn Read>, std::io::Error>;

fn layer() -> (Vec<u8>, String) {
    let tar = Layer::new()
        .dir("etc/")
        .file("etc/os-release", b"ID=berth\n")
        .tar();
    let id = sha256(&tar);
    (gzip(&tar), id)
}

fn never() -> Opened {
    panic!("the layer must not be read again")
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// A layer is unpacked once under its diff_id hex; a second ensure does not read it.
#[test]
fn ensure_unpacks_once() {
    let tmp = tempfile::tempdir().unwrap();
    let snaps = Snapshots::open(tmp.path().join("snap")).unwrap();
    let (blob, id) = layer();
    let p = snaps
        .ensure(&id, || {
            Ok::<_, std::io::Error>(Box::new(std::io::Cursor::new(blob)) as Box<dyn Read>)
        })
        .unwrap();
    assert_eq!(p, snaps.dir().join(&id[7..]));
    assert_eq!(fs::read(p.join("etc/os-release")).unwrap(), b"ID=berth\n");
    assert_eq!(snaps.ensure(&id, never).unwrap(), p);
    assert_eq!(snaps.get(&id).unwrap(), Some(p));
    assert_eq!(snaps.list().unwrap(), vec![id]);
}

/// Content whose diff_id differs from the one asked for is removed, not kept.
#[test]
fn ensure_rejects_diff_id_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let snaps = Snapshots::open(tmp.path()).unwrap();
    let (blob, actual) = layer();
    let asked = format!("sha256:{}", "0".repeat(64));
    let err = snaps
        .ensure(&asked, || {
            Ok::<_, std::io::Error>(Box::new(std::io::Cursor::new(blob)) as Box<dyn Read>)
        })
        .unwrap_err();
    assert!(
        matches!(&err, SnapshotError::DiffIdMismatch { expected, actual: a } if *expected == asked && *a == actual),
        "{err}"
    );
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
}

/// A layer that fails to unpack leaves nothing behind.
#[test]
fn ensure_cleans_up_failed_unpack() {
    let tmp = tempfile::tempdir().unwrap();
    let snaps = Snapshots::open(tmp.path()).unwrap();
    let tar = Layer::new().file("ok", b"").file("../escape", b"").tar();
    let id = sha256(&tar);
    let err = snaps
        .ensure(&id, || {
            Ok::<_, std::io::Error>(Box::new(std::io::Cursor::new(tar)) as Box<dyn Read>)
        })
        .unwrap_err();
    assert!(matches!(err, SnapshotError::Unpack { .. }), "{err}");
    assert!(names(tmp.path()).is_empty());
}

/// Diff ids that are not sha256 hex are refused before touching the filesystem.
#[test]
fn bad_diff_ids_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let snaps = Snapshots::open(tmp.path()).unwrap();
    for bad in ["sha256:../../etc", "sha512:00", "", "sha256:ABC"] {
        assert!(
            matches!(snaps.ensure(bad, never), Err(SnapshotError::BadDiffId(_))),
            "{bad}"
        );
    }
}

/// Concurrent ensures of one layer read it once and all get the same directory.
#[test]
fn concurrent_ensures_unpack_once() {
    let tmp = tempfile::tempdir().unwrap();
    let snaps = Arc::new(Snapshots::open(tmp.path()).unwrap());
    let (blob, id) = layer();
    let opens = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (snaps, blob, id, opens) = (snaps.clone(), blob.clone(), id.clone(), opens.clone());
            std::thread::spawn(move || {
                snaps
                    .ensure(&id, || {
                        opens.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Ok::<_, std::io::Error>(
                            Box::new(std::io::Cursor::new(blob)) as Box<dyn Read>
                        )
                    })
                    .unwrap()
            })
        })
        .collect();
    let paths: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(opens.load(Ordering::SeqCst), 1);
    assert!(paths.iter().all(|p| *p == paths[0]));
    assert_eq!(names(tmp.path()), vec![id[7..].to_string()]);
}

/// Opening removes temp dirs left by other processes and keeps this process's own.
#[test]
fn open_removes_stale_temp_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let hex = "a".repeat(64);
    let stale = tmp.path().join(format!("{hex}.tmp-4194305-00ff"));
    let ours = tmp
        .path()
        .join(format!("{hex}.tmp-{}-00ff", std::process::id()));
    fs::create_dir_all(stale.join("usr/bin")).unwrap();
    fs::create_dir(&ours).unwrap();
    Snapshots::open(tmp.path()).unwrap();
    assert!(!stale.exists());
    assert!(ours.exists());
}

/// Removing a snapshot deletes its tree (including read-only directories).
#[test]
fn remove_deletes_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let snaps = Snapshots::open(tmp.path()).unwrap();
    let tar = Layer::new()
        .raw(
            tar::EntryType::Directory,
            b"ro/",
            None,
            crate::testutil::Attr {
                mode: 0o555,
                ..Default::default()
            },
            b"",
        )
        .file("ro/f", b"")
        .tar();
    let id = sha256(&tar);
    snaps
        .ensure(&id, || {
            Ok::<_, std::io::Error>(Box::new(std::io::Cursor::new(tar)) as Box<dyn Read>)
        })
        .unwrap();
    assert!(snaps.remove(&id).unwrap());
    assert!(!snaps.remove(&id).unwrap());
    assert!(snaps.list().unwrap().is_empty());
    assert!(names(tmp.path()).is_empty());
}
