//! `AudioFormatNode`: converts each audio frame's sample type (`target_format`: f32,
//! i16, i32 or f64) and channel layout (`channels`), keeping its rate and timestamp.
//!
//! Samples are scaled as fractions of full scale (see [`super::samples`]): int16 → float
//! divides by 32768, float → int16 multiplies, rounds and clips. `channels: 1` mixes
//! down by averaging the channels of each frame; mono input to N channels copies the one
//! channel to all N; equal to the input's channel count changes nothing. Other layouts
//! (5.1 → stereo, ...) need a mixing matrix this node does not guess, so they are frame
//! errors. A frame that needs no change is passed on byte for byte.

use serde::Deserialize;
use serde_json::{json, Value};

use super::params::{ranged, Params};
use super::samples::{read_f64, write_f64};
use super::{expect_audio, property, NativeNode, NodeInfo, OutFrame};
use crate::error::{Error, Result};
use crate::frame::{DType, Header, Kind};

pub const NODE_TYPE: &str = "AudioFormatNode";
const MAX_CHANNELS: u32 = 64;

const TARGET_FORMAT: &[&str] = &["target_format", "targetFormat", "format"];
const CHANNELS: &[&str] = &["channels"];

/// A sample type an audio frame may be converted to. Accepts the short names, numpy's
/// names and remotemedia-sdk's upper-case ones (`F32`, `I16`, `I32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SampleFormat {
    #[serde(rename = "f32", alias = "F32", alias = "float32")]
    F32,
    #[serde(rename = "i16", alias = "I16", alias = "int16")]
    I16,
    #[serde(rename = "i32", alias = "I32", alias = "int32")]
    I32,
    #[serde(rename = "f64", alias = "F64", alias = "float64")]
    F64,
}

impl SampleFormat {
    pub fn dtype(self) -> DType {
        match self {
            SampleFormat::F32 => DType::F32,
            SampleFormat::I16 => DType::I16,
            SampleFormat::I32 => DType::I32,
            SampleFormat::F64 => DType::F64,
        }
    }
}

pub fn info() -> NodeInfo {
    NodeInfo {
        node_type: NODE_TYPE,
        create: |params| Ok(Box::new(AudioFormat::from_params(params)?)),
        accepts: Some(&[Kind::Audio]),
        emits: Some(&[Kind::Audio]),
        description: "Converts audio between float32, int16, int32 and float64 (scaled to full \
                      scale, clipped on the way to integers) and mixes down to mono by \
                      averaging (or copies mono to N channels).",
        params_schema: json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "target_format": property(json!({
                    "type": "string",
                    "enum": ["f32", "i16", "i32", "f64"],
                    "description": "Sample type of the output (also float32, int16, int32, \
                                    float64, F32, I16, I32, F64). Omitted: the input's."
                }), &TARGET_FORMAT[1..]),
                "channels": property(json!({
                    "type": "integer", "minimum": 1, "maximum": MAX_CHANNELS,
                    "description": "Output channels: 1 averages all channels, the input's \
                                    count keeps them, N > 1 from mono copies. Omitted: the \
                                    input's."
                }), &[]),
            }
        }),
    }
}

#[derive(Debug)]
pub struct AudioFormat {
    target: Option<SampleFormat>,
    channels: Option<u32>,
    /// Scratch for decoded samples, kept between frames.
    scratch: Vec<f64>,
}

impl AudioFormat {
    pub fn new(target: Option<SampleFormat>, channels: Option<u32>) -> Self {
        AudioFormat {
            target,
            channels,
            scratch: Vec::new(),
        }
    }

    pub fn from_params(params: &Value) -> Result<Self> {
        let p = Params::new(NODE_TYPE, params, &[TARGET_FORMAT, CHANNELS])?;
        let target = p.get::<SampleFormat>(TARGET_FORMAT)?.map(|f| f.value);
        let channels = match p.get::<u32>(CHANNELS)? {
            Some(field) => {
                ranged(&field, 1, MAX_CHANNELS, "")?;
                Some(field.value)
            }
            None => None,
        };
        Ok(AudioFormat::new(target, channels))
    }
}

