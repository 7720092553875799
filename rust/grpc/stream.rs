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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tonic::{Status, Streaming};

use super::batch::{kind, node_metrics};
use super::proto::ChunkResult;
use super::proto::{
    stream_control::Command, stream_request::Request, stream_response::Response, DataBuffer,
    DataChunk, ExecutionMetrics, InitProgress, StreamClosed, StreamInit, StreamReady,
    StreamRequest, StreamResponse,
};
use super::run::{input_index, output_buffer, send, start, Context, Running};
use super::status::{as_status, error_response};
use crate::error::{Error, Result};
use crate::executor::{Output, Session};
use crate::supervisor::Event;

pub type Responses = mpsc::Sender<std::result::Result<StreamResponse, Status>>;

/// Chunks the reader has queued for the feeder; a few are enough to keep it busy.
const QUEUED_CHUNKS: usize = 16;

enum Input {
    Chunk(Box<DataChunk>),
    /// The client closed its input.
    End,
}

/// Why a stream stops early, shared by its three parties.
struct StreamState {
    cancelled: AtomicBool,
    failure: Mutex<Option<Error>>,
    /// Set once the session runs, for the StreamClosed of a stream that stops early.
    session_id: Mutex<String>,
    /// When the stream started, and when the latest chunk entered the pipeline
    /// (nanoseconds after it): `ChunkResult.processing_time_ms` is measured from there.
    began: Instant,
    last_input_ns: AtomicU64,
}

