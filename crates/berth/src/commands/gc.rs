//! `berth gc`: offline garbage collection of registry blobs.

use std::path::PathBuf;

use anyhow::Context as _;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The server's data directory (the server must be stopped).
    #[arg(long, default_value = super::server::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Keep unreferenced blobs younger than this many seconds.
    #[arg(long, default_value_t = 0)]
    grace: u64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (_, reg) = berth_api::open_registry(&a.data_dir)
        .with_context(|| format!("cannot open {}", a.data_dir.display()))?;
    let r = reg
        .gc(a.grace, a.grace)
        .with_context(|| format!("garbage collection in {}", a.data_dir.display()))?;
    println!(
        "removed {} blob(s), {} bytes; kept {}; removed {} abandoned upload(s)",
        r.blobs_removed, r.bytes_removed, r.blobs_kept, r.uploads_removed
    );
    Ok(())
}
