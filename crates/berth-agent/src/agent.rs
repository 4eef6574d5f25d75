//! The agent's shell: configuration, the shared context of its task workers, the main
//! loop that hands each assigned task to a worker, and re-adoption on start.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_image::pull::ImageSource;
use berth_image::snapshots::Snapshots;
use berth_net::{Cidr, Ipam};
use berth_runtime::runc::Runc;
use sha2::Digest as _;

use crate::control::{AssignedTask, ControlPlane};
use crate::record::{Stage, TaskRecord};
use crate::worker::{self, Wake};

/// How often the main loop looks at the assigned tasks without being told to.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(2);
/// The default metadata endpoint port on the bridge gateway.
pub const DEFAULT_METADATA_PORT: u16 = 51679;

/// How an agent is run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Everything the agent keeps: `DIR/{tasks,snapshots,images,runc}`.
    pub dir: PathBuf,
    /// The node bridge (at most 15 characters).
    pub bridge: String,
    /// The node's task subnet; the bridge holds its first address.
    pub subnet: Cidr,
    /// The runc binary.
    pub runc: PathBuf,
    /// The executable that runs `shim` and `proxy` subcommands (berth itself).
    pub exe: PathBuf,
    /// The task metadata endpoint's port on the gateway address.
    pub metadata_port: u16,
    /// Reported as the tasks' availability zone.
    pub availability_zone: String,
    /// Route between the task bridge and the host's other interfaces (an agent in a
    /// test host's namespace, so that tasks on other hosts reach its tasks); off for
    /// the built-in agent.
    pub forwarding: bool,
    /// The server's DNS (Cloud Map namespaces): tasks resolve through a forwarder on the
    /// gateway ([`crate::dns`]) that asks it.
    pub dns_upstream: Option<std::net::SocketAddr>,
}

/// Errors starting the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot create {path}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the node bridge {bridge}")]
    Bridge {
        bridge: String,
        #[source]
        source: berth_net::BridgeError,
    },
    #[error("bad task subnet")]
    Subnet(#[from] berth_net::IpamError),
    #[error("cannot open the snapshot store")]
    Snapshots(#[from] berth_image::snapshots::SnapshotError),
}

/// What every task worker shares.
pub struct Ctx {
    pub config: AgentConfig,
    pub runc: Runc,
    pub snapshots: Snapshots,
    pub images_dir: PathBuf,
    pub tasks_dir: PathBuf,
    pub source: Arc<dyn ImageSource + Send + Sync>,
    pub control: Arc<dyn ControlPlane>,
    pub ipam: Mutex<Ipam>,
    /// A short key unique to this agent's directory: prefixes of its namespaces,
    /// veths and cgroups, so that agents side by side never touch each other's.
    pub key: String,
    /// Metadata tokens → (task id, container index).
    pub tokens: Mutex<HashMap<String, (String, usize)>>,
    /// The latest record of each task, for the metadata endpoint.
    pub views: Mutex<HashMap<String, TaskRecord>>,
    /// Serialises pulls of one image so that two tasks do not fetch it twice.
    pub pull_lock: Mutex<()>,
    /// A shim started ahead of need (`berth shim --standby`), so that a container's
    /// start does not wait for a process to be executed.
    pub spare_shim: Mutex<Option<std::process::Child>>,
    /// A task network made ahead of need (namespace, veth, address), so that a task's
    /// start does not wait for `ip`.
    pub net_pool: Mutex<Vec<PooledNet>>,
    /// A thread is starting the next spare shim: at most one at a time, so that a burst
    /// of task starts does not spawn (and then kill) a spare per task.
    pub spare_refilling: AtomicBool,
    /// A thread is topping up `net_pool`: at most one at a time, so that a burst of
    /// task starts does not make a pooled network per task on top of the task's own.
    pub net_refilling: AtomicBool,
}

/// A ready task network nobody uses yet.
#[derive(Debug, Clone)]
pub struct PooledNet {
    pub netns: String,
    pub host_veth: String,
    pub address: berth_net::Cidr,
}

/// Task networks kept ready.
pub const NET_POOL_SIZE: usize = 1;

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("key", &self.key).finish()
    }
}

