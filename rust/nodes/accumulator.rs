//! `AudioBufferAccumulatorNode`: assembles the utterances a VAD marks into one audio frame
//! each, for a speech recognizer that wants whole utterances.
//!
//! It reads what the `SileroVADNode` emits on its one output (one channel, so in order):
//! audio between Json events `{"event": "speech_start"}` and `{"event": "speech_end"}`.
//! At `speech_end` it emits the utterance — the audio's bytes joined, in the input's
//! dtype, rate and channels — stamped with the event's timestamp (the end of speech),
//! unless it is shorter than `min_utterance_duration_ms`; `speech_start` and
//! `speech_discard` drop what is buffered. An utterance that reaches
//! `max_utterance_duration_ms` — or holds `buffer_size` samples (per channel; the
//! buffer size remotemedia-sdk manifests give the accumulator), whichever comes first —
//! is emitted at once and a new one begins; at the end of
//! the stream what is buffered is emitted (if long enough). Other Json is ignored.
//!
//! A `speech_pause` event (a VAD with `pause_events`: silence has begun, the utterance
//! may be over) emits the utterance so far as a *tentative* one — a Json
//! `{"event": "tentative"}` frame, then the audio — and keeps buffering: a speech
//! recognizer can start on it while the VAD waits to confirm the end. If the utterance
//! is then emitted (at `speech_end`, the maximum duration or the end of the stream) with
//! no `speech_resume` since, it is preceded by `{"event": "confirmed"}`: it is the
//! tentative one plus the silence after it.

use serde_json::{json, Value};

use super::params::{ranged, Params};
use super::{check_payload, expect_audio, property, NativeNode, NodeInfo, OutFrame};
use crate::error::{Error, Result};
use crate::frame::{DType, Header, Kind, Meta};

pub const NODE_TYPE: &str = "AudioBufferAccumulatorNode";
const DEFAULT_MIN_MS: u32 = 250;
const DEFAULT_MAX_MS: u32 = 30_000;
const LIMIT_MS: u32 = 3_600_000;

const MIN_MS: &[&str] = &["min_utterance_duration_ms", "minUtteranceDurationMs"];
const MAX_MS: &[&str] = &["max_utterance_duration_ms", "maxUtteranceDurationMs"];
const BUFFER_SIZE: &[&str] = &["buffer_size", "bufferSize"];
/// The largest `buffer_size`: an hour at 192 kHz.
const MAX_BUFFER_SIZE: u64 = 3600 * 192_000;

pub fn info() -> NodeInfo {
    NodeInfo {
        node_type: NODE_TYPE,
        create: |params| Ok(Box::new(AudioBufferAccumulator::from_params(params)?)),
        accepts: Some(&[Kind::Audio, Kind::Json]),
        emits: Some(&[Kind::Audio, Kind::Json]),
        description: "Audio between VAD speech_start/speech_end events -> one utterance frame \
                      each (stamped with the end of speech); at speech_pause, the utterance \
                      so far as a tentative one.",
        params_schema: json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "min_utterance_duration_ms": property(json!({
                    "type": "integer", "minimum": 0, "maximum": LIMIT_MS,
                    "default": DEFAULT_MIN_MS,
                    "description": "Shorter utterances are dropped."
                }), &MIN_MS[1..]),
                "max_utterance_duration_ms": property(json!({
                    "type": "integer", "minimum": 100, "maximum": LIMIT_MS,
                    "default": DEFAULT_MAX_MS,
                    "description": "An utterance this long is emitted without waiting for its end."
                }), &MAX_MS[1..]),
                "buffer_size": property(json!({
                    "type": "integer", "minimum": 1, "maximum": MAX_BUFFER_SIZE,
                    "description": "Samples (per channel) an utterance may hold: one that \
                                    reaches it is emitted at once, like \
                                    max_utterance_duration_ms (whichever comes first)."
                }), &BUFFER_SIZE[1..]),
            }
        }),
    }
}

/// The format of the audio being accumulated (from its first frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Format {
    dtype: DType,
    channels: u32,
    sample_rate: u32,
}

#[derive(Debug)]
pub struct AudioBufferAccumulator {
    min_ms: u32,
    max_ms: u32,
    /// `buffer_size`: the most samples (per channel) an utterance may hold.
    max_frames: Option<u64>,
    format: Option<Format>,
    bytes: Vec<u8>,
    frames: u64,
    session_id: u64,
    last_timestamp_ns: u64,
    /// A tentative utterance went out and no speech followed it yet.
    tentative: bool,
    /// The metadata block of the latest audio frame, for what is emitted from it.
    meta: Meta,
}

