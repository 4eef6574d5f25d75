use super::*;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;

fn context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    fs::create_dir_all(p.join("app/sub")).unwrap();
    fs::write(p.join("app/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(p.join("app/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(p.join("app/sub/data.txt"), "data").unwrap();
    std::os::unix::fs::symlink("run.sh", p.join("app/link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", p.join("escape")).unwrap();
    fs::write(p.join("a.txt"), "a").unwrap();
    fs::write(p.join("b.txt"), "b").unwrap();
    dir
}

fn tar_entries(gz: &[u8]) -> Vec<(String, tar::EntryType, u32, Vec<u8>, u64)> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let h = e.header();
            (
                e.path().unwrap().to_string_lossy().to_string(),
                h.entry_type(),
                h.mode().unwrap(),
                data,
                h.mtime().unwrap(),
            )
        })
        .collect()
}

fn build_text(ctx: &Path, text: &str) -> Result<BuiltImage, BuildError> {
    build(ctx, &parse(text).unwrap(), None)
}

/// COPY of a directory: sorted entries, modes kept, symlinks as symlinks, mtime 0; the manifest and config agree with the layer.
#[test]
fn copy_directory_layer() {
    let ctx = context();
    let img = build_text(
        ctx.path(),
        "FROM scratch\nCOPY app /srv/\nCMD [\"/srv/run.sh\"]\n",
    )
    .unwrap();
    assert_eq!(img.new_layers.len(), 1);
    let (desc, gz) = &img.new_layers[0];
    assert_eq!(desc.digest, sha256_digest(gz));
    let entries = tar_entries(gz);
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "srv/",
            "srv/link",
            "srv/run.sh",
            "srv/sub/",
            "srv/sub/data.txt"
        ]
    );
    assert!(entries.iter().all(|e| e.4 == 0));
    let run = entries.iter().find(|e| e.0 == "srv/run.sh").unwrap();
    assert_eq!(run.2 & 0o777, 0o755);
    assert_eq!(
        entries.iter().find(|e| e.0 == "srv/link").unwrap().1,
        tar::EntryType::Symlink
    );
    let config: Value = serde_json::from_slice(&img.config).unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], json!(sha256_digest(&raw)));
    assert_eq!(config["config"]["Cmd"], json!(["/srv/run.sh"]));
    let manifest: Value = serde_json::from_slice(&img.manifest).unwrap();
    assert_eq!(manifest["config"]["digest"], json!(img.config_digest));
    assert_eq!(manifest["config"]["size"], json!(img.config.len()));
    assert_eq!(manifest["layers"][0]["size"], json!(gz.len()));
    assert_eq!(img.manifest_digest, sha256_digest(&img.manifest));
}

/// The same inputs give the same digest, whatever the files' mtimes.
#[test]
fn reproducible() {
    let ctx = context();
    let text = "FROM scratch\nCOPY . /\nENV A=1\n";
    let a = build_text(ctx.path(), text).unwrap();
    fs::write(ctx.path().join("a.txt"), "a").unwrap(); // new mtime, same content
    let b = build_text(ctx.path(), text).unwrap();
    assert_eq!(a.manifest_digest, b.manifest_digest);
    fs::write(ctx.path().join("a.txt"), "changed").unwrap();
    assert_ne!(
        build_text(ctx.path(), text).unwrap().manifest_digest,
        a.manifest_digest
    );
}

/// Nothing outside the context is read: `..` escapes are refused, symlinks are not followed.
#[test]
fn context_is_contained() {
    let ctx = context();
    let e = build_text(ctx.path(), "FROM scratch\nCOPY ../x /\n").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("line 2: source '../x' is outside the build context"),
        "{e}"
    );
    let img = build_text(ctx.path(), "FROM scratch\nCOPY escape /etc/passwd-link\n").unwrap();
    let entries = tar_entries(&img.new_layers[0].1);
    let link = entries.iter().find(|e| e.0 == "etc/passwd-link").unwrap();
    assert_eq!(link.1, tar::EntryType::Symlink);
    assert!(link.3.is_empty());
    fs::create_dir(ctx.path().join("real")).unwrap();
    std::os::unix::fs::symlink("/etc", ctx.path().join("linked")).unwrap();
    let e = build_text(ctx.path(), "FROM scratch\nCOPY linked/passwd /\n").unwrap_err();
    assert!(e.to_string().contains("does not follow symlinks"), "{e}");
    let e = build_text(ctx.path(), "FROM scratch\nCOPY missing /\n").unwrap_err();
    assert!(
        e.to_string().contains("not found in the build context"),
        "{e}"
    );
}

