//! Filesystem work inside the layer directory, always relative to a directory handle.
//!
//! Every lookup of a parent goes through `openat2(2)` with `RESOLVE_IN_ROOT`, so a
//! symlink (or `..` left in a symlink's target) is resolved as if the layer directory
//! were `/`: it can never name anything outside it. `RESOLVE_NO_MAGICLINKS` refuses
//! `/proc/self/fd/N`-style links. The final component is then acted on with a `*at`
//! call that never follows it (`O_NOFOLLOW|O_EXCL`, `AT_SYMLINK_NOFOLLOW`,
//! `mkdirat`, `symlinkat`, `mknodat`, `linkat` without `AT_SYMLINK_FOLLOW`).
//! See openat2(2) and CVE-2018-15664 / CVE-2019-14271 for what string joining allows.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{
    fchmod, mkdirat, openat, openat2, statat, unlinkat, AtFlags, Dir, FileType, Mode, OFlags,
    ResolveFlags, Stat,
};
use rustix::io::Errno;

/// Resolution for every lookup below the root.
const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);
/// Mode of parent directories a layer does not list (docker and containerd use 0755).
const IMPLICIT_DIR_MODE: u32 = 0o755;
/// Opening a directory we will only use as a handle for `*at` calls and metadata.
const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::RDONLY)
    .union(OFlags::CLOEXEC);

/// The layer directory, open.
pub(crate) struct Root {
    fd: OwnedFd,
}

/// What [`Root::clear`] found where an entry is about to be created.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cleared {
    /// Nothing was there (or it was removed).
    Empty,
    /// A directory is there and the new entry is a directory: they merge.
    MergeDir,
}

impl Root {
    pub(crate) fn open(dest: &Path) -> io::Result<Root> {
        let fd = openat(
            rustix::fs::CWD,
            dest,
            DIR_FLAGS | OFlags::NOFOLLOW,
            Mode::empty(),
        )?;
        Ok(Root { fd })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens the directory `comps` (resolved in-root), creating missing directories
    /// (mode 0755, owned by us) when `create` is set, as docker does for entries whose
    /// parents the tar does not list.
    pub(crate) fn dir(&self, comps: &[&[u8]], create: bool) -> io::Result<OwnedFd> {
        let whole = crate::unpack::paths::join(comps);
        match openat2(&self.fd, &whole[..], DIR_FLAGS, Mode::empty(), IN_ROOT) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) if create => {}
            Err(e) => return Err(e.into()),
        }
        let mut cur = openat2(&self.fd, ".", DIR_FLAGS, Mode::empty(), IN_ROOT)?;
        for i in 0..comps.len() {
            let prefix = crate::unpack::paths::join(&comps[..=i]);
            cur = match openat2(&self.fd, &prefix[..], DIR_FLAGS, Mode::empty(), IN_ROOT) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    // The prefix up to i-1 resolved to `cur`; component i is missing
                    // there (or is a dangling symlink, which mkdirat refuses: EEXIST).
                    mkdirat(&cur, comps[i], Mode::from_raw_mode(IMPLICIT_DIR_MODE))?;
                    let fd = openat(&cur, comps[i], DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
                    // The umask applied to mkdirat; the mode must not depend on it.
                    fchmod(&fd, Mode::from_raw_mode(IMPLICIT_DIR_MODE))?;
                    fd
                }
                Err(e) => return Err(e.into()),
            };
        }
        Ok(cur)
    }

    /// Makes room for a new entry `name` in `parent`: a directory stays when the new
    /// entry is a directory (tar and docker merge them), anything else is removed.
    /// Never follows `name` if it is a symlink: the link itself is removed.
    pub(crate) fn clear(
        parent: BorrowedFd<'_>,
        name: &[u8],
        new_is_dir: bool,
    ) -> io::Result<Cleared> {
        let st = match lstat_at(parent, name)? {
            None => return Ok(Cleared::Empty),
            Some(st) => st,
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            if new_is_dir {
                return Ok(Cleared::MergeDir);
            }
            remove_tree(parent, name)?;
        } else {
            unlinkat(parent, name, AtFlags::empty())?;
        }
        Ok(Cleared::Empty)
    }
}

/// `fstatat(parent, name, AT_SYMLINK_NOFOLLOW)`, `None` if nothing is there.
pub(crate) fn lstat_at(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Stat>> {
    match statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes the directory `name` in `parent` and everything below it, one handle at a
/// time and without following symlinks. Iterative, so a deep hostile tree cannot
/// exhaust the stack (each level holds one descriptor; EMFILE ends it as an error).
pub(crate) fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    struct Level {
        fd: OwnedFd,
        name: Vec<u8>,
        pending: Vec<Vec<u8>>,
    }
    let open_level = |dir: BorrowedFd<'_>, name: &[u8]| -> io::Result<Level> {
        let fd = openat(dir, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
        let mut pending = Vec::new();
        let mut d = Dir::read_from(&fd)?;
        while let Some(ent) = d.read() {
            let ent = ent?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                pending.push(n.to_vec());
            }
        }
        Ok(Level {
            fd,
            name: name.to_vec(),
            pending,
        })
    };
    let mut stack = vec![open_level(parent, name)?];
    while let Some(top) = stack.last_mut() {
        if let Some(child) = top.pending.pop() {
            match lstat_at(top.fd.as_fd(), &child)? {
                Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                    let level = open_level(top.fd.as_fd(), &child)?;
                    stack.push(level);
                }
                Some(_) => unlinkat(&top.fd, &child[..], AtFlags::empty())?,
                None => {}
            }
        } else {
            let done = stack.pop().expect("stack is not empty");
            let up = stack.last().map(|l| l.fd.as_fd()).unwrap_or(parent);
            unlinkat(up, &done.name[..], AtFlags::REMOVEDIR)?;
        }
    }
    Ok(())
}
