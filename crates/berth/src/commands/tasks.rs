//! Helpers shared by the task subcommands (run, ps, logs, stop): Fargate sizes,
//! task lookups and log streaming through the CloudWatch Logs API.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use berth_client::ApiClient;
use serde_json::{json, Value};

use super::client::ClientArgs;

/// A container's resources and environment, as `berth run` and `berth service create`
/// take them.
#[derive(clap::Args, Debug)]
pub struct ContainerArgs {
    /// Hard memory limit of the container, in MiB.
    #[arg(long)]
    pub memory: Option<u32>,
    /// CPU units of the container (1024 = one CPU).
    #[arg(long)]
    pub cpu: Option<u32>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
}

impl ContainerArgs {
    /// The container definition (ECS shape) of `name` running `image` with `command`
    /// (the image's when empty), and the smallest Fargate task size (cpu, MiB) it fits.
    pub fn definition(
        &self,
        name: &str,
        image: &str,
        command: &[String],
    ) -> anyhow::Result<(Value, (u32, u32))> {
        let mut environment = Vec::new();
        for e in &self.env {
            let (k, v) = e
                .split_once('=')
                .with_context(|| format!("--env {e}: expected KEY=VALUE"))?;
            environment.push(json!({"name": k, "value": v}));
        }
        let size = fargate_size(self.cpu, self.memory).context(
            "no Fargate task size fits --cpu/--memory (at most 16384 units and 120 GiB)",
        )?;
        let mut container = json!({
            "name": name,
            "image": image,
            "essential": true,
            "environment": environment,
        });
        if let Some(m) = self.memory {
            container["memory"] = json!(m);
        }
        if let Some(c) = self.cpu {
            container["cpu"] = json!(c);
        }
        if !command.is_empty() {
            container["command"] = json!(command);
        }
        Ok((container, size))
    }
}

/// Where a task command goes: the server and the ECS cluster.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// ECS cluster.
    #[arg(long, default_value = "default", global = true)]
    pub cluster: String,
}

/// Fargate's task sizes: CPU units and the memory (MiB) each allows
/// (the ECS developer guide, "Task CPU and memory").
pub fn fargate_memory_options(cpu: u32) -> Vec<u32> {
    match cpu {
        256 => vec![512, 1024, 2048],
        512 => (1..=4).map(|g| g * 1024).collect(),
        1024 => (2..=8).map(|g| g * 1024).collect(),
        2048 => (4..=16).map(|g| g * 1024).collect(),
        4096 => (8..=30).map(|g| g * 1024).collect(),
        8192 => (4..=15).map(|g| g * 4096).collect(),
        16384 => (4..=15).map(|g| g * 8192).collect(),
        _ => vec![],
    }
}

/// The smallest Fargate size with at least `cpu` units and `memory` MiB.
pub fn fargate_size(cpu: Option<u32>, memory: Option<u32>) -> Option<(u32, u32)> {
    let (cpu, memory) = (cpu.unwrap_or(0), memory.unwrap_or(0));
    [256u32, 512, 1024, 2048, 4096, 8192, 16384]
        .into_iter()
        .filter(|&c| c >= cpu)
        .find_map(|c| {
            fargate_memory_options(c)
                .into_iter()
                .find(|&m| m >= memory)
                .map(|m| (c, m))
        })
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn format_epoch(secs: f64) -> String {
    let t = berth_sigv4::format_rfc3339(secs.max(0.0) as u64);
    t.trim_end_matches('Z').replacen('T', " ", 1)
}

/// The task id of an ARN (or the id itself).
pub fn task_id(arn_or_id: &str) -> &str {
    arn_or_id.rsplit('/').next().unwrap_or(arn_or_id)
}

/// Every task ARN ListTasks gives for `filter` (e.g. `{"cluster": .., "desiredStatus":
/// "RUNNING"}`), page after page.
pub fn list_tasks(api: &ApiClient, filter: &Value) -> anyhow::Result<Vec<String>> {
    let mut arns = Vec::new();
    let mut input = filter.clone();
    loop {
        let out = api.ecs("ListTasks", &input)?;
        arns.extend(
            out["taskArns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_string)),
        );
        match out["nextToken"].as_str() {
            Some(t) => input["nextToken"] = json!(t),
            None => return Ok(arns),
        }
    }
}

/// Where a task runs, short: `<zone>/<instance id prefix>` on a container instance,
/// `fargate` on the platform's capacity.
fn node_of(t: &Value) -> String {
    match t["containerInstanceArn"].as_str() {
        Some(arn) => {
            let id = arn.rsplit('/').next().unwrap_or(arn);
            let zone = t["availabilityZone"].as_str().unwrap_or("-");
            format!("{zone}/{}", &id[..id.len().min(8)])
        }
        None => t["launchType"].as_str().unwrap_or("-").to_ascii_lowercase(),
    }
}

/// Prints a table of tasks: id, definition, status, health, address, node, stopped reason.
pub fn print_tasks(api: &ApiClient, cluster: &str, arns: &[String]) -> anyhow::Result<()> {
    println!(
        "{:<32}  {:<28}  {:<14}  {:<9}  {:<15}  {:<20}  REASON",
        "TASK", "DEFINITION", "STATUS", "HEALTH", "IP", "NODE"
    );
    for chunk in arns.chunks(100) {
        let out = api.ecs(
            "DescribeTasks",
            &json!({"cluster": cluster, "tasks": chunk}),
        )?;
        for t in out["tasks"].as_array().into_iter().flatten() {
            let def = t["taskDefinitionArn"].as_str().unwrap_or_default();
            let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
            println!(
                "{:<32}  {:<28}  {:<14}  {:<9}  {:<15}  {:<20}  {}",
                task_id(t["taskArn"].as_str().unwrap_or_default()),
                def.rsplit('/').next().unwrap_or(def),
                s(&t["lastStatus"]),
                s(&t["healthStatus"]),
                s(&t["containers"][0]["networkInterfaces"][0]["privateIpv4Address"]),
                node_of(t),
                t["stoppedReason"].as_str().unwrap_or(""),
            );
        }
    }
    Ok(())
}

/// DescribeTasks of one task.
pub fn describe(api: &ApiClient, cluster: &str, task: &str) -> anyhow::Result<Value> {
    let out = api.ecs(
        "DescribeTasks",
        &json!({"cluster": cluster, "tasks": [task]}),
    )?;
    if let Some(t) = out["tasks"].as_array().and_then(|a| a.first()) {
        return Ok(t.clone());
    }
    let reason = out["failures"][0]["reason"].as_str().unwrap_or("MISSING");
    anyhow::bail!("task {task} not found in cluster {cluster} ({reason})")
}

/// The log stream berth keeps for a container of a task.
pub fn stream_name(container: &str, task: &str) -> String {
    format!("ecs/{container}/{}", task_id(task))
}

/// Prints new log events of `stream` from `token`; returns the next token.
pub fn print_logs(api: &ApiClient, stream: &str, token: Option<&str>) -> anyhow::Result<String> {
    let mut input =
        json!({"logGroupName": "berth", "logStreamName": stream, "startFromHead": true});
    if let Some(t) = token {
        input["nextToken"] = json!(t);
    }
    let out = api.logs("GetLogEvents", &input)?;
    let (mut so, mut se) = (std::io::stdout().lock(), std::io::stderr().lock());
    for e in out["events"].as_array().into_iter().flatten() {
        let msg = e["message"].as_str().unwrap_or_default();
        if e["berthStream"].as_str() == Some("stderr") {
            let _ = writeln!(se, "{msg}");
        } else {
            let _ = writeln!(so, "{msg}");
        }
    }
    let _ = so.flush();
    Ok(out["nextForwardToken"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// Counts Ctrl-C presses from now on (a thread with a small runtime of its own waits
/// for SIGINT).
pub fn interrupts() -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                c.fetch_add(1, Ordering::SeqCst);
            }
        });
    });
    n
}

