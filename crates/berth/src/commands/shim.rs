//! `berth shim` (hidden): the per-container process the agent starts; it outlives
//! the agent, owns the container's output and records its exit (see `berth_runtime::shim`).

use std::path::PathBuf;

use anyhow::Context as _;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The container directory (OCI bundle with config.json).
    #[arg(long)]
    dir: PathBuf,
    /// runc's container id.
    #[arg(long)]
    id: String,
    /// The runc binary.
    #[arg(long, default_value = "runc")]
    runc: PathBuf,
    /// runc's state root (`runc --root`).
    #[arg(long)]
    runc_root: PathBuf,
    /// The container's cgroupsPath (for the OOM check at exit).
    #[arg(long)]
    cgroups_path: String,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let cfg = berth_runtime::shim::ShimConfig {
        dir: a.dir.clone(),
        id: a.id,
        runc: berth_runtime::runc::Runc::new(a.runc, a.runc_root),
        cgroups_path: a.cgroups_path,
    };
    berth_runtime::shim::run(&cfg).with_context(|| format!("shim for {}", a.dir.display()))?;
    Ok(())
}
