//! `berth ps`: the tasks of a cluster (ListTasks + DescribeTasks).

use serde_json::{json, Value};

use super::tasks::{task_id, ClusterArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: ClusterArgs,
    /// Stopped tasks too.
    #[arg(short, long)]
    all: bool,
}

fn list(api: &berth_client::ApiClient, cluster: &str, status: &str) -> anyhow::Result<Vec<String>> {
    let mut arns = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut input = json!({"cluster": cluster, "desiredStatus": status});
        if let Some(t) = &token {
            input["nextToken"] = json!(t);
        }
        let out = api.ecs("ListTasks", &input)?;
        arns.extend(
            out["taskArns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_string)),
        );
        match out["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(arns),
        }
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let api = a.target.client.api()?;
    let mut arns = list(&api, &a.target.cluster, "RUNNING")?;
    if a.all {
        arns.extend(list(&api, &a.target.cluster, "STOPPED")?);
    }
    println!(
        "{:<32}  {:<28}  {:<14}  {:<9}  {:<15}  REASON",
        "TASK", "DEFINITION", "STATUS", "HEALTH", "IP"
    );
    for chunk in arns.chunks(100) {
        let out = api.ecs(
            "DescribeTasks",
            &json!({"cluster": a.target.cluster, "tasks": chunk}),
        )?;
        for t in out["tasks"].as_array().into_iter().flatten() {
            let def = t["taskDefinitionArn"].as_str().unwrap_or_default();
            let def = def.rsplit('/').next().unwrap_or(def);
            let ip = t["containers"][0]["networkInterfaces"][0]["privateIpv4Address"]
                .as_str()
                .unwrap_or("-");
            let reason = t["stoppedReason"].as_str().unwrap_or("");
            let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
            println!(
                "{:<32}  {:<28}  {:<14}  {:<9}  {:<15}  {reason}",
                task_id(t["taskArn"].as_str().unwrap_or_default()),
                def,
                s(&t["lastStatus"]),
                s(&t["healthStatus"]),
                ip,
            );
        }
    }
    Ok(())
}
