//! `berth logs [-f] TASK`: a container's output through the CloudWatch Logs API.

use super::tasks::{self, ClusterArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: ClusterArgs,
    /// Keep printing new output until the task stops.
    #[arg(short, long)]
    follow: bool,
    /// Container of the task (default: the first).
    #[arg(short, long)]
    container: Option<String>,
    /// Task id or ARN.
    task: String,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let api = a.target.client.api()?;
    if a.follow {
        tasks::follow(
            &api,
            &a.target.cluster,
            &a.task,
            a.container.as_deref(),
            tasks::Until::TaskStopped,
            None,
        )?;
        return Ok(());
    }
    let t = tasks::describe(&api, &a.target.cluster, &a.task)?;
    let name = match &a.container {
        Some(c) => c.clone(),
        None => t["containers"][0]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    let arn = t["taskArn"].as_str().unwrap_or(&a.task).to_string();
    let mut token: Option<String> = None;
    loop {
        let next = tasks::print_logs(&api, &tasks::stream_name(&name, &arn), token.as_deref())?;
        if token.as_deref() == Some(next.as_str()) {
            return Ok(());
        }
        token = Some(next);
    }
}
