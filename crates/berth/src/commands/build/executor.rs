//! `RUN` for `berth build`: each command runs under runc in a container of the image
//! built so far, and what it changed becomes the layer.
//!
//! Per build: a temporary directory holding every layer unpacked once (by
//! `berth_image::unpack_layer`, the safe unpacker, as overlayfs lower directories), an
//! "init" lower directory on top with the mount points runc needs (`/proc`, `/sys`,
//! `/dev`; moby's init layer does the same, so they never show up in a RUN's diff),
//! and runc's state root. Per RUN: a fresh overlay upper, an OCI bundle, `runc run` in
//! the foreground, then the upper directory as a layer tar
//! (`berth_build::diff::upper_to_tar`). Guards unmount, `runc delete --force` and
//! remove the directories on every path out, errors included.
//!
//! RUN has no network: a new, empty network namespace (`NetNs::New`).
//!
//! Ctrl-C (counted by a SIGINT handler while the build runs) kills the running RUN
//! container and fails the build, so the guards still clean up; SIGKILL or SIGTERM of
//! `berth build` itself leaves the build's temporary directory and mounts behind.

use std::collections::HashMap;
use std::os::fd::AsFd as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_build::{BuildError, LayerRef, RunExecutor};
use berth_client::RegistryClient;
use berth_runtime::rootfs::Rootfs;
use berth_runtime::runc::Runc;
use berth_runtime::spec::{self, ContainerSpec, HostLimits, NetNs};
use serde_json::Value;

use crate::commands::client::{bar, short};

/// PATH when the image sets none (moby `oci.DefaultPathEnv` on Linux).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The hostname a RUN sees.
const HOSTNAME: &str = "berth-build";
/// Parent of every RUN's cgroup.
const CGROUP_PARENT: &str = "/berth-build";
/// How often the wait for runc looks for Ctrl-C.
const WAIT_POLL: Duration = Duration::from_millis(50);
/// Mount points of the runtime spec that must exist in the root filesystem.
const MOUNT_POINTS: [&str; 3] = ["proc", "sys", "dev"];

/// Runs `RUN`s with runc; see the module doc.
pub struct RuncExecutor<'a> {
    reg: &'a RegistryClient,
    /// Where the base image's blobs are fetched from.
    base_repo: Option<String>,
    runc: Runc,
    /// Removed (with everything in it) when the executor is dropped, unless something
    /// is still mounted in it.
    dir: PathBuf,
    /// Layer digest → its unpacked lower directory.
    unpacked: HashMap<String, PathBuf>,
    init: PathBuf,
    runs: usize,
    /// Ctrl-C presses since the build started.
    interrupts: Arc<AtomicUsize>,
}

