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
            lifecycle_interval_secs: a.lifecycle_interval,
            gc_interval_secs: a.gc_interval,
            gc_grace_secs: a.gc_grace,
        };
        berth_api::run(config, listener)
            .await
            .with_context(|| format!("berth server with data dir {}", a.data_dir.display()))
    })
}
