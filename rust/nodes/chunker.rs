//! `AudioChunkerNode`: re-chunks audio into frames of exactly `chunk_size` samples per
//! channel (what a model with a fixed window needs: Silero VAD takes 512 at 16 kHz),
//! carrying the remainder of each input frame over to the next. (remotemedia-sdk's
//! chunker counts interleaved samples of all channels; for mono the two agree.)
//!
//! The chunker never looks at sample values: a chunk is `chunk_size × channels ×
//! itemsize` bytes of the input, so every audio dtype and channel count passes through
//! bit for bit, with the input's dtype, rate and channels. The stream's format is the
//! first frame's; a frame of another format before the end of stream is an error (a chunk
//! cannot mix two formats). At the end of stream the partial last chunk is emitted as a
//! shorter frame, or zero-padded to a full chunk with `pad_last`.

use serde_json::{json, Value};

use super::params::{ranged, Params};
use super::{advance_ns, expect_audio, property, NativeNode, NodeInfo, OutFrame};
use crate::error::{Error, Result};
use crate::frame::{DType, Header, Kind, Meta};

pub const NODE_TYPE: &str = "AudioChunkerNode";
/// remotemedia-sdk's default (Silero VAD's window at 16 kHz).
const DEFAULT_CHUNK_SIZE: u32 = 512;
const MAX_CHUNK_SIZE: u32 = 1 << 24;

const CHUNK_SIZE: &[&str] = &["chunk_size", "chunkSize"];
const PAD_LAST: &[&str] = &["pad_last", "padLast"];

pub fn info() -> NodeInfo {
    NodeInfo {
        node_type: NODE_TYPE,
        create: |params| Ok(Box::new(AudioChunker::from_params(params)?)),
        accepts: Some(&[Kind::Audio]),
        emits: Some(&[Kind::Audio]),
        description: "Re-chunks audio into frames of exactly chunk_size samples per channel, \
                      keeping dtype, rate and channels; the last partial chunk is emitted at \
                      end of stream (zero-padded with pad_last).",
        params_schema: json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "chunk_size": property(json!({
                    "type": "integer", "minimum": 1, "maximum": MAX_CHUNK_SIZE,
                    "default": DEFAULT_CHUNK_SIZE,
                    "description": "Samples per channel in every emitted frame."
                }), &CHUNK_SIZE[1..]),
                "pad_last": property(json!({
                    "type": "boolean", "default": false,
                    "description": "Pad the last partial chunk with zeros to a full chunk."
                }), &PAD_LAST[1..]),
            }
        }),
    }
}

/// The format a stream's chunks share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamFormat {
    dtype: DType,
    channels: u32,
    sample_rate: u32,
}

impl std::fmt::Display for StreamFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} × {} channel(s) at {} Hz",
            self.dtype, self.channels, self.sample_rate
        )
    }
}

#[derive(Debug)]
pub struct AudioChunker {
    chunk_size: u32,
    pad_last: bool,
    /// Set by the first frame of a stream.
    format: Option<StreamFormat>,
    /// The bytes of an incomplete chunk (always fewer than a chunk's worth).
    pending: Vec<u8>,
    session_id: u64,
    /// Timestamp of the first pending sample's frame, and how many samples of that frame
    /// precede the pending ones: the next chunk starts `base_ns + offset / rate`.
    base_ns: u64,
    base_offset: u64,
    /// The metadata block of the latest input frame, for the chunks made from it.
    meta: Meta,
}

impl AudioChunker {
    pub fn new(chunk_size: u32, pad_last: bool) -> Self {
        AudioChunker {
            chunk_size,
            pad_last,
            format: None,
            pending: Vec::new(),
            session_id: 0,
            base_ns: 0,
            base_offset: 0,
            meta: Meta::default(),
        }
    }

    pub fn from_params(params: &Value) -> Result<Self> {
        let p = Params::new(NODE_TYPE, params, &[CHUNK_SIZE, PAD_LAST])?;
        let chunk_size = match p.get::<u32>(CHUNK_SIZE)? {
            Some(field) => {
                ranged(&field, 1, MAX_CHUNK_SIZE, " samples")?;
                field.value
            }
            None => DEFAULT_CHUNK_SIZE,
        };
        let pad_last = p.get::<bool>(PAD_LAST)?.is_some_and(|f| f.value);
        Ok(AudioChunker::new(chunk_size, pad_last))
    }

    fn chunk_bytes(&self, format: StreamFormat) -> Result<usize> {
        usize::try_from(self.chunk_size)
            .ok()
            .and_then(|n| n.checked_mul(usize::try_from(format.channels).ok()?))
            .and_then(|n| n.checked_mul(format.dtype.itemsize()))
            .ok_or_else(|| {
                Error::Frame(format!(
                    "{NODE_TYPE}: a chunk of {} samples of {format} does not fit in memory",
                    self.chunk_size
                ))
            })
    }