impl AudioBufferAccumulator {
    pub fn new(min_ms: u32, max_ms: u32) -> Self {
        AudioBufferAccumulator {
            min_ms,
            max_ms,
            max_frames: None,
            format: None,
            bytes: Vec::new(),
            frames: 0,
            session_id: 0,
            last_timestamp_ns: 0,
            tentative: false,
            meta: Meta::default(),
        }
    }

    pub fn from_params(params: &Value) -> Result<Self> {
        let p = Params::new(NODE_TYPE, params, &[MIN_MS, MAX_MS, BUFFER_SIZE])?;
        let min_ms = match p.get::<u32>(MIN_MS)? {
            Some(field) => {
                ranged(&field, 0, LIMIT_MS, " ms")?;
                field.value
            }
            None => DEFAULT_MIN_MS,
        };
        let max_ms = match p.get::<u32>(MAX_MS)? {
            Some(field) => {
                ranged(&field, 100, LIMIT_MS, " ms")?;
                field.value
            }
            None => DEFAULT_MAX_MS,
        };
        let max_frames = match p.get::<u64>(BUFFER_SIZE)? {
            Some(field) => {
                ranged(&field, 1, MAX_BUFFER_SIZE, " samples")?;
                Some(field.value)
            }
            None => None,
        };
        Ok(AudioBufferAccumulator {
            max_frames,
            ..AudioBufferAccumulator::new(min_ms, max_ms)
        })
    }

    /// Whether `frames` at the buffered rate last at least `ms`.
    fn lasts(&self, ms: u32) -> bool {
        let rate = self.format.map_or(0, |f| u64::from(f.sample_rate));
        self.frames * 1000 >= u64::from(ms) * rate
    }

    fn clear(&mut self) {
        self.tentative = false;
        self.format = None;
        self.bytes.clear();
        self.frames = 0;
    }

    /// The header of the buffered audio as one frame stamped `timestamp_ns`, if there
    /// is enough of it for an utterance.
    fn header(&self, timestamp_ns: u64) -> Result<Option<Header>> {
        let Some(format) = self
            .format
            .filter(|_| self.frames > 0 && self.lasts(self.min_ms))
        else {
            return Ok(None);
        };
        let mut header = Header::audio(
            format.dtype,
            self.frames,
            format.channels,
            format.sample_rate,
        )?;
        header.session_id = self.session_id;
        header.timestamp_ns = timestamp_ns;
        header.meta = self.meta.clone();
        Ok(Some(header))
    }

    /// Emits the buffered utterance (if long enough) stamped `timestamp_ns`, and clears.
    /// No speech since the last tentative utterance: it is that one plus silence, which
    /// the `confirmed` marker says.
    fn utterance(&mut self, timestamp_ns: u64, out: &mut Vec<OutFrame>) -> Result<()> {
        if let Some(header) = self.header(timestamp_ns)? {
            if self.tentative {
                out.push(self.marker("confirmed", timestamp_ns)?);
            }
            let payload = std::mem::take(&mut self.bytes);
            out.push(OutFrame { header, payload });
        }
        self.clear();
        Ok(())
    }

    /// Emits the marker and a copy of the utterance so far; buffering goes on.
    fn tentative(&mut self, timestamp_ns: u64, out: &mut Vec<OutFrame>) -> Result<()> {
        if let Some(header) = self.header(timestamp_ns)? {
            out.push(self.marker("tentative", timestamp_ns)?);
            let payload = self.bytes.clone();
            out.push(OutFrame { header, payload });
            self.tentative = true;
        }
        Ok(())
    }

    /// A Json `{"event": name}` frame.
    fn marker(&self, name: &str, timestamp_ns: u64) -> Result<OutFrame> {
        let payload = json!({ "event": name }).to_string().into_bytes();
        let mut header = Header::bytes_like(Kind::Json, payload.len() as u64)?;
        header.session_id = self.session_id;
        header.timestamp_ns = timestamp_ns;
        header.meta = self.meta.tags();
        Ok(OutFrame { header, payload })
    }

