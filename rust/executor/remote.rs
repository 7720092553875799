//! Remote nodes: the parts of a graph that run on another `zerohop serve`.
//!
//! Why it is built this way:
//! * **One stream per part.** A connected run of nodes with the same `host` is one part,
//!   sent as one sub-manifest over one `StreamPipeline`, so frames between those nodes
//!   stay on that host instead of bouncing between machines. A `RemotePipelineNode`
//!   (remotemedia's way to say it) is a part of its own: its inline manifest.
//! * **The protocol any client speaks.** The remote server cannot tell a hop from a
//!   client and needs nothing new; a `host` may be a balancer's address. Frames cross
//!   as DataBuffers through the same conversions a client's buffers get.
//! * **Threads beside the native nodes.** A part reads and writes the session's
//!   shared-memory channels like a native node: a sending thread (channels → gRPC) and
//!   a receiving thread (gRPC → channels), both blocking, bridged to a one-worker tokio
//!   runtime that drives the HTTP/2 connection. Blocking waits never run on it.
//! * **Dial before spawning.** Every part connects and opens its stream (the remote
//!   server checks the token and plans the sub-manifest before it answers) before any
//!   local process starts, so an unreachable or refusing host costs no local model
//!   load. The remote nodes then initialize while the local ones do; their progress
//!   joins the session's.
//! * **Quiet is not gone.** While no frame goes out, a part sends an empty control
//!   message every second, so the remote server's idle timeout (meant for clients that
//!   went silent) does not end a session that is only waiting for input.
//! * **Either side ends both.** A local stop sends CANCEL and drops the connection (the
//!   remote server stops its session on either); a remote failure, a status or a lost
//!   connection fails the session with an error naming the node and the host.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::error::{Error, Result};
use crate::executor::graph::{Graph, Placement, PortRef, RemoteDef, DEFAULT_INPUT, DEFAULT_OUTPUT};
use crate::executor::native::{InputFrames, NativeShared, Next, Threads};
use crate::frame::{payload, Header, FLAG_END_OF_STREAM};
use crate::grpc::convert::{from_frame, into_frame};
use crate::grpc::dial::{self, Hosts};
use crate::grpc::plan::WARNINGS_METADATA;
use crate::grpc::proto::streaming_pipeline_service_client::StreamingPipelineServiceClient;
use crate::grpc::proto::{
    control_message::MessageType, data_buffer::DataType, stream_control::Command,
    stream_request::Request, stream_response::Response, CancelSpeculation, Connection,
    ControlMessage, DataBuffer, DataChunk, ManifestMetadata, NodeManifest, PipelineManifest,
    RuntimeHint, StreamControl, StreamInit, StreamRequest, StreamResponse,
};
use crate::ipc::{self, ChannelConfig, Interrupt};
use crate::metrics::{self, Outcome};
use crate::supervisor::Event;

/// A pipeline a `RemotePipelineNode` runs on its host, as the planner normalized it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubManifest {
    pub name: String,
    pub nodes: Vec<SubNode>,
    /// `(from, to)`, each `node` or `node.port`.
    pub connections: Vec<(String, String)>,
}

/// One node of a sub-manifest: what remotemedia.v1's `NodeManifest` carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubNode {
    pub id: String,
    pub node_type: String,
    #[serde(default)]
    pub params: serde_json::Value,
    #[serde(default)]
    pub is_streaming: bool,
    /// A `RuntimeHint` name (`RUNTIME_HINT_CPYTHON`).
    #[serde(default)]
    pub runtime_hint: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
}

/// Channel names of the session, as `Session::start` made them: for a port, each
/// channel with the node at its other end (None: the session's own end).
pub type ChannelsOf<'a> = dyn Fn(&PortRef, bool) -> Vec<(String, Option<usize>)> + 'a;

