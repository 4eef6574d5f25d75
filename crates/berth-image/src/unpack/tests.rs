//! The unpacker against a hostile layer corpus and the layers real builders make.
//! These run as root (mknod, chown, trusted.* xattrs need it).

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use proptest::prelude::*;
use tar::EntryType;

use super::*;
use crate::testutil::{exists, gzip, sha256, zstd, Attr, Layer, Sandbox};

fn unpack(sb: &Sandbox, tar: &[u8]) -> Result<UnpackStats, UnpackError> {
    unpack_layer(tar, &sb.dest, &Limits::default())
}

fn small_limits() -> Limits {
    Limits {
        max_uncompressed_bytes: 1024 * 1024,
        max_entries: 10,
        max_path_bytes: 200,
        max_pax_header_bytes: 4096,
    }
}

fn xattr(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

// ---- hostile layers ----

/// `../../../x` is refused and nothing appears above dest.
#[test]
fn dotdot_path_is_refused() {
    let sb = Sandbox::new();
    let tar = Layer::new().file("../../../x", b"pwned").tar();
    let err = unpack(&sb, &tar).unwrap_err();
    assert!(
        matches!(&err, UnpackError::UnsafePath { path, problem: PathProblem::DotDot } if path == "../../../x"),
        "{err}"
    );
    assert_eq!(err.to_string(), "entry \"../../../x\" has a `..` component");
    sb.assert_contained();
}

/// `..` hidden in a PAX `path` record or a GNU long name is refused too.
#[test]
fn dotdot_in_pax_and_gnu_long_names_is_refused() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .pax(&[("path", b"../../../pax")])
        .file("benign", b"pwned")
        .tar();
    assert!(matches!(
        unpack(&sb, &tar),
        Err(UnpackError::UnsafePath { .. })
    ));
    // A GNU long-name (`L`) record carrying `..`, as GNU tar writes names over 100 bytes.
    let long = format!("{}/../../../../../gnu", "d".repeat(120));
    let mut l = Layer::new();
    l.raw(
        EntryType::new(b'L'),
        b"././@LongLink",
        None,
        Attr::default(),
        format!("{long}\0").as_bytes(),
    );
    l.file("benign", b"pwned");
    assert!(matches!(
        unpack(&sb, &l.tar()),
        Err(UnpackError::UnsafePath { .. })
    ));
    sb.assert_contained();
}

/// An absolute name lands under dest (the leading `/` is dropped), even one that
/// spells the sandbox's own absolute path.
#[test]
fn absolute_paths_land_inside() {
    let sb = Sandbox::new();
    let own = format!("/{}/sentinel", sb.parent_rel());
    let tar = Layer::new().file("/abs/path", b"1").file(&own, b"2").tar();
    unpack(&sb, &tar).unwrap();
    assert_eq!(fs::read(sb.path("abs/path")).unwrap(), b"1");
    assert_eq!(
        fs::read(sb.path(&format!("{}/sentinel", sb.parent_rel()))).unwrap(),
        b"2"
    );
    sb.assert_contained();
}

/// `evil -> /` then `evil/<sandbox>/sentinel`: the symlink is resolved as if dest
/// were `/`, so the write lands inside dest and the real sentinel is untouched.
#[test]
fn symlink_to_root_then_write_through_it_stays_inside() {
    let sb = Sandbox::new();
    let through = format!("evil/{}/sentinel", sb.parent_rel());
    let tar = Layer::new()
        .symlink("evil", "/")
        .file(&through, b"pwned")
        .tar();
    unpack(&sb, &tar).unwrap();
    assert_eq!(fs::read_link(sb.path("evil")).unwrap().to_str(), Some("/"));
    assert_eq!(
        fs::read(sb.path(&format!("{}/sentinel", sb.parent_rel()))).unwrap(),
        b"pwned"
    );
    sb.assert_contained();
}

