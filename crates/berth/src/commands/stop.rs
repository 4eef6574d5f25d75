//! `berth stop TASK`: StopTask (SIGTERM, then SIGKILL after the stop timeout).

use serde_json::json;

use super::tasks::ClusterArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: ClusterArgs,
    /// Why (shown as the task's stoppedReason).
    #[arg(long)]
    reason: Option<String>,
    /// Task ids or ARNs.
    #[arg(required = true)]
    tasks: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let api = a.target.client.api()?;
    for t in &a.tasks {
        let mut input = json!({"cluster": a.target.cluster, "task": t});
        if let Some(r) = &a.reason {
            input["reason"] = json!(r);
        }
        let out = api.ecs("StopTask", &input)?;
        println!("{}", out["task"]["taskArn"].as_str().unwrap_or(t));
    }
    Ok(())
}
