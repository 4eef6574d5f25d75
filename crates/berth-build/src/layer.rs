//! Layer tars: the files a COPY/ADD/WORKDIR adds, collected from the context and
//! written as a sorted, timestamp-free tar.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::BuildError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

pub(crate) type Entries = BTreeMap<String, Entry>;

/// What this build has put at each path so far (base image contents are unknown:
/// the caller hands in descriptors, not layers).
pub(crate) type Tree = BTreeMap<String, Node>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node {
    Dir,
    File,
    Symlink,
}

fn ctx_err(line: usize, message: impl Into<String>) -> BuildError {
    BuildError::Context {
        line,
        message: message.into(),
    }
}

fn io_err(line: usize, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        line,
        path: path.display().to_string(),
        source,
    }
}

/// Normalises an image path lexically: absolute, no `.`/`..`/empty components.
pub(crate) fn normalize(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Where a destination lands: relative destinations are relative to WORKDIR.
pub fn resolve_dest(dest: &str, workdir: &str) -> String {
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{dest}", if workdir.is_empty() { "/" } else { workdir })
    };
    let mut n = normalize(&joined);
    if dest.ends_with('/') && n != "/" {
        n.push('/');
    }
    n
}

fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], name) || (!name.is_empty() && glob_match(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// Resolves one source pattern to paths inside the context (relative component lists).
fn expand(context: &Path, src: &str, line: usize) -> Result<Vec<(PathBuf, String)>, BuildError> {
    let mut comps: Vec<String> = Vec::new();
    for c in src.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if comps.pop().is_none() {
                    return Err(ctx_err(
                        line,
                        format!("source '{src}' is outside the build context"),
                    ));
                }
            }
            c => comps.push(c.to_string()),
        }
    }
    if comps.is_empty() {
        return Ok(vec![(context.to_path_buf(), String::new())]);
    }
    let last = comps.pop().expect("non-empty");
    // Every parent must be a real directory: a symlinked parent could lead out.
    let mut dir = context.to_path_buf();
    for c in &comps {
        dir.push(c);
        let m = fs::symlink_metadata(&dir)
            .map_err(|_| ctx_err(line, format!("'{src}' not found in the build context")))?;
        if m.file_type().is_symlink() {
            return Err(ctx_err(
                line,
                format!(
                    "'{src}' passes through a symlink ({c}); berth build does not follow symlinks"
                ),
            ));
        }
        if !m.is_dir() {
            return Err(ctx_err(line, format!("'{src}': {c} is not a directory")));
        }
    }
    let mut out = Vec::new();
    if last.contains(['*', '?']) {
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(io_err(line, &dir))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
            .filter(|n| glob_match(last.as_bytes(), n.as_bytes()))
            .collect();
        names.sort();
        for n in names {
            out.push((dir.join(&n), n));
        }
    } else if fs::symlink_metadata(dir.join(&last)).is_ok() {
        out.push((dir.join(&last), last));
    }
    if out.is_empty() {
        return Err(ctx_err(
            line,
            format!("'{src}' not found in the build context"),
        ));
    }
    Ok(out)
}

fn add_parents(entries: &mut Entries, path: &str) {
    let mut p = String::new();
    let comps: Vec<&str> = path.trim_matches('/').split('/').collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        p.push('/');
        p.push_str(c);
        entries.entry(p.clone()).or_insert(Entry {
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
        });
    }
}

struct Owner {
    uid: u64,
    gid: u64,
}

fn add_path(
    entries: &mut Entries,
    fs_path: &Path,
    image_path: &str,
    owner: &Owner,
    line: usize,
) -> Result<(), BuildError> {
    let m = fs::symlink_metadata(fs_path).map_err(io_err(line, fs_path))?;
    let mode = m.permissions().mode() & 0o7777;
    let ft = m.file_type();
    let kind = if ft.is_symlink() {
        let t = fs::read_link(fs_path).map_err(io_err(line, fs_path))?;
        Kind::Symlink(t.to_string_lossy().to_string())
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File(read_same_file(fs_path, &m, line)?)
    } else {
        return Err(ctx_err(
            line,
            format!(
                "{} is not a regular file, directory or symlink",
                fs_path.display()
            ),
        ));
    };
    add_parents(entries, image_path);
    let is_dir = kind == Kind::Dir;
    entries.insert(
        image_path.trim_end_matches('/').to_string(),
        Entry {
            kind,
            mode,
            uid: owner.uid,
            gid: owner.gid,
        },
    );
    if is_dir {
        let mut children: Vec<_> = fs::read_dir(fs_path)
            .map_err(io_err(line, fs_path))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        children.sort();
        for c in children {
            let child = format!(
                "{}/{}",
                image_path.trim_end_matches('/'),
                c.to_string_lossy()
            );
            add_path(entries, &fs_path.join(&c), &child, owner, line)?;
        }
    }
    Ok(())
}

