//! `berth build`: images from a Dockerfile subset, with reproducible layers.
//!
//! [`dockerfile`] parses (pure); [`build`] reads the build context and produces the
//! layer blobs, the image config and the OCI manifest in memory, ready to push. No
//! networking: the caller fetches a base image (`FROM` something other than
//! `scratch`) from berth's registry and hands it in as a [`BaseImage`].
//!
//! `RUN` needs a container runtime, which this crate does not have: the caller hands
//! in a [`RunExecutor`] that runs the command on the image so far and returns what it
//! changed as a layer tar ([`diff::upper_to_tar`] turns an overlayfs upper directory
//! into one). Without an executor, `RUN` is an error.
//!
//! Reproducible: entries sorted by path, mtimes and `created` fixed at the epoch,
//! owners 0:0 unless `--chown`, gzip without name or time — the same context and
//! Dockerfile always give the same manifest digest. Nothing outside the context is
//! read: sources are resolved lexically inside it, must not pass through a symlinked
//! directory, and symlinks are copied as symlinks, never followed.
#![forbid(unsafe_code)]

pub mod diff;
pub mod dockerfile;
mod layer;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub use dockerfile::{parse, parse_with_env, Instruction, InstructionKind, ParseError};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The fixed creation time of everything berth builds (reproducibility).
pub const EPOCH: &str = "1970-01-01T00:00:00Z";

/// A content descriptor (OCI image-spec `descriptor.md`). Optional fields are kept
/// as they came, so a base layer's descriptor is pushed back unchanged.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    /// Size of the blob in bytes.
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A base image handed in by the caller: its config JSON and its layers' descriptors.
#[derive(Clone, Debug)]
pub struct BaseImage {
    pub config: Value,
    pub layers: Vec<Descriptor>,
}

