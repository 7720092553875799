//! The RuntimeData wire format: a fixed 128-byte little-endian header, an optional
//! metadata block, then the payload. A frame is the only thing that travels through a
//! channel, so both ends agree on it without any serialization step: the payload is the
//! array's raw bytes.
//!
//! ```text
//! offset size field            offset size field
//!   0     4  magic "ZHOP"        24     4  width (video)
//!   4     2  version (2)         28     4  height (video)
//!   6     1  kind                32     8  session id
//!   7     1  dtype               40     8  sequence number
//!   8     1  ndim (0..=8)        48     8  timestamp (ns, sender's clock)
//!   9     1  pixel format        56     8  payload length (bytes)
//!  10     2  flags (bit 0: end of stream)    64    64  shape: 8 × u64 (unused dims are 0)
//!  12     4  header length H: 128, or 128 + the padded metadata block
//!  16     4  sample rate (audio)
//!  20     4  channels (audio)   128     4  metadata length N (only when H > 128)
//!                               132     N  metadata: a UTF-8 JSON object ([`Meta`])
//!                                    …  zero padding up to H (a multiple of 64)
//!                                 H     …  payload (64-byte aligned when the slice is)
//! ```
//!
//! [`Header::decode`] validates everything a receiver relies on before it builds an array
//! view: a frame that passes describes exactly `payload_len` bytes of a known dtype whose
//! shape multiplies out to that length, so a bad frame is an error, never a wrong array.
//!
//! # The metadata block
//!
//! What a remotemedia `DataBuffer` says beside its bytes (its `metadata` map, a text's
//! channel and language, a tensor's layout, a video frame's codec and keyframe flag, ...)
//! has no fixed size, so it cannot live in the fixed header; it rides in a block between
//! the header and the payload, described by [`Meta`]. Choices, and why:
//!
//! - **Absent when empty.** A frame without metadata is exactly the version-1 layout
//!   (H = 128), so the common case costs nothing: no bytes, no parsing.
//! - **Padded to 64 bytes**, so the payload keeps the alignment the slice gives the
//!   header (SIMD loads and numpy views of float data stay aligned).
//! - **JSON**, because the values are short strings read by Python and by the gRPC
//!   bridge, both of which speak JSON already; a binary format would save microseconds on
//!   a block that is absent from almost every frame.
//! - **Bounded**: at most [`MAX_META`] (64 KiB) of JSON. The length is checked against
//!   the cap and against the frame before anything is allocated or parsed, and the
//!   encoder refuses a larger block with an error naming both sizes. 64 KiB holds any
//!   realistic tag set while keeping a hostile block small next to a payload.
//! - **Validated like the header**: bad UTF-8, bad JSON, a field of the wrong type, a
//!   length past the frame or a non-canonical header length is a [`Error::Frame`].
//!   Unknown keys are ignored, so a newer writer's additions do not break an older reader.
//!
//! Version 2 introduced the block; version-1 frames (always H = 128) still decode.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What can be wrong with a frame. The frame module depends on nothing else in the
/// crate (the node processes' framing, fuzzed on its own): its errors become the
/// crate's error through `From` (in `error.rs`) at the first `?` outside it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes do not describe a valid frame (truncated, bad magic, shape and payload
    /// disagree, ...).
    #[error("invalid frame: {0}")]
    Frame(String),
    /// The payload is larger than the receiver's maximum.
    #[error("payload of {size} bytes exceeds the maximum of {max} bytes")]
    PayloadTooLarge { size: usize, max: usize },
}

pub type Result<T> = std::result::Result<T, Error>;

pub const MAGIC: [u8; 4] = *b"ZHOP";
pub const VERSION: u16 = 2;
/// The oldest version this build reads (version 1 had no metadata block).
pub const MIN_VERSION: u16 = 1;
/// The fixed header; a frame's payload starts at [`Header::header_len`], which adds the
/// metadata block when there is one.
pub const HEADER_LEN: usize = 128;
pub const MAX_DIMS: usize = 8;
/// Largest metadata block (its JSON text), in bytes.
pub const MAX_META: usize = 64 << 10;
/// Alignment of the payload: the header length is always a multiple of it.
pub const PAYLOAD_ALIGN: usize = 64;

/// Header flag: this (empty) frame marks the end of a stream, not data.
pub const FLAG_END_OF_STREAM: u16 = 1;
/// Header flag: this frame marks where a cancel was issued on its channel, not data;
/// its 8-byte payload is the cancel's id (little-endian). See `executor::cancel`.
pub const FLAG_CANCEL_MARK: u16 = 2;

/// The marker of cancel `id`: its header and payload.
pub fn cancel_mark(id: u64) -> (Header, [u8; 8]) {
    let mut header = Header::bytes_like(Kind::Bytes, 8).expect("8 bytes is a valid frame");
    header.flags = FLAG_CANCEL_MARK;
    (header, id.to_le_bytes())
}

