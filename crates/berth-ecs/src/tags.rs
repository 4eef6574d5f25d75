//! TagResource, UntagResource and ListTagsForResource for the ECS resources berth keeps:
//! clusters, task definitions, tasks and services, addressed by their ARNs.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::ops::{
    cluster_key, task_key, taskdef_key, validate_tags, ClusterRecord, Tag, TaskDefRecord,
    TaskRecord, MAX_TAGS,
};
use crate::services::{service_key, ServiceRecord};
use crate::{Ecs, EcsError};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TagsInput {
    resource_arn: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    tag_keys: Vec<String>,
}

/// A resource named by an ECS ARN.
#[derive(Debug, PartialEq, Eq)]
enum Resource {
    Cluster(String),
    TaskDefinition(String, u32),
    Task(String, String),
    Service(String, String),
}

fn parse_arn(arn: &str) -> Result<Resource, EcsError> {
    let bad = || {
        EcsError::InvalidParameter(format!(
            "Invalid resource ARN '{arn}': expected arn:aws:ecs:REGION:ACCOUNT:(cluster/NAME|task-definition/FAMILY:REVISION|task/CLUSTER/ID|service/CLUSTER/NAME)."
        ))
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() < 6 || parts[0] != "arn" || parts[2] != "ecs" {
        return Err(bad());
    }
    let rest = parts[5];
    let (kind, path) = rest.split_once('/').ok_or_else(bad)?;
    let segs: Vec<&str> = path.split('/').collect();
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    match (kind, segs.as_slice()) {
        ("cluster", [name]) if ok(name) => Ok(Resource::Cluster(name.to_string())),
        ("task-definition", [fr]) => {
            // `family:revision` came through splitn(6) whole.
            let (f, r) = fr.rsplit_once(':').ok_or_else(bad)?;
            let r: u32 = r.parse().map_err(|_| bad())?;
            if ok(f) {
                Ok(Resource::TaskDefinition(f.to_string(), r))
            } else {
                Err(bad())
            }
        }
        ("task", [c, id]) if ok(c) && ok(id) => Ok(Resource::Task(c.to_string(), id.to_string())),
        ("service", [c, n]) if ok(c) && ok(n) => {
            Ok(Resource::Service(c.to_string(), n.to_string()))
        }
        _ => Err(bad()),
    }
}

fn not_found(arn: &str) -> EcsError {
    EcsError::ResourceNotFound(format!("The specified resource {arn} could not be found."))
}

fn merged(old: &[Tag], add: &[Tag], remove: &[String]) -> Result<Vec<Tag>, EcsError> {
    let mut out: Vec<Tag> = old
        .iter()
        .filter(|t| !remove.contains(&t.key) && !add.iter().any(|a| a.key == t.key))
        .cloned()
        .collect();
    out.extend(add.iter().cloned());
    if out.len() > MAX_TAGS {
        return Err(EcsError::InvalidParameter(format!(
            "A resource can have at most {MAX_TAGS} tags; this would make {}.",
            out.len()
        )));
    }
    Ok(out)
}

impl Ecs {
    /// Applies `f` to the tags of the resource `arn` names (compare-and-swap).
    fn with_tags(
        &self,
        arn: &str,
        write: bool,
        f: impl Fn(&[Tag]) -> Result<Vec<Tag>, EcsError>,
    ) -> Result<Vec<Tag>, EcsError> {
        let nf = || not_found(arn);
        match parse_arn(arn)? {
            Resource::Cluster(n) => self
                .update::<ClusterRecord, _>(
                    &cluster_key(&n),
                    || EcsError::ClusterNotFound,
                    |r| {
                        r.tags = f(&r.tags)?;
                        Ok(write)
                    },
                )
                .map(|r| r.tags),
            Resource::TaskDefinition(fam, rev) => self
                .update::<TaskDefRecord, _>(&taskdef_key(&fam, rev), nf, |r| {
                    r.tags = f(&r.tags)?;
                    Ok(write)
                })
                .map(|r| r.tags),
            Resource::Task(c, id) => self
                .update::<TaskRecord, _>(&task_key(&c, &id), nf, |r| {
                    r.task.tags = f(&r.task.tags)?;
                    Ok(write)
                })
                .map(|r| r.task.tags),
            Resource::Service(c, n) => self
                .update::<ServiceRecord, _>(&service_key(&c, &n), nf, |r| {
                    r.tags = f(&r.tags)?;
                    Ok(write)
                })
                .map(|r| r.tags),
        }
    }

    pub(crate) fn tag_resource(&self, i: TagsInput) -> Result<Value, EcsError> {
        let arn = i
            .resource_arn
            .ok_or_else(|| EcsError::InvalidParameter("resourceArn must be given.".into()))?;
        validate_tags(&i.tags)?;
        if let Some(t) = i
            .tags
            .iter()
            .find(|t| t.key.to_ascii_lowercase().starts_with("aws:"))
        {
            return Err(EcsError::InvalidParameter(format!(
                "Tag keys starting with 'aws:' are reserved: {}",
                t.key
            )));
        }
        let add = i.tags.clone();
        self.with_tags(&arn, true, |old| merged(old, &add, &[]))?;
        Ok(json!({}))
    }

    pub(crate) fn untag_resource(&self, i: TagsInput) -> Result<Value, EcsError> {
        let arn = i
            .resource_arn
            .ok_or_else(|| EcsError::InvalidParameter("resourceArn must be given.".into()))?;
        let keys = i.tag_keys.clone();
        self.with_tags(&arn, true, |old| merged(old, &[], &keys))?;
        Ok(json!({}))
    }

    pub(crate) fn list_tags_for_resource(&self, i: TagsInput) -> Result<Value, EcsError> {
        let arn = i
            .resource_arn
            .ok_or_else(|| EcsError::InvalidParameter("resourceArn must be given.".into()))?;
        // Read-only: the same lookup, nothing written.
        let tags = self.with_tags(&arn, false, |old| Ok(old.to_vec()))?;
        Ok(json!({"tags": tags}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each ECS ARN form names its resource; anything else is refused.
    #[test]
    fn arns() {
        let p = "arn:aws:ecs:us-east-1:123456789012";
        assert_eq!(
            parse_arn(&format!("{p}:cluster/web")).unwrap(),
            Resource::Cluster("web".into())
        );
        assert_eq!(
            parse_arn(&format!("{p}:task-definition/fam:3")).unwrap(),
            Resource::TaskDefinition("fam".into(), 3)
        );
        assert_eq!(
            parse_arn(&format!("{p}:task/c/0123abcd")).unwrap(),
            Resource::Task("c".into(), "0123abcd".into())
        );
        assert_eq!(
            parse_arn(&format!("{p}:service/c/web")).unwrap(),
            Resource::Service("c".into(), "web".into())
        );
        for bad in [
            "",
            "web",
            "arn:aws:ecr:r:a:repository/x",
            &format!("{p}:cluster/../x"),
            &format!("{p}:task-definition/fam"),
        ] {
            assert!(
                matches!(parse_arn(bad), Err(EcsError::InvalidParameter(_))),
                "{bad}"
            );
        }
    }

    /// Tagging replaces values of existing keys, untagging removes keys, the limit holds.
    #[test]
    fn merging() {
        let t = |k: &str, v: &str| Tag {
            key: k.into(),
            value: v.into(),
        };
        let m = merged(
            &[t("a", "1"), t("b", "2")],
            &[t("b", "3"), t("c", "4")],
            &["a".into()],
        )
        .unwrap();
        assert_eq!(m, vec![t("b", "3"), t("c", "4")]);
        let many: Vec<Tag> = (0..MAX_TAGS).map(|i| t(&format!("k{i}"), "v")).collect();
        assert!(merged(&many, &[t("extra", "v")], &[]).is_err());
    }
}
