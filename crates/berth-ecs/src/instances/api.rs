//! The container instance operations: Register/Deregister/Describe/ListContainerInstances,
//! UpdateContainerInstancesState, Put/Delete/ListAttributes, and the capacity provider
//! operations (berth's capacity providers are FARGATE and FARGATE_SPOT).

use std::collections::BTreeMap;

use berth_state::{Compare, Op, Revision, StateError};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    ecs_attributes, instance_key, instance_ref, is_ecs_attribute, render_attributes,
    render_instance, usage, validate_attribute, InstanceRecord, DEFAULT_RESERVED_PORTS,
    MAX_CUSTOM_ATTRS,
};
use crate::ops::{
    arn, cluster_key, cluster_name, now, paginate, validate_tags, with_token, ClusterRecord, Tag,
    TaskRecord, CAS_RETRIES, DEFAULT_CLUSTER, MAX_DESCRIBE,
};
use crate::{validate, Context, Ecs, EcsError};

/// UpdateContainerInstancesState takes at most this many instances.
const MAX_UPDATE_STATE: usize = 10;
/// PutAttributes/DeleteAttributes take at most this many attributes per call.
const MAX_ATTRS_PER_CALL: usize = 10;
/// berth's capacity providers (its built-in agent is the Fargate capacity).
pub(crate) const CAPACITY_PROVIDERS: [&str; 2] = ["FARGATE", "FARGATE_SPOT"];

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstancesInput {
    cluster: Option<String>,
    container_instance: Option<String>,
    container_instances: Option<Vec<String>>,
    #[serde(default)]
    force: Option<bool>,
    include: Option<Vec<String>>,
    filter: Option<String>,
    status: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
    // RegisterContainerInstance
    instance_identity_document: Option<String>,
    #[serde(default)]
    total_resources: Vec<Value>,
    version_info: Option<Value>,
    container_instance_arn: Option<String>,
    #[serde(default)]
    attributes: Vec<AttributeInput>,
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AttributeInput {
    name: Option<String>,
    value: Option<String>,
    target_type: Option<String>,
    target_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AttributesInput {
    cluster: Option<String>,
    #[serde(default)]
    attributes: Vec<AttributeInput>,
    target_type: Option<String>,
    attribute_name: Option<String>,
    attribute_value: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CapacityInput {
    cluster: Option<String>,
    capacity_providers: Option<Vec<String>>,
    default_capacity_provider_strategy: Option<Vec<Value>>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

/// An integer resource (`CPU`, `MEMORY`) from RegisterContainerInstance's totalResources.
fn int_resource(res: &[Value], name: &str) -> Option<u32> {
    let r = res.iter().find(|r| r["name"] == name)?;
    ["integerValue", "longValue"]
        .iter()
        .find_map(|k| r[*k].as_u64())
        .or_else(|| r["doubleValue"].as_f64().map(|d| d.max(0.0) as u64))
        .map(|n| n.min(u64::from(u32::MAX)) as u32)
}

fn ports_resource(res: &[Value], name: &str) -> Option<Vec<u16>> {
    let r = res.iter().find(|r| r["name"] == name)?;
    Some(
        r["stringSetValue"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str()?.parse().ok())
            .collect(),
    )
}

impl Ecs {
    /// The cluster an instance call addresses: it must exist (`default` included).
    fn instance_cluster(&self, cluster: Option<&str>) -> Result<ClusterRecord, EcsError> {
        let name = cluster_name(cluster.unwrap_or(DEFAULT_CLUSTER));
        if !validate::valid_name(&name) {
            return Err(EcsError::ClusterNotFound);
        }
        Ok(self
            .get::<ClusterRecord>(&cluster_key(&name))?
            .ok_or(EcsError::ClusterNotFound)?
            .0)
    }

    fn find_instance(
        &self,
        cluster: &str,
        reference: &str,
    ) -> Result<Option<(String, InstanceRecord, Revision)>, EcsError> {
        let Some((in_arn, id)) = instance_ref(reference) else {
            return Ok(None);
        };
        if in_arn.is_some_and(|c| c != cluster) {
            return Ok(None);
        }
        let key = instance_key(cluster, &id);
        Ok(self
            .get::<InstanceRecord>(&key)?
            .map(|(r, rev)| (key, r, rev)))
    }

    fn cluster_tasks(&self, cluster: &str) -> Result<Vec<TaskRecord>, EcsError> {
        Ok(self
            .list::<TaskRecord>(&format!("/ecs/tasks/{cluster}/"))?
            .into_iter()
            .map(|(_, t, _)| t)
            .collect())
    }

    fn render_with_usage(&self, r: &InstanceRecord, tasks: &[TaskRecord], tags: bool) -> Value {
        let u = usage(
            tasks
                .iter()
                .filter(|t| t.agent.as_deref() == Some(r.arn.as_str())),
        );
        render_instance(r, &u, tags)
    }

    pub(crate) fn register_container_instance(
        &self,
        i: InstancesInput,
        ctx: &Context,
    ) -> Result<Value, EcsError> {
        validate_tags(&i.tags)?;
        let doc: Value = match &i.instance_identity_document {
            Some(d) => serde_json::from_str(d).map_err(|e| {
                EcsError::InvalidParameter(format!(
                    "instanceIdentityDocument is not a JSON document: {e}"
                ))
            })?,
            None => Value::Null,
        };
        let mut attrs: BTreeMap<String, Option<String>> = ecs_attributes(
            doc["availabilityZone"]
                .as_str()
                .unwrap_or(&format!("{}a", ctx.region)),
            doc["instanceType"].as_str().unwrap_or("berth.local"),
        )
        .into_iter()
        .collect();
        for a in &i.attributes {
            let name = a.name.clone().unwrap_or_default();
            validate_attribute(&name, a.value.as_deref())?;
            attrs.insert(name, a.value.clone());
        }
        let custom = attrs.keys().filter(|k| !is_ecs_attribute(k)).count();
        if custom > MAX_CUSTOM_ATTRS {
            return Err(EcsError::AttributeLimitExceeded(format!(
                "A container instance can have at most {MAX_CUSTOM_ATTRS} custom attributes, got {custom}."
            )));
        }
        let res = &i.total_resources;
        let cpu = int_resource(res, "CPU").unwrap_or(0);
        let memory = int_resource(res, "MEMORY").unwrap_or(0);
        let ports = ports_resource(res, "PORTS").unwrap_or_else(|| DEFAULT_RESERVED_PORTS.to_vec());
        let udp = ports_resource(res, "PORTS_UDP").unwrap_or_default();
        let existing = match &i.container_instance_arn {
            Some(a) => Some(
                instance_ref(a)
                    .ok_or_else(|| {
                        EcsError::InvalidParameter(format!("Invalid containerInstanceArn '{a}'."))
                    })?
                    .1,
            ),
            None => None,
        };
        let t = now();
        let rec = self.write_instance(
            i.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER),
            None,
            existing.as_deref(),
            ctx,
            |old, ident| InstanceRecord {
                ec2_instance_id: doc["instanceId"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| ident.ec2_instance_id()),
                address: old.and_then(|o| o.address.clone()),
                id: ident.id.clone(),
                arn: ident.arn.clone(),
                cluster: ident.cluster.clone(),
                cluster_arn: ident.cluster_arn.clone(),
                agent_id: old.and_then(|o| o.agent_id.clone()),
                status: old.map_or("ACTIVE".into(), |o| o.status.clone()),
                status_reason: None,
                agent_connected: old.is_some_and(|o| o.agent_connected),
                registered_at: old.map_or(t, |o| o.registered_at),
                last_heartbeat: old.and_then(|o| o.last_heartbeat),
                cpu,
                memory_mib: memory,
                reserved_ports: ports.clone(),
                reserved_udp_ports: udp.clone(),
                attributes: attrs.clone(),
                version_info: i.version_info.clone().unwrap_or_else(|| json!({})),
                tags: if i.tags.is_empty() {
                    old.map(|o| o.tags.clone()).unwrap_or_default()
                } else {
                    i.tags.clone()
                },
                version: old.map_or(1, |o| o.version + 1),
            },
        )?;
        let tasks = self.cluster_tasks(&rec.cluster)?;
        Ok(json!({"containerInstance": self.render_with_usage(&rec, &tasks, true)}))
    }

    pub(crate) fn deregister_container_instance(
        &self,
        i: InstancesInput,
    ) -> Result<Value, EcsError> {
        let c = self.instance_cluster(i.cluster.as_deref())?;
        let reference = i
            .container_instance
            .ok_or_else(|| EcsError::InvalidParameter("containerInstance is required.".into()))?;
        let force = i.force.unwrap_or(false);
        for _ in 0..CAS_RETRIES {
            let (key, rec, rev) = self
                .find_instance(&c.cluster_name, &reference)?
                .ok_or_else(|| {
                    EcsError::InvalidParameter(
                        "The referenced container instance was not found.".into(),
                    )
                })?;
            let tasks = self.cluster_tasks(&c.cluster_name)?;
            let on_it: Vec<&TaskRecord> = tasks
                .iter()
                .filter(|t| t.agent.as_deref() == Some(rec.arn.as_str()))
                .filter(|t| t.task.last_status != "STOPPED")
                .collect();
            if !on_it.is_empty() && !force {
                return Err(EcsError::InvalidParameter(
                    "Found running tasks on the instance.".into(),
                ));
            }
            let mut compares = vec![Compare::at(&key, rev)];
            let mut ops = vec![Op::Delete { key: key.clone() }];
            if let Some(agent) = &rec.agent_id {
                let ikey = super::agent_index_key(&c.cluster_name, agent);
                if self.store.get(&ikey).is_some() {
                    ops.push(Op::Delete { key: ikey });
                }
            }
            compares.push(Compare::at(cluster_key(&c.cluster_name), {
                match self.store.get(&cluster_key(&c.cluster_name)) {
                    Some(e) => e.mod_revision,
                    None => return Err(EcsError::ClusterNotFound),
                }
            }));
            match self.store.txn(&compares, ops) {
                Ok(_) => {
                    let mut out = render_instance(&rec, &usage(on_it.iter().copied()), false);
                    out["status"] = json!("INACTIVE");
                    // Forced: the tasks lose their host; stop them so that services
                    // replace them (ECS leaves them orphaned on the instance).
                    for t in on_it {
                        let _ = self.stop_task(crate::ops::TasksInput {
                            cluster: Some(c.cluster_name.clone()),
                            task: Some(t.task.task_arn.clone()),
                            reason: Some(format!("Container instance {} was deregistered", rec.id)),
                            ..Default::default()
                        });
                    }
                    self.notify();
                    return Ok(json!({"containerInstance": out}));
                }
                Err(StateError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EcsError::Server(
            "the container instance kept changing; retry".into(),
        ))
    }

    pub(crate) fn describe_container_instances(
        &self,
        i: InstancesInput,
    ) -> Result<Value, EcsError> {
        let c = self.instance_cluster(i.cluster.as_deref())?;
        let refs = i.container_instances.unwrap_or_default();
        if refs.is_empty() || refs.len() > MAX_DESCRIBE {
            return Err(EcsError::InvalidParameter(format!(
                "containerInstances must name between 1 and {MAX_DESCRIBE} container instances."
            )));
        }
        let tags = i.include.iter().flatten().any(|f| f == "TAGS");
        let tasks = self.cluster_tasks(&c.cluster_name)?;
        let mut out = vec![];
        let mut failures = vec![];
        for r in refs {
            match self.find_instance(&c.cluster_name, &r)? {
                Some((_, rec, _)) => out.push(self.render_with_usage(&rec, &tasks, tags)),
                None => failures.push(json!({"arn": r, "reason": "MISSING"})),
            }
        }
        Ok(json!({"containerInstances": out, "failures": failures}))
    }

    pub(crate) fn list_container_instances(&self, i: InstancesInput) -> Result<Value, EcsError> {
        let c = self.instance_cluster(i.cluster.as_deref())?;
        let status = i.status.as_deref();
        if let Some(s) = status {
            if !matches!(
                s,
                "ACTIVE" | "DRAINING" | "REGISTERING" | "DEREGISTERING" | "REGISTRATION_FAILED"
            ) {
                return Err(EcsError::InvalidParameter(format!(
                    "Invalid status '{s}': must be ACTIVE, DRAINING, REGISTERING, DEREGISTERING or REGISTRATION_FAILED."
                )));
            }
        }
        let expr = match i.filter.as_deref().filter(|f| !f.is_empty()) {
            Some(f) => Some(berth_scheduler::parse(f).map_err(|e| {
                EcsError::InvalidParameter(format!("Invalid filter expression: {e}"))
            })?),
            None => None,
        };
        let recs: Vec<InstanceRecord> = self
            .list::<InstanceRecord>(&format!("/ecs/instances/{}/", c.cluster_name))?
            .into_iter()
            .map(|(_, r, _)| r)
            .filter(|r| status.is_none_or(|s| r.status == s))
            .collect();
        let mut recs = recs;
        recs.sort_by(|a, b| {
            a.registered_at
                .total_cmp(&b.registered_at)
                .then(a.id.cmp(&b.id))
        });
        let arns: Vec<String> = match expr {
            None => recs.iter().map(|r| r.arn.clone()).collect(),
            Some(e) => {
                let tasks = self.cluster_tasks(&c.cluster_name)?;
                let state = crate::placement::cluster_state(&recs, &tasks)?;
                recs.iter()
                    .filter(|r| {
                        state
                            .matches(&berth_scheduler::InstanceId(r.id.clone()), &e)
                            .unwrap_or(false)
                    })
                    .map(|r| r.arn.clone())
                    .collect()
            }
        };
        let (page, next) = paginate(&arns, i.next_token.as_deref(), i.max_results)?;
        Ok(with_token(json!({"containerInstanceArns": page}), next))
    }

    pub(crate) fn update_container_instances_state(
        &self,
        i: InstancesInput,
    ) -> Result<Value, EcsError> {
        let c = self.instance_cluster(i.cluster.as_deref())?;
        let status = i
            .status
            .ok_or_else(|| EcsError::InvalidParameter("status is required.".into()))?;
        if !matches!(status.as_str(), "ACTIVE" | "DRAINING") {
            return Err(EcsError::InvalidParameter(format!(
                "Container instances can be set to ACTIVE or DRAINING, not '{status}'."
            )));
        }
        let refs = i.container_instances.unwrap_or_default();
        if refs.is_empty() || refs.len() > MAX_UPDATE_STATE {
            return Err(EcsError::InvalidParameter(format!(
                "containerInstances must name between 1 and {MAX_UPDATE_STATE} container instances."
            )));
        }
        let tasks = self.cluster_tasks(&c.cluster_name)?;
        let mut out = vec![];
        let mut failures = vec![];
        for r in refs {
            let Some((key, _, _)) = self.find_instance(&c.cluster_name, &r)? else {
                failures.push(json!({"arn": r, "reason": "MISSING"}));
                continue;
            };
            let rec: InstanceRecord = self.update(
                &key,
                || EcsError::InvalidParameter(format!("Container instance {r} not found.")),
                |rec: &mut InstanceRecord| {
                    if rec.status == status {
                        return Ok(false);
                    }
                    rec.status = status.clone();
                    rec.version += 1;
                    Ok(true)
                },
            )?;
            out.push(self.render_with_usage(&rec, &tasks, false));
        }
        self.notify();
        Ok(json!({"containerInstances": out, "failures": failures}))
    }

    // -- attributes ----------------------------------------------------------------------

    /// The instance an attribute targets (its `targetId`, an id or ARN).
    fn attribute_target(
        &self,
        cluster: &str,
        a: &AttributeInput,
    ) -> Result<(String, String), EcsError> {
        if let Some(t) = a.target_type.as_deref() {
            if t != "container-instance" {
                return Err(EcsError::InvalidParameter(format!(
                    "Invalid targetType '{t}': must be container-instance."
                )));
            }
        }
        let target = a.target_id.clone().ok_or_else(|| {
            EcsError::InvalidParameter("targetId is required for every attribute.".into())
        })?;
        match self.find_instance(cluster, &target)? {
            Some((key, _, _)) => Ok((key, target)),
            None => Err(EcsError::TargetNotFound(format!(
                "Could not find {target}."
            ))),
        }
    }

    fn change_attributes(&self, i: AttributesInput, put: bool) -> Result<Value, EcsError> {
        let c = self.instance_cluster(i.cluster.as_deref())?;
        if i.attributes.is_empty() || i.attributes.len() > MAX_ATTRS_PER_CALL {
            return Err(EcsError::InvalidParameter(format!(
                "attributes must list between 1 and {MAX_ATTRS_PER_CALL} attributes."
            )));
        }
        let mut by_key: BTreeMap<String, Vec<AttributeInput>> = BTreeMap::new();
        for a in &i.attributes {
            let name = a.name.clone().unwrap_or_default();
            validate_attribute(&name, if put { a.value.as_deref() } else { None })?;
            if is_ecs_attribute(&name) {
                return Err(EcsError::InvalidParameter(format!(
                    "Attribute '{name}' is set by ECS and cannot be changed."
                )));
            }
            let (key, _) = self.attribute_target(&c.cluster_name, a)?;
            by_key.entry(key).or_default().push(a.clone());
        }
        let mut out = vec![];
        for (key, attrs) in by_key {
            let rec: InstanceRecord = self.update(
                &key,
                || EcsError::TargetNotFound(format!("Could not find {key}.")),
                |rec: &mut InstanceRecord| {
                    for a in &attrs {
                        let name = a.name.clone().unwrap_or_default();
                        if put {
                            rec.attributes.insert(name, a.value.clone());
                        } else {
                            rec.attributes.remove(&name);
                        }
                    }
                    let custom = rec.attributes.keys().filter(|k| !is_ecs_attribute(k)).count();
                    if custom > MAX_CUSTOM_ATTRS {
                        return Err(EcsError::AttributeLimitExceeded(format!(
                            "A container instance can have at most {MAX_CUSTOM_ATTRS} custom attributes."
                        )));
                    }
                    rec.version += 1;
                    Ok(true)
                },
            )?;
            for a in attrs {
                let mut v = json!({"name": a.name, "targetType": "container-instance", "targetId": rec.arn});
                if let Some(val) = &a.value {
                    v["value"] = json!(val);
                }
                out.push(v);
            }
        }
        Ok(json!({ "attributes": out }))
    }

    pub(crate) fn put_attributes(&self, i: AttributesInput) -> Result<Value, EcsError> {
        self.change_attributes(i, true)
    }

    pub(crate) fn delete_attributes(&self, i: AttributesInput) -> Result<Value, EcsError> {
        self.change_attributes(i, false)
    }

    pub(crate) fn list_attributes(&self, i: AttributesInput) -> Result<Value, EcsError> {
        let c = self.instance_cluster(i.cluster.as_deref())?;
        match i.target_type.as_deref() {
            Some("container-instance") => {}
            other => {
                return Err(EcsError::InvalidParameter(format!(
                    "Invalid targetType '{}': must be container-instance.",
                    other.unwrap_or("")
                )))
            }
        }
        if i.attribute_value.is_some() && i.attribute_name.is_none() {
            return Err(EcsError::InvalidParameter(
                "attributeValue can only be given with attributeName.".into(),
            ));
        }
        let mut all = vec![];
        for (_, rec, _) in
            self.list::<InstanceRecord>(&format!("/ecs/instances/{}/", c.cluster_name))?
        {
            for (a, v) in render_attributes(&rec.attributes)
                .into_iter()
                .zip(rec.attributes.iter())
            {
                if i.attribute_name.as_ref().is_some_and(|n| n != v.0) {
                    continue;
                }
                if i.attribute_value.is_some() && i.attribute_value.as_ref() != v.1.as_ref() {
                    continue;
                }
                let mut a = a;
                a["targetType"] = json!("container-instance");
                a["targetId"] = json!(rec.arn);
                all.push(a);
            }
        }
        let (page, next) = paginate(&all, i.next_token.as_deref(), i.max_results)?;
        Ok(with_token(json!({"attributes": page}), next))
    }

    // -- capacity providers --------------------------------------------------------------

    pub(crate) fn describe_capacity_providers(
        &self,
        i: CapacityInput,
        ctx: &Context,
    ) -> Result<Value, EcsError> {
        let render = |name: &str| {
            json!({
                "capacityProviderArn": arn(ctx, &format!("capacity-provider/{name}")),
                "name": name,
                "status": "ACTIVE",
                "tags": [],
            })
        };
        let mut found = vec![];
        let mut failures = vec![];
        match &i.capacity_providers {
            None => found.extend(CAPACITY_PROVIDERS.iter().map(|n| render(n))),
            Some(names) => {
                for n in names {
                    let short = n.rsplit('/').next().unwrap_or(n);
                    if CAPACITY_PROVIDERS.contains(&short) {
                        found.push(render(short));
                    } else {
                        failures.push(json!({"arn": n, "reason": "MISSING"}));
                    }
                }
            }
        }
        let (page, next) = paginate(&found, i.next_token.as_deref(), i.max_results)?;
        Ok(with_token(
            json!({"capacityProviders": page, "failures": failures}),
            next,
        ))
    }

    pub(crate) fn put_cluster_capacity_providers(
        &self,
        i: CapacityInput,
    ) -> Result<Value, EcsError> {
        let name = cluster_name(
            &i.cluster
                .ok_or_else(|| EcsError::InvalidParameter("cluster is required.".into()))?,
        );
        if !validate::valid_name(&name) {
            return Err(EcsError::ClusterNotFound);
        }
        let providers = i
            .capacity_providers
            .ok_or_else(|| EcsError::InvalidParameter("capacityProviders is required.".into()))?;
        let strategy = i.default_capacity_provider_strategy.ok_or_else(|| {
            EcsError::InvalidParameter("defaultCapacityProviderStrategy is required.".into())
        })?;
        let unknown: Vec<&str> = providers
            .iter()
            .map(String::as_str)
            .filter(|p| !CAPACITY_PROVIDERS.contains(p))
            .collect();
        if !unknown.is_empty() {
            return Err(EcsError::InvalidParameter(format!(
                "The specified capacity providers do not exist: {}. berth offers FARGATE and FARGATE_SPOT.",
                unknown.join(", ")
            )));
        }
        for s in &strategy {
            let p = s["capacityProvider"].as_str().unwrap_or("");
            if !providers.iter().any(|x| x == p) {
                return Err(EcsError::InvalidParameter(format!(
                    "The capacity provider {p:?} in the default strategy is not associated with the cluster."
                )));
            }
        }
        let rec: ClusterRecord = self.update(
            &cluster_key(&name),
            || EcsError::ClusterNotFound,
            |c: &mut ClusterRecord| {
                c.capacity_providers = providers.clone();
                c.default_capacity_provider_strategy = strategy.clone();
                Ok(true)
            },
        )?;
        Ok(json!({"cluster": self.render_cluster(&rec, &["TAGS", "SETTINGS"])}))
    }
}
