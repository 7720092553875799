//! The RuntimeData wire format: a fixed 128-byte little-endian header followed by the
//! payload. A frame is the only thing that travels through a channel, so both ends
//! agree on it without any serialization step: the payload is the array's raw bytes.
//!
//! ```text
//! offset size field            offset size field
//!   0     4  magic "ZHOP"        24     4  width (video)
//!   4     2  version (1)         28     4  height (video)
//!   6     1  kind                32     8  session id
//!   7     1  dtype               40     8  sequence number
//!   8     1  ndim (0..=8)        48     8  timestamp (ns, sender's clock)
//!   9     1  pixel format        56     8  payload length (bytes)
//!  10     2  flags (bit 0: end of stream)    64    64  shape: 8 × u64 (unused dims are 0)
//!  12     4  header length (128)
//!  16     4  sample rate (audio)
//!  20     4  channels (audio)   128     …  payload (64-byte aligned when the slice is)
//! ```
//!
//! [`Header::decode`] validates everything a receiver relies on before it builds an array
//! view: a frame that passes describes exactly `payload_len` bytes of a known dtype whose
//! shape multiplies out to that length, so a bad frame is an error, never a wrong array.

use crate::error::{Error, Result};

pub const MAGIC: [u8; 4] = *b"ZHOP";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 128;
pub const MAX_DIMS: usize = 8;

/// Header flag: this (empty) frame marks the end of a stream, not data.
pub const FLAG_END_OF_STREAM: u16 = 1;

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
        let shape: &[u64] = match format {
            PixelFormat::Rgb24 => &[h, w, 3],
            PixelFormat::Rgba => &[h, w, 4],
            PixelFormat::Gray => &[h, w],
            PixelFormat::Yuv420p => &[w
                .checked_mul(h)
                .and_then(|n| n.checked_mul(3))
                .ok_or_else(|| frame_err("video size overflows"))?
                / 2],
        };
        let mut header = Header::new(Kind::Video, DType::U8, shape)?;
        header.pixel_format = Some(format);
        header.width = width;
        header.height = height;
        header.validate()?;
        Ok(header)
    }

    /// Text, JSON or raw bytes: a 1-D uint8 payload of `len` bytes.
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

    /// Total frame size (header + payload).
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize
    }

    /// Checks the header is self-consistent for its kind.
    pub fn validate(&self) -> Result<()> {
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
            Kind::Text | Kind::Json | Kind::Bytes => {
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

    /// Writes the 128-byte header into `out[..HEADER_LEN]`.
    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..HEADER_LEN];
        out.fill(0);
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        out[6] = self.kind as u8;
        out[7] = self.dtype as u8;
        out[8] = self.ndim;
        out[9] = self.pixel_format.map_or(0, |p| p as u8);
        out[10..12].copy_from_slice(&self.flags.to_le_bytes());
        out[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
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

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
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
        if version != VERSION {
            return Err(frame_err(format!(
                "unsupported version {version}, this build reads {VERSION}"
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
        let header_len = read_u32(buf, 12);
        if header_len as usize != HEADER_LEN {
            return Err(frame_err(format!(
                "header length {header_len}, expected {HEADER_LEN}"
            )));
        }
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
        };
        if header.payload_len > max_payload as u64 {
            return Err(Error::PayloadTooLarge {
                size: header.payload_len as usize,
                max: max_payload,
            });
        }
        let available = (buf.len() - HEADER_LEN) as u64;
        if header.payload_len > available {
            return Err(frame_err(format!(
                "truncated: header announces {} payload bytes, {available} present",
                header.payload_len
            )));
        }
        header.validate()?;
        if matches!(kind, Kind::Text | Kind::Json) {
            std::str::from_utf8(&buf[HEADER_LEN..HEADER_LEN + header.payload_len as usize])
                .map_err(|e| frame_err(format!("{kind} payload is not valid UTF-8: {e}")))?;
        }
        Ok(header)
    }
}

/// The payload bytes of a frame whose header `decode` accepted.
pub fn payload<'a>(buf: &'a [u8], header: &Header) -> &'a [u8] {
    &buf[HEADER_LEN..HEADER_LEN + header.payload_len as usize]
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

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic sweep; the fuzz target and hypothesis tests go further.
        let base = frame(&Header::audio(DType::I16, 8, 2, 8000).unwrap(), &[1; 32]);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
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