/// Globs, multiple sources into a directory, WORKDIR-relative destinations and ENV substitution.
#[test]
fn globs_workdir_and_env() {
    let ctx = context();
    let img = build_text(
        ctx.path(),
        "FROM scratch\nENV D=/data\nWORKDIR $D\nCOPY *.txt ./\nUSER 1000\nEXPOSE 8080\n",
    )
    .unwrap();
    assert_eq!(img.new_layers.len(), 2);
    let names: Vec<String> = tar_entries(&img.new_layers[1].1)
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(names, vec!["data/", "data/a.txt", "data/b.txt"]);
    let config: Value = serde_json::from_slice(&img.config).unwrap();
    assert_eq!(config["config"]["WorkingDir"], json!("/data"));
    assert_eq!(config["config"]["Env"], json!(["D=/data"]));
    assert_eq!(config["config"]["User"], json!("1000"));
    assert_eq!(config["config"]["ExposedPorts"], json!({"8080/tcp": {}}));
    let e = build_text(ctx.path(), "FROM scratch\nCOPY a.txt b.txt /data\n").unwrap_err();
    assert!(e.to_string().contains("must be a directory"), "{e}");
}

/// A base image's config is merged (ENV overridden, ENTRYPOINT resets CMD) and its layers kept first.
#[test]
fn base_image_merge() {
    let ctx = context();
    let base = BaseImage {
        config: json!({"config": {"Env": ["A=1", "B=2"], "Cmd": ["old"]}, "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]}, "history": [{"created_by": "base"}]}),
        layers: vec![Descriptor {
            media_type: OCI_LAYER_GZIP.into(),
            digest: "sha256:bb".into(),
            size: 3,
            ..Descriptor::default()
        }],
    };
    let img = build(
        ctx.path(),
        &parse("FROM base\nENV B=3\nENTRYPOINT [\"x\"]\nCOPY a.txt /\n").unwrap(),
        Some(base),
    )
    .unwrap();
    let config: Value = serde_json::from_slice(&img.config).unwrap();
    assert_eq!(config["config"]["Env"], json!(["A=1", "B=3"]));
    assert_eq!(config["config"].get("Cmd"), None);
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    let manifest: Value = serde_json::from_slice(&img.manifest).unwrap();
    assert_eq!(manifest["layers"][0]["digest"], json!("sha256:bb"));
    assert_eq!(img.base_layers.len(), 1);
}

/// ADD of a local tar.gz extracts it under the destination, contained there.
#[test]
fn add_extracts_archives() {
    let ctx = context();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "inner/f.txt", &b"hi"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    // tar's builder refuses ".." in names; write the name bytes directly
    h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../esc.tx");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let tar_bytes = b.into_inner().unwrap();
    fs::write(ctx.path().join("bundle.tar.gz"), layer::gzip(&tar_bytes)).unwrap();
    let img = build_text(ctx.path(), "FROM scratch\nADD bundle.tar.gz /opt/\n").unwrap();
    let names: Vec<String> = tar_entries(&img.new_layers[0].1)
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        names,
        vec!["opt/", "opt/esc.tx", "opt/inner/", "opt/inner/f.txt"]
    );
}

/// One call to a RunExecutor: (layer digest, has a blob) bottom first, config, args, line.
type RunCall = (Vec<(String, bool)>, Value, Vec<String>, usize);

/// A RunExecutor that records what it was handed and returns a canned layer tar.
struct FakeRun {
    tar: Vec<u8>,
    seen: Vec<RunCall>,
}

impl RunExecutor for FakeRun {
    fn run(
        &mut self,
        layers: &[LayerRef<'_>],
        config: &Value,
        args: &[String],
        line: usize,
    ) -> Result<Vec<u8>, BuildError> {
        let layers = layers
            .iter()
            .map(|l| (l.descriptor.digest.clone(), l.blob.is_some()))
            .collect();
        self.seen
            .push((layers, config.clone(), args.to_vec(), line));
        Ok(self.tar.clone())
    }
}

fn run_tar() -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("etc")).unwrap();
    fs::write(d.path().join("etc/built.txt"), "built\n").unwrap();
    diff::upper_to_tar(d.path()).unwrap()
}