/// The cancel id a marker frame carries (None: not a marker).
pub fn cancel_mark_id(header: &Header, payload: &[u8]) -> Option<u64> {
    if header.flags & FLAG_CANCEL_MARK == 0 {
        return None;
    }
    Some(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?))
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $value:expr => $text:expr),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name { $($variant = $value),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn from_u8(value: u8) -> Option<Self> {
                match value { $($value => Some($name::$variant),)+ _ => None }
            }

            /// The lower-case name used in Python and in error messages.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn from_name(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

wire_enum!(
    /// What a frame carries; decides which header fields are meaningful.
    Kind {
        Audio = 1 => "audio",
        Video = 2 => "video",
        Tensor = 3 => "tensor",
        Text = 4 => "text",
        Json = 5 => "json",
        Bytes = 6 => "bytes",
        Control = 7 => "control",
    }
);

wire_enum!(
    /// Element type of the payload. Names follow numpy (`np.dtype(name)` accepts them).
    DType {
        U8 = 1 => "uint8",
        I8 = 2 => "int8",
        U16 = 3 => "uint16",
        I16 = 4 => "int16",
        U32 = 5 => "uint32",
        I32 = 6 => "int32",
        U64 = 7 => "uint64",
        I64 = 8 => "int64",
        F16 = 9 => "float16",
        F32 = 10 => "float32",
        F64 = 11 => "float64",
        Bool = 12 => "bool",
    }
);

wire_enum!(
    /// Pixel layout of a video frame.
    PixelFormat {
        Rgb24 = 1 => "rgb24",
        Rgba = 2 => "rgba",
        Yuv420p = 3 => "yuv420p",
        Gray = 4 => "gray",
        // Compressed bitstream (VP8, H.264, AV1): opaque bytes, the codec in the metadata.
        Encoded = 255 => "encoded",
    }
);

impl DType {
    pub fn itemsize(self) -> usize {
        match self {
            DType::U8 | DType::I8 | DType::Bool => 1,
            DType::U16 | DType::I16 | DType::F16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }
}

/// The metadata block: what a frame says beside its header. Every field is optional and
/// left out of the JSON when unset, so a frame without any has no block at all. Field
/// names are the JSON keys (and the keys of `RawFrame.meta` in Python).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Meta {
    /// Free-form string tags of any frame (remotemedia `DataBuffer.metadata`). A node's
    /// output inherits its input's unless the node sets its own.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Text: the channel it is meant for (remotemedia's TTS nodes skip `"ui"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Text: its language (`"en"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Text: the encoding as the sender named it, when not `"utf-8"` (the payload is
    /// UTF-8 whatever this says: other encodings are refused on the way in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// Json: the schema the value follows (remotemedia `JsonData.schema_type`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_type: Option<String>,
    /// Bytes: the MIME type of the content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Tensor: a layout hint (`"NCHW"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// Tensor: it came as a numpy array; how to give it back as one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numpy: Option<NumpyMeta>,
    /// Video: the frame's number in its stream (the header's sequence is the channel's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_number: Option<u64>,
    /// Video: a keyframe (of an encoded stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_keyframe: Option<bool>,
    /// Video: the codec of an encoded frame (`"vp8"`, `"h264"`, `"av1"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    /// Video: the sender's name of a pixel format frames share with another (`"i420"`,
    /// which frames carry as yuv420p).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pixel_format: Option<String>,
    /// Audio: remotemedia `AudioBuffer.metadata_json`, as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_json: Option<String>,
    /// Bytes read from a file reference: which file, and which part of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileMeta>,
}

/// Memory order of an array that came as numpy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Order {
    #[default]
    C,
    F,
}

/// A tensor that came as a numpy array. The payload is always C-ordered (what an array
/// view of a frame is); `order` says how the sender laid it out, so it goes back that way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NumpyMeta {
    pub order: Order,
    /// The sender's spelling of the dtype (`"<f4"`), when not the frame's dtype name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
}

/// Where the bytes of a frame read from a file reference came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileMeta {
    pub path: String,
    pub filename: String,
    pub size: u64,
    pub offset: u64,
    pub length: u64,
    pub stream_id: String,
}

impl Meta {
    pub fn is_empty(&self) -> bool {
        *self == Meta::default()
    }

    /// The block's JSON text, or None when there is nothing to say.
    pub fn to_json(&self) -> Option<Vec<u8>> {
        if self.is_empty() {
            return None;
        }
        Some(serde_json::to_vec(self).expect("strings and numbers always serialize"))
    }

    /// Parses a block's JSON text (which must be an object).
    pub fn from_json(text: &[u8]) -> Result<Meta> {
        let first = text.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(frame_err("metadata block is not a JSON object"));
        }
        serde_json::from_slice(text).map_err(|e| frame_err(format!("metadata block: {e}")))
    }

    /// The metadata to keep on a frame of another kind made from this one: the tags,
    /// not what describes the old payload.
    pub fn tags(&self) -> Meta {
        Meta {
            metadata: self.metadata.clone(),
            ..Meta::default()
        }
    }
}

/// The header length for a block of `json_len` bytes: header + length word + JSON,
/// rounded up to [`PAYLOAD_ALIGN`].
fn padded_header_len(json_len: usize) -> usize {
    (HEADER_LEN + 4 + json_len).div_ceil(PAYLOAD_ALIGN) * PAYLOAD_ALIGN
}

fn meta_too_large(size: usize) -> Error {
    frame_err(format!(
        "the metadata block is {size} bytes, more than the cap of {MAX_META} bytes"
    ))
}

