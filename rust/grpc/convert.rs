//! `remotemedia.v1` [`DataBuffer`]s ↔ zerohop frames ([`Header`] + payload bytes).
//!
//! A DataBuffer arrives from the network, so [`into_frame`] trusts none of it: the payload
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
//! | video (ENCODED, any codec)     | video "encoded": the bitstream's bytes, opaque |
//! | tensor (F32, F16, I32, I8, U8) | tensor                                         |
//! | numpy (C or Fortran order, little-endian) | tensor of any frame dtype (C order) |
//! | json / text / binary           | json / text / bytes                            |
//! | control                        | control (the ControlMessage as JSON)           |
//! | file (inside `[nodes] file_dirs`) | bytes: the file's contents                  |
//!
//! Every field that the frame header has no place for rides in the frame's metadata
//! block ([`Meta`](crate::frame::Meta)): `DataBuffer.metadata`, `AudioBuffer.metadata_json`, the text's
//! channel, language and encoding, the JSON schema type, the MIME type, the tensor
//! layout, the video frame number, keyframe flag and codec. So [`from_frame`] gives back
//! what came in, field for field, unless a node changed it:
//!
//! - **numpy stays numpy.** A frame's payload is always C-ordered (that is what an array
//!   view of it is), so a Fortran-ordered array is reordered once on the way in and once
//!   on the way out, and the block remembers the order and the sender's dtype spelling:
//!   the client gets the same bytes, strides and flags it sent. A node sees the right
//!   values either way.
//! - **Encoded video is opaque**: a 1-D uint8 frame of pixel format `encoded` with the
//!   codec and keyframe flag in the block; width and height stay in the header. Nothing
//!   decodes it: a node that wants pixels brings its decoder.
//! - **Control messages are frames** of kind `control` so that nodes receive them in
//!   order with the data they are about (the voice-agent's barge-in cancels speculation
//!   for the segment it names).
//! - **A file reference is read, not passed on.** A node process should not be handed
//!   paths from the network, and a reply cannot be a file on the server: the server
//!   reads the file (only inside runtime.toml's `[nodes] file_dirs`, after symlinks and
//!   `..` are resolved; `offset`/`length` honoured; the payload cap checked before
//!   reading) into a bytes frame with the MIME type, and records the reference in the
//!   block (`Bytes.file` in Python). It comes back as a BinaryBuffer of those bytes.
//!
//! Going back, [`from_frame`] always produces a buffer: float64 audio (which
//! AudioFormat cannot say) is narrowed to F32, a tensor whose dtype TensorDtype lacks
//! becomes a NumpyBuffer, and video without a frame number in its block gives the
//! header's sequence.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::proto::{
    control_message::MessageType, data_buffer::DataType, AudioBuffer, AudioFormat, BatchHint,
    BinaryBuffer, CancelSpeculation, ControlMessage, DataBuffer, DeadlineWarning, FileBuffer,
    JsonData, NumpyBuffer, PixelFormat as ProtoPixelFormat, TensorBuffer, TensorDtype, TextBuffer,
    VideoCodec, VideoFrame,
};
use crate::error::{Error, Result};
use crate::frame::{
    self, Control, DType, FileMeta, Header, Kind, NumpyMeta, Order, PixelFormat, MAX_DIMS, MAX_META,
};

/// The directories file references may be read from (runtime.toml `[nodes]
/// file_dirs`) with their symlinks resolved, as [`into_frame`] takes them.
pub fn file_roots(dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter()
        .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| normalize(d)))
        .collect()
}

