//! `berth lb ...`: Application Load Balancers the short way, over the same ELBv2 API the
//! aws CLI uses: a load balancer with one HTTP listener, path routes to services, and
//! the targets' health. `berth service create --lb LB:PATH` puts a service behind a route.

use anyhow::Context as _;
use berth_client::ApiClient;
use serde_json::Value;

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
    /// Create a load balancer with an HTTP listener (answering 404 until routes exist).
    Create {
        /// Load balancer name.
        name: String,
        /// The listener's port.
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// List load balancers, their listeners and routes.
    Ls,
    /// Delete a load balancer (its listeners and routes; the target groups of its routes).
    Rm {
        /// Load balancer name.
        name: String,
    },
    /// Routes of a load balancer's listener.
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// The targets of a load balancer's routes and their health.
    Targets {
        /// Load balancer name.
        name: String,
    },
}

#[derive(clap::Subcommand, Debug)]
enum RouteCommand {
    /// Route PATH (an ELB path pattern, e.g. /users*) to SERVICE's target group (made
    /// here, `<lb>-<service>`; `berth service create --lb LB:PATH` uses it).
    Add {
        /// Load balancer name.
        lb: String,
        /// Path pattern.
        path: String,
        /// Service name (names the target group).
        service: String,
        /// The port the service's containers listen on.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The health check path of the target group.
        #[arg(long, default_value = "/")]
        health_path: String,
    },
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let api = a.client.api()?;
    match a.command {
        Command::Create { name, port } => create(&api, &name, port),
        Command::Ls => ls(&api),
        Command::Rm { name } => rm(&api, &name),
        Command::Route {
            command:
                RouteCommand::Add {
                    lb,
                    path,
                    service,
                    port,
                    health_path,
                },
        } => {
            let tg = route_add(&api, &lb, &path, &service, port, &health_path)?;
            println!("{path} → {service} ({tg})");
            Ok(())
        }
        Command::Targets { name } => targets(&api, &name),
    }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

fn list(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn create(api: &ApiClient, name: &str, port: u16) -> anyhow::Result<()> {
    let lb = &api.elb("CreateLoadBalancer", &[("Name", name.to_string())])?["LoadBalancers"][0];
    let arn = s(&lb["LoadBalancerArn"]);
    api.elb(
        "CreateListener",
        &[
            ("LoadBalancerArn", arn.clone()),
            ("Protocol", "HTTP".into()),
            ("Port", port.to_string()),
            ("DefaultActions.member.1.Type", "fixed-response".into()),
            (
                "DefaultActions.member.1.FixedResponseConfig.StatusCode",
                "404".into(),
            ),
            (
                "DefaultActions.member.1.FixedResponseConfig.ContentType",
                "text/plain".into(),
            ),
            (
                "DefaultActions.member.1.FixedResponseConfig.MessageBody",
                "no route\n".into(),
            ),
        ],
    )
    .with_context(|| format!("creating the listener on port {port}"))?;
    println!("{name}  {}  listener :{port}", s(&lb["DNSName"]));
    Ok(())
}

/// The load balancer named `name` and its (only) listener.
fn find(api: &ApiClient, name: &str) -> anyhow::Result<(Value, Option<Value>)> {
    let lb = api.elb(
        "DescribeLoadBalancers",
        &[("Names.member.1", name.to_string())],
    )?["LoadBalancers"][0]
        .clone();
    let listener = list(
        &api.elb(
            "DescribeListeners",
            &[("LoadBalancerArn", s(&lb["LoadBalancerArn"]))],
        )?["Listeners"],
    )
    .into_iter()
    .next();
    Ok((lb, listener))
}

/// Path-pattern rules of a listener: (priority, path, target group ARN, rule ARN).
fn routes(
    api: &ApiClient,
    listener_arn: &str,
) -> anyhow::Result<Vec<(u32, String, String, String)>> {
    let rules = api.elb(
        "DescribeRules",
        &[("ListenerArn", listener_arn.to_string())],
    )?;
    Ok(list(&rules["Rules"])
        .into_iter()
        .filter_map(|r| {
            let prio: u32 = s(&r["Priority"]).parse().ok()?;
            let cond = &list(&r["Conditions"])[..];
            let path = cond
                .iter()
                .find(|c| c["Field"] == "path-pattern")
                .map(|c| s(&list(&c["Values"]).first().cloned().unwrap_or_default()))
                .unwrap_or_default();
            let tg = s(&list(&r["Actions"]).first()?["TargetGroupArn"]);
            Some((prio, path, tg, s(&r["RuleArn"])))
        })
        .collect())
}

fn ls(api: &ApiClient) -> anyhow::Result<()> {
    println!("{:<24}  {:<8}  {:<50}  ROUTES", "NAME", "PORT", "DNS NAME");
    for lb in list(&api.elb("DescribeLoadBalancers", &[])?["LoadBalancers"]) {
        let name = s(&lb["LoadBalancerName"]);
        let (_, listener) = find(api, &name)?;
        let (port, rs) = match &listener {
            Some(l) => (s(&l["Port"]), routes(api, &s(&l["ListenerArn"]))?),
            None => ("-".into(), vec![]),
        };
        let shown: Vec<String> = rs
            .iter()
            .map(|(_, p, tg, _)| format!("{p}→{}", tg.rsplit('/').nth(1).unwrap_or("")))
            .collect();
        println!(
            "{name:<24}  {port:<8}  {:<50}  {}",
            s(&lb["DNSName"]),
            shown.join(" ")
        );
    }
    Ok(())
}

/// Makes (or finds) the target group `<lb>-<service>` and a rule PATH → it; returns
/// the target group's ARN.
pub fn route_add(
    api: &ApiClient,
    lb: &str,
    path: &str,
    service: &str,
    port: u16,
    health_path: &str,
) -> anyhow::Result<String> {
    let (_, listener) = find(api, lb)?;
    let listener = listener.with_context(|| format!("load balancer {lb} has no listener"))?;
    let tg_name: String = format!("{lb}-{service}").chars().take(32).collect();
    let tg = &api
        .elb(
            "CreateTargetGroup",
            &[
                ("Name", tg_name.clone()),
                ("Protocol", "HTTP".into()),
                ("Port", port.to_string()),
                ("TargetType", "ip".into()),
                ("VpcId", "vpc-berth".into()),
                ("HealthCheckPath", health_path.to_string()),
                ("HealthCheckIntervalSeconds", "5".into()),
                ("HealthCheckTimeoutSeconds", "2".into()),
                ("HealthyThresholdCount", "2".into()),
                ("UnhealthyThresholdCount", "2".into()),
            ],
        )
        .with_context(|| format!("creating target group {tg_name}"))?["TargetGroups"][0];
    let tg_arn = s(&tg["TargetGroupArn"]);
    api.elb(
        "ModifyTargetGroupAttributes",
        &[
            ("TargetGroupArn", tg_arn.clone()),
            (
                "Attributes.member.1.Key",
                "deregistration_delay.timeout_seconds".into(),
            ),
            ("Attributes.member.1.Value", "5".into()),
        ],
    )?;
    let listener_arn = s(&listener["ListenerArn"]);
    let existing = routes(api, &listener_arn)?;
    if existing
        .iter()
        .any(|(_, p, tg, _)| p == path && *tg == tg_arn)
    {
        return Ok(tg_arn);
    }
    let priority = existing.iter().map(|r| r.0).max().unwrap_or(0) + 10;
    api.elb(
        "CreateRule",
        &[
            ("ListenerArn", listener_arn),
            ("Priority", priority.to_string()),
            ("Conditions.member.1.Field", "path-pattern".into()),
            ("Conditions.member.1.Values.member.1", path.to_string()),
            ("Actions.member.1.Type", "forward".into()),
            ("Actions.member.1.TargetGroupArn", tg_arn.clone()),
        ],
    )
    .with_context(|| format!("routing {path}"))?;
    Ok(tg_arn)
}

fn rm(api: &ApiClient, name: &str) -> anyhow::Result<()> {
    let (lb, listener) = find(api, name)?;
    let groups: Vec<String> = match &listener {
        Some(l) => routes(api, &s(&l["ListenerArn"]))?
            .into_iter()
            .map(|r| r.2)
            .collect(),
        None => vec![],
    };
    api.elb(
        "DeleteLoadBalancer",
        &[("LoadBalancerArn", s(&lb["LoadBalancerArn"]))],
    )?;
    for tg in groups {
        if let Err(e) = api.elb("DeleteTargetGroup", &[("TargetGroupArn", tg.clone())]) {
            eprintln!("kept target group {tg}: {e}");
        }
    }
    println!("{name} deleted");
    Ok(())
}

fn targets(api: &ApiClient, name: &str) -> anyhow::Result<()> {
    let (_, listener) = find(api, name)?;
    let listener = listener.with_context(|| format!("load balancer {name} has no listener"))?;
    println!("{:<20}  {:<22}  {:<10}  REASON", "ROUTE", "TARGET", "STATE");
    for (_, path, tg, _) in routes(api, &s(&listener["ListenerArn"]))? {
        let h = api.elb("DescribeTargetHealth", &[("TargetGroupArn", tg)])?;
        for d in list(&h["TargetHealthDescriptions"]) {
            println!(
                "{path:<20}  {:<22}  {:<10}  {}",
                format!("{}:{}", s(&d["Target"]["Id"]), s(&d["Target"]["Port"])),
                s(&d["TargetHealth"]["State"]),
                s(&d["TargetHealth"]["Reason"]),
            );
        }
    }
    Ok(())
}
