//! Arbitrary bytes as a layer: `unpack_layer` must not panic, and nothing may appear,
//! change or disappear in the temporary parent outside the destination directory.
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_image::Limits;
use libfuzzer_sys::fuzz_target;

/// Small bounds so one input cannot take long or fill the disk.
fn limits() -> Limits {
    Limits {
        max_uncompressed_bytes: 4 * 1024 * 1024,
        max_entries: 256,
        max_path_bytes: 4096,
        max_pax_header_bytes: 64 * 1024,
    }
}

/// Everything under `parent` except inside `dest`, symlinks not followed.
fn outside(parent: &Path, dest: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![parent.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).expect("stat");
        let content = if m.is_file() {
            format!("{:?}", fs::read(&p).expect("read"))
        } else {
            String::new()
        };
        if p != dest {
            out.insert(p.clone(), format!("{:o} {} {} {} {content}", m.mode(), m.uid(), m.size(), m.nlink()));
            if m.is_dir() {
                for e in fs::read_dir(&p).expect("list") {
                    stack.push(e.expect("entry").path());
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let parent = tempfile::tempdir().expect("tempdir");
    // Nested so that `..` chains from dest stay inside the observed parent.
    let dest = parent.path().join("a/b/dest");
    fs::create_dir_all(&dest).expect("mkdir");
    fs::write(parent.path().join("sentinel"), b"untouched").expect("write");
    fs::create_dir(parent.path().join("outside")).expect("mkdir");
    let before = outside(parent.path(), &dest);
    let _ = berth_image::unpack_layer(data, &dest, &limits());
    assert_eq!(outside(parent.path(), &dest), before, "a layer wrote outside dest");
});