    fn emit(
        &mut self,
        format: StreamFormat,
        bytes: Vec<u8>,
        out: &mut Vec<OutFrame>,
    ) -> Result<()> {
        let frame_bytes = format.channels as usize * format.dtype.itemsize();
        let frames = (bytes.len() / frame_bytes) as u64;
        let mut header = Header::audio(format.dtype, frames, format.channels, format.sample_rate)?;
        header.session_id = self.session_id;
        header.timestamp_ns = advance_ns(self.base_ns, self.base_offset, format.sample_rate);
        header.meta = self.meta.clone();
        self.base_offset += frames;
        out.push(OutFrame {
            header,
            payload: bytes,
        });
        Ok(())
    }
}

impl NativeNode for AudioChunker {
    fn node_type(&self) -> &'static str {
        NODE_TYPE
    }

    fn process(&mut self, header: &Header, payload: &[u8], out: &mut Vec<OutFrame>) -> Result<()> {
        expect_audio(NODE_TYPE, header, payload)?;
        let format = StreamFormat {
            dtype: header.dtype,
            channels: header.channels,
            sample_rate: header.sample_rate,
        };
        match self.format {
            None => self.format = Some(format),
            Some(current) if current != format => {
                return Err(Error::Frame(format!(
                    "{NODE_TYPE}: the stream is {current} but this frame is {format}; \
                     a stream keeps one format until its end"
                )))
            }
            Some(_) => {}
        }
        let chunk_bytes = self.chunk_bytes(format)?;
        self.session_id = header.session_id;
        // A chunk carries the metadata of the latest frame it holds bytes of.
        self.meta = header.meta.clone();
        if self.pending.is_empty() {
            self.base_ns = header.timestamp_ns;
            self.base_offset = 0;
        }

        let mut input = payload;
        if !self.pending.is_empty() {
            let take = (chunk_bytes - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() == chunk_bytes {
                let chunk = std::mem::take(&mut self.pending);
                self.emit(format, chunk, out)?;
            }
        }
        if self.pending.is_empty() && !input.is_empty() {
            // The rest of this frame starts a chunk: time it from this frame.
            self.base_ns = header.timestamp_ns;
            self.base_offset = (payload.len() - input.len()) as u64
                / (format.channels as usize * format.dtype.itemsize()) as u64;
        }
        while input.len() >= chunk_bytes {
            let (chunk, rest) = input.split_at(chunk_bytes);
            self.emit(format, chunk.to_vec(), out)?;
            input = rest;
        }
        self.pending.extend_from_slice(input);
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<OutFrame>) -> Result<()> {
        if let Some(format) = self.format.take() {
            if !self.pending.is_empty() {
                let mut chunk = std::mem::take(&mut self.pending);
                if self.pad_last {
                    chunk.resize(self.chunk_bytes(format)?, 0);
                }
                self.emit(format, chunk, out)?;
            }
        }
        *self = AudioChunker::new(self.chunk_size, self.pad_last);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Kind;

    /// An i16 stream whose samples count up from `start` (interleaved), so every sample
    /// says where it came from.
    fn counting(start: i16, frames: u64, channels: u32) -> (Header, Vec<u8>) {
        let header = Header::audio(DType::I16, frames, channels, 16_000).unwrap();
        let payload = (0..frames as i16 * channels as i16)
            .flat_map(|i| (start + i).to_le_bytes())
            .collect();
        (header, payload)
    }

    fn samples(frame: &OutFrame) -> Vec<i16> {
        frame
            .payload
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect()
    }

    #[test]
    fn odd_sizes_across_frames_keep_every_sample_in_order() {
        let mut node = AudioChunker::new(7, false);
        let mut out = Vec::new();
        let mut next = 0i16;
        let mut pushed = 0;
        for frames in [3u64, 11, 1, 0, 7, 20, 2] {
            let (header, payload) = counting(next, frames, 1);
            node.process(&header, &payload, &mut out).unwrap();
            next += frames as i16;
            pushed += frames;
        }
        assert_eq!(pushed, 44);
        assert_eq!(out.len(), 6, "44 samples = 6 chunks of 7 + 2");
        node.flush(&mut out).unwrap();
        assert_eq!(out.len(), 7);
        let all: Vec<i16> = out.iter().flat_map(samples).collect();
        assert_eq!(all, (0..44).collect::<Vec<i16>>());
        for frame in &out[..6] {
            assert_eq!(frame.header.dims(), [7]);
            assert_eq!(frame.header.payload_len, 14);
            frame.header.validate().unwrap();
        }
        assert_eq!(out[6].header.dims(), [2]);
    }

    #[test]
    fn multichannel_chunks_count_samples_per_channel() {
        let mut node = AudioChunker::new(5, false);
        let mut out = Vec::new();
        let (header, payload) = counting(0, 13, 3);
        node.process(&header, &payload, &mut out).unwrap();
        node.flush(&mut out).unwrap();
        let shapes: Vec<&[u64]> = out.iter().map(|f| f.header.dims()).collect();
        assert_eq!(shapes, [&[5, 3][..], &[5, 3], &[3, 3]]);
        for frame in &out {
            assert_eq!(frame.header.channels, 3);
            assert_eq!(frame.header.sample_rate, 16_000);
            assert_eq!(frame.header.dtype, DType::I16);
        }
        // Interleaving survives: chunk 2 starts at frame 5, i.e. sample 15.
        assert_eq!(samples(&out[1])[..3], [15, 16, 17]);
    }

    #[test]
    fn float_stereo_passes_bit_for_bit() {
        let mut node = AudioChunker::new(4, false);
        let header = Header::audio(DType::F32, 6, 2, 48_000).unwrap();
        let payload: Vec<u8> = (0..12)
            .flat_map(|i| (i as f32 * 0.1).to_le_bytes())
            .collect();
        let mut out = Vec::new();
        node.process(&header, &payload, &mut out).unwrap();
        node.process(&header, &payload, &mut out).unwrap();
        node.flush(&mut out).unwrap();
        assert_eq!(out.len(), 3);
        let joined: Vec<u8> = out.iter().flat_map(|f| f.payload.clone()).collect();
        assert_eq!(joined, [payload.clone(), payload].concat());
        assert!(out
            .iter()
            .all(|f| f.header.dtype == DType::F32 && f.header.channels == 2));
    }

    #[test]
    fn pad_last_fills_the_tail_with_silence() {
        let mut node = AudioChunker::new(4, true);
        let mut out = Vec::new();
        let (header, payload) = counting(1, 6, 1);
        node.process(&header, &payload, &mut out).unwrap();
        node.flush(&mut out).unwrap();
        assert_eq!(samples(&out[1]), [5, 6, 0, 0]);
        // Nothing pending: a flush emits nothing, and the node takes a new stream.
        node.flush(&mut out).unwrap();
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn timestamps_follow_the_samples() {
        let mut node = AudioChunker::new(160, false);
        let mut out = Vec::new();
        // Two 100-sample frames at 16 kHz, 6.25 ms apart.
        for (i, ts) in [1_000_000_000u64, 1_006_250_000].into_iter().enumerate() {
            let (mut header, payload) = counting(0, 100, 1);
            header.timestamp_ns = ts;
            header.session_id = 9;
            header.sequence = i as u64;
            node.process(&header, &payload, &mut out).unwrap();
        }
        node.flush(&mut out).unwrap();
        let stamps: Vec<u64> = out.iter().map(|f| f.header.timestamp_ns).collect();
        // Chunk 1 starts with frame 1; chunk 2 at sample 60 of frame 2 (+3.75 ms).
        assert_eq!(stamps, [1_000_000_000, 1_010_000_000]);
        assert!(out
            .iter()
            .all(|f| f.header.session_id == 9 && f.header.sequence == 0));
    }

    #[test]
    fn other_kinds_and_format_changes_are_frame_errors() {
        let mut node = AudioChunker::new(4, false);
        let text = Header::bytes_like(Kind::Text, 2).unwrap();
        let err = node.process(&text, b"hi", &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::Frame(_)));
        assert!(err
            .to_string()
            .contains("AudioChunkerNode takes audio frames, got a text frame"));

        let (header, payload) = counting(0, 3, 1);
        node.process(&header, &payload, &mut Vec::new()).unwrap();
        let stereo = Header::audio(DType::I16, 1, 2, 16_000).unwrap();
        let err = node.process(&stereo, &[0; 4], &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("keeps one format"), "{err}");

        let err = node
            .process(&header, &payload[..4], &mut Vec::new())
            .unwrap_err();
        assert!(err
            .to_string()
            .contains("announces 6 payload bytes, 4 were given"));
    }

    #[test]
    fn end_of_stream_frame_flushes() {
        let mut node = AudioChunker::new(4, false);
        let mut out = Vec::new();
        let (header, payload) = counting(0, 3, 1);
        node.process(&header, &payload, &mut out).unwrap();
        let mut eos = Header::bytes_like(Kind::Bytes, 0).unwrap();
        eos.flags = crate::frame::FLAG_END_OF_STREAM;
        node.handle(&eos, &[], &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].header.dims(), [3]);
    }
}
