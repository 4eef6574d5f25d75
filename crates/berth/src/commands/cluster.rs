//! `berth cluster create|ls|rm`: ECS clusters over the ECS API.

use serde_json::json;

use super::client::ClientArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Create a cluster.
    Create {
        /// Cluster name.
        name: String,
    },
    /// List clusters with their task and service counts.
    Ls,
    /// Delete a cluster (it must have no running tasks).
    Rm {
        /// Cluster name.
        name: String,
    },
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let api = a.client.api()?;
    match a.command {
        Command::Create { name } => {
            let out = api.ecs("CreateCluster", &json!({"clusterName": name}))?;
            println!(
                "{}",
                out["cluster"]["clusterArn"].as_str().unwrap_or_default()
            );
        }
        Command::Ls => {
            let arns = api.ecs("ListClusters", &json!({}))?["clusterArns"].clone();
            println!(
                "{:<24}  {:<8}  {:>8}  {:>8}  {:>8}",
                "NAME", "STATUS", "RUNNING", "PENDING", "SERVICES"
            );
            if arns.as_array().is_some_and(|a| !a.is_empty()) {
                let out = api.ecs("DescribeClusters", &json!({"clusters": arns}))?;
                for c in out["clusters"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24}  {:<8}  {:>8}  {:>8}  {:>8}",
                        c["clusterName"].as_str().unwrap_or_default(),
                        c["status"].as_str().unwrap_or_default(),
                        c["runningTasksCount"],
                        c["pendingTasksCount"],
                        c["activeServicesCount"],
                    );
                }
            }
        }
        Command::Rm { name } => {
            api.ecs("DeleteCluster", &json!({"cluster": name}))?;
            println!("{name} deleted");
        }
    }
    Ok(())
}
