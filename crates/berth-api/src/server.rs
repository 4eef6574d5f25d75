//! The listener: one HTTP port serving the registry at `/v2/` and the AWS APIs at
//! `POST /`. Every request gets a tracing span; authentication happens here, before
//! any service code runs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::Instrument;

use berth_ecr::Ecr;
use berth_ecs::Ecs;
use berth_elb::Elb;
use berth_registry::{Body, Registry};
use berth_state::Store;

use crate::aws::{self, AwsError, Service};
use crate::identity::Identities;
use crate::store::StoreConfig;

/// Largest AWS API request body (ECR's PutImage carries at most a 4 MiB manifest,
/// JSON-escaped).
pub const MAX_API_BODY: usize = 10 * 1024 * 1024;
/// Largest clock difference SigV4 accepts (AWS: 15 minutes).
pub const MAX_CLOCK_SKEW_SECS: u64 = 15 * 60;

/// How the server is run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where everything berth stores lives (with etcd: all but the control-plane state).
    pub data_dir: PathBuf,
    /// Where control-plane state lives: embedded in `data_dir/state`, or etcd.
    pub store: StoreConfig,
    /// Seconds between lifecycle-policy runs.
    pub lifecycle_interval_secs: u64,
    /// Seconds between garbage collections (0: never in the background).
    pub gc_interval_secs: u64,
    /// Unreferenced blobs younger than this many seconds survive GC (pushes in flight).
    pub gc_grace_secs: u64,
    /// The built-in agent (the capacity behind FARGATE on this machine), if any.
    pub agent: Option<berth_agent::AgentConfig>,
    /// Seconds a STOPPED task stays visible (and its logs kept) before it is removed.
    pub stopped_task_retention_secs: u64,
    /// Where remote agents join (TLS; `berth agent --server`), if anywhere.
    pub agent_listen: Option<SocketAddr>,
    /// Where load balancer listeners bind (`--lb-address`).
    pub lb_address: std::net::IpAddr,
    /// Worker threads of the load balancer data plane.
    pub lb_threads: usize,
    /// Test hosts to make on this machine (`--hosts N --zones a,b`).
    pub hosts: Option<crate::hosts::HostsConfig>,
    /// Where the DNS server for Cloud Map's private namespaces listens (UDP and TCP).
    pub dns: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the state store")]
    State(#[from] crate::store::StoreError),
    #[error("cannot open registry storage in {0}")]
    Registry(String, #[source] berth_registry::RegistryError),
    #[error("cannot set up identities")]
    Identity(#[from] crate::identity::IdentityError),
    #[error("cannot accept connections")]
    Accept(#[source] std::io::Error),
    #[error(
        "cannot start the built-in agent (run as root with runc installed, or pass --no-agent)"
    )]
    Agent(#[source] berth_agent::AgentError),
    #[error("cannot serve the task metadata endpoint on {0}")]
    Metadata(SocketAddr, #[source] std::io::Error),
    #[error("cannot start the load balancers on {0}")]
    LoadBalancer(std::net::IpAddr, #[source] std::io::Error),
    #[error("cannot set up the agent listener")]
    Agents(#[from] crate::agents::AgentsError),
    #[error("cannot make the test hosts")]
    Hosts(#[from] crate::hosts::HostsError),
    #[error("cannot serve DNS on {0}")]
    Dns(SocketAddr, #[source] std::io::Error),
    #[error("cannot listen for agents on {0}")]
    AgentListen(SocketAddr, #[source] std::io::Error),
}

/// The id of the server's own agent: the platform's capacity for FARGATE tasks.
pub const BUILTIN_AGENT: &str = "builtin";

/// Everything a request handler needs.
pub struct App {
    pub registry: Arc<Registry>,
    pub ecr: Ecr,
    /// The ECS API; the agent that runs FARGATE tasks reads its assignments here.
    pub ecs: Arc<Ecs>,
    /// The ELBv2 API; the load balancer data plane reads its configuration here and
    /// hands back target health with [`Elb::set_health_source`].
    pub elb: Arc<Elb>,
    /// Where load balancer listeners bind (`--lb-address`).
    pub lb_address: std::net::IpAddr,
    /// Cloud Map: namespaces, services, instances; the DNS zone.
    pub discovery: Arc<berth_discovery::Discovery>,
    /// The task directories of the nodes on this machine (the built-in agent's, the
    /// test hosts'): container logs for the Logs API.
    pub task_dirs: Vec<PathBuf>,
    pub identities: Identities,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish()
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Opens the state store and the registry in `data_dir` (shared by the server and
/// `berth gc`), after checking the directory was served with this store.
pub fn open_registry(
    data_dir: &Path,
    store: &StoreConfig,
) -> Result<(Arc<dyn Store>, Arc<Registry>), ServerError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| crate::store::StoreError::Marker(data_dir.display().to_string(), e))?;
    store.claim(data_dir)?;
    let store: Arc<dyn Store> = store.open()?;
    let reg_dir = data_dir.join("registry");
    let registry = Arc::new(
        Registry::open(&reg_dir, store.clone())
            .map_err(|e| ServerError::Registry(reg_dir.display().to_string(), e))?,
    );
    Ok((store, registry))
}

impl App {
    pub fn open(config: &ServerConfig) -> Result<Arc<App>, ServerError> {
        let (store, registry) = open_registry(&config.data_dir, &config.store)?;
        let identities = Identities::open(
            store.clone(),
            &config.data_dir.join("credentials"),
            now_unix(),
        )?;
        Ok(Arc::new(App {
            ecr: Ecr::new(registry.clone()),
            elb: Arc::new(Elb::new(store.clone())),
            lb_address: config.lb_address,
            discovery: Arc::new(berth_discovery::Discovery::new(store.clone())),
            ecs: Arc::new(
                Ecs::new(store, Some(BUILTIN_AGENT.to_string()))
                    .with_builtin_ec2(config.agent.is_some()),
            ),
            task_dirs: config
                .agent
                .as_ref()
                .map(|a| a.dir.join("tasks"))
                .into_iter()
                .chain(config.hosts.iter().flat_map(|h| {
                    (0..h.count).map(|i| crate::hosts::tasks_dir(&config.data_dir, i))
                }))
                .collect(),
            registry,
            identities,
        }))
    }
}

/// Serves connections from `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(handle(app, peer, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Runs the periodic lifecycle-policy and GC jobs until the process ends.
pub fn spawn_background(app: Arc<App>, config: &ServerConfig) {
    let lc = config.lifecycle_interval_secs.max(1);
    let reg = app.registry.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(lc));
        loop {
            tick.tick().await;
            let reg = reg.clone();
            let _ = tokio::task::spawn_blocking(move || {
                berth_ecr::apply_lifecycle_policies(&reg, now_unix())
            })
            .await;
        }
    });
    if config.gc_interval_secs > 0 {
        let (every, grace) = (config.gc_interval_secs, config.gc_grace_secs);
        let reg = app.registry.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            tick.tick().await;
            loop {
                tick.tick().await;
                let reg = reg.clone();
                match tokio::task::spawn_blocking(move || reg.gc(grace, grace.max(24 * 3600))).await
                {
                    Ok(Ok(r)) => tracing::info!(
                        removed = r.blobs_removed,
                        bytes = r.bytes_removed,
                        kept = r.blobs_kept,
                        "garbage collection"
                    ),
                    Ok(Err(e)) => tracing::warn!(error = %e, "garbage collection failed"),
                    Err(_) => {}
                }
            }
        });
    }
}

/// One request, start to finish.
pub async fn handle(app: Arc<App>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), %peer, status = tracing::field::Empty);
    async move {
        let started = std::time::Instant::now();
        let path = req.uri().path().to_string();
        let mut resp = if path == "/v2" || path.starts_with("/v2/") {
            registry_request(&app, req).await
        } else if (path == "/" || path.starts_with("/service/")) && req.method() == Method::POST {
            aws_request(&app, req).await
        } else if path == "/token" && req.method() == Method::GET {
            token_request(&app, &req)
        } else if path == "/health" || path == "/ping" {
            Response::new(Body::full("ok\n"))
        } else {
            AwsError::new(404, "UnknownOperationException", format!(
                "{} {path} is not an endpoint of berth: the AWS APIs are POST / with X-Amz-Target, the registry is /v2/",
                req.method()
            ))
            .response()
        };
        let status = resp.status().as_u16();
        tracing::Span::current().record("status", status);
        tracing::info!(status, elapsed_ms = started.elapsed().as_millis() as u64, "handled");
        resp.headers_mut().insert(header::SERVER, HeaderValue::from_static("berth"));
        resp
    }
    .instrument(span)
    .await
}

fn challenge(message: &str) -> Response<Body> {
    let mut r = berth_registry::http::error_code_response(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        message,
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"berth\""),
    );
    r
}

