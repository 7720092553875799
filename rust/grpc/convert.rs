//! `remotemedia.v1` [`DataBuffer`]s ↔ zerohop frames ([`Header`] + payload bytes).
//!
//! A DataBuffer arrives from the network, so [`to_frame`] trusts none of it: the payload
//! size is checked against `max_payload` before anything is copied, byte counts must
//! match shape × itemsize exactly, text must be UTF-8 and JSON must parse, and an enum
//! value this build does not know is an error naming the field
//! (`DataBuffer.audio.format: unknown value 7`). A buffer that passes becomes a header
//! that [`Header::validate`] accepts, so the frame can go straight into a channel.
//!
//! | DataBuffer                     | frame                                          |
//! |--------------------------------|------------------------------------------------|
//! | audio (F32, I16, I32)          | audio float32 / int16 / int32                  |
//! | video (RGB24, RGBA32, YUV420P, I420, GRAY8) | video rgb24 / rgba / yuv420p / gray |
//! | tensor (F32, F16, I32, I8, U8) | tensor                                         |
//! | numpy (C-contiguous, little-endian) | tensor of any frame dtype                 |
//! | json / text / binary           | json / text / bytes                            |
//! | control, file                  | not supported yet                              |
//!
//! Going back, [`from_frame`] always produces a buffer: float64 audio (which
//! AudioFormat cannot say) is narrowed to F32, a tensor whose dtype TensorDtype lacks
//! becomes a NumpyBuffer, and video keeps its frame number (the header's sequence) and
//! timestamp. What frames have no room for is dropped: `DataBuffer.metadata`,
//! `AudioBuffer.metadata_json`, the tensor layout hint, text language/channel, the JSON
//! schema type, the MIME type.

use super::proto::{
    data_buffer::DataType, AudioBuffer, AudioFormat, BinaryBuffer, DataBuffer, JsonData,
    NumpyBuffer, PixelFormat as ProtoPixelFormat, TensorBuffer, TensorDtype, TextBuffer,
    VideoCodec, VideoFrame,
};
use crate::error::{Error, Result};
use crate::frame::{DType, Header, Kind, PixelFormat, MAX_DIMS};

/// Validates `buffer` and returns the frame that carries it (the payload is copied once).
pub fn to_frame(buffer: &DataBuffer, max_payload: usize) -> Result<(Header, Vec<u8>)> {
    let data = buffer.data_type.as_ref().ok_or_else(no_data)?;
    let header = describe(data, max_payload)?;
    Ok((header, payload(data).to_vec()))
}

/// Like [`to_frame`], but moves the payload out of `buffer` instead of copying it.
pub fn into_frame(buffer: DataBuffer, max_payload: usize) -> Result<(Header, Vec<u8>)> {
    let data = buffer.data_type.ok_or_else(no_data)?;
    let header = describe(&data, max_payload)?;
    Ok((header, into_payload(data)))
}

/// The DataBuffer that carries a frame. `header` must be one that validates (every
/// constructor and [`Header::decode`] ensure that); a header that does not still gives a
/// buffer, as a NumpyBuffer of the payload's raw bytes, never a panic.
pub fn from_frame(header: &Header, payload: &[u8]) -> DataBuffer {
    let data = match header.kind {
        Kind::Audio => audio_from_frame(header, payload),
        Kind::Video => video_from_frame(header, payload),
        Kind::Tensor => tensor_dtype(header.dtype).map(|dtype| {
            DataType::Tensor(TensorBuffer {
                data: payload.to_vec(),
                shape: header.dims().to_vec(),
                dtype: dtype as i32,
                layout: String::new(),
            })
        }),
        Kind::Text => Some(DataType::Text(TextBuffer {
            text_data: payload.to_vec(),
            encoding: "utf-8".to_owned(),
            ..TextBuffer::default()
        })),
        Kind::Json => Some(DataType::Json(JsonData {
            json_payload: String::from_utf8_lossy(payload).into_owned(),
            schema_type: String::new(),
        })),
        Kind::Bytes => Some(DataType::Binary(BinaryBuffer {
            data: payload.to_vec(),
            mime_type: String::new(),
        })),
    };
    let data = data.unwrap_or_else(|| DataType::Numpy(numpy_from_frame(header, payload)));
    DataBuffer {
        data_type: Some(data),
        metadata: Default::default(),
    }
}

