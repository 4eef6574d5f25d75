//! `berth run`: a one-off task through the ECS API — RegisterTaskDefinition, RunTask
//! (FARGATE, the default cluster), the container's output streamed through the
//! CloudWatch Logs API until it stops, and its exit code as ours.

use anyhow::Context as _;
use serde_json::json;

use super::tasks;
use super::tasks::{ClusterArgs, ContainerArgs};

/// Exit code when the container never ran (Docker's for a daemon-side failure).
pub const EXIT_NOT_STARTED: i32 = 125;
/// Exit code when the command was not found (Docker's and the shell's).
pub const EXIT_NOT_FOUND: i32 = 127;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: ClusterArgs,
    #[command(flatten)]
    container: ContainerArgs,
    /// Name of the container (default: from the image's repository name).
    #[arg(long)]
    name: Option<String>,
    /// Print the task ARN and return at once instead of following the task.
    #[arg(short, long)]
    detach: bool,
    /// Image (a repository in berth's registry, REPOSITORY[:TAG] or @DIGEST).
    image: String,
    /// Command and arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// A container name from an image reference: its repository's last component.
fn container_name(image: &str) -> String {
    let repo = image.split(['@']).next().unwrap_or(image);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let last = last.split(':').next().unwrap_or(last);
    let name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(200)
        .collect();
    if name.is_empty() {
        "main".into()
    } else {
        name
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let api = a.target.client.api()?;
    let name = a.name.clone().unwrap_or_else(|| container_name(&a.image));
    let (container, (cpu, memory)) = a.container.definition(&name, &a.image, &a.command)?;
    let family = format!("berth-run-{}", container_name(&a.image));
    let wanted = json!({
        "family": family,
        "containerDefinitions": [container],
        "requiresCompatibilities": ["FARGATE"],
        "networkMode": "awsvpc",
        "cpu": cpu.to_string(),
        "memory": memory.to_string(),
    });
    // The family's latest revision when it is this very definition (runs of the same
    // image and options do not pile up revisions), else a new one.
    let latest = api
        .ecs("DescribeTaskDefinition", &json!({"taskDefinition": family}))
        .ok()
        .map(|d| d["taskDefinition"].clone())
        .filter(|td| same_definition(td, &wanted));
    let def_arn = match latest {
        Some(td) => td["taskDefinitionArn"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        None => {
            let def = api
                .ecs("RegisterTaskDefinition", &wanted)
                .context("registering the task definition")?;
            def["taskDefinition"]["taskDefinitionArn"]
                .as_str()
                .context("RegisterTaskDefinition returned no ARN")?
                .to_string()
        }
    };
    let out = api
        .ecs(
            "RunTask",
            &json!({
                "cluster": a.target.cluster,
                "taskDefinition": def_arn,
                "launchType": "FARGATE",
                "count": 1,
                "startedBy": "berth-run",
            }),
        )
        .context("running the task")?;
    let Some(task_arn) = out["tasks"][0]["taskArn"].as_str() else {
        let reason = out["failures"][0]["reason"].as_str().unwrap_or("unknown");
        anyhow::bail!("RunTask failed: {reason}");
    };
    if a.detach {
        println!("{task_arn}");
        return Ok(());
    }
    let interrupts = tasks::interrupts();
    let t = tasks::follow(
        &api,
        &a.target.cluster,
        task_arn,
        Some(&name),
        tasks::Until::ContainerStopped,
        Some(&interrupts),
    )?;
    let c = t["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name.as_str()))
        .cloned()
        .unwrap_or_default();
    let code = c["exitCode"].as_i64().map(|c| c as i32);
    let reason = c["reason"].as_str().filter(|r| !r.is_empty());
    if code.is_none() || code != Some(0) {
        if let Some(r) = reason {
            eprintln!("berth: container {name}: {r}");
        } else if code.is_none() {
            eprintln!(
                "berth: task stopped: {}: {}",
                t["stopCode"].as_str().unwrap_or("?"),
                t["stoppedReason"].as_str().unwrap_or("no reason given")
            );
        }
    }
    let exit = match code {
        Some(c) => c,
        None if reason.is_some_and(|r| r.contains("not found")) => EXIT_NOT_FOUND,
        None => EXIT_NOT_STARTED,
    };
    std::process::exit(exit);
}

/// Whether a registered definition is the one `wanted` asks for (the fields berth run
/// sets; ECS fills in defaults for the rest).
fn same_definition(registered: &serde_json::Value, wanted: &serde_json::Value) -> bool {
    let task_fields = ["cpu", "memory", "networkMode", "requiresCompatibilities"];
    if task_fields.iter().any(|k| registered[k] != wanted[k]) || registered["status"] != "ACTIVE" {
        return false;
    }
    let (r, w) = (
        &registered["containerDefinitions"],
        &wanted["containerDefinitions"],
    );
    if r.as_array().map(Vec::len) != Some(1) {
        return false;
    }
    let empty = json!([]);
    [
        "name",
        "image",
        "essential",
        "memory",
        "cpu",
        "command",
        "environment",
    ]
    .iter()
    .all(|k| {
        let (a, b) = (&r[0][k], &w[0][k]);
        a == b || (*k == "environment" && a.as_array().is_none_or(Vec::is_empty) && b == &empty)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registered definition is reused only when every field berth run sets matches.
    #[test]
    fn definition_reuse() {
        let wanted = json!({"cpu": "256", "memory": "512", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "containerDefinitions": [{"name": "x", "image": "x:1", "essential": true, "environment": [], "command": ["a"]}]});
        let mut reg = wanted.clone();
        reg["status"] = json!("ACTIVE");
        reg["containerDefinitions"][0]["portMappings"] = json!([]);
        assert!(same_definition(&reg, &wanted));
        reg["containerDefinitions"][0]
            .as_object_mut()
            .unwrap()
            .remove("environment");
        assert!(same_definition(&reg, &wanted));
        let mut other = reg.clone();
        other["containerDefinitions"][0]["command"] = json!(["b"]);
        assert!(!same_definition(&other, &wanted));
        let mut other = reg.clone();
        other["containerDefinitions"][0]["memory"] = json!(64);
        assert!(!same_definition(&other, &wanted));
        reg["status"] = json!("INACTIVE");
        assert!(!same_definition(&reg, &wanted));
    }

    /// Container names come from the repository's last component.
    #[test]
    fn names() {
        assert_eq!(container_name("127.0.0.1:5000/team/web:v2"), "web");
        assert_eq!(container_name("busybox@sha256:ab"), "busybox");
        assert_eq!(container_name("x.y"), "x-y");
    }
}