/// The payload of a control frame (UTF-8 JSON): a remotemedia `ControlMessage`.
/// `action` is the set member of its `message_type` oneof, with that member's fields
/// beside it; the fields of the other actions must be absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Control {
    /// `"cancel_speculation"`, `"batch_hint"`, `"deadline_warning"`, or None.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_timestamp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_timestamp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_batch_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_us: Option<u64>,
    pub segment_id: String,
    pub timestamp_ms: u64,
    /// The message's own metadata string (not the frame's tags).
    pub metadata: String,
}

/// Control actions and the fields each may carry.
pub const CONTROL_ACTIONS: &[(&str, &[&str])] = &[
    ("cancel_speculation", &["from_timestamp", "to_timestamp"]),
    ("batch_hint", &["suggested_batch_size"]),
    ("deadline_warning", &["deadline_us"]),
];

impl Control {
    /// Parses and checks a control frame's payload.
    pub fn from_json(text: &[u8]) -> Result<Control> {
        if text.len() > MAX_META {
            return Err(frame_err(format!(
                "a control message is {} bytes, more than the cap of {MAX_META} bytes",
                text.len()
            )));
        }
        let control: Control =
            serde_json::from_slice(text).map_err(|e| frame_err(format!("control message: {e}")))?;
        control.check()?;
        Ok(control)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("strings and numbers always serialize")
    }

    fn check(&self) -> Result<()> {
        let allowed: &[&str] = match self.action.as_deref() {
            None => &[],
            Some(action) => CONTROL_ACTIONS
                .iter()
                .find(|(name, _)| *name == action)
                .map(|(_, fields)| *fields)
                .ok_or_else(|| {
                    frame_err(format!(
                        "control message: unknown action {action:?} (cancel_speculation, \
                         batch_hint or deadline_warning)"
                    ))
                })?,
        };
        let given = [
            ("from_timestamp", self.from_timestamp.is_some()),
            ("to_timestamp", self.to_timestamp.is_some()),
            ("suggested_batch_size", self.suggested_batch_size.is_some()),
            ("deadline_us", self.deadline_us.is_some()),
        ];
        if let Some((field, _)) = given
            .iter()
            .find(|(field, set)| *set && !allowed.contains(field))
        {
            return Err(frame_err(format!(
                "control message: {field} does not belong to action {:?}",
                self.action.as_deref().unwrap_or("none")
            )));
        }
        Ok(())
    }
}

/// Everything a frame says about its payload. `shape[..ndim]` are the dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub dtype: DType,
    pub ndim: u8,
    pub pixel_format: Option<PixelFormat>,
    pub flags: u16,
    pub sample_rate: u32,
    pub channels: u32,
    pub width: u32,
    pub height: u32,
    pub session_id: u64,
    pub sequence: u64,
    pub timestamp_ns: u64,
    pub payload_len: u64,
    pub shape: [u64; MAX_DIMS],
    /// The metadata block (empty: none).
    pub meta: Meta,
}

fn frame_err(message: impl Into<String>) -> Error {
    Error::Frame(message.into())
}

fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

impl Header {
    /// A header for `kind`/`dtype` with the given shape; other fields zero. The payload
    /// length is derived from the shape.
    pub fn new(kind: Kind, dtype: DType, shape: &[u64]) -> Result<Header> {
        if shape.len() > MAX_DIMS {
            return Err(frame_err(format!(
                "{} dimensions given, at most {MAX_DIMS} are supported",
                shape.len()
            )));
        }
        let mut dims = [0u64; MAX_DIMS];
        dims[..shape.len()].copy_from_slice(shape);
        let mut header = Header {
            kind,
            dtype,
            ndim: shape.len() as u8,
            pixel_format: None,
            flags: 0,
            sample_rate: 0,
            channels: 0,
            width: 0,
            height: 0,
            session_id: 0,
            sequence: 0,
            timestamp_ns: 0,
            payload_len: 0,
            shape: dims,
            meta: Meta::default(),
        };
        header.payload_len = header.expected_payload_len()?;
        Ok(header)
    }

    /// Audio: `frames` samples per channel, interleaved. Mono audio is 1-D.
    pub fn audio(dtype: DType, frames: u64, channels: u32, sample_rate: u32) -> Result<Header> {
        let mut header = if channels == 1 {
            Header::new(Kind::Audio, dtype, &[frames])?
        } else {
            Header::new(Kind::Audio, dtype, &[frames, u64::from(channels)])?
        };
        header.channels = channels;
        header.sample_rate = sample_rate;
        header.validate()?;
        Ok(header)
    }

    /// Video: one picture of `width` × `height` in `format` (uint8 samples).
    pub fn video(format: PixelFormat, width: u32, height: u32) -> Result<Header> {
        let (w, h) = (u64::from(width), u64::from(height));
        let shape: &[u64] =
            match format {
                PixelFormat::Rgb24 => &[h, w, 3],
                PixelFormat::Rgba => &[h, w, 4],
                PixelFormat::Gray => &[h, w],
                PixelFormat::Yuv420p => &[w
                    .checked_mul(h)
                    .and_then(|n| n.checked_mul(3))
                    .ok_or_else(|| frame_err("video size overflows"))?
                    / 2],
                PixelFormat::Encoded => return Err(frame_err(
                    "an encoded video frame's size is its bitstream's: use Header::encoded_video",
                )),
            };
        let mut header = Header::new(Kind::Video, DType::U8, shape)?;
        header.pixel_format = Some(format);
        header.width = width;
        header.height = height;
        header.validate()?;
        Ok(header)
    }