/// One part with its channel ends' names, ready to dial.
pub struct RemoteTask {
    def: RemoteDef,
    /// The node ids of the part (errors and progress name them).
    node_ids: Vec<String>,
    manifest: PipelineManifest,
    /// (the key the remote server routes by, the channel the part reads).
    inputs: Vec<(String, String)>,
    /// (the remote output label, the channels that output feeds here).
    outputs: Vec<(String, Vec<String>)>,
    /// Every remote output leaves through `outputs[0]` (a `RemotePipelineNode`).
    any_label: bool,
}

/// The parts of `graph` that run elsewhere, with the channels they read and write.
pub fn tasks(graph: &Graph, channels_of: &ChannelsOf) -> Result<Vec<RemoteTask>> {
    let remote = |n: usize| graph.nodes[n].placement == Placement::Remote;
    // Union-find over edges between remote nodes of one host (inline manifests stay
    // parts of their own).
    let mut part: Vec<usize> = (0..graph.nodes.len()).collect();
    fn root(part: &mut [usize], mut n: usize) -> usize {
        while part[n] != n {
            part[n] = part[part[n]];
            n = part[n];
        }
        n
    }
    for (from, to) in &graph.edges {
        let (a, b) = (&graph.nodes[from.node], &graph.nodes[to.node]);
        let joined = match (&a.remote, &b.remote) {
            (Some(x), Some(y)) => {
                x.manifest.is_none()
                    && y.manifest.is_none()
                    && x.host == y.host
                    && x.endpoints == y.endpoints
            }
            _ => false,
        };
        if joined {
            let (ra, rb) = (root(&mut part, from.node), root(&mut part, to.node));
            part[ra.max(rb)] = ra.min(rb);
        }
    }
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for &n in graph.order.iter().filter(|&&n| remote(n)) {
        let r = root(&mut part, n);
        match groups.iter_mut().find(|(g, _)| *g == r) {
            Some((_, members)) => members.push(n),
            None => groups.push((r, vec![n])),
        }
    }
    groups
        .into_iter()
        .map(|(_, members)| task(graph, &members, channels_of))
        .collect()
}

fn task(graph: &Graph, members: &[usize], channels_of: &ChannelsOf) -> Result<RemoteTask> {
    let first = &graph.nodes[members[0]];
    let def = first.remote.clone().expect("remote nodes have `remote`");
    let inside = |n: Option<usize>| n.is_some_and(|n| members.contains(&n));
    let outside_channels = |port: &PortRef, incoming: bool| -> Vec<String> {
        channels_of(port, incoming)
            .into_iter()
            .filter(|(_, other)| !inside(*other))
            .map(|(name, _)| name)
            .collect()
    };
    let any_label = def.manifest.is_some();
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    for &n in members {
        let node = &graph.nodes[n];
        for port in &node.inputs {
            let port_ref = PortRef {
                node: n,
                port: port.clone(),
            };
            let key = match (any_label, port.as_str()) {
                // The inline pipeline's input, whatever it is called there.
                (true, _) => String::new(),
                (false, DEFAULT_INPUT) => node.id.clone(),
                (false, _) => format!("{}.{port}", node.id),
            };
            for channel in outside_channels(&port_ref, true) {
                inputs.push((key.clone(), channel));
            }
        }
        for port in &node.outputs {
            let port_ref = PortRef {
                node: n,
                port: port.clone(),
            };
            let channels = outside_channels(&port_ref, false);
            if channels.is_empty() {
                continue;
            }
            let label = match port.as_str() {
                DEFAULT_OUTPUT => node.id.clone(),
                _ => format!("{}.{port}", node.id),
            };
            outputs.push((label, channels));
        }
    }
    let manifest = match &def.manifest {
        Some(inline) => {
            let inline: SubManifest =
                serde_json::from_value(inline.clone()).map_err(|e| Error::Manifest {
                    path: format!("{}.manifest", def.path),
                    message: e.to_string(),
                })?;
            proto_manifest(&inline)
        }
        None => {
            let nodes = members
                .iter()
                .map(|&n| {
                    let node = &graph.nodes[n];
                    let remote = node.remote.as_ref().expect("remote nodes have `remote`");
                    SubNode {
                        id: node.id.clone(),
                        node_type: node.node_type.clone(),
                        params: node.params.clone(),
                        is_streaming: remote.is_streaming,
                        runtime_hint: remote.runtime_hint.clone(),
                        host: None,
                    }
                })
                .collect();
            let end = |p: &PortRef, default: &str| {
                let id = &graph.nodes[p.node].id;
                match p.port == default {
                    true => id.clone(),
                    false => format!("{id}.{}", p.port),
                }
            };
            let connections = graph
                .edges
                .iter()
                .filter(|(from, to)| members.contains(&from.node) && members.contains(&to.node))
                .map(|(from, to)| (end(from, DEFAULT_OUTPUT), end(to, DEFAULT_INPUT)))
                .collect();
            proto_manifest(&SubManifest {
                name: format!("{} ({} on {})", graph.name, first.id, def.host),
                nodes,
                connections,
            })
        }
    };
    Ok(RemoteTask {
        node_ids: members.iter().map(|&n| graph.nodes[n].id.clone()).collect(),
        def,
        manifest,
        inputs,
        outputs,
        any_label,
    })
}