impl BaseImage {
    /// The base image's `Env` as pairs, for [`dockerfile::parse_with_env`].
    pub fn env(&self) -> Vec<(String, String)> {
        self.config
            .pointer("/config/Env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// The built image: new layer blobs, config and manifest, each with its digest.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub new_layers: Vec<(Descriptor, Vec<u8>)>,
    pub base_layers: Vec<Descriptor>,
}

/// One layer of the image so far (bottom first), as a [`RunExecutor`] sees it.
#[derive(Clone, Copy, Debug)]
pub struct LayerRef<'a> {
    pub descriptor: &'a Descriptor,
    /// The compressed blob of a layer this build made; `None` for a base image layer,
    /// which the executor fetches by `descriptor.digest`.
    pub blob: Option<&'a [u8]>,
}

/// Runs one `RUN` on the image built so far.
pub trait RunExecutor {
    /// Runs `args` in a container whose root filesystem is `layers` (bottom first),
    /// with the image config so far (`config`: the config's `config` object, for
    /// `Env`, `WorkingDir` and `User`), and returns the uncompressed layer tar of the
    /// changes (no entries when nothing changed). `line` is the Dockerfile line.
    fn run(
        &mut self,
        layers: &[LayerRef<'_>],
        config: &Value,
        args: &[String],
        line: usize,
    ) -> Result<Vec<u8>, BuildError>;
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("line {line}: RUN needs a local runtime (runc), and this build has none")]
    NoRuntime { line: usize },
    #[error("Dockerfile line {line}: RUN {command} exited with code {code}")]
    RunExited {
        line: usize,
        command: String,
        code: i32,
    },
    #[error("Dockerfile line {line}: RUN {command}: {step}")]
    Run {
        line: usize,
        command: String,
        step: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("line {line}: {message}")]
    Context { line: usize, message: String },
    #[error("line {line}: cannot read {path}")]
    Io {
        line: usize,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("base image: {0}")]
    Base(String),
    #[error("cannot open the build context {path}")]
    ContextDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Builds the image described by `instructions` from the `context` directory; a
/// `RUN` is an error ([`build_with`] takes an executor for it).
pub fn build(
    context: &Path,
    instructions: &[Instruction],
    base: Option<BaseImage>,
) -> Result<BuiltImage, BuildError> {
    build_with(context, instructions, base, None)
}

/// [`build`], with `run` executing each `RUN`.
pub fn build_with(
    context: &Path,
    instructions: &[Instruction],
    base: Option<BaseImage>,
    mut run: Option<&mut dyn RunExecutor>,
) -> Result<BuiltImage, BuildError> {
    let context = &context
        .canonicalize()
        .map_err(|source| BuildError::ContextDir {
            path: context.display().to_string(),
            source,
        })?;
    // The platform is the base image's; a scratch image is amd64/linux.
    let mut platform = json!({"architecture": "amd64", "os": "linux"});
    if let Some(b) = &base {
        if !b.config.is_object() {
            return Err(BuildError::Base("config is not a JSON object".into()));
        }
        for k in ["architecture", "os", "variant", "os.version"] {
            if let Some(v) = b.config.get(k).filter(|v| v.is_string()) {
                platform[k] = v.clone();
            }
        }
    }
    let (mut cfg, mut diff_ids, mut history, base_layers) = match base {
        Some(b) => {
            let cfg = b.config.get("config").cloned().unwrap_or_else(|| json!({}));
            let diff_ids: Vec<Value> = b
                .config
                .pointer("/rootfs/diff_ids")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if diff_ids.len() != b.layers.len() {
                return Err(BuildError::Base(format!(
                    "config lists {} diff_ids but the manifest {} layers",
                    diff_ids.len(),
                    b.layers.len()
                )));
            }
            let history = b
                .config
                .get("history")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            (cfg, diff_ids, history, b.layers)
        }
        None => (json!({}), Vec::new(), Vec::new(), Vec::new()),
    };
    if !cfg.is_object() {
        cfg = json!({});
    }
    let mut workdir = cfg
        .get("WorkingDir")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut new_layers: Vec<(Descriptor, Vec<u8>)> = Vec::new();
    let mut tree = layer::Tree::new();
    // Docker: ENTRYPOINT resets CMD unless this Dockerfile set CMD itself.
    let mut cmd_set = false;
    for ins in instructions {
        let created_by = describe(&ins.kind);
        let mut entries = None;
        let mut run_tar = None;
        match &ins.kind {
            InstructionKind::From(_) => continue,
            InstructionKind::Copy {
                sources,
                dest,
                chown,
            }
            | InstructionKind::Add {
                sources,
                dest,
                chown,
            } => {
                let spec = layer::CopySpec {
                    sources,
                    dest,
                    chown: chown.as_deref(),
                    extract_archives: matches!(ins.kind, InstructionKind::Add { .. }),
                    line: ins.line,
                };
                entries = Some(layer::copy_layer(context, &spec, &workdir, &tree)?);
            }
            InstructionKind::Workdir(w) => {
                workdir = layer::resolve_dest(w, &workdir)
                    .trim_end_matches('/')
                    .to_string();
                if workdir.is_empty() {
                    workdir = "/".into();
                }
                entries = Some(layer::dir_entries(&workdir, &tree));
                cfg["WorkingDir"] = json!(workdir);
            }
            InstructionKind::Env(kvs) => {
                let mut env: Vec<String> = cfg
                    .get("Env")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                for (k, v) in kvs {
                    // Replaced in place, as Docker does, else appended.
                    let kv = format!("{k}={v}");
                    match env
                        .iter_mut()
                        .find(|e| e.split_once('=').map_or(e.as_str(), |(ek, _)| ek) == k)
                    {
                        Some(e) => *e = kv,
                        None => env.push(kv),
                    }
                }
                cfg["Env"] = json!(env);
            }
            InstructionKind::Label(kvs) => {
                let mut labels: BTreeMap<String, Value> = cfg
                    .get("Labels")
                    .and_then(Value::as_object)
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default();
                for (k, v) in kvs {
                    labels.insert(k.clone(), json!(v));
                }
                cfg["Labels"] = json!(labels);
            }
            InstructionKind::Entrypoint(e) => {
                cfg["Entrypoint"] = json!(e);
                if !cmd_set {
                    if let Some(o) = cfg.as_object_mut() {
                        o.remove("Cmd");
                    }
                }
            }
            InstructionKind::Cmd(c) => {
                cfg["Cmd"] = json!(c);
                cmd_set = true;
            }
            InstructionKind::Expose(ports) => {
                for p in ports {
                    if cfg.get("ExposedPorts").and_then(Value::as_object).is_none() {
                        cfg["ExposedPorts"] = json!({});
                    }
                    cfg["ExposedPorts"][p] = json!({});
                }
            }
            InstructionKind::User(u) => cfg["User"] = json!(u),
            InstructionKind::Run(args) => {
                let exec = run
                    .as_mut()
                    .ok_or(BuildError::NoRuntime { line: ins.line })?;
                let layers: Vec<LayerRef<'_>> = base_layers
                    .iter()
                    .map(|d| LayerRef {
                        descriptor: d,
                        blob: None,
                    })
                    .chain(new_layers.iter().map(|(d, b)| LayerRef {
                        descriptor: d,
                        blob: Some(&b[..]),
                    }))
                    .collect();
                run_tar = Some(exec.run(&layers, &cfg, args, ins.line)?);
            }
        }
        let mut h = json!({"created": EPOCH, "created_by": created_by});
        if let Some(tar) = run_tar {
            if layer::apply_tar(&mut tree, &tar, ins.line)? > 0 {
                push_layer(&mut new_layers, &mut diff_ids, tar);
            } else {
                h["empty_layer"] = json!(true);
            }
            history.push(h);
            continue;
        }
        match entries {
            Some(entries) if !entries.is_empty() => {
                layer::commit(&mut tree, &entries, ins.line)?;
                let tar = layer::write_tar(&entries, ins.line)?;
                push_layer(&mut new_layers, &mut diff_ids, tar);
            }
            // Nothing changed on the filesystem: no layer (OCI image-spec config.md).
            _ => h["empty_layer"] = json!(true),
        }
        history.push(h);
    }
    let mut config = platform;
    config["created"] = json!(EPOCH);
    config["config"] = cfg;
    config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    config["history"] = json!(history);
    let config = serde_json::to_vec(&config).expect("config serialises");
    let config_digest = sha256_digest(&config);
    let layers: Vec<Descriptor> = base_layers
        .iter()
        .cloned()
        .chain(new_layers.iter().map(|(d, _)| d.clone()))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layers,
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest serialises");
    Ok(BuiltImage {
        manifest_digest: sha256_digest(&manifest),
        manifest,
        config_digest,
        config,
        new_layers,
        base_layers,
    })
}

fn push_layer(
    new_layers: &mut Vec<(Descriptor, Vec<u8>)>,
    diff_ids: &mut Vec<Value>,
    tar: Vec<u8>,
) {
    diff_ids.push(json!(sha256_digest(&tar)));
    let gz = layer::gzip(&tar);
    let d = Descriptor {
        media_type: OCI_LAYER_GZIP.into(),
        digest: sha256_digest(&gz),
        size: gz.len() as u64,
        ..Descriptor::default()
    };
    new_layers.push((d, gz));
}

fn describe(k: &InstructionKind) -> String {
    use InstructionKind::*;
    match k {
        From(i) => format!("FROM {i}"),
        Copy { sources, dest, .. } => format!("COPY {} {dest}", sources.join(" ")),
        Add { sources, dest, .. } => format!("ADD {} {dest}", sources.join(" ")),
        Env(kv) => format!(
            "ENV {}",
            kv.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Workdir(w) => format!("WORKDIR {w}"),
        Entrypoint(e) => format!(
            "ENTRYPOINT {}",
            serde_json::to_string(e).unwrap_or_default()
        ),
        Cmd(c) => format!("CMD {}", serde_json::to_string(c).unwrap_or_default()),
        Expose(p) => format!("EXPOSE {}", p.join(" ")),
        User(u) => format!("USER {u}"),
        Run(args) => format!("RUN {}", args.join(" ")),
        Label(kv) => format!(
            "LABEL {}",
            kv.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

#[cfg(test)]
mod tests;