    /// Encoded video: `len` bytes of a compressed bitstream (the codec goes in
    /// `meta.codec`) for a picture of `width` × `height` (0 when unknown).
    pub fn encoded_video(width: u32, height: u32, len: u64) -> Result<Header> {
        let mut header = Header::new(Kind::Video, DType::U8, &[len])?;
        header.pixel_format = Some(PixelFormat::Encoded);
        header.width = width;
        header.height = height;
        header.validate()?;
        Ok(header)
    }

    /// Text, JSON, raw bytes or a control message: a 1-D uint8 payload of `len` bytes.
    pub fn bytes_like(kind: Kind, len: u64) -> Result<Header> {
        let header = Header::new(kind, DType::U8, &[len])?;
        header.validate()?;
        Ok(header)
    }

    pub fn dims(&self) -> &[u64] {
        &self.shape[..usize::from(self.ndim)]
    }

    /// Bytes that `shape` × `dtype` occupy, or an error if that overflows.
    pub fn expected_payload_len(&self) -> Result<u64> {
        self.dims()
            .iter()
            .try_fold(self.dtype.itemsize() as u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| frame_err(format!("shape {:?} overflows", self.dims())))
    }

    /// Where the payload starts: the fixed header plus the padded metadata block.
    pub fn header_len(&self) -> usize {
        self.meta
            .to_json()
            .map_or(HEADER_LEN, |json| padded_header_len(json.len()))
    }

    /// Total frame size (header + metadata block + payload).
    pub fn frame_len(&self) -> usize {
        self.header_len() + self.payload_len as usize
    }

    /// Checks the header is self-consistent for its kind and its metadata block within
    /// [`MAX_META`].
    pub fn validate(&self) -> Result<()> {
        if let Some(json) = self.meta.to_json() {
            if json.len() > MAX_META {
                return Err(meta_too_large(json.len()));
            }
        }
        if usize::from(self.ndim) > MAX_DIMS {
            return Err(frame_err(format!("ndim {} exceeds {MAX_DIMS}", self.ndim)));
        }
        if self.shape[usize::from(self.ndim)..].iter().any(|&d| d != 0) {
            return Err(frame_err("shape has dimensions beyond ndim"));
        }
        let expected = self.expected_payload_len()?;
        if expected != self.payload_len {
            return Err(frame_err(format!(
                "shape {:?} of {} needs {expected} bytes but the payload length is {}",
                self.dims(),
                self.dtype,
                self.payload_len
            )));
        }
        // A zero dimension makes the payload empty whatever the others are, but an array
        // view still needs strides: the other dimensions × itemsize must fit an isize.
        let strides_fit = self
            .dims()
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(self.dtype.itemsize() as u64, |acc, &d| acc.checked_mul(d))
            .is_some_and(|n| n <= isize::MAX as u64);
        if !strides_fit {
            return Err(frame_err(format!("shape {:?} is too large", self.dims())));
        }
        if self.kind != Kind::Video && self.pixel_format.is_some() {
            return Err(frame_err(format!(
                "a {} frame has a pixel format",
                self.kind
            )));
        }
        match self.kind {
            Kind::Audio => self.validate_audio(),
            Kind::Video => self.validate_video(),
            Kind::Tensor => Ok(()),
            Kind::Text | Kind::Json | Kind::Bytes | Kind::Control => {
                if self.dtype != DType::U8 || self.ndim != 1 {
                    return Err(frame_err(format!(
                        "a {} frame must be 1-D uint8, got {}-D {}",
                        self.kind, self.ndim, self.dtype
                    )));
                }
                Ok(())
            }
        }
    }

    fn validate_audio(&self) -> Result<()> {
        if !matches!(
            self.dtype,
            DType::F32 | DType::I16 | DType::I32 | DType::F64
        ) {
            return Err(frame_err(format!(
                "audio samples must be float32, float64, int16 or int32, got {}",
                self.dtype
            )));
        }
        if self.sample_rate == 0 {
            return Err(frame_err("audio sample rate is 0"));
        }
        if self.channels == 0 {
            return Err(frame_err("audio has 0 channels"));
        }
        let consistent = match self.ndim {
            1 => self.channels == 1,
            2 => self.shape[1] == u64::from(self.channels),
            _ => false,
        };
        if !consistent {
            return Err(frame_err(format!(
                "audio shape {:?} does not match {} channel(s): expected (frames,) for mono \
                 or (frames, channels)",
                self.dims(),
                self.channels
            )));
        }
        Ok(())
    }

