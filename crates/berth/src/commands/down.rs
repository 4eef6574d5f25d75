//! `berth down`: stops every task the server's built-in agent runs and removes what it
//! made on this host (containers, shims, mounts, namespaces, veths, cgroups, the
//! bridge), and the test hosts of `berth server --hosts`. Run it after stopping the
//! server; running it twice is harmless. Given an
//! agent's data directory (`berth agent --data-dir`), it does the same for that agent.

use std::path::PathBuf;

use anyhow::Context as _;

use super::server::DEFAULT_DATA_DIR;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The server's (or a `berth agent`'s) data directory.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The OCI runtime binary.
    #[arg(long, default_value = "runc")]
    runc: PathBuf,
}

/// The node directories under a data directory: the server's built-in agent
/// (`agent/`) and a `berth agent`'s (`node/`).
fn node_dirs(data_dir: &std::path::Path) -> Vec<PathBuf> {
    ["agent", "node"]
        .iter()
        .map(|n| data_dir.join(n))
        .filter(|d| d.is_dir())
        .collect()
}

pub fn run(a: Args) -> anyhow::Result<()> {
    // Test hosts (`berth server --hosts`) left by a server that did not stop cleanly.
    if a.data_dir.join("hosts").is_dir() {
        let exe = std::env::current_exe().context("cannot find the berth executable")?;
        berth_api::hosts::teardown(&a.data_dir, &exe, &a.runc)
            .context("removing the test hosts")?;
    }
    let (mut tasks, mut containers) = (0, 0);
    for dir in node_dirs(&a.data_dir) {
        let t = berth_agent::cleanup::teardown(&dir, &a.runc)
            .with_context(|| format!("tearing down the node in {}", dir.display()))?;
        tasks += t.tasks;
        containers += t.containers;
    }
    println!(
        "stopped {tasks} tasks ({containers} running containers); removed the node's network and mounts"
    );
    Ok(())
}
