//! The generated spec under the real runc: output, exit codes, isolation, limits and
//! privileges. Needs root, runc and busybox-static (`make test` installs them).

use std::path::{Path, PathBuf};

use berth_runtime::rootfs::Rootfs;
use berth_runtime::runc::Runc;
use berth_runtime::spec::{self, ContainerSpec, HostLimits, NetNs};

/// A busybox root filesystem in `dir`.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("lower");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for app in [
        "sh", "cat", "echo", "true", "hostname", "ps", "grep", "touch", "head", "dd", "sleep",
        "unshare", "id",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
    }
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    root
}

fn unique(tag: &str) -> String {
    let mut b = [0u8; 4];
    getrandom(&mut b);
    format!(
        "berth-test-{tag}-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

fn getrandom(b: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(b)
        .unwrap();
}

/// A container run in the foreground; deleted (and its cgroup with it) on drop.
struct Run {
    runc: Runc,
    id: String,
    _dir: tempfile::TempDir,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.runc.delete(&self.id);
    }
}

fn sample(rootfs: PathBuf, args: &[&str], cgroup: &str) -> ContainerSpec {
    ContainerSpec {
        rootfs,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        additional_gids: vec![],
        hostname: "box".into(),
        readonly_rootfs: false,
        cpu_shares: Some(256),
        cpu_limit_units: None,
        memory_mib: Some(64),
        memory_reservation_mib: None,
        pids_limit: None,
        netns: NetNs::Host,
        cgroups_path: format!("/berth-test/{cgroup}"),
        binds: vec![],
    }
}

/// Runs `args` to completion; returns (exit code, stdout, stderr).
fn run(args: &[&str], tweak: impl FnOnce(&mut ContainerSpec)) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let id = unique("run");
    let mut c = sample(busybox_rootfs(dir.path()), args, &id);
    tweak(&mut c);
    let s = spec::build(&c, HostLimits::current()).unwrap();
    s.save(dir.path().join("config.json")).unwrap();
    let runc = Runc::new("runc", dir.path().join("runc-root"));
    let guard = Run {
        runc: runc.clone(),
        id: id.clone(),
        _dir: dir,
    };
    let out = runc
        .command()
        .arg("run")
        .arg("--bundle")
        .arg(guard._dir.path())
        .arg(&id)
        .output()
        .expect("runc runs");
    drop(guard);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Output and exit codes come back as the container made them.
#[test]
fn output_and_exit_code() {
    let (code, out, _) = run(&["sh", "-c", "echo hello; exit 7"], |_| {});
    assert_eq!((code, out.as_str()), (7, "hello\n"));
}

/// The container has its own pid and uts namespaces: it is pid 1, alone, named as asked.
#[test]
fn pid_and_uts_isolation() {
    let (code, out, err) = run(
        &["sh", "-c", "echo $$; ps -o pid | wc -l; hostname"],
        |_| {},
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1");
    assert_eq!(lines[2], "box");
    // header + sh + ps + wc
    assert!(lines[1].trim().parse::<u32>().unwrap() <= 4, "{out}");
}

/// Docker's capability set and no_new_privs; seccomp refuses unshare and mount.
#[test]
fn default_privileges() {
    let (code, out, err) = run(
        &["sh", "-c", "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; unshare -n true && echo UNSHARED; echo done"],
        |_| {},
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(!out.contains("UNSHARED"), "{out}");
}

/// A process above its memory limit is killed by the kernel's OOM killer.
#[test]
fn memory_limit_kills() {
    let (code, _, err) = run(
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/shm/fill bs=1M count=200",
        ],
        |c| {
            c.memory_mib = Some(16);
        },
    );
    assert_eq!(code, 137, "{err}");
}

/// readonlyRootFilesystem makes the root read-only.
#[test]
fn readonly_root() {
    let (code, _, err) = run(&["touch", "/x"], |c| c.readonly_rootfs = true);
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
}

/// A user from the task definition runs the process.
#[test]
fn runs_as_user() {
    let (code, out, _) = run(&["id", "-u"], |c| {
        c.uid = 1234;
        c.gid = 1234;
    });
    assert_eq!((code, out.trim()), (0, "1234"));
}

/// An overlay root: the container's writes land in its upper dir, not the snapshot.
#[test]
fn overlay_keeps_lower_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let lower = busybox_rootfs(dir.path());
    let fs = Rootfs::new(dir.path().join("c"));
    let target = fs.mount(std::slice::from_ref(&lower)).unwrap();
    struct Unmount(Rootfs);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = self.0.unmount();
        }
    }
    let guard = Unmount(fs);
    std::fs::write(target.join("tmp/new"), "x").unwrap();
    assert!(dir.path().join("c/upper/tmp/new").exists());
    assert!(!lower.join("tmp/new").exists());
    guard.0.unmount().unwrap();
    assert!(!guard.0.is_mounted());
}
