//! `ExecutePipeline`: one session per call — every input in, end of stream, every
//! output back in one `ExecutionResult`.
//!
//! An output that yields several frames (a chunker, a generator node) is returned as
//! one buffer when all its frames are audio of the same format (concatenated in time);
//! otherwise its first frame is under the output's label and the next ones under
//! `label[1]`, `label[2]`, ...
//!
//! Outputs are keyed by label: the node id for a node's primary output. remotemedia-sdk's
//! server keys a pipeline's single output `"output"` while its own examples read the
//! node id, so a client that is not zerohop's gets a single output under both keys
//! (the payload twice in the reply; zerohop's client gets it once).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::plan::{warnings_header, WARNINGS_METADATA};
use super::proto::{
    data_buffer::DataType, execute_response::Outcome, DataBuffer, ExecuteRequest, ExecuteResponse,
    ExecutionMetrics, ExecutionResult, ExecutionStatus, NodeMetrics, NodeResult,
    NodeStatus as ProtoNodeStatus,
};
use super::run::{check_samples, output_buffer, plan, route, send, start, Asked, Context};
use super::status::{as_status, error_response, Dialect};
use crate::error::{Error, Result};
use crate::executor::{Interrupt, NodeStatus, Output};

/// Runs one batch request (blocking). `interrupt` fails once the caller went away.
/// The plan's warnings, if any, are in the response metadata `zerohop-warnings`.
pub fn execute(
    ctx: &Context,
    request: ExecuteRequest,
    interrupt: Interrupt,
) -> std::result::Result<tonic::Response<ExecuteResponse>, tonic::Status> {
    let manifest = request.manifest.clone();
    let dialect = Dialect::of(&request.client_version);
    let mut warnings = Vec::new();
    let outcome = match run(ctx, request, dialect, interrupt, &mut warnings) {
        Ok(result) => Outcome::Result(result),
        Err(err) => {
            if matches!(err, Error::Deadline { .. }) {
                crate::metrics::limit_hit("deadline");
            }
            if let Some(status) = as_status(&err) {
                return Err(status);
            }
            Outcome::Error(error_response(&err, manifest.as_ref(), dialect))
        }
    };
    let mut response = tonic::Response::new(ExecuteResponse {
        outcome: Some(outcome),
    });
    if let Some(value) = warnings_header(&warnings).and_then(|v| v.parse().ok()) {
        response.metadata_mut().insert(WARNINGS_METADATA, value);
    }
    Ok(response)
}

