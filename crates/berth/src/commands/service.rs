//! `berth service ...`: ECS services in the style of `docker service`, over the same
//! ECS API the aws CLI uses (RegisterTaskDefinition, Create/Describe/List/Update/
//! DeleteService, ListTasks/DescribeTasks).

use anyhow::Context as _;
use berth_client::ApiClient;
use serde_json::{json, Value};

use super::tasks::{list_tasks, print_tasks, ClusterArgs, ContainerArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: ClusterArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Create a service running IMAGE (a task definition named after the service).
    Create(Box<CreateArgs>),
    /// List the cluster's services.
    Ls,
    /// The tasks of a service.
    Ps {
        /// Service name.
        name: String,
        /// Stopped tasks too.
        #[arg(short, long)]
        all: bool,
    },
    /// Set a service's desired count.
    Scale {
        /// Service name.
        name: String,
        /// Desired number of tasks.
        replicas: u32,
    },
    /// Roll a service to a new image (a rolling deployment), or restart its tasks.
    Update {
        /// Service name.
        name: String,
        /// The new image.
        #[arg(long)]
        image: Option<String>,
        /// Replace every task even if nothing changed.
        #[arg(long)]
        force: bool,
    },
    /// Scale a service to 0 and delete it.
    Rm {
        /// Service name.
        name: String,
    },
    /// A service's events, newest first.
    Events {
        /// Service name.
        name: String,
    },
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// Service name (also the task definition family and the container name).
    #[arg(long)]
    name: String,
    /// Desired number of tasks.
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    #[command(flatten)]
    container: ContainerArgs,
    /// Container port the service listens on (repeatable).
    #[arg(long = "port", short = 'p')]
    ports: Vec<u16>,
    /// Health check command run in the container (CMD-SHELL).
    #[arg(long)]
    health_cmd: Option<String>,
    /// FARGATE (the server's own capacity) or EC2 (the cluster's container instances).
    #[arg(long, default_value = "FARGATE", value_parser = ["FARGATE", "EC2"])]
    launch_type: String,
    /// EC2: spread tasks over `zone`, `instance` or `attribute:NAME` (repeatable, in order).
    #[arg(long, value_name = "FIELD")]
    spread: Vec<String>,
    /// EC2: pack tasks onto the fewest instances by `cpu` or `memory`.
    #[arg(long, value_name = "cpu|memory", value_parser = ["cpu", "memory"])]
    binpack: Option<String>,
    /// EC2: place only on instances matching this cluster query expression (memberOf).
    #[arg(long, value_name = "EXPRESSION")]
    constraint: Vec<String>,
    /// EC2: at most one task of the service per instance.
    #[arg(long)]
    distinct_instance: bool,
    /// Behind load balancer LB, on the route PATH (e.g. `web:/users*`): a target group
    /// `<lb>-<name>` and a path rule are made, the tasks register on the first `-p` port.
    #[arg(long, value_name = "LB:PATH")]
    lb: Option<String>,
    /// The target group's health check path (with --lb).
    #[arg(long, default_value = "/")]
    health_path: String,
    /// A DNS name NAME.NAMESPACE for the tasks (Cloud Map; the private namespace and the
    /// service are made if missing): other tasks resolve it.
    #[arg(long, value_name = "NAME.NAMESPACE")]
    dns: Option<String>,
    /// Image (a repository in berth's registry).
    image: String,
    /// Command and arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let api = a.target.client.api()?;
    let cluster = a.target.cluster.as_str();
    match a.command {
        Command::Create(c) => create(&api, cluster, *c),
        Command::Ls => ls(&api, cluster),
        Command::Ps { name, all } => ps(&api, cluster, &name, all),
        Command::Scale { name, replicas } => {
            api.ecs(
                "UpdateService",
                &json!({"cluster": cluster, "service": name, "desiredCount": replicas}),
            )?;
            println!("{name} scaled to {replicas}");
            Ok(())
        }
        Command::Update { name, image, force } => update(&api, cluster, &name, image, force),
        Command::Rm { name } => {
            api.ecs(
                "DeleteService",
                &json!({"cluster": cluster, "service": name, "force": true}),
            )?;
            println!("{name} is draining; it is gone once its tasks have stopped");
            Ok(())
        }
        Command::Events { name } => {
            let s = describe(&api, cluster, &name)?;
            for e in s["events"].as_array().into_iter().flatten() {
                println!(
                    "{}  {}",
                    super::tasks::format_epoch(e["createdAt"].as_f64().unwrap_or(0.0)),
                    e["message"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

fn describe(api: &ApiClient, cluster: &str, name: &str) -> anyhow::Result<Value> {
    let out = api.ecs(
        "DescribeServices",
        &json!({"cluster": cluster, "services": [name]}),
    )?;
    out["services"]
        .as_array()
        .and_then(|s| s.first())
        .cloned()
        .with_context(|| format!("service {name} not found in cluster {cluster}"))
}

fn create(api: &ApiClient, cluster: &str, c: CreateArgs) -> anyhow::Result<()> {
    let (mut container, (cpu, memory)) = c.container.definition(&c.name, &c.image, &c.command)?;
    container["portMappings"] = json!(c
        .ports
        .iter()
        .map(|p| json!({"containerPort": p, "protocol": "tcp"}))
        .collect::<Vec<_>>());
    if let Some(h) = &c.health_cmd {
        container["healthCheck"] =
            json!({"command": ["CMD-SHELL", h], "interval": 5, "timeout": 3, "retries": 3});
    }
    let (strategy, constraints) = placement(&c)?;
    let td = api.ecs(
        "RegisterTaskDefinition",
        &json!({
            "family": c.name,
            "containerDefinitions": [container],
            "requiresCompatibilities": [c.launch_type],
            "networkMode": "awsvpc",
            "cpu": cpu.to_string(),
            "memory": memory.to_string(),
        }),
    )?;
    let arn = td["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .unwrap_or_default();
    let mut req = json!({"cluster": cluster, "serviceName": c.name, "taskDefinition": arn,
                         "desiredCount": c.replicas, "launchType": c.launch_type});
    if !strategy.is_empty() {
        req["placementStrategy"] = json!(strategy);
    }
    if !constraints.is_empty() {
        req["placementConstraints"] = json!(constraints);
    }
    if let Some(spec) = &c.lb {
        let (lb, path) = spec
            .split_once(':')
            .with_context(|| format!("--lb {spec}: expected LB:PATH, e.g. web:/users*"))?;
        let port = *c
            .ports
            .first()
            .context("--lb needs the container port the service listens on: add -p PORT")?;
        let tg = super::lb::route_add(api, lb, path, &c.name, port, &c.health_path)?;
        req["loadBalancers"] =
            json!([{"targetGroupArn": tg, "containerName": c.name, "containerPort": port}]);
    }
    if let Some(name) = &c.dns {
        req["serviceRegistries"] = json!([{"registryArn": registry(api, name)?}]);
    }
    let s = api.ecs("CreateService", &req)?;
    println!(
        "{}",
        s["service"]["serviceArn"].as_str().unwrap_or_default()
    );
    Ok(())
}

/// The Cloud Map service for `NAME.NAMESPACE` (both made if missing): its ARN.
fn registry(api: &ApiClient, dns: &str) -> anyhow::Result<String> {
    let (svc, ns) = dns
        .split_once('.')
        .with_context(|| format!("--dns {dns}: expected NAME.NAMESPACE, e.g. users.forum.local"))?;
    let found = api.discovery("ListNamespaces", &json!({}))?["Namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["Name"] == ns)
        .and_then(|n| n["Id"].as_str().map(String::from));
    let ns_id = match found {
        Some(id) => id,
        None => {
            let op = api.discovery(
                "CreatePrivateDnsNamespace",
                &json!({"Name": ns, "Vpc": "vpc-berth"}),
            )?;
            let op = api.discovery("GetOperation", &json!({"OperationId": op["OperationId"]}))?;
            op["Operation"]["Targets"]["NAMESPACE"]
                .as_str()
                .context("Cloud Map did not say which namespace it made")?
                .to_string()
        }
    };
    let services = api.discovery(
        "ListServices",
        &json!({"Filters": [{"Name": "NAMESPACE_ID", "Values": [ns_id], "Condition": "EQ"}]}),
    )?;
    if let Some(arn) = services["Services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["Name"] == svc)
        .and_then(|s| s["Arn"].as_str())
    {
        return Ok(arn.to_string());
    }
    let made = api.discovery(
        "CreateService",
        &json!({"Name": svc, "NamespaceId": ns_id,
                "DnsConfig": {"DnsRecords": [{"Type": "A", "TTL": 10}]},
                "HealthCheckCustomConfig": {"FailureThreshold": 1}}),
    )?;
    made["Service"]["Arn"]
        .as_str()
        .map(String::from)
        .context("Cloud Map did not return the service's ARN")
}

/// ECS placement strategies and constraints from the short options.
fn placement(c: &CreateArgs) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
    let wants = !c.spread.is_empty()
        || c.binpack.is_some()
        || !c.constraint.is_empty()
        || c.distinct_instance;
    if wants && c.launch_type != "EC2" {
        anyhow::bail!("--spread, --binpack, --constraint and --distinct-instance place tasks on container instances: add --launch-type EC2");
    }
    let mut strategy: Vec<Value> = c
        .spread
        .iter()
        .map(|f| {
            let field = match f.as_str() {
                "zone" => "attribute:ecs.availability-zone",
                "instance" => "instanceId",
                other => other,
            };
            json!({"type": "spread", "field": field})
        })
        .collect();
    if let Some(b) = &c.binpack {
        strategy.push(json!({"type": "binpack", "field": b}));
    }
    let mut constraints: Vec<Value> = c
        .constraint
        .iter()
        .map(|e| json!({"type": "memberOf", "expression": e}))
        .collect();
    if c.distinct_instance {
        constraints.push(json!({"type": "distinctInstance"}));
    }
    Ok((strategy, constraints))
}

fn ls(api: &ApiClient, cluster: &str) -> anyhow::Result<()> {
    let arns = api.ecs("ListServices", &json!({"cluster": cluster}))?["serviceArns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    println!(
        "{:<24}  {:<9}  {:>7}  {:>7}  {:>7}  {:<28}  ROLLOUT",
        "NAME", "STATUS", "DESIRED", "RUNNING", "PENDING", "TASK DEFINITION"
    );
    for chunk in arns.chunks(10) {
        let out = api.ecs(
            "DescribeServices",
            &json!({"cluster": cluster, "services": chunk}),
        )?;
        for s in out["services"].as_array().into_iter().flatten() {
            let td = s["taskDefinition"].as_str().unwrap_or_default();
            println!(
                "{:<24}  {:<9}  {:>7}  {:>7}  {:>7}  {:<28}  {}",
                s["serviceName"].as_str().unwrap_or_default(),
                s["status"].as_str().unwrap_or_default(),
                s["desiredCount"],
                s["runningCount"],
                s["pendingCount"],
                td.rsplit('/').next().unwrap_or(td),
                s["deployments"][0]["rolloutState"].as_str().unwrap_or("-"),
            );
        }
    }
    Ok(())
}

fn ps(api: &ApiClient, cluster: &str, name: &str, all: bool) -> anyhow::Result<()> {
    let statuses: &[&str] = if all {
        &["RUNNING", "STOPPED"]
    } else {
        &["RUNNING"]
    };
    let mut arns = Vec::new();
    for status in statuses {
        arns.extend(list_tasks(
            api,
            &json!({"cluster": cluster, "serviceName": name, "desiredStatus": status}),
        )?);
    }
    print_tasks(api, cluster, &arns)
}

fn update(
    api: &ApiClient,
    cluster: &str,
    name: &str,
    image: Option<String>,
    force: bool,
) -> anyhow::Result<()> {
    let s = describe(api, cluster, name)?;
    let mut input = json!({"cluster": cluster, "service": name, "forceNewDeployment": force});
    if let Some(image) = image {
        let current = s["taskDefinition"].as_str().unwrap_or_default();
        let td = api.ecs(
            "DescribeTaskDefinition",
            &json!({"taskDefinition": current}),
        )?["taskDefinition"]
            .clone();
        let mut containers = td["containerDefinitions"].clone();
        if let Some(c) = containers.get_mut(0) {
            c["image"] = json!(image);
        }
        let mut register = json!({
            "family": td["family"],
            "containerDefinitions": containers,
            "networkMode": td["networkMode"],
            "requiresCompatibilities": td["requiresCompatibilities"],
        });
        for k in ["cpu", "memory"] {
            if td[k].is_string() {
                register[k] = td[k].clone();
            }
        }
        let new = api.ecs("RegisterTaskDefinition", &register)?;
        input["taskDefinition"] = new["taskDefinition"]["taskDefinitionArn"].clone();
    }
    let out = api.ecs("UpdateService", &input)?;
    println!(
        "{}: rolling to {}",
        name,
        out["service"]["taskDefinition"]
            .as_str()
            .unwrap_or_default()
    );
    Ok(())
}
