//! Unpacking one layer tar (plain, gzip or zstd) into an overlayfs lower directory.
//!
//! The layer is hostile until proven otherwise. What is contained and how:
//! - names are made relative and `..` is refused (`paths`);
//! - parents are looked up in-root through `openat2(RESOLVE_IN_ROOT)`, the final
//!   component is never followed (`root`);
//! - hard links may only name a regular file this same layer created;
//! - device nodes are refused, except the whiteouts we make ourselves;
//! - `trusted.overlay.*` xattrs from the tar are dropped (they would forge whiteouts
//!   and opaque directories, see overlayfs.rst "whiteouts and opaque directories");
//! - bytes, entries, path and header sizes are bounded by [`Limits`].
//!
//! OCI whiteouts (image-spec `layer.md`, "Whiteouts") become what overlayfs reads:
//! `.wh.NAME` a 0/0 character device `NAME`, `.wh..wh..opq` the xattr
//! `trusted.overlay.opaque=y` on its directory (as containerd's overlay applier does).

mod paths;
mod pax;
mod root;
pub(crate) mod stream;

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{
    chmodat, chownat, fchmod, fchown, fsetxattr, fstat, futimens, linkat, makedev, mkdirat,
    mknodat, openat, openat2, symlinkat, utimensat, AtFlags, FileType, Gid, Mode, OFlags,
    ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use tar::EntryType;

pub use paths::PathProblem;
pub use pax::PaxProblem;
pub use stream::Compression;

use crate::limits::{Limit, Limits};
use root::{Cleared, Root};
use stream::{Bounded, Tally, Tripwire};

/// The whiteout prefix (image-spec `layer.md`, "Whiteouts").
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The opaque-directory marker.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// What overlayfs reads for an opaque directory (overlayfs.rst, "whiteouts and opaque
/// directories"); we set it, the layer may not.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Xattr namespaces overlayfs interprets; never taken from a layer. `user.overlay.*`
/// is what overlayfs reads when mounted with `userxattr`.
const OVERLAY_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];
/// Extension headers (PAX `x`/`g`, GNU `L`/`K`) allowed in front of one entry.
const MAX_EXTENSION_HEADERS: u32 = 8;
/// Copy buffer for file data.
const COPY_BUF_BYTES: usize = 64 * 1024;

/// What one unpack did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// `sha256:<hex>` of the uncompressed tar stream: the layer's diff_id.
    pub diff_id: String,
    /// The compression detected from the first bytes.
    pub compression: Compression,
    /// Bytes read from the (possibly compressed) input.
    pub compressed_bytes: u64,
    /// Bytes of the uncompressed tar stream.
    pub uncompressed_bytes: u64,
    /// Tar entries, extension headers excluded.
    pub entries: u64,
    /// Regular files created.
    pub files: u64,
    /// Directories created or merged.
    pub dirs: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Hard links created.
    pub hard_links: u64,
    /// FIFOs created.
    pub fifos: u64,
    /// `.wh.NAME` whiteouts turned into 0/0 character devices.
    pub whiteouts: u64,
    /// `.wh..wh..opq` markers turned into `trusted.overlay.opaque=y`.
    pub opaque_dirs: u64,
    /// `trusted.overlay.*` / `user.overlay.*` xattrs in the tar, dropped.
    pub overlay_xattrs_dropped: u64,
    /// Xattrs the filesystem does not support (EOPNOTSUPP), or on symlinks, skipped.
    pub xattrs_skipped: u64,
}

