//! What a `RUN` changed, as a layer: a container's overlayfs upper directory turned
//! into an OCI layer tar (image-spec `layer.md`, "Change Types" and "Whiteouts").
//!
//! overlayfs records a deletion as a 0/0 character device (a whiteout) and a
//! directory that hides everything below it as the xattr `trusted.overlay.opaque=y`
//! (kernel `Documentation/filesystems/overlayfs.rst`, "whiteouts and opaque
//! directories"). They become `.wh.NAME` and `DIR/.wh..wh..opq` entries, written as
//! moby's overlay diff writes them (`pkg/archive/archive_linux.go`).
//!
//! Reproducible like the rest of `berth build`: entries sorted by their name in the
//! tar, mtimes 0, owners and modes kept as the container left them.
//!
//! The tree was written by the container, so it is untrusted, but still: the caller
//! runs this after the container has exited and the overlay is unmounted. Nothing is
//! followed: entries are `lstat`ed, files are opened `O_NOFOLLOW` and must be the
//! inode `lstat` saw. Xattrs other than the opaque marker are not carried (file
//! capabilities set by `setcap` are lost).

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The whiteout prefix (image-spec `layer.md`, "Whiteouts").
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// What overlayfs sets on an opaque directory of the upper layer.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// A renamed lower directory (`redirect_dir=on`) and a file whose data is still in a
/// lower layer (`metacopy=on`): the upper alone does not hold the change, so such an
/// upper is refused rather than turned into a wrong layer (moby falls back to a
/// naive diff when the kernel enables them).
const OVERLAY_REDIRECT_XATTRS: [&str; 2] = ["trusted.overlay.redirect", "trusted.overlay.metacopy"];

