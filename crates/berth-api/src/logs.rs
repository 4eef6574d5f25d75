//! The CloudWatch Logs API (`Logs_20140328.*`) over the containers' log files on this
//! node: GetLogEvents and DescribeLogStreams. A stream is named as the `awslogs`
//! driver names it, `PREFIX/CONTAINER/TASK-ID`; any group is accepted (berth keeps
//! one log per container, whatever group the task definition names).

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::aws::AwsError;

/// CloudWatch's largest page of events.
pub const MAX_EVENTS: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetLogEvents {
    #[serde(default)]
    log_group_name: Option<String>,
    log_stream_name: String,
    #[serde(default)]
    start_time: Option<i64>,
    #[serde(default)]
    end_time: Option<i64>,
    #[serde(default)]
    next_token: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    start_from_head: Option<bool>,
}

fn invalid(message: impl Into<String>) -> AwsError {
    AwsError::new(400, "InvalidParameterException", message)
}

fn not_found(stream: &str) -> AwsError {
    AwsError::new(
        400,
        "ResourceNotFoundException",
        format!("The specified log stream does not exist: {stream}"),
    )
}

/// The log file of `stream` under the agent's task directory.
fn log_file(tasks_dir: &Path, stream: &str) -> Option<std::path::PathBuf> {
    let mut parts = stream.rsplitn(3, '/');
    let task_id = parts.next()?;
    let container = parts.next()?;
    if task_id.is_empty() || !task_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let rec: Value =
        serde_json::from_slice(&std::fs::read(tasks_dir.join(task_id).join("task.json")).ok()?)
            .ok()?;
    let idx = rec["containers"]
        .as_array()?
        .iter()
        .position(|c| c["name"].as_str() == Some(container))?;
    Some(
        tasks_dir
            .join(task_id)
            .join(format!("c{idx}"))
            .join("container.log"),
    )
}

fn parse_token(t: &str) -> Result<(char, usize), AwsError> {
    let (dir, n) = t
        .split_once('/')
        .ok_or_else(|| invalid("The specified nextToken is invalid."))?;
    let n = n
        .parse()
        .map_err(|_| invalid("The specified nextToken is invalid."))?;
    match dir {
        "f" => Ok(('f', n)),
        "b" => Ok(('b', n)),
        _ => Err(invalid("The specified nextToken is invalid.")),
    }
}

/// GetLogEvents over the node's container logs.
pub fn get_log_events(tasks_dirs: &[std::path::PathBuf], body: &[u8]) -> Result<Value, AwsError> {
    let input: GetLogEvents = serde_json::from_slice(body).map_err(|e| {
        AwsError::new(
            400,
            "SerializationException",
            format!("could not parse the request body: {e}"),
        )
    })?;
    let _ = input.log_group_name;
    let limit = match input.limit {
        None => MAX_EVENTS,
        Some(l) if (1..=MAX_EVENTS as i64).contains(&l) => l as usize,
        Some(l) => return Err(invalid(format!("limit {l} is outside 1-{MAX_EVENTS}"))),
    };
    let path = tasks_dirs
        .iter()
        .find_map(|d| log_file(d, &input.log_stream_name))
        .ok_or_else(|| not_found(&input.log_stream_name))?;
    let events: Vec<_> = berth_runtime::logs::read_all(&path)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| input.start_time.is_none_or(|s| e.time as i64 >= s))
        .filter(|e| input.end_time.is_none_or(|s| (e.time as i64) < s))
        .collect();
    let n = events.len();
    // The window [from, to) of events to return.
    let (from, to) = match input.next_token.as_deref().map(parse_token).transpose()? {
        Some(('f', i)) => (i.min(n), (i + limit).min(n)),
        Some((_, i)) => (i.min(n).saturating_sub(limit), i.min(n)),
        None if input.start_from_head.unwrap_or(false) => (0, limit.min(n)),
        None => (n.saturating_sub(limit), n),
    };
    let out: Vec<Value> = events[from..to]
        .iter()
        // `berthStream` (stdout or stderr) is berth's own member; AWS clients ignore it.
        .map(|e| json!({"timestamp": e.time, "message": e.log, "ingestionTime": e.time, "berthStream": e.stream}))
        .collect();
    Ok(json!({
        "events": out,
        "nextForwardToken": format!("f/{to}"),
        "nextBackwardToken": format!("b/{from}"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_runtime::logs::{Event, Writer};

    fn setup() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("abc123");
        std::fs::create_dir_all(t.join("c1")).unwrap();
        std::fs::write(
            t.join("task.json"),
            r#"{"containers":[{"name":"db"},{"name":"web"}]}"#,
        )
        .unwrap();
        let mut w = Writer::open(&t.join("c1/container.log")).unwrap();
        for i in 0..5 {
            w.write(&Event {
                time: 1000 + i,
                stream: "stdout".into(),
                log: format!("line {i}"),
            })
            .unwrap();
        }
        d
    }

    /// Paging forward from the head with the returned token walks every event once.
    #[test]
    fn forward_paging() {
        let d = setup();
        let body = br#"{"logGroupName":"g","logStreamName":"ecs/web/abc123","startFromHead":true,"limit":2}"#;
        let r = get_log_events(&[d.path().to_path_buf()], body).unwrap();
        assert_eq!(r["events"][0]["message"], "line 0");
        assert_eq!(r["nextForwardToken"], "f/2");
        let body =
            br#"{"logGroupName":"g","logStreamName":"ecs/web/abc123","nextToken":"f/4","limit":2}"#;
        let r = get_log_events(&[d.path().to_path_buf()], body).unwrap();
        assert_eq!(r["events"].as_array().unwrap().len(), 1);
        assert_eq!(r["nextForwardToken"], "f/5");
    }

    /// Without startFromHead the newest events come back.
    #[test]
    fn tail_by_default() {
        let d = setup();
        let body = br#"{"logGroupName":"g","logStreamName":"x/web/abc123","limit":1}"#;
        let r = get_log_events(&[d.path().to_path_buf()], body).unwrap();
        assert_eq!(r["events"][0]["message"], "line 4");
    }

    /// Unknown streams and bad tokens are the errors CloudWatch gives.
    #[test]
    fn errors() {
        let d = setup();
        let e = get_log_events(
            &[d.path().to_path_buf()],
            br#"{"logStreamName":"ecs/nope/abc123"}"#,
        )
        .unwrap_err();
        assert_eq!(e.type_name, "ResourceNotFoundException");
        let e = get_log_events(
            &[d.path().to_path_buf()],
            br#"{"logStreamName":"ecs/web/../../etc"}"#,
        )
        .unwrap_err();
        assert_eq!(e.type_name, "ResourceNotFoundException");
        let e = get_log_events(
            &[d.path().to_path_buf()],
            br#"{"logStreamName":"ecs/web/abc123","nextToken":"zz"}"#,
        )
        .unwrap_err();
        assert_eq!(e.type_name, "InvalidParameterException");
    }
}
