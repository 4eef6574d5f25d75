//! `berth push`: an OCI image layout (directory or tar) into berth's registry.

use std::path::PathBuf;

use anyhow::Context as _;
use berth_client::layout::LayoutImage;
use berth_client::ImageRef;

use super::client::{bar, check_registry, short, ClientArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    client: ClientArgs,
    /// OCI image layout to push: a directory (skopeo's oci:DIR, berth pull) or a tar of one (docker save).
    source: PathBuf,
    /// Destination REPOSITORY[:TAG] (the repository must exist: aws ecr create-repository).
    target: String,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let target = ImageRef::parse(&a.target)?;
    let (api, reg) = a.client.registry()?;
    check_registry(&target, &api)?;
    let img = LayoutImage::open(&a.source, None)
        .with_context(|| format!("cannot read image layout {}", a.source.display()))?;
    for (digest, size) in &img.blobs {
        let data = img
            .blob(digest)
            .with_context(|| format!("blob {digest} of {}", a.source.display()))?;
        let pb = bar(&short(digest), data.len() as u64);
        let uploaded = reg
            .push_blob(
                &target.repository,
                digest,
                data.len() as u64,
                &mut &data[..],
                &|n| pb.inc(n),
            )
            .with_context(|| {
                format!(
                    "pushing blob {digest} ({size} bytes) to {}",
                    target.repository
                )
            })?;
        pb.finish_with_message(if uploaded { "pushed" } else { "exists" });
    }
    let digest = reg
        .push_manifest(
            &target.repository,
            &target.reference,
            &img.media_type,
            &img.manifest,
        )
        .with_context(|| format!("pushing the manifest of {target}"))?;
    println!("{}:{}@{digest}", target.repository, target.reference);
    Ok(())
}