    fn validate_video(&self) -> Result<()> {
        let format = self
            .pixel_format
            .ok_or_else(|| frame_err("video frame without a pixel format"))?;
        if self.dtype != DType::U8 {
            return Err(frame_err(format!(
                "video samples must be uint8, got {}",
                self.dtype
            )));
        }
        let (w, h) = (u64::from(self.width), u64::from(self.height));
        let expected: Vec<u64> = match format {
            // Any number of bytes: the codec knows what they mean.
            PixelFormat::Encoded if self.ndim == 1 => return Ok(()),
            PixelFormat::Encoded => {
                return Err(frame_err(format!(
                    "an encoded video frame is 1-D bytes, got shape {:?}",
                    self.dims()
                )))
            }
            PixelFormat::Rgb24 => vec![h, w, 3],
            PixelFormat::Rgba => vec![h, w, 4],
            PixelFormat::Gray => vec![h, w],
            PixelFormat::Yuv420p => {
                if w % 2 != 0 || h % 2 != 0 {
                    return Err(frame_err(format!(
                        "yuv420p needs an even width and height, got {w}x{h}"
                    )));
                }
                // w × h fits in u64 (both are u32); × 3 may not.
                let bytes = (w * h)
                    .checked_mul(3)
                    .ok_or_else(|| frame_err("video size overflows"))?;
                vec![bytes / 2]
            }
        };
        if self.dims() != expected.as_slice() {
            return Err(frame_err(format!(
                "video shape {:?} does not match {format} {w}x{h} (expected {expected:?})",
                self.dims()
            )));
        }
        Ok(())
    }

    /// Writes the header and its metadata block into `out[..self.header_len()]`
    /// (`out` must be at least that long). Returns that length.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let json = self.meta.to_json();
        let header_len = json
            .as_ref()
            .map_or(HEADER_LEN, |json| padded_header_len(json.len()));
        let block = &mut out[..header_len];
        block.fill(0);
        if let Some(json) = &json {
            block[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&(json.len() as u32).to_le_bytes());
            block[HEADER_LEN + 4..HEADER_LEN + 4 + json.len()].copy_from_slice(json);
        }
        self.encode_fixed(&mut block[..HEADER_LEN], header_len);
        header_len
    }

    fn encode_fixed(&self, out: &mut [u8], header_len: usize) {
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        out[6] = self.kind as u8;
        out[7] = self.dtype as u8;
        out[8] = self.ndim;
        out[9] = self.pixel_format.map_or(0, |p| p as u8);
        out[10..12].copy_from_slice(&self.flags.to_le_bytes());
        out[12..16].copy_from_slice(&(header_len as u32).to_le_bytes());
        out[16..20].copy_from_slice(&self.sample_rate.to_le_bytes());
        out[20..24].copy_from_slice(&self.channels.to_le_bytes());
        out[24..28].copy_from_slice(&self.width.to_le_bytes());
        out[28..32].copy_from_slice(&self.height.to_le_bytes());
        out[32..40].copy_from_slice(&self.session_id.to_le_bytes());
        out[40..48].copy_from_slice(&self.sequence.to_le_bytes());
        out[48..56].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        out[56..64].copy_from_slice(&self.payload_len.to_le_bytes());
        for (i, dim) in self.shape.iter().enumerate() {
            out[64 + 8 * i..72 + 8 * i].copy_from_slice(&dim.to_le_bytes());
        }
    }

    /// The header and metadata block: what goes before the payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.header_len()];
        self.encode(&mut out);
        out
    }

    /// Parses and validates the header of a complete frame `buf` (header + payload).
    /// `max_payload` bounds the payload length before anything trusts it.
    pub fn decode(buf: &[u8], max_payload: usize) -> Result<Header> {
        if buf.len() < HEADER_LEN {
            return Err(frame_err(format!(
                "truncated: {} bytes, a frame header alone is {HEADER_LEN}",
                buf.len()
            )));
        }
        if buf[0..4] != MAGIC {
            return Err(frame_err(format!(
                "bad magic {:02x?}, expected {:02x?}",
                &buf[0..4],
                MAGIC
            )));
        }
        let version = read_u16(buf, 4);
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(frame_err(format!(
                "unsupported version {version}, this build reads {MIN_VERSION} to {VERSION}"
            )));
        }
        let kind =
            Kind::from_u8(buf[6]).ok_or_else(|| frame_err(format!("unknown kind {}", buf[6])))?;
        let dtype =
            DType::from_u8(buf[7]).ok_or_else(|| frame_err(format!("unknown dtype {}", buf[7])))?;
        let pixel_format = match buf[9] {
            0 => None,
            p => Some(
                PixelFormat::from_u8(p)
                    .ok_or_else(|| frame_err(format!("unknown pixel format {p}")))?,
            ),
        };
        let header_len = read_u32(buf, 12) as usize;
        let meta = if header_len == HEADER_LEN {
            Meta::default()
        } else {
            decode_meta(buf, version, header_len)?
        };
        let mut shape = [0u64; MAX_DIMS];
        for (i, dim) in shape.iter_mut().enumerate() {
            *dim = read_u64(buf, 64 + 8 * i);
        }
        let header = Header {
            kind,
            dtype,
            ndim: buf[8],
            pixel_format,
            flags: read_u16(buf, 10),
            sample_rate: read_u32(buf, 16),
            channels: read_u32(buf, 20),
            width: read_u32(buf, 24),
            height: read_u32(buf, 28),
            session_id: read_u64(buf, 32),
            sequence: read_u64(buf, 40),
            timestamp_ns: read_u64(buf, 48),
            payload_len: read_u64(buf, 56),
            shape,
            meta,
        };
        if header.payload_len > max_payload as u64 {
            return Err(Error::PayloadTooLarge {
                size: header.payload_len as usize,
                max: max_payload,
            });
        }
        let available = (buf.len() - header_len) as u64;
        if header.payload_len > available {
            return Err(frame_err(format!(
                "truncated: header announces {} payload bytes, {available} present",
                header.payload_len
            )));
        }
        header.validate()?;
        let body = &buf[header_len..header_len + header.payload_len as usize];
        if matches!(kind, Kind::Text | Kind::Json) {
            std::str::from_utf8(body)
                .map_err(|e| frame_err(format!("{kind} payload is not valid UTF-8: {e}")))?;
        }
        if kind == Kind::Control {
            Control::from_json(body)?;
        }
        Ok(header)
    }
}