/// Validates `buffer` and returns the frame that carries it, moving the payload out of
/// `buffer` (no copy); a file reference is read inside `file_dirs` (from [`file_roots`]).
pub fn into_frame(
    buffer: DataBuffer,
    max_payload: usize,
    file_dirs: &[PathBuf],
) -> Result<(Header, Vec<u8>)> {
    let DataBuffer {
        data_type,
        metadata,
    } = buffer;
    // The tags are bounded before they are copied into the frame's block.
    let tags_len: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if tags_len > MAX_META {
        return Err(field_err(
            "metadata",
            format!(
                "{tags_len} bytes of keys and values, more than the metadata block's cap \
                 of {MAX_META} bytes"
            ),
        ));
    }
    let data = data_type.ok_or_else(no_data)?;
    let (mut header, bytes) = match data {
        DataType::File(file) => read_file(&file, max_payload, file_dirs)?,
        data => {
            let header = describe(&data, max_payload)?;
            let mut bytes = into_payload(data);
            if header.meta.numpy.as_ref().map(|n| n.order) == Some(Order::F) {
                bytes = reorder(&bytes, header.dims(), header.dtype.itemsize(), Order::F);
            }
            (header, bytes)
        }
    };
    header.meta.metadata = metadata.into_iter().collect();
    header.validate().map_err(within("metadata"))?;
    Ok((header, bytes))
}

/// The DataBuffer that carries a frame. `header` must be one that validates (every
/// constructor and [`Header::decode`] ensure that); a header that does not still gives a
/// buffer, as a NumpyBuffer of the payload's raw bytes, never a panic.
pub fn from_frame(header: &Header, payload: &[u8]) -> DataBuffer {
    let meta = &header.meta;
    let data = match header.kind {
        Kind::Audio => audio_from_frame(header, payload),
        Kind::Video => video_from_frame(header, payload),
        Kind::Tensor if meta.numpy.is_some() => None,
        Kind::Tensor => tensor_dtype(header.dtype).map(|dtype| {
            DataType::Tensor(TensorBuffer {
                data: payload.to_vec(),
                shape: header.dims().to_vec(),
                dtype: dtype as i32,
                layout: meta.layout.clone().unwrap_or_default(),
            })
        }),
        Kind::Text => Some(DataType::Text(TextBuffer {
            text_data: payload.to_vec(),
            encoding: meta.encoding.clone().unwrap_or_else(|| "utf-8".to_owned()),
            language: meta.language.clone().unwrap_or_default(),
            channel: meta.channel.clone().unwrap_or_default(),
        })),
        Kind::Json => Some(DataType::Json(JsonData {
            json_payload: String::from_utf8_lossy(payload).into_owned(),
            schema_type: meta.schema_type.clone().unwrap_or_default(),
        })),
        Kind::Bytes => Some(DataType::Binary(BinaryBuffer {
            data: payload.to_vec(),
            mime_type: meta.mime_type.clone().unwrap_or_default(),
        })),
        Kind::Control => Control::from_json(payload)
            .ok()
            .map(|c| DataType::Control(control_to_proto(c))),
    };
    let data = data.unwrap_or_else(|| DataType::Numpy(numpy_from_frame(header, payload)));
    DataBuffer {
        data_type: Some(data),
        metadata: meta
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------
// DataBuffer → frame

fn no_data() -> Error {
    Error::Frame(
        "DataBuffer.data_type: no data set (one of audio, video, tensor, json, text, \
         binary, control, numpy, file is required)"
            .to_owned(),
    )
}

/// An error about `DataBuffer.<field>`.
fn field_err(field: &str, message: impl std::fmt::Display) -> Error {
    Error::Frame(format!("DataBuffer.{field}: {message}"))
}

/// Prefixes a frame error (from a [`Header`] constructor) with the field it is about.
fn within(field: &str) -> impl FnOnce(frame::Error) -> Error + '_ {
    move |error| match error {
        frame::Error::Frame(message) => field_err(field, message),
        other => other.into(),
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

/// Some text, or None for proto3's empty default.
fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// Checks a whole DataBuffer payload and builds its header (with the metadata block of
/// its typed fields); copies nothing. Not for file references, which are read instead.
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
            let mut header = Header::bytes_like(Kind::Json, json.json_payload.len() as u64)?;
            header.meta.schema_type = non_empty(&json.schema_type);
            Ok(header)
        }
        DataType::Text(text) => text_header(text),
        DataType::Binary(binary) => {
            let mut header = Header::bytes_like(Kind::Bytes, binary.data.len() as u64)?;
            header.meta.mime_type = non_empty(&binary.mime_type);
            Ok(header)
        }
        DataType::Control(control) => {
            let len = control_from_proto(control).to_json().len();
            Header::bytes_like(Kind::Control, len as u64).map_err(within("control"))
        }
        DataType::File(_) => Err(field_err("file", "a file reference has no inline payload")),
    }
}

