//! The running data plane: its own tokio runtime, one accept loop per listener, one
//! health checker per target, and [`DataPlane::apply`], which diffs a new
//! configuration against what runs.
//!
//! What a change does: a new listener port is bound; a removed one stops
//! accepting and its connections finish the requests they have (graceful
//! shutdown); rules and targets are swapped by replacing one `Arc<Snapshot>` that
//! every request reads once, so nothing in flight is dropped. Health state is kept
//! per (target group, target id, port) across changes.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};

use crate::balance::{cookie_value, GroupRt, HealthCell, TargetRt};
use crate::config::{Action, HealthCheck, HealthSource, LbConfig, Protocol, TargetHealth};
use crate::conn;
use crate::error::RateLimited;
use crate::h1::pool::Pool;
use crate::health;
use crate::proxy::{ConnCtx, ListenerRt, Shared, Snapshot, CONNECT_TIMEOUT};
use crate::runtime::Engine;

/// How long pooled connections to targets stay open unused.
pub const POOL_IDLE: Duration = Duration::from_secs(60);
/// How many unused connections to one target the fast path's pool keeps.
pub const POOL_MAX_IDLE: usize = 256;
/// How long `shutdown` waits for requests in flight (outside an async context).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Listen backlog of each listener.
pub const BACKLOG: u32 = 1024;

/// A health check's identity: the target group, the target's id and port.
type TargetKey = (String, String, u16);

/// Why `apply` could not make part of a configuration true (the rest was applied).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("bind listener {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("listener port {port} is used by more than one load balancer ({lb})")]
    PortConflict { port: u16, lb: String },
    #[error("listener port {port} is HTTPS: TLS listeners need certificates, which the configuration does not carry")]
    Https { port: u16 },
}

struct ListenerHandle {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

struct Checker {
    addr: SocketAddr,
    check: HealthCheck,
    task: AbortHandle,
}

#[derive(Default)]
struct Running {
    listeners: HashMap<u16, ListenerHandle>,
    checkers: HashMap<TargetKey, Checker>,
    cells: HashMap<TargetKey, Arc<HealthCell>>,
}

/// The Application Load Balancer's data plane.
pub struct DataPlane {
    engine: Option<Engine>,
    handle: Handle,
    bind: IpAddr,
    shared: Arc<Shared>,
    running: Mutex<Running>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("bind", &self.bind)
            .finish()
    }
}

impl DataPlane {
    /// Starts an empty data plane on a runtime of its own with `threads` worker
    /// threads; listeners bind on `bind` as [`DataPlane::apply`] asks for them.
    pub fn start(bind: IpAddr, threads: usize) -> io::Result<DataPlane> {
        let engine = Engine::start(threads.max(1), "berth-lb")?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(DataPlane {
            handle: engine.handle().clone(),
            engine: Some(engine),
            bind,
            shared: Arc::new(Shared {
                snapshot: RwLock::new(Arc::new(Snapshot::default())),
                client,
                pool: Pool::new(POOL_MAX_IDLE, POOL_IDLE),
                log_gate: RateLimited::new(10, Duration::from_secs(1)),
            }),
            running: Mutex::new(Running::default()),
        })
    }

    /// The address listeners bind on.
    pub fn bind_address(&self) -> IpAddr {
        self.bind
    }

    /// Makes `config` what runs. Listeners that cannot be bound are reported; the
    /// rest of the configuration is applied regardless.
    pub fn apply(&self, config: LbConfig) -> Result<(), Vec<ApplyError>> {
        let mut errors = Vec::new();
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let in_use: HashSet<&str> = config
            .load_balancers
            .iter()
            .flat_map(|lb| &lb.listeners)
            .flat_map(|l| &l.rules)
            .filter_map(|r| match &r.action {
                Action::Forward { target_groups, .. } => Some(target_groups),
                _ => None,
            })
            .flatten()
            .map(|g| g.arn.as_str())
            .collect();

        // Health checkers: one per non-draining target of a used group with checks on.
        let mut wanted: HashMap<TargetKey, (SocketAddr, HealthCheck)> = HashMap::new();
        for tg in &config.target_groups {
            if !in_use.contains(tg.arn.as_str()) || !tg.health_check.enabled {
                continue;
            }
            for t in tg.targets.iter().filter(|t| t.deregistered_at_ms.is_none()) {
                if let Some(addr) = health::check_addr(&tg.health_check, t) {
                    let key = (tg.arn.clone(), t.id.clone(), t.port);
                    wanted.insert(key, (addr, tg.health_check.clone()));
                }
            }
        }
        running.checkers.retain(|key, c| {
            let keep = wanted
                .get(key)
                .is_some_and(|(addr, check)| *addr == c.addr && *check == c.check);
            if !keep {
                c.task.abort();
            }
            keep
        });
        running.cells.retain(|key, _| wanted.contains_key(key));
        for (key, (addr, check)) in wanted {
            let cell = running.cells.entry(key.clone()).or_default().clone();
            if running.checkers.contains_key(&key) {
                continue;
            }
            let task = self
                .handle
                .spawn(check_loop(cell, addr, check.clone()))
                .abort_handle();
            running.checkers.insert(key, Checker { addr, check, task });
        }

        // The snapshot requests read.
        let mut snap = Snapshot::default();
        for tg in &config.target_groups {
            let targets = tg
                .targets
                .iter()
                // A target without an address (an instance nobody could resolve) is
                // never routed to.
                .filter_map(|t| {
                    let key = (tg.arn.clone(), t.id.clone(), t.port);
                    let ip: IpAddr = t.address.parse().ok()?;
                    let addr = SocketAddr::new(ip, t.port);
                    let authority = addr.to_string();
                    Some(TargetRt {
                        cookie: cookie_value(&format!("{}|{authority}", tg.arn)),
                        authority,
                        addr,
                        draining: t.deregistered_at_ms.is_some(),
                        cell: running.cells.get(&key).cloned().unwrap_or_default(),
                        config: t.clone(),
                    })
                })
                .collect();
            let mut group = tg.clone();
            group.targets.clear();
            snap.groups.insert(
                tg.arn.clone(),
                Arc::new(GroupRt {
                    config: group,
                    in_use: in_use.contains(tg.arn.as_str()),
                    targets,
                    next: AtomicUsize::new(0),
                }),
            );
        }
        let mut owner: HashMap<u16, &str> = HashMap::new();
        for lb in &config.load_balancers {
            for l in &lb.listeners {
                if let Some(first) = owner.insert(l.port, &lb.name) {
                    errors.push(ApplyError::PortConflict {
                        port: l.port,
                        lb: format!("{first}, {}", lb.name),
                    });
                    continue;
                }
                if l.protocol == Protocol::Https {
                    errors.push(ApplyError::Https { port: l.port });
                    continue;
                }
                snap.listeners.insert(
                    l.port,
                    ListenerRt {
                        protocol: l.protocol,
                        idle_timeout: Duration::from_secs(u64::from(lb.idle_timeout_secs.max(1))),
                        rules: l.rules.clone(),
                    },
                );
            }
        }
        let ports: HashSet<u16> = snap.listeners.keys().copied().collect();
        let addrs: HashSet<SocketAddr> = snap
            .groups
            .values()
            .flat_map(|g| g.targets.iter().map(|t| t.addr))
            .collect();
        self.shared.pool.retain(|a| addrs.contains(a));
        *self
            .shared
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);

