//! `berth shim` (hidden): the per-container process the agent starts; it outlives
//! the agent, owns the container's output and records its exit (see `berth_runtime::shim`).
//!
//! With `--standby` it starts before it has a container: it waits for one JSON line
//! on stdin naming the container (`{"dir", "id", "runc", "runc_root", "cgroups_path"}`),
//! so that a container's start does not wait for a process to be executed. A standby
//! shim whose stdin closes without a line (its agent went away) exits.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context as _;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Wait for the container on stdin instead of the options below.
    #[arg(long)]
    standby: bool,
    /// The container directory (OCI bundle with config.json).
    #[arg(long, required_unless_present = "standby")]
    dir: Option<PathBuf>,
    /// runc's container id.
    #[arg(long, required_unless_present = "standby")]
    id: Option<String>,
    /// The runc binary.
    #[arg(long, default_value = "runc")]
    runc: PathBuf,
    /// runc's state root (`runc --root`).
    #[arg(long, required_unless_present = "standby")]
    runc_root: Option<PathBuf>,
    /// The container's cgroupsPath (for the OOM check at exit).
    #[arg(long, required_unless_present = "standby")]
    cgroups_path: Option<String>,
}

/// What a standby shim reads on stdin.
#[derive(Debug, serde::Deserialize)]
struct Assignment {
    dir: PathBuf,
    id: String,
    runc: PathBuf,
    runc_root: PathBuf,
    cgroups_path: String,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let job = if a.standby {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the container to supervise")?;
        if line.trim().is_empty() {
            return Ok(()); // the agent went away before it needed this shim
        }
        serde_json::from_str::<Assignment>(&line).context("the container to supervise")?
    } else {
        Assignment {
            dir: a.dir.context("--dir")?,
            id: a.id.context("--id")?,
            runc: a.runc,
            runc_root: a.runc_root.context("--runc-root")?,
            cgroups_path: a.cgroups_path.context("--cgroups-path")?,
        }
    };
    let cfg = berth_runtime::shim::ShimConfig {
        dir: job.dir.clone(),
        id: job.id,
        runc: berth_runtime::runc::Runc::new(job.runc, job.runc_root),
        cgroups_path: job.cgroups_path,
    };
    berth_runtime::shim::run(&cfg).with_context(|| format!("shim for {}", job.dir.display()))?;
    Ok(())
}
