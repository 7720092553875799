//! Native Rust nodes: the audio plumbing a pipeline needs between its models
//! (re-chunking, resampling, sample-format and channel conversion), run in the host
//! process instead of a Python process of their own.
//!
//! A native node sees exactly what a Python node sees: a validated frame header and its
//! payload bytes, which may be a slice of shared memory straight from a channel. What it
//! emits is a header and payload bytes in the same wire format, which the executor copies
//! into a loaned shared-memory slice. So a hop between a native and a Python node costs
//! no serialization, only the one copy into the outgoing slice.
//!
//! # How the host runs a node
//!
//! - [`create`] one node per pipeline node and session, from the node's manifest
//!   `params`; `Ok(None)` means the type is not native (look for it in the Python
//!   registry). Param errors are [`Error::Manifest`] with a path relative to the node
//!   (`params.chunk_size`): prefix it with the node's place (`nodes[2].`).
//! - For every data frame: [`NativeNode::handle`], then send every [`OutFrame`] it
//!   pushed, in order, on the node's output. `handle` is `process`, except for a
//!   control frame (a remotemedia `ControlMessage`: cancel a speculation, a deadline)
//!   given to a node that does not declare it takes them: it passes on unchanged, so a
//!   control message reaches every node downstream whatever sits between (the same
//!   rule as the Python node loop's). Output headers carry the session id and a
//!   timestamp derived from the input (0 when the input had none); `sequence` is left 0
//!   for the sending channel to number.
//! - On end of stream: [`NativeNode::flush`], send what it pushed, then forward the
//!   end-of-stream frame. A frame flagged end-of-stream handed to `process` is treated as
//!   that flush, so a host that passes everything through `process` is also right.
//!   After a flush a node is ready for a new stream.
//! - [`Error::Frame`] from `process` means this frame cannot be taken by this node (wrong
//!   kind, a format change mid-stream): apply the node's `on_error` policy. Nodes are
//!   `Send` but not `Sync`: drive each from one thread at a time.

mod accumulator;
mod chunker;
mod format;
mod params;
mod passthrough;
mod resample;
pub mod samples;

use std::sync::OnceLock;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::frame::{Header, Kind, FLAG_END_OF_STREAM};

pub use accumulator::AudioBufferAccumulator;
pub use chunker::AudioChunker;
pub use format::{AudioFormat, SampleFormat};
pub use passthrough::PassThrough;
pub use resample::{FastResample, Quality};

/// A frame a node emits: header and payload bytes (the executor copies them into shared
/// memory). `header.payload_len` always equals `payload.len()`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutFrame {
    pub header: Header,
    pub payload: Vec<u8>,
}

/// A node that runs in the host process. See the module docs for how the host drives it.
pub trait NativeNode: Send {
    /// The registered node type (`"AudioChunkerNode"`), for messages.
    fn node_type(&self) -> &'static str;

    /// Takes one input frame: its validated header and its payload bytes (e.g. straight
    /// from shared memory). Pushes zero or more frames to `out`.
    fn process(&mut self, header: &Header, payload: &[u8], out: &mut Vec<OutFrame>) -> Result<()>;

    /// End of stream: pushes what is buffered (the chunker's last partial chunk, the
    /// resampler's tail) and resets the node for a new stream.
    fn flush(&mut self, _out: &mut Vec<OutFrame>) -> Result<()> {
        Ok(())
    }

    /// A cancel reached the node (see `executor::cancel`): drop what it holds of the
    /// work in flight. The host then sends the marker on and drops the input frames
    /// the cancel covers. The default keeps its state (the chunker's partial chunk,
    /// the resampler's filter memory: a few milliseconds of audio).
    fn cancel(&mut self) {}

    /// What the host calls for every frame: [`process`](NativeNode::process), or a
    /// control frame passed on unchanged when the node does not take them (see the
    /// module docs). An end-of-stream marker is never data: it is the node's
    /// [`flush`](NativeNode::flush) (the executor's host never passes one, it flushes
    /// once every input has ended; a caller driving a node by hand may), so no node
    /// tests for it in `process`.
    fn handle(&mut self, header: &Header, payload: &[u8], out: &mut Vec<OutFrame>) -> Result<()> {
        if header.flags & FLAG_END_OF_STREAM != 0 {
            return self.flush(out);
        }
        if header.kind == Kind::Control && !takes_control(self.node_type()) {
            out.push(OutFrame {
                header: header.clone(),
                payload: payload.to_vec(),
            });
            return Ok(());
        }
        self.process(header, payload, out)
    }
}

