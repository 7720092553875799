//! `FastResampleNode`: streaming sample-rate conversion with rubato's band-limited sinc
//! resampler ([`rubato::Async`] at a fixed ratio).
//!
//! The resampler keeps its state across frames, so a stream cut into frames of any size
//! gives the same output (to float rounding) as the whole signal at once. Each input
//! frame is resampled as soon as it arrives (rubato's chunk size is set to what the frame
//! has, at most 1024 frames per call), so the node adds no buffering latency beyond the
//! filter's own delay. That delay is trimmed from the start of the output and recovered
//! at end of stream by feeding silence: output sample `k` belongs to time
//! `k / target_rate` after the first input sample (to within a sample, as rubato reports
//! the delay in whole frames), timestamps line up with the input's, and the whole output
//! is `ceil(input × target / source)` frames long.
//!
//! Output is float32 with the input's channels (int16/int32/float64 input is converted
//! to full-scale floats first). Equal rates skip the resampler and only convert.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Indexing, Resampler, Resizable, SincInterpolationParameters,
    SincInterpolationType, WindowFunction,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::params::{invalid, ranged, Params};
use super::samples::{f32_bytes, read_f32};
use super::{advance_ns, expect_audio, property, NativeNode, NodeInfo, OutFrame};
use crate::error::{Error, Result};
use crate::frame::{DType, Header, Kind, Meta};

pub const NODE_TYPE: &str = "FastResampleNode";
pub const MIN_RATE: u32 = 1_000;
pub const MAX_RATE: u32 = 768_000;
const MAX_CHANNELS: u32 = 64;
/// Most input frames rubato takes per call; larger input frames take several calls.
const MAX_CHUNK: usize = 1024;

const SOURCE_RATE: &[&str] = &["source_rate", "sourceRate"];
/// `target_sample_rate` is the spelling remotemedia-sdk's manifests use.
const TARGET_RATE: &[&str] = &[
    "target_rate",
    "targetRate",
    "target_sample_rate",
    "targetSampleRate",
];
const QUALITY: &[&str] = &["quality"];
const CHANNELS: &[&str] = &["channels"];

/// Filter quality: longer sinc filters pass more of the band and reject aliases better
/// at more CPU per sample. Accepts remotemedia-sdk's `Low`/`Medium`/`High` too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Quality {
    /// 64-tap sinc, Hann² window, linear interpolation between 64 sub-sample phases.
    #[serde(rename = "low", alias = "Low")]
    Low,
    /// 128-tap sinc, Blackman² window, cubic interpolation between 128 phases.
    #[default]
    #[serde(rename = "medium", alias = "Medium")]
    Medium,
    /// 256-tap sinc, Blackman-Harris² window, cubic interpolation between 256 phases.
    #[serde(rename = "high", alias = "High")]
    High,
}

impl Quality {
    /// The rubato filter for this quality. The cutoff is left to rubato, which places it
    /// as close to Nyquist as the window's attenuation allows for the filter length.
    pub fn sinc_parameters(self) -> SincInterpolationParameters {
        let (len, window, interpolation) = match self {
            Quality::Low => (64, WindowFunction::Hann2, SincInterpolationType::Linear),
            Quality::Medium => (128, WindowFunction::Blackman2, SincInterpolationType::Cubic),
            Quality::High => (
                256,
                WindowFunction::BlackmanHarris2,
                SincInterpolationType::Cubic,
            ),
        };
        SincInterpolationParameters::new(len, window)
            .oversampling_factor(len)
            .interpolation(interpolation)
    }
}

