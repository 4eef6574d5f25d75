//! A container's root filesystem: an overlayfs mount of the image's read-only
//! snapshots (lower, shared by every container of the image) under an upper directory
//! of the container's own (overlayfs(5); the kernel's `Documentation/filesystems/overlayfs.rst`).

use std::path::{Path, PathBuf};

/// What went wrong mounting or unmounting a root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot create {path}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount the overlay root filesystem at {target} ({layers} layers)")]
    Mount {
        target: String,
        layers: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot unmount {target}")]
    Unmount {
        target: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where a container's overlay lives: `dir/upper`, `dir/work`, mounted at `dir/rootfs`.
#[derive(Debug, Clone)]
pub struct Rootfs {
    pub dir: PathBuf,
}

/// The overlay mount options for `lowers` (bottom first, as images list layers).
/// overlayfs wants the topmost lower first.
pub fn overlay_options(lowers: &[PathBuf], upper: &Path, work: &Path) -> String {
    let lower: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    )
}

impl Rootfs {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Rootfs { dir: dir.into() }
    }

    pub fn target(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Mounts the overlay; an image without layers gets an empty lower directory.
    pub fn mount(&self, lowers: &[PathBuf]) -> Result<PathBuf, RootfsError> {
        let mk = |p: PathBuf| {
            std::fs::create_dir_all(&p).map_err(|source| RootfsError::Create {
                path: p.display().to_string(),
                source,
            })?;
            Ok::<_, RootfsError>(p)
        };
        let upper = mk(self.dir.join("upper"))?;
        let work = mk(self.dir.join("work"))?;
        let target = mk(self.target())?;
        let mut lowers = lowers.to_vec();
        if lowers.is_empty() {
            lowers.push(mk(self.dir.join("empty"))?);
        }
        if self.is_mounted() {
            return Ok(target);
        }
        let opts = overlay_options(&lowers, &upper, &work);
        let data = std::ffi::CString::new(opts).expect("paths hold no NUL");
        rustix::mount::mount(
            "overlay",
            &target,
            "overlay",
            rustix::mount::MountFlags::empty(),
            data.as_c_str(),
        )
        .map_err(|e| RootfsError::Mount {
            target: target.display().to_string(),
            layers: lowers.len(),
            source: e.into(),
        })?;
        Ok(target)
    }

    /// Whether `rootfs` is a mount point now (`/proc/self/mountinfo`).
    pub fn is_mounted(&self) -> bool {
        is_mount_point(&self.target())
    }

    /// Unmounts (lazily, so a process still holding it cannot stop cleanup); not
    /// mounted is fine.
    pub fn unmount(&self) -> Result<(), RootfsError> {
        let target = self.target();
        if !self.is_mounted() {
            return Ok(());
        }
        rustix::mount::unmount(&target, rustix::mount::UnmountFlags::DETACH).map_err(|e| {
            RootfsError::Unmount {
                target: target.display().to_string(),
                source: e.into(),
            }
        })
    }
}

/// Whether `path` is listed as a mount point in `/proc/self/mountinfo`.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let found = mount_points(&info).any(|m| Path::new(&m) == path);
    found
}

/// The mount points at or below `dir` (whole path components), from
/// `/proc/self/mountinfo`; `None` when it cannot be read.
pub fn mounts_under(dir: &Path) -> Option<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let found = mount_points(&info)
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    Some(found)
}

/// Reads a small file (at most 1 MiB) inside a container root without following links
/// out of it (`openat2` with `RESOLVE_IN_ROOT`): an image's /etc/passwd may be a
/// symlink to anywhere.
pub fn read_in_root(root: &Path, rel: &str) -> Option<String> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use std::io::Read;
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let fd = rustix::fs::openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let mut s = String::new();
    std::fs::File::from(fd)
        .take(1 << 20)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// The mount points of a mountinfo text (field 5, octal escapes decoded).
pub fn mount_points(info: &str) -> impl Iterator<Item = String> + '_ {
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// overlayfs wants the topmost layer first.
    #[test]
    fn lower_order_is_top_first() {
        let o = overlay_options(
            &["/s/a".into(), "/s/b".into()],
            Path::new("/u"),
            Path::new("/w"),
        );
        assert_eq!(o, "lowerdir=/s/b:/s/a,upperdir=/u,workdir=/w");
    }

    /// mountinfo's octal escapes (spaces in paths) are decoded.
    #[test]
    fn mountinfo_parsing() {
        let info = "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw\n";
        assert_eq!(mount_points(info).collect::<Vec<_>>(), vec!["/mnt/a b"]);
    }
}