/// `evil -> ../../../..` then `evil/sentinel` and `evil/outside/file`: the `..` in
/// the target is clamped at dest.
#[test]
fn symlink_dotdot_then_write_through_it_stays_inside() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .symlink("evil", "../../../..")
        .file("evil/sentinel", b"pwned")
        .dir("evil/outside/")
        .file("evil/outside/file", b"pwned")
        .tar();
    unpack(&sb, &tar).unwrap();
    assert_eq!(fs::read(sb.path("sentinel")).unwrap(), b"pwned");
    assert_eq!(fs::read(sb.path("outside/file")).unwrap(), b"pwned");
    sb.assert_contained();
}

/// A symlinked parent directory (`d -> <sandbox abs>/outside`) with entries below it:
/// they land in dest's own `<sandbox>/outside`, never in the real one. A parent that
/// is a dangling symlink is an error, also contained.
#[test]
fn symlinked_parent_directory_stays_inside() {
    let sb = Sandbox::new();
    let target = format!("/{}/outside", sb.parent_rel());
    let tar = Layer::new()
        .dir(&format!("{target}/"))
        .symlink("d", &target)
        .dir("d/sub/")
        .file("d/file", b"pwned")
        .tar();
    unpack(&sb, &tar).unwrap();
    let inner = sb.path(&format!("{}/outside", sb.parent_rel()));
    assert_eq!(fs::read(inner.join("file")).unwrap(), b"pwned");
    assert!(inner.join("sub").is_dir());
    sb.assert_contained();

    let sb = Sandbox::new();
    let tar = Layer::new()
        .symlink("d", &target)
        .file("d/file", b"pwned")
        .tar();
    let err = unpack(&sb, &tar).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Fs {
                step: "opening the parent directory of",
                ..
            }
        ),
        "{err}"
    );
    sb.assert_contained();
}

/// A directory entry over an existing symlink replaces the link (it does not chmod or
/// fill the link's target), and later entries go into the new directory.
#[test]
fn dir_entry_replaces_symlink() {
    let sb = Sandbox::new();
    let target = format!("/{}/outside", sb.parent_rel());
    let mut l = Layer::new();
    l.symlink("evil", &target);
    l.raw(
        EntryType::Directory,
        b"evil/",
        None,
        Attr {
            mode: 0o777,
            ..Attr::default()
        },
        b"",
    );
    l.file("evil/file", b"pwned");
    unpack(&sb, &l.tar()).unwrap();
    let m = fs::symlink_metadata(sb.path("evil")).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.mode() & 0o7777, 0o777);
    assert_eq!(fs::read(sb.path("evil/file")).unwrap(), b"pwned");
    sb.assert_contained();
}

/// A file entry over a symlink to a file outside replaces the link; the outside file
/// keeps its content.
#[test]
fn file_entry_replaces_symlink() {
    let sb = Sandbox::new();
    let target = sb.parent.path().join("sentinel");
    let tar = Layer::new()
        .symlink("evil", target.to_str().unwrap())
        .file("evil", b"pwned")
        .tar();
    unpack(&sb, &tar).unwrap();
    assert!(fs::symlink_metadata(sb.path("evil")).unwrap().is_file());
    sb.assert_contained();
}

/// Hard links to host files (`/etc/passwd`, `../outside`, through an escaping symlink)
/// are refused; the host file gains no link.
#[test]
fn hard_links_out_are_refused() {
    let nlink = fs::metadata("/etc/passwd").unwrap().nlink();
    for (setup, target) in [
        (None, "/etc/passwd"),
        (None, "../../../sentinel"),
        (None, "../../../outside/file"),
        (Some(("esc", "/etc")), "esc/passwd"),
        (Some(("esc", "../../../outside")), "esc/file"),
    ] {
        let sb = Sandbox::new();
        let mut l = Layer::new();
        if let Some((name, to)) = setup {
            l.symlink(name, to);
        }
        l.hardlink("h", target);
        let err = unpack(&sb, &l.tar()).unwrap_err();
        assert!(
            matches!(err, UnpackError::HardLink { .. }),
            "{target}: {err}"
        );
        assert!(!exists(&sb.path("h")), "{target}");
        sb.assert_contained();
    }
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), nlink);
}