        // Listeners: stop the removed ones (gracefully), bind the new ones.
        running.listeners.retain(|port, l| {
            let keep = ports.contains(port);
            if !keep {
                l.stop.take();
            }
            keep
        });
        for port in ports {
            if running.listeners.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::new(self.bind, port);
            match self.listen(addr) {
                Ok(listener) => {
                    let (stop, stopped) = oneshot::channel();
                    let task =
                        self.handle
                            .spawn(serve(listener, port, self.shared.clone(), stopped));
                    running.listeners.insert(
                        port,
                        ListenerHandle {
                            stop: Some(stop),
                            task,
                        },
                    );
                }
                Err(source) => errors.push(ApplyError::Bind { addr, source }),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let _enter = self.handle.enter();
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // A restarted listener must bind while old connections sit in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.set_nodelay(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    }

    /// The ports listeners are bound on now.
    pub fn listening_ports(&self) -> Vec<u16> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut ports: Vec<u16> = running.listeners.keys().copied().collect();
        ports.sort_unstable();
        ports
    }

    /// Stops every listener and checker. Outside an async context, requests in
    /// flight get up to [`SHUTDOWN_GRACE`] to finish; inside one (where blocking is
    /// not allowed) the runtime is stopped at once.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            for c in running.checkers.values() {
                c.task.abort();
            }
            running.checkers.clear();
            running
                .listeners
                .drain()
                .map(|(_, mut l)| {
                    l.stop.take();
                    l.task
                })
                .collect()
        };
        if let Some(engine) = self.engine.take() {
            engine.stop(tasks, SHUTDOWN_GRACE);
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.stop_all();
    }
}

impl HealthSource for DataPlane {
    fn health(&self, tg_arn: &str, id: &str, port: u16) -> Option<TargetHealth> {
        let snap = self.shared.snapshot();
        let group = snap.groups.get(tg_arn)?;
        let target = group
            .targets
            .iter()
            .find(|t| t.config.id == id && t.config.port == port)?;
        let machine = target.cell.machine();
        health::report(
            &group.config,
            &target.config,
            group.in_use,
            Some(&machine),
            now_ms(),
        )
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Checks one target: at once, then every interval, until aborted.
async fn check_loop(cell: Arc<HealthCell>, addr: SocketAddr, check: HealthCheck) {
    let mut every =
        tokio::time::interval(Duration::from_secs(u64::from(check.interval_secs.max(1))));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let probe = health::probe(addr, &check).await;
        let changed = cell.update(|m| m.observe(probe, &check));
        if changed {
            let report = cell.machine().report();
            tracing::info!(
                target_addr = %addr,
                state = report.state.as_str(),
                reason = report.reason.as_deref().unwrap_or(""),
                "target health changed"
            );
        }
    }
}

/// One listener's accept loop; on `stop` it stops accepting and lets its
/// connections finish what they have in flight.
async fn serve(
    listener: TcpListener,
    port: u16,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    // Every connection holds a receiver: `closed` is when the last one is done.
    let (stopping, stopped) = watch::channel(false);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    if shared.log_gate.allow(std::time::Instant::now()).is_some() {
                        tracing::warn!(listener = port, "accept: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let idle = shared
            .snapshot()
            .listeners
            .get(&port)
            .map_or(Duration::from_secs(60), |l| l.idle_timeout);
        let ctx = Arc::new(ConnCtx {
            shared: shared.clone(),
            port,
            peer,
            busy: Arc::new(AtomicUsize::new(0)),
        });
        tokio::spawn(conn::serve(stream, ctx, idle, stopped.clone()));
    }
    drop(listener);
    drop(stopped);
    stopping.send_replace(true);
    stopping.closed().await;
}