/// Reads and checks the metadata block of a frame whose header length is not 128. Every
/// length is checked against the cap and the buffer before anything is parsed.
fn decode_meta(buf: &[u8], version: u16, header_len: usize) -> Result<Meta> {
    if version < 2 {
        return Err(frame_err(format!(
            "header length {header_len}: a version-{version} frame's header is {HEADER_LEN}"
        )));
    }
    let max_header_len = padded_header_len(MAX_META);
    if header_len < HEADER_LEN + PAYLOAD_ALIGN
        || !header_len.is_multiple_of(PAYLOAD_ALIGN)
        || header_len > max_header_len
    {
        return Err(frame_err(format!(
            "header length {header_len} is neither {HEADER_LEN} nor a multiple of              {PAYLOAD_ALIGN} from {} to {max_header_len}",
            HEADER_LEN + PAYLOAD_ALIGN
        )));
    }
    if buf.len() < header_len {
        return Err(frame_err(format!(
            "truncated: {} bytes, the header with its metadata block is {header_len}",
            buf.len()
        )));
    }
    let json_len = read_u32(buf, HEADER_LEN) as usize;
    if json_len > MAX_META {
        return Err(meta_too_large(json_len));
    }
    if padded_header_len(json_len) != header_len {
        return Err(frame_err(format!(
            "a metadata block of {json_len} bytes does not match header length {header_len}"
        )));
    }
    Meta::from_json(&buf[HEADER_LEN + 4..HEADER_LEN + 4 + json_len])
}

