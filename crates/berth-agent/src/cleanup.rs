//! On start, the agent removes what belongs to none of its live tasks: namespaces and
//! veths with its prefix, runc containers under its root, overlay mounts under its
//! task directory and cgroups under its cgroup parent — what a crash in the middle of
//! a start or a stop can leave behind. Only names carrying this agent's key are
//! touched, so agents side by side never remove each other's.

use std::path::Path;

use berth_runtime::rootfs::Rootfs;
use berth_runtime::runc::Runc;

use crate::agent::{Ctx, NodeFile};
use crate::plan::{Phase, StopCode};
use crate::record::{ContainerRecord, NetRecord, Stage, TaskRecord};

/// Removes leftovers; `live` are the task ids still owned, `live_nets` the
/// namespaces and host veths their records name.
pub fn leftovers(ctx: &Ctx, live: &[String], live_nets: &[String]) {
    let owned = |name: &str| live.iter().any(|t| name.contains(&t[..t.len().min(16)]));
    if let Ok(list) = berth_net::list_netns_with_prefix(&ctx.netns_prefix()) {
        for ns in list.into_iter().filter(|n| !live_nets.contains(n)) {
            tracing::info!(netns = %ns, "removing a left-over network namespace");
            let _ = berth_net::destroy_task_netns(&ns, None);
        }
    }
    if let Ok(list) = berth_net::list_links_with_prefix(&ctx.veth_prefix()) {
        for link in list.into_iter().filter(|l| !live_nets.contains(l)) {
            tracing::info!(%link, "removing a left-over veth");
            let _ = berth_net::ip::run("delete left-over veth", &link, &["link", "del", &link]);
        }
    }
    if let Ok(list) = ctx.runc.list() {
        for c in list.into_iter().filter(|c| !owned(&c.id)) {
            tracing::info!(container = %c.id, "removing a left-over container");
            let _ = ctx.runc.kill(&c.id, "KILL", true);
            let _ = ctx.runc.delete(&c.id);
        }
    }
    for m in berth_runtime::rootfs::mounts_under(&ctx.tasks_dir).unwrap_or_default() {
        if !owned(&m.to_string_lossy()) {
            tracing::info!(mount = %m.display(), "unmounting a left-over root filesystem");
            let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
        }
    }
    for d in berth_runtime::cgroup::Cgroup::new(&ctx.cgroup_parent()).dirs() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && !owned(&name) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

/// Removes what a stopped container leaves on the host: its runc state, its overlay
/// mount and its cgroups. Returns what failed, for the caller to report.
pub(crate) fn release_container(runc: &Runc, c: &ContainerRecord) -> Vec<String> {
    let mut failed = Vec::new();
    if let Err(e) = runc.delete(&c.runtime_id) {
        failed.push(format!("runc delete: {e}"));
    }
    if let Err(e) = Rootfs::new(&c.dir).unmount() {
        failed.push(format!("unmount: {e}"));
    }
    for d in berth_runtime::cgroup::Cgroup::new(&c.cgroups_path).dirs() {
        let _ = std::fs::remove_dir(d);
    }
    failed
}

/// Removes a task's network: its port proxies and its namespace (with the veth).
pub(crate) fn release_net(net: &NetRecord) -> Result<(), String> {
    for (_, _, _, pid) in &net.port_proxies {
        crate::worker::kill_proxy(*pid);
    }
    match &net.netns {
        Some(ns) => berth_net::destroy_task_netns(ns, net.host_veth.as_deref())
            .map_err(|e| format!("network namespace {ns}: {e}")),
        None => Ok(()),
    }
}

/// What `teardown` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Teardown {
    pub tasks: usize,
    pub containers: usize,
}

/// Stops every task of the agent in `dir` and removes everything it made on the host
/// (`berth down`): containers and their shims, mounts, namespaces, veths, cgroups and
/// the bridge. Task records are marked finished ("berth down"), so a server started
/// again reports those tasks STOPPED. Run it with the agent stopped.
pub fn teardown(dir: &Path, runc_bin: &Path) -> std::io::Result<Teardown> {
    let mut out = Teardown::default();
    let Some(node) = NodeFile::load(dir) else {
        return Ok(out);
    };
    let runc = Runc::new(runc_bin, dir.join("runc"));
    let tasks_dir = dir.join("tasks");
    for e in std::fs::read_dir(&tasks_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(mut rec) = TaskRecord::load(&e.path()) else {
            continue;
        };
        if rec.stage == Stage::Finished {
            continue;
        }
        out.tasks += 1;
        for c in &mut rec.containers {
            if matches!(c.phase, Phase::Running { .. }) {
                out.containers += 1;
            }
            let _ = runc.kill(&c.runtime_id, "KILL", true);
            if let Some(pid) = crate::worker::shim_pid(&c.dir) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            let _ = release_container(&runc, c);
            if matches!(c.phase, Phase::Running { .. } | Phase::Waiting) {
                c.phase = Phase::Exited { exit_code: None };
                c.reason = Some("stopped by berth down".into());
            }
        }
        if let Some(net) = &rec.net {
            let _ = release_net(net);
        }
        rec.stop
            .get_or_insert((StopCode::UserInitiated, "Stopped by berth down".into()));
        rec.stage = Stage::Finished;
        rec.last_status = "STOPPED".into();
        rec.stopped_at = Some(crate::worker::now_secs());
        rec.save(&e.path())?;
    }
    for ns in berth_net::list_netns_with_prefix(&format!("berth-{}-", node.key)).unwrap_or_default()
    {
        let _ = berth_net::destroy_task_netns(&ns, None);
    }
    for c in runc.list().unwrap_or_default() {
        let _ = runc.kill(&c.id, "KILL", true);
        let _ = runc.delete(&c.id);
    }
    for m in berth_runtime::rootfs::mounts_under(&tasks_dir).unwrap_or_default() {
        let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
    }
    for d in berth_runtime::cgroup::Cgroup::new(&format!("/berth/{}", node.key)).dirs() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir(e.path());
        }
        let _ = std::fs::remove_dir(&d);
    }
    let _ = berth_net::remove_bridge(&node.bridge);
    Ok(out)
}
