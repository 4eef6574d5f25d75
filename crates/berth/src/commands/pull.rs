//! `berth pull`: an image from berth's registry into an OCI image layout.

use std::fs;
use std::path::PathBuf;

use anyhow::Context as _;
use berth_client::layout::{LayoutWriter, DOCKER_LIST, OCI_INDEX};
use berth_client::ImageRef;
use serde_json::{json, Value};

use super::client::{bar, check_registry, short, ClientArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    client: ClientArgs,
    /// Image to pull: REPOSITORY[:TAG|@DIGEST].
    image: String,
    /// Directory for the OCI image layout (default: ./<last part of the repository name>).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let image = ImageRef::parse(&a.image)?;
    let (api, reg) = a.client.registry()?;
    check_registry(&image, &api)?;
    let out = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(image.repository.rsplit('/').next().unwrap_or("image")));
    let writer =
        LayoutWriter::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let (mut mt, mut bytes, mut digest) = reg
        .get_manifest(&image.repository, &image.reference)
        .with_context(|| format!("cannot get the manifest of {image}"))?;
    let top = (mt.clone(), bytes.clone(), digest.clone());
    let mut v: Value = serde_json::from_slice(&bytes).context("the manifest is not JSON")?;
    if mt.starts_with(OCI_INDEX) || mt.starts_with(DOCKER_LIST) {
        writer.write_blob(&digest, &bytes)?;
        let ms = v["manifests"].as_array().cloned().unwrap_or_default();
        let child = ms
            .iter()
            .find(|m| {
                m.pointer("/platform/os") == Some(&json!("linux"))
                    && m.pointer("/platform/architecture") == Some(&json!("amd64"))
            })
            .or(ms.first())
            .context("the image index lists no manifests")?;
        let child_digest = child["digest"].as_str().unwrap_or_default().to_string();
        (mt, bytes, digest) = reg.get_manifest(&image.repository, &child_digest)?;
        v = serde_json::from_slice(&bytes).context("the manifest is not JSON")?;
    }
    writer.write_blob(&digest, &bytes)?;
    for d in std::iter::once(&v["config"]).chain(v["layers"].as_array().into_iter().flatten()) {
        let dg = d["digest"].as_str().context("a descriptor has no digest")?;
        let size = d["size"].as_u64().unwrap_or(0);
        let path = writer.blob_path(dg)?;
        let tmp = path.with_extension("partial");
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let pb = bar(&short(dg), size);
        let r = reg.get_blob(&image.repository, dg, &mut f, &|n| pb.inc(n));
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("pulling {dg}"));
        }
        fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        pb.finish_with_message("pulled");
    }
    let _ = mt;
    let tag = if image.is_digest() {
        "latest".to_string()
    } else {
        image.reference.clone()
    };
    writer.write_index(
        &top.2,
        top.0.split(';').next().unwrap_or(""),
        top.1.len() as u64,
        &tag,
    )?;
    println!("{}@{}  ->  {}", image.repository, top.2, out.display());
    Ok(())
}