/// The payload bytes of any variant with inline data (empty for control and file,
/// whose payloads are made rather than carried).
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
        DataType::Control(control) => control_from_proto(&control).to_json(),
        DataType::File(_) => Vec::new(),
    }
}

fn control_from_proto(control: &ControlMessage) -> Control {
    let mut out = Control {
        segment_id: control.segment_id.clone(),
        timestamp_ms: control.timestamp_ms,
        metadata: control.metadata.clone(),
        ..Control::default()
    };
    match &control.message_type {
        None => {}
        Some(MessageType::CancelSpeculation(c)) => {
            out.action = Some("cancel_speculation".to_owned());
            out.from_timestamp = Some(c.from_timestamp);
            out.to_timestamp = Some(c.to_timestamp);
        }
        Some(MessageType::BatchHint(b)) => {
            out.action = Some("batch_hint".to_owned());
            out.suggested_batch_size = Some(b.suggested_batch_size);
        }
        Some(MessageType::DeadlineWarning(d)) => {
            out.action = Some("deadline_warning".to_owned());
            out.deadline_us = Some(d.deadline_us);
        }
    }
    out
}

fn control_to_proto(control: Control) -> ControlMessage {
    let message_type = match control.action.as_deref() {
        Some("cancel_speculation") => Some(MessageType::CancelSpeculation(CancelSpeculation {
            from_timestamp: control.from_timestamp.unwrap_or(0),
            to_timestamp: control.to_timestamp.unwrap_or(0),
        })),
        Some("batch_hint") => Some(MessageType::BatchHint(BatchHint {
            suggested_batch_size: control.suggested_batch_size.unwrap_or(0),
        })),
        Some("deadline_warning") => Some(MessageType::DeadlineWarning(DeadlineWarning {
            deadline_us: control.deadline_us.unwrap_or(0),
        })),
        _ => None,
    };
    ControlMessage {
        message_type,
        segment_id: control.segment_id,
        timestamp_ms: control.timestamp_ms,
        metadata: control.metadata,
    }
}