/// Reads the file `lstat` described, refusing one swapped for another (a symlink,
/// say) between the check and the open: the opened file must be the same inode.
fn read_same_file(path: &Path, m: &fs::Metadata, line: usize) -> Result<Vec<u8>, BuildError> {
    let mut f = fs::File::open(path).map_err(io_err(line, path))?;
    let fm = f.metadata().map_err(io_err(line, path))?;
    if fm.ino() != m.ino() || fm.dev() != m.dev() || !fm.is_file() {
        return Err(ctx_err(
            line,
            format!("{} changed while it was read", path.display()),
        ));
    }
    let mut data = Vec::with_capacity(fm.len() as usize);
    f.read_to_end(&mut data).map_err(io_err(line, path))?;
    Ok(data)
}

/// A tar header block: `ustar` magic (POSIX) or, for old v7 archives, a valid checksum.
fn is_tar(b: &[u8]) -> bool {
    if b.len() < 512 {
        return false;
    }
    if &b[257..262] == b"ustar" {
        return true;
    }
    let stored = std::str::from_utf8(&b[148..156])
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok());
    let sum: u32 = b[..512]
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(x)
            }
        })
        .sum();
    b[0] != 0 && stored == Some(sum)
}

/// The tar inside a local ADD source, if it is one. Docker decides by content, not
/// by name: a gzip stream holding a tar, or a plain tar, is extracted.
fn as_archive(bytes: &[u8], path: &Path, line: usize) -> Result<Option<Vec<u8>>, BuildError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut tar = Vec::new();
        if flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut tar)
            .is_ok()
            && is_tar(&tar)
        {
            return Ok(Some(tar));
        }
        return Ok(None);
    }
    if is_tar(bytes) {
        return Ok(Some(bytes.to_vec()));
    }
    let name = path.to_string_lossy();
    let compressed = [".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst"];
    if compressed.iter().any(|s| name.ends_with(s)) {
        return Err(ctx_err(
            line,
            format!("ADD {name}: only plain and gzip-compressed tar archives are extracted"),
        ));
    }
    Ok(None)
}

/// ADD of a local archive: its entries land under `dest`, contained there.
fn extract(
    entries: &mut Entries,
    archive: &Path,
    tar_bytes: &[u8],
    dest: &str,
    owner: Option<&Owner>,
    line: usize,
) -> Result<(), BuildError> {
    let mut ar = tar::Archive::new(tar_bytes);
    let bad = |e: std::io::Error| {
        ctx_err(
            line,
            format!("cannot read archive {}: {e}", archive.display()),
        )
    };
    for e in ar.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        let name = e.path().map_err(bad)?.to_string_lossy().to_string();
        let target = normalize(&format!(
            "{}/{}",
            dest.trim_end_matches('/'),
            normalize(&name)
        ));
        let h = e.header();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = match owner {
            Some(o) => (o.uid, o.gid),
            None => (h.uid().unwrap_or(0), h.gid().unwrap_or(0)),
        };
        let kind = match h.entry_type() {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).map_err(bad)?;
                Kind::File(data)
            }
            tar::EntryType::Symlink => Kind::Symlink(
                e.link_name().map_err(bad)?.map(|l| l.to_string_lossy().to_string()).unwrap_or_default(),
            ),
            // A hard link names an earlier entry of the archive: copy its content.
            tar::EntryType::Link => {
                let to = e.link_name().map_err(bad)?.map(|l| l.to_string_lossy().to_string()).unwrap_or_default();
                let to = normalize(&format!("{}/{}", dest.trim_end_matches('/'), normalize(&to)));
                match entries.get(&to) {
                    Some(Entry { kind: k @ Kind::File(_), .. }) => k.clone(),
                    _ => return Err(ctx_err(line, format!("archive {}: hard link {name} points to {to}, which is not an earlier file of the archive", archive.display()))),
                }
            }
            tar::EntryType::XGlobalHeader => continue,
            other => return Err(ctx_err(line, format!("archive {} holds {name} of type {other:?}; only files, directories and symlinks are supported", archive.display()))),
        };
        if target == "/" {
            continue;
        }
        add_parents(entries, &target);
        entries.insert(
            target,
            Entry {
                kind,
                mode,
                uid,
                gid,
            },
        );
    }
    Ok(())
}

