//! One task's life on this host, in its own thread: network, images, containers,
//! supervision (the decisions are [`crate::plan`]'s), clean-up, and a report to the
//! control plane after every change. Everything it learns is saved in the task's
//! record first, so a restarted agent picks up where this one stopped.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_runtime::rootfs::Rootfs;
use berth_runtime::shim;
use berth_runtime::spec::{self, ContainerSpec, HostLimits, NetNs};

use crate::agent::Ctx;
use crate::containers::{self, ImageDefaults};
use crate::control::{AssignedTask, ContainerReport, TaskReport};
use crate::health::{self, Checker};
use crate::plan::{self, Action, ContainerDef, Health, Phase, StopCode};
use crate::record::{ContainerRecord, NetRecord, Stage, TaskRecord};

/// How often a worker looks at its containers when nothing woke it.
pub const TICK: Duration = Duration::from_millis(250);
/// How long `runc run` may take before the start counts as failed.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a worker wakes.
#[derive(Debug)]
pub enum Wake {
    /// The control plane's view of the task changed.
    Desired(Box<AssignedTask>),
    /// A shim said something (a container started or exited).
    Shim,
    /// A health check changed a container's health.
    Health(usize, Health),
    /// The control plane no longer assigns the task here (it was stopped or removed
    /// without this node): stop it.
    Dropped,
}

pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn now_ms() -> u64 {
    (now_secs() * 1000.0) as u64
}

struct Worker {
    ctx: Arc<Ctx>,
    dir: PathBuf,
    rec: TaskRecord,
    tx: Sender<Wake>,
    checkers: Vec<Option<Checker>>,
    last_report: Option<TaskReport>,
    reporter: Reporter,
}

/// Sends a task's reports from a thread of their own, so that the task's steps never
/// wait for the control plane's durable write; reports queued while one is sent
/// collapse into the newest (each report is the whole truth, not a delta).
struct Reporter {
    tx: Option<Sender<TaskReport>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Between retries of a report the control plane refused.
const REPORT_RETRY: Duration = Duration::from_millis(500);

impl Reporter {
    fn start(ctx: Arc<Ctx>, task_arn: String) -> Reporter {
        let (tx, rx) = std::sync::mpsc::channel::<TaskReport>();
        let thread = std::thread::Builder::new()
            .name("report".into())
            .spawn(move || {
                while let Ok(mut r) = rx.recv() {
                    while let Ok(newer) = rx.try_recv() {
                        r = newer;
                    }
                    loop {
                        match ctx.control.report(&task_arn, r.clone()) {
                            Ok(()) => break,
                            Err(e) => {
                                tracing::warn!(task = %task_arn, error = %e, "report failed; retrying");
                                match rx.recv_timeout(REPORT_RETRY) {
                                    Ok(newer) => r = newer,
                                    Err(RecvTimeoutError::Timeout) => {}
                                    Err(RecvTimeoutError::Disconnected) => {
                                        let _ = ctx.control.report(&task_arn, r.clone());
                                        return;
                                    }
                                }
                            }
                        }
                    }
                }
            })
            .expect("spawning a thread");
        Reporter {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn send(&self, r: TaskReport) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(r);
        }
    }