/// Checks registry credentials: Basic `AWS:<password>` or `Bearer <password>`.
fn registry_auth(app: &App, value: Option<&HeaderValue>) -> Result<String, String> {
    let value = value
        .and_then(|v| v.to_str().ok())
        .ok_or("authentication required: run 'aws ecr get-login-password | docker login --username AWS --password-stdin <registry>'")?;
    let password = if let Some(b64) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| "malformed Basic credentials")?;
        let decoded = String::from_utf8(decoded).map_err(|_| "malformed Basic credentials")?;
        let (user, pw) = decoded
            .split_once(':')
            .ok_or("malformed Basic credentials")?;
        if user != "AWS" {
            return Err(format!("user '{user}' is unknown: log in as user AWS with the password from 'aws ecr get-login-password'"));
        }
        pw.to_string()
    } else if let Some(t) = value.strip_prefix("Bearer ") {
        t.trim().to_string()
    } else {
        return Err("unsupported authorization scheme: use Basic or Bearer".into());
    };
    app.identities
        .check_password(&password, now_unix())
        .map_err(|e| e.to_string())
}

/// The Docker token-auth endpoint (`GET /token?service=…&scope=…`, Basic
/// `AWS:<password>`): hands back a Bearer token for clients that use the token flow.
fn token_request(app: &App, req: &Request<Incoming>) -> Response<Body> {
    match registry_auth(app, req.headers().get(header::AUTHORIZATION)) {
        Ok(_) => {
            let value = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let token = match value.strip_prefix("Bearer ") {
                Some(t) => t.trim().to_string(),
                None => base64::engine::general_purpose::STANDARD
                    .decode(value.trim_start_matches("Basic ").trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| s.split_once(':').map(|(_, p)| p.to_string()))
                    .unwrap_or_default(),
            };
            let expires_in = token
                .split('.')
                .nth(1)
                .and_then(|e| e.parse::<u64>().ok())
                .map(|e| e.saturating_sub(now_unix()))
                .unwrap_or(0);
            let body = serde_json::json!({
                "token": token,
                "access_token": token,
                "expires_in": expires_in,
                "issued_at": berth_sigv4::format_rfc3339(now_unix()),
            });
            let mut r = Response::new(Body::full(body.to_string()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(msg) => challenge(&msg),
    }
}

async fn registry_request(app: &Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let mut resp = match registry_auth(app, req.headers().get(header::AUTHORIZATION)) {
        Ok(akid) => {
            tracing::debug!(access_key_id = %akid, "registry caller");
            berth_registry::http::handle(app.registry.clone(), req).await
        }
        Err(msg) => challenge(&msg),
    };
    resp.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

async fn aws_request(app: &Arc<App>, req: Request<Incoming>) -> Response<Body> {
    if aws::is_query_request(req.headers()) {
        let request_id = berth_elb::xml::request_id();
        return match query_call(app, req).await {
            Ok((op, result)) => aws::xml(
                200,
                berth_elb::xml::response(&op, &result, &request_id),
                &request_id,
            ),
            Err(e) => {
                tracing::debug!(error_type = %e.type_name, message = %e.message, "query call refused");
                e.xml_response(&request_id)
            }
        };
    }
    if req.uri().path().starts_with("/service/") {
        // Smithy RPC v2 CBOR: the operation in the path, CBOR both ways.
        return match aws_call(app, req).await {
            Ok(v) => aws::cbor_response(berth_discovery::encode_output(
                berth_discovery::Protocol::Cbor,
                &v,
            )),
            Err(e) => {
                tracing::debug!(error_type = %e.type_name, message = %e.message, "aws call refused");
                aws::cbor_error_response(&e)
            }
        };
    }
    match aws_call(app, req).await {
        Ok(v) => {
            let mut r = Response::new(Body::full(v.to_string()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            r
        }
        Err(e) => {
            tracing::debug!(error_type = %e.type_name, message = %e.message, "aws call refused");
            e.response()
        }
    }
}

async fn aws_call(app: &Arc<App>, req: Request<Incoming>) -> Result<serde_json::Value, AwsError> {
    let (parts, body) = req.into_parts();
    let cbor = parts.uri.path().starts_with("/service/");
    let target = match cbor {
        true => parts.uri.path().to_string(),
        false => parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| AwsError::new(400, "UnknownOperationException", "missing X-Amz-Target header: say which operation to run, e.g. AmazonEC2ContainerRegistry_V20150921.DescribeRepositories"))?
        .to_string(),
    };
    let body = read_body(&parts, body, MAX_API_BODY, too_large).await?;
    let akid = authenticate(app, &parts, &body, None)?;
    let (service, op) = match cbor {
        true => aws::parse_rpc_path(&target)?,
        false => aws::parse_target(&target)?,
    };
    check_scope(&parts, service)?;
    tracing::info!(access_key_id = %akid, op, "aws call");
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let region = scope_region(&parts).unwrap_or_else(|| "us-east-1".into());
    match service {
        Service::Ecr => {
            let (pw, exp) = app
                .identities
                .registry_password(&akid, now_unix())
                .ok_or_else(|| {
                    AwsError::new(
                        403,
                        "UnrecognizedClientException",
                        "The security token included in the request is invalid.",
                    )
                })?;
            let ctx = berth_ecr::Context {
                host,
                region,
                account: app.identities.account().to_string(),
                registry_password: pw,
                password_expires_at: exp as f64,
            };
            let app = app.clone();
            let op = op.to_string();
            tokio::task::spawn_blocking(move || app.ecr.call(&op, &body, &ctx))
                .await
                .map_err(|_| AwsError::new(500, "ServerException", "the operation was aborted"))?
                .map_err(|e| aws::ecr_error(&e))
        }
        Service::Logs => {
            let dirs = app.task_dirs.clone();
            let op = op.to_string();
            tokio::task::spawn_blocking(move || match op.as_str() {
                "GetLogEvents" => crate::logs::get_log_events(&dirs, &body),
                _ => Err(AwsError::new(
                    400,
                    "UnknownOperationException",
                    format!("berth's CloudWatch Logs serves GetLogEvents only, not {op}"),
                )),
            })
            .await
            .map_err(|_| AwsError::new(500, "ServerException", "the operation was aborted"))?
        }
        Service::Discovery => {
            let protocol = match cbor {
                true => berth_discovery::Protocol::Cbor,
                false => berth_discovery::Protocol::Json,
            };
            let input = berth_discovery::decode_input(protocol, &body)
                .map_err(|e| aws::discovery_error(&e))?;
            let ctx = berth_discovery::Context {
                region,
                account: app.identities.account().to_string(),
            };
            let app = app.clone();
            let op = op.to_string();
            tokio::task::spawn_blocking(move || app.discovery.call(&op, &input, &ctx))
                .await
                .map_err(|_| AwsError::new(500, "ServerException", "the operation was aborted"))?
                .map_err(|e| aws::discovery_error(&e))
        }
        Service::Ecs => {
            let ctx = berth_ecs::Context {
                region,
                account: app.identities.account().to_string(),
            };
            let app = app.clone();
            let op = op.to_string();
            tokio::task::spawn_blocking(move || app.ecs.call(&op, &body, &ctx))
                .await
                .map_err(|_| AwsError::new(500, "ServerException", "the operation was aborted"))?
                .map_err(|e| aws::ecs_error(&e))
        }
        // ELBv2 speaks the Query protocol (`query_call`), never JSON with a target.
        Service::Elb => Err(AwsError::unknown_operation(&target)),
    }
}

/// A Query-protocol call (ELBv2): authenticated as every AWS call, scoped to
/// `elasticloadbalancing`; answers the operation's name and result.
async fn query_call(
    app: &Arc<App>,
    req: Request<Incoming>,
) -> Result<(String, serde_json::Value), AwsError> {
    let (parts, body) = req.into_parts();
    let body = read_body(&parts, body, berth_elb::query::MAX_BODY, query_too_large).await?;
    let akid = authenticate(app, &parts, &body, None)?;
    check_scope(&parts, Service::Elb)?;
    tracing::info!(access_key_id = %akid, "elb call");
    let ctx = berth_elb::Context {
        region: scope_region(&parts).unwrap_or_else(|| "us-east-1".into()),
        account: app.identities.account().to_string(),
    };
    let app = app.clone();
    tokio::task::spawn_blocking(move || app.elb.handle(&body, &ctx))
        .await
        .map_err(|_| AwsError::new(500, "InternalFailure", "the operation was aborted"))?
        .map_err(|e| aws::elb_error(&e))
}

fn query_too_large() -> AwsError {
    AwsError::new(
        413,
        "RequestEntityTooLarge",
        format!(
            "request body is larger than {} bytes",
            berth_elb::query::MAX_BODY
        ),
    )
}

fn too_large() -> AwsError {
    AwsError::new(
        413,
        "SerializationException",
        format!("request body is larger than {MAX_API_BODY} bytes"),
    )
}

/// Reads a request body of at most `limit` bytes (refused early by its
/// Content-Length); `too_large` is the protocol's error for a longer one.
async fn read_body(
    parts: &http::request::Parts,
    body: Incoming,
    limit: usize,
    too_large: fn() -> AwsError,
) -> Result<Vec<u8>, AwsError> {
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(too_large());
        }
    }
    let mut body = body;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            AwsError::new(
                400,
                "SerializationException",
                format!("could not read the request body: {e}"),
            )
        })?;
        if let Ok(d) = frame.into_data() {
            if out.len() + d.len() > limit {
                return Err(too_large());
            }
            out.extend_from_slice(&d);
        }
    }
    Ok(out)
}