pub fn info() -> NodeInfo {
    let rate = |description: &str| json!({"type": "integer", "minimum": MIN_RATE, "maximum": MAX_RATE, "description": description});
    NodeInfo {
        node_type: NODE_TYPE,
        create: |params| Ok(Box::new(FastResample::from_params(params)?)),
        accepts: Some(&[Kind::Audio]),
        emits: Some(&[Kind::Audio]),
        description: "Resamples audio to target_rate with a streaming band-limited sinc \
                      resampler (rubato); output is float32 with the input's channels.",
        params_schema: json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "source_rate": property(json!({
                    "oneOf": [rate("Input rate in Hz; frames at another rate are errors."),
                              {"const": "auto"}],
                    "description": "Input rate in Hz; omitted or \"auto\": the first frame's."
                }), &SOURCE_RATE[1..]),
                "target_rate": property(json!({
                    "oneOf": [rate("Output rate in Hz."), {"const": "auto"}],
                    "description": "Output rate in Hz; omitted or \"auto\": the input rate \
                                    the next node declares (negotiated when the pipeline is \
                                    planned)."
                }), &TARGET_RATE[1..]),
                "quality": property(json!({
                    "type": "string", "enum": ["low", "medium", "high"], "default": "medium",
                    "description": "Sinc filter length 64 / 128 / 256 taps (also Low, Medium, High)."
                }), &[]),
                "channels": property(json!({
                    "type": "integer", "minimum": 1, "maximum": MAX_CHANNELS,
                    "description": "Expected channel count; omitted: the first frame's."
                }), &[]),
            }
        }),
    }
}

#[derive(Debug)]
pub struct FastResample {
    source_rate: Option<u32>,
    target_rate: u32,
    quality: Quality,
    channels: Option<u32>,
    /// The stream in progress, started by its first frame.
    stream: Option<Stream>,
}

struct Stream {
    source_rate: u32,
    channels: usize,
    /// None when the rates are equal.
    resampler: Option<Async<f32>>,
    /// Output frames still to drop: the filter delay at the start of the stream.
    delay_left: usize,
    /// Scratch: the current input as interleaved floats, and rubato's output.
    input: Vec<f32>,
    output: Vec<f32>,
    frames_in: u64,
    frames_out: u64,
    /// Timestamp of the stream's first frame, and the session of the latest.
    base_ns: u64,
    session_id: u64,
    /// The metadata block of the latest input frame, for the output made from it.
    meta: Meta,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("source_rate", &self.source_rate)
            .field("channels", &self.channels)
            .field("resampling", &self.resampler.is_some())
            .field("frames_in", &self.frames_in)
            .field("frames_out", &self.frames_out)
            .finish_non_exhaustive()
    }
}

fn resample_error(e: impl std::fmt::Display) -> Error {
    Error::Frame(format!("{NODE_TYPE}: resampling failed: {e}"))
}

impl FastResample {
    /// `source_rate` None: take it from the first frame. `channels` None: likewise.
    pub fn new(
        source_rate: Option<u32>,
        target_rate: u32,
        quality: Quality,
        channels: Option<u32>,
    ) -> Self {
        FastResample {
            source_rate,
            target_rate,
            quality,
            channels,
            stream: None,
        }
    }

    pub fn from_params(params: &Value) -> Result<Self> {
        let p = Params::new(
            NODE_TYPE,
            params,
            &[SOURCE_RATE, TARGET_RATE, QUALITY, CHANNELS],
        )?;
        let source_rate = match p.raw(SOURCE_RATE) {
            Some((_, Value::String(text))) if text == "auto" => None,
            Some(_) => p.get::<u32>(SOURCE_RATE)?.map(|f| -> Result<u32> {
                ranged(&f, MIN_RATE, MAX_RATE, " Hz")?;
                Ok(f.value)
            }),
            None => None,
        }
        .transpose()?;
        if let Some((key, Value::String(text))) = p.raw(TARGET_RATE) {
            if text == "auto" {
                return Err(invalid(
                    key,
                    "must be a rate in Hz here: \"auto\" is negotiated with the next node \
                     when the pipeline is planned (Pipeline / manifest), not by the node",
                ));
            }
        }
        let target = p.get::<u32>(TARGET_RATE)?.ok_or_else(|| {
            invalid(
                TARGET_RATE[0],
                format!("{NODE_TYPE} needs the output rate in Hz"),
            )
        })?;
        ranged(&target, MIN_RATE, MAX_RATE, " Hz")?;
        let quality = p
            .get::<Quality>(QUALITY)?
            .map(|f| f.value)
            .unwrap_or_default();
        let channels = match p.get::<u32>(CHANNELS)? {
            Some(field) => {
                ranged(&field, 1, MAX_CHANNELS, "")?;
                Some(field.value)
            }
            None => None,
        };
        Ok(FastResample::new(
            source_rate,
            target.value,
            quality,
            channels,
        ))
    }