impl Ctx {
    fn spawn_shim(&self) -> std::io::Result<std::process::Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.dir.join("shims.log"))
            .ok();
        let mut cmd = std::process::Command::new(&self.config.exe);
        cmd.arg("shim")
            .arg("--standby")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(
                log.map(std::process::Stdio::from)
                    .unwrap_or_else(std::process::Stdio::null),
            );
        // Its own process group: a Ctrl-C aimed at the agent does not reach it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.spawn()
    }

    /// A shim waiting for its container: the spare if there is one (and a new spare is
    /// started behind it), else a fresh one.
    pub fn take_shim(self: &Arc<Self>) -> std::io::Result<std::process::Child> {
        let spare = self
            .spare_shim
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if !self.spare_refilling.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            std::thread::spawn(move || {
                let old = match me.spawn_shim() {
                    Ok(next) => me
                        .spare_shim
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .replace(next),
                    Err(_) => None,
                };
                me.spare_refilling.store(false, Ordering::Release);
                if let Some(mut old) = old {
                    // Not expected (one refill at a time): the extra one exits when
                    // its stdin closes.
                    drop(old.stdin.take());
                    let _ = old.wait();
                }
            });
        }
        match spare {
            Some(mut c) => match c.try_wait() {
                Ok(None) => Ok(c),
                _ => self.spawn_shim(),
            },
            None => self.spawn_shim(),
        }
    }

    /// Makes a task network for the pool (names random, not a task's).
    fn make_pooled_net(&self) -> Result<PooledNet, String> {
        let mut r = [0u8; 6];
        getrandom::getrandom(&mut r).map_err(|e| e.to_string())?;
        let tag = hex::encode(r);
        let address = self
            .ipam
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allocate()
            .map_err(|e| e.to_string())?;
        let net = PooledNet {
            netns: format!("{}p{tag}", self.netns_prefix()),
            host_veth: format!("{}p{}", self.veth_prefix(), &tag[..7]),
            address,
        };
        let spec = berth_net::TaskNetSpec {
            netns: net.netns.clone(),
            bridge: self.config.bridge.clone(),
            address,
            gateway: self.gateway(),
            host_veth: net.host_veth.clone(),
            mtu: None,
        };
        if let Err(e) = berth_net::create_task_netns(&spec) {
            self.ipam
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .release(address.addr());
            return Err(e.to_string());
        }
        Ok(net)
    }

    fn net_pool_len(&self) -> usize {
        self.net_pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Tops the pool up in the background, unless a refill is already under way.
    pub fn refill_net_pool(self: &Arc<Self>) {
        if self.net_refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        std::thread::spawn(move || loop {
            while me.net_pool_len() < NET_POOL_SIZE {
                match me.make_pooled_net() {
                    Ok(n) => me
                        .net_pool
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(n),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot make a spare task network");
                        me.net_refilling.store(false, Ordering::Release);
                        return;
                    }
                }
            }
            me.net_refilling.store(false, Ordering::Release);
            // A take between the last check and the store saw the flag set and left
            // the refill to us: look again.
            if me.net_pool_len() >= NET_POOL_SIZE || me.net_refilling.swap(true, Ordering::AcqRel) {
                return;
            }
        });
    }

    /// A ready task network, if the pool has one (and the pool is refilled).
    pub fn take_pooled_net(self: &Arc<Self>) -> Option<PooledNet> {
        let n = self
            .net_pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        self.refill_net_pool();
        n
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.ipam
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .gateway()
            .addr()
    }
    /// Namespace names of this agent start with this.
    pub fn netns_prefix(&self) -> String {
        format!("berth-{}-", self.key)
    }
    /// Host veth names of this agent start with this (IFNAMSIZ leaves 8 more characters).
    pub fn veth_prefix(&self) -> String {
        format!("bv{}", &self.key[..5])
    }
    /// The cgroup parent of this agent's containers.
    pub fn cgroup_parent(&self) -> String {
        format!("/berth/{}", self.key)
    }
}

/// The node's settings as the agent last ran with them (`DIR/node.json`), so that
/// `berth down` knows what to remove without a running agent.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeFile {
    pub bridge: String,
    pub subnet: String,
    pub key: String,
}

