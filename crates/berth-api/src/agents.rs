//! The agent listener: where remote agents (`berth agent --server ...`) join.
//!
//! TLS with the server's own certificate (made on first start, pinned by the join
//! token, see `berth_agent::join`); every request carries the token's secret. Three
//! routes: the stream ([`protocol::CONNECT_PATH`], an HTTP/1.1 upgrade, one
//! [`session`] per agent), and the agent's image pulls ([`protocol::MANIFEST_PATH`],
//! [`protocol::BLOB_PATH`]) straight from the registry. Node liveness runs here too:
//! [`spawn_liveness`] stops the tasks of instances whose agent went quiet.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_agent::join::JoinToken;
use berth_agent::protocol::{self, AgentMessage, ServerMessage};
use berth_registry::{Body, Reference};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::Digest as _;
use tokio::io::BufReader;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::server::App;

/// The region in the ARNs of instances that join (agents do not sign with a region).
pub const AGENT_REGION: &str = "us-east-1";
/// An instance whose agent is disconnected and silent this long loses its tasks
/// (they are marked STOPPED and the services replace them elsewhere).
pub const LOST_AFTER: Duration = Duration::from_secs(10);
/// How often liveness is checked.
const LIVENESS_EVERY: Duration = Duration::from_secs(2);
/// How often a session re-sends the assignment when nothing woke it.
const RESYNC: Duration = Duration::from_secs(2);