    /// Starts a stream with the format of its first frame.
    fn start(&self, header: &Header) -> Result<Stream> {
        let rate = header.sample_rate;
        if let Some(expected) = self.source_rate {
            if rate != expected {
                return Err(Error::Frame(format!(
                    "{NODE_TYPE}: the frame is at {rate} Hz but source_rate is {expected} Hz"
                )));
            }
        }
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(Error::Frame(format!(
                "{NODE_TYPE}: the frame's rate {rate} Hz is outside {MIN_RATE} to {MAX_RATE} Hz"
            )));
        }
        if let Some(expected) = self.channels {
            if header.channels != expected {
                return Err(Error::Frame(format!(
                    "{NODE_TYPE}: the frame has {} channel(s) but channels is {expected}",
                    header.channels
                )));
            }
        }
        let channels = header.channels as usize;
        let resampler = if rate == self.target_rate {
            None
        } else {
            let ratio = f64::from(self.target_rate) / f64::from(rate);
            Some(
                Async::<f32>::new_sinc(
                    ratio,
                    1.0,
                    &self.quality.sinc_parameters(),
                    MAX_CHUNK,
                    channels,
                    FixedAsync::Input,
                )
                .map_err(resample_error)?,
            )
        };
        let (delay_left, output) = match &resampler {
            Some(r) => (
                r.output_delay(),
                vec![0.0; r.output_frames_max() * channels],
            ),
            None => (0, Vec::new()),
        };
        Ok(Stream {
            source_rate: rate,
            channels,
            resampler,
            delay_left,
            input: Vec::new(),
            output,
            frames_in: 0,
            frames_out: 0,
            base_ns: header.timestamp_ns,
            session_id: header.session_id,
            meta: header.meta.clone(),
        })
    }
}

impl Stream {
    fn check(&self, header: &Header) -> Result<()> {
        if header.sample_rate != self.source_rate || header.channels as usize != self.channels {
            return Err(Error::Frame(format!(
                "{NODE_TYPE}: the stream is {} channel(s) at {} Hz but this frame is {} at {} Hz; \
                 a stream keeps one format until its end",
                self.channels, self.source_rate, header.channels, header.sample_rate
            )));
        }
        Ok(())
    }

    /// Resamples the first `frames` frames of `self.input`, or (`frames` None) one chunk
    /// of silence to push the filter's tail out.
    fn run(&mut self, frames: Option<usize>, produced: &mut Vec<f32>) -> Result<()> {
        let ch = self.channels;
        let out_frames = self.output.len() / ch;
        let Some(resampler) = self.resampler.as_mut() else {
            produced.extend_from_slice(&self.input);
            return Ok(());
        };
        let Some(frames) = frames else {
            if resampler.input_frames_next() != MAX_CHUNK {
                resampler
                    .set_chunk_size(MAX_CHUNK)
                    .map_err(resample_error)?;
            }
            let silence = InterleavedSlice::new(&[][..], ch, 0).map_err(resample_error)?;
            let mut output = InterleavedSlice::new_mut(&mut self.output[..], ch, out_frames)
                .map_err(resample_error)?;
            let (_, written) = resampler
                .process_into_buffer(&silence, &mut output, Some(&Indexing::new().partial_len(0)))
                .map_err(resample_error)?;
            keep(&self.output, ch, written, &mut self.delay_left, produced);
            return Ok(());
        };
        let mut offset = 0;
        while offset < frames {
            let n = (frames - offset).min(MAX_CHUNK);
            if resampler.input_frames_next() != n {
                resampler.set_chunk_size(n).map_err(resample_error)?;
            }
            let input =
                InterleavedSlice::new(&self.input[..], ch, frames).map_err(resample_error)?;
            let mut output = InterleavedSlice::new_mut(&mut self.output[..], ch, out_frames)
                .map_err(resample_error)?;
            let (consumed, written) = resampler
                .process_into_buffer(
                    &input,
                    &mut output,
                    Some(&Indexing::new().input_offset(offset)),
                )
                .map_err(resample_error)?;
            offset += consumed;
            keep(&self.output, ch, written, &mut self.delay_left, produced);
        }
        Ok(())
    }