impl NodeFile {
    pub fn load(dir: &Path) -> Option<NodeFile> {
        serde_json::from_slice(&std::fs::read(dir.join("node.json")).ok()?).ok()
    }
}

/// The key of an agent directory.
pub fn agent_key(dir: &Path) -> String {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let h = sha2::Sha256::digest(canon.as_os_str().as_encoded_bytes());
    hex::encode(&h[..4])
}

/// Why a task-facing endpoint on the node gateway could not be served.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot serve the task metadata endpoint on {0}")]
    Metadata(std::net::SocketAddr, #[source] std::io::Error),
    #[error("cannot serve DNS to tasks on {0}:53")]
    Dns(Ipv4Addr, #[source] std::io::Error),
}

/// A running agent.
#[derive(Debug, Clone)]
pub struct Agent {
    pub ctx: Arc<Ctx>,
    workers: Arc<Mutex<HashMap<String, mpsc::Sender<Wake>>>>,
}

impl Agent {
    /// Prepares the host (directories, bridge) and re-adopts the tasks recorded on disk.
    pub fn open(
        config: AgentConfig,
        source: Arc<dyn ImageSource + Send + Sync>,
        control: Arc<dyn ControlPlane>,
    ) -> Result<Agent, AgentError> {
        let mk = |p: PathBuf| {
            std::fs::create_dir_all(&p).map_err(|source| AgentError::Dir {
                path: p.display().to_string(),
                source,
            })?;
            Ok::<_, AgentError>(p)
        };
        mk(config.dir.clone())?;
        let tasks_dir = mk(config.dir.join("tasks"))?;
        let images_dir = mk(config.dir.join("images"))?;
        let runc_root = mk(config.dir.join("runc"))?;
        let snapshots = Snapshots::open(config.dir.join("snapshots"))?;
        let ipam = Ipam::new(config.subnet)?;
        let bridge = berth_net::BridgeConfig {
            forwarding: config.forwarding,
        };
        berth_net::ensure_bridge_with(&config.bridge, ipam.gateway(), bridge).map_err(
            |source| AgentError::Bridge {
                bridge: config.bridge.clone(),
                source,
            },
        )?;
        let key = agent_key(&config.dir);
        let node = NodeFile {
            bridge: config.bridge.clone(),
            subnet: config.subnet.to_string(),
            key: key.clone(),
        };
        berth_runtime::shim::write_json_atomic(&config.dir.join("node.json"), &node).map_err(
            |source| AgentError::Dir {
                path: config.dir.join("node.json").display().to_string(),
                source,
            },
        )?;
        let ctx = Arc::new(Ctx {
            runc: Runc::new(&config.runc, runc_root),
            snapshots,
            images_dir,
            tasks_dir,
            source,
            control,
            ipam: Mutex::new(ipam),
            key,
            tokens: Mutex::new(HashMap::new()),
            views: Mutex::new(HashMap::new()),
            pull_lock: Mutex::new(()),
            spare_shim: Mutex::new(None),
            net_pool: Mutex::new(Vec::new()),
            spare_refilling: AtomicBool::new(false),
            net_refilling: AtomicBool::new(false),
            config,
        });
        let agent = Agent {
            ctx,
            workers: Arc::new(Mutex::new(HashMap::new())),
        };
        agent.adopt();
        Ok(agent)
    }

    /// Re-adopts every unfinished task on disk (its containers keep running under
    /// their shims) and removes what belongs to no task.
    fn adopt(&self) {
        let mut live = Vec::new();
        let mut live_nets = Vec::new();
        let entries = std::fs::read_dir(&self.ctx.tasks_dir).into_iter().flatten();
        for e in entries.flatten() {
            let Some(rec) = TaskRecord::load(&e.path()) else {
                continue;
            };
            if rec.stage == Stage::Finished {
                continue;
            }
            if let Some(ip) = rec.net.as_ref().and_then(|n| n.ip.as_deref()) {
                if let Ok(ip) = ip.parse() {
                    let _ = self
                        .ctx
                        .ipam
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .reserve(ip);
                }
            }
            tracing::info!(task = %rec.task.task_id, stage = ?rec.stage, "re-adopting task");
            live.push(rec.task.task_id.clone());
            if let Some(n) = &rec.net {
                live_nets.extend(n.netns.clone());
                live_nets.extend(n.host_veth.clone());
            }
            self.spawn_worker(rec.task.clone(), Some(rec));
        }
        crate::cleanup::leftovers(&self.ctx, &live, &live_nets);
        self.ctx.refill_net_pool();
    }

    fn spawn_worker(&self, task: AssignedTask, record: Option<TaskRecord>) {
        let (tx, rx) = mpsc::channel();
        let id = task.task_id.clone();
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), tx.clone());
        let ctx = self.ctx.clone();
        let workers = self.workers.clone();
        std::thread::Builder::new()
            .name(format!("task-{}", &id[..id.len().min(8)]))
            .spawn(move || {
                worker::run(ctx, task, record, tx, rx);
                workers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            })
            .expect("spawning a thread");
    }

    /// Removes the directories (logs, records) of tasks that finished more than
    /// `retention_secs` ago; returns how many went.
    pub fn gc_finished(&self, retention_secs: f64) -> usize {
        let cutoff = crate::worker::now_secs() - retention_secs;
        let mut removed = 0;
        for e in std::fs::read_dir(&self.ctx.tasks_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let Some(rec) = TaskRecord::load(&e.path()) else {
                continue;
            };
            if rec.stage == Stage::Finished
                && rec.stopped_at.is_some_and(|t| t < cutoff)
                && berth_runtime::rootfs::mounts_under(&e.path()).is_some_and(|m| m.is_empty())
                && std::fs::remove_dir_all(e.path()).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }

    /// One pass: new tasks get a worker, known ones hear their desired state, and a
    /// worker whose task is no longer assigned here stops it.
    pub fn sync(&self) {
        let assigned = self.ctx.control.assigned_tasks();
        let dropped: Vec<(String, mpsc::Sender<Wake>)> = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(id, _)| !assigned.iter().any(|t| &t.task_id == *id))
            .map(|(id, tx)| (id.clone(), tx.clone()))
            .collect();
        for (id, tx) in dropped {
            tracing::info!(task = %id, "task no longer assigned to this node; stopping it");
            let _ = tx.send(Wake::Dropped);
        }
        for task in assigned {
            let tx = self
                .workers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&task.task_id)
                .cloned();
            match tx {
                Some(tx) => {
                    let _ = tx.send(Wake::Desired(Box::new(task)));
                }
                None => {
                    // A task whose record says it finished was reported STOPPED already.
                    let dir = self.ctx.tasks_dir.join(&task.task_id);
                    match TaskRecord::load(&dir) {
                        Some(r) if r.stage == Stage::Finished => {
                            worker::report_final(&self.ctx, &r);
                        }
                        _ => self.spawn_worker(task, None),
                    }
                }
            }
        }
    }

    /// Serves what tasks reach on the node gateway: the task metadata endpoint (on
    /// `metadata_port`) and, with a DNS upstream, the DNS forwarder ([`crate::dns`]).
    /// Returns the metadata endpoint's address; a DNS failure comes after the metadata
    /// endpoint is up.
    pub async fn serve_endpoints(&self) -> Result<std::net::SocketAddr, EndpointError> {
        let gateway = self.ctx.gateway();
        let addr = std::net::SocketAddr::new(gateway.into(), self.ctx.config.metadata_port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| EndpointError::Metadata(addr, e))?;
        tokio::spawn(crate::metadata::serve(listener, self.ctx.clone()));
        if let Some(up) = self.ctx.config.dns_upstream {
            crate::dns::start(gateway.into(), up)
                .await
                .map_err(|e| EndpointError::Dns(gateway, e))?;
        }
        Ok(addr)
    }

    /// Runs until `shutdown` resolves: syncs on every change and every few seconds.
    /// Stopping the agent leaves the containers running.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut changes = self.ctx.control.changes();
        tokio::pin!(shutdown);
        loop {
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.sync()).await;
            tokio::select! {
                _ = &mut shutdown => return,
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(RESYNC_INTERVAL) => {}
            }
        }
    }
}
