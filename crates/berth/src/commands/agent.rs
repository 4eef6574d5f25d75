//! `berth agent`: joins this host to a berth server as a container instance.
//!
//! The agent dials out to the server's agent listener (`berth server --agent-listen`),
//! trusting only the certificate the join token pins, registers the host (cpu, memory,
//! zone, attributes) and converges it to the tasks the server places here. It survives
//! the server going away (it dials again; running containers are left alone) and its
//! own restarts (it re-adopts what runs).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use berth_agent::join::JoinToken;
use berth_agent::protocol::InstanceInfo;
use berth_agent::remote::{RemoteControlPlane, RemoteImages};

use super::server::NodeArgs;

/// Default agent data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/berth-agent";
/// Host ports ECS reserves on every container instance (ssh, docker, the ECS agent).
pub const RESERVED_PORTS: [u16; 5] = [22, 2375, 2376, 51678, 51679];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The server's agent listener, HOST:PORT (`https://` optional).
    #[arg(long)]
    server: String,
    /// The join token (the contents of DATA_DIR/join-token on the server).
    #[arg(
        long,
        env = "BERTH_JOIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// A file holding the join token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The cluster this host joins.
    #[arg(long, default_value = "default")]
    cluster: String,
    /// Where the agent keeps its tasks, images and snapshots.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Reported as the attribute ecs.instance-type.
    #[arg(long, default_value = "berth.host")]
    instance_type: String,
    /// A custom attribute NAME or NAME=VALUE (repeatable), for placement constraints.
    #[arg(long = "attribute", value_name = "NAME[=VALUE]")]
    attributes: Vec<String>,
    /// CPU units offered to tasks (default: 1024 per core of this host).
    #[arg(long)]
    cpu: Option<u32>,
    /// Memory offered to tasks, MiB (default: this host's memory less 256 MiB).
    #[arg(long)]
    memory: Option<u32>,
    /// The address other hosts and the server reach this host's tasks through (shown
    /// in DescribeContainerInstances).
    #[arg(long)]
    address: Option<String>,
    /// Route between the task bridge and this host's other interfaces, so that tasks
    /// on other hosts reach this host's tasks (host routes, as flannel's host-gw).
    /// Refused on a host whose namespace has a default route.
    #[arg(long)]
    forward: bool,
    /// The server's DNS (its --dns address as this host reaches it): tasks resolve Cloud
    /// Map names through a forwarder on the node gateway that asks it.
    #[arg(long, value_name = "ADDR:PORT")]
    dns_upstream: Option<std::net::SocketAddr>,
    #[command(flatten)]
    node: NodeArgs,
}

fn read_token(a: &Args) -> anyhow::Result<JoinToken> {
    let text = match (&a.token, &a.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the join token from {}", f.display()))?,
        (None, None) => anyhow::bail!(
            "berth agent needs the server's join token: --token TOKEN, --token-file FILE or BERTH_JOIN_TOKEN (the server writes it to DATA_DIR/join-token)"
        ),
    };
    JoinToken::parse(&text).context("the join token is malformed")
}

/// The agent's stable id, made once and kept in its data directory.
fn agent_id(dir: &std::path::Path) -> anyhow::Result<String> {
    let path = dir.join("agent-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(id.to_string());
        }
    }
    let mut r = [0u8; 16];
    getrandom::getrandom(&mut r).context("no randomness for the agent id")?;
    let id = hex::encode(r);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{id}\n"))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// This host's memory in MiB, from /proc/meminfo.
fn host_memory_mib() -> u32 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| (kb / 1024).saturating_sub(256).min(u32::MAX as u64) as u32)
        .unwrap_or(1024)
}

fn parse_attribute(s: &str) -> (String, Option<String>) {
    match s.split_once('=') {
        Some((k, v)) => (k.to_string(), Some(v.to_string())),
        None => (s.to_string(), None),
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let token = read_token(&a)?;
    let server = a
        .server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("cannot create data directory {}", a.data_dir.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let instance = InstanceInfo {
        cluster: a.cluster.clone(),
        agent_id: agent_id(&a.data_dir)?,
        zone: a.node.zone().to_string(),
        instance_type: a.instance_type.clone(),
        cpu: a.cpu.unwrap_or(cores * 1024),
        memory_mib: a.memory.unwrap_or_else(host_memory_mib),
        reserved_ports: RESERVED_PORTS.to_vec(),
        attributes: a.attributes.iter().map(|s| parse_attribute(s)).collect(),
        address: a.address.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let mut config = a.node.agent_config(a.data_dir.join("node"))?;
    config.forwarding = a.forward;
    config.dns_upstream = a.dns_upstream;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let control = RemoteControlPlane::new(server.clone(), token.clone(), instance);
        // Join first: a host the server refuses gets nothing set up.
        let mut joined = control.instance_arn();
        let mut stream = tokio::spawn(control.clone().run());
        tokio::select! {
            r = joined.wait_for(Option::is_some) => { r.context("the agent stream stopped")?; }
            refused = &mut stream => {
                return Err(anyhow::Error::new(refused.context("the agent stream panicked")?));
            }
        }
        let source = Arc::new(RemoteImages::new(&server, &token));
        let c = control.clone();
        let agent = tokio::task::spawn_blocking(move || berth_agent::Agent::open(config, source, c))
            .await
            .context("the agent's start-up panicked")?
            .context("cannot start the agent (run as root with runc installed)")?;
        agent.serve_endpoints().await?;
        tokio::spawn(agent.clone().run(std::future::pending()));
        let gc = agent.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                let g = gc.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    g.gc_finished(super::server::DEFAULT_STOPPED_TASK_RETENTION as f64)
                })
                .await;
            }
        });
        tracing::info!(%server, bridge = %agent.ctx.config.bridge, subnet = %agent.ctx.config.subnet, "berth agent running");
        tokio::select! {
            refused = stream => Err(anyhow::Error::new(refused.context("the agent stream panicked")?)),
            _ = berth_api::server::shutdown_signal() => {
                tracing::info!("berth agent stopping; its containers keep running");
                Ok(())
            }
        }
    })
}
