//! Read-only questions about interfaces in the caller's network namespace, answered from
//! sysfs (`/sys/class/net`, see sysfs-class-net in the kernel's ABI docs) without spawning
//! `ip`, plus the listing the agent uses to find leftovers after a crash.

use std::io;
use std::path::{Path, PathBuf};

use crate::ip;

/// Where the kernel lists the interfaces of the namespace sysfs was mounted in.
pub const SYS_CLASS_NET: &str = "/sys/class/net";

/// Why a listing failed.
#[derive(Debug, thiserror::Error)]
#[error("reading {path}")]
pub struct ListError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn sys_path(name: &str) -> PathBuf {
    Path::new(SYS_CLASS_NET).join(name)
}

/// Whether an interface with this (validated) name exists.
pub fn link_exists(name: &str) -> bool {
    sys_path(name).exists()
}

/// Whether the interface is a Linux bridge (bridges have a `bridge/` directory).
pub fn is_bridge(name: &str) -> bool {
    sys_path(name).join("bridge").is_dir()
}

/// Whether the interface is a veth (asked of `ip -d`, since sysfs does not show the kind).
pub fn is_veth(name: &str) -> Result<bool, ip::IpError> {
    let out = ip::run(
        "inspect interface",
        name,
        &["-d", "-o", "link", "show", "dev", name],
    )?;
    Ok(out.split_whitespace().any(|w| w == "veth"))
}

/// Names, sorted, of the entries of `dir` starting with `prefix`; a missing `dir` is empty.
pub(crate) fn list_dir_with_prefix(dir: &Path, prefix: &str) -> Result<Vec<String>, ListError> {
    let err = |source| ListError {
        path: dir.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(err)?;
        if let Some(name) = entry.file_name().to_str() {
            if name.starts_with(prefix) {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Interfaces of the caller's namespace whose names start with `prefix`, sorted (for
/// removing veths and bridges left behind by a crash).
pub fn list_links_with_prefix(prefix: &str) -> Result<Vec<String>, ListError> {
    list_dir_with_prefix(Path::new(SYS_CLASS_NET), prefix)
}