fn parse_owner(chown: Option<&str>) -> Option<Owner> {
    chown.map(|c| {
        let (u, g) = c.split_once(':').unwrap_or((c, c));
        Owner {
            uid: u.parse().unwrap_or(0),
            gid: g.parse().unwrap_or(0),
        }
    })
}

/// One COPY or ADD instruction, as the builder hands it to [`copy_layer`].
pub(crate) struct CopySpec<'a> {
    pub sources: &'a [String],
    pub dest: &'a str,
    /// `--chown=UID[:GID]`, numeric.
    pub chown: Option<&'a str>,
    /// ADD: local tar archives are extracted.
    pub extract_archives: bool,
    /// The Dockerfile line, for errors.
    pub line: usize,
}

/// The layer of one COPY/ADD.
pub(crate) fn copy_layer(
    context: &Path,
    spec: &CopySpec<'_>,
    workdir: &str,
    tree: &Tree,
) -> Result<Entries, BuildError> {
    let CopySpec {
        sources,
        dest,
        chown,
        extract_archives,
        line,
    } = *spec;
    let dest_abs = resolve_dest(dest, workdir);
    let owner_opt = parse_owner(chown);
    let owner = owner_opt.as_ref().unwrap_or(&Owner { uid: 0, gid: 0 });
    let mut matched = Vec::new();
    for s in sources {
        matched.extend(expand(context, s, line)?);
    }
    // buildkit: a destination ending in `/` or `/.` (or `.`) is a directory, and so is
    // one that already is a directory in the image.
    let trailing = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
    let dest_is_dir = trailing
        || matched.len() > 1
        || dest_abs == "/"
        || tree.get(dest_abs.trim_end_matches('/')) == Some(&Node::Dir);
    if matched.len() > 1 && !trailing {
        return Err(ctx_err(line, format!("with more than one source, the destination must be a directory ending in '/' (got '{dest}')")));
    }
    let mut entries = Entries::new();
    for (path, name) in matched {
        let m = fs::symlink_metadata(&path).map_err(io_err(line, &path))?;
        if m.is_dir() {
            // A directory's contents are copied, not the directory itself.
            let mut children: Vec<_> = fs::read_dir(&path)
                .map_err(io_err(line, &path))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect();
            children.sort();
            if dest_abs != "/" {
                add_path_dir(&mut entries, &dest_abs, owner);
            }
            for c in children {
                let image_path =
                    format!("{}/{}", dest_abs.trim_end_matches('/'), c.to_string_lossy());
                add_path(&mut entries, &path.join(&c), &image_path, owner, line)?;
            }
        } else if let Some(tar) = match extract_archives && m.is_file() {
            true => as_archive(&read_same_file(&path, &m, line)?, &path, line)?,
            false => None,
        } {
            extract(
                &mut entries,
                &path,
                &tar,
                &dest_abs,
                owner_opt.as_ref(),
                line,
            )?;
        } else {
            let image_path = if dest_is_dir {
                format!("{}/{name}", dest_abs.trim_end_matches('/'))
            } else {
                dest_abs.clone()
            };
            add_path(&mut entries, &path, &image_path, owner, line)?;
        }
    }
    Ok(entries)
}