// ---------------------------------------------------------------------------------------
// DataBuffer → frame

fn no_data() -> Error {
    Error::Frame(
        "DataBuffer.data_type: no data set (one of audio, video, tensor, json, text, \
         binary, numpy is required)"
            .to_owned(),
    )
}

/// An error about `DataBuffer.<field>`.
fn field_err(field: &str, message: impl std::fmt::Display) -> Error {
    Error::Frame(format!("DataBuffer.{field}: {message}"))
}

/// Prefixes a frame error (from a [`Header`] constructor) with the field it is about.
fn within(field: &str) -> impl FnOnce(Error) -> Error + '_ {
    move |error| match error {
        Error::Frame(message) => field_err(field, message),
        other => other,
    }
}

/// Rejects a payload over the limit; called before anything is copied.
fn check_size(len: usize, max_payload: usize) -> Result<()> {
    if len > max_payload {
        return Err(Error::PayloadTooLarge {
            size: len,
            max: max_payload,
        });
    }
    Ok(())
}

/// The value of a protobuf enum field, or an error naming the field if this build does
/// not know it (proto3 enums are open: any i32 can arrive).
fn known<E: TryFrom<i32>>(field: &str, value: i32) -> Result<E> {
    E::try_from(value).map_err(|_| field_err(field, format!("unknown value {value}")))
}

/// The error for an enum field left at 0 (`*_UNSPECIFIED`).
fn unset(field: &str) -> Error {
    field_err(field, "not set (0 = unspecified)")
}

/// Checks a whole DataBuffer payload and builds its header; copies nothing.
fn describe(data: &DataType, max_payload: usize) -> Result<Header> {
    check_size(payload(data).len(), max_payload)?;
    match data {
        DataType::Audio(audio) => audio_header(audio),
        DataType::Video(video) => video_header(video),
        DataType::Tensor(tensor) => tensor_header(tensor),
        DataType::Numpy(numpy) => numpy_header(numpy),
        DataType::Json(json) => {
            serde_json::from_str::<serde::de::IgnoredAny>(&json.json_payload)
                .map_err(|e| field_err("json.json_payload", format!("not valid JSON: {e}")))?;
            Header::bytes_like(Kind::Json, json.json_payload.len() as u64)
        }
        DataType::Text(text) => text_header(text),
        DataType::Binary(binary) => Header::bytes_like(Kind::Bytes, binary.data.len() as u64),
        DataType::Control(_) => Err(field_err(
            "control",
            "control messages are not supported yet",
        )),
        DataType::File(_) => Err(field_err("file", "file references are not supported yet")),
    }
}

/// The payload bytes of any variant (empty for those that have none).
fn payload(data: &DataType) -> &[u8] {
    match data {
        DataType::Audio(audio) => &audio.samples,
        DataType::Video(video) => &video.pixel_data,
        DataType::Tensor(tensor) => &tensor.data,
        DataType::Numpy(numpy) => &numpy.data,
        DataType::Json(json) => json.json_payload.as_bytes(),
        DataType::Text(text) => &text.text_data,
        DataType::Binary(binary) => &binary.data,
        DataType::Control(_) | DataType::File(_) => &[],
    }
}

fn into_payload(data: DataType) -> Vec<u8> {
    match data {
        DataType::Audio(audio) => audio.samples,
        DataType::Video(video) => video.pixel_data,
        DataType::Tensor(tensor) => tensor.data,
        DataType::Numpy(numpy) => numpy.data,
        DataType::Json(json) => json.json_payload.into_bytes(),
        DataType::Text(text) => text.text_data,
        DataType::Binary(binary) => binary.data,
        DataType::Control(_) | DataType::File(_) => Vec::new(),
    }
}

