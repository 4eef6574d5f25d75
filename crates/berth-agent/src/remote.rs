//! A remote agent's view of the control plane: [`RemoteControlPlane`] keeps the
//! stream to the server up (dialling again with backoff whenever it drops) and serves
//! the agent's [`ControlPlane`] calls from it; [`RemoteImages`] fetches images over the
//! same pinned TLS.
//!
//! While the stream is down the agent keeps converging to the last assignment it was
//! told (containers keep running: a network blip must not stop tasks), and reports
//! fail so that the agent retries them; the server decides, by heartbeats, when an
//! instance is lost (see `Ecs::reap_lost_instances`).

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_image::pull::{ImageSource, NotFound, SourceError};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

use crate::control::{AssignedTask, ControlPlane, TaskReport};
use crate::join::JoinToken;
use crate::protocol::{self, AgentMessage, InstanceInfo, ServerMessage};

/// How long a report waits for the server's answer.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff between connection attempts: doubles from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));
/// Largest manifest accepted from the server.
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// Why the agent cannot (or must not) go on.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The server refused the agent (bad token, unknown cluster, ...): retrying cannot help.
    #[error("the server refused this agent: {0}")]
    Refused(String),
    #[error("{0}")]
    Connect(String),
}

type AckTx = std::sync::mpsc::Sender<Result<(), String>>;

/// The control plane over the agent stream.
pub struct RemoteControlPlane {
    addr: String,
    token: JoinToken,
    instance: InstanceInfo,
    tls: Arc<rustls::ClientConfig>,
    tasks: Mutex<Vec<AssignedTask>>,
    changes: watch::Sender<u64>,
    outbox: Mutex<Option<mpsc::UnboundedSender<AgentMessage>>>,
    acks: Mutex<HashMap<u64, AckTx>>,
    next_id: AtomicU64,
    instance_arn: watch::Sender<Option<String>>,
}