fn scope_region(parts: &http::request::Parts) -> Option<String> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    berth_sigv4::parse_authorization(v).ok().map(|a| a.region)
}

fn check_scope(parts: &http::request::Parts, service: Service) -> Result<(), AwsError> {
    let v = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Ok(a) = berth_sigv4::parse_authorization(v) {
        if a.service != service.signing_name() {
            return Err(AwsError::new(
                403,
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to correct service: '{}'.",
                    service.signing_name()
                ),
            ));
        }
    }
    Ok(())
}

/// Verifies the SigV4 signature of a request; returns the caller's access key id.
pub fn authenticate(
    app: &App,
    parts: &http::request::Parts,
    body: &[u8],
    now: Option<u64>,
) -> Result<String, AwsError> {
    let auth = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| AwsError::new(403, "MissingAuthenticationTokenException", "Missing Authentication Token: sign requests with SigV4 (the aws CLI and boto3 do this with the keys in <data-dir>/credentials)"))?
        .to_str()
        .map_err(|_| AwsError::new(403, "IncompleteSignatureException", "Authorization header is not valid ASCII"))?;
    let parsed = berth_sigv4::parse_authorization(auth).map_err(|e| aws::sigv4_error(&e))?;
    let secret = app
        .identities
        .secret(&parsed.access_key_id)
        .ok_or_else(|| {
            AwsError::new(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        })?;
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(parts.headers.len());
    for (k, v) in parts.headers.iter() {
        let v = v.to_str().map_err(|_| {
            AwsError::new(
                400,
                "IncompleteSignatureException",
                format!("header {k} is not valid ASCII"),
            )
        })?;
        headers.push((k.as_str(), v));
    }
    let payload_hash = match parts
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
    {
        Some(h) if h != "UNSIGNED-PAYLOAD" => {
            if h != berth_sigv4::sha256_hex(body) {
                return Err(AwsError::new(
                    400,
                    "XAmzContentSHA256Mismatch",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                ));
            }
            h.to_string()
        }
        _ => berth_sigv4::sha256_hex(body),
    };
    let req = berth_sigv4::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        payload_sha256_hex: &payload_hash,
    };
    berth_sigv4::verify(
        &req,
        &parsed,
        &secret,
        now.unwrap_or_else(now_unix),
        MAX_CLOCK_SKEW_SECS,
    )
    .map_err(|e| aws::sigv4_error(&e))?;
    Ok(parsed.access_key_id)
}