fn audio_header(audio: &AudioBuffer) -> Result<Header> {
    let dtype = match known("audio.format", audio.format)? {
        AudioFormat::F32 => DType::F32,
        AudioFormat::I16 => DType::I16,
        AudioFormat::I32 => DType::I32,
        AudioFormat::Unspecified => return Err(unset("audio.format")),
    };
    if audio.sample_rate == 0 {
        return Err(field_err("audio.sample_rate", "is 0"));
    }
    if audio.channels == 0 {
        return Err(field_err("audio.channels", "is 0"));
    }
    let len = audio.samples.len() as u64;
    let channels = u64::from(audio.channels);
    let frame_bytes = dtype.itemsize() as u64 * channels;
    if !len.is_multiple_of(frame_bytes) {
        return Err(field_err(
            "audio.samples",
            format!(
                "{len} bytes is not a whole number of {channels}-channel {dtype} frames \
                 ({frame_bytes} bytes each)"
            ),
        ));
    }
    let frames = len / frame_bytes;
    let total = frames * channels;
    // Upstream documents num_samples both per channel and over all channels; either
    // matches, and 0 means the sender did not fill it in.
    if audio.num_samples != 0 && audio.num_samples != frames && audio.num_samples != total {
        return Err(field_err(
            "audio.num_samples",
            format!(
                "{} does not match the samples: {len} bytes hold {frames} frames of \
                 {channels} {dtype} channels ({total} samples)",
                audio.num_samples
            ),
        ));
    }
    Header::audio(dtype, frames, audio.channels, audio.sample_rate).map_err(within("audio"))
}

fn video_header(video: &VideoFrame) -> Result<Header> {
    let codec: VideoCodec = known("video.codec", video.codec)?;
    if codec != VideoCodec::Unspecified {
        return Err(field_err(
            "video.codec",
            format!(
                "encoded video ({}) is not supported; send raw frames",
                codec.as_str_name()
            ),
        ));
    }
    let format = match known("video.format", video.format)? {
        ProtoPixelFormat::Rgb24 => PixelFormat::Rgb24,
        ProtoPixelFormat::Rgba32 => PixelFormat::Rgba,
        ProtoPixelFormat::Yuv420p | ProtoPixelFormat::I420 => PixelFormat::Yuv420p,
        ProtoPixelFormat::Gray8 => PixelFormat::Gray,
        other @ (ProtoPixelFormat::Nv12 | ProtoPixelFormat::Encoded) => {
            return Err(field_err(
                "video.format",
                format!(
                    "{} is not supported (RGB24, RGBA32, YUV420P, I420 and GRAY8 are)",
                    other.as_str_name()
                ),
            ))
        }
        ProtoPixelFormat::Unspecified => return Err(unset("video.format")),
    };
    if video.width == 0 || video.height == 0 {
        return Err(field_err(
            "video",
            format!("empty picture {}x{}", video.width, video.height),
        ));
    }
    let mut header = Header::video(format, video.width, video.height).map_err(within("video"))?;
    let len = video.pixel_data.len() as u64;
    if header.payload_len != len {
        return Err(field_err(
            "video.pixel_data",
            format!(
                "{len} bytes, but {format} {}x{} needs {}",
                video.width, video.height, header.payload_len
            ),
        ));
    }
    header.sequence = video.frame_number;
    header.timestamp_ns = video.timestamp_us.checked_mul(1000).ok_or_else(|| {
        field_err(
            "video.timestamp_us",
            format!("{} overflows nanoseconds", video.timestamp_us),
        )
    })?;
    Ok(header)
}

/// A header for a dense C-ordered array whose bytes are `len` long.
fn array_header(field: &str, dtype: DType, shape: &[u64], len: usize) -> Result<Header> {
    if shape.len() > MAX_DIMS {
        return Err(field_err(
            field,
            format!(
                "{} dimensions, at most {MAX_DIMS} are supported",
                shape.len()
            ),
        ));
    }
    let header = Header::new(Kind::Tensor, dtype, shape).map_err(within(field))?;
    if header.payload_len != len as u64 {
        return Err(field_err(
            field,
            format!(
                "{len} data bytes, but shape {shape:?} of {dtype} needs {}",
                header.payload_len
            ),
        ));
    }
    Ok(header)
}

