//! The tonic server: both `remotemedia.v1` services over one listener, the optional
//! bearer token, the message size limits, `grpc.health.v1.Health` and server
//! reflection beside them, and a blocking [`serve`] that returns once its `control`
//! check fails (stop now) or a drain it asked for is over, and every session is gone.
//!
//! A drain is what an orchestrator's SIGTERM asks for: health turns NOT_SERVING (the
//! balancer's checks take the server out), new calls get UNAVAILABLE, and the sessions
//! running go on until they end or `drain_timeout` passes, then are stopped. The
//! listener stays open meanwhile, so health checks get their answer rather than a
//! refused connection, and a call that raced the balancer gets a status it can retry.
//! Health and reflection need no token: probes carry none.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use super::batch::execute;
use super::budget;
use super::connections::Incoming;
use super::convert::file_roots;
use super::deadline::Deadline;
use super::limits::{Admission, Limits};
use super::metrics_http;
use super::plan::{warnings_header, Planner, WARNINGS_METADATA};
use super::proto::pipeline_execution_service_server::{
    PipelineExecutionService, PipelineExecutionServiceServer,
};
use super::proto::streaming_pipeline_service_server::{
    StreamingPipelineService, StreamingPipelineServiceServer,
};
use super::proto::{
    execute_response, ExecuteRequest, ExecuteResponse, StreamRequest, StreamResponse, VersionInfo,
    VersionRequest, VersionResponse,
};
use super::run::Context;
use super::status::status_label;
use super::stream;
use crate::error::{Error, Result};
use crate::metrics;

/// Room for the protobuf framing around the largest payload.
const MESSAGE_HEADROOM: usize = 1 << 20;
/// HTTP/2 flow control windows. h2 closes a connection whose peer makes it buffer too
/// many small DATA frames (a budget of half the connection window, charged ~256 bytes
/// per small frame): a client streaming tiny messages faster than its pipeline runs
/// would trip that with a large stream window. A small stream window bounds what one
/// blocked stream buffers; a large connection window keeps the budget for many.
const STREAM_WINDOW: u32 = 64 << 10;
const CONNECTION_WINDOW: u32 = 32 << 20;
/// After the stop request, time the server gives connections and sessions to end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The shortest drain (unless `drain_timeout` is shorter): a few health-check intervals
/// of a balancer (deploy/haproxy.cfg checks every 250 ms).
const MIN_DRAIN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    /// 0 picks a free port ([`serve`] reports the one bound).
    pub port: u16,
    /// When set, every call must carry `authorization: Bearer <token>`.
    pub token: Option<String>,
    pub limits: Limits,
    /// A stream gets a `StreamMetrics` after every this many chunks (0: never).
    pub metrics_every: u64,
    /// Where `DataBuffer.file` references may be read (runtime.toml `[nodes] file_dirs`);
    /// empty refuses them all.
    pub file_dirs: Vec<PathBuf>,
    /// A stream whose client sends nothing for this long ends (`Error::Idle`).
    pub idle_timeout: Duration,
    /// Bytes a stream may queue in each direction: responses its client has not read,
    /// chunks its pipeline has not taken (see `budget`).
    pub max_buffered_bytes_per_stream: usize,
    /// Connections open at once; more are closed as they come (see `connections`).
    pub max_connections: usize,
    /// A connection that sends no byte for this long after it is accepted is closed.
    pub handshake_timeout: Duration,
    /// How long a drain lets running sessions go on before they are stopped.
    pub drain_timeout: Duration,
    /// Where `/metrics` is served, on `host` (0: a free port; None: not served).
    pub metrics_port: Option<u16>,
    /// PEM certificate chain and private key: the gRPC port speaks TLS (None: plain).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// What the serving loop is asked to do, polled every 100 ms (an error: stop now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Serve,
    /// Refuse new calls, let running sessions end (see the module docs).
    Drain,
}

/// The services' names, as health checks ask for them.
const SERVICES: [&str; 2] = [
    <PipelineExecutionServiceServer<Service> as NamedService>::NAME,
    <StreamingPipelineServiceServer<Service> as NamedService>::NAME,
];

/// Both services; cheap to clone (one per service).
#[derive(Clone)]
pub struct Service {
    ctx: Arc<Context>,
    token: Option<Arc<str>>,
    health: HealthReporter,
    tls: Option<Arc<ServerTlsConfig>>,
}