/// Whether a node of `node_type` takes control frames itself (it declares them among
/// the kinds it accepts); others pass them on.
pub fn takes_control(node_type: &str) -> bool {
    port_kinds(node_type)
        .0
        .is_some_and(|kinds| kinds.contains(&Kind::Control))
}

/// A native node type: everything the host and the manifest validator know of it, in
/// one entry per type (each node's module builds its own).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node_type: &'static str,
    /// Builds a node from its manifest `params` (see [`create`]).
    pub create: fn(&Value) -> Result<Box<dyn NativeNode>>,
    /// The frame kinds the node takes and emits, where they are fixed (`None`: any
    /// kind, or the same as its input), so that the graph can refuse a knowable mismatch.
    pub accepts: Option<&'static [Kind]>,
    pub emits: Option<&'static [Kind]>,
    pub description: &'static str,
    /// JSON Schema of the node's `params` (snake_case names; the camelCase aliases are
    /// accepted too and listed under each property's `x-aliases`).
    pub params_schema: Value,
}

/// Every native node type.
pub fn registry() -> &'static [NodeInfo] {
    static REGISTRY: OnceLock<Vec<NodeInfo>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        vec![
            chunker::info(),
            resample::info(),
            format::info(),
            passthrough::info(),
            accumulator::info(),
        ]
    })
}

/// The registry entry of `node_type`, if it is native.
pub fn info(node_type: &str) -> Option<&'static NodeInfo> {
    registry().iter().find(|info| info.node_type == node_type)
}

/// Builds a node of `node_type` from its manifest `params` (a JSON object, or null for
/// none). `Ok(None)` when `node_type` is not a native type; `Err(Error::Manifest)` naming
/// the field (`params.target_rate`) when the params are invalid.
pub fn create(node_type: &str, params: &Value) -> Result<Option<Box<dyn NativeNode>>> {
    info(node_type)
        .map(|info| (info.create)(params))
        .transpose()
}

/// The frame kinds a native node takes and emits (see [`NodeInfo::accepts`]); `None`
/// for both when `node_type` is not native.
pub fn port_kinds(node_type: &str) -> (Option<&'static [Kind]>, Option<&'static [Kind]>) {
    info(node_type).map_or((None, None), |info| (info.accepts, info.emits))
}

/// Checks that a frame is audio whose payload is as long as its header says: what every
/// audio node needs before it reads a sample.
fn expect_audio(node_type: &str, header: &Header, payload: &[u8]) -> Result<()> {
    if header.kind != Kind::Audio {
        return Err(Error::Frame(format!(
            "{node_type} takes audio frames, got a {} frame",
            header.kind
        )));
    }
    check_payload(node_type, header, payload)?;
    header
        .validate()
        .map_err(|e| Error::Frame(format!("{node_type}: {e}")))
}

fn check_payload(node_type: &str, header: &Header, payload: &[u8]) -> Result<()> {
    if payload.len() as u64 != header.payload_len {
        return Err(Error::Frame(format!(
            "{node_type}: the header announces {} payload bytes, {} were given",
            header.payload_len,
            payload.len()
        )));
    }
    Ok(())
}

/// `base_ns` advanced by `frames` samples at `rate`; 0 stays 0 (no timestamp).
fn advance_ns(base_ns: u64, frames: u64, rate: u32) -> u64 {
    if base_ns == 0 || rate == 0 {
        return base_ns;
    }
    let offset = u128::from(frames) * 1_000_000_000 / u128::from(rate);
    base_ns.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
}