/// Errors setting up the agent listener's identity.
#[derive(Debug, thiserror::Error)]
pub enum AgentsError {
    #[error("cannot read or write {path}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the agent listener's certificate")]
    Cert(#[from] rcgen::Error),
    #[error("cannot use the agent listener's certificate")]
    Tls(#[from] rustls::Error),
}

/// The agent listener's TLS configuration and the token agents must present.
pub struct AgentIdentity {
    pub tls: Arc<rustls::ServerConfig>,
    pub token: JoinToken,
    /// Where the token is written (`DIR/join-token`, 0600).
    pub token_path: PathBuf,
}

impl std::fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("token_path", &self.token_path)
            .finish()
    }
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> AgentsError + '_ {
    move |source| AgentsError::File {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` to `path` (0600) through a temporary file, durably.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AgentsError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(file_err(&tmp))?;
    f.write_all(bytes).map_err(file_err(&tmp))?;
    f.sync_all().map_err(file_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(file_err(path))
}

impl AgentIdentity {
    /// Loads `DIR/agent-tls/{cert,key}.der` and `DIR/join-token`, making them on first
    /// start (a self-signed ECDSA P-256 certificate; a token that pins it).
    pub fn load_or_create(data_dir: &Path) -> Result<AgentIdentity, AgentsError> {
        let dir = data_dir.join("agent-tls");
        std::fs::create_dir_all(&dir).map_err(file_err(&dir))?;
        let (cert_path, key_path) = (dir.join("cert.der"), dir.join("key.der"));
        let token_path = data_dir.join("join-token");
        let (cert, key) = match (std::fs::read(&cert_path), std::fs::read(&key_path)) {
            (Ok(c), Ok(k)) => (c, k),
            _ => {
                let key = rcgen::KeyPair::generate()?;
                let params = rcgen::CertificateParams::new(vec!["berth-server".to_string()])?;
                let cert = params.self_signed(&key)?;
                let (c, k) = (cert.der().to_vec(), key.serialize_der());
                write_private(&key_path, &k)?;
                write_private(&cert_path, &c)?;
                // A new certificate invalidates any old token.
                let _ = std::fs::remove_file(&token_path);
                (c, k)
            }
        };
        let pinned: [u8; 32] = sha2::Sha256::digest(&cert).into();
        let token = match std::fs::read_to_string(&token_path)
            .ok()
            .and_then(|t| JoinToken::parse(&t).ok())
        {
            Some(t) if t.cert_sha256 == pinned => t,
            _ => {
                let t = JoinToken::generate(&cert).map_err(file_err(&token_path))?;
                write_private(&token_path, format!("{t}\n").as_bytes())?;
                t
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(cert)],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )?;
        Ok(AgentIdentity {
            tls: Arc::new(tls),
            token,
            token_path,
        })
    }
}

/// Serves agents on `listener` until the process ends.
pub async fn serve_agents(listener: TcpListener, app: Arc<App>, identity: Arc<AgentIdentity>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.tls.clone());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "agent listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (app, identity, acceptor) = (app.clone(), identity.clone(), acceptor.clone());
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "agent listener: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let svc = service_fn(move |req| {
                let (app, identity) = (app.clone(), identity.clone());
                async move { Ok::<_, Infallible>(route(app, identity, peer, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "agent connection ended with an error");
            }
        });
    }
}

fn json_response(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(Body::full(
        serde_json::json!({ "message": message }).to_string(),
    ));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn route(
    app: Arc<App>,
    identity: Arc<AgentIdentity>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !identity.token.secret_matches(presented) {
        tracing::warn!(%peer, path = req.uri().path(), "agent refused: wrong or missing join token");
        return json_response(
            StatusCode::UNAUTHORIZED,
            &format!(
                "the join token is not valid for this server: pass the contents of {} on the server (berth agent --token-file FILE or --token TOKEN)",
                identity.token_path.display()
            ),
        );
    }
    let params = berth_registry::http::query_params(req.uri().query());
    let param = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, protocol::CONNECT_PATH) => {
            let wants = req.headers().get(header::UPGRADE).is_some_and(|v| {
                v.as_bytes()
                    .eq_ignore_ascii_case(protocol::UPGRADE.as_bytes())
            });
            if !wants {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &format!("the agent stream needs Upgrade: {}", protocol::UPGRADE),
                );
            }
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                match upgrade.await {
                    Ok(up) => session(app, peer, TokioIo::new(up)).await,
                    Err(e) => tracing::info!(%peer, error = %e, "agent upgrade failed"),
                }
            });
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            r.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static(protocol::UPGRADE));
            r
        }
        (&Method::GET, protocol::MANIFEST_PATH) => {
            let (repo, reference) = (param("repo"), param("reference"));
            let reg = app.registry.clone();
            let got = tokio::task::spawn_blocking(move || {
                let r = Reference::parse(&reference)?;
                reg.get_manifest(&repo, &r)
            })
            .await;
            match got {
                Ok(Ok((rec, _, bytes))) => {
                    let mut r = Response::new(Body::full(bytes));
                    if let Ok(v) = HeaderValue::from_str(&rec.media_type) {
                        r.headers_mut().insert(header::CONTENT_TYPE, v);
                    }
                    r
                }
                Ok(Err(e)) => registry_error(e),
                Err(_) => json_response(StatusCode::INTERNAL_SERVER_ERROR, "manifest read failed"),
            }
        }
        (&Method::GET, protocol::BLOB_PATH) => {
            let (repo, digest) = (param("repo"), param("digest"));
            let reg = app.registry.clone();
            let got = tokio::task::spawn_blocking(move || {
                let d = berth_registry::Digest::parse(&digest)?;
                reg.blob(&repo, &d)
            })
            .await;
            match got {
                Ok(Ok(src)) => {
                    let size = src.size();
                    let body = match src {
                        berth_registry::content::BlobSource::Plain { path, .. } => {
                            Body::file_range(path, 0, size)
                        }
                        berth_registry::content::BlobSource::Encrypted(dec) => Body::Decrypt {
                            dec,
                            pos: 0,
                            end: size,
                        },
                    };
                    let mut r = Response::new(body);
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                    r
                }
                Ok(Err(e)) => registry_error(e),
                Err(_) => json_response(StatusCode::INTERNAL_SERVER_ERROR, "blob read failed"),
            }
        }
        _ => json_response(StatusCode::NOT_FOUND, "no such agent route"),
    }
}

fn registry_error(e: berth_registry::RegistryError) -> Response<Body> {
    use berth_registry::RegistryError as E;
    let status = match e {
        E::NameUnknown(_) | E::ManifestUnknown(_) | E::BlobUnknown(_) => StatusCode::NOT_FOUND,
        E::Name(_) | E::DigestInvalid(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_response(status, &e.to_string())
}

/// One agent's stream: hello → registration → assignments down, reports and
/// heartbeats up, until it drops; then the instance is marked disconnected.
async fn session<S>(app: Arc<App>, peer: SocketAddr, io: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (read, mut write) = tokio::io::split(io);
    let mut read = BufReader::new(read);
    let hello = tokio::time::timeout(
        protocol::SILENCE,
        protocol::read_message::<AgentMessage, _>(&mut read),
    )
    .await;
    let instance = match hello {
        Ok(Ok(AgentMessage::Hello { mut instance })) => {
            // Without `--address` the host is reached where its stream came from.
            if instance.address.is_none() {
                instance.address = Some(peer.ip().to_canonical().to_string());
            }
            instance
        }
        Ok(Ok(other)) => {
            let _ = protocol::write_message(
                &mut write,
                &ServerMessage::Refused {
                    message: format!("the first message must be a hello, not {other:?}"),
                },
            )
            .await;
            return;
        }
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "agent stream: no hello");
            return;
        }
        Err(_) => return,
    };
    let ctx = berth_ecs::Context {
        region: AGENT_REGION.to_string(),
        account: app.identities.account().to_string(),
    };
    let a = app.clone();
    let registered =
        tokio::task::spawn_blocking(move || a.ecs.register_instance(&instance, &ctx)).await;
    let arn = match registered {
        Ok(Ok(arn)) => arn,
        Ok(Err(e)) => {
            let _ = protocol::write_message(
                &mut write,
                &ServerMessage::Refused {
                    message: e.to_string(),
                },
            )
            .await;
            return;
        }
        Err(_) => return,
    };
    let span = tracing::info_span!("agent", instance = %arn, %peer);
    let _ =
        tracing::Instrument::instrument(run_session(app.clone(), arn.clone(), read, write), span)
            .await;
    let a = app.clone();
    let arn2 = arn.clone();
    let _ = tokio::task::spawn_blocking(move || a.ecs.set_instance_connected(&arn2, false)).await;
    tracing::info!(instance = %arn, %peer, "agent stream closed");
}

async fn run_session<R, W>(
    app: Arc<App>,
    arn: String,
    mut read: R,
    mut write: W,
) -> std::io::Result<()>
where
    R: tokio::io::AsyncBufRead + Send + Unpin + 'static,
    W: tokio::io::AsyncWrite + Unpin,
{
    protocol::write_message(
        &mut write,
        &ServerMessage::Welcome {
            instance_arn: arn.clone(),
        },
    )
    .await?;
    tracing::info!("agent joined");
    let (in_tx, mut inbox) = mpsc::channel(64);
    let reader = tokio::spawn(async move {
        loop {
            let m = protocol::read_message::<AgentMessage, _>(&mut read).await;
            let end = m.is_err();
            if in_tx.send(m).await.is_err() || end {
                return;
            }
        }
    });
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _reader = Abort(reader);
    let mut changes = app.ecs.changes();
    let mut last_sent: Option<Vec<berth_agent::control::AssignedTask>> = None;
    let mut deadline = tokio::time::Instant::now() + protocol::SILENCE;
    let mut dirty = true;
    loop {
        if dirty {
            dirty = false;
            let (a, arn2) = (app.clone(), arn.clone());
            let tasks = tokio::task::spawn_blocking(move || a.ecs.assigned_tasks(&arn2))
                .await
                .unwrap_or_default();
            if last_sent.as_ref() != Some(&tasks) {
                protocol::write_message(
                    &mut write,
                    &ServerMessage::Tasks {
                        tasks: tasks.clone(),
                    },
                )
                .await?;
                last_sent = Some(tasks);
            }
        }
        tokio::select! {
            m = inbox.recv() => {
                let m = match m {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "agent stream ended");
                        return Ok(());
                    }
                    None => return Ok(()),
                };
                deadline = tokio::time::Instant::now() + protocol::SILENCE;
                let reply = handle_message(&app, &arn, m).await;
                if let Some(r) = reply {
                    protocol::write_message(&mut write, &r).await?;
                }
            }
            r = changes.changed() => {
                if r.is_err() { return Ok(()) }
                dirty = true;
            }
            _ = tokio::time::sleep(RESYNC) => dirty = true,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!("agent silent for {:?}; dropping its stream", protocol::SILENCE);
                return Ok(());
            }
        }
    }
}

async fn handle_message(app: &Arc<App>, arn: &str, m: AgentMessage) -> Option<ServerMessage> {
    let (a, arn) = (app.clone(), arn.to_string());
    match m {
        AgentMessage::Hello { .. } => Some(ServerMessage::Refused {
            message: "already welcomed: hello is the first message only".into(),
        }),
        AgentMessage::Heartbeat => {
            let r = tokio::task::spawn_blocking(move || a.ecs.instance_heartbeat(&arn)).await;
            if let Ok(Err(e)) = r {
                tracing::warn!(error = %e, "cannot record a heartbeat");
            }
            Some(ServerMessage::HeartbeatAck)
        }
        AgentMessage::Report {
            id,
            task_arn,
            report,
        } => {
            let r = tokio::task::spawn_blocking(move || a.ecs.report_task(&arn, &task_arn, report))
                .await;
            let error = match r {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            Some(ServerMessage::Ack { id, error })
        }
    }
}

/// Node liveness: every [`LIVENESS_EVERY`], instances whose agent has been gone for
/// [`LOST_AFTER`] have their tasks stopped (the services then replace them).
/// Call before the agent listener accepts anyone: at start no agent is connected.
pub async fn spawn_liveness(app: Arc<App>) {
    let a = app.clone();
    match tokio::task::spawn_blocking(move || a.ecs.agents_disconnected_at_start()).await {
        Ok(Ok(0)) | Err(_) => {}
        Ok(Ok(n)) => {
            tracing::info!(
                instances = n,
                "waiting for the agents of the last run to dial back in"
            )
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot reset the instances' connections"),
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(LIVENESS_EVERY).await;
            let a = app.clone();
            let r = tokio::task::spawn_blocking(move || {
                a.ecs
                    .reap_lost_instances(now_secs(), LOST_AFTER.as_secs_f64())
            })
            .await;
            match r {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::warn!(tasks = n, "stopped the tasks of lost instances"),
                Ok(Err(e)) => tracing::warn!(error = %e, "liveness check failed"),
                Err(_) => {}
            }
        }
    });
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
