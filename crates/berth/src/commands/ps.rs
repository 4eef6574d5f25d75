//! `berth ps`: the tasks of a cluster (ListTasks + DescribeTasks).

use serde_json::json;

use super::tasks::{list_tasks, print_tasks, ClusterArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: ClusterArgs,
    /// Stopped tasks too.
    #[arg(short, long)]
    all: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let api = a.target.client.api()?;
    let cluster = a.target.cluster.as_str();
    let mut arns = list_tasks(
        &api,
        &json!({"cluster": cluster, "desiredStatus": "RUNNING"}),
    )?;
    if a.all {
        arns.extend(list_tasks(
            &api,
            &json!({"cluster": cluster, "desiredStatus": "STOPPED"}),
        )?);
    }
    print_tasks(&api, cluster, &arns)
}
