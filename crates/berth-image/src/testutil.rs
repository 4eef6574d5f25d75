//! Test helpers: a tar builder that writes names byte for byte (hostile ones too) and
//! a sandbox that proves nothing was written outside the layer directory.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

/// Builds layer tars entry by entry, writing names and link targets as raw header
/// bytes (the `tar` builder refuses `..` and absolute names; an attacker does not).
pub(crate) struct Layer {
    b: tar::Builder<Vec<u8>>,
}

/// Owner, mode and mtime for one test entry.
#[derive(Clone, Copy)]
pub(crate) struct Attr {
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mtime: u64,
}

impl Default for Attr {
    fn default() -> Self {
        Attr {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
        }
    }
}

impl Layer {
    pub(crate) fn new() -> Layer {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    /// Appends one entry; names longer than 100 bytes go in a PAX `path` record.
    pub(crate) fn raw(
        &mut self,
        kind: EntryType,
        name: &[u8],
        link: Option<&[u8]>,
        attr: Attr,
        data: &[u8],
    ) -> &mut Self {
        let mut pax: Vec<(&str, &[u8])> = Vec::new();
        if name.len() > 100 {
            pax.push(("path", name));
        }
        if link.is_some_and(|l| l.len() > 100) {
            pax.push(("linkpath", link.unwrap()));
        }
        if !pax.is_empty() {
            self.b.append_pax_extensions(pax).unwrap();
        }
        let mut h = Header::new_gnu();
        let n = name.len().min(100);
        h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
        if let Some(l) = link {
            let n = l.len().min(100);
            h.as_old_mut().linkname[..n].copy_from_slice(&l[..n]);
        }
        h.set_entry_type(kind);
        h.set_mode(attr.mode);
        h.set_uid(attr.uid);
        h.set_gid(attr.gid);
        h.set_mtime(attr.mtime);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub(crate) fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.b
            .append_pax_extensions(records.iter().copied())
            .unwrap();
        self
    }

    pub(crate) fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(
            EntryType::Regular,
            name.as_bytes(),
            None,
            Attr::default(),
            data,
        )
    }

    pub(crate) fn dir(&mut self, name: &str) -> &mut Self {
        let attr = Attr {
            mode: 0o755,
            ..Attr::default()
        };
        self.raw(EntryType::Directory, name.as_bytes(), None, attr, b"")
    }

    pub(crate) fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let attr = Attr {
            mode: 0o777,
            ..Attr::default()
        };
        self.raw(
            EntryType::Symlink,
            name.as_bytes(),
            Some(target.as_bytes()),
            attr,
            b"",
        )
    }

    pub(crate) fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            EntryType::Link,
            name.as_bytes(),
            Some(target.as_bytes()),
            Attr::default(),
            b"",
        )
    }

    /// The finished tar stream (with its two zero blocks).
    pub(crate) fn tar(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub(crate) fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 1).unwrap()
}

pub(crate) fn sha256(data: &[u8]) -> String {
    crate::digest::of(data)
}

/// A temporary parent holding `a/b/dest` (so `../../..` from dest is still inside the
/// parent), a sentinel file and an `outside` directory: the things an escape would hit.
pub(crate) struct Sandbox {
    pub(crate) parent: tempfile::TempDir,
    pub(crate) dest: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

impl Sandbox {
    pub(crate) fn new() -> Sandbox {
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("a/b/dest");
        fs::create_dir_all(&dest).unwrap();
        fs::write(parent.path().join("sentinel"), b"untouched").unwrap();
        fs::create_dir(parent.path().join("outside")).unwrap();
        fs::write(parent.path().join("outside/file"), b"untouched").unwrap();
        let mut s = Sandbox {
            parent,
            dest,
            before: BTreeMap::new(),
        };
        s.before = s.outside();
        s
    }

    /// The parent's absolute path without its leading `/`: an entry name that, if
    /// resolved against the host root, would land in the parent.
    pub(crate) fn parent_rel(&self) -> String {
        self.parent
            .path()
            .to_str()
            .unwrap()
            .trim_start_matches('/')
            .to_string()
    }

    /// Every path in the parent outside `dest`, with its type, mode, size, mtime and
    /// content digest, symlinks not followed.
    pub(crate) fn outside(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.parent.path().to_path_buf()];
        while let Some(p) = stack.pop() {
            let m = fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                sha256(&fs::read(&p).unwrap())
            } else if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else {
                String::new()
            };
            out.insert(
                p.clone(),
                format!(
                    "{:o} {} {} {} {} {content}",
                    m.mode(),
                    m.uid(),
                    m.size(),
                    m.mtime(),
                    m.nlink()
                ),
            );
            if m.is_dir() && p != self.dest {
                for e in fs::read_dir(&p).unwrap() {
                    stack.push(e.unwrap().path());
                }
            }
        }
        // dest's own metadata may change (a `./` entry); its contents are not outside.
        out.remove(&self.dest);
        out
    }

    /// Panics if anything outside `dest` changed.
    pub(crate) fn assert_contained(&self) {
        assert_eq!(
            self.outside(),
            self.before,
            "something outside dest changed"
        );
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }
}

/// `true` if `p` exists (without following a final symlink).
pub(crate) fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}