/// Binds `addr` and runs the server until Ctrl-C or SIGTERM.
/// How often services are reconciled when nothing changed, at the latest.
pub const SERVICE_RESYNC: Duration = Duration::from_secs(1);

/// Removes stopped tasks (records, and the node's directories with their logs) once
/// they have been STOPPED for `retention` seconds; looks every `retention / 2`
/// seconds, at least every minute.
fn spawn_task_gc(app: Arc<App>, agent: Option<berth_agent::Agent>, retention: u64) {
    let every = Duration::from_secs((retention / 2).clamp(1, 60));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let (app, agent) = (app.clone(), agent.clone());
            let _ = tokio::task::spawn_blocking(move || {
                let r = retention as f64;
                match app.ecs.gc_stopped_tasks(r) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(tasks = n, "removed stopped tasks past their retention")
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot remove stopped tasks"),
                }
                if let Some(a) = agent {
                    a.gc_finished(r);
                }
            })
            .await;
        }
    });
}

/// Keeps every ECS service converging: a round on every change of the ECS state and
/// every second (deployments and backoff move with time).
fn spawn_service_controller(app: Arc<App>) {
    tokio::spawn(async move {
        let mut changes = app.ecs.changes();
        loop {
            let a = app.clone();
            match tokio::task::spawn_blocking(move || a.ecs.reconcile_services()).await {
                Ok(Err(e)) => tracing::warn!(error = %e, "service reconciliation failed; retrying"),
                Err(e) => tracing::error!(error = %e, "service reconciliation panicked"),
                Ok(Ok(())) => {}
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(SERVICE_RESYNC) => {}
            }
        }
    });
}

