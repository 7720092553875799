//! What batch calls and streams share: planning and starting a session within the
//! server's caps, feeding it DataBuffers and reading its outputs back as DataBuffers.
//! Everything here blocks; it runs on the session's own threads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::convert::{from_frame, into_frame};
use super::limits::{Admission, Ticket};
use super::plan::{plan_logged, Plan, Planner};
use super::proto::{
    control_message::MessageType, data_buffer::DataType, AudioFormat, CancelSpeculation,
    ControlMessage, DataBuffer, PipelineManifest, ResourceLimits,
};
use crate::error::{Error, Result};
use crate::executor::{Event, Graph, Interrupt, Sample, Session};
use crate::frame::{payload, Header, Kind};
use crate::metrics;

/// What every call of the server shares.
pub struct Context {
    pub planner: Arc<dyn Planner>,
    pub admission: Arc<Admission>,
    /// Set when the server shuts down: every session stops.
    pub shutdown: AtomicBool,
    /// A stream gets a `StreamMetrics` after every this many chunks (0: never).
    pub metrics_every: u64,
    /// Where `DataBuffer.file` references may be read (resolved `[nodes] file_dirs`).
    pub file_dirs: Arc<[PathBuf]>,
    /// A stream whose client sends nothing for this long ends (`server.idle_timeout_secs`).
    pub idle_timeout: std::time::Duration,
    /// Bytes a stream may queue in each direction (`server.max_buffered_bytes_per_stream`).
    pub max_buffered: usize,
    /// Set by a drain: new calls are refused, running sessions go on.
    pub draining: AtomicBool,
}

impl Context {
    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
}

/// What a session takes in from the network.
#[derive(Clone)]
pub struct Intake {
    /// The largest payload a frame of this session may carry.
    pub max_payload: usize,
    /// Where `DataBuffer.file` references may be read (resolved `[nodes] file_dirs`).
    pub file_dirs: Arc<[PathBuf]>,
    /// The most samples one audio buffer may carry (`resource_limits.max_audio_samples`).
    pub max_audio_samples: Option<u64>,
}

/// What a request's `resource_limits` ask of its session (a field at 0 asks nothing).
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked {
    /// When the session must be over (`max_timeout_ms` after the request came).
    pub deadline: Option<(Instant, u64)>,
    pub max_audio_samples: Option<u64>,
}

impl Asked {
    /// Applies `limits` to `plan`: `max_memory_bytes` lowers the session's memory limit
    /// (the lower of it and the operator's wins); the others are returned, to be held
    /// while the session runs.
    pub fn apply(limits: Option<&ResourceLimits>, plan: &mut Plan, since: Instant) -> Asked {
        let Some(limits) = limits else {
            return Asked::default();
        };
        let given = |v: u64| (v > 0).then_some(v);
        if let Some(bytes) = given(limits.max_memory_bytes) {
            let session = &mut plan.config.session_memory_limit;
            *session = Some(session.map_or(bytes, |own| own.min(bytes)));
        }
        Asked {
            deadline: given(limits.max_timeout_ms)
                .map(|ms| (since + std::time::Duration::from_millis(ms), ms)),
            max_audio_samples: given(limits.max_audio_samples),
        }
    }

    /// Fails with `Error::Deadline` once the deadline has passed.
    pub fn check(&self) -> Result<()> {
        match self.deadline {
            Some((at, ms)) if Instant::now() >= at => Err(Error::Deadline { ms }),
            _ => Ok(()),
        }
    }
}

/// A started session with its share of the server's caps (given back after the
/// session is closed: the fields drop in this order).
pub struct Running {
    pub session: Arc<Session>,
    pub intake: Intake,
    ticket: Arc<Ticket>,
}

impl Running {
    /// The session's share of the caps, for a thread that holds the session past this
    /// `Running` (a stream's feeder): the server counts the session until it is gone
    /// too, and waits for it when it shuts down.
    pub fn ticket(&self) -> Arc<Ticket> {
        Arc::clone(&self.ticket)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Other threads may still hold the Arc: close now, not when the last one goes.
        self.session.close();
    }
}

/// Validates and plans `manifest` (its warnings logged), its payload cap lowered to
/// the server's.
pub fn plan(ctx: &Context, manifest: &PipelineManifest) -> Result<Plan> {
    let mut plan = plan_logged(&*ctx.planner, manifest)?;
    let channel = &mut plan.config.channel;
    channel.max_payload = channel.max_payload.min(ctx.admission.limits.max_payload);
    Ok(plan)
}

/// Admits `plan` under the caps and starts every node; `on_event` sees init progress.
/// Nothing is spawned unless it is within the caps.
pub fn start(
    ctx: &Context,
    plan: Plan,
    on_event: &mut dyn FnMut(Event) -> Result<()>,
    interrupt: Interrupt,
) -> Result<Running> {
    let intake = Intake {
        max_payload: plan.config.channel.max_payload,
        file_dirs: Arc::clone(&ctx.file_dirs),
        max_audio_samples: None,
    };
    let ticket = ctx
        .admission
        .admit(plan.graph.nodes.len(), plan.processes())?;
    let session = Session::start(plan.graph, &plan.config, on_event, interrupt)?;
    Ok(Running {
        session: Arc::new(session),
        intake,
        ticket: Arc::new(ticket),
    })
}

