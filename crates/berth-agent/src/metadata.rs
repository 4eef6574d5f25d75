//! The ECS task metadata endpoint v4 (`ECS_CONTAINER_METADATA_URI_V4`): served on the
//! node bridge's gateway address, which every task namespace routes to. Each
//! container's URI carries a random token naming it; `/`, `/task`, `/stats` and
//! `/task/stats` answer as the ECS agent does (the "Task metadata endpoint version 4"
//! reference), with the figures from the containers' cgroups.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::agent::Ctx;
use crate::plan::{Health, Phase};
use crate::record::{ContainerRecord, TaskRecord};

fn rfc3339(secs: Option<f64>) -> Value {
    match secs {
        Some(s) => json!(format_time(s)),
        None => Value::Null,
    }
}

/// Unix seconds as RFC 3339 (UTC).
pub fn format_time(secs: f64) -> String {
    berth_sigv4::format_rfc3339(secs.max(0.0) as u64)
}

fn known_status(c: &ContainerRecord) -> &'static str {
    match c.phase {
        Phase::Waiting => "PENDING",
        Phase::Running { .. } => "RUNNING",
        _ => "STOPPED",
    }
}

fn container_json(t: &TaskRecord, c: &ContainerRecord) -> Value {
    let spec = c.spec.as_ref();
    let mut v = json!({
        "DockerId": c.runtime_id,
        "Name": c.name,
        "DockerName": format!("ecs-{}-{}", t.task.task_id, c.name),
        "Image": spec.map(|s| s.image.clone()).unwrap_or_default(),
        "ImageID": c.image_digest,
        "Labels": {
            "com.amazonaws.ecs.cluster": t.task.cluster,
            "com.amazonaws.ecs.container-name": c.name,
            "com.amazonaws.ecs.task-arn": t.task.task_arn,
        },
        "DesiredStatus": if t.task.desired_status == "STOPPED" { "STOPPED" } else { "RUNNING" },
        "KnownStatus": known_status(c),
        "Limits": {"CPU": spec.and_then(|s| s.cpu).unwrap_or(0), "Memory": spec.and_then(|s| s.memory).unwrap_or(0)},
        "CreatedAt": rfc3339(t.pull_stopped_at),
        "StartedAt": rfc3339(c.started_at),
        "Type": "NORMAL",
        "ContainerARN": format!("{}/{}", t.task.task_arn.replace(":task/", ":container/"), c.name),
    });
    if let Phase::Exited { exit_code } = c.phase {
        v["ExitCode"] = json!(exit_code);
        v["FinishedAt"] = rfc3339(c.finished_at);
    }
    if c.spec.as_ref().is_some_and(|s| s.health_check.is_some()) {
        v["Health"] = json!({"status": match c.health { Health::Healthy => "HEALTHY", Health::Unhealthy => "UNHEALTHY", Health::Unknown => "UNKNOWN" }});
    }
    if let Some(n) = &t.net {
        let mut net = json!({"NetworkMode": n.mode});
        if let Some(ip) = &n.ip {
            net["IPv4Addresses"] = json!([ip]);
            net["IPv4SubnetCIDRBlock"] = json!(n.gateway);
        }
        v["Networks"] = json!([net]);
    }
    v
}

fn task_json(t: &TaskRecord) -> Value {
    let family = t.task.definition["family"].as_str().unwrap_or_default();
    let revision = t.task.definition["revision"]
        .as_u64()
        .map(|r| r.to_string())
        .unwrap_or_default();
    json!({
        "Cluster": t.task.cluster,
        "TaskARN": t.task.task_arn,
        "Family": family,
        "Revision": revision,
        "DesiredStatus": t.task.desired_status,
        "KnownStatus": t.last_status,
        "Limits": {"CPU": t.task.cpu.map(|c| c as f64 / 1024.0), "Memory": t.task.memory},
        "PullStartedAt": rfc3339(t.pull_started_at),
        "PullStoppedAt": rfc3339(t.pull_stopped_at),
        "LaunchType": t.task.launch_type,
        "Containers": t.containers.iter().map(|c| container_json(t, c)).collect::<Vec<_>>(),
    })
}

fn stats_json(c: &ContainerRecord) -> Value {
    let s = berth_runtime::cgroup::Cgroup::new(&c.cgroups_path).stats();
    json!({
        "read": format_time(crate::worker::now_secs()),
        "name": c.name,
        "id": c.runtime_id,
        "memory_stats": {"usage": s.memory_usage_bytes, "max_usage": s.memory_max_usage_bytes, "limit": s.memory_limit_bytes},
        "cpu_stats": {"cpu_usage": {"total_usage": s.cpu_usage_ns}},
        "pids_stats": {"current": s.pids},
    })
}

/// Answers one metadata request (pure over the context's maps).
pub fn answer(ctx: &Ctx, path: &str) -> (StatusCode, Value) {
    let rest = path.trim_end_matches('/');
    let Some(rest) = rest
        .strip_prefix("/v4/")
        .or_else(|| rest.strip_prefix("/v3/"))
    else {
        return (
            StatusCode::NOT_FOUND,
            json!({"error": "unknown path; use ECS_CONTAINER_METADATA_URI_V4"}),
        );
    };
    let (token, sub) = rest.split_once('/').unwrap_or((rest, ""));
    let found = ctx
        .tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(token)
        .cloned();
    let Some((task_id, idx)) = found else {
        return (
            StatusCode::NOT_FOUND,
            json!({"error": "unknown container token"}),
        );
    };
    let views = ctx.views.lock().unwrap_or_else(|p| p.into_inner());
    let Some(t) = views.get(&task_id) else {
        return (StatusCode::NOT_FOUND, json!({"error": "the task is gone"}));
    };
    let Some(c) = t.containers.get(idx) else {
        return (StatusCode::NOT_FOUND, json!({"error": "unknown container"}));
    };
    match sub {
        "" => (StatusCode::OK, container_json(t, c)),
        "task" => (StatusCode::OK, task_json(t)),
        "stats" => (StatusCode::OK, stats_json(c)),
        "task/stats" => (
            StatusCode::OK,
            Value::Object(
                t.containers
                    .iter()
                    .map(|c| (c.runtime_id.clone(), stats_json(c)))
                    .collect(),
            ),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            json!({"error": format!("unknown path /{sub}")}),
        ),
    }
}

/// Serves the endpoint on `listener` until the runtime stops.
pub async fn serve(listener: tokio::net::TcpListener, ctx: Arc<Ctx>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let ctx = ctx.clone();
                async move {
                    let (status, body) = answer(&ctx, req.uri().path());
                    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
                    *r.status_mut() = status;
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix times render as RFC 3339 UTC.
    #[test]
    fn times() {
        assert_eq!(format_time(0.0), "1970-01-01T00:00:00Z");
        // Checked with Python's datetime.fromtimestamp(..., timezone.utc).
        assert_eq!(format_time(1_795_000_000.0), "2026-11-18T11:06:40Z");
        assert_eq!(format_time(951_782_400.0), "2000-02-29T00:00:00Z");
    }
}