fn run(
    ctx: &Context,
    request: ExecuteRequest,
    dialect: Dialect,
    interrupt: Interrupt,
    warnings: &mut Vec<String>,
) -> Result<ExecutionResult> {
    let began = Instant::now();
    let manifest = request.manifest.as_ref().ok_or_else(|| Error::Manifest {
        path: "manifest".into(),
        message: "missing".into(),
    })?;
    let mut plan = plan(ctx, manifest)?;
    warnings.clone_from(&plan.warnings);
    let asked = Asked::apply(request.resource_limits.as_ref(), &mut plan, began);
    let interrupt = &|| {
        asked.check()?;
        interrupt()
    };
    // A run without input has nothing to do: remotemedia-sdk's server refuses it too.
    if request.data_inputs.is_empty() {
        return Err(Error::Manifest {
            path: "data_inputs".into(),
            message: "no input data provided".into(),
        });
    }
    // Every input is routed and checked before any node starts.
    let mut inputs = request
        .data_inputs
        .into_iter()
        .map(|(key, buffer)| {
            let field = format!("data_inputs[\"{key}\"]");
            check_samples(&buffer, asked.max_audio_samples, &field)?;
            Ok((route(&plan.graph, &key, &buffer, &field)?, key, buffer))
        })
        .collect::<Result<Vec<_>>>()?;
    inputs.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    // The inputs were checked against max_audio_samples above: no second check in send.
    let running = start(ctx, plan, &mut |_| Ok(()), interrupt)?;
    let session = &running.session;
    for (sequence, (index, _, buffer)) in inputs.into_iter().enumerate() {
        send(
            session,
            index,
            buffer,
            sequence as u64,
            &running.intake,
            interrupt,
        )?;
    }
    session.end_inputs(None, interrupt)?;
    let mut outputs: BTreeMap<String, Vec<DataBuffer>> = BTreeMap::new();
    loop {
        match session.recv(None, interrupt)? {
            Output::Frame {
                output,
                header,
                sample,
            } => {
                let (label, buffer) = output_buffer(session, output, &header, &sample);
                outputs.entry(label).or_default().push(buffer);
            }
            // The frames a node's cancel covered are dropped; a batch has no player.
            Output::Event(_) | Output::Cancel { .. } => {}
            // A node's failure report can trail the end of stream (it travels on the
            // control socket, after the frames): a run is complete only if none came.
            Output::End => {
                session.check()?;
                break;
            }
        }
    }
    let statuses = session.status();
    let mut data_type_breakdown = HashMap::new();
    let mut data_outputs = HashMap::new();
    for (label, buffers) in outputs {
        for buffer in &buffers {
            *data_type_breakdown.entry(kind(buffer).into()).or_insert(0) += 1;
        }
        merge(label, buffers, &mut data_outputs);
    }
    if !dialect.zerohop && data_outputs.len() == 1 {
        let only = data_outputs.values().next().cloned().expect("one output");
        data_outputs.entry("output".into()).or_insert(only);
    }
    Ok(ExecutionResult {
        data_outputs,
        metrics: Some(ExecutionMetrics {
            wall_time_ms: began.elapsed().as_secs_f64() * 1e3,
            node_metrics: statuses.iter().map(node_metrics).collect(),
            data_type_breakdown,
            ..ExecutionMetrics::default()
        }),
        node_results: session
            .graph
            .nodes
            .iter()
            .map(|node| NodeResult {
                node_id: node.id.clone(),
                status: ProtoNodeStatus::Success as i32,
                error: None,
                output_metadata: statuses
                    .iter()
                    .find(|s| s.node_id == node.id)
                    .map(|s| serde_json::json!({"frames_out": s.frames_out}).to_string())
                    .unwrap_or_default(),
            })
            .collect(),
        status: ExecutionStatus::Success as i32,
    })
}

pub(super) fn node_metrics(status: &NodeStatus) -> (String, NodeMetrics) {
    let custom = serde_json::json!({
        "pid": status.pid,
        "init_secs": status.init_secs,
        "frames_out": status.frames_out,
    });
    (
        status.node_id.clone(),
        NodeMetrics {
            execution_time_ms: 0.0,
            memory_bytes: status.rss_bytes.unwrap_or(0),
            items_processed: status.frames_in,
            custom_metrics: custom.to_string(),
        },
    )
}

pub(super) fn kind(buffer: &DataBuffer) -> &'static str {
    match &buffer.data_type {
        Some(DataType::Audio(_)) => "audio",
        Some(DataType::Video(_)) => "video",
        Some(DataType::Tensor(_)) => "tensor",
        Some(DataType::Json(_)) => "json",
        Some(DataType::Text(_)) => "text",
        Some(DataType::Binary(_)) => "binary",
        Some(DataType::Control(_)) => "control",
        Some(DataType::Numpy(_)) => "numpy",
        Some(DataType::File(_)) => "file",
        None => "empty",
    }
}

/// Puts one output's frames into `out` (see the module docs).
fn merge(label: String, buffers: Vec<DataBuffer>, out: &mut HashMap<String, DataBuffer>) {
    let audio: Option<Vec<_>> = buffers
        .iter()
        .map(|b| match &b.data_type {
            Some(DataType::Audio(a)) => Some(a),
            _ => None,
        })
        .collect();
    if let Some(parts) = audio.filter(|parts| parts.len() > 1) {
        let first = parts[0];
        let same = |a: &&super::proto::AudioBuffer| {
            (a.sample_rate, a.channels, a.format)
                == (first.sample_rate, first.channels, first.format)
        };
        if parts.iter().all(same) {
            let mut joined = first.clone();
            joined.samples = parts
                .iter()
                .flat_map(|a| a.samples.iter().copied())
                .collect();
            joined.num_samples = parts.iter().map(|a| a.num_samples).sum();
            out.insert(
                label,
                DataBuffer {
                    data_type: Some(DataType::Audio(joined)),
                    metadata: Default::default(),
                },
            );
            return;
        }
    }
    for (i, buffer) in buffers.into_iter().enumerate() {
        let key = if i == 0 {
            label.clone()
        } else {
            format!("{label}[{i}]")
        };
        out.insert(key, buffer);
    }
}