    fn event(&mut self, header: &Header, payload: &[u8], out: &mut Vec<OutFrame>) -> Result<()> {
        check_payload(NODE_TYPE, header, payload)?;
        let value: Value = serde_json::from_slice(payload).map_err(|e| {
            Error::Frame(format!("{NODE_TYPE}: a Json frame that is not JSON: {e}"))
        })?;
        match value.get("event").and_then(Value::as_str) {
            Some("speech_end") => self.utterance(header.timestamp_ns, out),
            Some("speech_pause") => self.tentative(header.timestamp_ns, out),
            Some("speech_resume") => {
                self.tentative = false;
                Ok(())
            }
            Some("speech_start" | "speech_discard") => {
                self.clear();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn audio(&mut self, header: &Header, payload: &[u8], out: &mut Vec<OutFrame>) -> Result<()> {
        expect_audio(NODE_TYPE, header, payload)?;
        let format = Format {
            dtype: header.dtype,
            channels: header.channels,
            sample_rate: header.sample_rate,
        };
        if self.format.is_some_and(|f| f != format) {
            return Err(Error::Frame(format!(
                "{NODE_TYPE}: the audio format changed within an utterance"
            )));
        }
        self.format = Some(format);
        self.session_id = header.session_id;
        self.last_timestamp_ns = header.timestamp_ns;
        // An utterance carries the metadata of its latest audio frame.
        self.meta = header.meta.clone();
        self.bytes.extend_from_slice(payload);
        self.frames += header.dims()[0];
        if self.lasts(self.max_ms) || self.max_frames.is_some_and(|n| self.frames >= n) {
            self.utterance(header.timestamp_ns, out)?;
        }
        Ok(())
    }
}

impl NativeNode for AudioBufferAccumulator {
    fn node_type(&self) -> &'static str {
        NODE_TYPE
    }

    fn process(&mut self, header: &Header, payload: &[u8], out: &mut Vec<OutFrame>) -> Result<()> {
        match header.kind {
            Kind::Json => self.event(header, payload, out),
            Kind::Audio => self.audio(header, payload, out),
            other => Err(Error::Frame(format!(
                "{NODE_TYPE} takes audio and VAD events (json), got a {other} frame"
            ))),
        }
    }

    fn flush(&mut self, out: &mut Vec<OutFrame>) -> Result<()> {
        let stamp = self.last_timestamp_ns;
        self.utterance(stamp, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FLAG_END_OF_STREAM;

    fn event(name: &str, timestamp_ns: u64) -> (Header, Vec<u8>) {
        let payload = json!({"event": name}).to_string().into_bytes();
        let mut header = Header::bytes_like(Kind::Json, payload.len() as u64).unwrap();
        header.timestamp_ns = timestamp_ns;
        (header, payload)
    }

    fn audio(value: f32, frames: u64) -> (Header, Vec<u8>) {
        let mut header = Header::audio(DType::F32, frames, 1, 16_000).unwrap();
        header.timestamp_ns = 7;
        header.session_id = 3;
        let payload = (0..frames).flat_map(|_| value.to_le_bytes()).collect();
        (header, payload)
    }

    fn feed(node: &mut AudioBufferAccumulator, frames: &[(Header, Vec<u8>)]) -> Vec<OutFrame> {
        let mut out = Vec::new();
        for (header, payload) in frames {
            node.handle(header, payload, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn an_utterance_is_the_audio_between_start_and_end() {
        let mut node = AudioBufferAccumulator::from_params(&json!({
            "minUtteranceDurationMs": 100, "max_utterance_duration_ms": 1000
        }))
        .unwrap();
        let out = feed(
            &mut node,
            &[
                audio(0.9, 800), // before speech_start: dropped
                event("speech_start", 1),
                audio(0.1, 800),
                audio(0.2, 800),
                event("noise", 2),
                event("speech_end", 123),
            ],
        );
        assert_eq!(out.len(), 1);
        let frame = &out[0];
        assert_eq!(frame.header.dims(), [1600]);
        assert_eq!(frame.header.timestamp_ns, 123);
        assert_eq!(frame.header.session_id, 3);
        assert_eq!(frame.header.dtype, DType::F32);
        assert_eq!(frame.payload.len(), 1600 * 4);
        assert_eq!(frame.payload[..4], 0.1f32.to_le_bytes());
        assert_eq!(frame.payload[6396..], 0.2f32.to_le_bytes());
    }

    #[test]
    fn buffer_size_caps_an_utterance_in_samples() {
        let mut node = AudioBufferAccumulator::from_params(&json!({
            "buffer_size": 2000, "min_utterance_duration_ms": 0
        }))
        .unwrap();
        let mut frames = vec![event("speech_start", 1)];
        frames.extend((0..5).map(|_| audio(0.5, 800)));
        frames.push(event("speech_end", 9));
        let out = feed(&mut node, &frames);
        // 2400 samples reach 2000: emitted; the last 1600 at speech_end.
        let sizes: Vec<u64> = out.iter().map(|f| f.header.dims()[0]).collect();
        assert_eq!(sizes, [2400, 1600]);
        let err = AudioBufferAccumulator::from_params(&json!({"bufferSize": 0})).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("params.bufferSize: 0 is out of range"));
    }

    #[test]
    fn short_discarded_and_overlong_utterances() {
        let mut node = AudioBufferAccumulator::new(100, 1000);
        // 50 ms: too short; a discarded one: nothing.
        let short = [
            event("speech_start", 1),
            audio(0.3, 800),
            event("speech_end", 2),
        ];
        assert!(feed(&mut node, &short).is_empty());
        let discarded = [
            event("speech_start", 1),
            audio(0.3, 4000),
            event("speech_discard", 2),
            event("speech_end", 3),
        ];
        assert!(feed(&mut node, &discarded).is_empty());
        // 1 s reached: emitted at once, stamped with the audio that completed it.
        let mut long = vec![event("speech_start", 1)];
        long.extend((0..20).map(|_| audio(0.4, 800)));
        let out = feed(&mut node, &long);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].header.dims(), [16_000]);
        // The end of the stream emits what is buffered.
        let mut eos = Header::bytes_like(Kind::Bytes, 0).unwrap();
        eos.flags = FLAG_END_OF_STREAM;
        let out = feed(&mut node, &[audio(0.5, 3200), (eos, Vec::new())]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].header.timestamp_ns, 7);
    }

    #[test]
    fn a_pause_emits_the_utterance_so_far_as_a_tentative_one() {
        let mut node = AudioBufferAccumulator::new(50, 10_000);
        let out = feed(
            &mut node,
            &[
                event("speech_start", 1),
                audio(0.1, 800),
                event("speech_pause", 5),
                audio(0.0, 800),
                event("speech_end", 5),
            ],
        );
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].payload, br#"{"event":"tentative"}"#);
        assert_eq!(out[2].payload, br#"{"event":"confirmed"}"#);
        assert!(out[0].header.kind == Kind::Json && out[2].header.kind == Kind::Json);
        let (tentative, last) = (&out[1], &out[3]);
        assert_eq!(tentative.header.dims(), [800]);
        assert_eq!(last.header.dims(), [1600]);
        assert_eq!(tentative.header.timestamp_ns, 5);
        assert_eq!(last.header.timestamp_ns, 5);
        assert_eq!(
            last.payload[..tentative.payload.len()],
            tentative.payload[..]
        );
        // Speech came back after the pause: the end confirms nothing.
        let out = feed(
            &mut node,
            &[
                event("speech_start", 1),
                audio(0.1, 800),
                event("speech_pause", 2),
                event("speech_resume", 3),
                audio(0.2, 800),
                event("speech_end", 4),
            ],
        );
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].header.dims(), [1600]);
        // The stream ending in the silence after a pause confirms it too.
        let mut eos = Header::bytes_like(Kind::Bytes, 0).unwrap();
        eos.flags = FLAG_END_OF_STREAM;
        let out = feed(
            &mut node,
            &[
                event("speech_start", 1),
                audio(0.1, 800),
                event("speech_pause", 2),
                audio(0.0, 800),
                (eos, Vec::new()),
            ],
        );
        assert_eq!(out.len(), 4);
        assert_eq!(out[2].payload, br#"{"event":"confirmed"}"#);
        // Too short for an utterance: no tentative one either.
        let out = feed(
            &mut node,
            &[
                event("speech_start", 1),
                audio(0.1, 400),
                event("speech_pause", 2),
            ],
        );
        assert!(out.is_empty());
    }

    #[test]
    fn wrong_frames_are_frame_errors() {
        let mut node = AudioBufferAccumulator::new(0, 1000);
        let text = Header::bytes_like(Kind::Text, 2).unwrap();
        let err = node.process(&text, b"hi", &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("takes audio and VAD events"),
            "{err}"
        );
        let json = Header::bytes_like(Kind::Json, 3).unwrap();
        let err = node.process(&json, b"{x:", &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::Frame(_)), "{err}");
        let (header, payload) = audio(0.1, 10);
        node.process(&header, &payload, &mut Vec::new()).unwrap();
        let stereo = Header::audio(DType::F32, 1, 2, 16_000).unwrap();
        let err = node.process(&stereo, &[0; 8], &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("format changed"), "{err}");
    }
}
