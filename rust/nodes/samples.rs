//! Audio samples in and out of frame payloads, with the one scaling every node uses.
//!
//! Integers are fixed-point fractions of full scale: an int16 sample `s` is `s / 32768`
//! and an int32 sample `s / 2^31`, so full scale is `[-1.0, 1.0)`. Converting back
//! rounds to the nearest step and clips to the integer range (a float of 1.0 becomes
//! 32767, not a wrapped -32768; NaN becomes 0). Payloads are little-endian like the rest
//! of the frame, and they are read byte by byte: a shared-memory payload need not be
//! aligned for the sample type.

use crate::error::{Error, Result};
use crate::frame::DType;

const I16_SCALE: f64 = 32_768.0;
const I32_SCALE: f64 = 2_147_483_648.0;

/// The sample types an audio frame may carry (what [`crate::frame::Header`] accepts).
pub fn is_audio_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64 | DType::I16 | DType::I32)
}

fn not_audio(dtype: DType) -> Error {
    Error::Frame(format!("{dtype} is not an audio sample type"))
}

/// Appends the samples of `bytes` (of `dtype`) to `out` as floats in full scale.
pub fn read_f32(dtype: DType, bytes: &[u8], out: &mut Vec<f32>) -> Result<()> {
    out.reserve(bytes.len() / dtype.itemsize());
    match dtype {
        DType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
        ),
        DType::F64 => out.extend(
            bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
        ),
        DType::I16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / I16_SCALE as f32),
        ),
        DType::I32 => out.extend(bytes.chunks_exact(4).map(|b| {
            (f64::from(i32::from_le_bytes(b.try_into().expect("4 bytes"))) / I32_SCALE) as f32
        })),
        other => return Err(not_audio(other)),
    }
    Ok(())
}

/// Appends the samples of `bytes` (of `dtype`) to `out` as f64 in full scale: exact for
/// every audio dtype, which is what channel mixing and format conversion work in.
pub fn read_f64(dtype: DType, bytes: &[u8], out: &mut Vec<f64>) -> Result<()> {
    out.reserve(bytes.len() / dtype.itemsize());
    match dtype {
        DType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes(b.try_into().expect("4 bytes")))),
        ),
        DType::F64 => out.extend(
            bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))),
        ),
        DType::I16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])) / I16_SCALE),
        ),
        DType::I32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f64::from(i32::from_le_bytes(b.try_into().expect("4 bytes"))) / I32_SCALE),
        ),
        other => return Err(not_audio(other)),
    }
    Ok(())
}

/// Appends `samples` (full scale) to `out` as `dtype`, rounding and clipping integers.
pub fn write_f64(dtype: DType, samples: &[f64], out: &mut Vec<u8>) -> Result<()> {
    out.reserve(samples.len() * dtype.itemsize());
    match dtype {
        DType::F32 => {
            for &s in samples {
                out.extend_from_slice(&(s as f32).to_le_bytes());
            }
        }
        DType::F64 => {
            for &s in samples {
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
        // `as` saturates (and maps NaN to 0), so clipping is the float-to-int cast itself.
        DType::I16 => {
            for &s in samples {
                out.extend_from_slice(&((s * I16_SCALE).round() as i16).to_le_bytes());
            }
        }
        DType::I32 => {
            for &s in samples {
                out.extend_from_slice(&((s * I32_SCALE).round() as i32).to_le_bytes());
            }
        }
        other => return Err(not_audio(other)),
    }
    Ok(())
}

/// The little-endian bytes of float32 samples.
pub fn f32_bytes(samples: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 4);
    for &s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_fractions_of_full_scale() {
        let bytes: Vec<u8> = [i16::MIN, -16_384, 0, 16_384, i16::MAX]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let mut floats = Vec::new();
        read_f32(DType::I16, &bytes, &mut floats).unwrap();
        assert_eq!(floats, [-1.0, -0.5, 0.0, 0.5, 32_767.0 / 32_768.0]);

        let mut wide = Vec::new();
        read_f64(DType::I32, &i32::MIN.to_le_bytes(), &mut wide).unwrap();
        assert_eq!(wide, [-1.0]);
    }

    #[test]
    fn writing_integers_rounds_and_clips() {
        let mut out = Vec::new();
        write_f64(
            DType::I16,
            &[1.0, 2.0, -1.0, -3.0, 0.25, f64::NAN, 0.5 / 32_768.0],
            &mut out,
        )
        .unwrap();
        let back: Vec<i16> = out
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(back, [i16::MAX, i16::MAX, i16::MIN, i16::MIN, 8_192, 0, 1]);

        let mut out = Vec::new();
        write_f64(DType::I32, &[1.0, -1.0], &mut out).unwrap();
        assert_eq!(out[..4], i32::MAX.to_le_bytes());
        assert_eq!(out[4..], i32::MIN.to_le_bytes());
    }

    #[test]
    fn non_audio_dtypes_are_errors() {
        let mut floats = Vec::new();
        assert!(read_f32(DType::U8, &[0], &mut floats).is_err());
        assert!(write_f64(DType::I64, &[0.0], &mut Vec::new()).is_err());
    }
}