/// The session input a buffer keyed `key` goes to (`field` names the request field for
/// the error): the input labelled `key` (`node` or `node.port`); else, as
/// remotemedia-sdk's server routes, the pipeline's only input whatever the key (its
/// clients send the node id, `"input"`, a port name or nothing), or the one input whose
/// port is named `key` on a node with several.
fn input_index(graph: &Graph, key: &str, field: &str) -> Result<usize> {
    let labels: Vec<String> = graph
        .inputs
        .iter()
        .map(|p| graph.port_label(p, false))
        .collect();
    if let Some(index) = labels.iter().position(|label| label == key) {
        return Ok(index);
    }
    if labels.len() == 1 {
        return Ok(0);
    }
    let by_port: Vec<usize> = (0..graph.inputs.len())
        .filter(|&i| graph.inputs[i].port == key)
        .collect();
    if let [index] = by_port[..] {
        return Ok(index);
    }
    Err(Error::Manifest {
        path: field.to_owned(),
        message: format!(
            "'{key}' is not an input of the pipeline (inputs: {})",
            labels.join(", ")
        ),
    })
}

/// The session input for `buffer` keyed `key` ([`input_index`]), once the node there
/// is known to take its kind of frame ([`Graph::check_input`]).
pub fn route(graph: &Graph, key: &str, buffer: &DataBuffer, field: &str) -> Result<usize> {
    let index = input_index(graph, key, field)?;
    if let Some(kind) = frame_kind(buffer) {
        graph.check_input(index, kind, field)?;
    }
    Ok(index)
}

/// The kind of frame a DataBuffer becomes (None: no data, checked when it is converted).
fn frame_kind(buffer: &DataBuffer) -> Option<Kind> {
    Some(match buffer.data_type.as_ref()? {
        DataType::Audio(_) => Kind::Audio,
        DataType::Video(_) => Kind::Video,
        DataType::Tensor(_) | DataType::Numpy(_) => Kind::Tensor,
        DataType::Json(_) => Kind::Json,
        DataType::Text(_) => Kind::Text,
        DataType::Binary(_) | DataType::File(_) => Kind::Bytes,
        // Passed on by every node that does not take it.
        DataType::Control(_) => return None,
    })
}

/// Checks `buffer` and sends it into session input `index` as one frame (waiting while
/// the pipeline is behind).
pub fn send(
    session: &Session,
    index: usize,
    buffer: DataBuffer,
    sequence: u64,
    intake: &Intake,
    interrupt: Interrupt,
) -> Result<()> {
    check_samples(&buffer, intake.max_audio_samples, "data_chunk")?;
    // A client's CancelSpeculation overtakes what is in flight (the session cancels),
    // then reaches the nodes that take control messages, in order, as every control
    // message does.
    let cancels = matches!(
        &buffer.data_type,
        Some(DataType::Control(ControlMessage {
            message_type: Some(MessageType::CancelSpeculation(_)),
            ..
        }))
    );
    let (mut header, bytes) = into_frame(buffer, intake.max_payload, &intake.file_dirs)?;
    header.sequence = sequence;
    let guarded = || {
        session.check()?;
        interrupt()
    };
    let cancelled = if cancels {
        session.cancel(&guarded).map(drop)
    } else {
        Ok(())
    };
    cancelled
        .and_then(|()| session.input(index))
        .and_then(|input| input.send_copy(&[&header.to_bytes(), &bytes], None, &guarded))
        .map_err(|err| match err {
            // Closed because the stream is being stopped: no failure to explain.
            Error::Closed(_) if interrupt().is_err() => Error::Interrupted,
            Error::Closed(_) => session.explain_closed(err),
            err => err,
        })
}

/// Refuses an audio buffer of more than `max` samples (all channels), before any
/// frame is made of it; `field` names the input in the request.
pub fn check_samples(buffer: &DataBuffer, max: Option<u64>, field: &str) -> Result<()> {
    let (Some(max), Some(DataType::Audio(audio))) = (max, buffer.data_type.as_ref()) else {
        return Ok(());
    };
    let width = if audio.format == AudioFormat::I16 as i32 {
        2
    } else {
        4
    };
    let samples = audio.samples.len() as u64 / width;
    if samples > max {
        metrics::limit_hit("audio_samples");
        return Err(Error::ResourceLimit(format!(
            "{field}: an audio buffer of {samples} samples is more than the request's \
             resource_limits.max_audio_samples ({max})"
        )));
    }
    Ok(())
}

/// An output frame as (output label, DataBuffer).
pub fn output_buffer(
    session: &Session,
    output: usize,
    header: &Header,
    sample: &Sample,
) -> (String, DataBuffer) {
    let graph = &session.graph;
    let label = graph.port_label(&graph.outputs[output], true);
    (label, from_frame(header, payload(sample, header)))
}

/// What a client receives when a cancel reaches the session's outputs (see
/// `executor::cancel`): a `CancelSpeculation` under the first output's label, the
/// cancel's id in its metadata. A player stops what it plays.
pub fn cancel_buffer(session: &Session, id: u64) -> (String, DataBuffer) {
    let graph = &session.graph;
    let label = graph
        .outputs
        .first()
        .map_or_else(String::new, |port| graph.port_label(port, true));
    let message = ControlMessage {
        message_type: Some(MessageType::CancelSpeculation(CancelSpeculation::default())),
        metadata: format!("{{\"cancel_id\": \"{id:016x}\"}}"),
        ..ControlMessage::default()
    };
    let buffer = DataBuffer {
        data_type: Some(DataType::Control(message)),
        ..DataBuffer::default()
    };
    (label, buffer)
}