/// Checks a layer's entries against what the build has made so far and records them.
/// An entry below a symlink (of this layer or an earlier one) is refused: whoever
/// unpacks the layer would write through the link, possibly out of the root.
pub(crate) fn commit(tree: &mut Tree, entries: &Entries, line: usize) -> Result<(), BuildError> {
    for path in entries.keys() {
        let mut anc = path.as_str();
        while let Some((parent, _)) = anc.rsplit_once('/') {
            if parent.is_empty() {
                break;
            }
            // A parent directory entry in this layer would replace an earlier
            // symlink when unpacked: refused too.
            let in_layer = entries
                .get(parent)
                .is_some_and(|e| matches!(e.kind, Kind::Symlink(_)));
            if in_layer || tree.get(parent) == Some(&Node::Symlink) {
                return Err(ctx_err(
                    line,
                    format!("{path} would be written through the symlink {parent}; berth build does not follow symlinks in the image"),
                ));
            }
            anc = parent;
        }
    }
    for (path, e) in entries {
        let node = match e.kind {
            Kind::Dir => Node::Dir,
            Kind::File(_) => Node::File,
            Kind::Symlink(_) => Node::Symlink,
        };
        tree.insert(path.clone(), node);
    }
    Ok(())
}

/// Records what a RUN's layer tar (from [`crate::diff::upper_to_tar`]) did to the
/// paths this build knows; returns how many entries the tar holds. A whiteout removes
/// its path and everything below it, an opaque marker everything below its directory.
pub(crate) fn apply_tar(
    tree: &mut Tree,
    tar_bytes: &[u8],
    line: usize,
) -> Result<usize, BuildError> {
    let bad =
        |e: std::io::Error| ctx_err(line, format!("the RUN layer is not a readable tar: {e}"));
    let remove_below = |tree: &mut Tree, dir: &str| {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        tree.retain(|p, _| !p.starts_with(&prefix));
    };
    let mut n = 0;
    for e in tar::Archive::new(tar_bytes).entries().map_err(bad)? {
        let e = e.map_err(bad)?;
        n += 1;
        let path = normalize(&e.path().map_err(bad)?.to_string_lossy());
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
        if name == crate::diff::OPAQUE_MARKER {
            remove_below(tree, parent);
        } else if let Some(gone) = name.strip_prefix(crate::diff::WHITEOUT_PREFIX) {
            let gone = format!("{parent}/{gone}");
            remove_below(tree, &gone);
            tree.remove(&gone);
        } else {
            let node = match e.header().entry_type() {
                tar::EntryType::Directory => Node::Dir,
                tar::EntryType::Symlink => Node::Symlink,
                _ => Node::File,
            };
            if node != Node::Dir {
                remove_below(tree, &path);
            }
            tree.insert(path, node);
        }
    }
    Ok(n)
}

fn add_path_dir(entries: &mut Entries, dir: &str, owner: &Owner) {
    add_parents(entries, dir.trim_end_matches('/'));
    entries.insert(
        dir.trim_end_matches('/').to_string(),
        Entry {
            kind: Kind::Dir,
            mode: 0o755,
            uid: owner.uid,
            gid: owner.gid,
        },
    );
}

/// The entries of a WORKDIR: the directory and its parents, or nothing when this
/// build already made it (or it is `/`).
pub(crate) fn dir_entries(dir: &str, tree: &Tree) -> Entries {
    let mut entries = Entries::new();
    let dir = dir.trim_end_matches('/');
    if !dir.is_empty() && tree.get(dir) != Some(&Node::Dir) {
        add_path_dir(&mut entries, dir, &Owner { uid: 0, gid: 0 });
    }
    entries
}

pub(crate) fn write_tar(entries: &Entries, line: usize) -> Result<Vec<u8>, BuildError> {
    let mut b = tar::Builder::new(Vec::new());
    let err = |e: std::io::Error| ctx_err(line, format!("cannot write layer: {e}"));
    for (path, e) in entries {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() {
            continue;
        }
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mode(e.mode);
        match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{rel}/"), std::io::empty())
                    .map_err(err)?;
            }
            Kind::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, rel, &data[..]).map_err(err)?;
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, rel, target).map_err(err)?;
            }
        }
    }
    b.into_inner().map_err(err)
}

/// gzip with no file name and mtime 0 (reproducible).
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("writing to memory");
    enc.finish().expect("writing to memory")
}
