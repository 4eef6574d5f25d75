//! Container logs: what a container writes to stdout and stderr, one JSON line per
//! line of output (`{"time": <unix ms>, "stream": "stdout", "log": "..."}`, like
//! Docker's json-file driver), rotated by size so that a chatty container cannot fill
//! the disk. The shim writes them; the agent and the API read them.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest log file before it is rotated, in bytes.
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated files kept (`container.log.1` .. `.N`), besides the live one.
pub const KEEP_ROTATED: usize = 2;
/// A line longer than this is split into several events, in bytes (Docker: 16 KiB).
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// One line of output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix time in milliseconds when the line was read from the container.
    pub time: u64,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line without its newline.
    pub log: String,
}

/// Appends events to `path`, rotating it past [`MAX_FILE_BYTES`].
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Writer {
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::with_limit(path, MAX_FILE_BYTES)
    }

    pub fn with_limit(path: &Path, max_bytes: u64) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
        })
    }

    pub fn write(&mut self, e: &Event) -> io::Result<()> {
        let mut line = serde_json::to_vec(e).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        for n in (1..KEEP_ROTATED).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Splits raw output into lines; a trailing partial line is kept until its newline
/// comes, or flushed at [`MAX_LINE_BYTES`].
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; returns the complete lines.
    pub fn push(&mut self, data: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in data {
            if b == b'\n' {
                out.push(String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned());
            } else {
                self.pending.push(b);
                if self.pending.len() >= MAX_LINE_BYTES {
                    out.push(
                        String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned(),
                    );
                }
            }
        }
        out
    }

    /// What is left at end of stream.
    pub fn finish(&mut self) -> Option<String> {
        (!self.pending.is_empty())
            .then(|| String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned())
    }
}

/// Every event kept for a container, oldest first (rotated files, then the live one).
pub fn read_all(path: &Path) -> io::Result<Vec<Event>> {
    let mut files: Vec<PathBuf> = (1..=KEEP_ROTATED).rev().map(|n| rotated(path, n)).collect();
    files.push(path.to_path_buf());
    let mut out = Vec::new();
    for f in files {
        let file = match File::open(&f) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in BufReader::new(file).lines() {
            // A torn last line (the writer died mid-write) is skipped.
            if let Ok(e) = serde_json::from_str::<Event>(&line?) {
                out.push(e);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines are split on newlines; long lines are cut; the tail comes at the end.
    #[test]
    fn splitting() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"a\nb"), vec!["a"]);
        assert_eq!(s.push(b"c\n\n"), vec!["bc", ""]);
        assert_eq!(s.push(b"tail"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("tail"));
        let long = vec![b'x'; MAX_LINE_BYTES + 1];
        assert_eq!(s.push(&long).len(), 1);
    }

    /// Rotation keeps the newest events and never more than the limit per file.
    #[test]
    fn rotation_keeps_order() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.log");
        let mut w = Writer::with_limit(&p, 200).unwrap();
        for i in 0..40 {
            w.write(&Event {
                time: i,
                stream: "stdout".into(),
                log: format!("line {i}"),
            })
            .unwrap();
        }
        let all = read_all(&p).unwrap();
        assert!(all.len() < 40, "old events were rotated away");
        assert_eq!(all.last().unwrap().log, "line 39");
        assert!(all.windows(2).all(|w| w[0].time < w[1].time));
        assert!(std::fs::metadata(&p).unwrap().len() <= 200);
        assert!(!rotated(&p, KEEP_ROTATED + 1).exists());
    }
}