/// A schema property for a parameter, with its accepted aliases.
fn property(mut schema: Value, aliases: &[&str]) -> Value {
    if !aliases.is_empty() {
        schema["x-aliases"] = Value::from(aliases.to_vec());
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_registered_type_can_be_created_with_its_defaults() {
        let defaults = [
            ("AudioChunkerNode", json!({})),
            ("FastResampleNode", json!({"target_rate": 16_000})),
            ("AudioFormatNode", json!(null)),
            ("PassThrough", json!({})),
            ("AudioBufferAccumulatorNode", json!({})),
        ];
        assert_eq!(registry().len(), defaults.len());
        for (node_type, params) in defaults {
            let info = info(node_type).expect("registered");
            assert_eq!(info.params_schema["type"], "object");
            assert!(!info.description.is_empty());
            let node = create(node_type, &params).unwrap().expect("native");
            assert_eq!(node.node_type(), node_type);
        }
        assert!(create("WhisperNode", &json!({})).unwrap().is_none());
        assert!(info("WhisperNode").is_none());
    }

    #[test]
    fn params_errors_carry_the_field_path() {
        let cases = [
            (
                "AudioChunkerNode",
                json!({"chunk_size": 0}),
                "params.chunk_size",
            ),
            (
                "AudioChunkerNode",
                json!({"chunkSize": -3}),
                "params.chunkSize",
            ),
            ("AudioChunkerNode", json!({"size": 3}), "params.size"),
            ("FastResampleNode", json!({}), "params.target_rate"),
            (
                "FastResampleNode",
                json!({"targetRate": "fast"}),
                "params.targetRate",
            ),
            (
                "FastResampleNode",
                json!({"target_rate": 16_000, "quality": "ultra"}),
                "params.quality",
            ),
            (
                "FastResampleNode",
                json!({"target_rate": 16_000, "sourceRate": 0}),
                "params.sourceRate",
            ),
            (
                "AudioFormatNode",
                json!({"target_format": "u8"}),
                "params.target_format",
            ),
            ("AudioFormatNode", json!({"channels": 0}), "params.channels"),
            (
                "AudioFormatNode",
                json!({"format": "f32", "targetFormat": "i16"}),
                "params.format",
            ),
            ("PassThrough", json!({"anything": 1}), "params.anything"),
            (
                "AudioBufferAccumulatorNode",
                json!({"maxUtteranceDurationMs": 50}),
                "params.maxUtteranceDurationMs",
            ),
            ("PassThrough", json!("yes"), "params"),
        ];
        for (node_type, params, expected) in cases {
            match create(node_type, &params) {
                Err(Error::Manifest { path, message }) => {
                    assert_eq!(path, expected, "{node_type} {params}: {message}")
                }
                Err(other) => panic!("{node_type} {params}: not a manifest error: {other}"),
                Ok(_) => panic!("{node_type} {params}: accepted"),
            }
        }
    }

    /// One node of every native type, with params that make it emit at once.
    fn every_node() -> Vec<(&'static str, Box<dyn NativeNode>)> {
        [
            ("AudioChunkerNode", json!({"chunk_size": 160})),
            ("FastResampleNode", json!({"target_rate": 16_000})),
            ("AudioFormatNode", json!({"target_format": "i16"})),
            ("PassThrough", json!({})),
            (
                "AudioBufferAccumulatorNode",
                json!({"min_utterance_duration_ms": 0}),
            ),
        ]
        .into_iter()
        .map(|(node_type, params)| (node_type, create(node_type, &params).unwrap().unwrap()))
        .collect()
    }

    #[test]
    fn audio_nodes_keep_their_input_metadata() {
        let mut header = Header::audio(crate::frame::DType::F32, 480, 1, 48_000).unwrap();
        header.meta.metadata.insert("client".into(), "node".into());
        header.meta.metadata_json = Some(r#"{"speaker":"a"}"#.into());
        let payload = vec![0u8; 480 * 4];
        for (node_type, mut node) in every_node() {
            let mut out = Vec::new();
            node.process(&header, &payload, &mut out).unwrap();
            node.flush(&mut out).unwrap();
            assert!(!out.is_empty(), "{node_type}");
            for frame in &out {
                assert_eq!(frame.header.meta, header.meta, "{node_type}");
            }
        }
    }

    #[test]
    fn control_frames_pass_through_every_native_node_unchanged() {
        let message = br#"{"action":"cancel_speculation","from_timestamp":0,"to_timestamp":5}"#;
        let mut header = Header::bytes_like(Kind::Control, message.len() as u64).unwrap();
        header.meta.metadata.insert("segment".into(), "s1".into());
        for (node_type, mut node) in every_node() {
            let mut out = Vec::new();
            node.handle(&header, message, &mut out).unwrap();
            assert_eq!(out.len(), 1, "{node_type}");
            assert_eq!(out[0].header, header, "{node_type}");
            assert_eq!(out[0].payload, message, "{node_type}");
            // `process` itself refuses it where the node takes only audio.
            if node_type != "PassThrough" {
                assert!(node.process(&header, message, &mut Vec::new()).is_err());
            }
        }
    }

    #[test]
    fn advance_keeps_missing_timestamps_missing() {
        assert_eq!(advance_ns(0, 480, 48_000), 0);
        assert_eq!(advance_ns(1_000, 480, 48_000), 10_001_000);
    }
}