/// Why a layer could not be unpacked. Every variant naming an entry carries the path
/// as written in the tar.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The destination directory could not be opened.
    #[error("opening the layer directory {path}")]
    OpenDest {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The stream is not a readable tar (bad checksum, truncated, bad compression).
    #[error("reading the layer stream")]
    Read {
        #[source]
        source: io::Error,
    },
    /// A bound from [`Limits`] was exceeded.
    #[error("layer exceeds the {limit} limit ({max})")]
    Limit { limit: Limit, max: u64 },
    /// The entry's name (or link target) could escape or is malformed.
    #[error("entry {path:?} {problem}")]
    UnsafePath { path: String, problem: PathProblem },
    /// A PAX extended header is refused.
    #[error("entry {path:?}: bad pax header")]
    Pax {
        path: String,
        #[source]
        source: PaxProblem,
    },
    /// A header field does not parse or is out of range.
    #[error("entry {path:?}: invalid header field {field}")]
    Header {
        path: String,
        field: &'static str,
        #[source]
        source: io::Error,
    },
    /// The tar structure is inconsistent (e.g. a PAX size disagreeing with the header).
    #[error("entry {path:?}: {problem}")]
    Format { path: String, problem: &'static str },
    /// Device nodes would give a container access to host devices.
    #[error("entry {path:?}: {kind} entries are not allowed in layers")]
    Refused { path: String, kind: &'static str },
    /// An entry type we do not unpack (GNU sparse, multi-volume, ...).
    #[error("entry {path:?}: unsupported tar entry type {kind:?}")]
    Unsupported { path: String, kind: char },
    /// A hard link that does not name a regular file created earlier in this layer.
    #[error("entry {path:?}: hard link to {target:?} {problem}")]
    HardLink {
        path: String,
        target: String,
        problem: String,
    },
    /// A filesystem call on the entry failed.
    #[error("{step} {path:?}")]
    Fs {
        step: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Unpacks the layer read from `reader` into `dest`, an existing empty directory,
/// as an overlayfs lower directory. Nothing is written outside `dest`. On error
/// `dest` holds a partial tree; the caller removes it.
pub fn unpack_layer(
    reader: impl Read,
    dest: &Path,
    limits: &Limits,
) -> Result<UnpackStats, UnpackError> {
    let root = Root::open(dest).map_err(|source| UnpackError::OpenDest {
        path: dest.to_path_buf(),
        source,
    })?;
    let wire = Tripwire::default();
    let stream_err = |source: io::Error| match wire.tripped() {
        Some(limit) => UnpackError::Limit {
            limit,
            max: limits.value(limit),
        },
        None => UnpackError::Read { source },
    };
    let mut raw = Bounded::new(reader, limits.max_uncompressed_bytes, wire.clone());
    let (compression, prefix) = stream::sniff(&mut raw).map_err(stream_err)?;
    let mut u = Unpacker {
        root: &root,
        limits,
        wire: &wire,
        stats: UnpackStats {
            diff_id: String::new(),
            compression,
            compressed_bytes: 0,
            uncompressed_bytes: 0,
            entries: 0,
            files: 0,
            dirs: 0,
            symlinks: 0,
            hard_links: 0,
            fifos: 0,
            whiteouts: 0,
            opaque_dirs: 0,
            overlay_xattrs_dropped: 0,
            xattrs_skipped: 0,
        },
        created: HashSet::new(),
        dir_times: HashMap::new(),
    };
    {
        let decoder = stream::decoder(compression, prefix, &mut raw).map_err(stream_err)?;
        let mut archive = tar::Archive::new(Tally::new(
            decoder,
            limits.max_uncompressed_bytes,
            wire.clone(),
        ));
        u.entries(&mut archive)?;
        // The diff_id covers the whole stream, including the zero blocks after the
        // end-of-archive marker.
        let mut tally = archive.into_inner();
        io::copy(&mut tally, &mut io::sink()).map_err(stream_err)?;
        let (diff_id, bytes) = tally.finish();
        u.stats.diff_id = diff_id;
        u.stats.uncompressed_bytes = bytes;
    }
    // Read the compressed input to its end too, so a digest-checking reader under us
    // sees all of it.
    io::copy(&mut raw, &mut io::sink()).map_err(stream_err)?;
    u.stats.compressed_bytes = raw.bytes;
    u.finish_dirs()?;
    if u.stats.overlay_xattrs_dropped > 0 {
        tracing::warn!(
            count = u.stats.overlay_xattrs_dropped,
            diff_id = %u.stats.diff_id,
            "dropped overlay xattrs carried by a layer"
        );
    }
    tracing::debug!(stats = ?u.stats, "unpacked layer");
    Ok(u.stats)
}

/// Ownership, mode, time and xattrs of one entry.
struct Meta {
    uid: u32,
    gid: u32,
    /// Permission bits including setuid, setgid and sticky.
    mode: u32,
    mtime: (i64, u32),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Extension headers seen in front of the next entry.
#[derive(Default)]
struct Pending {
    count: u32,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<pax::PaxFields>,
}

struct Unpacker<'a> {
    root: &'a Root,
    limits: &'a Limits,
    wire: &'a Tripwire,
    stats: UnpackStats,
    /// (device, inode) of every regular file this layer created: the only valid
    /// hard-link targets.
    created: HashSet<(u64, u64)>,
    /// Directory mtimes, applied last (creating children changes them).
    dir_times: HashMap<Vec<u8>, (i64, u32)>,
}

/// Attaches the failing step and entry path to a filesystem error.
trait Step<T> {
    fn step(self, step: &'static str, path: &str) -> Result<T, UnpackError>;
}

impl<T, E: Into<io::Error>> Step<T> for Result<T, E> {
    fn step(self, step: &'static str, path: &str) -> Result<T, UnpackError> {
        self.map_err(|e| UnpackError::Fs {
            step,
            path: path.to_string(),
            source: e.into(),
        })
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn strip_nuls(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn timestamps((sec, nsec): (i64, u32)) -> Timestamps {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: nsec.into(),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

impl Unpacker<'_> {
    fn limit(&self, limit: Limit) -> UnpackError {
        UnpackError::Limit {
            limit,
            max: self.limits.value(limit),
        }
    }

    /// An I/O error from the stream: a tripped limit, or unreadable input.
    fn stream_err(&self, source: io::Error) -> UnpackError {
        match self.wire.tripped() {
            Some(limit) => self.limit(limit),
            None => UnpackError::Read { source },
        }
    }

    fn entries<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), UnpackError> {
        let mut pending = Pending::default();
        let entries = archive.entries().map_err(|e| self.stream_err(e))?;
        // Raw mode: we read PAX and GNU long-name headers ourselves so their size is
        // bounded before they are buffered (the tar crate reads them whole).
        for entry in entries.raw(true) {
            let mut entry = entry.map_err(|e| self.stream_err(e))?;
            let header = entry.header().clone();
            let kind = header.entry_type();
            let hdr_path = lossy(&header.path_bytes());
            let size = header.entry_size().map_err(|source| UnpackError::Header {
                path: hdr_path.clone(),
                field: "size",
                source,
            })?;
            let is_ext = kind.is_gnu_longname()
                || kind.is_gnu_longlink()
                || kind.is_pax_local_extensions()
                || kind.is_pax_global_extensions();
            if is_ext {
                pending.count += 1;
                if pending.count > MAX_EXTENSION_HEADERS {
                    return Err(UnpackError::Format {
                        path: hdr_path,
                        problem: "too many extension headers in front of one entry",
                    });
                }
                let pax_like = kind.is_pax_local_extensions() || kind.is_pax_global_extensions();
                let (max, limit) = if pax_like {
                    (self.limits.max_pax_header_bytes, Limit::PaxHeaderBytes)
                } else {
                    // A GNU long name is the name plus its NUL terminator.
                    (self.limits.max_path_bytes as u64 + 1, Limit::PathBytes)
                };
                if size > max {
                    return Err(self.limit(limit));
                }
                let mut body = Vec::with_capacity(size as usize);
                (&mut entry)
                    .take(size)
                    .read_to_end(&mut body)
                    .map_err(|e| self.stream_err(e))?;
                if kind.is_gnu_longname() {
                    pending.long_name = Some(strip_nuls(body));
                } else if kind.is_gnu_longlink() {
                    pending.long_link = Some(strip_nuls(body));
                } else if kind.is_pax_local_extensions() {
                    let fields = pax::parse(&body).map_err(|source| UnpackError::Pax {
                        path: hdr_path,
                        source,
                    })?;
                    pending.pax = Some(fields);
                }
                // Global (`g`) headers carry defaults no image builder relies on;
                // docker and containerd ignore them too.
                continue;
            }

            self.stats.entries += 1;
            if self.stats.entries > self.limits.max_entries {
                return Err(self.limit(Limit::Entries));
            }
            let p = std::mem::take(&mut pending);
            let pax = p.pax.unwrap_or_default();
            let path = pax
                .path
                .or(p.long_name)
                .unwrap_or_else(|| header.path_bytes().into_owned());
            let link = pax
                .linkpath
                .or(p.long_link)
                .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
            let shown = lossy(&path);
            if path.len() > self.limits.max_path_bytes
                || link
                    .as_ref()
                    .is_some_and(|l| l.len() > self.limits.max_path_bytes)
            {
                return Err(self.limit(Limit::PathBytes));
            }
            if pax.size.is_some_and(|s| s != size) {
                // The tar crate in raw mode reads `size` from the header; honouring a
                // different PAX size would make us parse a different archive than
                // other readers (a parser differential), so refuse it.
                return Err(UnpackError::Format {
                    path: shown,
                    problem: "pax size disagrees with the header size",
                });
            }
            let field = |field: &'static str, r: io::Result<u64>| {
                r.map_err(|source| UnpackError::Header {
                    path: shown.clone(),
                    field,
                    source,
                })
            };
            let id = |field: &'static str, v: u64| {
                u32::try_from(v)
                    .ok()
                    .filter(|v| *v != u32::MAX)
                    .ok_or_else(|| UnpackError::Header {
                        path: shown.clone(),
                        field,
                        source: io::Error::other(format!("{v} is out of range")),
                    })
            };
            let uid = id(
                "uid",
                pax.uid.map_or_else(|| field("uid", header.uid()), Ok)?,
            )?;
            let gid = id(
                "gid",
                pax.gid.map_or_else(|| field("gid", header.gid()), Ok)?,
            )?;
            let mode = field("mode", header.mode().map(u64::from))? as u32 & 0o7777;
            let mtime = match pax.mtime {
                Some(t) => t,
                None => {
                    let secs = field("mtime", header.mtime())?;
                    (i64::try_from(secs).unwrap_or(i64::MAX), 0)
                }
            };
            let meta = Meta {
                uid,
                gid,
                mode,
                mtime,
                xattrs: pax.xattrs,
            };
            self.entry(&mut entry, kind, &path, link.as_deref(), meta)?;
        }
        if pending.count > 0 {
            return Err(UnpackError::Format {
                path: String::new(),
                problem: "extension header without a following entry",
            });
        }
        Ok(())
    }

    fn entry(
        &mut self,
        data: &mut impl Read,
        kind: EntryType,
        raw_path: &[u8],
        link: Option<&[u8]>,
        meta: Meta,
    ) -> Result<(), UnpackError> {
        let shown = lossy(raw_path);
        let refuse = |kind: &'static str| {
            Err(UnpackError::Refused {
                path: shown.clone(),
                kind,
            })
        };
        match kind {
            EntryType::Char => return refuse("character device"),
            EntryType::Block => return refuse("block device"),
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Fifo => {}
            other => {
                return Err(UnpackError::Unsupported {
                    path: shown,
                    kind: char::from(other.as_byte()),
                })
            }
        }
        let comps = paths::components(raw_path).map_err(|problem| UnpackError::UnsafePath {
            path: shown.clone(),
            problem,
        })?;
        // Old (v7) archives mark directories with a trailing slash on a regular entry.
        let is_dir = kind == EntryType::Directory
            || (matches!(kind, EntryType::Regular | EntryType::Continuous)
                && raw_path.ends_with(b"/"));
        let Some((name, parents)) = comps.split_last() else {
            if !is_dir {
                return Err(UnpackError::UnsafePath {
                    path: shown,
                    problem: PathProblem::Root,
                });
            }
            // `./`: the layer root's own metadata.
            let fd = self.root.fd();
            self.set_owner_mode(fd, &meta, &shown)?;
            self.set_xattrs(fd, &meta, &shown)?;
            self.dir_times.insert(b".".to_vec(), meta.mtime);
            return Ok(());
        };
        let parent = self
            .root
            .dir(parents, true)
            .step("opening the parent directory of", &shown)?;
        let parent = parent.as_fd();

        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(parent, name, hidden, &meta, &shown);
        }
        if is_dir {
            return self.dir(parent, name, &comps, &meta, &shown);
        }
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                self.file(data, parent, name, &meta, &shown)
            }
            EntryType::Symlink => {
                let target = link
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| UnpackError::Format {
                        path: shown.clone(),
                        problem: "symlink without a target",
                    })?;
                Root::clear(parent, name, false).step("removing the existing", &shown)?;
                symlinkat(target, parent, *name).step("creating symlink", &shown)?;
                chownat(
                    parent,
                    *name,
                    Some(Uid::from_raw(meta.uid)),
                    Some(Gid::from_raw(meta.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .step("setting the owner of", &shown)?;
                utimensat(
                    parent,
                    *name,
                    &timestamps(meta.mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .step("setting the mtime of", &shown)?;
                // Linux refuses user.* xattrs on symlinks and we hold no path to
                // use lsetxattr safely; they are counted, not applied.
                self.stats.xattrs_skipped += meta.xattrs.len() as u64;
                self.stats.symlinks += 1;
                Ok(())
            }
            EntryType::Link => {
                let target = link.unwrap_or_default();
                self.hard_link(parent, name, target, &shown)
            }
            EntryType::Fifo => {
                Root::clear(parent, name, false).step("removing the existing", &shown)?;
                mknodat(parent, *name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                    .step("creating fifo", &shown)?;
                chownat(
                    parent,
                    *name,
                    Some(Uid::from_raw(meta.uid)),
                    Some(Gid::from_raw(meta.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .step("setting the owner of", &shown)?;
                // chmodat follows a final symlink, but `name` is the fifo we just
                // made and nothing else writes into this directory.
                chmodat(
                    parent,
                    *name,
                    Mode::from_raw_mode(meta.mode),
                    AtFlags::empty(),
                )
                .step("setting the mode of", &shown)?;
                utimensat(
                    parent,
                    *name,
                    &timestamps(meta.mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .step("setting the mtime of", &shown)?;
                self.stats.fifos += 1;
                Ok(())
            }
            _ => unreachable!("entry types are filtered above"),
        }
    }

    fn whiteout(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        hidden: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        if name == OPAQUE_MARKER {
            fsetxattr(parent, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                .step("marking opaque the directory of", shown)?;
            self.stats.opaque_dirs += 1;
            return Ok(());
        }
        if hidden.starts_with(WHITEOUT_PREFIX) {
            // `.wh..wh.*` other than the opaque marker is aufs bookkeeping
            // (`.wh..wh.plnk`, `.wh..wh.aufs`); containerd skips it too.
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(UnpackError::UnsafePath {
                path: shown.to_string(),
                problem: PathProblem::BadWhiteout,
            });
        }
        Root::clear(parent, hidden, false).step("removing the existing", shown)?;
        mknodat(
            parent,
            hidden,
            FileType::CharacterDevice,
            Mode::empty(),
            makedev(0, 0),
        )
        .step("creating the whiteout for", shown)?;
        chownat(
            parent,
            hidden,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .step("setting the owner of", shown)?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn dir(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        comps: &[&[u8]],
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        if Root::clear(parent, name, true).step("removing the existing", shown)? == Cleared::Empty {
            mkdirat(parent, name, Mode::from_raw_mode(0o700)).step("creating directory", shown)?;
        }
        let fd = openat(
            parent,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .step("opening directory", shown)?;
        self.set_owner_mode(fd.as_fd(), meta, shown)?;
        self.set_xattrs(fd.as_fd(), meta, shown)?;
        self.dir_times.insert(paths::join(comps), meta.mtime);
        self.stats.dirs += 1;
        Ok(())
    }

    fn file(
        &mut self,
        data: &mut impl Read,
        parent: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        Root::clear(parent, name, false).step("removing the existing", shown)?;
        let fd = openat(
            parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .step("creating file", shown)?;
        let mut file = std::fs::File::from(fd);
        let mut buf = vec![0u8; COPY_BUF_BYTES];
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.stream_err(e)),
            };
            file.write_all(&buf[..n]).step("writing file", shown)?;
        }
        self.set_owner_mode(file.as_fd(), meta, shown)?;
        self.set_xattrs(file.as_fd(), meta, shown)?;
        futimens(&file, &timestamps(meta.mtime)).step("setting the mtime of", shown)?;
        let st = fstat(&file).step("reading back", shown)?;
        self.created.insert((st.st_dev, st.st_ino));
        self.stats.files += 1;
        Ok(())
    }

    fn hard_link(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        target: &[u8],
        shown: &str,
    ) -> Result<(), UnpackError> {
        let bad = |problem: String| UnpackError::HardLink {
            path: shown.to_string(),
            target: lossy(target),
            problem,
        };
        let tcomps = paths::components(target).map_err(|p| bad(p.to_string()))?;
        let (tname, tparents) = tcomps
            .split_last()
            .ok_or_else(|| bad(PathProblem::Root.to_string()))?;
        let missing = || bad("does not exist in this layer".into());
        let tparent = match self.root.dir(tparents, false) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                return Err(missing())
            }
            Err(e) => return Err(bad(format!("cannot be resolved: {e}"))),
        };
        let st = root::lstat_at(tparent.as_fd(), tname)
            .step("looking up the hard link target of", shown)?
            .ok_or_else(missing)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(bad("is not a regular file".into()));
        }
        if !self.created.contains(&(st.st_dev, st.st_ino)) {
            return Err(bad("was not created by this layer".into()));
        }
        if let Some(existing) = root::lstat_at(parent, name).step("looking up", shown)? {
            if (existing.st_dev, existing.st_ino) == (st.st_dev, st.st_ino) {
                return Ok(()); // already that file
            }
        }
        Root::clear(parent, name, false).step("removing the existing", shown)?;
        linkat(tparent.as_fd(), *tname, parent, name, AtFlags::empty())
            .step("creating hard link", shown)?;
        self.stats.hard_links += 1;
        Ok(())
    }

    /// Owner first, then mode: chown(2) clears setuid/setgid.
    fn set_owner_mode(
        &self,
        fd: BorrowedFd<'_>,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .step("setting the owner of", shown)?;
        fchmod(fd, Mode::from_raw_mode(meta.mode)).step("setting the mode of", shown)
    }

    fn set_xattrs(
        &mut self,
        fd: BorrowedFd<'_>,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        for (name, value) in &meta.xattrs {
            if OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p)) {
                self.stats.overlay_xattrs_dropped += 1;
                continue;
            }
            match fsetxattr(fd, &name[..], value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(Errno::OPNOTSUPP) => self.stats.xattrs_skipped += 1,
                Err(e) => return Err(e).step("setting an xattr on", shown),
            }
        }
        Ok(())
    }

    /// Directory mtimes last: creating entries inside a directory changes its mtime.
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        for (path, mtime) in std::mem::take(&mut self.dir_times) {
            // A later entry may have replaced the directory; then there is nothing to do.
            let Ok(fd) = openat2(self.root.fd(), &path[..], flags, Mode::empty(), resolve) else {
                continue;
            };
            futimens(&fd, &timestamps(mtime)).step("setting the mtime of", &lossy(&path))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