/// Reads the PEM files of `--tls-cert`/`--tls-key`; errors name the file.
fn tls_config(cert: &Path, key: &Path) -> Result<ServerTlsConfig> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path)
            .map_err(|e| Error::Config(format!("TLS {what} {}: {e}", path.display())))
    };
    let identity = Identity::from_pem(read(cert, "certificate")?, read(key, "key")?);
    Ok(ServerTlsConfig::new().identity(identity))
}

impl Service {
    pub fn new(planner: Arc<dyn Planner>, cfg: ServerConfig) -> Result<Service> {
        let tls = match &cfg.tls {
            Some((cert, key)) => Some(Arc::new(tls_config(cert, key)?)),
            None => None,
        };
        Ok(Service {
            ctx: Arc::new(Context {
                planner,
                admission: Admission::new(cfg.limits),
                shutdown: AtomicBool::new(false),
                metrics_every: cfg.metrics_every,
                file_dirs: file_roots(&cfg.file_dirs).into(),
                idle_timeout: cfg.idle_timeout,
                max_buffered: cfg.max_buffered_bytes_per_stream,
                draining: AtomicBool::new(false),
            }),
            token: cfg.token.map(Into::into),
            health: HealthReporter::new(),
            tls,
        })
    }

    fn authorize(&self, metadata: &MetadataMap) -> std::result::Result<(), Status> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(given) if same(given.as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated("invalid bearer token")),
            None => Err(Status::unauthenticated(
                "this server needs a bearer token (authorization: Bearer <token>)",
            )),
        }
    }

    /// The routes of both services, with message limits fitting the largest payload,
    /// and of health and reflection.
    pub fn router(&self) -> Result<tonic::transport::server::Router> {
        let limit = self.ctx.admission.limits.max_payload + MESSAGE_HEADROOM;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(super::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let refl = |e: tonic_reflection::server::Error| Error::Config(format!("reflection: {e}"));
        let health = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(self.health.clone()),
        );
        let mut server = Server::builder();
        if let Some(tls) = &self.tls {
            // A bad key or certificate is found here, before anything is served.
            server = server
                .tls_config(ServerTlsConfig::clone(tls))
                .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        }
        Ok(server
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .add_service(health)
            .add_service(reflection().build_v1().map_err(refl)?)
            .add_service(reflection().build_v1alpha().map_err(refl)?)
            .add_service(
                PipelineExecutionServiceServer::new(self.clone())
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
            )
            .add_service(
                StreamingPipelineServiceServer::new(self.clone())
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
            ))
    }

    /// Health: the server and both services serving.
    pub async fn serving(&self) {
        self.set_health(ServingStatus::Serving).await;
    }

    /// Starts a drain: health NOT_SERVING, new calls refused; running sessions go on.
    pub async fn drain(&self) {
        self.ctx.draining.store(true, Ordering::Release);
        self.set_health(ServingStatus::NotServing).await;
    }

    async fn set_health(&self, status: ServingStatus) {
        for name in std::iter::once("").chain(SERVICES) {
            self.health.set_service_status(name, status).await;
        }
    }

    /// Stops every session; new calls are refused.
    pub fn shut_down(&self) {
        self.ctx.shutdown.store(true, Ordering::Release);
    }

    /// Sessions running now.
    pub fn sessions(&self) -> usize {
        self.ctx.admission.sessions()
    }
}

/// Compares without stopping at the first difference (the time does not tell how much
/// of a guessed token was right).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn succeeded(response: &ExecuteResponse) -> bool {
    matches!(response.outcome, Some(execute_response::Outcome::Result(_)))
}