fn tensor_header(tensor: &TensorBuffer) -> Result<Header> {
    let dtype = match known("tensor.dtype", tensor.dtype)? {
        TensorDtype::F32 => DType::F32,
        TensorDtype::F16 => DType::F16,
        TensorDtype::I32 => DType::I32,
        TensorDtype::I8 => DType::I8,
        TensorDtype::U8 => DType::U8,
        TensorDtype::Unspecified => return Err(unset("tensor.dtype")),
    };
    array_header("tensor", dtype, &tensor.shape, tensor.data.len())
}

fn numpy_header(numpy: &NumpyBuffer) -> Result<Header> {
    let dtype = numpy_dtype(&numpy.dtype)?;
    let header = array_header("numpy", dtype, &numpy.shape, numpy.data.len())?;
    if numpy.f_contiguous && !numpy.c_contiguous {
        return Err(field_err(
            "numpy",
            "the array is in Fortran order (f_contiguous, not c_contiguous); \
             send np.ascontiguousarray(a)",
        ));
    }
    check_c_strides(&numpy.shape, &numpy.strides, dtype.itemsize())?;
    Ok(header)
}

/// A numpy dtype name (`float32`) or little-endian type string (`<f4`, `|u1`, `f4`).
fn numpy_dtype(text: &str) -> Result<DType> {
    if let Some(dtype) = DType::from_name(text) {
        return Ok(dtype);
    }
    let (order, code) = match text.chars().next() {
        Some(c @ ('<' | '>' | '=' | '|')) => (Some(c), &text[1..]),
        _ => (None, text),
    };
    let dtype = match code {
        "b1" | "?" => DType::Bool,
        "u1" => DType::U8,
        "i1" => DType::I8,
        "u2" => DType::U16,
        "i2" => DType::I16,
        "f2" => DType::F16,
        "u4" => DType::U32,
        "i4" => DType::I32,
        "f4" => DType::F32,
        "u8" => DType::U64,
        "i8" => DType::I64,
        "f8" => DType::F64,
        _ => {
            return Err(field_err(
                "numpy.dtype",
                format!(
                    "unsupported dtype {text:?} (bool, [u]int8..64, float16/32/64 or their \
                     little-endian type strings such as \"<f4\" are)"
                ),
            ))
        }
    };
    // '=' is the sender's native order: little-endian on every platform zerohop runs on.
    if order == Some('>') && dtype.itemsize() > 1 {
        return Err(field_err(
            "numpy.dtype",
            format!("{text:?} is big-endian; frames are little-endian"),
        ));
    }
    Ok(dtype)
}

/// Strides, when given, must be those of a C-ordered array (numpy ignores the stride of
/// a dimension of length 1, and an empty array is contiguous whatever its strides).
fn check_c_strides(shape: &[u64], strides: &[i64], itemsize: usize) -> Result<()> {
    if strides.is_empty() || shape.contains(&0) {
        return Ok(());
    }
    if strides.len() != shape.len() {
        return Err(field_err(
            "numpy.strides",
            format!("{} strides for {} dimensions", strides.len(), shape.len()),
        ));
    }
    // The shape's byte size fits in u64 (array_header checked it), so in i128 too.
    let mut expected = itemsize as i128;
    for (&dim, &stride) in shape.iter().zip(strides).rev() {
        if dim > 1 && i128::from(stride) != expected {
            return Err(field_err(
                "numpy.strides",
                format!(
                    "{strides:?} for shape {shape:?} is not C-contiguous; \
                     send np.ascontiguousarray(a)"
                ),
            ));
        }
        expected *= i128::from(dim);
    }
    Ok(())
}