fn proto_manifest(sub: &SubManifest) -> PipelineManifest {
    PipelineManifest {
        version: "v1".into(),
        metadata: Some(ManifestMetadata {
            name: sub.name.clone(),
            ..ManifestMetadata::default()
        }),
        nodes: sub
            .nodes
            .iter()
            .map(|node| NodeManifest {
                id: node.id.clone(),
                node_type: node.node_type.clone(),
                params: node.params.to_string(),
                is_streaming: node.is_streaming,
                host: node.host.clone().unwrap_or_default(),
                runtime_hint: node
                    .runtime_hint
                    .as_deref()
                    .and_then(RuntimeHint::from_str_name)
                    .unwrap_or(RuntimeHint::Unspecified) as i32,
                ..NodeManifest::default()
            })
            .collect(),
        connections: sub
            .connections
            .iter()
            .map(|(from, to)| Connection {
                from: from.clone(),
                to: to.clone(),
            })
            .collect(),
    }
}

/// How often blocked waits look at the session's stop flag.
const POLL: Duration = Duration::from_millis(50);

/// A part whose inputs are quiet (a voice pipeline between utterances) says it is
/// still there this often: an empty `StreamControl`, which servers skip, so that the
/// host's idle timeout (`[server] idle_timeout_secs`) does not end a live session.
const KEEPALIVE: Duration = Duration::from_secs(1);

/// Requests queued for one hop's connection (HTTP/2 flow control does the rest).
const QUEUED_REQUESTS: usize = 4;

/// Room for a DataChunk's fields besides the frame's payload.
const MESSAGE_OVERHEAD: usize = 64 << 10;

/// The running parts of one session.
pub struct RemoteHost {
    shared: Arc<NativeShared>,
    /// Parts whose streams are ready (their remote nodes initialized).
    ready: Arc<AtomicUsize>,
    /// Each part's request queue, to send CANCEL on a stop.
    cancels: Vec<mpsc::Sender<StreamRequest>>,
    threads: Threads,
}

