//! The agent protocol: what a remote agent and the server say to each other.
//!
//! The agent dials out to the server's agent listener (TLS pinned by the join token,
//! see [`crate::join`]) and upgrades one HTTP/1.1 request (`GET` [`CONNECT_PATH`],
//! `Upgrade: berth-agent/1`, `Authorization: Bearer <secret>`) into a stream of
//! newline-delimited JSON messages in both directions:
//!
//! ```text
//! agent                                   server
//!   Hello{instance}                 ──▶
//!                                   ◀──   Welcome{instance_arn} | Refused{message}
//!                                   ◀──   Tasks{tasks}   (now, and on every change)
//!   Report{id, task_arn, report}    ──▶
//!                                   ◀──   Ack{id, error}
//!   Heartbeat                       ──▶   (every HEARTBEAT)
//!                                   ◀──   HeartbeatAck
//! ```
//!
//! Each `Tasks` is the whole assignment (the agent converges to it, as the built-in
//! agent does to `Ecs::assigned_tasks`), so a lost message costs nothing the next one
//! does not repair. Images come over plain requests on the same listener
//! ([`MANIFEST_PATH`], [`BLOB_PATH`]), authenticated the same way.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use berth_ecs::agent::InstanceInfo;

use crate::control::{AssignedTask, TaskReport};

/// The request path upgraded into the message stream.
pub const CONNECT_PATH: &str = "/agent/v1/connect";
/// `GET ?repo=R&reference=REF`: the manifest bytes, its media type as Content-Type.
pub const MANIFEST_PATH: &str = "/agent/v1/manifest";
/// `GET ?repo=R&digest=D`: the blob's bytes.
pub const BLOB_PATH: &str = "/agent/v1/blob";
/// The `Upgrade` protocol name.
pub const UPGRADE: &str = "berth-agent/1";
/// How often the agent says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(3);
/// Silence after which either side gives the stream up (several heartbeats).
pub const SILENCE: Duration = Duration::from_secs(12);
/// Largest message either side accepts (a `Tasks` carries every task definition).
pub const MAX_MESSAGE: u64 = 32 * 1024 * 1024;

/// Agent → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    Hello {
        instance: InstanceInfo,
    },
    Report {
        id: u64,
        task_arn: String,
        report: TaskReport,
    },
    Heartbeat,
}

/// Server → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome {
        instance_arn: String,
    },
    /// The server will not take this agent; the message says why.
    Refused {
        message: String,
    },
    Tasks {
        tasks: Vec<AssignedTask>,
    },
    Ack {
        id: u64,
        error: Option<String>,
    },
    HeartbeatAck,
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the connection closed")]
    Closed,
    #[error("a message longer than {MAX_MESSAGE} bytes")]
    TooLong,
    #[error("reading from the connection")]
    Io(#[from] std::io::Error),
    #[error("a message that is not valid JSON for this protocol")]
    Json(#[from] serde_json::Error),
}

/// Reads one newline-terminated JSON message of at most [`MAX_MESSAGE`] bytes.
pub async fn read_message<T, R>(r: &mut R) -> Result<T, ReadError>
where
    T: for<'de> Deserialize<'de>,
    R: AsyncBufRead + Unpin,
{
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_MESSAGE)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if n as u64 >= MAX_MESSAGE {
            ReadError::TooLong
        } else {
            ReadError::Closed
        });
    }
    Ok(serde_json::from_slice(&buf)?)
}

/// Writes one message and a newline, and flushes.
pub async fn write_message<T: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &T,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages cross a pipe intact, one per line.
    #[tokio::test]
    async fn round_trip() {
        let (a, b) = tokio::io::duplex(1024);
        let mut r = tokio::io::BufReader::new(b);
        let mut a = a;
        write_message(&mut a, &AgentMessage::Heartbeat)
            .await
            .unwrap();
        write_message(&mut a, &ServerMessage::Ack { id: 7, error: None })
            .await
            .unwrap();
        drop(a);
        let m: AgentMessage = read_message(&mut r).await.unwrap();
        assert_eq!(m, AgentMessage::Heartbeat);
        let m: ServerMessage = read_message(&mut r).await.unwrap();
        assert_eq!(m, ServerMessage::Ack { id: 7, error: None });
        assert!(matches!(
            read_message::<ServerMessage, _>(&mut r).await,
            Err(ReadError::Closed)
        ));
    }

    /// A half line at the end is a closed connection, garbage is a JSON error.
    #[tokio::test]
    async fn bad_input() {
        let (mut a, b) = tokio::io::duplex(1024);
        let mut r = tokio::io::BufReader::new(b);
        a.write_all(b"{\"type\":\"nope\"}\n{\"type\":")
            .await
            .unwrap();
        drop(a);
        assert!(matches!(
            read_message::<AgentMessage, _>(&mut r).await,
            Err(ReadError::Json(_))
        ));
        assert!(matches!(
            read_message::<AgentMessage, _>(&mut r).await,
            Err(ReadError::Closed)
        ));
    }
}