/// Hard links must name a regular file: not a symlink, directory or fifo.
#[test]
fn hard_links_to_non_regular_files_are_refused() {
    for (kind, name) in [
        (EntryType::Symlink, "s"),
        (EntryType::Directory, "d"),
        (EntryType::Fifo, "f"),
    ] {
        let sb = Sandbox::new();
        let mut l = Layer::new();
        l.raw(
            kind,
            name.as_bytes(),
            Some(b"/etc/passwd"),
            Attr::default(),
            b"",
        );
        l.hardlink("h", name);
        let err = unpack(&sb, &l.tar()).unwrap_err();
        assert!(
            matches!(&err, UnpackError::HardLink { problem, .. } if problem == "is not a regular file"),
            "{name}: {err}"
        );
        sb.assert_contained();
    }
}

/// A hard link may only name a file this layer created, not one already in dest.
#[test]
fn hard_link_to_file_not_from_this_layer_is_refused() {
    let sb = Sandbox::new();
    fs::write(sb.path("planted"), b"x").unwrap();
    let tar = Layer::new().hardlink("h", "planted").tar();
    let err = unpack(&sb, &tar).unwrap_err();
    assert!(
        matches!(&err, UnpackError::HardLink { problem, .. } if problem == "was not created by this layer"),
        "{err}"
    );
}

/// Character and block devices are refused with a clear error.
#[test]
fn device_nodes_are_refused() {
    for (kind, word) in [
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
    ] {
        let sb = Sandbox::new();
        let mut l = Layer::new();
        l.raw(kind, b"dev/sda", None, Attr::default(), b"");
        let err = unpack(&sb, &l.tar()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("entry \"dev/sda\": {word} entries are not allowed in layers")
        );
        assert!(!exists(&sb.path("dev/sda")));
        sb.assert_contained();
    }
}

/// A gzip bomb (16 MiB of zeros in a few KiB) stops at the byte limit.
#[test]
fn gzip_bomb_is_bounded() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .file("zeros", &vec![0u8; 16 * 1024 * 1024])
        .tar();
    let bomb = gzip(&tar);
    assert!(bomb.len() < 100 * 1024);
    let err = unpack_layer(&bomb[..], &sb.dest, &small_limits()).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Limit {
                limit: Limit::UncompressedBytes,
                max: 1048576
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "layer exceeds the max uncompressed bytes limit (1048576)"
    );
    sb.assert_contained();
}

/// More entries than the limit is an error naming the limit.
#[test]
fn too_many_entries_is_bounded() {
    let sb = Sandbox::new();
    let mut l = Layer::new();
    for i in 0..11 {
        l.file(&format!("f{i}"), b"");
    }
    let err = unpack_layer(&l.tar()[..], &sb.dest, &small_limits()).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Limit {
                limit: Limit::Entries,
                ..
            }
        ),
        "{err}"
    );
}

/// Over-long paths and PAX headers are refused before they are used or buffered.
#[test]
fn long_paths_and_pax_headers_are_bounded() {
    let sb = Sandbox::new();
    let long = "d/".repeat(150);
    let tar = Layer::new().file(&long, b"").tar();
    let err = unpack_layer(&tar[..], &sb.dest, &small_limits()).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Limit {
                limit: Limit::PathBytes,
                ..
            }
        ),
        "{err}"
    );
    let big = vec![b'x'; 8192];
    let tar = Layer::new().pax(&[("comment", &big)]).file("f", b"").tar();
    let err = unpack_layer(&tar[..], &sb.dest, &small_limits()).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Limit {
                limit: Limit::PaxHeaderBytes,
                ..
            }
        ),
        "{err}"
    );
}

