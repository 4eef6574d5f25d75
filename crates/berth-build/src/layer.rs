//! Layer tars: the files a COPY/ADD/WORKDIR adds, collected from the context and
//! written as a sorted, timestamp-free tar.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
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

type Entries = BTreeMap<String, Entry>;

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
        Kind::File(fs::read(fs_path).map_err(io_err(line, fs_path))?)
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

fn is_archive(name: &str) -> bool {
    name.ends_with(".tar") || name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// ADD of a local archive: its entries land under `dest`, contained there.
fn extract(
    entries: &mut Entries,
    archive: &Path,
    dest: &str,
    owner: Option<&Owner>,
    line: usize,
) -> Result<(), BuildError> {
    let bytes = fs::read(archive).map_err(io_err(line, archive))?;
    let reader: Box<dyn Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(&bytes[..]))
    } else {
        Box::new(&bytes[..])
    };
    let mut ar = tar::Archive::new(reader);
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

/// The layer of one COPY/ADD.
pub(crate) fn copy_layer(
    context: &Path,
    sources: &[String],
    dest: &str,
    workdir: &str,
    chown: Option<&str>,
    extract_archives: bool,
    line: usize,
) -> Result<Vec<u8>, BuildError> {
    let dest_abs = resolve_dest(dest, workdir);
    let owner_opt = parse_owner(chown);
    let owner = owner_opt.as_ref().unwrap_or(&Owner { uid: 0, gid: 0 });
    let mut matched = Vec::new();
    for s in sources {
        matched.extend(expand(context, s, line)?);
    }
    let dest_is_dir = dest.ends_with('/') || matched.len() > 1;
    if matched.len() > 1 && !dest.ends_with('/') {
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
        } else if extract_archives && m.is_file() && is_archive(&name) {
            extract(&mut entries, &path, &dest_abs, owner_opt.as_ref(), line)?;
        } else {
            let image_path = if dest_is_dir {
                format!("{}/{name}", dest_abs.trim_end_matches('/'))
            } else {
                dest_abs.clone()
            };
            add_path(&mut entries, &path, &image_path, owner, line)?;
        }
    }
    write_tar(&entries, line)
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

/// The layer of a WORKDIR: the directory and its parents.
pub(crate) fn dir_layer(dir: &str, line: usize) -> Result<Vec<u8>, BuildError> {
    let mut entries = Entries::new();
    if !dir.trim_end_matches('/').is_empty() {
        add_path_dir(&mut entries, dir, &Owner { uid: 0, gid: 0 });
    }
    write_tar(&entries, line)
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
