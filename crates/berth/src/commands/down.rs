//! `berth down`: stops every task the server's built-in agent runs and removes what it
//! made on this host (containers, shims, mounts, namespaces, veths, cgroups, the
//! bridge). Run it after stopping the server; running it twice is harmless.

use std::path::PathBuf;

use anyhow::Context as _;

use super::server::DEFAULT_DATA_DIR;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The server's data directory.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The OCI runtime binary.
    #[arg(long, default_value = "runc")]
    runc: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let dir = a.data_dir.join("agent");
    let t = berth_agent::cleanup::teardown(&dir, &a.runc)
        .with_context(|| format!("tearing down the node in {}", dir.display()))?;
    println!(
        "stopped {} tasks ({} running containers); removed the node's network and mounts",
        t.tasks, t.containers
    );
    Ok(())
}
