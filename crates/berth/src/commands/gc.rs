//! `berth gc`: offline garbage collection of registry blobs.
//!
//! Only for a data directory served with the embedded store, whose lock proves no
//! server is running. With etcd other servers may be writing at any moment (a push
//! in flight references blobs not yet in the store), so `berth gc` refuses and the
//! server's background GC (`--gc-interval`, with its grace period) does the work.

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
    let recorded = std::fs::read_to_string(a.data_dir.join(berth_api::store::STORE_MARKER))
        .unwrap_or_default();
    if recorded.starts_with("etcd://") {
        anyhow::bail!(
            "{} is served with the state store {}: berth gc works only on embedded stores \
             (it cannot know that no server is writing); the server's background GC \
             (--gc-interval) collects its blobs",
            a.data_dir.display(),
            recorded.trim()
        );
    }
    let store = berth_api::StoreConfig::from_flag(None, &a.data_dir)?;
    let (_, reg) = berth_api::open_registry(&a.data_dir, &store)
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
