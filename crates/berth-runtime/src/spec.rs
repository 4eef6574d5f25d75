//! The OCI runtime spec (`config.json`) of one container: pure, from a
//! [`ContainerSpec`] and the host facts it needs handed in ([`HostLimits`]).
//!
//! The privileges are Docker's defaults (moby `oci/defaults.go`): its 14 capabilities,
//! masked and read-only `/proc` paths, `/sys` read-only, a seccomp filter refusing the
//! syscalls Docker's default profile refuses — plus `noNewPrivileges`.

use std::path::PathBuf;

use oci_spec::runtime::Spec;
use serde_json::{json, Value};

use crate::seccomp;

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Docker's masked paths (moby `oci/defaults.go`).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Open files per container (Docker's default `nofile`), clamped to the host's hard
/// limit: raising an rlimit above it needs CAP_SYS_RESOURCE, which berth may not have.
pub const DEFAULT_NOFILE: u64 = 1_048_576;
/// Processes per container when the task definition says nothing (a fork bomb stops here).
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;
/// The CFS period berth sets with a quota, in microseconds (the kernel's default).
pub const CFS_PERIOD_US: u64 = 100_000;
/// Smallest `cpu.shares` the kernel accepts (ECS: a container with cpu 0 gets 2).
pub const MIN_CPU_SHARES: u64 = 2;

/// How the container's network namespace is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetNs {
    /// Join this existing namespace (`awsvpc`, `bridge`, `none`: the agent made it).
    Path(PathBuf),
    /// The host's network namespace (`host` mode).
    Host,
    /// A fresh namespace of its own, made by runc: only a loopback device, which is
    /// down (`berth build`'s `RUN` has no network).
    New,
}

/// Everything the runtime needs to know about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The mounted root filesystem (the overlay mount point).
    pub rootfs: PathBuf,
    /// argv; the first element is resolved in the container's PATH by runc.
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs.
    pub env: Vec<String>,
    /// Working directory inside the container (absolute).
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    pub readonly_rootfs: bool,
    /// ECS `cpu` units of the container (1024 = one CPU): relative weight.
    pub cpu_shares: Option<u64>,
    /// Hard CPU cap in ECS units (task-level cpu on Fargate): CFS quota.
    pub cpu_limit_units: Option<u64>,
    /// Hard memory limit in MiB (ECS `memory`).
    pub memory_mib: Option<u64>,
    /// Soft memory limit in MiB (ECS `memoryReservation`).
    pub memory_reservation_mib: Option<u64>,
    pub pids_limit: Option<i64>,
    pub netns: NetNs,
    /// cgroupsPath handed to runc (e.g. `/berth/<task>/<container>`).
    pub cgroups_path: String,
    /// Host files bind-mounted into the container: (host path, container path, read-only).
    pub binds: Vec<(PathBuf, String, bool)>,
}

/// Facts about the host the spec depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// The hard `RLIMIT_NOFILE` of the process that will run runc.
    pub nofile_hard: u64,
}

impl HostLimits {
    /// This process's limits.
    pub fn current() -> Self {
        let r = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        HostLimits {
            nofile_hard: r.maximum.unwrap_or(u64::MAX),
        }
    }
}

/// Builds the OCI runtime spec.
pub fn build(c: &ContainerSpec, host: HostLimits) -> Result<Spec, serde_json::Error> {
    let caps: Vec<&str> = DEFAULT_CAPABILITIES.to_vec();
    let nofile = DEFAULT_NOFILE.min(host.nofile_hard);
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match &c.netns {
        NetNs::Path(p) => namespaces.push(json!({"type": "network", "path": p})),
        // No path: runc unshares a new, empty one (runtime-spec config-linux.md).
        NetNs::New => namespaces.push(json!({"type": "network"})),
        NetNs::Host => {}
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for (src, dst, ro) in &c.binds {
        let mut options = vec!["rbind", "rprivate", "nosuid", "nodev"];
        if *ro {
            options.push("ro");
        }
        mounts.push(json!({"destination": dst, "type": "bind", "source": src, "options": options}));
    }
    let mut memory = serde_json::Map::new();
    if let Some(m) = c.memory_mib {
        let bytes = m * 1024 * 1024;
        memory.insert("limit".into(), json!(bytes));
        // No swap beyond the limit: the limit is what the task definition promised.
        memory.insert("swap".into(), json!(bytes));
    }
    if let Some(r) = c.memory_reservation_mib {
        memory.insert("reservation".into(), json!(r * 1024 * 1024));
    }
    let mut cpu = serde_json::Map::new();
    if let Some(s) = c.cpu_shares {
        cpu.insert("shares".into(), json!(s.max(MIN_CPU_SHARES)));
    }
    if let Some(units) = c.cpu_limit_units {
        let quota = (units * CFS_PERIOD_US / 1024).max(1000);
        cpu.insert("quota".into(), json!(quota));
        cpu.insert("period".into(), json!(CFS_PERIOD_US));
    }
    let spec = json!({
        "ociVersion": "1.0.2",
        "root": {"path": c.rootfs, "readonly": c.readonly_rootfs},
        "hostname": c.hostname,
        "process": {
            "terminal": false,
            "user": {"uid": c.uid, "gid": c.gid, "additionalGids": c.additional_gids},
            "args": c.args,
            "env": c.env,
            "cwd": c.cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": true,
        },
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": c.cgroups_path,
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": memory,
                "cpu": cpu,
                "pids": {"limit": c.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT)},
            },
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": seccomp::default_profile(),
        },
    });
    serde_json::from_value(spec)
}