    fn emit(&mut self, target_rate: u32, samples: &[f32], out: &mut Vec<OutFrame>) -> Result<()> {
        let frames = (samples.len() / self.channels) as u64;
        if frames == 0 {
            return Ok(());
        }
        let mut header = Header::audio(DType::F32, frames, self.channels as u32, target_rate)?;
        header.session_id = self.session_id;
        header.timestamp_ns = advance_ns(self.base_ns, self.frames_out, target_rate);
        header.meta = self.meta.clone();
        self.frames_out += frames;
        out.push(OutFrame {
            header,
            payload: f32_bytes(samples),
        });
        Ok(())
    }
}

/// Moves the first `written` frames of rubato's `output` to `produced`, dropping what is
/// left of the start-up delay.
fn keep(
    output: &[f32],
    ch: usize,
    written: usize,
    delay_left: &mut usize,
    produced: &mut Vec<f32>,
) {
    let skip = written.min(*delay_left);
    *delay_left -= skip;
    produced.extend_from_slice(&output[skip * ch..written * ch]);
}

impl NativeNode for FastResample {
    fn node_type(&self) -> &'static str {
        NODE_TYPE
    }

    fn process(&mut self, header: &Header, payload: &[u8], out: &mut Vec<OutFrame>) -> Result<()> {
        expect_audio(NODE_TYPE, header, payload)?;
        if self.stream.is_none() {
            self.stream = Some(self.start(header)?);
        }
        let target_rate = self.target_rate;
        let stream = self.stream.as_mut().expect("started above");
        stream.check(header)?;
        stream.session_id = header.session_id;
        // Output carries the metadata of the latest input frame.
        stream.meta = header.meta.clone();
        stream.input.clear();
        read_f32(header.dtype, payload, &mut stream.input)?;
        let frames = stream.input.len() / stream.channels;
        let mut produced = Vec::new();
        stream.run(Some(frames), &mut produced)?;
        stream.frames_in += frames as u64;
        stream.emit(target_rate, &produced, out)
    }

    fn flush(&mut self, out: &mut Vec<OutFrame>) -> Result<()> {
        let Some(mut stream) = self.stream.take() else {
            return Ok(());
        };
        if stream.resampler.is_none() {
            return Ok(());
        }
        let expected = (u128::from(stream.frames_in) * u128::from(self.target_rate))
            .div_ceil(u128::from(stream.source_rate)) as u64;
        let ch = stream.channels;
        let mut produced = Vec::new();
        // Each pump yields about MAX_CHUNK × ratio frames; the tail is the filter delay
        // plus less than a chunk, so a few pumps do. The bound only guards against a loop.
        for _ in 0..1_000 {
            if stream.frames_out + (produced.len() / ch) as u64 >= expected {
                break;
            }
            stream.run(None, &mut produced)?;
        }
        let wanted = expected.saturating_sub(stream.frames_out) as usize;
        produced.truncate(wanted * ch);
        stream.emit(self.target_rate, &produced, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::f64::consts::PI;

    /// A float32 sine of `freq` Hz and amplitude `amp` at `rate`, `channels` copies with
    /// channel `c` at `freq × (c + 1)`.
    fn sine(freq: f64, amp: f64, rate: u32, frames: usize, channels: usize) -> Vec<f32> {
        (0..frames)
            .flat_map(|i| {
                (0..channels).map(move |c| {
                    let f = freq * (c + 1) as f64;
                    (amp * (2.0 * PI * f * i as f64 / f64::from(rate)).sin()) as f32
                })
            })
            .collect()
    }

    /// Runs `samples` through `node` in frames of the given sizes (cycled), then flushes.
    fn stream(
        node: &mut FastResample,
        dtype: DType,
        samples: &[f32],
        channels: u32,
        rate: u32,
        sizes: &[usize],
    ) -> Vec<OutFrame> {
        let ch = channels as usize;
        let mut out = Vec::new();
        let mut at = 0;
        for &size in sizes.iter().cycle() {
            if at >= samples.len() / ch {
                break;
            }
            let n = size.min(samples.len() / ch - at);
            let chunk: Vec<f64> = samples[at * ch..(at + n) * ch]
                .iter()
                .map(|&s| f64::from(s))
                .collect();
            let mut payload = Vec::new();
            crate::nodes::samples::write_f64(dtype, &chunk, &mut payload).unwrap();
            let header = Header::audio(dtype, n as u64, channels, rate).unwrap();
            node.process(&header, &payload, &mut out).unwrap();
            at += n;
        }
        node.flush(&mut out).unwrap();
        out
    }

    /// Channel `c` of the output, as f64.
    fn channel(frames: &[OutFrame], c: usize) -> Vec<f64> {
        let mut all = Vec::new();
        for frame in frames {
            assert_eq!(frame.header.dtype, DType::F32);
            frame.header.validate().unwrap();
            read_f32(DType::F32, &frame.payload, &mut all).unwrap();
        }
        let ch = frames[0].header.channels as usize;
        all.iter()
            .skip(c)
            .step_by(ch)
            .map(|&s| f64::from(s))
            .collect()
    }

    /// Frequency from rising zero crossings (linearly interpolated) over the middle 80%.
    fn frequency(signal: &[f64], rate: u32) -> f64 {
        let (from, to) = (signal.len() / 10, signal.len() * 9 / 10);
        let crossings: Vec<f64> = (from..to)
            .filter(|&i| signal[i] <= 0.0 && signal[i + 1] > 0.0)
            .map(|i| i as f64 + signal[i] / (signal[i] - signal[i + 1]))
            .collect();
        let periods = (crossings.len() - 1) as f64;
        periods * f64::from(rate) / (crossings[crossings.len() - 1] - crossings[0])
    }

    /// Least-squares fit of `a sin + b cos` at `freq` over the middle 80%: the fitted
    /// amplitude and the RMS of what the fit leaves (noise, distortion, aliases).
    fn fit(signal: &[f64], rate: u32, freq: f64) -> (f64, f64) {
        let (amplitude, _, residual) = fit_phase(signal, rate, freq);
        (amplitude, residual)
    }

    /// [`fit`], with the phase of the fitted sine (0 for `sin(2π f t)`) in radians.
    fn fit_phase(signal: &[f64], rate: u32, freq: f64) -> (f64, f64, f64) {
        let w = 2.0 * PI * freq / f64::from(rate);
        let range = signal.len() / 10..signal.len() * 9 / 10;
        let (mut ss, mut sc, mut cc, mut ys, mut yc) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for i in range.clone() {
            let (s, c) = (w * i as f64).sin_cos();
            ss += s * s;
            sc += s * c;
            cc += c * c;
            ys += signal[i] * s;
            yc += signal[i] * c;
        }
        let det = ss * cc - sc * sc;
        let a = (ys * cc - yc * sc) / det;
        let b = (yc * ss - ys * sc) / det;
        let residual: f64 = range
            .clone()
            .map(|i| {
                let (s, c) = (w * i as f64).sin_cos();
                (signal[i] - a * s - b * c).powi(2)
            })
            .sum::<f64>()
            / range.len() as f64;
        (a.hypot(b), b.atan2(a), residual.sqrt())
    }

    const ODD_SIZES: &[usize] = &[480, 333, 1, 1024, 2_000, 7, 4_096];

    #[test]
    fn a_sine_keeps_its_frequency_48k_to_16k() {
        for quality in [Quality::Low, Quality::Medium, Quality::High] {
            let input = sine(440.0, 0.5, 48_000, 48_000, 1);
            let mut node = FastResample::new(Some(48_000), 16_000, quality, None);
            let out = stream(&mut node, DType::F32, &input, 1, 48_000, ODD_SIZES);
            assert!(out.iter().all(|f| f.header.sample_rate == 16_000));
            let mono = channel(&out, 0);
            assert_eq!(mono.len(), 16_000, "{quality:?}: length");
            let f = frequency(&mono, 16_000);
            let (amp, phase, residual) = fit_phase(&mono, 16_000, 440.0);
            // The filter delay is trimmed: output sample k is input time k / 16 kHz, to
            // within the sub-sample part of the delay.
            let shift = phase / (2.0 * PI * 440.0) * 16_000.0;
            eprintln!(
                "48k→16k {quality:?}: {f:.6} Hz, amplitude {amp:.5}, residual {residual:.2e}, \
                 shift {shift:.3} samples"
            );
            assert!(
                shift.abs() < 1.0,
                "{quality:?}: output shifted by {shift} samples"
            );
            assert!((f - 440.0).abs() < 0.01, "{quality:?}: {f} Hz");
            assert!((amp - 0.5).abs() < 0.001, "{quality:?}: amplitude {amp}");
            assert!(residual < 1e-6, "{quality:?}: residual {residual}");
        }
    }

    #[test]
    fn a_sine_keeps_its_frequency_16k_to_22050_from_int16_stereo() {
        let input = sine(440.0, 0.5, 16_000, 16_000, 2); // left 440 Hz, right 880 Hz
        let mut node = FastResample::from_params(&json!({
            "sourceRate": 16_000, "targetRate": 22_050, "quality": "High", "channels": 2
        }))
        .unwrap();
        let out = stream(&mut node, DType::I16, &input, 2, 16_000, &[320, 97, 1_600]);
        assert!(out
            .iter()
            .all(|f| f.header.channels == 2 && f.header.dims()[1] == 2));
        for (c, freq) in [(0, 440.0), (1, 880.0)] {
            let signal = channel(&out, c);
            assert_eq!(signal.len(), 22_050);
            let f = frequency(&signal, 22_050);
            let (amp, residual) = fit(&signal, 22_050, freq);
            eprintln!(
                "16k→22.05k channel {c}: {f:.6} Hz, amplitude {amp:.5}, residual {residual:.2e}"
            );
            assert!((f - freq).abs() < 0.01, "channel {c}: {f} Hz");
            assert!((amp - 0.5).abs() < 0.001, "channel {c}: amplitude {amp}");
            // int16 input: what is left is its quantisation noise (1/32768/√12 ≈ 9e-6 RMS).
            assert!(residual < 5e-5, "channel {c}: residual {residual}");
        }
    }

    #[test]
    fn tones_above_the_new_nyquist_are_filtered_out() {
        // 10 kHz cannot exist at 16 kHz (Nyquist 8 kHz): what comes out is aliasing.
        for (quality, limit) in [
            (Quality::Low, 2e-4),
            (Quality::Medium, 2e-6),
            (Quality::High, 5e-7),
        ] {
            let input = sine(10_000.0, 0.5, 48_000, 24_000, 1);
            let mut node = FastResample::new(None, 16_000, quality, None);
            let out = channel(&stream(&mut node, DType::F32, &input, 1, 48_000, &[960]), 0);
            let middle = &out[out.len() / 10..out.len() * 9 / 10];
            let rms = (middle.iter().map(|s| s * s).sum::<f64>() / middle.len() as f64).sqrt();
            eprintln!("10 kHz into 16 kHz {quality:?}: RMS {rms:.2e} (input 0.354)");
            assert!(rms < limit, "{quality:?}: alias RMS {rms}");
        }
    }

    #[test]
    fn longer_filters_keep_more_of_the_band() {
        // Gain of a tone at 6 kHz and 7 kHz (75% and 87.5% of the new Nyquist).
        let gain = |quality, freq| {
            let input = sine(freq, 0.5, 48_000, 24_000, 1);
            let mut node = FastResample::new(None, 16_000, quality, None);
            let out = channel(&stream(&mut node, DType::F32, &input, 1, 48_000, &[960]), 0);
            let (amp, _) = fit(&out, 16_000, freq);
            amp / 0.5
        };
        let at_6k = [Quality::Low, Quality::Medium, Quality::High].map(|q| gain(q, 6_000.0));
        let at_7k = [Quality::Low, Quality::Medium, Quality::High].map(|q| gain(q, 7_000.0));
        eprintln!("gain at 6 kHz (low, medium, high): {at_6k:.4?}; at 7 kHz: {at_7k:.4?}");
        assert!(
            at_6k[0] > 0.95 && at_6k[1] > 0.995 && at_6k[2] > 0.999,
            "{at_6k:?}"
        );
        assert!(
            at_7k[0] < at_7k[1] && at_7k[1] < at_7k[2] && at_7k[2] > 0.97,
            "{at_7k:?}"
        );
    }

    #[test]
    fn frame_sizes_do_not_change_the_output() {
        let input = sine(1_000.0, 0.8, 44_100, 10_000, 1);
        let run = |sizes: &[usize]| {
            let mut node = FastResample::new(None, 16_000, Quality::Medium, None);
            channel(&stream(&mut node, DType::F32, &input, 1, 44_100, sizes), 0)
        };
        let whole = run(&[10_000]);
        let pieces = run(&[1, 2, 3, 500, 77, 1_025]);
        assert_eq!(whole.len(), 3_629); // ceil(10000 × 16000 / 44100)
        assert_eq!(whole.len(), pieces.len());
        let worst = whole
            .iter()
            .zip(&pieces)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-5, "largest difference {worst}");
    }

    #[test]
    fn equal_rates_only_convert_to_float() {
        let mut node = FastResample::new(None, 16_000, Quality::Low, None);
        let header = Header::audio(DType::I16, 2, 1, 16_000).unwrap();
        let payload: Vec<u8> = [16_384i16, -32_768]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let mut out = Vec::new();
        node.process(&header, &payload, &mut out).unwrap();
        node.flush(&mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(channel(&out, 0), [0.5, -1.0]);
    }

    #[test]
    fn timestamps_follow_the_output_samples() {
        let mut node = FastResample::new(None, 8_000, Quality::Low, None);
        let mut out = Vec::new();
        for i in 0..5u64 {
            let mut header = Header::audio(DType::F32, 1_600, 1, 16_000).unwrap();
            header.timestamp_ns = 5_000_000_000 + i * 100_000_000;
            header.session_id = 3;
            node.process(&header, &[0; 6_400], &mut out).unwrap();
        }
        node.flush(&mut out).unwrap();
        let mut frames_before = 0u64;
        for frame in &out {
            assert_eq!(frame.header.session_id, 3);
            assert_eq!(
                frame.header.timestamp_ns,
                5_000_000_000 + frames_before * 1_000_000_000 / 8_000
            );
            frames_before += frame.header.dims()[0];
        }
        assert_eq!(frames_before, 4_000);
    }

    #[test]
    fn frames_that_do_not_fit_the_stream_are_frame_errors() {
        let mut node = FastResample::new(Some(48_000), 16_000, Quality::Medium, None);
        let header = Header::audio(DType::F32, 4, 1, 44_100).unwrap();
        let err = node
            .process(&header, &[0; 16], &mut Vec::new())
            .unwrap_err();
        assert!(matches!(err, Error::Frame(_)));
        assert!(
            err.to_string()
                .contains("44100 Hz but source_rate is 48000"),
            "{err}"
        );

        let mut node = FastResample::new(None, 16_000, Quality::Medium, None);
        let first = Header::audio(DType::F32, 4, 1, 48_000).unwrap();
        node.process(&first, &[0; 16], &mut Vec::new()).unwrap();
        let err = node
            .process(&header, &[0; 16], &mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("keeps one format"), "{err}");
        // After the end of stream a new stream may have another rate.
        node.flush(&mut Vec::new()).unwrap();
        node.process(&header, &[0; 16], &mut Vec::new()).unwrap();

        let json = Header::bytes_like(crate::frame::Kind::Json, 2).unwrap();
        let err = node.process(&json, b"{}", &mut Vec::new()).unwrap_err();
        assert!(err
            .to_string()
            .contains("FastResampleNode takes audio frames"));
    }

    #[test]
    fn params_accept_remotemedia_spellings_and_auto() {
        let node = FastResample::from_params(&json!({
            "source_rate": "auto", "target_rate": 24_000, "quality": "Low"
        }))
        .unwrap();
        assert_eq!(
            (node.source_rate, node.target_rate, node.quality),
            (None, 24_000, Quality::Low)
        );
        let err = FastResample::from_params(&json!({"targetRate": "auto"})).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("params.targetRate: must be a rate in Hz"));
        let err = FastResample::from_params(&json!({"target_rate": 16_000, "quality": "best"}))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("params.quality: unknown variant `best`"),
            "{text}"
        );
        assert!(
            ["`low`", "`medium`", "`high`"]
                .iter()
                .all(|v| text.contains(v)),
            "{text}"
        );
        let node = FastResample::from_params(&json!({"target_sample_rate": 16_000})).unwrap();
        assert_eq!(node.target_rate, 16_000);
        let err = FastResample::from_params(&json!({"target_rate": 5})).unwrap_err();
        assert!(
            err.to_string()
                .contains("params.target_rate: 5 is out of range"),
            "{err}"
        );
    }
}