/// RUN: the executor sees base layers by descriptor and this build's layers as blobs,
/// with the config so far; its tar becomes a layer with a diff_id and a history entry;
/// a COPY after it knows the directory the RUN made.
#[test]
fn run_layer_is_pushed() {
    let ctx = context();
    let base = BaseImage {
        config: json!({"config": {"Env": ["A=1"]}, "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]}}),
        layers: vec![Descriptor {
            media_type: OCI_LAYER_GZIP.into(),
            digest: "sha256:bb".into(),
            size: 3,
            ..Descriptor::default()
        }],
    };
    let tar = run_tar();
    let mut fake = FakeRun {
        tar: tar.clone(),
        seen: vec![],
    };
    let text = "FROM base\nCOPY a.txt /\nWORKDIR /w\nUSER 7\nRUN echo built > /etc/built.txt\nCOPY b.txt /etc\n";
    let img = build_with(
        ctx.path(),
        &parse(text).unwrap(),
        Some(base),
        Some(&mut fake),
    )
    .unwrap();
    assert_eq!(fake.seen.len(), 1);
    let (layers, cfg, args, line) = &fake.seen[0];
    let copy_digest = img.new_layers[0].0.digest.clone();
    let workdir_digest = img.new_layers[1].0.digest.clone();
    assert_eq!(
        layers,
        &vec![
            ("sha256:bb".to_string(), false),
            (copy_digest, true),
            (workdir_digest, true)
        ]
    );
    assert_eq!(
        cfg,
        &json!({"Env": ["A=1"], "WorkingDir": "/w", "User": "7"})
    );
    assert_eq!(
        args,
        &vec![
            "/bin/sh".to_string(),
            "-c".into(),
            "echo built > /etc/built.txt".into()
        ]
    );
    assert_eq!(*line, 5);
    assert_eq!(img.new_layers.len(), 4);
    let (desc, gz) = &img.new_layers[2];
    assert_eq!(desc.digest, sha256_digest(gz));
    let config: Value = serde_json::from_slice(&img.config).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][3], json!(sha256_digest(&tar)));
    assert_eq!(
        config["history"][3],
        json!({"created": EPOCH, "created_by": "RUN /bin/sh -c echo built > /etc/built.txt"})
    );
    // /etc is a directory (the RUN made it): the COPY lands inside it.
    let names: Vec<String> = tar_entries(&img.new_layers[3].1)
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(names, vec!["etc/", "etc/b.txt"]);
}

/// A RUN that changes nothing gives no layer (empty_layer); without an executor RUN is an error naming the line.
#[test]
fn run_without_changes_or_runtime() {
    let ctx = context();
    let empty = tar::Builder::new(Vec::new()).into_inner().unwrap();
    let mut fake = FakeRun {
        tar: empty,
        seen: vec![],
    };
    let ins = parse("FROM scratch\nRUN [\"/bin/true\"]\n").unwrap();
    let img = build_with(ctx.path(), &ins, None, Some(&mut fake)).unwrap();
    assert!(img.new_layers.is_empty());
    let config: Value = serde_json::from_slice(&img.config).unwrap();
    assert_eq!(
        config["history"],
        json!([{"created": EPOCH, "created_by": "RUN /bin/true", "empty_layer": true}])
    );
    let e = build(ctx.path(), &ins, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 2: RUN needs a local runtime (runc), and this build has none"
    );
}
