//! Reading a container's cgroup: which hierarchy the host has (v1, hybrid or v2, as
//! runc decides it: `/sys/fs/cgroup` being cgroup2 means unified), memory use, OOM
//! kills and CPU time. Writing limits is runc's job (from the spec).

use std::path::{Path, PathBuf};

/// The cgroup layout of this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// cgroup v1 controllers (also the "hybrid" layout this machine has).
    V1,
    /// The unified hierarchy.
    V2,
}

/// Where the cgroup filesystem is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl Mode {
    /// v2 when `/sys/fs/cgroup` itself is the unified hierarchy.
    pub fn detect() -> Mode {
        Self::detect_at(Path::new(CGROUP_ROOT))
    }

    pub fn detect_at(root: &Path) -> Mode {
        if root.join("cgroup.controllers").exists() {
            Mode::V2
        } else {
            Mode::V1
        }
    }
}

/// Memory and CPU figures of one cgroup, as read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub memory_usage_bytes: u64,
    pub memory_max_usage_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub oom_kills: u64,
    /// Total CPU time in nanoseconds.
    pub cpu_usage_ns: u64,
    pub pids: u64,
}

/// One container's cgroup (runc's `cgroupsPath`, absolute inside each hierarchy).
#[derive(Debug, Clone)]
pub struct Cgroup {
    root: PathBuf,
    mode: Mode,
    path: String,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`memory.events`, `memory.oom_control`, `cpu.stat`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl Cgroup {
    pub fn new(cgroups_path: &str) -> Self {
        Self::at(Path::new(CGROUP_ROOT), Mode::detect(), cgroups_path)
    }

    pub fn at(root: &Path, mode: Mode, cgroups_path: &str) -> Self {
        Cgroup {
            root: root.to_path_buf(),
            mode,
            path: cgroups_path.trim_start_matches('/').to_string(),
        }
    }

    fn file(&self, controller: &str, name: &str) -> PathBuf {
        match self.mode {
            Mode::V1 => self.root.join(controller).join(&self.path).join(name),
            Mode::V2 => self.root.join(&self.path).join(name),
        }
    }

    /// Whatever can be read now (missing files read as zero: the cgroup may be gone).
    pub fn stats(&self) -> Stats {
        match self.mode {
            Mode::V1 => {
                let oom = std::fs::read_to_string(self.file("memory", "memory.oom_control"))
                    .ok()
                    .and_then(|t| keyed(&t, "oom_kill"))
                    .unwrap_or(0);
                let limit = read_u64(&self.file("memory", "memory.limit_in_bytes"))
                    .filter(|&l| l < (1 << 62));
                Stats {
                    memory_usage_bytes: read_u64(&self.file("memory", "memory.usage_in_bytes"))
                        .unwrap_or(0),
                    memory_max_usage_bytes: read_u64(
                        &self.file("memory", "memory.max_usage_in_bytes"),
                    )
                    .unwrap_or(0),
                    memory_limit_bytes: limit,
                    oom_kills: oom,
                    cpu_usage_ns: read_u64(&self.file("cpuacct", "cpuacct.usage")).unwrap_or(0),
                    pids: read_u64(&self.file("pids", "pids.current")).unwrap_or(0),
                }
            }
            Mode::V2 => {
                let events =
                    std::fs::read_to_string(self.file("", "memory.events")).unwrap_or_default();
                let cpu = std::fs::read_to_string(self.file("", "cpu.stat")).unwrap_or_default();
                let limit = std::fs::read_to_string(self.file("", "memory.max"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                Stats {
                    memory_usage_bytes: read_u64(&self.file("", "memory.current")).unwrap_or(0),
                    memory_max_usage_bytes: read_u64(&self.file("", "memory.peak")).unwrap_or(0),
                    memory_limit_bytes: limit,
                    oom_kills: keyed(&events, "oom_kill").unwrap_or(0),
                    cpu_usage_ns: keyed(&cpu, "usage_usec").unwrap_or(0) * 1000,
                    pids: read_u64(&self.file("", "pids.current")).unwrap_or(0),
                }
            }
        }
    }

    /// The CPU weight runc applied (`cpu.shares` on v1, `cpu.weight` on v2).
    pub fn cpu_weight(&self) -> Option<u64> {
        match self.mode {
            Mode::V1 => read_u64(&self.file("cpu", "cpu.shares")),
            Mode::V2 => read_u64(&self.file("", "cpu.weight")),
        }
    }

    /// The cgroup's directories (for clean-up): in every mounted v1 hierarchy (runc
    /// makes the cgroup in each one it finds), or the one of the unified hierarchy.
    pub fn dirs(&self) -> Vec<PathBuf> {
        match self.mode {
            Mode::V1 => std::fs::read_dir(&self.root)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.path().join(&self.path))
                .collect(),
            Mode::V2 => vec![self.root.join(&self.path)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flat-keyed files are read by key.
    #[test]
    fn keyed_files() {
        let t = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(t, "oom_kill"), Some(3));
        assert_eq!(keyed(t, "missing"), None);
    }

    /// v1 and v2 layouts are read from their files.
    #[test]
    fn stats_from_both_layouts() {
        let d = tempfile::tempdir().unwrap();
        let v1 = d.path().join("v1");
        std::fs::create_dir_all(v1.join("memory/berth/x")).unwrap();
        std::fs::write(v1.join("memory/berth/x/memory.oom_control"), "oom_kill 1\n").unwrap();
        std::fs::write(
            v1.join("memory/berth/x/memory.max_usage_in_bytes"),
            "1048576\n",
        )
        .unwrap();
        let s = Cgroup::at(&v1, Mode::V1, "/berth/x").stats();
        assert_eq!((s.oom_kills, s.memory_max_usage_bytes), (1, 1 << 20));
        std::fs::create_dir_all(v1.join("pids")).unwrap();
        let mut dirs = Cgroup::at(&v1, Mode::V1, "/berth/x").dirs();
        dirs.sort();
        assert_eq!(dirs, [v1.join("memory/berth/x"), v1.join("pids/berth/x")]);
        let v2 = d.path().join("v2");
        std::fs::create_dir_all(v2.join("berth/x")).unwrap();
        std::fs::write(v2.join("cgroup.controllers"), "memory\n").unwrap();
        std::fs::write(
            v2.join("berth/x/memory.events"),
            "low 0\noom 1\noom_kill 2\n",
        )
        .unwrap();
        std::fs::write(v2.join("berth/x/memory.max"), "max\n").unwrap();
        assert_eq!(Mode::detect_at(&v2), Mode::V2);
        let s = Cgroup::at(&v2, Mode::V2, "/berth/x").stats();
        assert_eq!((s.oom_kills, s.memory_limit_bytes), (2, None));
    }
}