/// `path` with `.` and `..` resolved lexically (for a path that does not exist, whose
/// symlinks cannot be resolved).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Reads a file reference into a bytes frame; see the module docs for the rules.
fn read_file(
    file: &FileBuffer,
    max_payload: usize,
    roots: &[PathBuf],
) -> Result<(Header, Vec<u8>)> {
    let path = Path::new(&file.path);
    if !path.is_absolute() {
        return Err(field_err(
            "file.path",
            format!("{:?} is not an absolute path", file.path),
        ));
    }
    let inside = |p: &Path| roots.iter().any(|root| p.starts_with(root));
    let outside = || {
        let listed = if roots.is_empty() {
            "none are set".to_owned()
        } else {
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        field_err(
            "file.path",
            format!(
                "{:?} is outside the directories files may be read from (runtime.toml \
                 [nodes] file_dirs: {listed})",
                file.path
            ),
        )
    };
    // Symlinks and `..` are resolved before the check, and the resolved path is what is
    // opened. A path that does not resolve says "outside" unless it would be inside, so
    // an error never tells whether a file exists elsewhere.
    let real = match std::fs::canonicalize(path) {
        Ok(real) if inside(&real) => real,
        Ok(_) => return Err(outside()),
        Err(err) if inside(&normalize(path)) => {
            return Err(field_err("file.path", format!("{:?}: {err}", file.path)))
        }
        Err(_) => return Err(outside()),
    };
    let io_err = |err: std::io::Error| field_err("file.path", format!("{:?}: {err}", file.path));
    let mut handle = std::fs::File::open(&real).map_err(io_err)?;
    let info = handle.metadata().map_err(io_err)?;
    if !info.is_file() {
        return Err(field_err(
            "file.path",
            format!("{:?} is not a regular file", file.path),
        ));
    }
    let size = info.len();
    if file.offset > size {
        return Err(field_err(
            "file.offset",
            format!("{} is past the end of the file ({size} bytes)", file.offset),
        ));
    }
    let length = if file.length == 0 {
        size - file.offset
    } else {
        file.length
    };
    if length > size - file.offset {
        return Err(field_err(
            "file.length",
            format!(
                "{length} bytes from offset {} run past the end of the file ({size} bytes)",
                file.offset
            ),
        ));
    }
    check_size(usize::try_from(length).unwrap_or(usize::MAX), max_payload)?;
    let mut bytes = vec![0u8; length as usize];
    handle.seek(SeekFrom::Start(file.offset)).map_err(io_err)?;
    handle.read_exact(&mut bytes).map_err(io_err)?;
    let mut header = Header::bytes_like(Kind::Bytes, length)?;
    header.meta.mime_type = non_empty(&file.mime_type);
    header.meta.file = Some(FileMeta {
        path: file.path.clone(),
        filename: file.filename.clone(),
        size: file.size,
        offset: file.offset,
        length: file.length,
        stream_id: file.stream_id.clone(),
    });
    Ok((header, bytes))
}

/// Copies an array of `shape` stored in `from` order into the other order (C ↔ F).
fn reorder(src: &[u8], shape: &[u64], itemsize: usize, from: Order) -> Vec<u8> {
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    if dims.iter().filter(|&&d| d > 1).count() < 2 {
        return src.to_vec(); // one non-trivial dimension: both orders are the same bytes
    }
    // Element strides of the source order.
    let mut strides = vec![0usize; dims.len()];
    let mut step = 1;
    let positions: Vec<usize> = match from {
        Order::F => (0..dims.len()).collect(),
        Order::C => (0..dims.len()).rev().collect(),
    };
    for &k in &positions {
        strides[k] = step;
        step *= dims[k];
    }
    // Walk the destination order: its fastest index is the source's slowest.
    let mut out = Vec::with_capacity(src.len());
    let mut index = vec![0usize; dims.len()];
    for _ in 0..src.len() / itemsize {
        let at = index
            .iter()
            .zip(&strides)
            .map(|(i, s)| i * s)
            .sum::<usize>()
            * itemsize;
        out.extend_from_slice(&src[at..at + itemsize]);
        for &k in positions.iter().rev() {
            index[k] += 1;
            if index[k] < dims[k] {
                break;
            }
            index[k] = 0;
        }
    }
    out
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
    let mut header =
        Header::audio(dtype, frames, audio.channels, audio.sample_rate).map_err(within("audio"))?;
    if let Some(json) = &audio.metadata_json {
        let text = std::str::from_utf8(json)
            .map_err(|e| field_err("audio.metadata_json", format!("not UTF-8 text: {e}")))?;
        header.meta.metadata_json = Some(text.to_owned());
    }
    Ok(header)
}

/// The lower-case name of a codec (`"h264"`), None for unspecified.
fn codec_name(codec: VideoCodec) -> Option<String> {
    (codec != VideoCodec::Unspecified).then(|| {
        codec
            .as_str_name()
            .trim_start_matches("VIDEO_CODEC_")
            .to_ascii_lowercase()
    })
}

fn video_header(video: &VideoFrame) -> Result<Header> {
    let codec: VideoCodec = known("video.codec", video.codec)?;
    let format = match known("video.format", video.format)? {
        ProtoPixelFormat::Rgb24 => PixelFormat::Rgb24,
        ProtoPixelFormat::Rgba32 => PixelFormat::Rgba,
        ProtoPixelFormat::Yuv420p | ProtoPixelFormat::I420 => PixelFormat::Yuv420p,
        ProtoPixelFormat::Gray8 => PixelFormat::Gray,
        ProtoPixelFormat::Encoded => PixelFormat::Encoded,
        ProtoPixelFormat::Nv12 => {
            return Err(field_err(
                "video.format",
                "PIXEL_FORMAT_NV12 is not supported (RGB24, RGBA32, YUV420P, I420, GRAY8 \
                 and ENCODED are)",
            ))
        }
        ProtoPixelFormat::Unspecified => return Err(unset("video.format")),
    };
    let len = video.pixel_data.len() as u64;
    let mut header = if format == PixelFormat::Encoded {
        Header::encoded_video(video.width, video.height, len).map_err(within("video"))?
    } else {
        if video.width == 0 || video.height == 0 {
            return Err(field_err(
                "video",
                format!("empty picture {}x{}", video.width, video.height),
            ));
        }
        let header = Header::video(format, video.width, video.height).map_err(within("video"))?;
        if header.payload_len != len {
            return Err(field_err(
                "video.pixel_data",
                format!(
                    "{len} bytes, but {format} {}x{} needs {}",
                    video.width, video.height, header.payload_len
                ),
            ));
        }
        header
    };
    header.timestamp_ns = video.timestamp_us.checked_mul(1000).ok_or_else(|| {
        field_err(
            "video.timestamp_us",
            format!("{} overflows nanoseconds", video.timestamp_us),
        )
    })?;
    let meta = &mut header.meta;
    meta.frame_number = Some(video.frame_number);
    meta.is_keyframe = video.is_keyframe.then_some(true);
    meta.codec = codec_name(codec);
    if video.format == ProtoPixelFormat::I420 as i32 {
        meta.pixel_format = Some("i420".to_owned());
    }
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
    let mut header = array_header("tensor", dtype, &tensor.shape, tensor.data.len())?;
    header.meta.layout = non_empty(&tensor.layout);
    Ok(header)
}

fn numpy_header(numpy: &NumpyBuffer) -> Result<Header> {
    let dtype = numpy_dtype(&numpy.dtype)?;
    let mut header = array_header("numpy", dtype, &numpy.shape, numpy.data.len())?;
    let order = numpy_order(numpy, dtype.itemsize())?;
    header.meta.numpy = Some(NumpyMeta {
        order,
        dtype: (numpy.dtype != dtype.name()).then(|| numpy.dtype.clone()),
    });
    Ok(header)
}

/// The memory order of the array's bytes: from its strides when given (they must be
/// those of a C- or a Fortran-ordered array), else from its flags (C unless only
/// `f_contiguous` is set).
fn numpy_order(numpy: &NumpyBuffer, itemsize: usize) -> Result<Order> {
    if numpy.strides.is_empty() || numpy.shape.contains(&0) {
        return Ok(if numpy.f_contiguous && !numpy.c_contiguous {
            Order::F
        } else {
            Order::C
        });
    }
    if numpy.strides.len() != numpy.shape.len() {
        return Err(field_err(
            "numpy.strides",
            format!(
                "{} strides for {} dimensions",
                numpy.strides.len(),
                numpy.shape.len()
            ),
        ));
    }
    let c_fits = strides_match(&numpy.shape, &numpy.strides, itemsize, Order::C);
    // Strides that fit both orders (a vector, say) follow the flags.
    let says_fortran = numpy.f_contiguous && !numpy.c_contiguous;
    if c_fits && !says_fortran {
        return Ok(Order::C);
    }
    if strides_match(&numpy.shape, &numpy.strides, itemsize, Order::F) {
        return Ok(Order::F);
    }
    if c_fits {
        return Ok(Order::C);
    }
    Err(field_err(
        "numpy.strides",
        format!(
            "{:?} for shape {:?} is neither C- nor Fortran-contiguous; send \
             np.ascontiguousarray(a)",
            numpy.strides, numpy.shape
        ),
    ))
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

/// Whether `strides` are those of a dense array of `shape` in `order` (numpy ignores
/// the stride of a dimension of length 1).
fn strides_match(shape: &[u64], strides: &[i64], itemsize: usize, order: Order) -> bool {
    // The shape's byte size fits in u64 (array_header checked it), so in i128 too.
    let mut expected = itemsize as i128;
    let pairs: Vec<(u64, i64)> = shape.iter().copied().zip(strides.iter().copied()).collect();
    let walk: Box<dyn Iterator<Item = &(u64, i64)>> = match order {
        Order::C => Box::new(pairs.iter().rev()),
        Order::F => Box::new(pairs.iter()),
    };
    for &(dim, stride) in walk {
        if dim > 1 && i128::from(stride) != expected {
            return false;
        }
        expected *= i128::from(dim);
    }
    true
}

/// Strides of a dense array of `shape` in `order`, in bytes.
fn strides_of(shape: &[u64], itemsize: usize, order: Order) -> Vec<i64> {
    let mut strides = vec![0i64; shape.len()];
    let mut step = itemsize as i64;
    let positions: Vec<usize> = match order {
        Order::C => (0..shape.len()).rev().collect(),
        Order::F => (0..shape.len()).collect(),
    };
    for k in positions {
        strides[k] = step;
        step = step.saturating_mul(i64::try_from(shape[k]).unwrap_or(i64::MAX));
    }
    strides
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
    let mut header = Header::bytes_like(Kind::Text, text.text_data.len() as u64)?;
    let meta = &mut header.meta;
    meta.channel = non_empty(&text.channel);
    meta.language = non_empty(&text.language);
    meta.encoding = (text.encoding != "utf-8").then(|| text.encoding.clone());
    Ok(header)
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
        metadata_json: header.meta.metadata_json.clone().map(String::into_bytes),
    }))
}