impl std::fmt::Debug for RemoteControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteControlPlane")
            .field("addr", &self.addr)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RemoteControlPlane {
    /// A control plane for the server at `addr` (`host:port`).
    pub fn new(addr: String, token: JoinToken, instance: InstanceInfo) -> Arc<Self> {
        let tls = token.client_config();
        Arc::new(RemoteControlPlane {
            addr,
            token,
            instance,
            tls,
            tasks: Mutex::new(Vec::new()),
            changes: watch::channel(0).0,
            outbox: Mutex::new(None),
            acks: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            instance_arn: watch::channel(None).0,
        })
    }

    /// The container instance this agent is, once the server has welcomed it.
    pub fn instance_arn(&self) -> watch::Receiver<Option<String>> {
        self.instance_arn.subscribe()
    }

    /// Keeps the stream up until a refusal (returned) — never returns otherwise.
    pub async fn run(self: Arc<Self>) -> RemoteError {
        let mut backoff = BACKOFF.0;
        loop {
            match self.session().await {
                Ok(()) => backoff = BACKOFF.0,
                Err(e @ RemoteError::Refused(_)) => return e,
                Err(RemoteError::Connect(e)) => {
                    tracing::warn!(server = %self.addr, error = %e, "agent stream down; dialling again in {backoff:?}");
                }
            }
            self.disconnected();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    fn disconnected(&self) {
        *lock(&self.outbox) = None;
        for (_, tx) in lock(&self.acks).drain() {
            let _ = tx.send(Err("the stream to the server dropped".into()));
        }
    }

    /// One connection: dial, upgrade, hello, then messages until it drops.
    /// `Ok(())` when it ran and then dropped (dial again at once).
    async fn session(&self) -> Result<(), RemoteError> {
        let tls = connect_tls(&self.addr, &self.tls).await?;
        let mut stream = BufReader::new(tls);
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: {}\r\nAuthorization: Bearer {}\r\n\r\n",
            protocol::CONNECT_PATH,
            self.addr,
            protocol::UPGRADE,
            self.token.secret
        );
        let io = |e: std::io::Error| RemoteError::Connect(format!("talking to {}: {e}", self.addr));
        stream
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .map_err(io)?;
        let (status, body) = read_upgrade_response(&mut stream).await.map_err(io)?;
        match status {
            101 => {}
            401 | 403 => return Err(RemoteError::Refused(body)),
            s => {
                return Err(RemoteError::Connect(format!(
                    "the server answered {s} to the agent upgrade: {body}"
                )))
            }
        }
        protocol::write_message(
            stream.get_mut(),
            &AgentMessage::Hello {
                instance: self.instance.clone(),
            },
        )
        .await
        .map_err(io)?;
        let welcome = tokio::time::timeout(protocol::SILENCE, protocol::read_message(&mut stream))
            .await
            .map_err(|_| RemoteError::Connect("no welcome from the server".into()))?
            .map_err(|e| RemoteError::Connect(format!("reading the welcome: {e}")))?;
        let arn = match welcome {
            ServerMessage::Welcome { instance_arn } => instance_arn,
            ServerMessage::Refused { message } => return Err(RemoteError::Refused(message)),
            other => {
                return Err(RemoteError::Connect(format!(
                    "expected a welcome, got {other:?}"
                )))
            }
        };
        tracing::info!(server = %self.addr, instance = %arn, "agent stream up");
        self.instance_arn.send_replace(Some(arn));

        let (read, mut write) = tokio::io::split(stream);
        // Reading a line is not cancel-safe, so it runs in a task of its own and hands
        // whole messages over.
        let (in_tx, mut inbox) = mpsc::channel::<Result<ServerMessage, protocol::ReadError>>(16);
        let reader = tokio::spawn(async move {
            let mut read = BufReader::new(read);
            loop {
                let m = protocol::read_message::<ServerMessage, _>(&mut read).await;
                let end = m.is_err();
                if in_tx.send(m).await.is_err() || end {
                    return;
                }
            }
        });
        let _stop_reader = AbortOnDrop(reader);
        let (tx, mut rx) = mpsc::unbounded_channel::<AgentMessage>();
        *lock(&self.outbox) = Some(tx);
        let mut beat = tokio::time::interval(protocol::HEARTBEAT);
        let mut deadline = tokio::time::Instant::now() + protocol::SILENCE;
        loop {
            tokio::select! {
                msg = inbox.recv() => {
                    let msg = msg
                        .ok_or_else(|| RemoteError::Connect("the stream reader stopped".into()))?
                        .map_err(|e| RemoteError::Connect(format!("reading from the server: {e}")))?;
                    deadline = tokio::time::Instant::now() + protocol::SILENCE;
                    self.handle(msg);
                }
                out = rx.recv() => {
                    let Some(out) = out else { return Ok(()) };
                    protocol::write_message(&mut write, &out).await.map_err(io)?;
                }
                _ = beat.tick() => {
                    protocol::write_message(&mut write, &AgentMessage::Heartbeat).await.map_err(io)?;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(RemoteError::Connect(format!("the server said nothing for {:?}", protocol::SILENCE)));
                }
            }
        }
    }

    fn handle(&self, msg: ServerMessage) {
        match msg {
            ServerMessage::Tasks { tasks } => {
                *lock(&self.tasks) = tasks;
                self.changes.send_modify(|n| *n = n.wrapping_add(1));
            }
            ServerMessage::Ack { id, error } => {
                if let Some(tx) = lock(&self.acks).remove(&id) {
                    let _ = tx.send(error.map_or(Ok(()), Err));
                }
            }
            ServerMessage::HeartbeatAck | ServerMessage::Welcome { .. } => {}
            ServerMessage::Refused { message } => {
                tracing::warn!(%message, "the server refused a message");
            }
        }
    }
}

impl ControlPlane for RemoteControlPlane {
    fn assigned_tasks(&self) -> Vec<AssignedTask> {
        lock(&self.tasks).clone()
    }

    fn report(&self, task_arn: &str, report: TaskReport) -> Result<(), String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let outbox = lock(&self.outbox);
            let Some(out) = outbox.as_ref() else {
                return Err("not connected to the server".into());
            };
            lock(&self.acks).insert(id, tx);
            let msg = AgentMessage::Report {
                id,
                task_arn: task_arn.to_string(),
                report,
            };
            if out.send(msg).is_err() {
                lock(&self.acks).remove(&id);
                return Err("not connected to the server".into());
            }
        }
        match rx.recv_timeout(REPORT_TIMEOUT) {
            Ok(r) => r,
            Err(_) => {
                lock(&self.acks).remove(&id);
                Err("the server did not answer the report".into())
            }
        }
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Aborts a task when dropped (a session's reader dies with the session).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Dials `addr` and completes a TLS handshake that trusts only the pinned certificate.
async fn connect_tls(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, RemoteError> {
    let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| RemoteError::Connect(format!("dialling {addr} timed out")))?
        .map_err(|e| RemoteError::Connect(format!("dialling {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let name = server_name(addr);
    let connector = tokio_rustls::TlsConnector::from(tls.clone());
    match tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp)).await {
        Err(_) => Err(RemoteError::Connect(format!(
            "the TLS handshake with {addr} timed out"
        ))),
        Ok(Ok(s)) => Ok(s),
        // A certificate that is not the pinned one: the token is for another server.
        Ok(Err(e)) if e.to_string().contains("join token") => {
            Err(RemoteError::Refused(format!("TLS with {addr}: {e}")))
        }
        Ok(Err(e)) => Err(RemoteError::Connect(format!("TLS with {addr}: {e}"))),
    }
}

fn server_name(addr: &str) -> ServerName<'static> {
    let host = match addr.parse::<SocketAddr>() {
        Ok(sa) => return ServerName::IpAddress(sa.ip().into()),
        Err(_) => addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr),
    };
    ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::try_from("berth-server").expect("a valid name"))
}

