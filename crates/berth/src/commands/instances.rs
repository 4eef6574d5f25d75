//! `berth instances [ls] | drain ID | activate ID`: the cluster's container instances
//! over the ECS API (ListContainerInstances, DescribeContainerInstances,
//! UpdateContainerInstancesState).

use anyhow::Context as _;
use serde_json::{json, Value};

use super::client::ClientArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    client: ClientArgs,
    /// Cluster name or ARN.
    #[arg(long, default_value = "default", global = true)]
    cluster: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// List the container instances (the default).
    Ls,
    /// Set an instance DRAINING: no new tasks; its service tasks are replaced elsewhere.
    Drain {
        /// Container instance id or ARN.
        id: String,
    },
    /// Set an instance ACTIVE again.
    Activate {
        /// Container instance id or ARN.
        id: String,
    },
}

/// An integer resource (`CPU`, `MEMORY`) from a `Resources` list.
fn resource(list: &Value, name: &str) -> i64 {
    list.as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == name)
        .and_then(|r| r["integerValue"].as_i64())
        .unwrap_or(0)
}

fn attribute<'a>(ci: &'a Value, name: &str) -> &'a str {
    ci["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["name"] == name)
        .and_then(|a| a["value"].as_str())
        .unwrap_or("-")
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let api = a.client.api()?;
    let set_state = |id: &str, status: &str| -> anyhow::Result<()> {
        let out = api.ecs(
            "UpdateContainerInstancesState",
            &json!({"cluster": a.cluster, "containerInstances": [id], "status": status}),
        )?;
        if let Some(f) = out["failures"].as_array().and_then(|f| f.first()) {
            anyhow::bail!(
                "container instance {id}: {}",
                f["reason"].as_str().unwrap_or("failed")
            );
        }
        println!("{id} {status}");
        Ok(())
    };
    match a.command.unwrap_or(Command::Ls) {
        Command::Drain { id } => set_state(&id, "DRAINING")?,
        Command::Activate { id } => set_state(&id, "ACTIVE")?,
        Command::Ls => {
            let mut arns: Vec<Value> = vec![];
            let mut token: Option<String> = None;
            loop {
                let mut req = json!({"cluster": a.cluster});
                if let Some(t) = &token {
                    req["nextToken"] = json!(t);
                }
                let out = api
                    .ecs("ListContainerInstances", &req)
                    .with_context(|| format!("listing the instances of cluster {}", a.cluster))?;
                arns.extend(
                    out["containerInstanceArns"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                );
                token = out["nextToken"].as_str().map(String::from);
                if token.is_none() {
                    break;
                }
            }
            println!(
                "{:<32}  {:<12}  {:<12}  {:<8}  {:<5}  {:>7}  {:>11}  {:>13}",
                "ID", "ZONE", "TYPE", "STATUS", "AGENT", "RUNNING", "CPU", "MEMORY MiB"
            );
            for chunk in arns.chunks(100) {
                let out = api.ecs(
                    "DescribeContainerInstances",
                    &json!({"cluster": a.cluster, "containerInstances": chunk}),
                )?;
                for ci in out["containerInstances"].as_array().into_iter().flatten() {
                    let (reg, rem) = (&ci["registeredResources"], &ci["remainingResources"]);
                    println!(
                        "{:<32}  {:<12}  {:<12}  {:<8}  {:<5}  {:>7}  {:>11}  {:>13}",
                        ci["containerInstanceArn"]
                            .as_str()
                            .and_then(|s| s.rsplit('/').next())
                            .unwrap_or_default(),
                        attribute(ci, "ecs.availability-zone"),
                        attribute(ci, "ecs.instance-type"),
                        ci["status"].as_str().unwrap_or_default(),
                        if ci["agentConnected"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            "no"
                        },
                        ci["runningTasksCount"],
                        format!("{}/{}", resource(rem, "CPU"), resource(reg, "CPU")),
                        format!("{}/{}", resource(rem, "MEMORY"), resource(reg, "MEMORY")),
                    );
                }
            }
        }
    }
    Ok(())
}