/// `trusted.overlay.*` (and `user.overlay.*`) xattrs from the tar are dropped, so a
/// layer cannot forge an opaque directory or a redirect; other xattrs are applied.
#[test]
fn forged_overlay_xattrs_are_dropped() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .pax(&[
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.user.overlay.redirect", b"/etc"),
            ("SCHILY.xattr.user.keep", b"1"),
        ])
        .dir("d/")
        .pax(&[("SCHILY.xattr.trusted.overlay.redirect", b"/etc")])
        .file("d/f", b"")
        .tar();
    let stats = unpack(&sb, &tar).unwrap();
    assert_eq!(stats.overlay_xattrs_dropped, 3);
    assert_eq!(xattr(&sb.path("d"), "trusted.overlay.opaque"), None);
    assert_eq!(xattr(&sb.path("d"), "user.overlay.redirect"), None);
    assert_eq!(xattr(&sb.path("d/f"), "trusted.overlay.redirect"), None);
    assert_eq!(
        xattr(&sb.path("d"), "user.keep").as_deref(),
        Some(&b"1"[..])
    );
}

/// Whiteouts naming `.`/`..` or nothing are refused.
#[test]
fn bad_whiteouts_are_refused() {
    for name in [".wh.", ".wh..", "d/.wh.."] {
        let sb = Sandbox::new();
        let tar = Layer::new().file(name, b"").tar();
        let err = unpack(&sb, &tar).unwrap_err();
        assert!(
            matches!(
                err,
                UnpackError::UnsafePath {
                    problem: PathProblem::BadWhiteout,
                    ..
                }
            ),
            "{name}: {err}"
        );
        sb.assert_contained();
    }
}

/// Magic links and symlink loops in a parent are errors, not escapes.
#[test]
fn magic_links_and_loops_are_contained() {
    let sb = Sandbox::new();
    let through = format!("m/{}/sentinel", sb.parent_rel());
    let tar = Layer::new()
        .symlink("m", "/proc/self/root")
        .file(&through, b"pwned")
        .tar();
    assert!(unpack(&sb, &tar).is_err());
    sb.assert_contained();
    let sb = Sandbox::new();
    let tar = Layer::new()
        .symlink("a", "b")
        .symlink("b", "a")
        .file("a/x", b"")
        .tar();
    assert!(matches!(unpack(&sb, &tar), Err(UnpackError::Fs { .. })));
    sb.assert_contained();
}

/// A file over a populated directory removes the whole tree (without following the
/// symlinks inside it), as tar does.
#[test]
fn file_replaces_directory_tree() {
    let sb = Sandbox::new();
    let target = format!("/{}/outside", sb.parent_rel());
    let tar = Layer::new()
        .dir("d/e/f/")
        .file("d/e/f/x", b"1")
        .symlink("d/out", "../../../../outside")
        .symlink("d/abs", &target)
        .file("d", b"now a file")
        .tar();
    unpack(&sb, &tar).unwrap();
    assert_eq!(fs::read(sb.path("d")).unwrap(), b"now a file");
    sb.assert_contained();
}

/// Unsupported entry types (GNU sparse, volume labels) are refused by type.
#[test]
fn unsupported_entry_types_are_refused() {
    let sb = Sandbox::new();
    let mut l = Layer::new();
    l.raw(EntryType::new(b'V'), b"label", None, Attr::default(), b"");
    let err = unpack(&sb, &l.tar()).unwrap_err();
    assert!(
        matches!(err, UnpackError::Unsupported { kind: 'V', .. }),
        "{err}"
    );
}

/// Garbage and truncated streams are read errors, in every compression.
#[test]
fn corrupt_streams_are_read_errors() {
    let tar = Layer::new().file("f", &[7u8; 4096]).tar();
    let gz = gzip(&tar);
    for bad in [
        &tar[..700],
        &gz[..gz.len() / 2],
        &[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3][..],
    ] {
        let sb = Sandbox::new();
        let err = unpack(&sb, bad).unwrap_err();
        assert!(matches!(err, UnpackError::Read { .. }), "{err}");
    }
}

// ---- what real layers need ----

/// `.wh.NAME` becomes a 0/0 character device NAME with the entry's owner.
#[test]
fn whiteout_becomes_char_device() {
    let sb = Sandbox::new();
    let mut l = Layer::new();
    l.dir("etc/");
    l.raw(
        EntryType::Regular,
        b"etc/.wh.motd",
        None,
        Attr {
            uid: 7,
            gid: 8,
            ..Attr::default()
        },
        b"",
    );
    let stats = unpack(&sb, &l.tar()).unwrap();
    assert_eq!(stats.whiteouts, 1);
    let m = fs::symlink_metadata(sb.path("etc/motd")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), 0);
    assert_eq!((m.uid(), m.gid()), (7, 8));
    assert!(!exists(&sb.path("etc/.wh.motd")));
}