/// Starts the built-in agent and its task metadata endpoint.
async fn start_agent(
    app: &Arc<App>,
    config: berth_agent::AgentConfig,
    retention: u64,
) -> Result<(), ServerError> {
    let port = config.metadata_port;
    let source = Arc::new(crate::images::LocalImages {
        registry: app.registry.clone(),
    });
    let control = Arc::new(berth_agent::LocalControlPlane {
        ecs: app.ecs.clone(),
        agent: BUILTIN_AGENT.to_string(),
    });
    let agent =
        tokio::task::spawn_blocking(move || berth_agent::Agent::open(config, source, control))
            .await
            .map_err(|e| {
                ServerError::Agent(berth_agent::AgentError::Dir {
                    path: "agent".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            })?
            .map_err(ServerError::Agent)?;
    let addr = SocketAddr::new(agent.ctx.gateway().into(), port);
    // Bridge- and host-mode tasks' host ports are bound on every address, the gateway
    // included: the load balancer and other tasks reach them there.
    app.ecs.set_builtin_address(agent.ctx.gateway().to_string());
    match agent.serve_endpoints().await {
        Ok(_) => {}
        Err(berth_agent::EndpointError::Metadata(a, e)) => return Err(ServerError::Metadata(a, e)),
        Err(e @ berth_agent::EndpointError::Dns(..)) => {
            tracing::warn!(error = %e, "tasks use the host's name servers");
        }
    }
    tracing::info!(bridge = %agent.ctx.config.bridge, subnet = %agent.ctx.config.subnet, metadata = %addr, "built-in agent running");
    // Stopping the server leaves the containers running: the agent re-adopts them.
    tokio::spawn(agent.clone().run(std::future::pending()));
    spawn_task_gc(app.clone(), Some(agent), retention);
    Ok(())
}

pub async fn run(config: ServerConfig, listener: TcpListener) -> Result<(), ServerError> {
    // Freed transfer buffers go back to the kernel, not into malloc's arenas.
    berth_registry::sys::tune_allocator();
    let app = App::open(&config)?;
    start_load_balancers(&app, &config)?;
    // DNS before the nodes: their forwarders ask it.
    let dns = match config.dns {
        Some(addr) => Some(start_dns(&app, addr).await?),
        None => None,
    };
    let mut agent = config.agent.clone();
    if let (Some(a), Some((bound, _))) = (agent.as_mut(), &dns) {
        a.dns_upstream = Some(*bound);
    }
    match agent {
        Some(a) => start_agent(&app, a, config.stopped_task_retention_secs).await?,
        None => spawn_task_gc(app.clone(), None, config.stopped_task_retention_secs),
    }
    spawn_background(app.clone(), &config);
    spawn_service_controller(app.clone());
    crate::agents::spawn_liveness(app.clone()).await;
    let identity = match config.agent_listen.is_some() || config.hosts.is_some() {
        true => Some(Arc::new(crate::agents::AgentIdentity::load_or_create(
            &config.data_dir,
        )?)),
        false => None,
    };
    if let (Some(addr), Some(identity)) = (config.agent_listen, identity.clone()) {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| ServerError::AgentListen(addr, e))?;
        let bound = l.local_addr().map_err(ServerError::Accept)?;
        tracing::info!(addr = %bound, token = %identity.token_path.display(), "listening for agents");
        tokio::spawn(crate::agents::serve_agents(l, app.clone(), identity));
    }
    let hosts = match (config.hosts.clone(), identity) {
        (Some(h), Some(identity)) => Some(
            crate::hosts::RunningHosts::start(
                app.clone(),
                &config.data_dir,
                h,
                identity,
                dns.as_ref().map(|(_, zone)| zone.clone()),
            )
            .await?,
        ),
        _ => None,
    };
    let addr = listener.local_addr().map_err(ServerError::Accept)?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "berth server listening (registry at /v2/, AWS APIs at POST /)");
    let served = serve(listener, app, shutdown_signal()).await;
    if let Some(h) = hosts {
        tracing::info!("stopping the test hosts");
        let _ = tokio::task::spawn_blocking(move || h.stop()).await;
    }
    served?;
    tracing::info!("berth server stopped");
    Ok(())
}