    /// Waits until every queued report has been delivered (or tried).
    fn finish(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs a task to its end (or until the agent process exits: its containers live on).
pub fn run(
    ctx: Arc<Ctx>,
    task: AssignedTask,
    record: Option<TaskRecord>,
    tx: Sender<Wake>,
    rx: Receiver<Wake>,
) {
    let dir = ctx.tasks_dir.join(&task.task_id);
    let _ = std::fs::create_dir_all(&dir);
    let rec = record.unwrap_or_else(|| TaskRecord {
        task: task.clone(),
        stage: Stage::New,
        net: None,
        containers: Vec::new(),
        stop: None,
        pull_started_at: None,
        pull_stopped_at: None,
        started_at: None,
        stopped_at: None,
        last_status: "PROVISIONING".into(),
    });
    let span = tracing::info_span!("task", id = %task.task_id);
    let _g = span.enter();
    let reporter = Reporter::start(ctx.clone(), rec.task.task_arn.clone());
    let mut w = Worker {
        ctx,
        dir,
        rec,
        tx,
        checkers: Vec::new(),
        last_report: None,
        reporter,
    };
    w.drive(rx);
}

/// Reports a finished task again (the control plane may have missed it).
pub fn report_final(ctx: &Ctx, rec: &TaskRecord) {
    let report = build_report(rec);
    if let Err(e) = ctx.control.report(&rec.task.task_arn, report) {
        tracing::warn!(task = %rec.task.task_id, error = %e, "cannot report a stopped task");
    }
}

fn container_defs(task: &AssignedTask) -> Vec<serde_json::Value> {
    task.definition["containerDefinitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Splits an image reference into (repository, tag or digest); a registry host
/// (anything with a dot or colon, or `localhost`, before the first slash) is dropped:
/// the built-in agent pulls from its own registry.
pub fn split_image(image: &str) -> (String, String) {
    let rest = match image.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            rest
        }
        _ => image,
    };
    if let Some((repo, digest)) = rest.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    match rest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (rest.to_string(), "latest".to_string()),
    }
}

fn build_report(rec: &TaskRecord) -> TaskReport {
    let defs: Vec<ContainerDef> = rec.containers.iter().map(def_of).collect();
    let health: Vec<Health> = rec.containers.iter().map(|c| c.health).collect();
    let has_check: Vec<bool> = rec
        .containers
        .iter()
        .map(|c| c.spec.as_ref().is_some_and(|s| s.health_check.is_some()))
        .collect();
    let task_health = plan::task_health(&defs, &health, &has_check);
    let ip = rec.net.as_ref().and_then(|n| n.ip.clone());
    TaskReport {
        last_status: rec.last_status.clone(),
        containers: rec
            .containers
            .iter()
            .map(|c| {
                let (status, exit_code) = match &c.phase {
                    Phase::Waiting => ("PENDING", None),
                    Phase::Running { .. } => ("RUNNING", None),
                    Phase::Exited { exit_code } => ("STOPPED", *exit_code),
                    Phase::NotStarted { .. } => ("STOPPED", None),
                };
                let bindings = rec
                    .net
                    .as_ref()
                    .map(|n| {
                        let spec_ports = c.spec.as_ref().map(|s| s.ports.clone()).unwrap_or_default();
                        spec_ports
                            .iter()
                            .map(|p| {
                                let host_port = n
                                    .port_proxies
                                    .iter()
                                    .find(|(_, cp, proto, _)| *cp == p.container_port && *proto == p.protocol)
                                    .map(|(hp, ..)| *hp)
                                    .unwrap_or(p.container_port);
                                serde_json::json!({
                                    "bindIP": if n.mode == "bridge" { "0.0.0.0".to_string() } else { n.ip.clone().unwrap_or_else(|| "0.0.0.0".into()) },
                                    "containerPort": p.container_port,
                                    "hostPort": host_port,
                                    "protocol": p.protocol,
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                ContainerReport {
                    name: c.name.clone(),
                    last_status: status.into(),
                    exit_code,
                    reason: c.reason.clone(),
                    runtime_id: Some(c.runtime_id.clone()),
                    health_status: Some(
                        match c.health {
                            Health::Unknown => "UNKNOWN",
                            Health::Healthy => "HEALTHY",
                            Health::Unhealthy => "UNHEALTHY",
                        }
                        .into(),
                    ),
                    network_bindings: bindings,
                }
            })
            .collect(),
        private_ipv4: ip,
        stop_code: rec.stop.as_ref().map(|(c, _)| c.as_str().to_string()),
        stopped_reason: rec.stop.as_ref().map(|(_, r)| r.clone()),
        health_status: Some(
            match task_health {
                Health::Unknown => "UNKNOWN",
                Health::Healthy => "HEALTHY",
                Health::Unhealthy => "UNHEALTHY",
            }
            .into(),
        ),
        pull_started_at: rec.pull_started_at,
        pull_stopped_at: rec.pull_stopped_at,
        started_at: rec.started_at,
        stopped_at: rec.stopped_at,
    }
}

fn def_of(c: &ContainerRecord) -> ContainerDef {
    ContainerDef {
        name: c.name.clone(),
        essential: c.spec.as_ref().is_none_or(|s| s.essential),
        depends_on: Vec::new(),
        stop_timeout_ms: c
            .spec
            .as_ref()
            .map_or(containers::DEFAULT_STOP_TIMEOUT_SECS, |s| {
                s.stop_timeout_secs
            })
            * 1000,
    }
}

impl Worker {
    fn save(&mut self) {
        if let Err(e) = self.rec.save(&self.dir) {
            tracing::error!(error = %e, "cannot save the task record");
        }
        self.ctx
            .views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.rec.task.task_id.clone(), self.rec.clone());
    }

    fn report(&mut self) {
        let r = build_report(&self.rec);
        if self.last_report.as_ref() == Some(&r) {
            return;
        }
        self.reporter.send(r.clone());
        self.last_report = Some(r);
    }

    fn set_status(&mut self, s: &str) {
        self.rec.last_status = s.into();
        self.save();
        self.report();
    }

    fn desired_stop(&self) -> bool {
        self.rec.task.desired_status == "STOPPED"
    }

    fn drive(&mut self, rx: Receiver<Wake>) {
        self.ensure_container_records();
        self.save();
        if self.rec.stage == Stage::New {
            self.report();
            if self.desired_stop() {
                self.fail_all("the task was stopped before it started");
            } else {
                match self.setup_network() {
                    Ok(()) => self.rec.stage = Stage::Networked,
                    Err(reason) => self.fail_all(&format!("ResourceInitializationError: {reason}")),
                }
            }
            self.save();
        }
        if self.rec.stage == Stage::Networked {
            self.set_status("PENDING");
            self.prepare();
            self.rec.stage = Stage::Pulled;
            self.save();
        }
        if self.rec.stage == Stage::Pulled {
            self.rec.stage = Stage::Supervising;
            self.save();
        }
        // Health checks of containers already running (re-adoption).
        self.checkers = (0..self.rec.containers.len()).map(|_| None).collect();
        for i in 0..self.rec.containers.len() {
            if matches!(self.rec.containers[i].phase, Phase::Running { .. }) {
                self.start_health(i);
            }
        }
        loop {
            self.refresh_exits();
            if self.step() {
                break;
            }
            match rx.recv_timeout(TICK) {
                Ok(w) => self.on_wake(w),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {}
            }
            while let Ok(w) = rx.try_recv() {
                self.on_wake(w);
            }
        }
        for c in self.checkers.iter().flatten() {
            c.stop();
        }
        self.cleanup();
        self.rec.stopped_at = Some(now_secs());
        self.rec.stage = Stage::Finished;
        self.set_status("STOPPED");
        self.reporter.finish();
        self.ctx
            .views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.rec.task.task_id);
        tracing::info!(stop = ?self.rec.stop, "task stopped");
    }

    fn on_wake(&mut self, w: Wake) {
        match w {
            Wake::Desired(t) => {
                let stop_reason = t.stop_reason.clone();
                let stopping = t.desired_status == "STOPPED" && !self.desired_stop();
                self.rec.task = *t;
                if stopping && self.rec.stop.is_none() {
                    self.rec.stop = Some((
                        StopCode::UserInitiated,
                        stop_reason.unwrap_or_else(|| "Task stopped by user".into()),
                    ));
                    self.save();
                }
            }
            Wake::Shim => {}
            Wake::Dropped => {
                self.rec.task.desired_status = "STOPPED".into();
                if self.rec.stop.is_none() {
                    self.rec.stop = Some((
                        StopCode::UserInitiated,
                        "Task no longer assigned to this node".into(),
                    ));
                }
                self.save();
            }
            Wake::Health(i, h) => {
                if let Some(c) = self.rec.containers.get_mut(i) {
                    if matches!(c.phase, Phase::Running { .. }) {
                        c.health = h;
                        self.save();
                        self.report();
                    }
                }
            }
        }
    }

    fn ensure_container_records(&mut self) {
        if self.rec.containers.is_empty() {
            self.new_container_records();
        }
        // Known to the metadata endpoint (again, after a restart).
        let mut tokens = self.ctx.tokens.lock().unwrap_or_else(|p| p.into_inner());
        for (i, c) in self.rec.containers.iter().enumerate() {
            tokens.insert(c.token.clone(), (self.rec.task.task_id.clone(), i));
        }
    }

    fn new_container_records(&mut self) {
        let parent = self.ctx.cgroup_parent();
        for (i, d) in container_defs(&self.rec.task).iter().enumerate() {
            let runtime_id = format!("{}-{i}", self.rec.task.task_id);
            let mut token = [0u8; 16];
            let _ = getrandom::getrandom(&mut token);
            self.rec.containers.push(ContainerRecord {
                name: d["name"].as_str().unwrap_or_default().to_string(),
                dir: self.dir.join(format!("c{i}")),
                cgroups_path: format!("{parent}/{runtime_id}"),
                runtime_id,
                token: hex::encode(token),
                phase: Phase::Waiting,
                health: Health::Unknown,
                spec: None,
                image_digest: None,
                reason: None,
                started_at: None,
                finished_at: None,
            });
        }
    }

    /// Marks every container that has not run as never started, with `reason`.
    fn fail_all(&mut self, reason: &str) {
        for c in &mut self.rec.containers {
            if c.phase == Phase::Waiting {
                c.phase = Phase::NotStarted {
                    reason: reason.into(),
                };
                c.reason = Some(reason.into());
            }
        }
        if self.rec.stop.is_none() {
            let code = if self.desired_stop() {
                StopCode::UserInitiated
            } else {
                StopCode::TaskFailedToStart
            };
            self.rec.stop = Some((code, reason.into()));
        }
    }

    fn setup_network(&mut self) -> Result<(), String> {
        // An earlier try that died half-way (recorded before it was made): undo it.
        if let Some(old) = self.rec.net.take() {
            let _ = crate::cleanup::release_net(&old);
            if let Some(ip) = old.ip.as_deref().and_then(|ip| ip.parse().ok()) {
                self.ctx
                    .ipam
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .release(ip);
            }
        }
        let mode = self.rec.task.network_mode.clone();
        let id = self.rec.task.task_id.clone();
        let netns = format!("{}{}", self.ctx.netns_prefix(), &id[..id.len().min(16)]);
        let mut net = NetRecord {
            mode: mode.clone(),
            netns: None,
            host_veth: None,
            ip: None,
            gateway: None,
            port_proxies: Vec::new(),
        };
        match mode.as_str() {
            "host" => {}
            "none" => {
                berth_net::create_isolated_netns(&netns).map_err(|e| format!("{e:#}"))?;
                net.netns = Some(netns);
            }
            _ if self.take_pooled(&mut net) => {}
            _ => {
                let address = self
                    .ctx
                    .ipam
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .allocate()
                    .map_err(|e| e.to_string())?;
                let gateway = self.ctx.gateway();
                let host_veth = format!("{}{}", self.ctx.veth_prefix(), &id[..8]);
                net.ip = Some(address.addr().to_string());
                net.gateway = Some(gateway.to_string());
                net.netns = Some(netns.clone());
                net.host_veth = Some(host_veth.clone());
                // Recorded before it exists, so a crash in between is cleaned up.
                self.rec.net = Some(net.clone());
                self.save();
                let spec = berth_net::TaskNetSpec {
                    netns,
                    bridge: self.ctx.config.bridge.clone(),
                    address,
                    gateway,
                    host_veth,
                    mtu: None,
                };
                berth_net::create_task_netns(&spec).map_err(|e| error_chain(&e))?;
            }
        }
        self.rec.net = Some(net);
        if mode == "bridge" {
            self.map_ports()?;
        }
        self.write_network_files()?;
        Ok(())
    }

    /// Uses a network from the agent's pool for this task; false when it has none.
    fn take_pooled(&self, net: &mut NetRecord) -> bool {
        let Some(p) = self.ctx.take_pooled_net() else {
            return false;
        };
        net.ip = Some(p.address.addr().to_string());
        net.gateway = Some(self.ctx.gateway().to_string());
        net.netns = Some(p.netns);
        net.host_veth = Some(p.host_veth);
        true
    }

    /// Host ports of a `bridge` task: each mapping a proxy process of its own; a
    /// hostPort of 0 (or none) gets a free port of ECS's dynamic range.
    fn map_ports(&mut self) -> Result<(), String> {
        let ip = self
            .rec
            .net
            .as_ref()
            .and_then(|n| n.ip.clone())
            .ok_or("the task has no address")?;
        let mut used: std::collections::BTreeSet<u16> = self
            .ctx
            .views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|t| t.net.as_ref())
            .flat_map(|n| n.port_proxies.iter().map(|p| p.0))
            .collect();
        for def in container_defs(&self.rec.task) {
            for pm in def["portMappings"].as_array().into_iter().flatten() {
                let Some(cp) = pm["containerPort"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                else {
                    continue;
                };
                let proto = pm["protocol"].as_str().unwrap_or("tcp").to_string();
                let fixed = pm["hostPort"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|&p| p != 0);
                let mut tries = 0;
                let (hp, pid) = loop {
                    let hp = match fixed {
                        Some(p) => p,
                        None => {
                            berth_net::choose_dynamic_port(&used, berth_net::DYNAMIC_PORT_RANGE)
                                .ok_or("no free host port in the dynamic range 49153-65535")?
                        }
                    };
                    match self.spawn_proxy(hp, &ip, cp, &proto) {
                        Ok(pid) => break (hp, pid),
                        Err(e) if fixed.is_none() && tries < 20 => {
                            tracing::debug!(port = hp, error = %e, "host port taken; trying another");
                            used.insert(hp);
                            tries += 1;
                        }
                        Err(e) => return Err(e),
                    }
                };
                used.insert(hp);
                if let Some(n) = self.rec.net.as_mut() {
                    n.port_proxies.push((hp, cp, proto, Some(pid)));
                }
                self.save();
            }
        }
        Ok(())
    }

    /// Starts `berth proxy` for one mapping; its pid once it listens.
    fn spawn_proxy(
        &self,
        host_port: u16,
        ip: &str,
        container_port: u16,
        proto: &str,
    ) -> Result<u32, String> {
        let mut cmd = Command::new(&self.ctx.config.exe);
        cmd.arg("proxy")
            .arg("--listen")
            .arg(format!("0.0.0.0:{host_port}"))
            .arg("--target")
            .arg(format!("{ip}:{container_port}"))
            .arg("--protocol")
            .arg(proto)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the port proxy: {e}"))?;
        let mut line = String::new();
        let _ = std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
        if line.trim() == "ready" {
            let pid = child.id();
            // Reaped by whoever outlives it: a thread here, or init after a restart.
            std::thread::spawn(move || child.wait());
            Ok(pid)
        } else {
            let _ = child.wait();
            Err(format!(
                "host port {host_port}/{proto}: {}",
                line.trim().trim_start_matches("error: ")
            ))
        }
    }

    fn hostname(&self) -> String {
        let ip = self.rec.net.as_ref().and_then(|n| n.ip.clone());
        match ip {
            Some(ip) => format!("ip-{}", ip.replace('.', "-")),
            None => format!(
                "task-{}",
                &self.rec.task.task_id[..12.min(self.rec.task.task_id.len())]
            ),
        }
    }

    fn write_network_files(&self) -> Result<(), String> {
        let net = self.rec.net.as_ref();
        let hostname = self.hostname();
        let address = net
            .and_then(|n| n.ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        let hosts = berth_net::render_hosts(&berth_net::HostsSpec {
            hostname: hostname.clone(),
            address,
            extra_hosts: Vec::new(),
        })
        .map_err(|e| e.to_string())?;
        let write = |name: &str, text: &str| {
            std::fs::write(self.dir.join(name), text).map_err(|e| format!("writing {name}: {e}"))
        };
        write("hosts", &hosts)?;
        write("hostname", &format!("{hostname}\n"))?;
        let dns = self.ctx.config.dns_upstream.map(|_| self.ctx.gateway());
        write("resolv.conf", &resolv_conf(dns))?;
        Ok(())
    }

    /// Pulls every image and prepares every container's bundle; a failure is recorded
    /// on the container (CannotPullContainerError / CannotCreateContainerError).
    fn prepare(&mut self) {
        if self.rec.stop.is_some() {
            return;
        }
        self.rec.pull_started_at = Some(now_secs());
        self.report();
        let defs = container_defs(&self.rec.task);
        for (i, d) in defs.iter().enumerate() {
            if self.rec.containers[i].phase != Phase::Waiting {
                continue;
            }
            let image = d["image"].as_str().unwrap_or_default().to_string();
            let pulled = {
                let _g = self.ctx.pull_lock.lock().unwrap_or_else(|p| p.into_inner());
                let (repo, reference) = split_image(&image);
                berth_image::pull::pull(
                    self.ctx.source.as_ref(),
                    &repo,
                    &reference,
                    &self.ctx.snapshots,
                    &self.ctx.images_dir,
                )
            };
            let img = match pulled {
                Ok(img) => img,
                Err(e) => {
                    let reason = format!(
                        "CannotPullContainerError: pull image {image}: {}",
                        e.reason()
                    );
                    self.fail_container(i, reason);
                    continue;
                }
            };
            self.rec.containers[i].image_digest = Some(img.manifest_digest.clone());
            if let Err(reason) = self.create_container(i, d, &img) {
                self.fail_container(i, format!("CannotCreateContainerError: {reason}"));
            }
        }
        self.rec.pull_stopped_at = Some(now_secs());
        self.save();
    }

    fn fail_container(&mut self, i: usize, reason: String) {
        tracing::warn!(container = %self.rec.containers[i].name, %reason, "container cannot start");
        let c = &mut self.rec.containers[i];
        c.phase = Phase::NotStarted {
            reason: reason.clone(),
        };
        c.reason = Some(reason);
    }

    fn metadata_uri(&self, token: &str) -> String {
        format!(
            "http://{}:{}/v4/{token}",
            self.ctx.gateway(),
            self.ctx.config.metadata_port
        )
    }

    fn create_container(
        &mut self,
        i: usize,
        def: &serde_json::Value,
        img: &berth_image::pull::Image,
    ) -> Result<(), String> {
        let rec = self.rec.containers[i].clone();
        let uri = self.metadata_uri(&rec.token);
        let exec_env = if self.rec.task.launch_type == "FARGATE" {
            "AWS_ECS_FARGATE"
        } else {
            "AWS_ECS_EC2"
        };
        let extra = vec![
            ("ECS_CONTAINER_METADATA_URI_V4".to_string(), uri.clone()),
            (
                "ECS_CONTAINER_METADATA_URI".to_string(),
                uri.replace("/v4/", "/v3/"),
            ),
            ("AWS_EXECUTION_ENV".to_string(), exec_env.to_string()),
        ];
        let image = ImageDefaults {
            env: img.config.env.clone(),
            entrypoint: img.config.entrypoint.clone(),
            cmd: img.config.cmd.clone(),
            working_dir: img.config.working_dir.clone(),
            user: img.config.user.clone(),
        };
        let c = containers::container(def, &image, &extra).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&rec.dir)
            .map_err(|e| format!("creating {}: {e}", rec.dir.display()))?;
        let rootfs = Rootfs::new(&rec.dir);
        let target = rootfs.mount(&img.layers).map_err(|e| error_chain(&e))?;
        let (uid, gid, gids) = containers::resolve_user(
            &c.user,
            berth_runtime::rootfs::read_in_root(&target, "etc/passwd").as_deref(),
            berth_runtime::rootfs::read_in_root(&target, "etc/group").as_deref(),
        )?;
        let netns = match self.rec.net.as_ref().and_then(|n| n.netns.clone()) {
            Some(ns) => NetNs::Path(berth_net::netns::netns_path(&ns)),
            None => NetNs::Host,
        };
        let task_mem = self.rec.task.memory.map(u64::from);
        let mut binds = vec![
            (self.dir.join("hosts"), "/etc/hosts".to_string(), true),
            (
                self.dir.join("resolv.conf"),
                "/etc/resolv.conf".to_string(),
                true,
            ),
            (self.dir.join("hostname"), "/etc/hostname".to_string(), true),
        ];
        if netns == NetNs::Host {
            binds.retain(|(_, d, _)| d != "/etc/hosts" && d != "/etc/hostname");
        }
        let spec_in = ContainerSpec {
            rootfs: target,
            args: c.args.clone(),
            env: c.env.clone(),
            cwd: c.cwd.clone(),
            uid,
            gid,
            additional_gids: gids,
            hostname: c.hostname.clone().unwrap_or_else(|| self.hostname()),
            readonly_rootfs: c.readonly_rootfs,
            cpu_shares: c.cpu,
            cpu_limit_units: self.rec.task.cpu.map(u64::from),
            memory_mib: c.memory.or(task_mem),
            memory_reservation_mib: c.memory_reservation,
            pids_limit: None,
            netns,
            cgroups_path: rec.cgroups_path.clone(),
            binds,
        };
        let s = spec::build(&spec_in, HostLimits::current()).map_err(|e| e.to_string())?;
        s.save(rec.dir.join("config.json"))
            .map_err(|e| e.to_string())?;
        tracing::debug!(container = %rec.name, "bundle ready");
        self.rec.containers[i].spec = Some(c);
        Ok(())
    }

    /// Reads `exit.json` of running containers (how re-adopted ones are noticed).
    fn refresh_exits(&mut self) {
        let mut changed = false;
        for i in 0..self.rec.containers.len() {
            if !matches!(self.rec.containers[i].phase, Phase::Running { .. }) {
                continue;
            }
            let c = &self.rec.containers[i];
            let exit = match shim::read_exit(&c.dir) {
                Some(e) => e,
                None => {
                    // A shim that died without a word (the host rebooted): ask runc.
                    if shim_alive(&c.dir) {
                        continue;
                    }
                    // The shim writes exit.json before it exits: it may have done both
                    // since the first look.
                    if let Some(e) = shim::read_exit(&c.dir) {
                        e
                    } else {
                        match self.ctx.runc.state(&c.runtime_id) {
                            Ok(Some(s)) if s.status == "running" || s.status == "created" => {
                                continue
                            }
                            _ => shim::ExitStatus {
                                started: true,
                                error: Some("the container's supervisor disappeared".into()),
                                ..Default::default()
                            },
                        }
                    }
                }
            };
            let reason = if exit.oom_killed {
                let used = exit.memory_max_usage_bytes / (1024 * 1024);
                let limit = exit
                    .memory_limit_bytes
                    .map(|l| l / (1024 * 1024))
                    .or(c.spec.as_ref().and_then(|s| s.memory))
                    .unwrap_or(used);
                Some(format!(
                    "OutOfMemoryError: container {} used {used} MiB of its {limit} MiB limit",
                    c.name
                ))
            } else {
                exit.error.clone()
            };
            tracing::debug!(container = %c.name, code = ?exit.exit_code, "container exited");
            let c = &mut self.rec.containers[i];
            c.phase = Phase::Exited {
                exit_code: exit.exit_code,
            };
            c.reason = reason;
            c.finished_at = Some(exit.finished_at_ms as f64 / 1000.0);
            if let Some(ch) = self.checkers.get_mut(i).and_then(Option::take) {
                ch.stop();
            }
            changed = true;
        }
        if changed {
            self.save();
        }
    }

    /// One decision and its actions; true when the task is over.
    fn step(&mut self) -> bool {
        if self.desired_stop() && self.rec.stop.is_none() {
            self.rec.stop = Some((
                StopCode::UserInitiated,
                self.rec
                    .task
                    .stop_reason
                    .clone()
                    .unwrap_or_else(|| "Task stopped by user".into()),
            ));
        }
        let names: Vec<String> = self.rec.containers.iter().map(|c| c.name.clone()).collect();
        let defs: Vec<ContainerDef> = self
            .rec
            .containers
            .iter()
            .map(|c| {
                let mut d = def_of(c);
                d.depends_on = c
                    .spec
                    .as_ref()
                    .map(|s| {
                        s.depends_on
                            .iter()
                            .filter_map(|(n, cond)| {
                                names.iter().position(|x| x == n).map(|i| (i, *cond))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                d
            })
            .collect();
        let phases: Vec<Phase> = self
            .rec
            .containers
            .iter()
            .map(|c| c.phase.clone())
            .collect();
        let health: Vec<Health> = self.rec.containers.iter().map(|c| c.health).collect();
        let p = plan::plan(
            &defs,
            &phases,
            &health,
            self.rec.stop.as_ref().map(|(c, _)| *c),
            now_ms(),
        );
        if let Some(stop) = p.stop.clone() {
            self.rec.stop = Some(stop);
        }
        for a in &p.actions {
            match a {
                Action::Start(i) => self.start(*i),
                Action::Term(i) => self.signal(*i, false),
                Action::Kill(i) => self.signal(*i, true),
                Action::Abandon(i, reason) => {
                    let c = &mut self.rec.containers[*i];
                    c.phase = Phase::NotStarted {
                        reason: reason.clone(),
                    };
                    if self.rec.stop.is_none() || reason.starts_with("Dependency") {
                        c.reason = Some(reason.clone());
                    }
                }
            }
        }
        let status = self.task_status(p.done);
        if status == "RUNNING" && self.rec.started_at.is_none() {
            self.rec.started_at = Some(now_secs());
        }
        self.rec.last_status = status.to_string();
        self.save();
        self.report();
        p.done
    }

    fn task_status(&self, done: bool) -> &'static str {
        if done {
            return "DEPROVISIONING";
        }
        let cs = &self.rec.containers;
        if self.rec.stop.is_some() {
            return "STOPPING";
        }
        let essential_running = cs
            .iter()
            .filter(|c| c.spec.as_ref().is_none_or(|s| s.essential))
            .all(|c| matches!(c.phase, Phase::Running { .. } | Phase::Exited { .. }));
        if essential_running && cs.iter().any(|c| matches!(c.phase, Phase::Running { .. })) {
            "RUNNING"
        } else {
            "PENDING"
        }
    }

    fn start(&mut self, i: usize) {
        let c = self.rec.containers[i].clone();
        // A left-over runc container of an earlier try (the agent died mid-start); runc
        // keeps each container's state in a directory named after it under its root.
        if self.ctx.runc.root.join(&c.runtime_id).exists() {
            let _ = self.ctx.runc.delete(&c.runtime_id);
        }
        for f in ["exit.json", "pid"] {
            let _ = std::fs::remove_file(c.dir.join(f));
        }
        let job = serde_json::json!({
            "dir": c.dir,
            "id": c.runtime_id,
            "runc": self.ctx.runc.binary,
            "runc_root": self.ctx.runc.root,
            "cgroups_path": c.cgroups_path,
        });
        tracing::debug!(container = %c.name, "starting");
        let mut child = match self.ctx.take_shim() {
            Ok(c) => c,
            Err(e) => {
                self.fail_container(
                    i,
                    format!("CannotStartContainerError: cannot run the shim: {e}"),
                );
                return;
            }
        };
        // The shim is told its container; its stdin closes, so it never waits on us.
        let told = child
            .stdin
            .take()
            .map(|mut stdin| writeln!(stdin, "{job}"))
            .unwrap_or_else(|| Err(std::io::Error::other("no stdin")));
        if let Err(e) = told {
            let _ = child.kill();
            let _ = child.wait();
            self.fail_container(
                i,
                format!("CannotStartContainerError: cannot hand the container to its shim: {e}"),
            );
            return;
        }
        let stdout = child.stdout.take().expect("piped");
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = first_tx.send(l);
            }
            for _ in lines.by_ref() {
                let _ = tx.send(Wake::Shim);
            }
            let _ = child.wait();
            let _ = tx.send(Wake::Shim);
        });
        match first_rx.recv_timeout(START_TIMEOUT) {
            Ok(l) if l.starts_with("started") => {
                tracing::debug!(container = %c.name, "container started");
                let cr = &mut self.rec.containers[i];
                cr.phase = Phase::Running {
                    term_sent_ms: None,
                    kill_sent: false,
                };
                cr.started_at = Some(now_secs());
                self.save();
                self.start_health(i);
            }
            _ => {
                let err = shim::read_exit(&c.dir)
                    .and_then(|e| e.error)
                    .unwrap_or_else(|| "the shim did not report a start".into());
                self.fail_container(i, format!("CannotStartContainerError: {err}"));
            }
        }
    }

    fn start_health(&mut self, i: usize) {
        let c = &self.rec.containers[i];
        let Some(check) = c.spec.as_ref().and_then(|s| s.health_check.clone()) else {
            return;
        };
        let env = c.spec.as_ref().map(|s| s.env.clone()).unwrap_or_default();
        let started_ago = c
            .started_at
            .map(|s| Duration::from_secs_f64((now_secs() - s).max(0.0)))
            .unwrap_or_default();
        let started = Instant::now()
            .checked_sub(started_ago)
            .unwrap_or_else(Instant::now);
        let tx = self.tx.clone();
        let checker = health::start(
            self.ctx.runc.clone(),
            c.runtime_id.clone(),
            check,
            env,
            started,
            c.health,
            move |h| {
                let _ = tx.send(Wake::Health(i, h));
            },
        );
        if let Some(slot) = self.checkers.get_mut(i) {
            *slot = Some(checker);
        }
    }

    fn signal(&mut self, i: usize, kill: bool) {
        let c = &self.rec.containers[i];
        let (sig, all) = if kill {
            ("KILL", true)
        } else {
            ("TERM", false)
        };
        if let Err(e) = self.ctx.runc.kill(&c.runtime_id, sig, all) {
            tracing::warn!(container = %c.name, error = %e, "cannot signal container");
        }
        if let Phase::Running {
            term_sent_ms,
            kill_sent,
        } = &mut self.rec.containers[i].phase
        {
            if kill {
                *kill_sent = true;
            } else {
                *term_sent_ms = Some(now_ms());
            }
        }
        self.save();
    }

    /// Removes what the task made on the host; logs and exit records stay.
    fn cleanup(&mut self) {
        self.set_status("DEPROVISIONING");
        for c in &self.rec.containers {
            for e in crate::cleanup::release_container(&self.ctx.runc, c) {
                tracing::warn!(container = %c.name, error = %e, "clean-up failed");
            }
            for d in ["upper", "work", "rootfs", "empty"] {
                let _ = std::fs::remove_dir_all(c.dir.join(d));
            }
        }
        if let Some(net) = &self.rec.net {
            if let Err(e) = crate::cleanup::release_net(net) {
                tracing::warn!(error = %e, "cannot remove the task network");
            }
            if let Some(ip) = net.ip.as_deref().and_then(|ip| ip.parse().ok()) {
                self.ctx
                    .ipam
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .release(ip);
            }
        }
        let mut tokens = self.ctx.tokens.lock().unwrap_or_else(|p| p.into_inner());
        for c in &self.rec.containers {
            tokens.remove(&c.token);
        }
    }
}

/// Stops a port proxy by pid, if that pid still is a berth proxy (pids are reused).
pub fn kill_proxy(pid: Option<u32>) {
    if let Some(pid) = pid
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        .filter(|&p| is_berth(p, "proxy"))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// Whether `pid` is a berth process running `subcommand` (pids are reused: a recorded
/// pid may now be anything).
fn is_berth(pid: rustix::process::Pid, subcommand: &str) -> bool {
    let cmdline =
        std::fs::read(format!("/proc/{}/cmdline", pid.as_raw_nonzero())).unwrap_or_default();
    cmdline
        .split(|b| *b == 0)
        .any(|a| a == subcommand.as_bytes())
}

/// The pid of the live shim of the container in `dir`, if it still runs.
pub fn shim_pid(dir: &Path) -> Option<rustix::process::Pid> {
    std::fs::read_to_string(dir.join("shim.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw)
        .filter(|&p| is_berth(p, "shim") && rustix::process::test_kill_process(p).is_ok())
}

/// Whether the shim of the container in `dir` is still alive.
pub fn shim_alive(dir: &Path) -> bool {
    shim_pid(dir).is_some()
}

/// The task's resolv.conf: the node's forwarder to the server's DNS first (when there
/// is one), then the host's name servers that a task can reach (loopback resolvers of
/// the host are not reachable from a task's namespace).
fn resolv_conf(forwarder: Option<std::net::Ipv4Addr>) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = String::new();
    if let Some(gw) = forwarder {
        out.push_str(&format!("nameserver {gw}\n"));
    }
    for l in host.lines() {
        let l = l.trim();
        if let Some(ns) = l.strip_prefix("nameserver") {
            let ns = ns.trim();
            if ns.starts_with("127.") || ns == "::1" {
                continue;
            }
        }
        if l.starts_with("nameserver") || l.starts_with("search") || l.starts_with("options") {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Image references lose their registry host; tags and digests are kept.
    #[test]
    fn image_references() {
        assert_eq!(
            split_image("127.0.0.1:5000/web:v2"),
            ("web".into(), "v2".into())
        );
        assert_eq!(
            split_image("team/web"),
            ("team/web".into(), "latest".into())
        );
        assert_eq!(
            split_image("123.dkr.ecr.us-east-1.amazonaws.com/a/b@sha256:ab"),
            ("a/b".into(), "sha256:ab".into())
        );
        assert_eq!(split_image("localhost/x:1"), ("x".into(), "1".into()));
    }
}