fn text_header(text: &TextBuffer) -> Result<Header> {
    let encoding = text.encoding.trim().to_ascii_lowercase();
    match encoding.as_str() {
        "" | "utf-8" | "utf8" => {}
        "ascii" | "us-ascii" => {
            if !text.text_data.is_ascii() {
                return Err(field_err(
                    "text.text_data",
                    "not ASCII, as text.encoding says",
                ));
            }
        }
        _ => {
            return Err(field_err(
                "text.encoding",
                format!("{:?} is not supported; send UTF-8 text", text.encoding),
            ))
        }
    }
    std::str::from_utf8(&text.text_data)
        .map_err(|e| field_err("text.text_data", format!("not valid UTF-8: {e}")))?;
    Header::bytes_like(Kind::Text, text.text_data.len() as u64)
}

// ---------------------------------------------------------------------------------------
// frame → DataBuffer

fn audio_from_frame(header: &Header, payload: &[u8]) -> Option<DataType> {
    let (format, samples) = match header.dtype {
        DType::F32 => (AudioFormat::F32, payload.to_vec()),
        DType::I16 => (AudioFormat::I16, payload.to_vec()),
        DType::I32 => (AudioFormat::I32, payload.to_vec()),
        // AudioFormat has no float64: narrow to float32 (well below audible precision).
        DType::F64 => (
            AudioFormat::F32,
            payload
                .chunks_exact(8)
                .flat_map(|x| {
                    let x = f64::from_le_bytes(x.try_into().expect("8 bytes"));
                    (x as f32).to_le_bytes()
                })
                .collect(),
        ),
        _ => return None,
    };
    let itemsize = match format {
        AudioFormat::I16 => 2,
        _ => 4,
    };
    Some(DataType::Audio(AudioBuffer {
        num_samples: (samples.len() / itemsize) as u64,
        samples,
        sample_rate: header.sample_rate,
        channels: header.channels,
        format: format as i32,
        metadata_json: None,
    }))
}

fn video_from_frame(header: &Header, payload: &[u8]) -> Option<DataType> {
    let format = match header.pixel_format? {
        PixelFormat::Rgb24 => ProtoPixelFormat::Rgb24,
        PixelFormat::Rgba => ProtoPixelFormat::Rgba32,
        PixelFormat::Yuv420p => ProtoPixelFormat::Yuv420p,
        PixelFormat::Gray => ProtoPixelFormat::Gray8,
    };
    Some(DataType::Video(VideoFrame {
        pixel_data: payload.to_vec(),
        width: header.width,
        height: header.height,
        format: format as i32,
        frame_number: header.sequence,
        timestamp_us: header.timestamp_ns / 1000,
        codec: VideoCodec::Unspecified as i32,
        is_keyframe: false,
    }))
}

fn tensor_dtype(dtype: DType) -> Option<TensorDtype> {
    Some(match dtype {
        DType::F32 => TensorDtype::F32,
        DType::F16 => TensorDtype::F16,
        DType::I32 => TensorDtype::I32,
        DType::I8 => TensorDtype::I8,
        DType::U8 => TensorDtype::U8,
        _ => return None,
    })
}

/// Any frame as a C-ordered numpy array of its dtype and shape.
fn numpy_from_frame(header: &Header, payload: &[u8]) -> NumpyBuffer {
    let shape = header.dims().to_vec();
    let mut strides = vec![0i64; shape.len()];
    let mut step = header.dtype.itemsize() as i64;
    for (stride, &dim) in strides.iter_mut().zip(&shape).rev() {
        *stride = step;
        step = step.saturating_mul(i64::try_from(dim).unwrap_or(i64::MAX));
    }
    // numpy's rule: C order is also Fortran order when at most one dimension is not 1.
    let f_contiguous = shape.contains(&0) || shape.iter().filter(|&&d| d != 1).count() <= 1;
    NumpyBuffer {
        data: payload.to_vec(),
        shape,
        dtype: header.dtype.name().to_owned(),
        strides,
        c_contiguous: true,
        f_contiguous,
    }
}

#[cfg(test)]
mod tests;