/// How often the DNS zone is rebuilt when nothing signalled a change (writes by
/// another process sharing an etcd store signal nothing here).
pub const DNS_RESYNC: Duration = Duration::from_secs(5);

/// Binds `addr` (UDP and TCP) and serves Cloud Map's zone there, rebuilt on every
/// change of the Discovery state.
/// Serves the Cloud Map zone on `addr`; returns where it listens and the zone (kept
/// current), so that more addresses can serve it (the test hosts' gateway).
async fn start_dns(app: &Arc<App>, addr: SocketAddr) -> Result<(SocketAddr, DnsZone), ServerError> {
    let udp = tokio::net::UdpSocket::bind(addr)
        .await
        .map_err(|e| ServerError::Dns(addr, e))?;
    // TCP on the port UDP got (an ephemeral port 0 resolves to the same number).
    let bound = udp.local_addr().map_err(|e| ServerError::Dns(addr, e))?;
    let tcp = TcpListener::bind(bound)
        .await
        .map_err(|e| ServerError::Dns(bound, e))?;
    let build = |app: Arc<App>| async move {
        let zone = move || {
            let mut z = app.discovery.zone()?;
            add_load_balancer_names(&app, &mut z);
            Ok::<_, berth_discovery::DiscoveryError>(z)
        };
        match tokio::task::spawn_blocking(zone).await {
            Ok(Ok(z)) => Some(Arc::new(z)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot build the DNS zone; serving the previous one");
                None
            }
            Err(_) => None,
        }
    };
    let first = build(app.clone())
        .await
        .unwrap_or_else(|| Arc::new(berth_dns::Zone::new(0)));
    let (tx, rx) = tokio::sync::watch::channel(first);
    let app2 = app.clone();
    tokio::spawn(async move {
        let mut changes = app2.discovery.changes();
        let mut lb_changes = app2.elb.changes();
        loop {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                r = lb_changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(DNS_RESYNC) => {}
            }
            if let Some(z) = build(app2.clone()).await {
                if tx.send(z).is_err() {
                    return;
                }
            }
        }
    });
    tokio::spawn(berth_dns::serve(udp, tcp, rx.clone()));
    tracing::info!(addr = %bound, "serving DNS for Cloud Map's private namespaces (UDP and TCP; nothing forwarded)");
    Ok((bound, rx))
}