fn video_from_frame(header: &Header, payload: &[u8]) -> Option<DataType> {
    let meta = &header.meta;
    let format = match header.pixel_format? {
        PixelFormat::Rgb24 => ProtoPixelFormat::Rgb24,
        PixelFormat::Rgba => ProtoPixelFormat::Rgba32,
        PixelFormat::Yuv420p if meta.pixel_format.as_deref() == Some("i420") => {
            ProtoPixelFormat::I420
        }
        PixelFormat::Yuv420p => ProtoPixelFormat::Yuv420p,
        PixelFormat::Gray => ProtoPixelFormat::Gray8,
        PixelFormat::Encoded => ProtoPixelFormat::Encoded,
    };
    let codec = meta
        .codec
        .as_deref()
        .and_then(|name| {
            VideoCodec::from_str_name(&format!("VIDEO_CODEC_{}", name.to_ascii_uppercase()))
        })
        .unwrap_or(VideoCodec::Unspecified);
    Some(DataType::Video(VideoFrame {
        pixel_data: payload.to_vec(),
        width: header.width,
        height: header.height,
        format: format as i32,
        frame_number: meta.frame_number.unwrap_or(header.sequence),
        timestamp_us: header.timestamp_ns / 1000,
        codec: codec as i32,
        is_keyframe: meta.is_keyframe.unwrap_or(false),
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

/// Any frame as a numpy array of its dtype and shape: in the order and dtype spelling
/// it came in as, if it came as numpy, else C-ordered.
fn numpy_from_frame(header: &Header, payload: &[u8]) -> NumpyBuffer {
    let shape = header.dims().to_vec();
    let itemsize = header.dtype.itemsize();
    let numpy = header.meta.numpy.clone().unwrap_or_default();
    // The sender's spelling, if it still names this frame's dtype (a node may change it).
    let dtype = numpy
        .dtype
        .filter(|name| numpy_dtype(name).ok() == Some(header.dtype))
        .unwrap_or_else(|| header.dtype.name().to_owned());
    let data = match numpy.order {
        Order::C => payload.to_vec(),
        Order::F => reorder(payload, &shape, itemsize, Order::C),
    };
    // numpy's rule: an array with at most one dimension other than 1 (or an empty one)
    // is both C- and Fortran-contiguous.
    let both = shape.contains(&0) || shape.iter().filter(|&&d| d != 1).count() <= 1;
    NumpyBuffer {
        data,
        strides: strides_of(&shape, itemsize, numpy.order),
        shape,
        dtype,
        c_contiguous: both || numpy.order == Order::C,
        f_contiguous: both || numpy.order == Order::F,
    }
}

#[cfg(test)]
mod tests;
