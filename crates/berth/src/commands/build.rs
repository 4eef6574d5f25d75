//! `berth build`: a Dockerfile subset built and pushed to berth's registry. `RUN`s
//! run under runc on this host ([`executor`]).

mod executor;

use std::path::PathBuf;

use anyhow::Context as _;
use berth_build::{BaseImage, Descriptor, InstructionKind};
use berth_client::ImageRef;
use serde_json::{json, Value};

use super::client::{bar, check_registry, short, ClientArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    client: ClientArgs,
    /// Name and tag of the image: REPOSITORY[:TAG] (the repository must exist).
    #[arg(short, long)]
    tag: String,
    /// Dockerfile to use (default: CONTEXT/Dockerfile).
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// The runc binary that runs RUN instructions.
    #[arg(long, default_value = "runc")]
    runc: PathBuf,
    /// Build context directory: COPY and ADD sources are relative to it.
    context: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let target = ImageRef::parse(&a.tag)?;
    let dockerfile = a
        .file
        .clone()
        .unwrap_or_else(|| a.context.join("Dockerfile"));
    let text = std::fs::read_to_string(&dockerfile)
        .with_context(|| format!("cannot read {}", dockerfile.display()))?;
    let instructions =
        berth_build::parse(&text).with_context(|| format!("{}", dockerfile.display()))?;
    let (api, reg) = a.client.registry()?;
    check_registry(&target, &api)?;
    let from = match &instructions[0].kind {
        InstructionKind::From(f) => f.clone(),
        _ => unreachable!("the parser guarantees FROM first"),
    };
    let (base, base_repo) = if from == "scratch" {
        (None, None)
    } else {
        let r = ImageRef::parse(&from)
            .with_context(|| format!("{} line {}", dockerfile.display(), instructions[0].line))?;
        check_registry(&r, &api)?;
        let (mt, bytes, _) = reg
            .get_manifest(&r.repository, &r.reference)
            .with_context(|| {
                format!("base image {from} must be in berth's registry (push it first)")
            })?;
        let mut m: Value = serde_json::from_slice(&bytes).context("base manifest is not JSON")?;
        if mt.contains("index") || mt.contains("manifest.list") {
            let ms = m["manifests"].as_array().cloned().unwrap_or_default();
            let child = ms
                .iter()
                .find(|c| c.pointer("/platform/architecture") == Some(&json!("amd64")))
                .or(ms.first())
                .context("base image index lists no manifests")?;
            let (_, b, _) =
                reg.get_manifest(&r.repository, child["digest"].as_str().unwrap_or_default())?;
            m = serde_json::from_slice(&b).context("base manifest is not JSON")?;
        }
        let config_digest = m["config"]["digest"]
            .as_str()
            .context("base manifest has no config")?;
        let mut config = Vec::new();
        reg.get_blob(&r.repository, config_digest, &mut config, &|_| {})?;
        let config: Value = serde_json::from_slice(&config).context("base config is not JSON")?;
        let layers: Vec<Descriptor> =
            serde_json::from_value(m["layers"].clone()).context("base layers")?;
        (Some(BaseImage { config, layers }), Some(r.repository))
    };
    // Re-parse with the base image's environment so that `$PATH` and friends expand
    // to what the base image set, as Docker does.
    let instructions = match &base {
        Some(b) => berth_build::parse_with_env(&text, &b.env())
            .with_context(|| format!("{}", dockerfile.display()))?,
        None => instructions,
    };
    let has_run = instructions
        .iter()
        .any(|i| matches!(i.kind, InstructionKind::Run(_)));
    // With RUN, Ctrl-C is counted rather than fatal, so that the RUN container is
    // killed and everything the build mounted is cleaned up; nothing is pushed after one.
    let interrupts = if has_run {
        super::tasks::interrupts()
    } else {
        Default::default()
    };
    let mut executor = if has_run {
        Some(executor::RuncExecutor::new(
            &reg,
            base_repo.clone(),
            &a.runc,
            &std::env::temp_dir(),
            interrupts.clone(),
        )?)
    } else {
        None
    };
    let built = berth_build::build_with(
        &a.context,
        &instructions,
        base,
        executor
            .as_mut()
            .map(|e| e as &mut dyn berth_build::RunExecutor),
    )
    .with_context(|| format!("building {}", dockerfile.display()))?;
    drop(executor);
    let interrupted = || interrupts.load(std::sync::atomic::Ordering::SeqCst) > 0;
    if interrupted() {
        anyhow::bail!("interrupted: nothing pushed");
    }
    for d in &built.base_layers {
        let from = base_repo.as_deref().unwrap_or_default();
        if !reg.blob_exists(&target.repository, &d.digest)?
            && !reg.mount(&target.repository, &d.digest, from)?
        {
            anyhow::bail!(
                "cannot mount base layer {} from {from} into {}",
                d.digest,
                target.repository
            );
        }
    }
    for (d, data) in &built.new_layers {
        let pb = bar(&short(&d.digest), d.size);
        let up = reg.push_blob(
            &target.repository,
            &d.digest,
            d.size,
            &mut &data[..],
            &|n| pb.inc(n),
        )?;
        pb.finish_with_message(if up { "pushed" } else { "exists" });
    }
    reg.push_blob(
        &target.repository,
        &built.config_digest,
        built.config.len() as u64,
        &mut &built.config[..],
        &|_| {},
    )?;
    if interrupted() {
        anyhow::bail!("interrupted: layers pushed, but not the manifest ({target})");
    }
    let digest = reg
        .push_manifest(
            &target.repository,
            &target.reference,
            berth_build::OCI_MANIFEST,
            &built.manifest,
        )
        .with_context(|| format!("pushing {target}"))?;
    println!("{}:{}@{digest}", target.repository, target.reference);
    Ok(())
}