/// `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory and is not created.
#[test]
fn opaque_marker_sets_xattr() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .dir("var/")
        .dir("var/cache/")
        .file("var/cache/.wh..wh..opq", b"")
        .tar();
    let stats = unpack(&sb, &tar).unwrap();
    assert_eq!(stats.opaque_dirs, 1);
    assert_eq!(
        xattr(&sb.path("var/cache"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&sb.path("var"), "trusted.overlay.opaque"), None);
    assert!(!exists(&sb.path("var/cache/.wh..wh..opq")));
}

/// Hard links share the inode of their target.
#[test]
fn hard_links_share_inode() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .file("bin/busybox", b"elf")
        .hardlink("bin/sh", "bin/busybox")
        .hardlink("/bin/ls", "./bin/busybox")
        .tar();
    let stats = unpack(&sb, &tar).unwrap();
    assert_eq!(stats.hard_links, 2);
    let a = fs::metadata(sb.path("bin/busybox")).unwrap();
    assert_eq!(a.ino(), fs::metadata(sb.path("bin/sh")).unwrap().ino());
    assert_eq!(a.ino(), fs::metadata(sb.path("bin/ls")).unwrap().ino());
    assert_eq!(a.nlink(), 3);
}

/// Modes (setuid, setgid, sticky), owners and mtimes are kept for files,
/// directories, symlinks and fifos, directory mtimes despite later children.
#[test]
fn metadata_is_preserved() {
    let sb = Sandbox::new();
    let mut l = Layer::new();
    let at = |mode, uid, mtime| Attr {
        mode,
        uid,
        gid: uid + 1,
        mtime,
    };
    l.raw(
        EntryType::Directory,
        b"tmp/",
        None,
        at(0o1777, 0, 1_000_000_001),
        b"",
    );
    l.raw(
        EntryType::Regular,
        b"usr/bin/su",
        None,
        at(0o4755, 0, 1_000_000_002),
        b"su",
    );
    l.raw(
        EntryType::Regular,
        b"usr/bin/wall",
        None,
        at(0o2755, 5, 1_000_000_003),
        b"wall",
    );
    l.raw(
        EntryType::Symlink,
        b"usr/bin/link",
        Some(b"su"),
        at(0o777, 1000, 1_000_000_004),
        b"",
    );
    l.raw(
        EntryType::Fifo,
        b"run/fifo",
        None,
        at(0o620, 33, 1_000_000_005),
        b"",
    );
    l.raw(
        EntryType::Regular,
        b"tmp/x",
        None,
        at(0o600, 1000, 1_000_000_006),
        b"",
    );
    let stats = unpack(&sb, &l.tar()).unwrap();
    assert_eq!(
        (stats.files, stats.dirs, stats.symlinks, stats.fifos),
        (3, 1, 1, 1)
    );
    let check = |p: &str, mode: u32, uid: u32, mtime: i64| {
        let m = fs::symlink_metadata(sb.path(p)).unwrap();
        if !m.file_type().is_symlink() {
            assert_eq!(m.mode() & 0o7777, mode, "{p} mode");
        }
        assert_eq!((m.uid(), m.gid()), (uid, uid + 1), "{p} owner");
        assert_eq!(m.mtime(), mtime, "{p} mtime");
    };
    check("tmp", 0o1777, 0, 1_000_000_001);
    check("usr/bin/su", 0o4755, 0, 1_000_000_002);
    check("usr/bin/wall", 0o2755, 5, 1_000_000_003);
    check("usr/bin/link", 0o777, 1000, 1_000_000_004);
    check("run/fifo", 0o620, 33, 1_000_000_005);
    assert!(fs::symlink_metadata(sb.path("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    // Parents the tar does not list are made 0755 root.
    let m = fs::metadata(sb.path("usr/bin")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o755, 0));
}

/// PAX records override the header: uid/gid beyond the octal field, mtime fractions.
#[test]
fn pax_overrides_are_applied() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .pax(&[
            ("uid", b"100000"),
            ("gid", b"100001"),
            ("mtime", b"1700000000.25"),
        ])
        .file("f", b"")
        .tar();
    unpack(&sb, &tar).unwrap();
    let m = fs::metadata(sb.path("f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (100000, 100001));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 250_000_000));
}

/// A PAX size that disagrees with the header is refused (a parser differential).
#[test]
fn pax_size_disagreement_is_refused() {
    let sb = Sandbox::new();
    let tar = Layer::new().pax(&[("size", b"5")]).file("f", b"").tar();
    let err = unpack(&sb, &tar).unwrap_err();
    assert!(matches!(err, UnpackError::Format { .. }), "{err}");
}

/// A directory entry over an existing directory merges; `./` sets the root's mode.
#[test]
fn directories_merge_and_root_entry_applies() {
    let sb = Sandbox::new();
    let mut l = Layer::new();
    l.raw(
        EntryType::Directory,
        b"./",
        None,
        Attr {
            mode: 0o750,
            ..Attr::default()
        },
        b"",
    );
    l.dir("a/").file("a/x", b"1");
    l.raw(
        EntryType::Directory,
        b"a/",
        None,
        Attr {
            mode: 0o700,
            ..Attr::default()
        },
        b"",
    );
    unpack(&sb, &l.tar()).unwrap();
    assert_eq!(fs::read(sb.path("a/x")).unwrap(), b"1");
    assert_eq!(fs::metadata(sb.path("a")).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(fs::metadata(&sb.dest).unwrap().mode() & 0o7777, 0o750);
}

/// The diff_id is the sha256 of the uncompressed tar, whatever the compression,
/// and the stats report what was detected and read.
#[test]
fn diff_id_is_uncompressed_digest_in_every_compression() {
    let tar = Layer::new()
        .dir("etc/")
        .file("etc/hostname", b"berth\n")
        .tar();
    let want = sha256(&tar);
    for (bytes, kind) in [
        (tar.clone(), Compression::None),
        (gzip(&tar), Compression::Gzip),
        (zstd(&tar), Compression::Zstd),
    ] {
        let sb = Sandbox::new();
        let stats = unpack(&sb, &bytes).unwrap();
        assert_eq!(stats.diff_id, want, "{kind:?}");
        assert_eq!(stats.compression, kind);
        assert_eq!(stats.uncompressed_bytes, tar.len() as u64);
        assert_eq!(stats.compressed_bytes, bytes.len() as u64);
        assert_eq!(stats.entries, 2);
        assert_eq!(fs::read(sb.path("etc/hostname")).unwrap(), b"berth\n");
    }
}

/// Multi-member gzip (as `pigz`/concatenation produce) is read whole.
#[test]
fn multi_member_gzip_is_read_whole() {
    let tar = Layer::new().file("a", b"1").file("b", b"2").tar();
    let (x, y) = tar.split_at(1024);
    let mut two = gzip(x);
    two.extend(gzip(y));
    let sb = Sandbox::new();
    let stats = unpack(&sb, &two).unwrap();
    assert_eq!(stats.diff_id, sha256(&tar));
    assert!(exists(&sb.path("b")));
}

// ---- properties ----

/// Names, link targets and types an attacker would combine.
fn hostile_entry() -> impl Strategy<Value = (u8, String, String)> {
    let part = prop::sample::select(vec![
        "..",
        ".",
        "",
        "a",
        "b",
        "evil",
        ".wh.a",
        ".wh..wh..opq",
        "etc",
        "outside",
        "sentinel",
    ]);
    let name = prop::collection::vec(part.clone(), 1..5).prop_map(|v| v.join("/"));
    let lead = prop::sample::select(vec!["", "/", "./"]);
    let path = (lead.clone(), name.clone()).prop_map(|(l, n)| format!("{l}{n}"));
    let target = (lead, name).prop_map(|(l, n)| format!("{l}{n}"));
    let kind = prop::sample::select(vec![b'0', b'1', b'2', b'3', b'5', b'6']);
    (kind, path, target)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the unpacker and never write outside dest.
    #[test]
    fn random_bytes_never_escape(bytes in prop::collection::vec(any::<u8>(), 0..4096), compress in 0u8..3) {
        let sb = Sandbox::new();
        let input = match compress { 0 => bytes, 1 => gzip(&bytes), _ => zstd(&bytes) };
        let _ = unpack_layer(&input[..], &sb.dest, &small_limits());
        sb.assert_contained();
    }

    /// Random layers of hostile names, links and types never write outside dest.
    #[test]
    fn hostile_layers_never_escape(entries in prop::collection::vec(hostile_entry(), 1..12)) {
        let sb = Sandbox::new();
        let mut l = Layer::new();
        for (kind, path, target) in &entries {
            let target = target.replace("outside", &format!("/{}/outside", sb.parent_rel()));
            l.raw(EntryType::new(*kind), path.as_bytes(), Some(target.as_bytes()), Attr::default(), b"data");
        }
        let _ = unpack(&sb, &l.tar());
        sb.assert_contained();
    }

    /// Random mutations of a valid layer never panic and never write outside dest.
    #[test]
    fn mutated_layers_never_escape(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16)) {
        let sb = Sandbox::new();
        let mut tar = Layer::new()
            .symlink("evil", "/")
            .dir("d/")
            .file("d/f", b"content")
            .hardlink("d/h", "d/f")
            .file("evil/x", b"x")
            .tar();
        for (i, b) in flips {
            let i = i.index(tar.len());
            tar[i] = b;
        }
        let _ = unpack(&sb, &tar);
        sb.assert_contained();
    }
}

/// A whiteout replaces an entry of the same name earlier in the layer; aufs
/// bookkeeping (`.wh..wh.plnk`) is skipped, not created.
#[test]
fn whiteout_replaces_and_aufs_metadata_is_skipped() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .file("x", b"old")
        .file(".wh.x", b"")
        .dir(".wh..wh.plnk/")
        .file(".wh..wh.aufs", b"")
        .tar();
    unpack(&sb, &tar).unwrap();
    assert!(fs::symlink_metadata(sb.path("x"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(!exists(&sb.path(".wh..wh.plnk")));
    assert!(!exists(&sb.path(".wh..wh.aufs")));
    assert!(!exists(&sb.path("..wh.plnk")));
}

/// A fifo used as a parent directory is an error at once, never a blocking open.
#[test]
fn fifo_as_parent_does_not_block() {
    let sb = Sandbox::new();
    let mut l = Layer::new();
    l.raw(EntryType::Fifo, b"p", None, Attr::default(), b"");
    l.file("p/x", b"");
    let err = unpack(&sb, &l.tar()).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Fs {
                step: "opening the parent directory of",
                ..
            }
        ),
        "{err}"
    );
    sb.assert_contained();
}

/// Measures unpack throughput (run with `--ignored --nocapture` in release).
#[test]
#[ignore]
fn measure_unpack() {
    let mut l = Layer::new();
    for d in 0..200 {
        l.dir(&format!("usr/share/d{d}/"));
        for f in 0..100 {
            l.file(&format!("usr/share/d{d}/f{f}"), &[b'x'; 512]);
        }
    }
    l.file("big", &vec![7u8; 256 * 1024 * 1024]);
    let tar = l.tar();
    for (name, bytes) in [
        ("plain", tar.clone()),
        ("gzip", gzip(&tar)),
        ("zstd", zstd(&tar)),
    ] {
        let sb = Sandbox::new();
        let t = std::time::Instant::now();
        let stats = unpack(&sb, &bytes).unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{name}: {} entries, {} MiB uncompressed, {} MiB in: {secs:.2} s ({:.0} MiB/s)",
            stats.entries,
            stats.uncompressed_bytes >> 20,
            stats.compressed_bytes >> 20,
            (stats.uncompressed_bytes >> 20) as f64 / secs
        );
    }
}
