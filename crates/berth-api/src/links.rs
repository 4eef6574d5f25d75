//! ECS services' links, implemented over the ELBv2 API, the ALB data plane and Cloud
//! Map of this server (the [`ServiceLinks`] that `berth-ecs` is handed): registering a
//! task is the same RegisterTargets / RegisterInstance a user could call.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_ecs::links::{ServiceLinks, TargetGroupInfo};
use berth_lb::config::{HealthSource, HealthState};
use serde_json::{json, Value};

/// The links of this server.
pub struct Links {
    pub elb: Arc<berth_elb::Elb>,
    pub discovery: Arc<berth_discovery::Discovery>,
    pub health: Option<Arc<dyn HealthSource>>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").finish()
    }
}

/// ECS's container instances as the load balancers' `instance` targets see them.
pub struct Hosts(pub Arc<berth_ecs::Ecs>);

impl berth_elb::InstanceDirectory for Hosts {
    fn addresses(&self) -> std::collections::HashMap<String, String> {
        self.0.instance_addresses()
    }
}

/// Region and account out of an ARN (`arn:aws:<svc>:<region>:<account>:...`).
fn arn_scope(arn: &str) -> (String, String) {
    let mut p = arn.split(':');
    let region = p.nth(3).unwrap_or("us-east-1").to_string();
    let account = p.next().unwrap_or("000000000000").to_string();
    (region, account)
}

fn elb_ctx(arn: &str) -> berth_elb::Context {
    let (region, account) = arn_scope(arn);
    berth_elb::Context { region, account }
}

fn targets_param(targets: &[(String, u16)]) -> Value {
    json!(targets
        .iter()
        .map(|(a, p)| json!({"Id": a, "Port": p.to_string()}))
        .collect::<Vec<_>>())
}

impl ServiceLinks for Links {
    fn target_group(&self, arn: &str) -> Result<TargetGroupInfo, String> {
        let out = self
            .elb
            .call(
                "DescribeTargetGroups",
                json!({"TargetGroupArns": [arn]}),
                &elb_ctx(arn),
            )
            .map_err(|e| e.to_string())?;
        let tg = &out["TargetGroups"][0];
        let attrs = self
            .elb
            .call(
                "DescribeTargetGroupAttributes",
                json!({"TargetGroupArn": arn}),
                &elb_ctx(arn),
            )
            .map_err(|e| e.to_string())?;
        let delay = attrs["Attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["Key"] == "deregistration_delay.timeout_seconds")
            .and_then(|a| a["Value"].as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        Ok(TargetGroupInfo {
            target_type: tg["TargetType"].as_str().unwrap_or("instance").to_string(),
            deregistration_delay_secs: delay,
            has_load_balancer: tg["LoadBalancerArns"]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
        })
    }

    fn targets(&self, tg: &str) -> Result<Vec<(String, u16)>, String> {
        let cfg = self.elb.config();
        let group = cfg
            .target_groups
            .iter()
            .find(|g| g.arn == tg)
            .ok_or_else(|| format!("target group {tg} not found"))?;
        Ok(group
            .targets
            .iter()
            .filter(|t| t.deregistered_at_ms.is_none())
            .map(|t| (t.id.clone(), t.port))
            .collect())
    }

    fn register_targets(&self, tg: &str, targets: &[(String, u16)]) -> Result<(), String> {
        self.elb
            .call(
                "RegisterTargets",
                json!({"TargetGroupArn": tg, "Targets": targets_param(targets)}),
                &elb_ctx(tg),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn deregister_targets(&self, tg: &str, targets: &[(String, u16)]) -> Result<(), String> {
        self.elb
            .call(
                "DeregisterTargets",
                json!({"TargetGroupArn": tg, "Targets": targets_param(targets)}),
                &elb_ctx(tg),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn target_health(&self, tg: &str, address: &str, port: u16) -> Option<bool> {
        match self.health.as_ref()?.health(tg, address, port)?.state {
            HealthState::Healthy => Some(true),
            HealthState::Unhealthy => Some(false),
            _ => None,
        }
    }

    fn registry(&self, arn: &str) -> Result<Vec<String>, String> {
        let id = self
            .discovery
            .service_id(arn)
            .ok_or_else(|| "no such Cloud Map service".to_string())?;
        let (region, account) = arn_scope(arn);
        let ctx = berth_discovery::Context { region, account };
        let service = self
            .discovery
            .call("GetService", &json!({"Id": id}), &ctx)
            .map_err(|e| e.to_string())?;
        Ok(service["Service"]["DnsConfig"]["DnsRecords"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["Type"].as_str().map(String::from))
            .collect())
    }

    fn instances(&self, registry: &str) -> Result<Vec<(String, bool)>, String> {
        let id = self
            .discovery
            .service_id(registry)
            .ok_or_else(|| "no such Cloud Map service".to_string())?;
        let (region, account) = arn_scope(registry);
        let ctx = berth_discovery::Context { region, account };
        let list = self
            .discovery
            .call(
                "ListInstances",
                &json!({"ServiceId": id, "MaxResults": 100}),
                &ctx,
            )
            .map_err(|e| e.to_string())?;
        let health = self
            .discovery
            .call("GetInstancesHealthStatus", &json!({"ServiceId": id}), &ctx)
            .unwrap_or_default();
        Ok(list["Instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["Id"].as_str())
            .map(|i| {
                let healthy = health["Status"][i].as_str() != Some("UNHEALTHY");
                (i.to_string(), healthy)
            })
            .collect())
    }

    fn register_instance(
        &self,
        registry: &str,
        id: &str,
        address: &str,
        port: Option<u16>,
        healthy: bool,
    ) -> Result<(), String> {
        let mut attrs = BTreeMap::new();
        attrs.insert("AWS_INSTANCE_IPV4".to_string(), address.to_string());
        if let Some(p) = port {
            attrs.insert("AWS_INSTANCE_PORT".to_string(), p.to_string());
        }
        attrs.insert("ECS_TASK_ID".to_string(), id.to_string());
        self.discovery
            .register_instance(registry, id, None, attrs)
            .map_err(|e| e.to_string())?;
        // Custom health applies only to services made with HealthCheckCustomConfig.
        let _ = self.discovery.set_instance_health(registry, id, healthy);
        Ok(())
    }

    fn deregister_instance(&self, registry: &str, id: &str) -> Result<(), String> {
        match self.discovery.deregister_instance(registry, id) {
            Ok(_) => Ok(()),
            Err(e) if e.type_name() == "InstanceNotFound" => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}