impl Default for StreamState {
    fn default() -> Self {
        StreamState {
            cancelled: AtomicBool::new(false),
            failure: Mutex::new(None),
            session_id: Mutex::new(String::new()),
            began: Instant::now(),
            last_input_ns: AtomicU64::new(0),
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

    fn input_sent(&self) {
        let at = self.began.elapsed().as_nanos() as u64;
        self.last_input_ns.store(at, Ordering::Release);
    }

    fn since_last_input_ms(&self) -> f64 {
        let last = Duration::from_nanos(self.last_input_ns.load(Ordering::Acquire));
        self.began.elapsed().saturating_sub(last).as_secs_f64() * 1e3
    }
}

fn respond(response: Response) -> std::result::Result<StreamResponse, Status> {
    Ok(StreamResponse {
        response: Some(response),
    })
}

/// Serves one stream until it ends; runs on the async runtime and never blocks.
pub async fn serve(ctx: Arc<Context>, mut inbound: Streaming<StreamRequest>, tx: Responses) {
    let init = match inbound.message().await {
        Ok(Some(StreamRequest {
            request: Some(Request::Init(init)),
        })) => init,
        Ok(Some(_)) => {
            let err = Error::Manifest {
                path: "request".into(),
                message: "the first message of a stream must be a StreamInit".into(),
            };
            let _ = tx
                .send(respond(Response::Error(error_response(&err, None))))
                .await;
            return;
        }
        Ok(None) | Err(_) => return,
    };
    let state = Arc::new(StreamState::default());
    let (chunks, queued) = mpsc::channel(QUEUED_CHUNKS);
    let (done, mut finished) = oneshot::channel::<()>();
    {
        let (ctx, state) = (Arc::clone(&ctx), Arc::clone(&state));
        tokio::task::spawn_blocking(move || {
            drive(&ctx, init, queued, &tx, &state);
            drop(done);
        });
    }
    loop {
        let message = tokio::select! {
            message = inbound.message() => message,
            _ = &mut finished => return,
        };
        let request = match message {
            Ok(Some(StreamRequest { request })) => request,
            // The client half-closed: it has sent everything.
            Ok(None) => {
                let _ = chunks.send(Input::End).await;
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
        let input = match request {
            Some(Request::DataChunk(chunk)) => Input::Chunk(Box::new(chunk)),
            #[allow(deprecated)] // still sent by older clients
            Some(Request::AudioChunk(audio)) => Input::Chunk(Box::new(DataChunk {
                node_id: audio.node_id,
                buffer: audio.buffer.map(|buffer| DataBuffer {
                    data_type: Some(super::proto::data_buffer::DataType::Audio(buffer)),
                    metadata: Default::default(),
                }),
                named_buffers: HashMap::new(),
                sequence: audio.sequence,
                timestamp_ms: audio.timestamp_ms,
            })),
            Some(Request::Control(control)) => match Command::try_from(control.command) {
                Ok(Command::Close) => Input::End,
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
        if chunks.send(input).await.is_err() || end {
            return;
        }
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
    queued: mpsc::Receiver<Input>,
    tx: &Responses,
    state: &Arc<StreamState>,
) {
    let interrupt = || {
        let gone = tx.is_closed() || ctx.stopping();
        if gone || state.cancelled.load(Ordering::Acquire) || state.failure().is_some() {
            return Err(Error::Interrupted);
        }
        Ok(())
    };
    let outcome = run(ctx, &init, queued, tx, state, &interrupt);
    let failed = |err: Error| {
        let response = error_response(&err, init.manifest.as_ref());
        let _ = tx.blocking_send(respond(Response::Error(response)));
        if let Some(status) = as_status(&err) {
            let _ = tx.blocking_send(Err(status));
        }
    };
    let closed = |session_id: String, metrics: Option<ExecutionMetrics>, reason: &str| {
        let _ = tx.blocking_send(respond(Response::Closed(StreamClosed {
            session_id,
            final_metrics: metrics,
            reason: reason.into(),
        })));
    };
    match outcome {
        Ok(summary) => closed(summary.session_id, Some(summary.metrics), "completed"),
        Err(Error::Interrupted) => match state.failure() {
            Some(err) => failed(err),
            None if tx.is_closed() => {}
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
    queued: mpsc::Receiver<Input>,
    tx: &Responses,
    state: &Arc<StreamState>,
    interrupt: &dyn Fn() -> Result<()>,
) -> Result<Summary> {
    let began = Instant::now();
    let manifest = init.manifest.as_ref().ok_or_else(|| Error::Manifest {
        path: "init.manifest".into(),
        message: "missing".into(),
    })?;
    let reply = |response: Response| {
        tx.blocking_send(respond(response))
            .map_err(|_| Error::Interrupted)
    };
    let mut on_event = |event: Event| match progress(event) {
        Some(p) if init.report_progress => reply(Response::InitProgress(p)),
        _ => Ok(()),
    };
    let running = start(ctx, manifest, &mut on_event, interrupt)?;
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
    let mut results = 0u64;
    let mut data_type_breakdown = HashMap::new();
    loop {
        match session.recv(None, interrupt)? {
            Output::Frame {
                output,
                header,
                sample,
            } => {
                let (label, buffer) = output_buffer(session, output, &header, &sample);
                drop(sample);
                *data_type_breakdown.entry(kind(&buffer).into()).or_insert(0) += 1;
                results += 1;
                reply(Response::Result(ChunkResult {
                    sequence: header.sequence,
                    data_outputs: HashMap::from([(label, buffer)]),
                    processing_time_ms: state.since_last_input_ms(),
                    total_items_processed: results,
                }))?;
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
    mut queued: mpsc::Receiver<Input>,
    state: Arc<StreamState>,
    tx: Responses,
    ctx: Arc<Context>,
) -> Result<()> {
    let session = Arc::clone(&running.session);
    let max_payload = running.max_payload;
    let initial = init.data_inputs.clone();
    std::thread::Builder::new()
        .name("zerohop-feeder".into())
        .spawn(move || {
            let interrupt = || {
                let stop =
                    ctx.stopping() || tx.is_closed() || state.cancelled.load(Ordering::Acquire);
                if stop {
                    Err(Error::Interrupted)
                } else {
                    Ok(())
                }
            };
            let fed = || -> Result<()> {
                feed_named(
                    &session,
                    initial,
                    0,
                    max_payload,
                    &interrupt,
                    "init.data_inputs",
                )?;
                while let Some(input) = queued.blocking_recv() {
                    let chunk = match input {
                        Input::Chunk(chunk) => *chunk,
                        Input::End => return session.end_inputs(None, &interrupt),
                    };
                    if let Some(buffer) = chunk.buffer {
                        let index =
                            input_index(&session.graph, &chunk.node_id, "data_chunk.node_id")?;
                        send(
                            &session,
                            index,
                            buffer,
                            chunk.sequence,
                            max_payload,
                            &interrupt,
                        )?;
                    }
                    feed_named(
                        &session,
                        chunk.named_buffers,
                        chunk.sequence,
                        max_payload,
                        &interrupt,
                        "data_chunk.named_buffers",
                    )?;
                    state.input_sent();
                }
                Ok(())
            };
            match fed() {
                Ok(()) | Err(Error::Interrupted) => {}
                Err(err) => state.fail(err),
            }
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
    max_payload: usize,
    interrupt: &dyn Fn() -> Result<()>,
    field: &str,
) -> Result<()> {
    let mut buffers: Vec<_> = buffers.into_iter().collect();
    buffers.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, buffer) in buffers {
        let index = input_index(&session.graph, &key, &format!("{field}[\"{key}\"]"))?;
        send(session, index, buffer, sequence, max_payload, interrupt)?;
    }
    Ok(())
}