/// The error of a RUN's `step`, with its cause.
fn run_error(
    line: usize,
    args: &[String],
    step: impl Into<String>,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> BuildError {
    BuildError::Run {
        line,
        command: args.join(" "),
        step: step.into(),
        source: Some(source.into()),
    }
}

impl<'a> RuncExecutor<'a> {
    /// A temporary directory under `tmp` for this build's layers and runs.
    pub fn new(
        reg: &'a RegistryClient,
        base_repo: Option<String>,
        runc_binary: &Path,
        tmp: &Path,
        interrupts: Arc<AtomicUsize>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let dir = tempfile::Builder::new()
            .prefix("berth-build-")
            .tempdir_in(tmp)
            .with_context(|| format!("cannot create a build directory in {}", tmp.display()))?
            .keep();
        // Built first, so that its Drop removes the directory if what follows fails.
        let this = RuncExecutor {
            reg,
            base_repo,
            runc: Runc::new(runc_binary, dir.join("runc")),
            init: dir.join("init"),
            dir,
            unpacked: HashMap::new(),
            runs: 0,
            interrupts,
        };
        let init = &this.init;
        for m in MOUNT_POINTS {
            std::fs::create_dir_all(init.join(m))
                .with_context(|| format!("cannot create {}", init.join(m).display()))?;
        }
        Ok(this)
    }

    /// The lower directory of `layer`, unpacked now if this build has not yet.
    fn lower(
        &mut self,
        layer: &LayerRef<'_>,
        line: usize,
        args: &[String],
    ) -> Result<PathBuf, BuildError> {
        let digest = &layer.descriptor.digest;
        if let Some(d) = self.unpacked.get(digest) {
            return Ok(d.clone());
        }
        let fetched;
        let blob: &[u8] = match layer.blob {
            Some(b) => b,
            None => {
                let repo = self.base_repo.as_deref().unwrap_or_default();
                let pb = bar(&short(digest), layer.descriptor.size);
                let mut buf = Vec::new();
                self.reg
                    .get_blob(repo, digest, &mut buf, &|n| pb.inc(n))
                    .map_err(|e| {
                        run_error(line, args, format!("fetching base layer {digest}"), e)
                    })?;
                pb.finish_with_message("fetched");
                fetched = buf;
                &fetched
            }
        };
        let dest = self.dir.join("l").join(self.unpacked.len().to_string());
        std::fs::create_dir_all(&dest)
            .map_err(|e| run_error(line, args, format!("creating {}", dest.display()), e))?;
        berth_image::unpack_layer(blob, &dest, &berth_image::Limits::default())
            .map_err(|e| run_error(line, args, format!("unpacking layer {digest}"), e))?;
        self.unpacked.insert(digest.clone(), dest.clone());
        Ok(dest)
    }
}

impl Drop for RuncExecutor<'_> {
    fn drop(&mut self) {
        // Best effort: another build may be using the parent cgroup.
        remove_cgroup(CGROUP_PARENT);
        // Never remove through a mount: that would delete what the overlay shows.
        let mounted = berth_runtime::rootfs::mounts_under(&self.dir).is_none_or(|m| !m.is_empty());
        if mounted {
            eprintln!(
                "warning: {} still has a mount in it; left in place",
                self.dir.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("warning: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// One RUN's container: dropped, it is deleted, its overlay unmounted and its
/// directory removed, whether the RUN succeeded or not.
struct RunGuard<'r> {
    runc: &'r Runc,
    id: String,
    rootfs: Rootfs,
    cgroups_path: String,
}

impl RunGuard<'_> {
    /// Stops everything that could still change the upper directory.
    fn stop(&self) -> Result<(), String> {
        let deleted = self.runc.delete(&self.id).map_err(|e| e.to_string());
        let unmounted = self.rootfs.unmount().map_err(|e| e.to_string());
        deleted.and(unmounted)
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(container = %self.id, error = %e, "cleaning up a RUN container");
        }
        remove_cgroup(&self.cgroups_path);
        if !self.rootfs.is_mounted() {
            let _ = std::fs::remove_dir_all(&self.rootfs.dir);
        }
    }
}

impl RunExecutor for RuncExecutor<'_> {
    fn run(
        &mut self,
        layers: &[LayerRef<'_>],
        config: &Value,
        args: &[String],
        line: usize,
    ) -> Result<Vec<u8>, BuildError> {
        let command = args.join(" ");
        if self.interrupts.load(Ordering::SeqCst) > 0 {
            return Err(run_error(line, args, "interrupted", "Ctrl-C"));
        }
        eprintln!("#{line} RUN {command}");
        let mut lowers = Vec::with_capacity(layers.len() + 1);
        for l in layers {
            lowers.push(self.lower(l, line, args)?);
        }
        lowers.push(self.init.clone());
        self.runs += 1;
        let id = format!("berth-build-{}-{}", std::process::id(), self.runs);
        let guard = RunGuard {
            runc: &self.runc,
            id: id.clone(),
            rootfs: Rootfs::new(self.dir.join(format!("r{}", self.runs))),
            cgroups_path: format!("{CGROUP_PARENT}/{id}"),
        };
        let target = guard
            .rootfs
            .mount(&lowers)
            .map_err(|e| run_error(line, args, "mounting the root filesystem", e))?;

        let str_of = |k: &str| config.get(k).and_then(Value::as_str).unwrap_or_default();
        let user = str_of("User");
        let (uid, gid, additional_gids) = berth_agent::containers::resolve_user(
            user,
            berth_runtime::rootfs::read_in_root(&target, "etc/passwd").as_deref(),
            berth_runtime::rootfs::read_in_root(&target, "etc/group").as_deref(),
        )
        .map_err(|e| run_error(line, args, format!("USER {user}"), e))?;
        let mut env: Vec<String> = config
            .get("Env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(DEFAULT_PATH.to_string());
        }
        let cwd = match str_of("WorkingDir") {
            "" => "/".to_string(),
            w => w.to_string(),
        };
        let spec_in = ContainerSpec {
            rootfs: target,
            args: args.to_vec(),
            env,
            cwd,
            uid,
            gid,
            additional_gids,
            hostname: HOSTNAME.into(),
            readonly_rootfs: false,
            cpu_shares: None,
            cpu_limit_units: None,
            memory_mib: None,
            memory_reservation_mib: None,
            pids_limit: None,
            netns: NetNs::New,
            cgroups_path: guard.cgroups_path.clone(),
            binds: vec![],
        };
        let bundle = guard.rootfs.dir.clone();
        spec::build(&spec_in, HostLimits::current())
            .map_err(|e| run_error(line, args, "writing the OCI spec", e))?
            .save(bundle.join("config.json"))
            .map_err(|e| run_error(line, args, "writing the OCI spec", e))?;

        // The command's output goes to our stderr, next to the progress bars: stdout
        // carries only the pushed image's reference.
        let out = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| run_error(line, args, "duplicating stderr", e))?;
        let mut child = self
            .runc
            .command()
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg(&id)
            .stdout(Stdio::from(out))
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                let step = format!("starting {}", self.runc.binary.display());
                run_error(line, args, step, e)
            })?;
        // Ctrl-C kills the container: the command is pid 1 of its namespace, which
        // ignores SIGINT unless it installed a handler, and the build is over anyway.
        let mut killed = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) => {}
                Err(e) => return Err(run_error(line, args, "waiting for runc", e)),
            }
            // Any press counts: there was none when this RUN started.
            if !killed && self.interrupts.load(Ordering::SeqCst) > 0 {
                eprintln!("#{line} interrupted: killing the RUN container");
                if let Err(e) = self.runc.kill(&id, "KILL", true) {
                    tracing::warn!(container = %id, error = %e, "cannot kill the RUN container");
                }
                killed = true;
            }
            std::thread::sleep(WAIT_POLL);
        };
        if killed {
            return Err(run_error(line, args, "interrupted", "Ctrl-C"));
        }
        if !status.success() {
            let code = status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(-1);
            return Err(BuildError::RunExited {
                line,
                command,
                code,
            });
        }
        guard
            .stop()
            .map_err(|e| run_error(line, args, "stopping the container", e))?;
        berth_build::diff::upper_to_tar(&bundle.join("upper"))
            .map_err(|e| run_error(line, args, "reading its changes", e))
    }
}

/// Removes the (empty) cgroup `path` wherever runc may have made it: the cgroup v2
/// root, or every v1 hierarchy, named ones (`systemd`, `unified`) included. `rmdir`
/// only ever removes an empty cgroup, so a guess that names someone else's is harmless.
fn remove_cgroup(path: &str) {
    for d in berth_runtime::cgroup::Cgroup::new(path).dirs() {
        let _ = std::fs::remove_dir(d);
    }
}