/// Why an upper directory could not be turned into a layer.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} changed while it was read")]
    Changed { path: PathBuf },
    #[error("{path} carries {xattr}: overlayfs redirect_dir or metacopy is on, and the upper directory alone does not hold the change")]
    Redirected { path: String, xattr: &'static str },
    #[error("{path} is a {kind}; layers cannot hold one")]
    Unsupported { path: String, kind: &'static str },
    #[error("cannot write the layer tar")]
    Write {
        #[source]
        source: std::io::Error,
    },
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> DiffError + '_ {
    move |source| DiffError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// The layer tar (uncompressed) of the changes recorded in the overlayfs `upper`
/// directory. No changes give a tar with no entries.
pub fn upper_to_tar(upper: &Path) -> Result<Vec<u8>, DiffError> {
    let mut w = Writer {
        tar: tar::Builder::new(Vec::new()),
        links: HashMap::new(),
    };
    w.dir(upper, "")?;
    w.tar
        .into_inner()
        .map_err(|source| DiffError::Write { source })
}

struct Writer {
    tar: tar::Builder<Vec<u8>>,
    /// (dev, ino) of regular files with more than one link → the first tar name.
    links: HashMap<(u64, u64), String>,
}

fn header(m: &fs::Metadata, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mtime(0);
    h.set_uid(u64::from(m.uid()));
    h.set_gid(u64::from(m.gid()));
    h.set_mode(mode);
    h.set_size(0);
    h
}

/// Whether overlayfs marked the directory opaque (`y`; kernels also accept `x` for
/// a directory that merely holds whiteouts, which is not opaque).
fn is_opaque(path: &Path) -> Result<bool, DiffError> {
    let mut buf = [0u8; 8];
    match rustix::fs::lgetxattr(path, OVERLAY_OPAQUE_XATTR, &mut buf) {
        Ok(n) => Ok(&buf[..n] == b"y"),
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => Ok(false),
        Err(e) => Err(DiffError::Read {
            path: path.to_path_buf(),
            source: e.into(),
        }),
    }
}

/// Whether `path` carries the overlayfs xattr `name`.
fn has_xattr(path: &Path, name: &str) -> Result<bool, DiffError> {
    let mut none: [u8; 0] = [];
    match rustix::fs::lgetxattr(path, name, &mut none) {
        Ok(_) => Ok(true),
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => Ok(false),
        Err(e) => Err(DiffError::Read {
            path: path.to_path_buf(),
            source: e.into(),
        }),
    }
}

impl Writer {
    fn append(&mut self, h: &mut tar::Header, name: &str, data: &[u8]) -> Result<(), DiffError> {
        self.tar
            .append_data(h, name, data)
            .map_err(|source| DiffError::Write { source })
    }

    /// Writes the children of `dir` (whose tar name is `prefix`, empty for the root).
    fn dir(&mut self, dir: &Path, prefix: &str) -> Result<(), DiffError> {
        let mut children: Vec<(String, PathBuf, fs::Metadata)> = Vec::new();
        for e in fs::read_dir(dir).map_err(read_err(dir))? {
            let e = e.map_err(read_err(dir))?;
            let path = e.path();
            let m = fs::symlink_metadata(&path).map_err(read_err(&path))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let whiteout = m.file_type().is_char_device() && m.rdev() == 0;
            let name = if whiteout {
                format!("{WHITEOUT_PREFIX}{name}")
            } else {
                name
            };
            children.push((format!("{prefix}{name}"), path, m));
        }
        children.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, path, m) in children {
            self.entry(&name, &path, &m)?;
        }
        Ok(())
    }

    fn entry(&mut self, name: &str, path: &Path, m: &fs::Metadata) -> Result<(), DiffError> {
        let ft = m.file_type();
        let perm = m.mode() & 0o7777;
        if ft.is_dir() || ft.is_file() {
            for xattr in OVERLAY_REDIRECT_XATTRS {
                if has_xattr(path, xattr)? {
                    return Err(DiffError::Redirected {
                        path: format!("/{name}"),
                        xattr,
                    });
                }
            }
        }
        if ft.is_dir() {
            let mut h = header(m, perm);
            h.set_entry_type(tar::EntryType::Directory);
            self.append(&mut h, &format!("{name}/"), &[])?;
            if is_opaque(path)? {
                let mut h = header(m, perm & 0o777);
                h.set_entry_type(tar::EntryType::Regular);
                self.append(&mut h, &format!("{name}/{OPAQUE_MARKER}"), &[])?;
            }
            return self.dir(path, &format!("{name}/"));
        }
        if ft.is_char_device() && m.rdev() == 0 {
            // moby writes whiteouts as empty regular files, mode 0600.
            let mut h = header(m, 0o600);
            h.set_entry_type(tar::EntryType::Regular);
            return self.append(&mut h, name, &[]);
        }
        if ft.is_symlink() {
            let target = fs::read_link(path).map_err(read_err(path))?;
            let mut h = header(m, perm);
            h.set_entry_type(tar::EntryType::Symlink);
            return self
                .tar
                .append_link(&mut h, name, target)
                .map_err(|source| DiffError::Write { source });
        }
        if ft.is_fifo() {
            let mut h = header(m, perm);
            h.set_entry_type(tar::EntryType::Fifo);
            return self.append(&mut h, name, &[]);
        }
        if ft.is_file() {
            let key = (m.dev(), m.ino());
            if m.nlink() > 1 {
                if let Some(first) = self.links.get(&key).cloned() {
                    let mut h = header(m, perm);
                    h.set_entry_type(tar::EntryType::Link);
                    return self
                        .tar
                        .append_link(&mut h, name, first)
                        .map_err(|source| DiffError::Write { source });
                }
                self.links.insert(key, name.to_string());
            }
            let data = read_file(path, m)?;
            let mut h = header(m, perm);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
            return self.append(&mut h, name, &data);
        }
        if ft.is_socket() {
            // As moby does: a socket cannot be archived, and means nothing without its process.
            return Ok(());
        }
        let kind = if ft.is_block_device() {
            "block device"
        } else {
            "character device"
        };
        Err(DiffError::Unsupported {
            path: format!("/{name}"),
            kind,
        })
    }
}

fn read_file(path: &Path, m: &fs::Metadata) -> Result<Vec<u8>, DiffError> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| DiffError::Read {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let mut f = fs::File::from(fd);
    let fm = f.metadata().map_err(read_err(path))?;
    if fm.ino() != m.ino() || fm.dev() != m.dev() || !fm.is_file() {
        return Err(DiffError::Changed {
            path: path.to_path_buf(),
        });
    }
    let mut data = Vec::with_capacity(fm.len() as usize);
    f.read_to_end(&mut data).map_err(read_err(path))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// (name, type, mode, uid, size, link target, mtime) of every entry.
    type Row = (String, tar::EntryType, u32, u64, u64, String, u64);

    fn rows(tar_bytes: &[u8]) -> Vec<Row> {
        let mut ar = tar::Archive::new(tar_bytes);
        ar.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.size().unwrap(),
                    e.link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    h.mtime().unwrap(),
                )
            })
            .collect()
    }

    fn row(name: &str, t: tar::EntryType, mode: u32, uid: u64, size: u64, link: &str) -> Row {
        (name.into(), t, mode, uid, size, link.into(), 0)
    }

    /// An upper dir as overlayfs leaves it: a whiteout (0/0 char device), an opaque
    /// directory (xattr), files, a symlink, a hard link, a fifo; each becomes its OCI
    /// entry, sorted, mtime 0, owner and mode kept. Needs root (mknod, trusted.* xattrs).
    #[test]
    fn upper_dir_becomes_layer() {
        let d = tempfile::tempdir().unwrap();
        let u = d.path();
        fs::create_dir_all(u.join("etc")).unwrap();
        fs::set_permissions(u.join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            u.join("etc/removed-file"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            rustix::fs::makedev(0, 0),
        )
        .unwrap();
        fs::create_dir(u.join("var")).unwrap();
        fs::set_permissions(u.join("var"), fs::Permissions::from_mode(0o750)).unwrap();
        rustix::fs::setxattr(
            u.join("var"),
            OVERLAY_OPAQUE_XATTR,
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        fs::write(u.join("var/new"), "n").unwrap();
        fs::set_permissions(u.join("var/new"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::write(u.join("built.txt"), "built\n").unwrap();
        std::os::unix::fs::chown(u.join("built.txt"), Some(1000), Some(1000)).unwrap();
        // After chown, which clears set-user-ID.
        fs::set_permissions(u.join("built.txt"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(u.join("built.txt"), u.join("z-hard")).unwrap();
        std::os::unix::fs::symlink("/built.txt", u.join("link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            u.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let t = upper_to_tar(u).unwrap();
        use tar::EntryType::*;
        assert_eq!(
            rows(&t),
            vec![
                row("built.txt", Regular, 0o4755, 1000, 6, ""),
                row("etc/", Directory, 0o755, 0, 0, ""),
                row("etc/.wh.removed-file", Regular, 0o600, 0, 0, ""),
                row("fifo", Fifo, 0o600, 0, 0, ""),
                row("link", Symlink, 0o777, 0, 0, "/built.txt"),
                row("var/", Directory, 0o750, 0, 0, ""),
                row("var/.wh..wh..opq", Regular, 0o750, 0, 0, ""),
                row("var/new", Regular, 0o640, 0, 1, ""),
                row("z-hard", Link, 0o4755, 1000, 0, "built.txt"),
            ]
        );
        // The same tree later (new mtimes) gives the same bytes.
        fs::write(u.join("var/new"), "n").unwrap();
        assert_eq!(upper_to_tar(u).unwrap(), t);
    }

    /// Nothing changed: a tar without entries. A device node other than a whiteout is refused.
    #[test]
    fn empty_and_devices() {
        let d = tempfile::tempdir().unwrap();
        let t = upper_to_tar(d.path()).unwrap();
        assert_eq!(rows(&t), vec![]);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.path().join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        let e = upper_to_tar(d.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/null is a character device; layers cannot hold one"
        );
    }

    /// A renamed directory (redirect xattr) is refused, not written as an empty directory.
    #[test]
    fn redirects_refused() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("moved")).unwrap();
        rustix::fs::setxattr(
            d.path().join("moved"),
            "trusted.overlay.redirect",
            b"/orig",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let e = upper_to_tar(d.path()).unwrap_err();
        assert!(
            matches!(&e, DiffError::Redirected { path, xattr } if path == "/moved" && *xattr == "trusted.overlay.redirect"),
            "{e}"
        );
    }
}