/// The payload bytes of a frame whose header `decode` accepted.
pub fn payload<'a>(buf: &'a [u8], header: &Header) -> &'a [u8] {
    // The header length word, not `header.header_len()`: no re-serialising the block.
    let start = read_u32(buf, 12) as usize;
    &buf[start..start + header.payload_len as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 30;

    fn frame(header: &Header, payload: &[u8]) -> Vec<u8> {
        let mut buf = header.to_bytes().to_vec();
        buf.extend_from_slice(payload);
        buf
    }

    #[test]
    fn every_kind_round_trips() {
        let headers = [
            Header::audio(DType::F32, 480, 1, 48_000).unwrap(),
            Header::audio(DType::I16, 160, 2, 16_000).unwrap(),
            Header::video(PixelFormat::Rgb24, 4, 2).unwrap(),
            Header::video(PixelFormat::Yuv420p, 4, 2).unwrap(),
            Header::video(PixelFormat::Gray, 3, 5).unwrap(),
            Header::new(Kind::Tensor, DType::F64, &[2, 3, 4]).unwrap(),
            Header::new(Kind::Tensor, DType::F32, &[]).unwrap(),
            Header::bytes_like(Kind::Text, 5).unwrap(),
            Header::bytes_like(Kind::Bytes, 0).unwrap(),
        ];
        for mut header in headers {
            header.sequence = 42;
            header.session_id = 7;
            header.timestamp_ns = 123_456_789;
            let body = vec![b'a'; header.payload_len as usize];
            let buf = frame(&header, &body);
            let decoded = Header::decode(&buf, MAX).unwrap();
            assert_eq!(decoded, header);
            assert_eq!(payload(&buf, &decoded), body.as_slice());
        }
    }

    #[test]
    fn rejects_truncated_and_foreign_frames() {
        let header = Header::new(Kind::Tensor, DType::F32, &[4]).unwrap();
        let buf = frame(&header, &[0; 16]);
        assert!(Header::decode(&buf[..100], MAX)
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        assert!(Header::decode(&buf[..130], MAX)
            .unwrap_err()
            .to_string()
            .contains("announces 16"));
        let mut bad = buf.clone();
        bad[0] = b'X';
        assert!(Header::decode(&bad, MAX)
            .unwrap_err()
            .to_string()
            .contains("magic"));
        let mut bad = buf.clone();
        bad[4] = 9;
        assert!(Header::decode(&bad, MAX)
            .unwrap_err()
            .to_string()
            .contains("version 9"));
        let mut bad = buf.clone();
        bad[7] = 99;
        assert!(Header::decode(&bad, MAX)
            .unwrap_err()
            .to_string()
            .contains("unknown dtype 99"));
        let mut bad = buf.clone();
        bad[64] = 5; // shape (5,) of float32 = 20 bytes, payload says 16
        assert!(Header::decode(&bad, MAX)
            .unwrap_err()
            .to_string()
            .contains("needs 20 bytes"));
    }

    #[test]
    fn enforces_the_payload_maximum_before_trusting_the_length() {
        let header = Header::new(Kind::Bytes, DType::U8, &[1000]).unwrap();
        let buf = frame(&header, &[0; 1000]);
        assert!(matches!(
            Header::decode(&buf, 999),
            Err(Error::PayloadTooLarge {
                size: 1000,
                max: 999
            })
        ));
    }

    #[test]
    fn shape_overflow_is_an_error_not_a_panic() {
        let mut header = Header::new(Kind::Tensor, DType::F64, &[1]).unwrap();
        header.ndim = 3;
        header.shape[..3].copy_from_slice(&[u64::MAX, u64::MAX, 2]);
        let buf = frame(&header, &[0; 8]);
        assert!(Header::decode(&buf, MAX)
            .unwrap_err()
            .to_string()
            .contains("overflows"));
    }

    #[test]
    fn empty_frames_with_huge_dimensions_are_rejected() {
        // 0 × 2^62 doubles is an empty payload, but no array view can have such strides.
        let mut header = Header::new(Kind::Tensor, DType::F64, &[0, 1]).unwrap();
        header.shape[1] = 1 << 62;
        assert_eq!(header.expected_payload_len().unwrap(), 0);
        let buf = frame(&header, &[]);
        assert!(Header::decode(&buf, MAX)
            .unwrap_err()
            .to_string()
            .contains("too large"));
    }

    #[test]
    fn kind_specific_rules() {
        assert!(Header::audio(DType::U8, 10, 1, 16_000).is_err());
        assert!(Header::audio(DType::F32, 10, 1, 0).is_err());
        assert!(Header::video(PixelFormat::Yuv420p, 3, 2).is_err());
        let mut header = Header::video(PixelFormat::Rgb24, 4, 2).unwrap();
        header.width = 5;
        assert!(header
            .validate()
            .unwrap_err()
            .to_string()
            .contains("does not match rgb24"));
        let text = Header::bytes_like(Kind::Text, 2).unwrap();
        let buf = frame(&text, &[0xff, 0xfe]);
        assert!(Header::decode(&buf, MAX)
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));
    }

    fn tagged(mut header: Header) -> Header {
        header
            .meta
            .metadata
            .insert("client".into(), "node ✓".into());
        header.meta.channel = Some("ui".into());
        header
    }

    #[test]
    fn the_metadata_block_round_trips_and_keeps_the_payload_aligned() {
        for len in [0usize, 1, 59, 60, 61, 200] {
            let mut header = Header::bytes_like(Kind::Text, 3).unwrap();
            header.meta.language = Some("x".repeat(len));
            let buf = frame(&header, b"abc");
            let start = read_u32(&buf, 12) as usize;
            assert_eq!(start, header.header_len());
            assert_eq!(start % PAYLOAD_ALIGN, 0);
            assert!(start >= HEADER_LEN + 4 + len + 13);
            let decoded = Header::decode(&buf, MAX).unwrap();
            assert_eq!(decoded, header);
            assert_eq!(payload(&buf, &decoded), b"abc");
        }
        // No metadata: no block, the version-1 size.
        let plain = Header::bytes_like(Kind::Bytes, 1).unwrap();
        assert_eq!(plain.header_len(), HEADER_LEN);
        assert_eq!(plain.to_bytes().len(), HEADER_LEN);
    }

    #[test]
    fn version_1_frames_still_decode() {
        let header = Header::new(Kind::Tensor, DType::F32, &[2]).unwrap();
        let mut buf = frame(&header, &[0; 8]);
        buf[4..6].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(Header::decode(&buf, MAX).unwrap(), header);
        // ... but a version-1 frame has no block.
        let mut tagged = frame(&tagged(header), &[0; 8]);
        tagged[4..6].copy_from_slice(&1u16.to_le_bytes());
        let message = Header::decode(&tagged, MAX).unwrap_err().to_string();
        assert!(
            message.contains("version-1 frame's header is 128"),
            "{message}"
        );
    }

    #[test]
    fn the_metadata_block_is_capped() {
        let mut header = Header::bytes_like(Kind::Bytes, 0).unwrap();
        header.meta.mime_type = Some("m".repeat(MAX_META));
        let message = header.validate().unwrap_err().to_string();
        assert!(
            message.contains(&format!("cap of {MAX_META} bytes")) && message.contains("65"),
            "{message}"
        );
        header.meta.mime_type = Some("m".repeat(MAX_META - 20));
        header.validate().unwrap();
        let buf = frame(&header, &[]);
        assert_eq!(Header::decode(&buf, MAX).unwrap(), header);
    }

    /// A frame with a metadata block whose JSON text is `json` (header length fixed up).
    fn with_block(json: &[u8]) -> Vec<u8> {
        let header = Header::bytes_like(Kind::Bytes, 1).unwrap();
        let header_len = padded_header_len(json.len());
        let mut buf = vec![0u8; header_len + 1];
        header.encode_fixed(&mut buf[..HEADER_LEN], header_len);
        buf[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&(json.len() as u32).to_le_bytes());
        buf[HEADER_LEN + 4..HEADER_LEN + 4 + json.len()].copy_from_slice(json);
        buf
    }

    #[test]
    fn corrupt_metadata_blocks_are_errors() {
        let error = |buf: &[u8]| Header::decode(buf, MAX).unwrap_err().to_string();
        assert!(Header::decode(&with_block(br#"{"mime_type":"a/b"}"#), MAX).is_ok());
        for (json, expected) in [
            (&b"not json"[..], "not a JSON object"),
            (b"[1, 2]", "not a JSON object"),
            (b"", "not a JSON object"),
            (b"{\"channel\": \"\xff\"}", "metadata block"),
            (br#"{"frame_number": "seven"}"#, "metadata block"),
            (br#"{"metadata": {"k": 1}}"#, "metadata block"),
            (br#"{"numpy": {"order": "Z"}}"#, "metadata block"),
            (br#"{"channel": "ui""#, "metadata block"),
        ] {
            let message = error(&with_block(json));
            assert!(message.contains(expected), "{json:?}: {message}");
        }
        // Unknown keys are a newer writer's: ignored.
        let header = Header::decode(&with_block(br#"{"from_the_future": 1}"#), MAX).unwrap();
        assert!(header.meta.is_empty());

        let good = with_block(br#"{"mime_type":"a/b"}"#);
        // The block length word past the cap, past the header length, or short of it.
        for json_len in [MAX_META as u32 + 1, 1000, 1, u32::MAX] {
            let mut bad = good.clone();
            bad[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&json_len.to_le_bytes());
            let message = error(&bad);
            assert!(
                message.contains("cap")
                    || message.contains("does not match header length")
                    || message.contains("metadata block"),
                "{json_len}: {message}"
            );
        }
        // Header lengths that are not 128 + a padded block.
        for header_len in [129u32, 160, 191, 1 << 30, u32::MAX] {
            let mut bad = good.clone();
            bad[12..16].copy_from_slice(&header_len.to_le_bytes());
            let message = error(&bad);
            assert!(
                message.contains("header length") || message.contains("truncated"),
                "{header_len}: {message}"
            );
        }
        // A block cut short by the end of the buffer.
        let message = error(&good[..150]);
        assert!(message.contains("truncated"), "{message}");
    }

    #[test]
    fn encoded_video_is_opaque_bytes() {
        let mut header = Header::encoded_video(640, 480, 1234).unwrap();
        header.meta.codec = Some("h264".into());
        header.meta.is_keyframe = Some(true);
        let body = vec![7u8; 1234];
        let decoded = Header::decode(&frame(&header, &body), MAX).unwrap();
        assert_eq!(decoded, header);
        assert_eq!(decoded.pixel_format, Some(PixelFormat::Encoded));
        assert!(Header::video(PixelFormat::Encoded, 2, 2).is_err());
        let mut two_d = header.clone();
        two_d.ndim = 2;
        two_d.shape[..2].copy_from_slice(&[617, 2]);
        assert!(two_d
            .validate()
            .unwrap_err()
            .to_string()
            .contains("1-D bytes"));
    }

    #[test]
    fn control_frames_carry_a_checked_control_message() {
        let control = Control {
            action: Some("cancel_speculation".into()),
            from_timestamp: Some(1),
            to_timestamp: Some(2),
            segment_id: "s".into(),
            timestamp_ms: 3,
            metadata: "{}".into(),
            ..Control::default()
        };
        let body = control.to_json();
        let header = Header::bytes_like(Kind::Control, body.len() as u64).unwrap();
        let buf = frame(&header, &body);
        assert_eq!(Header::decode(&buf, MAX).unwrap().kind, Kind::Control);
        assert_eq!(Control::from_json(payload(&buf, &header)).unwrap(), control);
        for (body, expected) in [
            (&br#"{"action":"reboot"}"#[..], "unknown action"),
            (
                br#"{"action":"batch_hint","deadline_us":1}"#,
                "does not belong",
            ),
            (br#"{"deadline_us":1}"#, "does not belong"),
            (br#"{"surprise":1}"#, "unknown field"),
            (b"nope", "control message"),
        ] {
            let header = Header::bytes_like(Kind::Control, body.len() as u64).unwrap();
            let message = Header::decode(&frame(&header, body), MAX)
                .unwrap_err()
                .to_string();
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic sweep; the fuzz target and hypothesis tests go further.
        let base = frame(&Header::audio(DType::I16, 8, 2, 8000).unwrap(), &[1; 32]);
        let with_meta = frame(
            &tagged(Header::audio(DType::I16, 8, 2, 8000).unwrap()),
            &[1; 32],
        );
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..40_000 {
            let base = if i % 2 == 0 { &base } else { &with_meta };
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut buf = base.clone();
            let at = (state as usize) % buf.len();
            buf[at] = (state >> 32) as u8;
            let len = ((state >> 40) as usize) % (buf.len() + 1);
            let _ = Header::decode(&buf[..len], MAX);
        }
    }
}
