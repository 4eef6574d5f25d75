//! `berth server`: the control plane in the foreground.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;

/// Default listen address: loopback only, so nothing is exposed until asked.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/berth";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory holding all of berth's state, registry content and credentials.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Control-plane state: etcd://HOST:PORT[,HOST:PORT][/PREFIX/] for etcd (keys under
    /// /berth/ by default; registry blobs stay in DATA_DIR); default: embedded in DATA_DIR/state.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Address (HOST:PORT) of the one HTTP listener (registry and AWS APIs).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Seconds between applications of ECR lifecycle policies.
    #[arg(long, default_value_t = 3600)]
    lifecycle_interval: u64,
    /// Seconds between background garbage collections of unreferenced blobs (0 = off).
    #[arg(long, default_value_t = 3600)]
    gc_interval: u64,
    /// Seconds an unreferenced blob is kept before GC may remove it (protects pushes in flight).
    #[arg(long, default_value_t = 3600)]
    gc_grace: u64,
    /// Seconds a STOPPED task stays visible (DescribeTasks, its logs) before it is removed.
    #[arg(long, default_value_t = DEFAULT_STOPPED_TASK_RETENTION)]
    stopped_task_retention: u64,
    /// Where remote agents join (`berth agent --server`; TLS pinned by DATA_DIR/join-token).
    #[arg(long)]
    agent_listen: Option<SocketAddr>,
    /// Where load balancer listeners bind (their DNS names resolve here).
    #[arg(long, default_value = "127.0.0.1")]
    lb_address: std::net::IpAddr,
    /// Worker threads of the load balancer data plane.
    #[arg(long, default_value_t = 1)]
    lb_threads: usize,
    /// Make N test hosts on this machine (network namespaces, each running `berth agent`
    /// as a child process that joins this server), removed again when the server stops.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=8))]
    hosts: Option<u8>,
    /// The test hosts' availability zones, assigned round-robin.
    #[arg(long, value_delimiter = ',', default_value = "a,b", requires = "hosts")]
    zones: Vec<String>,
    /// Serve DNS for Cloud Map's private namespaces on ADDR:PORT (UDP and TCP): A and SRV
    /// records of registered instances; names outside the namespaces are refused.
    #[arg(long, value_name = "ADDR:PORT")]
    dns: Option<SocketAddr>,
    /// Run without the built-in agent (registry and API only; tasks stay PROVISIONING).
    #[arg(long)]
    no_agent: bool,
    #[command(flatten)]
    node: NodeArgs,
}

/// ECS keeps a stopped task visible for about an hour.
pub const DEFAULT_STOPPED_TASK_RETENTION: u64 = 3600;

/// A node's settings (the server's built-in agent, or `berth agent`).
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// Name of the node bridge tasks attach to (at most 15 characters).
    #[arg(long, default_value = DEFAULT_BRIDGE)]
    bridge: String,
    /// The node's task subnet (IPv4 CIDR); the bridge takes its first address.
    #[arg(long, default_value = DEFAULT_TASK_SUBNET)]
    task_subnet: String,
    /// Port of the task metadata endpoint on the bridge address.
    #[arg(long, default_value_t = berth_agent::agent::DEFAULT_METADATA_PORT)]
    metadata_port: u16,
    /// The OCI runtime binary.
    #[arg(long, default_value = "runc")]
    runc: PathBuf,
    /// Availability zone this node reports.
    #[arg(long, default_value = "local-a")]
    zone: String,
}

/// Default node bridge.
pub const DEFAULT_BRIDGE: &str = "berth0";
/// Default task subnet of the node.
pub const DEFAULT_TASK_SUBNET: &str = "10.213.0.0/24";

impl NodeArgs {
    /// The OCI runtime binary.
    pub fn runc(&self) -> &std::path::Path {
        &self.runc
    }

    /// The availability zone this node reports.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The agent's configuration, keeping its state in `dir`.
    pub fn agent_config(&self, dir: PathBuf) -> anyhow::Result<berth_agent::AgentConfig> {
        let subnet = self
            .task_subnet
            .parse()
            .map_err(|e| anyhow::anyhow!("--task-subnet {}: {e}", self.task_subnet))?;
        Ok(berth_agent::AgentConfig {
            dir,
            bridge: self.bridge.clone(),
            subnet,
            runc: self.runc.clone(),
            exe: std::env::current_exe().context("cannot find the berth executable")?,
            metadata_port: self.metadata_port,
            availability_zone: self.zone.clone(),
            forwarding: false,
            dns_upstream: None,
        })
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("cannot create data directory {}", a.data_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("cannot listen on {}", a.listen))?;
        let config = berth_api::ServerConfig {
            data_dir: a.data_dir.clone(),
            store: berth_api::StoreConfig::from_flag(a.store.as_deref(), &a.data_dir)?,
            lifecycle_interval_secs: a.lifecycle_interval,
            gc_interval_secs: a.gc_interval,
            gc_grace_secs: a.gc_grace,
            agent: if a.no_agent {
                None
            } else {
                Some(a.node.agent_config(a.data_dir.join("agent"))?)
            },
            stopped_task_retention_secs: a.stopped_task_retention,
            agent_listen: a.agent_listen,
            lb_address: a.lb_address,
            lb_threads: a.lb_threads,
            dns: a.dns,
            hosts: match a.hosts {
                Some(n) => Some(berth_api::hosts::HostsConfig {
                    count: n as usize,
                    zones: a.zones.clone(),
                    exe: std::env::current_exe().context("cannot find the berth executable")?,
                    runc: a.node.runc().to_path_buf(),
                }),
                None => None,
            },
        };
        berth_api::run(config, listener)
            .await
            .with_context(|| format!("berth server with data dir {}", a.data_dir.display()))
    })
}