impl RemoteHost {
    /// Opens every part's channel ends, dials its host and opens its stream; returns
    /// once all are open (the remote nodes initializing), or with the first part's
    /// error, having stopped the others.
    pub fn start(
        tasks: Vec<RemoteTask>,
        cfg: &ChannelConfig,
        hosts: &Hosts,
        shared: Arc<NativeShared>,
        interrupt: Interrupt,
    ) -> Result<RemoteHost> {
        let mut host = RemoteHost {
            threads: Threads::new(Arc::clone(&shared)),
            shared,
            ready: Arc::new(AtomicUsize::new(0)),
            cancels: Vec::new(),
        };
        for task in tasks {
            let inputs = task
                .inputs
                .iter()
                .map(|(key, name)| Ok((key.clone(), ipc::Receiver::open(name, cfg)?)))
                .collect::<Result<Vec<_>>>()?;
            let outputs = task
                .outputs
                .iter()
                .map(|(label, names)| {
                    let senders = names
                        .iter()
                        .map(|n| ipc::Sender::create(n, cfg))
                        .collect::<Result<Vec<_>>>()?;
                    Ok((label.clone(), senders))
                })
                .collect::<Result<Vec<_>>>()?;
            let (opened_tx, opened) = std_mpsc::channel();
            let hop = Hop {
                shared: Arc::clone(&host.shared),
                ready: Arc::clone(&host.ready),
                host: task.def.host.clone(),
                path: task.def.path.clone(),
                node_ids: task.node_ids.clone(),
                max_payload: cfg.max_payload,
                sent: Arc::new(Mutex::new(VecDeque::new())),
            };
            let hosts = hosts.clone();
            let name = format!("zerohop-remote-{}", task.node_ids[0]);
            let thread = std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    // A bug that panics here must still fail the session, not leave
                    // it waiting for frames that never come.
                    let guard = hop.clone();
                    let run = std::panic::AssertUnwindSafe(|| {
                        hop.run(task, hosts, inputs, outputs, opened_tx)
                    });
                    if std::panic::catch_unwind(run).is_err() {
                        guard
                            .shared
                            .fail(guard.error("", "its thread failed", String::new()));
                    }
                })
                .map_err(|e| Error::Spawn {
                    node: "<remote>".into(),
                    detail: e.to_string(),
                })?;
            host.threads.push(thread);
            // Opened, failed, or the thread is gone (its failure is recorded).
            let cancel = loop {
                match opened.recv_timeout(POLL) {
                    Ok(Ok(cancel)) => break cancel,
                    Ok(Err(err)) => return Err(err),
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                        return Err(host.shared.failure().unwrap_or(Error::Interrupted))
                    }
                    Err(std_mpsc::RecvTimeoutError::Timeout) => interrupt()?,
                }
            };
            host.cancels.push(cancel);
        }
        Ok(host)
    }

    /// Waits until every part's remote nodes are ready; `on_event` sees their progress.
    pub fn wait_ready(
        &self,
        on_event: &mut dyn FnMut(Event) -> Result<()>,
        interrupt: Interrupt,
    ) -> Result<()> {
        loop {
            while let Some(event) = self.shared.next_event() {
                on_event(event)?;
            }
            if let Some(err) = self.shared.failure() {
                return Err(err);
            }
            // One cancel queue per part.
            if self.ready.load(Ordering::Acquire) == self.cancels.len() {
                return Ok(());
            }
            interrupt()?;
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Cancels every part's stream and waits for its threads (the connections close
    /// with them).
    pub fn stop(&self) {
        if self.threads.ours() {
            for cancel in &self.cancels {
                let _ = cancel.try_send(control(Command::Cancel));
            }
        }
        self.threads.stop();
    }
}

impl Drop for RemoteHost {
    fn drop(&mut self) {
        match self.threads.ours() {
            true => self.stop(),
            // Queues of runtimes that do not exist here (the parent's; see `fork.rs`);
            // `threads` leaks its handles likewise.
            false => std::mem::forget(std::mem::take(&mut self.cancels)),
        }
    }
}

fn control(command: Command) -> StreamRequest {
    StreamRequest {
        request: Some(Request::Control(StreamControl {
            command: command as i32,
        })),
    }
}

/// A `CancelSpeculation` for the remote session (see `executor::cancel`).
fn cancel(node_id: &str) -> StreamRequest {
    let message = ControlMessage {
        message_type: Some(MessageType::CancelSpeculation(CancelSpeculation::default())),
        ..ControlMessage::default()
    };
    StreamRequest {
        request: Some(Request::DataChunk(DataChunk {
            node_id: node_id.to_owned(),
            buffer: Some(DataBuffer {
                data_type: Some(DataType::Control(message)),
                ..DataBuffer::default()
            }),
            ..DataChunk::default()
        })),
    }
}

/// What both threads of one part share.
#[derive(Clone)]
struct Hop {
    shared: Arc<NativeShared>,
    ready: Arc<AtomicUsize>,
    host: String,
    path: String,
    node_ids: Vec<String>,
    max_payload: usize,
    /// When each chunk in flight left, oldest first (for the round-trip time).
    sent: Arc<Mutex<VecDeque<Instant>>>,
}

type Inputs = Vec<(String, ipc::Receiver)>;
type Outputs = Vec<(String, Vec<ipc::Sender>)>;
type Opened = std_mpsc::Sender<Result<mpsc::Sender<StreamRequest>>>;

impl Hop {
    /// An error about this part: `node` when the remote server named one of ours.
    fn error(&self, node: &str, message: impl Into<String>, traceback: String) -> Error {
        let node = match self.node_ids.iter().any(|id| id == node) {
            true => node.to_owned(),
            false => self.node_ids[0].clone(),
        };
        Error::Remote {
            node,
            host: self.host.clone(),
            path: self.path.clone(),
            message: message.into(),
            traceback,
        }
    }

    /// The part's receiving thread: dials, opens the stream, starts the sending thread,
    /// then turns responses into frames until the stream ends.
    fn run(self, task: RemoteTask, hosts: Hosts, inputs: Inputs, outputs: Outputs, opened: Opened) {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("zerohop-remote-io")
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = opened.send(Err(self.error(
                    "",
                    format!("no runtime: {e}"),
                    String::new(),
                )));
                return;
            }
        };
        let started = Instant::now();
        let stream = runtime.block_on(self.open(&task, &hosts));
        let (requests, inbound) = match stream {
            Ok(stream) => stream,
            Err(err) => {
                let _ = opened.send(Err(err));
                return;
            }
        };
        metrics::remote_hop(None);
        let sender = {
            let (hop, requests, handle) =
                (self.clone(), requests.clone(), runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("zerohop-remote-send-{}", self.node_ids[0]))
                .spawn(move || {
                    let send =
                        std::panic::AssertUnwindSafe(|| hop.send(inputs, &requests, &handle));
                    let outcome = std::panic::catch_unwind(send).unwrap_or_else(|_| {
                        Err(hop.error("", "its sending thread failed", String::new()))
                    });
                    hop.finish(outcome)
                })
        };
        let sender = match sender {
            Ok(thread) => thread,
            Err(e) => {
                let _ = opened.send(Err(self.error("", e.to_string(), String::new())));
                return;
            }
        };
        let _ = opened.send(Ok(requests));
        let outcome = self.receive(inbound, &task, &outputs, runtime.handle(), started);
        let label = match &outcome {
            Ok(()) => Outcome::Completed,
            Err(Error::Interrupted) => Outcome::Stopped,
            Err(_) => Outcome::Failed,
        };
        self.finish(outcome);
        // The sender stops with the session (or has finished); the runtime, and with
        // it the connection, goes after it.
        self.shared.wait_for_stop();
        let _ = sender.join();
        drop(outputs);
        drop(runtime);
        metrics::remote_hop(Some(label));
    }

    fn finish(&self, outcome: Result<()>) {
        match outcome {
            Ok(()) | Err(Error::Interrupted) => {}
            Err(err @ Error::Remote { .. }) => self.shared.fail(err),
            Err(err) => self
                .shared
                .fail(self.error("", err.to_string(), String::new())),
        }
    }

    async fn open(
        &self,
        task: &RemoteTask,
        hosts: &Hosts,
    ) -> Result<(mpsc::Sender<StreamRequest>, Streaming<StreamResponse>)> {
        let access = dial::access(hosts, &task.def.host);
        let limit = task
            .def
            .timeout_ms
            .map_or(access.connect_timeout, Duration::from_millis);
        let opening = async {
            let channel = dial::connect(
                &task.def.host,
                &task.def.endpoints,
                hosts,
                task.def.retries,
                Duration::from_millis(task.def.backoff_ms),
            )
            .await
            .map_err(|message| self.error("", message, String::new()))?;
            let max_message = self.max_payload + MESSAGE_OVERHEAD;
            let mut client = StreamingPipelineServiceClient::new(channel)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message);
            let (requests, queued) = mpsc::channel(QUEUED_REQUESTS);
            let init = StreamRequest {
                request: Some(Request::Init(StreamInit {
                    manifest: Some(task.manifest.clone()),
                    client_version: format!("zerohop {} (remote node)", env!("CARGO_PKG_VERSION")),
                    report_progress: true,
                    ..StreamInit::default()
                })),
            };
            requests
                .send(init)
                .await
                .map_err(|_| self.error("", "the stream closed at once", String::new()))?;
            let mut request = tonic::Request::new(ReceiverStream::new(queued));
            if let Some(token) = &access.token {
                let value = format!("Bearer {token}").parse().map_err(|_| {
                    let key = dial::host_key(&task.def.host);
                    Error::Config(format!("[hosts.\"{key}\"] token: not a valid header value"))
                })?;
                request.metadata_mut().insert("authorization", value);
            }
            let response = client
                .stream_pipeline(request)
                .await
                .map_err(|status| self.refused(&status, access.token.is_some()))?;
            if let Some(warnings) = response.metadata().get(WARNINGS_METADATA) {
                let text = warnings.to_str().unwrap_or_default();
                for warning in serde_json::from_str::<Vec<String>>(text).unwrap_or_default() {
                    eprintln!("zerohop: remote host {}: warning: {warning}", self.host);
                }
            }
            Ok((requests, response.into_inner()))
        };
        match tokio::time::timeout(limit, opening).await {
            Ok(result) => result,
            Err(_) => Err(self.error(
                "",
                format!("no answer within {:.1} s", limit.as_secs_f64()),
                String::new(),
            )),
        }
    }

    fn refused(&self, status: &tonic::Status, had_token: bool) -> Error {
        let hint = match (status.code(), had_token) {
            (tonic::Code::Unauthenticated, false) => format!(
                " (set [hosts.\"{}\"] token or token_env in runtime.toml)",
                dial::host_key(&self.host)
            ),
            _ => String::new(),
        };
        let source = std::error::Error::source(status)
            .map(|e| format!(": {}", dial::chain(e)))
            .unwrap_or_default();
        self.error(
            "",
            format!(
                "refused: {:?}: {}{source}{hint}",
                status.code(),
                status.message()
            ),
            String::new(),
        )
    }

    /// Channels → gRPC: every frame of the part's inputs as a DataChunk, then CLOSE
    /// once each input has ended.
    fn send(
        &self,
        inputs: Inputs,
        requests: &mpsc::Sender<StreamRequest>,
        runtime: &Handle,
    ) -> Result<()> {
        let (keys, receivers): (Vec<String>, Vec<ipc::Receiver>) = inputs.into_iter().unzip();
        let mut frames = InputFrames::new(&receivers, self.max_payload);
        let mut last_sent = Instant::now();
        while frames.open() {
            self.shared.check_stop()?;
            let (i, header, sample) = match frames.try_next()? {
                Some(Next::Frame(i, header, sample)) => (i, header, sample),
                Some(Next::Mark(i, id)) => {
                    // Not a target (no notice comes): the other server cancels its
                    // session's work in flight.
                    if frames.mark(i, id) {
                        self.deliver(requests, cancel(&keys[0]), runtime)?;
                        last_sent = Instant::now();
                    }
                    continue;
                }
                None => {
                    if last_sent.elapsed() >= KEEPALIVE {
                        self.deliver(requests, control(Command::Unspecified), runtime)?;
                        last_sent = Instant::now();
                    }
                    frames.wait(POLL.as_millis() as i32, None);
                    continue;
                }
            };
            let buffer = from_frame(&header, payload(&sample, &header));
            drop(sample);
            let chunk = StreamRequest {
                request: Some(Request::DataChunk(DataChunk {
                    node_id: keys[i].clone(),
                    buffer: Some(buffer),
                    sequence: header.sequence,
                    ..DataChunk::default()
                })),
            };
            self.sent
                .lock()
                .expect("poisoned")
                .push_back(Instant::now());
            self.deliver(requests, chunk, runtime)?;
            last_sent = Instant::now();
        }
        self.deliver(requests, control(Command::Close), runtime)
    }

    /// Queues one request, waiting while the connection is behind.
    fn deliver(
        &self,
        requests: &mpsc::Sender<StreamRequest>,
        request: StreamRequest,
        runtime: &Handle,
    ) -> Result<()> {
        loop {
            // The timer is made inside the runtime (it needs its clock).
            match runtime.block_on(async { tokio::time::timeout(POLL, requests.reserve()).await }) {
                Ok(Ok(permit)) => {
                    permit.send(request);
                    return Ok(());
                }
                // The stream is over: the receiving side reports why.
                Ok(Err(_)) => return Err(Error::Interrupted),
                Err(_) => self.shared.check_stop()?,
            }
        }
    }

    /// gRPC → channels, until the remote server closes the stream.
    fn receive(
        &self,
        mut inbound: Streaming<StreamResponse>,
        task: &RemoteTask,
        outputs: &Outputs,
        runtime: &Handle,
        started: Instant,
    ) -> Result<()> {
        let mut unconnected: Vec<String> = Vec::new();
        loop {
            let message = loop {
                match runtime
                    .block_on(async { tokio::time::timeout(POLL, inbound.message()).await })
                {
                    Ok(message) => break message,
                    Err(_) => self.shared.check_stop()?,
                }
            };
            let response = match message {
                Ok(Some(StreamResponse {
                    response: Some(response),
                })) => response,
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return Err(self.error(
                        "",
                        "the host ended the stream without closing it",
                        String::new(),
                    ))
                }
                Err(status) => {
                    self.shared.check_stop()?;
                    return Err(self.error(
                        "",
                        format!(
                            "the stream failed: {:?}: {}",
                            status.code(),
                            status.message()
                        ),
                        String::new(),
                    ));
                }
            };
            match response {
                Response::Ready(_) => {
                    let init_secs = started.elapsed().as_secs_f64();
                    for node_id in &self.node_ids {
                        self.shared.push_event(Event::Ready {
                            node_id: node_id.clone(),
                            init_secs,
                        });
                    }
                    self.ready.fetch_add(1, Ordering::AcqRel);
                }
                Response::InitProgress(progress) => self.shared.push_event(Event::Progress {
                    node_id: progress.node_id,
                    fraction: progress.fraction.map(f64::from),
                    message: format!("{} (on {})", progress.message, self.host),
                }),
                Response::Result(result) => {
                    if let Some(sent) = self.sent.lock().expect("poisoned").pop_front() {
                        metrics::remote_round_trip(sent.elapsed().as_secs_f64());
                    }
                    let mut buffers: Vec<_> = result.data_outputs.into_iter().collect();
                    buffers.sort_by(|a, b| a.0.cmp(&b.0));
                    for (label, buffer) in buffers {
                        let Some(senders) = self.route(task, outputs, &label) else {
                            if !unconnected.contains(&label) {
                                eprintln!(
                                    "zerohop: remote host {}: output '{label}' is not \
                                     connected in this pipeline; its frames are dropped",
                                    self.host
                                );
                                unconnected.push(label);
                            }
                            continue;
                        };
                        let (mut header, bytes) = into_frame(buffer, self.max_payload, &[])
                            .map_err(|e| {
                                self.error("", format!("output '{label}': {e}"), String::new())
                            })?;
                        header.sequence = result.sequence;
                        let head = header.to_bytes();
                        for tx in senders {
                            tx.send_copy(&[&head, &bytes], None, &|| self.shared.check_stop())?;
                        }
                    }
                }
                Response::Metrics(_) => {}
                Response::Error(error) => {
                    return Err(self.error(
                        &error.failing_node_id,
                        error.message,
                        error.stack_trace,
                    ))
                }
                Response::Closed(closed) if closed.reason == "completed" => {
                    let mut eos = Header::bytes_like(crate::frame::Kind::Bytes, 0)?;
                    eos.flags = FLAG_END_OF_STREAM;
                    let bytes = eos.to_bytes();
                    for (_, senders) in outputs {
                        for tx in senders {
                            tx.send_copy(&[&bytes], None, &|| self.shared.check_stop())?;
                        }
                    }
                    return Ok(());
                }
                Response::Closed(closed) => {
                    return Err(self.error(
                        "",
                        format!("the host closed the stream: {}", closed.reason),
                        String::new(),
                    ))
                }
            }
        }
    }

    /// The channels a remote output labelled `label` feeds here.
    fn route<'a>(
        &self,
        task: &RemoteTask,
        outputs: &'a Outputs,
        label: &str,
    ) -> Option<&'a Vec<ipc::Sender>> {
        if task.any_label {
            return outputs.first().map(|(_, senders)| senders);
        }
        if let Some((_, senders)) = outputs.iter().find(|(l, _)| l == label) {
            return Some(senders);
        }
        // A node's only output, labelled by the node id there whatever its port's name.
        let of_node: Vec<_> = outputs
            .iter()
            .filter(|(l, _)| {
                l.strip_prefix(label)
                    .is_some_and(|rest| rest.starts_with('.'))
            })
            .collect();
        match of_node[..] {
            [(_, senders)] if self.node_ids.iter().any(|id| id == label) => Some(senders),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> Graph {
        let remote = |host: &str, i: usize| serde_json::json!({"host": host, "path": format!("nodes[{i}].host")});
        let doc = serde_json::json!({
            "name": "g",
            "nodes": [
                {"id": "a", "node_type": "PassThrough", "placement": "native"},
                {"id": "b", "node_type": "Echo", "placement": "remote", "remote": remote("x:1", 1)},
                {"id": "c", "node_type": "Tts", "placement": "remote", "remote": remote("x:1", 2),
                 "outputs": ["out", "info"]},
                {"id": "d", "node_type": "Echo", "placement": "remote", "remote": remote("y:1", 3)},
                {"id": "e", "node_type": "PassThrough", "placement": "native"},
            ],
            "connections": [
                {"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "d"},
                {"from": "d", "to": "e"}, {"from": "c", "to": "e", "from_port": "info"},
            ],
        });
        Graph::from_json(&doc.to_string()).unwrap()
    }

    #[test]
    fn consecutive_nodes_of_one_host_are_one_part() {
        let graph = graph();
        let ends = |port: &PortRef, incoming: bool| -> Vec<(String, Option<usize>)> {
            graph
                .edges
                .iter()
                .enumerate()
                .filter(|(_, (from, to))| if incoming { to == port } else { from == port })
                .map(|(i, (from, to))| {
                    (format!("e{i}"), Some(if incoming { from } else { to }.node))
                })
                .collect()
        };
        let tasks = tasks(&graph, &ends).unwrap();
        assert_eq!(tasks.len(), 2);
        let (x, y) = (&tasks[0], &tasks[1]);
        assert_eq!(x.node_ids, ["b", "c"]);
        assert_eq!(x.def.host, "x:1");
        let sent: Vec<_> = x.manifest.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(sent, ["b", "c"]);
        let edges: Vec<_> = x
            .manifest
            .connections
            .iter()
            .map(|c| (&*c.from, &*c.to))
            .collect();
        assert_eq!(edges, [("b", "c")]);
        assert_eq!(x.inputs, [("b".to_string(), "e0".to_string())]);
        assert_eq!(
            x.outputs,
            [
                ("c".to_string(), vec!["e2".to_string()]),
                ("c.info".to_string(), vec!["e4".to_string()])
            ]
        );
        assert_eq!(y.node_ids, ["d"]);
        assert_eq!(y.inputs, [("d".to_string(), "e2".to_string())]);
    }
}
