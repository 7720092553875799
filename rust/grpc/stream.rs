//! `StreamPipeline`: StreamInit → InitProgress while the nodes start (when asked for)
//! → StreamReady → DataChunk in / ChunkResult out → StreamClosed.
//!
//! Three parties per stream: an async task reads the requests (it must never block),
//! a driver thread starts the session and turns its outputs into responses, and a
//! feeder thread sends the chunks into the session (blocking while it is behind; the
//! bounded queue between the reader and the feeder passes that on to the client as
//! HTTP/2 flow control). The end of the request stream or `COMMAND_CLOSE` ends the
//! input: the nodes flush and the stream closes after the last output. `COMMAND_CANCEL`,
//! a client that goes away or the server shutting down stops the session at once: the
//! driver's interrupt check fails within 50 ms and every node process is stopped.
//!
//! Like remotemedia-sdk's server, a stream reports `StreamMetrics` after every N chunks
//! (`[server] stream_metrics_every`, default 10), sent by the feeder once the Nth chunk
//! is in the pipeline. Items are what that server counts: samples for audio, frames
//! for video, words for text, one for anything else; `ChunkResult.total_items_processed`
//! is the same running count of input items. `chunks_dropped` is always 0 (a full
//! pipeline makes the client wait, it never drops); `peak_memory_bytes` is the sum of
//! the node processes' peak resident memory (`VmHWM`), 0 for an all-native pipeline;
//! there is no result cache, so the cache fields are 0.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tonic::{Status, Streaming};

use super::batch::{kind, node_metrics};
use super::budget::{self, Slot};
use super::plan::Plan;
use super::proto::ChunkResult;
use super::proto::{
    data_buffer::DataType, stream_control::Command, stream_request::Request,
    stream_response::Response, DataBuffer, DataChunk, ExecutionMetrics, InitProgress, StreamClosed,
    StreamInit, StreamMetrics, StreamReady, StreamRequest, StreamResponse,
};
use super::run::{
    cancel_buffer, output_buffer, plan, route, send, start, Asked, Context, Intake, Running,
};
use super::status::{as_status, error_response, status_label, Dialect};
use crate::error::{Error, Result};
use crate::executor::{Event, Output, Session};
use crate::frame::payload;
use crate::metrics;

type Reply = std::result::Result<StreamResponse, Status>;

/// The method's name in `zerohop_grpc_calls_total`.
pub const METHOD: &str = "StreamPipeline";

/// A stream's responses on their way to the client, at most
/// `[server] max_buffered_bytes_per_stream` of them (see `budget`).
pub type Responses = budget::Sender<Reply>;

/// Bytes a response takes besides the payload of the frame it carries (its label,
/// metadata and counters), reserved before the frame is copied out of shared memory.
const RESULT_OVERHEAD: usize = 1 << 10;

/// How often a thread waiting for room in a client's response queue checks whether it
/// should stop waiting.
const ROOM_POLL: Duration = Duration::from_millis(50);

enum Input {
    Chunk(Box<DataChunk>),
    /// The client closed its input.
    End,
}

/// Why a stream stops early, shared by its three parties.
struct StreamState {
    cancelled: AtomicBool,
    failure: Mutex<Option<Error>>,
    /// The driver is done with the session (it ended, failed or was stopped): the
    /// feeder, which may be waiting for room in the client's queue, stops too.
    ended: AtomicBool,
    /// Set once the session runs, for the StreamClosed of a stream that stops early.
    session_id: Mutex<String>,
    /// What the request's `resource_limits` ask (set once planned).
    asked: OnceLock<Asked>,
    /// When the stream started, and when the latest chunk entered the pipeline
    /// (nanoseconds after it): `ChunkResult.processing_time_ms` is measured from there.
    began: Instant,
    last_input_ns: AtomicU64,
    /// Chunks fed into the pipeline and their items (see the module docs).
    chunks_in: AtomicU64,
    items_in: AtomicU64,
    /// Input chunks per DataBuffer kind.
    kinds_in: Mutex<HashMap<String, u64>>,
    /// Results sent and the sum of their `processing_time_ms`, in nanoseconds.
    results: AtomicU64,
    latency_ns: AtomicU64,
}