/// When [`follow`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The task is STOPPED (its resources released).
    TaskStopped,
    /// The followed container has stopped (exit code known), as `docker run` returns;
    /// the node releases the task's resources right after.
    ContainerStopped,
}

/// Follows a task: prints the container's output as it comes, and returns the task
/// as it was when `until` held. With `interrupts`, the first Ctrl-C stops the task
/// (and following goes on), a second one gives up at once.
pub fn follow(
    api: &ApiClient,
    cluster: &str,
    task_arn: &str,
    container: Option<&str>,
    until: Until,
    interrupts: Option<&AtomicUsize>,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let mut token: Option<String> = None;
    let mut stop_sent = false;
    loop {
        match interrupts.map(|n| n.load(Ordering::SeqCst)).unwrap_or(0) {
            0 => {}
            1 if !stop_sent => {
                eprintln!(
                    "berth: stopping task {} (Ctrl-C again to leave it running)",
                    task_id(task_arn)
                );
                api.ecs(
                    "StopTask",
                    &json!({"cluster": cluster, "task": task_arn, "reason": "Interrupted in berth run"}),
                )?;
                stop_sent = true;
            }
            1 => {}
            _ => anyhow::bail!("interrupted; task {} keeps running", task_id(task_arn)),
        }
        let t = describe(api, cluster, task_arn)?;
        let name = container
            .map(str::to_string)
            .or_else(|| t["containers"][0]["name"].as_str().map(str::to_string));
        let container_stopped = t["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"].as_str() == name.as_deref() && c["lastStatus"] == "STOPPED");
        let stopped =
            t["lastStatus"] == "STOPPED" || (until == Until::ContainerStopped && container_stopped);
        let running_or_done = t["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["lastStatus"] != "PENDING");
        if running_or_done {
            if let Some(name) = &name {
                match print_logs(api, &stream_name(name, task_arn), token.as_deref()) {
                    Ok(t) => token = Some(t),
                    Err(e) if stopped => return Err(e).context("reading the task's logs"),
                    Err(_) => {}
                }
            }
        }
        if stopped {
            return Ok(t);
        }
        // Fast at first (a short task is done in a few tens of ms), then gently.
        let wait = match started.elapsed().as_millis() {
            0..1000 => 3,
            1000..3000 => 20,
            _ => 200,
        };
        std::thread::sleep(Duration::from_millis(wait));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epoch seconds print as UTC dates (checked against Python's datetime).
    #[test]
    fn dates() {
        assert_eq!(format_epoch(0.0), "1970-01-01 00:00:00");
        assert_eq!(format_epoch(1_795_000_000.0), "2026-11-18 11:06:40");
        assert_eq!(format_epoch(951_782_400.0), "2000-02-29 00:00:00");
    }

    /// The smallest valid Fargate size that fits is chosen.
    #[test]
    fn fargate_sizes() {
        assert_eq!(fargate_size(None, None), Some((256, 512)));
        assert_eq!(fargate_size(Some(256), Some(600)), Some((256, 1024)));
        assert_eq!(fargate_size(Some(300), Some(64)), Some((512, 1024)));
        assert_eq!(fargate_size(None, Some(3000)), Some((512, 3072)));
        assert_eq!(fargate_size(Some(1024), Some(1024)), Some((1024, 2048)));
        assert_eq!(fargate_size(Some(99999), None), None);
    }
}