/// Reads the status line and headers of the upgrade response; for a refusal, also the
/// body (the server's reason).
async fn read_upgrade_response<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> std::io::Result<(u16, String)> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = (&mut *r)
            .take(16 * 1024)
            .read_until(b'\n', &mut head)
            .await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection during the upgrade",
            ));
        }
        if head.len() > 64 * 1024 {
            return Err(std::io::Error::other("the upgrade response is too long"));
        }
        if &head[before..] == b"\r\n" || &head[before..] == b"\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if status == 101 {
        return Ok((status, String::new()));
    }
    let len: u64 = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = Vec::new();
    (&mut *r)
        .take(len.min(64 * 1024))
        .read_to_end(&mut body)
        .await?;
    let body = String::from_utf8_lossy(&body).to_string();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or(body);
    Ok((status, message))
}

/// Images from the server's registry over the agent listener.
pub struct RemoteImages {
    base: String,
    auth: String,
    http: ureq::Agent,
}

impl std::fmt::Debug for RemoteImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteImages")
            .field("base", &self.base)
            .finish()
    }
}

impl RemoteImages {
    pub fn new(addr: &str, token: &JoinToken) -> RemoteImages {
        RemoteImages {
            base: format!("https://{addr}"),
            auth: format!("Bearer {}", token.secret),
            http: ureq::AgentBuilder::new()
                .tls_config(token.client_config())
                .timeout_connect(Duration::from_secs(5))
                .timeout_read(Duration::from_secs(60))
                .build(),
        }
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<ureq::Response, SourceError> {
        let mut req = self
            .http
            .get(&format!("{}{path}", self.base))
            .set("Authorization", &self.auth);
        for (k, v) in query {
            req = req.query(k, v);
        }
        match req.call() {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(404, _)) => Err(Box::new(NotFound)),
            Err(ureq::Error::Status(code, r)) => {
                let body = r.into_string().unwrap_or_default();
                Err(format!("the server answered {code}: {body}").into())
            }
            Err(e) => Err(Box::new(e)),
        }
    }
}

impl ImageSource for RemoteImages {
    fn manifest(&self, repo: &str, reference: &str) -> Result<(String, Vec<u8>), SourceError> {
        let r = self.get(
            protocol::MANIFEST_PATH,
            &[("repo", repo), ("reference", reference)],
        )?;
        let media_type = r.content_type().to_string();
        let mut bytes = Vec::new();
        r.into_reader()
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err("the manifest is larger than 4 MiB".into());
        }
        Ok((media_type, bytes))
    }

    fn blob(&self, repo: &str, digest: &str) -> Result<Box<dyn Read + Send>, SourceError> {
        let r = self.get(protocol::BLOB_PATH, &[("repo", repo), ("digest", digest)])?;
        Ok(Box::new(r.into_reader()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The upgrade response is read to its blank line; a refusal carries its message.
    #[tokio::test]
    async fn upgrade_responses() {
        let mut ok = BufReader::new(&b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: berth-agent/1\r\n\r\n{\"type\":\"welcome\"}"[..]);
        assert_eq!(
            read_upgrade_response(&mut ok).await.unwrap(),
            (101, String::new())
        );
        let body = br#"{"message":"the join token is not valid"}"#;
        let resp = format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\n\r\n{}",
            body.len(),
            std::str::from_utf8(body).unwrap()
        );
        let mut no = BufReader::new(resp.as_bytes());
        assert_eq!(
            read_upgrade_response(&mut no).await.unwrap(),
            (401, "the join token is not valid".into())
        );
        let mut cut = BufReader::new(&b"HTTP/1.1 101 Switching"[..]);
        assert!(read_upgrade_response(&mut cut).await.is_err());
    }
}