impl Default for StreamState {
    fn default() -> Self {
        StreamState {
            cancelled: AtomicBool::new(false),
            failure: Mutex::new(None),
            ended: AtomicBool::new(false),
            session_id: Mutex::new(String::new()),
            asked: OnceLock::new(),
            began: Instant::now(),
            last_input_ns: AtomicU64::new(0),
            chunks_in: AtomicU64::new(0),
            items_in: AtomicU64::new(0),
            kinds_in: Mutex::new(HashMap::new()),
            results: AtomicU64::new(0),
            latency_ns: AtomicU64::new(0),
        }
    }
}

impl StreamState {
    fn fail(&self, err: Error) {
        self.failure.lock().expect("poisoned").get_or_insert(err);
    }

    fn failure(&self) -> Option<Error> {
        self.failure.lock().expect("poisoned").clone()
    }

    /// Whether the stream's threads should stop waiting: its client gone, the server
    /// stopping, the stream cancelled or failed, or the driver done with it.
    fn stopped(&self, ctx: &Context, tx: &Responses) -> bool {
        // Past the request's deadline: the failure the stream ends with.
        if let Some(Err(err)) = self.asked.get().map(Asked::check) {
            let mut failure = self.failure.lock().expect("poisoned");
            if failure.is_none() {
                metrics::limit_hit("deadline");
                *failure = Some(err);
            }
        }
        tx.is_closed()
            || ctx.stopping()
            || self.cancelled.load(Ordering::Acquire)
            || self.ended.load(Ordering::Acquire)
            || self.failure.lock().expect("poisoned").is_some()
    }

