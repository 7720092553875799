//! What batch calls and streams share: planning and starting a session within the
//! server's caps, feeding it DataBuffers and reading its outputs back as DataBuffers.
//! Everything here blocks; it runs on the session's own threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::convert::{from_frame, into_frame};
use super::limits::{Admission, Ticket};
use super::plan::{plan_logged, Planner};
use super::proto::{DataBuffer, PipelineManifest};
use crate::error::{Error, Result};
use crate::executor::{Graph, Session};
use crate::frame::{payload, Header};
use crate::ipc::{Interrupt, Sample};
use crate::supervisor::Event;

/// What every call of the server shares.
pub struct Context {
    pub planner: Arc<dyn Planner>,
    pub admission: Arc<Admission>,
    /// Set when the server shuts down: every session stops.
    pub shutdown: AtomicBool,
}

impl Context {
    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
}

/// A started session with its share of the server's caps (given back after the
/// session is closed: the fields drop in this order).
pub struct Running {
    pub session: Arc<Session>,
    /// The largest payload a frame of this session may carry.
    pub max_payload: usize,
    /// The plan's warnings (already logged): for the client.
    pub warnings: Vec<String>,
    _ticket: Ticket,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Other threads may still hold the Arc: close now, not when the last one goes.
        self.session.close();
    }
}

/// Plans `manifest`, admits it under the caps and starts every node; `on_event` sees
/// init progress. Nothing is spawned unless the manifest is valid and within the caps.
pub fn start(
    ctx: &Context,
    manifest: &PipelineManifest,
    on_event: &mut dyn FnMut(Event) -> Result<()>,
    interrupt: Interrupt,
) -> Result<Running> {
    let mut plan = plan_logged(&*ctx.planner, manifest)?;
    let limits = &ctx.admission.limits;
    let channel = &mut plan.config.channel;
    channel.max_payload = channel.max_payload.min(limits.max_payload);
    let max_payload = channel.max_payload;
    let ticket = ctx.admission.admit(plan.processes())?;
    let session = Session::start(plan.graph, &plan.config, on_event, interrupt)?;
    Ok(Running {
        session: Arc::new(session),
        max_payload,
        warnings: plan.warnings,
        _ticket: ticket,
    })
}

/// The session input fed at node `node_id` (`field` names the request field for the
/// error); an empty id picks the only input.
pub fn input_index(graph: &Graph, node_id: &str, field: &str) -> Result<usize> {
    let labels: Vec<String> = graph
        .inputs
        .iter()
        .map(|p| graph.port_label(p, false))
        .collect();
    if node_id.is_empty() && labels.len() == 1 {
        return Ok(0);
    }
    labels
        .iter()
        .position(|label| label == node_id)
        .ok_or_else(|| Error::Manifest {
            path: field.to_owned(),
            message: format!(
                "'{node_id}' is not an input of the pipeline (inputs: {})",
                labels.join(", ")
            ),
        })
}

/// Checks `buffer` and sends it into session input `index` as one frame (waiting while
/// the pipeline is behind).
pub fn send(
    session: &Session,
    index: usize,
    buffer: DataBuffer,
    sequence: u64,
    max_payload: usize,
    interrupt: Interrupt,
) -> Result<()> {
    let (mut header, bytes) = into_frame(buffer, max_payload)?;
    header.sequence = sequence;
    let guarded = || {
        session.check()?;
        interrupt()
    };
    session
        .input(index)?
        .send_copy(&[&header.to_bytes(), &bytes], None, &guarded)
        .map_err(|err| match err {
            Error::Closed(_) => session.explain_closed(err),
            err => err,
        })
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