/// The load balancers' DNS names (`….elb.localhost`) answer with the address their
/// listeners bind (`--lb-address`), as an ALB's DNS name resolves to its nodes.
fn add_load_balancer_names(app: &App, zone: &mut berth_dns::Zone) {
    let std::net::IpAddr::V4(ip) = app.lb_address else {
        return;
    };
    let ctx = berth_elb::Context {
        region: "us-east-1".into(),
        account: app.identities.account().to_string(),
    };
    let Ok(out) = app
        .elb
        .call("DescribeLoadBalancers", serde_json::json!({}), &ctx)
    else {
        return;
    };
    let names: Vec<String> = out["LoadBalancers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["DNSName"].as_str().map(String::from))
        .collect();
    if names.is_empty() {
        return;
    }
    zone.add_namespace("elb.localhost", 60);
    for n in names {
        zone.add_a(&n, 60, berth_dns::Pick::All, ip);
    }
}

/// The DNS zone as it changes.
pub type DnsZone = tokio::sync::watch::Receiver<Arc<berth_dns::Zone>>;

/// How often the data plane gets the configuration again when nothing changed
/// (draining targets expire with time).
const LB_RESYNC: Duration = Duration::from_secs(1);

/// Starts the ALB data plane on `--lb-address`, feeds it the ELB configuration on every
/// change, and hands ECS the links (targets, registries) it registers services with.
fn start_load_balancers(app: &Arc<App>, config: &ServerConfig) -> Result<(), ServerError> {
    let dp = Arc::new(
        berth_lb::DataPlane::start(config.lb_address, config.lb_threads.max(1))
            .map_err(|e| ServerError::LoadBalancer(config.lb_address, e))?,
    );
    app.elb.set_health_source(Some(dp.clone()));
    app.elb
        .set_instance_directory(Some(Arc::new(crate::links::Hosts(app.ecs.clone()))));
    app.ecs.set_links(Arc::new(crate::links::Links {
        elb: app.elb.clone(),
        discovery: app.discovery.clone(),
        health: Some(dp.clone()),
    }));
    let app = app.clone();
    tokio::spawn(async move {
        let mut changes = app.elb.changes();
        let mut last_errors = String::new();
        loop {
            let (a, d) = (app.clone(), dp.clone());
            let errors = tokio::task::spawn_blocking(move || match d.apply(a.elb.config()) {
                Ok(()) => String::new(),
                Err(es) => es
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            })
            .await
            .unwrap_or_default();
            if errors != last_errors && !errors.is_empty() {
                tracing::warn!(%errors, "the load balancers could not apply all of their configuration");
            }
            last_errors = errors;
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(LB_RESYNC) => {}
            }
        }
    });
    tracing::info!(address = %config.lb_address, "load balancer listeners bind here");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
