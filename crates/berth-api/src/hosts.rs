//! `berth server --hosts N --zones a,b`: N test hosts on this machine, each a network
//! namespace on a bridge of the server's (see `berth_net::testhosts`), each running
//! `berth agent --zone Z` as a child process that joins this server over the agent
//! listener — the same path a real host takes. Tasks on different hosts and the
//! server reach each other over host routes; nothing routes off the machine.
//!
//! The server removes all of it when it stops ([`RunningHosts::stop`]); after a crash,
//! the next start (or `berth down`) removes the leftovers first ([`teardown`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_net::testhosts::{self, TestHost, TestHosts, TestHostsPlan};

/// How the test hosts are made.
#[derive(Debug, Clone)]
pub struct HostsConfig {
    /// How many hosts (1..=8).
    pub count: usize,
    /// Their availability zones, assigned round-robin.
    pub zones: Vec<String>,
    /// The berth executable (each host runs `berth agent`).
    pub exe: PathBuf,
    /// The OCI runtime the hosts' agents use.
    pub runc: PathBuf,
}

/// Errors making the test hosts.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("cannot plan the test hosts")]
    Plan(#[from] testhosts::CreateOrPlanError),
    #[error("cannot make the test hosts' network")]
    Create(#[from] testhosts::CreateError),
    #[error("cannot remove the test hosts left by an earlier run")]
    Destroy(#[from] testhosts::DestroyError),
    #[error("cannot start the agent of test host {index}")]
    Spawn {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for the test hosts' agents on {0}")]
    Listen(SocketAddr, #[source] std::io::Error),
    #[error("cannot create {0}")]
    Dir(String, #[source] std::io::Error),
}

/// The name berth's test-host names carry for the server with this data directory.
pub fn key(data_dir: &Path) -> String {
    berth_agent::agent::agent_key(&data_dir.join("hosts"))
}

fn host_dir(data_dir: &Path, index: usize) -> PathBuf {
    data_dir.join("hosts").join(format!("host{index}"))
}

/// Where host `index`'s agent keeps its tasks (and their logs).
pub fn tasks_dir(data_dir: &Path, index: usize) -> PathBuf {
    host_dir(data_dir, index).join("node").join("tasks")
}

/// The node bridge inside host `index`'s namespace (not `berth0`: a `berth down` run by
/// hand in the wrong namespace must not find the machine's own bridge).
fn host_bridge(index: usize) -> String {
    format!("bth{index}")
}

/// Test hosts with their agents running.
pub struct RunningHosts {
    hosts: TestHosts,
    data_dir: PathBuf,
    config: HostsConfig,
    agents: Mutex<Vec<Child>>,
}

impl std::fmt::Debug for RunningHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningHosts")
            .field("key", &self.hosts.plan.key)
            .finish()
    }
}

/// Stops what runs on the hosts of `data_dir`'s server (`berth down` inside each host's
/// namespace: containers, mounts, task namespaces) and removes the hosts. Used before
/// making hosts and by `berth down`; harmless when there is nothing.
pub fn teardown(data_dir: &Path, exe: &Path, runc: &Path) -> Result<(), HostsError> {
    let key = key(data_dir);
    let found = testhosts::leftovers(&key)?;
    for index in 0..testhosts::MAX_HOSTS {
        let dir = host_dir(data_dir, index);
        let ns = testhosts::host_netns_name(&key, index);
        if !dir.is_dir() || !found.netns.contains(&ns) {
            continue;
        }
        // Agents first (they would restart what `down` stops), then their tasks.
        let _ = testhosts::kill_all_in(&ns);
        let status = Command::new(testhosts::NSENTER_BIN)
            .arg(format!(
                "--net={}",
                berth_net::netns::netns_path(&ns).display()
            ))
            .arg("--")
            .arg(exe)
            .args(["down", "--data-dir"])
            .arg(&dir)
            .arg("--runc")
            .arg(runc)
            .stdout(Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            tracing::warn!(host = index, "berth down inside the test host failed");
        }
    }
    testhosts::destroy(&key)?;
    Ok(())
}

impl RunningHosts {
    /// Makes the hosts and starts their agents, which join `token_path`'s server at the
    /// listener this binds on the hosts' gateway. Returns once the agents are started
    /// (they register within a second or so).
    pub async fn start(
        app: Arc<crate::App>,
        data_dir: &Path,
        config: HostsConfig,
        identity: Arc<crate::agents::AgentIdentity>,
        dns: Option<crate::server::DnsZone>,
    ) -> Result<Arc<RunningHosts>, HostsError> {
        let key = key(data_dir);
        let (dd, c) = (data_dir.to_path_buf(), config.clone());
        let hosts = tokio::task::spawn_blocking(move || -> Result<TestHosts, HostsError> {
            teardown(&dd, &c.exe, &c.runc)?;
            let plan = TestHostsPlan::with_free_subnets(&key, c.count, &c.zones)?;
            Ok(testhosts::create(&plan)?)
        })
        .await
        .map_err(|e| HostsError::Dir("hosts".into(), std::io::Error::other(e.to_string())))??;
        let addr = SocketAddr::new(hosts.gateway().into(), 0);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| HostsError::Listen(addr, e))?;
        let bound = listener
            .local_addr()
            .map_err(|e| HostsError::Listen(addr, e))?;
        tokio::spawn(crate::agents::serve_agents(listener, app, identity.clone()));
        // The namespaces' DNS where the hosts reach it: their agents' forwarders ask here.
        let dns_upstream = match dns {
            Some(zone) => {
                let dns_addr = SocketAddr::new(hosts.gateway().into(), 0);
                let udp = tokio::net::UdpSocket::bind(dns_addr)
                    .await
                    .map_err(|e| HostsError::Listen(dns_addr, e))?;
                let at = udp
                    .local_addr()
                    .map_err(|e| HostsError::Listen(dns_addr, e))?;
                let tcp = tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|e| HostsError::Listen(at, e))?;
                tokio::spawn(berth_dns::serve(udp, tcp, zone));
                Some(at)
            }
            None => None,
        };
        let running = Arc::new(RunningHosts {
            hosts,
            data_dir: data_dir.to_path_buf(),
            config,
            agents: Mutex::new(Vec::new()),
        });
        for h in running.hosts.hosts() {
            let child = running.spawn_agent(h, bound, &identity.token_path, dns_upstream)?;
            running.lock().push(child);
        }
        tracing::info!(hosts = running.hosts.hosts().len(), gateway = %bound, "test hosts running");
        Ok(running)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Child>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn_agent(
        &self,
        h: &TestHost,
        server: SocketAddr,
        token: &Path,
        dns: Option<SocketAddr>,
    ) -> Result<Child, HostsError> {
        let dir = host_dir(&self.data_dir, h.index);
        std::fs::create_dir_all(&dir).map_err(|e| HostsError::Dir(dir.display().to_string(), e))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))
            .map_err(|e| HostsError::Dir(dir.display().to_string(), e))?;
        let err = log
            .try_clone()
            .map_err(|e| HostsError::Dir(dir.display().to_string(), e))?;
        let mut cmd = h.command(&self.config.exe);
        cmd.arg("agent")
            .arg("--server")
            .arg(server.to_string())
            .arg("--token-file")
            .arg(token)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--zone")
            .arg(&h.zone)
            .arg("--bridge")
            .arg(host_bridge(h.index))
            .arg("--task-subnet")
            .arg(h.task_subnet.to_string())
            .arg("--runc")
            .arg(&self.config.runc)
            .arg("--instance-type")
            .arg("berth.testhost")
            .arg("--address")
            .arg(h.address.addr().to_string())
            .arg("--attribute")
            .arg(format!("berth.test-host={}", h.index))
            .arg("--forward")
            .args(dns.map(|d| format!("--dns-upstream={d}")))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        // Its own process group: a Ctrl-C aimed at the server does not reach it, and a
        // killed server leaves it running (it dials again when a server comes back).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.spawn().map_err(|source| HostsError::Spawn {
            index: h.index,
            source,
        })
    }

    /// Stops the agents, everything they run, and removes the hosts.
    pub fn stop(&self) {
        for c in self.lock().iter_mut() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(c.id() as i32).expect("a child's pid"),
                rustix::process::Signal::TERM,
            );
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for c in self.lock().iter_mut() {
            while std::time::Instant::now() < deadline {
                if !matches!(c.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Err(e) = teardown(&self.data_dir, &self.config.exe, &self.config.runc) {
            tracing::warn!(error = %e, "cannot remove the test hosts");
        }
    }
}