/// The spec as JSON (what runc reads).
pub fn to_json(spec: &Spec) -> Value {
    serde_json::to_value(spec).expect("an OCI spec serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ContainerSpec {
        ContainerSpec {
            rootfs: "/r".into(),
            args: vec!["/bin/true".into()],
            env: vec!["A=1".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            hostname: "h".into(),
            readonly_rootfs: false,
            cpu_shares: Some(0),
            cpu_limit_units: Some(512),
            memory_mib: Some(64),
            memory_reservation_mib: Some(32),
            pids_limit: None,
            netns: NetNs::Path("/var/run/netns/x".into()),
            cgroups_path: "/berth/t/c".into(),
            binds: vec![("/h/hosts".into(), "/etc/hosts".into(), true)],
        }
    }

    /// The rlimit is clamped to the host's hard limit (no CAP_SYS_RESOURCE needed).
    #[test]
    fn nofile_clamped_to_hard_limit() {
        let s = to_json(&build(&sample(), HostLimits { nofile_hard: 4096 }).unwrap());
        assert_eq!(s["process"]["rlimits"][0]["hard"], json!(4096));
        let s = to_json(
            &build(
                &sample(),
                HostLimits {
                    nofile_hard: u64::MAX,
                },
            )
            .unwrap(),
        );
        assert_eq!(s["process"]["rlimits"][0]["hard"], json!(DEFAULT_NOFILE));
    }

    /// ECS units become shares (at least 2) and a CFS quota; MiB become bytes.
    #[test]
    fn resources_from_ecs_units() {
        let s = to_json(&build(&sample(), HostLimits { nofile_hard: 1024 }).unwrap());
        let r = &s["linux"]["resources"];
        assert_eq!(r["cpu"]["shares"], json!(2));
        assert_eq!(r["cpu"]["quota"], json!(50_000));
        assert_eq!(r["memory"]["limit"], json!(64 * 1024 * 1024));
        assert_eq!(r["memory"]["swap"], json!(64 * 1024 * 1024));
        assert_eq!(r["memory"]["reservation"], json!(32 * 1024 * 1024));
        assert_eq!(r["pids"]["limit"], json!(DEFAULT_PIDS_LIMIT));
    }

    /// Docker's default privileges: 14 capabilities, no_new_privs, masked paths, seccomp.
    #[test]
    fn docker_default_privileges() {
        let s = to_json(&build(&sample(), HostLimits { nofile_hard: 1024 }).unwrap());
        let caps = s["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(caps.len(), 14);
        assert!(!caps.contains(&json!("CAP_SYS_ADMIN")));
        assert_eq!(s["process"]["noNewPrivileges"], json!(true));
        assert!(s["linux"]["maskedPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/kcore")));
        assert_eq!(
            s["linux"]["seccomp"]["defaultAction"],
            json!("SCMP_ACT_ALLOW")
        );
        let ns: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "network"]);
    }

    /// Host networking joins no network namespace.
    #[test]
    fn host_network_has_no_netns() {
        let mut c = sample();
        c.netns = NetNs::Host;
        let s = to_json(&build(&c, HostLimits { nofile_hard: 1024 }).unwrap());
        assert!(!s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
    }

    /// A new network namespace has no path: runc creates it, empty.
    #[test]
    fn new_network_namespace_has_no_path() {
        let mut c = sample();
        c.netns = NetNs::New;
        let s = to_json(&build(&c, HostLimits { nofile_hard: 1024 }).unwrap());
        let ns = s["linux"]["namespaces"].as_array().unwrap();
        let net: Vec<&Value> = ns.iter().filter(|n| n["type"] == "network").collect();
        assert_eq!(net, vec![&json!({"type": "network"})]);
    }
}