fn refuse_when_stopping(ctx: &Context) -> std::result::Result<(), Status> {
    if ctx.stopping() {
        return Err(Status::unavailable("the server is shutting down"));
    }
    if ctx.draining.load(Ordering::Acquire) {
        return Err(Status::unavailable(
            "the server is draining (shutting down once its sessions end): try another",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl PipelineExecutionService for Service {
    async fn execute_pipeline(
        &self,
        request: Request<ExecuteRequest>,
    ) -> std::result::Result<Response<ExecuteResponse>, Status> {
        counted("ExecutePipeline", self.execute(request).await)
    }

    async fn get_version(
        &self,
        request: Request<VersionRequest>,
    ) -> std::result::Result<Response<VersionResponse>, Status> {
        counted("GetVersion", self.version(request).await)
    }
}

/// Counts a call that ended with `outcome` (`zerohop_grpc_calls_total`).
fn counted<T>(
    method: &str,
    outcome: std::result::Result<T, Status>,
) -> std::result::Result<T, Status> {
    metrics::grpc_call(method, &status_label(outcome.as_ref().err()));
    outcome
}

impl Service {
    async fn execute(
        &self,
        request: Request<ExecuteRequest>,
    ) -> std::result::Result<Response<ExecuteResponse>, Status> {
        self.authorize(request.metadata())?;
        refuse_when_stopping(&self.ctx)?;
        let deadline = Deadline::from_metadata(request.metadata());
        let request = request.into_inner();
        let ctx = Arc::clone(&self.ctx);
        let (reply, replied) = oneshot::channel();
        let past_deadline = move || deadline.is_some_and(|d| d.passed());
        // The session blocks: it gets a thread of the blocking pool. If the client goes
        // away, this future is dropped with `replied`, which the interrupt check sees.
        tokio::task::spawn_blocking(move || {
            let gone = || {
                if reply.is_closed() || ctx.stopping() || past_deadline() {
                    return Err(Error::Interrupted);
                }
                Ok(())
            };
            let outcome = match (execute(&ctx, request, &gone), deadline) {
                // A result that made it in time stands; anything else stopped by the
                // deadline is reported as the deadline.
                (Ok(response), _) if succeeded(response.get_ref()) => Ok(response),
                (_, Some(d)) if d.passed() => Err(d.status()),
                (outcome, _) => outcome,
            };
            let _ = reply.send(outcome);
        });
        match replied.await {
            Ok(outcome) => outcome,
            Err(_) => Err(Status::internal("the session ended without a reply")),
        }
    }

    async fn version(
        &self,
        request: Request<VersionRequest>,
    ) -> std::result::Result<Response<VersionResponse>, Status> {
        self.authorize(request.metadata())?;
        let planner = Arc::clone(&self.ctx.planner);
        let types = tokio::task::spawn_blocking(move || planner.node_types())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(VersionResponse {
            version_info: Some(VersionInfo {
                protocol_version: "v1".into(),
                runtime_version: format!("zerohop {}", env!("CARGO_PKG_VERSION")),
                supported_node_types: types,
                supported_protocols: vec!["v1".into()],
                build_timestamp: String::new(),
            }),
            compatible: true,
            compatibility_message: String::new(),
        }))
    }
}

#[tonic::async_trait]
impl StreamingPipelineService for Service {
    type StreamPipelineStream = budget::Receiver<std::result::Result<StreamResponse, Status>>;

    async fn stream_pipeline(
        &self,
        request: Request<Streaming<StreamRequest>>,
    ) -> std::result::Result<Response<Self::StreamPipelineStream>, Status> {
        // A stream that opens is counted when it ends (`stream::drive`).
        let admitted = self
            .authorize(request.metadata())
            .and_then(|()| refuse_when_stopping(&self.ctx));
        if let Err(status) = admitted {
            metrics::grpc_call(stream::METHOD, &status_label(Some(&status)));
            if status.code() == tonic::Code::Unavailable {
                // Draining: read what the client sends until it stops (at most a
                // second) rather than drop it. Dropped, the request stream is reset, and
                // a balancer in between (HAProxy) passes the reset on instead of this
                // status, which the client could retry elsewhere. (A caller without a
                // token gets no such courtesy: nothing of theirs is read.)
                let mut inbound = request.into_inner();
                tokio::spawn(async move {
                    let until = tokio::time::Instant::now() + Duration::from_secs(1);
                    while let Ok(Ok(Some(_))) =
                        tokio::time::timeout_at(until, inbound.message()).await
                    {
                    }
                });
            }
            return Err(status);
        }
        let (tx, rx) = budget::channel(self.ctx.max_buffered);
        let warnings = stream::open(Arc::clone(&self.ctx), request.into_inner(), tx).await;
        let mut response = Response::new(rx);
        if let Some(value) = warnings_header(&warnings).and_then(|v| v.parse().ok()) {
            response.metadata_mut().insert(WARNINGS_METADATA, value);
        }
        Ok(response)
    }
}

/// The addresses [`serve`] bound (the ports when 0 was asked for).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub grpc: SocketAddr,
    /// Where `/metrics` answers, when it is served.
    pub metrics: Option<SocketAddr>,
}

/// Serves until `control` fails (it is called every 100 ms on this thread) or asks for
/// a drain that then ends, then stops every session and returns once they are all
/// gone. `on_bound` hears the addresses bound once the server accepts connections.
pub fn serve(
    planner: Arc<dyn Planner>,
    cfg: ServerConfig,
    on_bound: &mut dyn FnMut(Bound) -> Result<()>,
    control: &dyn Fn() -> Result<Control>,
) -> Result<()> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |e: std::io::Error| Error::Config(format!("{what}: {e}"))
    };
    let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))
        .map_err(io(&format!("cannot listen on {}:{}", cfg.host, cfg.port)))?;
    listener
        .set_nonblocking(true)
        .map_err(io("listening socket"))?;
    let addr = listener.local_addr().map_err(io("listening socket"))?;
    let metrics_listener = match cfg.metrics_port {
        Some(port) => {
            let listener = TcpListener::bind((cfg.host.as_str(), port))
                .map_err(io(&format!("cannot serve metrics on {}:{port}", cfg.host)))?;
            listener
                .set_nonblocking(true)
                .map_err(io("metrics socket"))?;
            Some(listener)
        }
        None => None,
    };
    let bound = Bound {
        grpc: addr,
        metrics: match &metrics_listener {
            Some(listener) => Some(listener.local_addr().map_err(io("metrics socket"))?),
            None => None,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("zerohop-grpc")
        .enable_all()
        .build()
        .map_err(io("cannot start the gRPC runtime"))?;
    let (max_connections, handshake_timeout) = (cfg.max_connections, cfg.handshake_timeout);
    let drain_timeout = cfg.drain_timeout;
    let service = Service::new(planner, cfg)?;
    let stopped = Arc::new(Notify::new());
    // A Notify each: `notify_one` keeps a permit for a task not waiting at that moment.
    let metrics_stop = Arc::new(Notify::new());
    let outcome = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(io("listener"))?;
        let incoming = Incoming::new(listener, max_connections, handshake_timeout);
        if let Some(listener) = metrics_listener {
            let listener = tokio::net::TcpListener::from_std(listener).map_err(io("metrics"))?;
            let ctx = Arc::clone(&service.ctx);
            let serving: metrics_http::Serving =
                Arc::new(move || !ctx.stopping() && !ctx.draining.load(Ordering::Acquire));
            tokio::spawn(metrics_http::serve(
                listener,
                Arc::clone(&metrics_stop),
                serving,
            ));
        }
        let signal = Arc::clone(&stopped);
        service.serving().await;
        let server = tokio::spawn(
            service
                .router()?
                .serve_with_incoming_shutdown(incoming, async move { signal.notified().await }),
        );
        on_bound(bound)?;
        let mut drain_until: Option<Instant> = None;
        let outcome = loop {
            if server.is_finished() {
                break Ok(());
            }
            match control() {
                Err(err) => break Err(err),
                Ok(Control::Drain) if drain_until.is_none() => {
                    drain_until = Some(Instant::now() + drain_timeout);
                    service.drain().await;
                    eprintln!(
                        "zerohop serve: draining: {} sessions running, new calls refused; \
                         stopping once they end or in {} s",
                        service.sessions(),
                        drain_timeout.as_secs_f64()
                    );
                }
                Ok(_) => {}
            }
            if let Some(until) = drain_until {
                // Even with nothing running, stay up long enough for balancers' health
                // checks to see the drain: calls that race them then get a status they
                // retry elsewhere, not a refused connection.
                let shown = until - drain_timeout + drain_timeout.min(MIN_DRAIN);
                if service.sessions() == 0 && Instant::now() >= shown {
                    break Ok(());
                }
                if Instant::now() >= until {
                    eprintln!(
                        "zerohop serve: drain timeout: stopping {} sessions",
                        service.sessions()
                    );
                    break Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        service.shut_down();
        stopped.notify_one();
        metrics_stop.notify_one();
        match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
            Ok(Ok(Err(err))) => Err(Error::Config(format!("gRPC server: {err}"))),
            _ => outcome,
        }
    });
    // Sessions see the shutdown flag within 50 ms and stop their nodes.
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while service.sessions() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome
}