impl NativeNode for AudioFormat {
    fn node_type(&self) -> &'static str {
        NODE_TYPE
    }

    fn process(&mut self, header: &Header, payload: &[u8], out: &mut Vec<OutFrame>) -> Result<()> {
        expect_audio(NODE_TYPE, header, payload)?;
        let in_channels = header.channels;
        let out_channels = self.channels.unwrap_or(in_channels);
        let dtype = self.target.map_or(header.dtype, SampleFormat::dtype);
        if out_channels != in_channels && out_channels != 1 && in_channels != 1 {
            return Err(Error::Frame(format!(
                "{NODE_TYPE} mixes {in_channels} channels down to 1 or copies 1 channel to \
                 {out_channels}, not {in_channels} to {out_channels}"
            )));
        }
        let frames = header.dims()[0];
        let mut converted = Header::audio(dtype, frames, out_channels, header.sample_rate)?;
        converted.session_id = header.session_id;
        converted.timestamp_ns = header.timestamp_ns;
        converted.meta = header.meta.clone();
        if dtype == header.dtype && out_channels == in_channels {
            out.push(OutFrame {
                header: converted,
                payload: payload.to_vec(),
            });
            return Ok(());
        }

        self.scratch.clear();
        read_f64(header.dtype, payload, &mut self.scratch)?;
        let ch = in_channels as usize;
        let mixed: Vec<f64>;
        let samples: &[f64] = if out_channels == in_channels {
            &self.scratch
        } else if out_channels == 1 {
            mixed = self
                .scratch
                .chunks_exact(ch)
                .map(|frame| frame.iter().sum::<f64>() / ch as f64)
                .collect();
            &mixed
        } else {
            mixed = self
                .scratch
                .iter()
                .flat_map(|&s| std::iter::repeat_n(s, out_channels as usize))
                .collect();
            &mixed
        };
        let mut bytes = Vec::new();
        write_f64(dtype, samples, &mut bytes)?;
        out.push(OutFrame {
            header: converted,
            payload: bytes,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Kind;
    use crate::nodes::samples::read_f32;
    use serde_json::json;

    fn node(params: Value) -> AudioFormat {
        AudioFormat::from_params(&params).unwrap()
    }

    fn run(node: &mut AudioFormat, header: &Header, payload: &[u8]) -> OutFrame {
        let mut out = Vec::new();
        node.process(header, payload, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        out.pop().unwrap()
    }

    fn f32_frame(samples: &[f32], channels: u32) -> (Header, Vec<u8>) {
        let frames = (samples.len() / channels as usize) as u64;
        let mut header = Header::audio(DType::F32, frames, channels, 48_000).unwrap();
        header.timestamp_ns = 77;
        (header, crate::nodes::samples::f32_bytes(samples))
    }

    fn floats(frame: &OutFrame) -> Vec<f32> {
        let mut out = Vec::new();
        read_f32(frame.header.dtype, &frame.payload, &mut out).unwrap();
        out
    }

    #[test]
    fn f32_to_i16_and_back_is_within_half_a_step() {
        // A ramp over the whole range plus the clipping cases.
        let mut input: Vec<f32> = (0..=2000).map(|i| i as f32 / 1000.0 - 1.0).collect();
        input.extend([0.123_456_7, -0.000_01, 1.5, -1.5]);
        let (header, payload) = f32_frame(&input, 1);
        let to_i16 = run(
            &mut node(json!({"target_format": "i16"})),
            &header,
            &payload,
        );
        assert_eq!(to_i16.header.dtype, DType::I16);
        assert_eq!(to_i16.header.payload_len, 2 * input.len() as u64);
        assert_eq!(to_i16.header.timestamp_ns, 77);
        let back = run(
            &mut node(json!({"targetFormat": "float32"})),
            &to_i16.header,
            &to_i16.payload,
        );
        assert_eq!(back.header.dtype, DType::F32);
        let back = floats(&back);
        let step = 1.0 / 32_768.0;
        for (&x, &y) in input.iter().zip(&back) {
            let expected = x.clamp(-1.0, 1.0 - step);
            assert!(
                (expected - y).abs() <= step / 2.0 + 1e-7,
                "{x} came back as {y}"
            );
        }
        // Full scale clips to the largest int16 instead of wrapping.
        assert_eq!(back[2000], 1.0 - step);
        assert_eq!(back[back.len() - 2], 1.0 - step);
        assert_eq!(back[back.len() - 1], -1.0);
    }

    #[test]
    fn i32_round_trip_and_upper_case_names() {
        let (header, payload) = f32_frame(&[0.5, -0.25, 0.999], 1);
        let to_i32 = run(&mut node(json!({"format": "I32"})), &header, &payload);
        assert_eq!(to_i32.header.dtype, DType::I32);
        assert_eq!(to_i32.payload[..4], (1i32 << 30).to_le_bytes());
        let back = floats(&run(
            &mut node(json!({"format": "F32"})),
            &to_i32.header,
            &to_i32.payload,
        ));
        assert_eq!(back, [0.5, -0.25, 0.999]);
    }

    #[test]
    fn mix_down_averages_each_frame() {
        let (header, payload) = f32_frame(&[1.0, 0.0, 0.5, -0.5, -1.0, -0.5, 0.25, 0.75], 2);
        let mono = run(&mut node(json!({"channels": 1})), &header, &payload);
        assert_eq!(mono.header.channels, 1);
        assert_eq!(mono.header.dims(), [4]);
        assert_eq!(floats(&mono), [0.5, 0.0, -0.75, 0.5]);

        // Three int16 channels to one int16 channel: the average, rounded.
        let samples: [i16; 6] = [300, 600, 1200, -3, -3, -4];
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let header = Header::audio(DType::I16, 2, 3, 16_000).unwrap();
        let mono = run(&mut node(json!({"channels": 1})), &header, &bytes);
        assert_eq!(mono.header.dtype, DType::I16);
        let got: Vec<i16> = mono
            .payload
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(got, [700, -3]);
    }

    #[test]
    fn mono_is_copied_to_every_channel_and_same_layout_is_untouched() {
        let (header, payload) = f32_frame(&[0.1, 0.2], 1);
        let stereo = run(&mut node(json!({"channels": 2})), &header, &payload);
        assert_eq!(stereo.header.dims(), [2, 2]);
        assert_eq!(floats(&stereo), [0.1, 0.1, 0.2, 0.2]);

        let (header, payload) = f32_frame(&[0.1, 0.2, 0.3, 0.4], 2);
        let same = run(
            &mut node(json!({"channels": 2, "format": "f32"})),
            &header,
            &payload,
        );
        assert_eq!(same.header, header);
        assert_eq!(same.payload, payload);
    }

    #[test]
    fn unsupported_layouts_and_kinds_are_frame_errors() {
        let header = Header::audio(DType::F32, 1, 6, 48_000).unwrap();
        let err = node(json!({"channels": 2}))
            .process(&header, &[0; 24], &mut Vec::new())
            .unwrap_err();
        assert!(matches!(err, Error::Frame(_)));
        assert!(err.to_string().contains("not 6 to 2"), "{err}");

        let video = Header::video(crate::frame::PixelFormat::Gray, 2, 2).unwrap();
        let err = node(json!({}))
            .process(&video, &[0; 4], &mut Vec::new())
            .unwrap_err();
        assert!(err
            .to_string()
            .contains("AudioFormatNode takes audio frames"));

        let tensor = Header::new(Kind::Tensor, DType::F32, &[1]).unwrap();
        assert!(node(json!({}))
            .process(&tensor, &[0; 4], &mut Vec::new())
            .is_err());
    }

    #[test]
    fn bad_format_names_list_the_valid_ones() {
        let err = AudioFormat::from_params(&json!({"target_format": "u8"})).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("params.target_format: unknown variant `u8`"),
            "{text}"
        );
        for name in ["`f32`", "`i16`", "`i32`", "`f64`", "`float32`", "`I16`"] {
            assert!(text.contains(name), "{text}");
        }
    }
}