    /// Counts a chunk whose buffers are `tally` (kind, items) before it is sent, so
    /// that its results, however fast, see it counted; returns the chunks so far.
    fn count_input(&self, tally: &[(&'static str, u64)]) -> u64 {
        let mut kinds = self.kinds_in.lock().expect("poisoned");
        for &(kind, items) in tally {
            self.items_in.fetch_add(items, Ordering::AcqRel);
            *kinds.entry(kind.into()).or_insert(0) += 1;
        }
        self.chunks_in.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The latest chunk is in the pipeline: `processing_time_ms` counts from now.
    fn input_sent(&self) {
        let at = self.began.elapsed().as_nanos() as u64;
        self.last_input_ns.store(at, Ordering::Release);
    }

    /// A result went out `latency_ms` after the latest input.
    fn result_sent(&self, latency_ms: f64) {
        self.results.fetch_add(1, Ordering::AcqRel);
        let ns = (latency_ms * 1e6) as u64;
        self.latency_ns.fetch_add(ns, Ordering::AcqRel);
    }

    fn metrics(&self, session: &Session, queued: usize) -> StreamMetrics {
        let results = self.results.load(Ordering::Acquire);
        let latency_ns = self.latency_ns.load(Ordering::Acquire);
        StreamMetrics {
            session_id: session.id.clone(),
            chunks_processed: self.chunks_in.load(Ordering::Acquire),
            average_latency_ms: match results {
                0 => 0.0,
                n => latency_ns as f64 / n as f64 / 1e6,
            },
            total_items: self.items_in.load(Ordering::Acquire),
            buffer_items: queued as u64,
            chunks_dropped: 0,
            peak_memory_bytes: session.supervisor().peak_rss_bytes(),
            data_type_breakdown: self.kinds_in.lock().expect("poisoned").clone(),
            ..StreamMetrics::default()
        }
    }

    fn since_last_input_ms(&self) -> f64 {
        let last = Duration::from_nanos(self.last_input_ns.load(Ordering::Acquire));
        self.began.elapsed().saturating_sub(last).as_secs_f64() * 1e3
    }
}

/// Items in a buffer, counted as remotemedia-sdk's server counts them: samples (per
/// channel) for audio, frames for video, words for text, 1 otherwise.
fn items(buffer: &DataBuffer) -> u64 {
    match &buffer.data_type {
        Some(DataType::Audio(audio)) => audio.num_samples,
        Some(DataType::Text(text)) => String::from_utf8_lossy(&text.text_data)
            .split_whitespace()
            .count() as u64,
        _ => 1,
    }
}

/// The bytes a response occupies in the queue.
fn size(item: &Reply) -> usize {
    match item {
        Ok(response) => response.encoded_len(),
        Err(status) => status.message().len(),
    }
}

/// Reserves room for a response of `bytes` from a blocking thread, waiting while the
/// client's queue is full — but never past `interrupt` failing (checked every 50 ms): a
/// client that stops reading must not pin the thread, and with it the session, once
/// it is cancelled, gone, failed or idle.
fn room(
    runtime: &Handle,
    tx: &Responses,
    bytes: usize,
    interrupt: &dyn Fn() -> Result<()>,
) -> Result<Slot<Reply>> {
    loop {
        // The timer is made inside `block_on`, where the runtime is entered (the feeder
        // is a plain thread).
        let room =
            runtime.block_on(async { tokio::time::timeout(ROOM_POLL, tx.reserve(bytes)).await });
        match room {
            Ok(Ok(slot)) => return Ok(slot),
            Ok(Err(budget::Closed)) => return Err(Error::Interrupted), // the client is gone
            Err(_) => interrupt()?,
        }
    }
}

/// Queues `item` for the client once there is room (see [`room`]).
fn push(
    runtime: &Handle,
    tx: &Responses,
    item: Reply,
    interrupt: &dyn Fn() -> Result<()>,
) -> Result<()> {
    room(runtime, tx, size(&item), interrupt)?.send(item);
    Ok(())
}

fn respond(response: Response) -> Reply {
    Ok(StreamResponse {
        response: Some(response),
    })
}

/// Opens a stream: reads its `StreamInit` and plans it (validation; nothing starts),
/// then serves it in the background. Returns the plan's warnings (unknown params and
/// the like), which the caller sends as response metadata: the headers go out only
/// now, so they can carry them. A stream that cannot be planned still opens, and
/// reports why in an `ErrorResponse`, as every other failure of a stream.
pub async fn open(
    ctx: Arc<Context>,
    mut inbound: Streaming<StreamRequest>,
    tx: Responses,
) -> Vec<String> {
    let first = tokio::time::timeout(ctx.idle_timeout, inbound.message()).await;
    let Ok(first) = first else {
        refuse(&tx, idle(&ctx)).await;
        return Vec::new();
    };
    let init = match first {
        Ok(Some(StreamRequest {
            request: Some(Request::Init(init)),
        })) => init,
        Ok(Some(_)) => {
            let err = Error::Manifest {
                path: "request".into(),
                message: "the first message of a stream must be a StreamInit".into(),
            };
            refuse(&tx, err).await;
            return Vec::new();
        }
        Ok(None) | Err(_) => return Vec::new(),
    };
    let planned = {
        let (ctx, manifest) = (Arc::clone(&ctx), init.manifest.clone());
        tokio::task::spawn_blocking(move || {
            let manifest = manifest.as_ref().ok_or_else(|| Error::Manifest {
                path: "init.manifest".into(),
                message: "missing".into(),
            })?;
            plan(&ctx, manifest)
        })
        .await
        .unwrap_or_else(|e| Err(Error::Config(format!("planning failed: {e}"))))
    };
    let warnings = planned
        .as_ref()
        .map(|plan| plan.warnings.clone())
        .unwrap_or_default();
    tokio::spawn(serve(ctx, inbound, tx, init, planned));
    warnings
}

/// Ends a stream before it has a session: its `ErrorResponse`, then the status that
/// goes with the error, if any.
async fn refuse(tx: &Responses, err: Error) {
    let response = respond(Response::Error(error_response(
        &err,
        None,
        Dialect::default(),
    )));
    let _ = tx.send(response, 0).await;
    let status = as_status(&err);
    count_end(status.as_ref());
    if let Some(status) = status {
        let _ = tx.send(Err(status), 0).await;
    }
}

/// Counts a stream that ended with `status` after its last message (None: it ended
/// with a message only, which a client reads as OK).
fn count_end(status: Option<&Status>) {
    metrics::grpc_call(METHOD, &status_label(status));
}

/// Serves one planned stream until it ends; runs on the async runtime, never blocks.
async fn serve(
    ctx: Arc<Context>,
    mut inbound: Streaming<StreamRequest>,
    tx: Responses,
    init: StreamInit,
    planned: Result<Plan>,
) {
    let state = Arc::new(StreamState::default());
    // What the client sent ahead of its pipeline, bounded as its responses are.
    let (chunks, queued) = budget::channel(ctx.max_buffered);
    let (done, mut finished) = oneshot::channel::<()>();
    {
        let (ctx, state) = (Arc::clone(&ctx), Arc::clone(&state));
        tokio::task::spawn_blocking(move || {
            drive(&ctx, init, planned, queued, &tx, &state);
            drop(done);
        });
    }
    loop {
        let message = tokio::select! {
            message = tokio::time::timeout(ctx.idle_timeout, inbound.message()) => match message {
                Ok(message) => message,
                Err(_) => {
                    state.fail(idle(&ctx));
                    return;
                }
            },
            _ = &mut finished => return,
        };
        let request = match message {
            Ok(Some(StreamRequest { request })) => request,
            // The client half-closed: it has sent everything.
            Ok(None) => {
                let _ = chunks.send(Input::End, 0).await;
                return;
            }
            // A message over the size limit (tonic refuses to decode it).
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                state.fail(Error::ResourceLimit(format!(
                    "request message refused: {}",
                    status.message()
                )));
                return;
            }
            // Anything else means the client is gone.
            Err(_) => {
                state.cancelled.store(true, Ordering::Release);
                return;
            }
        };
        let (input, bytes) = match request {
            Some(Request::DataChunk(chunk)) => {
                let bytes = chunk.encoded_len();
                (Input::Chunk(Box::new(chunk)), bytes)
            }
            #[allow(deprecated)] // still sent by older clients
            Some(Request::AudioChunk(audio)) => {
                let bytes = audio.encoded_len();
                let chunk = DataChunk {
                    node_id: audio.node_id,
                    buffer: audio.buffer.map(|buffer| DataBuffer {
                        data_type: Some(super::proto::data_buffer::DataType::Audio(buffer)),
                        metadata: Default::default(),
                    }),
                    named_buffers: HashMap::new(),
                    sequence: audio.sequence,
                    timestamp_ms: audio.timestamp_ms,
                };
                (Input::Chunk(Box::new(chunk)), bytes)
            }
            Some(Request::Control(control)) => match Command::try_from(control.command) {
                Ok(Command::Close) => (Input::End, 0),
                Ok(Command::Cancel) => {
                    state.cancelled.store(true, Ordering::Release);
                    return;
                }
                _ => continue,
            },
            Some(Request::Init(_)) => {
                state.fail(Error::Manifest {
                    path: "init".into(),
                    message: "a stream takes one StreamInit, at its start".into(),
                });
                return;
            }
            None => continue,
        };
        let end = matches!(input, Input::End);
        // While the feeder is behind by the budget, the client's messages stay unread
        // and HTTP/2 flow control holds it back.
        if chunks.send(input, bytes).await.is_err() || end {
            return;
        }
    }
}

/// What ends a stream whose client has been silent for the idle timeout.
fn idle(ctx: &Context) -> Error {
    Error::Idle {
        secs: ctx.idle_timeout.as_secs_f64(),
    }
}

/// How a stream that ran to its end went.
struct Summary {
    session_id: String,
    metrics: ExecutionMetrics,
}

/// Starts the session, streams its outputs and sends the final message. The session is
/// closed (every node process gone) before that message goes out.
fn drive(
    ctx: &Arc<Context>,
    init: StreamInit,
    planned: Result<Plan>,
    queued: budget::Receiver<Input>,
    tx: &Responses,
    state: &Arc<StreamState>,
) {
    let interrupt = || match state.stopped(ctx, tx) {
        true => Err(Error::Interrupted),
        false => Ok(()),
    };
    let runtime = Handle::current();
    let outcome = planned.and_then(|plan| run(ctx, &init, plan, queued, tx, state, &interrupt));
    state.ended.store(true, Ordering::Release);
    // The session is closed by now. Its last message waits for room at most one idle
    // timeout: a client that reads nothing for that long does not get it.
    let deadline = Instant::now() + ctx.idle_timeout;
    let last = || match Instant::now() < deadline && !ctx.stopping() {
        true => Ok(()),
        false => Err(Error::Interrupted),
    };
    let send_last = |item| {
        let _ = push(&runtime, tx, item, &last);
    };
    let failed = |err: Error| {
        let dialect = Dialect::of(&init.client_version);
        let response = error_response(&err, init.manifest.as_ref(), dialect);
        send_last(respond(Response::Error(response)));
        let status = as_status(&err);
        count_end(status.as_ref());
        if let Some(status) = status {
            send_last(Err(status));
        }
    };
    let closed = |session_id: String, metrics: Option<ExecutionMetrics>, reason: &str| {
        count_end(None);
        send_last(respond(Response::Closed(StreamClosed {
            session_id,
            final_metrics: metrics,
            reason: reason.into(),
        })));
    };
    match outcome {
        Ok(summary) => closed(summary.session_id, Some(summary.metrics), "completed"),
        Err(Error::Interrupted) => match state.failure() {
            Some(err) => failed(err),
            // The client left: no status reached it.
            None if tx.is_closed() => metrics::grpc_call(METHOD, "Cancelled"),
            None => {
                let session_id = state.session_id.lock().expect("poisoned").clone();
                let reason = match ctx.stopping() {
                    true => "server shutting down",
                    false => "cancelled",
                };
                closed(session_id, None, reason)
            }
        },
        Err(err) => failed(err),
    }
}

fn run(
    ctx: &Arc<Context>,
    init: &StreamInit,
    mut plan: Plan,
    queued: budget::Receiver<Input>,
    tx: &Responses,
    state: &Arc<StreamState>,
    interrupt: &dyn Fn() -> Result<()>,
) -> Result<Summary> {
    let began = Instant::now();
    let asked = Asked::apply(init.resource_limits.as_ref(), &mut plan, began);
    let _ = state.asked.set(asked);
    let runtime = Handle::current();
    let reply = |response: Response| push(&runtime, tx, respond(response), interrupt);
    let mut on_event = |event: Event| match progress(event) {
        Some(p) if init.report_progress => reply(Response::InitProgress(p)),
        _ => Ok(()),
    };
    for (key, buffer) in &init.data_inputs {
        route(
            &plan.graph,
            key,
            buffer,
            &format!("init.data_inputs[\"{key}\"]"),
        )?;
    }
    let mut running = start(ctx, plan, &mut on_event, interrupt)?;
    running.intake.max_audio_samples = asked.max_audio_samples;
    let session = &running.session;
    session
        .id
        .clone_into(&mut state.session_id.lock().expect("poisoned"));
    reply(Response::Ready(StreamReady {
        session_id: session.id.clone(),
        recommended_chunk_size: init.expected_chunk_size,
        max_buffer_latency_ms: 0,
    }))?;
    feed_in_background(
        &running,
        init,
        queued,
        Arc::clone(state),
        tx.clone(),
        Arc::clone(ctx),
    )?;
    let mut data_type_breakdown = HashMap::new();
    loop {
        match session.recv(None, interrupt)? {
            Output::Frame {
                output,
                header,
                sample,
            } => {
                // Room first: a client that does not read keeps the frame in shared
                // memory (holding its pipeline back), not a copy here.
                let bytes = payload(&sample, &header).len() + RESULT_OVERHEAD;
                let slot = room(&runtime, tx, bytes, interrupt)?;
                let (label, buffer) = output_buffer(session, output, &header, &sample);
                drop(sample);
                *data_type_breakdown.entry(kind(&buffer).into()).or_insert(0) += 1;
                let processing_time_ms = state.since_last_input_ms();
                slot.send(respond(Response::Result(ChunkResult {
                    sequence: header.sequence,
                    data_outputs: HashMap::from([(label, buffer)]),
                    processing_time_ms,
                    total_items_processed: state.items_in.load(Ordering::Acquire),
                })));
                state.result_sent(processing_time_ms);
                metrics::frame_latency(processing_time_ms / 1e3);
            }
            Output::Cancel { id } => {
                let slot = room(&runtime, tx, RESULT_OVERHEAD, interrupt)?;
                let (label, buffer) = cancel_buffer(session, id);
                slot.send(respond(Response::Result(ChunkResult {
                    sequence: 0,
                    data_outputs: HashMap::from([(label, buffer)]),
                    processing_time_ms: state.since_last_input_ms(),
                    total_items_processed: state.items_in.load(Ordering::Acquire),
                })));
            }
            Output::Event(_) => {}
            // A node's failure report can trail the end of stream (it travels on the
            // control socket, after the frames): a run is complete only if none came.
            Output::End => {
                session.check()?;
                break;
            }
        }
    }
    let metrics = ExecutionMetrics {
        wall_time_ms: began.elapsed().as_secs_f64() * 1e3,
        node_metrics: session.status().iter().map(node_metrics).collect(),
        data_type_breakdown,
        ..ExecutionMetrics::default()
    };
    Ok(Summary {
        session_id: session.id.clone(),
        metrics,
    })
}

/// Init events as InitProgress (a ready node reports fraction 1).
fn progress(event: Event) -> Option<InitProgress> {
    match event {
        Event::Progress {
            node_id,
            fraction,
            message,
        } => Some(InitProgress {
            node_id,
            fraction: fraction.map(|f| f as f32),
            message,
        }),
        Event::Ready { node_id, init_secs } => Some(InitProgress {
            node_id,
            fraction: Some(1.0),
            message: format!("ready in {init_secs:.2} s"),
        }),
        Event::FrameError { .. } => None,
    }
}

/// Starts the feeder thread: it sends the queued chunks into the session until the
/// input ends; a bad chunk fails the stream (the driver reports it).
fn feed_in_background(
    running: &Running,
    init: &StreamInit,
    mut queued: budget::Receiver<Input>,
    state: Arc<StreamState>,
    tx: Responses,
    ctx: Arc<Context>,
) -> Result<()> {
    let session = Arc::clone(&running.session);
    let ticket = running.ticket();
    let intake = running.intake.clone();
    let metrics_every = ctx.metrics_every;
    let initial = init.data_inputs.clone();
    let runtime = Handle::current();
    std::thread::Builder::new()
        .name("zerohop-feeder".into())
        .spawn(move || {
            let interrupt = || match state.stopped(&ctx, &tx) {
                true => Err(Error::Interrupted),
                false => Ok(()),
            };
            let fed = || -> Result<()> {
                feed_named(
                    &session,
                    initial,
                    0,
                    &intake,
                    &interrupt,
                    "init.data_inputs",
                )?;
                while let Some(input) = queued.blocking_recv() {
                    let chunk = match input {
                        Input::Chunk(chunk) => *chunk,
                        Input::End => return session.end_inputs(None, &interrupt),
                    };
                    let tally: Vec<_> = chunk
                        .buffer
                        .iter()
                        .chain(chunk.named_buffers.values())
                        .map(|b| (kind(b), items(b)))
                        .collect();
                    let counted = state.count_input(&tally);
                    if let Some(buffer) = chunk.buffer {
                        let index =
                            route(&session.graph, &chunk.node_id, &buffer, "data_chunk.buffer")?;
                        send(&session, index, buffer, chunk.sequence, &intake, &interrupt)?;
                    }
                    feed_named(
                        &session,
                        chunk.named_buffers,
                        chunk.sequence,
                        &intake,
                        &interrupt,
                        "data_chunk.named_buffers",
                    )?;
                    state.input_sent();
                    if metrics_every > 0 && counted.is_multiple_of(metrics_every) {
                        let metrics = state.metrics(&session, queued.len());
                        let metrics = respond(Response::Metrics(metrics));
                        push(&runtime, &tx, metrics, &interrupt)?;
                    }
                }
                Ok(())
            };
            // A bug that panics here must still end the stream (the driver waits for
            // outputs that would never come), not leave it open for ever.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(fed)) {
                Ok(Ok(())) | Ok(Err(Error::Interrupted)) => {}
                Ok(Err(err)) => state.fail(err),
                Err(_) => state.fail(Error::Config("the stream's feeder failed".into())),
            }
            // The session's channels go first, then its share of the caps.
            drop(session);
            drop(ticket);
        })
        .map(|_| ())
        .map_err(|e| Error::Spawn {
            node: "<feeder>".into(),
            detail: e.to_string(),
        })
}

/// Sends buffers keyed by input label (`node` or `node.port`).
fn feed_named(
    session: &Session,
    buffers: HashMap<String, DataBuffer>,
    sequence: u64,
    intake: &Intake,
    interrupt: &dyn Fn() -> Result<()>,
    field: &str,
) -> Result<()> {
    let mut buffers: Vec<_> = buffers.into_iter().collect();
    buffers.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, buffer) in buffers {
        let index = route(
            &session.graph,
            &key,
            &buffer,
            &format!("{field}[\"{key}\"]"),
        )?;
        send(session, index, buffer, sequence, intake, interrupt)?;
    }
    Ok(())
}
