use super::*;
use crate::frame;
use prost::Message;

const MAX: usize = 64 << 20;

/// FNV-1a: a checksum that does not need a dependency.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `len` deterministic pseudo-random bytes.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ len as u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn buffer(data: DataType) -> DataBuffer {
    DataBuffer {
        data_type: Some(data),
        metadata: Default::default(),
    }
}

fn audio(format: AudioFormat, channels: u32, samples: Vec<u8>, num_samples: u64) -> DataBuffer {
    buffer(DataType::Audio(AudioBuffer {
        samples,
        sample_rate: 48_000,
        channels,
        format: format as i32,
        num_samples,
        metadata_json: None,
    }))
}

fn video(format: ProtoPixelFormat, width: u32, height: u32, pixel_data: Vec<u8>) -> DataBuffer {
    buffer(DataType::Video(VideoFrame {
        pixel_data,
        width,
        height,
        format: format as i32,
        frame_number: 7,
        timestamp_us: 1_234_567,
        ..VideoFrame::default()
    }))
}

fn tensor(dtype: TensorDtype, shape: &[u64], data: Vec<u8>) -> DataBuffer {
    buffer(DataType::Tensor(TensorBuffer {
        data,
        shape: shape.to_vec(),
        dtype: dtype as i32,
        layout: String::new(),
    }))
}

fn numpy(dtype: &str, shape: &[u64], data: Vec<u8>) -> NumpyBuffer {
    NumpyBuffer {
        data,
        shape: shape.to_vec(),
        dtype: dtype.to_owned(),
        strides: Vec::new(),
        c_contiguous: true,
        f_contiguous: false,
    }
}

fn text(bytes: &[u8]) -> DataBuffer {
    buffer(DataType::Text(TextBuffer {
        text_data: bytes.to_vec(),
        encoding: "utf-8".to_owned(),
        ..TextBuffer::default()
    }))
}

fn json(payload: &str) -> DataBuffer {
    buffer(DataType::Json(JsonData {
        json_payload: payload.to_owned(),
        schema_type: String::new(),
    }))
}

/// DataBuffer → protobuf bytes → DataBuffer → frame (through the frame codec, as a
/// channel would carry it) → DataBuffer. Returns the frame header and the final buffer;
/// asserts the payload checksum never changes on the way.
fn round_trip(original: &DataBuffer) -> (Header, DataBuffer) {
    let wire = original.encode_to_vec();
    let decoded = DataBuffer::decode(wire.as_slice()).expect("protobuf decode");
    assert_eq!(&decoded, original, "protobuf round trip");
    let sum = checksum(payload(original.data_type.as_ref().unwrap()));

    let (header, bytes) = to_frame(&decoded, MAX).expect("to_frame");
    // The payload travels untouched, except a Fortran-ordered array's (reordered to C)
    // and a control message's (made from its fields).
    let fortran = header
        .meta
        .numpy
        .as_ref()
        .is_some_and(|n| n.order == Order::F);
    if !fortran && header.kind != Kind::Control {
        assert_eq!(checksum(&bytes), sum);
    }
    assert_eq!(header.payload_len, bytes.len() as u64);
    let (moved_header, moved) = into_frame(decoded, MAX, &[]).expect("into_frame");
    assert_eq!(moved_header, header);
    assert_eq!(moved, bytes);

    let mut frame_bytes = header.to_bytes().to_vec();
    frame_bytes.extend_from_slice(&bytes);
    let received = Header::decode(&frame_bytes, MAX).expect("the frame must validate");
    assert_eq!(received, header);
    let back = from_frame(&received, frame::payload(&frame_bytes, &received));
    assert_eq!(checksum(payload(back.data_type.as_ref().unwrap())), sum);
    let back = DataBuffer::decode(back.encode_to_vec().as_slice()).expect("protobuf decode");
    (header, back)
}

fn err(buffer: &DataBuffer) -> String {
    to_frame(buffer, MAX)
        .expect_err("must be rejected")
        .to_string()
}

#[test]
fn audio_round_trips() {
    for (format, dtype, channels) in [
        (AudioFormat::F32, DType::F32, 1),
        (AudioFormat::I16, DType::I16, 2),
        (AudioFormat::I32, DType::I32, 6),
    ] {
        let frames = 480u64;
        let len = (frames * u64::from(channels)) as usize * dtype.itemsize();
        let original = audio(format, channels, noise(len), frames * u64::from(channels));
        let (header, back) = round_trip(&original);
        assert_eq!(header.kind, Kind::Audio);
        assert_eq!(header.dtype, dtype);
        assert_eq!(header.shape[0], frames);
        assert_eq!((header.channels, header.sample_rate), (channels, 48_000));
        assert_eq!(back, original);
    }
}

#[test]
fn audio_num_samples_may_count_per_channel_or_be_absent() {
    for num_samples in [480, 960, 0] {
        let original = audio(AudioFormat::F32, 2, noise(480 * 2 * 4), num_samples);
        let (header, back) = round_trip(&original);
        assert_eq!(header.dims(), &[480, 2]);
        let DataType::Audio(back) = back.data_type.unwrap() else {
            panic!("audio expected")
        };
        assert_eq!(back.num_samples, 960, "zerohop sends the total");
    }
}

#[test]
fn float64_audio_goes_out_as_float32() {
    let samples: Vec<f64> = vec![0.0, 0.5, -0.25, 1.0];
    let payload: Vec<u8> = samples.iter().flat_map(|x| x.to_le_bytes()).collect();
    let header = Header::audio(DType::F64, 2, 2, 16_000).unwrap();
    let DataType::Audio(out) = from_frame(&header, &payload).data_type.unwrap() else {
        panic!("audio expected")
    };
    assert_eq!(out.format, AudioFormat::F32 as i32);
    assert_eq!(
        (out.channels, out.sample_rate, out.num_samples),
        (2, 16_000, 4)
    );
    let back: Vec<f32> = out
        .samples
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(back, [0.0, 0.5, -0.25, 1.0]);
}

#[test]
fn video_round_trips() {
    for (format, width, height, len) in [
        (ProtoPixelFormat::Rgb24, 4, 2, 24),
        (ProtoPixelFormat::Rgba32, 4, 2, 32),
        (ProtoPixelFormat::Gray8, 3, 5, 15),
        (ProtoPixelFormat::Yuv420p, 4, 2, 12),
    ] {
        let original = video(format, width, height, noise(len));
        let (header, back) = round_trip(&original);
        assert_eq!(header.kind, Kind::Video);
        assert_eq!(header.timestamp_ns, 1_234_567_000);
        assert_eq!(header.meta.frame_number, Some(7));
        assert_eq!(back, original);
    }
    // I420 is YUV420P under another name: a yuv420p frame, and I420 again on the way out.
    let original = video(ProtoPixelFormat::I420, 4, 2, noise(12));
    let (header, back) = round_trip(&original);
    assert_eq!(header.pixel_format, Some(PixelFormat::Yuv420p));
    assert_eq!(back, original);
}

#[test]
fn tensor_round_trips() {
    for (dtype, itemsize) in [
        (TensorDtype::F32, 4),
        (TensorDtype::F16, 2),
        (TensorDtype::I32, 4),
        (TensorDtype::I8, 1),
        (TensorDtype::U8, 1),
    ] {
        let original = tensor(dtype, &[2, 3, 4], noise(24 * itemsize));
        let (header, back) = round_trip(&original);
        assert_eq!(
            (header.kind, header.dims()),
            (Kind::Tensor, &[2u64, 3, 4][..])
        );
        assert_eq!(back, original);
    }
    let scalar = tensor(TensorDtype::F32, &[], noise(4));
    assert_eq!(round_trip(&scalar).1, scalar);
}

#[test]
fn numpy_round_trips() {
    // Dtypes that TensorDtype lacks come back as numpy, with C strides.
    for (name, itemsize) in [
        ("float64", 8),
        ("int64", 8),
        ("uint16", 2),
        ("int16", 2),
        ("uint32", 4),
        ("uint64", 8),
        ("bool", 1),
    ] {
        let mut original = numpy(name, &[3, 5], noise(15 * itemsize));
        original.strides = vec![5 * itemsize as i64, itemsize as i64];
        let (header, back) = round_trip(&buffer(DataType::Numpy(original.clone())));
        assert_eq!(header.dtype.name(), name);
        assert_eq!(back, buffer(DataType::Numpy(original)));
    }
    // Type strings are accepted too, and come back as they were spelled: numpy stays
    // numpy even where a TensorBuffer could say the dtype.
    for name in ["<f4", "=f4", "f4", "float32"] {
        let mut array = numpy(name, &[6], noise(24));
        array.strides = vec![4];
        array.f_contiguous = true;
        let original = buffer(DataType::Numpy(array));
        let (header, back) = round_trip(&original);
        assert_eq!(header.dtype, DType::F32);
        assert_eq!(back, original);
    }
    let (header, _) = round_trip(&buffer(DataType::Numpy(numpy("|u1", &[2], noise(2)))));
    assert_eq!(header.dtype, DType::U8);
    // Lengths of 1 may carry any stride, like numpy's own contiguity rule.
    let mut row = numpy("<i8", &[1, 4], noise(32));
    row.strides = vec![0, 8];
    row.f_contiguous = true;
    round_trip(&buffer(DataType::Numpy(row)));
}

#[test]
fn text_json_binary_round_trip() {
    let original = text("héllo, wörld ✓".as_bytes());
    let (header, back) = round_trip(&original);
    assert_eq!(header.kind, Kind::Text);
    assert_eq!(back, original);

    let original = json(r#"{"op": "add", "operands": [10, 20], "note": "ünïcode"}"#);
    let (header, back) = round_trip(&original);
    assert_eq!(header.kind, Kind::Json);
    assert_eq!(back, original);

    let original = buffer(DataType::Binary(BinaryBuffer {
        data: noise(1000),
        mime_type: String::new(),
    }));
    let (header, back) = round_trip(&original);
    assert_eq!(header.kind, Kind::Bytes);
    assert_eq!(back, original);

    let empty = text(b"");
    assert_eq!(round_trip(&empty).1, empty);
}

#[test]
fn large_payloads_round_trip() {
    // 10 s of 48 kHz stereo float32: 3.84 MB.
    let original = audio(AudioFormat::F32, 2, noise(3_840_000), 960_000);
    let (header, back) = round_trip(&original);
    assert_eq!(header.payload_len, 3_840_000);
    assert_eq!(back, original);

    // A 1080p rgb24 picture: 6.2 MB.
    let original = video(ProtoPixelFormat::Rgb24, 1920, 1080, noise(1920 * 1080 * 3));
    let (header, back) = round_trip(&original);
    assert_eq!(header.dims(), &[1080, 1920, 3]);
    assert_eq!(back, original);

    // A 10 MiB float32 tensor.
    let original = tensor(TensorDtype::F32, &[1024, 2560], noise(10 << 20));
    let (header, back) = round_trip(&original);
    assert_eq!(header.payload_len, 10 << 20);
    assert_eq!(back, original);
}

#[test]
fn rejects_truncated_and_mismatched_payloads() {
    // 479 frames where num_samples says 480.
    let message = err(&audio(AudioFormat::F32, 1, noise(479 * 4), 480));
    assert!(
        message.contains("DataBuffer.audio.num_samples"),
        "{message}"
    );
    // Not a whole number of stereo int16 frames.
    let message = err(&audio(AudioFormat::I16, 2, noise(10), 0));
    assert!(message.contains("DataBuffer.audio.samples"), "{message}");

    let message = err(&video(ProtoPixelFormat::Rgb24, 4, 2, noise(23)));
    assert!(message.contains("DataBuffer.video.pixel_data"), "{message}");
    let message = err(&video(ProtoPixelFormat::Yuv420p, 3, 2, noise(9)));
    assert!(message.contains("even width"), "{message}");
    let message = err(&video(ProtoPixelFormat::Gray8, 0, 2, Vec::new()));
    assert!(message.contains("empty picture"), "{message}");

    let message = err(&tensor(TensorDtype::F32, &[2, 3], noise(20)));
    assert!(
        message.contains("DataBuffer.tensor") && message.contains("needs 24"),
        "{message}"
    );
    let message = err(&buffer(DataType::Numpy(numpy("float64", &[4], noise(24)))));
    assert!(message.contains("DataBuffer.numpy"), "{message}");
    let message = err(&tensor(TensorDtype::U8, &[1; 9], noise(1)));
    assert!(message.contains("at most 8"), "{message}");
    // A shape whose byte size overflows is an error, not a panic or an allocation.
    let message = err(&tensor(TensorDtype::F32, &[u64::MAX, 4], noise(16)));
    assert!(message.contains("overflows"), "{message}");
}

#[test]
fn rejects_oversize_payloads_before_copying() {
    let cases = [
        audio(AudioFormat::F32, 1, noise(4000), 1000),
        video(ProtoPixelFormat::Gray8, 50, 20, noise(1000)),
        tensor(TensorDtype::U8, &[1000], noise(1000)),
        text(&[b'a'; 1000]),
        json(&format!("\"{}\"", "a".repeat(998))),
    ];
    for case in cases {
        let len = payload(case.data_type.as_ref().unwrap()).len();
        match to_frame(&case, 999) {
            Err(Error::PayloadTooLarge { size, max: 999 }) => assert_eq!(size, len),
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
        assert!(to_frame(&case, len).is_ok());
    }
}

#[test]
fn rejects_bad_text_and_json() {
    let message = err(&text(&[b'o', b'k', 0xff, 0xfe]));
    assert!(
        message.contains("DataBuffer.text.text_data") && message.contains("UTF-8"),
        "{message}"
    );
    let mut utf16 = text(b"h\0i\0");
    if let Some(DataType::Text(t)) = utf16.data_type.as_mut() {
        t.encoding = "utf-16".to_owned();
    }
    assert!(err(&utf16).contains("DataBuffer.text.encoding"));

    let message = err(&json("{\"unterminated\": "));
    assert!(
        message.contains("DataBuffer.json.json_payload"),
        "{message}"
    );
    // json_payload is a protobuf string: prost refuses invalid UTF-8 while decoding.
    let mut wire = json("\"ab\"").encode_to_vec();
    let at = wire.iter().position(|&b| b == b'a').unwrap();
    wire[at] = 0xff;
    assert!(DataBuffer::decode(wire.as_slice()).is_err());
}

#[test]
fn unknown_and_unsupported_enum_values_name_the_field() {
    let message =
        err(&audio(AudioFormat::F32, 1, noise(8), 2).tap(|a: &mut AudioBuffer| a.format = 7));
    assert!(
        message.contains("DataBuffer.audio.format: unknown value 7"),
        "{message}"
    );
    let message = err(&audio(AudioFormat::Unspecified, 1, noise(8), 2));
    assert!(
        message.contains("DataBuffer.audio.format: not set"),
        "{message}"
    );
    let message = err(&audio(AudioFormat::F32, 0, noise(8), 2));
    assert!(message.contains("DataBuffer.audio.channels"), "{message}");

    let message = err(
        &video(ProtoPixelFormat::Rgb24, 1, 1, noise(3)).tap(|v: &mut VideoFrame| v.format = 42)
    );
    assert!(
        message.contains("DataBuffer.video.format: unknown value 42"),
        "{message}"
    );
    let message = err(&video(ProtoPixelFormat::Nv12, 2, 2, noise(6)));
    assert!(message.contains("is not supported"), "{message}");
    let message = err(
        &video(ProtoPixelFormat::Encoded, 2, 2, noise(6)).tap(|v: &mut VideoFrame| v.codec = 9)
    );
    assert!(
        message.contains("DataBuffer.video.codec: unknown value 9"),
        "{message}"
    );

    let message =
        err(&tensor(TensorDtype::F32, &[1], noise(4)).tap(|t: &mut TensorBuffer| t.dtype = 99));
    assert!(
        message.contains("DataBuffer.tensor.dtype: unknown value 99"),
        "{message}"
    );
    for dtype in ["complex64", ">f4", "object", ""] {
        let message = err(&buffer(DataType::Numpy(numpy(dtype, &[1], noise(8)))));
        assert!(message.contains("DataBuffer.numpy.dtype"), "{message}");
    }
}

#[test]
fn rejects_numpy_that_is_neither_c_nor_fortran_contiguous() {
    let mut strided = numpy("float32", &[2, 3], noise(24));
    strided.strides = vec![4, 16];
    let message = err(&buffer(DataType::Numpy(strided)));
    assert!(
        message.contains("DataBuffer.numpy.strides")
            && message.contains("neither C- nor Fortran-contiguous"),
        "{message}"
    );
    let mut wrong_rank = numpy("float32", &[6], noise(24));
    wrong_rank.strides = vec![12, 4];
    assert!(err(&buffer(DataType::Numpy(wrong_rank))).contains("2 strides for 1"));
}

#[test]
fn empty_buffers_are_errors() {
    assert!(err(&DataBuffer::default()).contains("DataBuffer.data_type"));
    assert!(into_frame(DataBuffer::default(), MAX, &[]).is_err());
}

#[test]
fn video_timestamp_overflow_is_an_error() {
    let late = video(ProtoPixelFormat::Gray8, 1, 1, noise(1))
        .tap(|v: &mut VideoFrame| v.timestamp_us = u64::MAX);
    assert!(err(&late).contains("DataBuffer.video.timestamp_us"));
}

#[test]
fn frames_without_a_specific_buffer_become_numpy() {
    let header = Header::new(Kind::Tensor, DType::F64, &[2, 1, 3]).unwrap();
    let DataType::Numpy(out) = from_frame(&header, &noise(48)).data_type.unwrap() else {
        panic!("numpy expected")
    };
    assert_eq!(out.dtype, "float64");
    assert_eq!(out.strides, [24, 24, 8]);
    assert!(out.c_contiguous && !out.f_contiguous);
    // Fed back in, it is the same frame (noting it came as numpy).
    let (mut again, _) = to_frame(&buffer(DataType::Numpy(out)), MAX).unwrap();
    assert_eq!(again.meta.numpy.take().map(|n| n.order), Some(Order::C));
    assert_eq!(again, header);
}

#[test]
fn init_progress_is_a_new_stream_response_variant() {
    use crate::grpc::proto::{stream_response::Response, InitProgress, StreamResponse};
    let progress = StreamResponse {
        response: Some(Response::InitProgress(InitProgress {
            node_id: "asr".to_owned(),
            fraction: Some(0.25),
            message: "loading model".to_owned(),
        })),
    };
    let wire = progress.encode_to_vec();
    // Field 100, length-delimited: varint key (100 << 3) | 2 = 802 = [0xa2, 0x06].
    assert_eq!(&wire[..2], &[0xa2, 0x06]);
    assert_eq!(StreamResponse::decode(wire.as_slice()).unwrap(), progress);
    // A heartbeat without a fraction keeps "no fraction" distinct from 0.0.
    let heartbeat = InitProgress {
        fraction: None,
        ..InitProgress::default()
    };
    let back = InitProgress::decode(heartbeat.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back.fraction, None);
}

/// Builds a buffer and edits its one variant in place (tests only).
trait Tap {
    fn tap<T: VariantMut>(self, edit: impl FnOnce(&mut T)) -> Self;
}

impl Tap for DataBuffer {
    fn tap<T: VariantMut>(mut self, edit: impl FnOnce(&mut T)) -> Self {
        edit(T::variant_mut(self.data_type.as_mut().unwrap()).expect("variant"));
        self
    }
}

trait VariantMut: Sized {
    fn variant_mut(data: &mut DataType) -> Option<&mut Self>;
}

macro_rules! variant_mut {
    ($($variant:ident => $ty:ty),+) => {$(
        impl VariantMut for $ty {
            fn variant_mut(data: &mut DataType) -> Option<&mut Self> {
                match data {
                    DataType::$variant(inner) => Some(inner),
                    _ => None,
                }
            }
        }
    )+};
}

variant_mut!(Audio => AudioBuffer, Video => VideoFrame, Tensor => TensorBuffer);

fn tags(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every variant with every field set, as remotemedia's clients build them, with
/// `DataBuffer.metadata` on each.
fn every_variant() -> Vec<DataBuffer> {
    let fortran = NumpyBuffer {
        data: noise(2 * 3 * 8),
        shape: vec![2, 3],
        dtype: "<f8".to_owned(),
        strides: vec![8, 16],
        c_contiguous: false,
        f_contiguous: true,
    };
    let variants = vec![
        DataType::Audio(AudioBuffer {
            samples: noise(16),
            sample_rate: 16_000,
            channels: 2,
            format: AudioFormat::I16 as i32,
            num_samples: 8,
            metadata_json: Some(br#"{"speaker":"a"}"#.to_vec()),
        }),
        DataType::Video(VideoFrame {
            pixel_data: noise(24),
            width: 4,
            height: 2,
            format: ProtoPixelFormat::Rgb24 as i32,
            frame_number: 12,
            timestamp_us: 99,
            codec: VideoCodec::Unspecified as i32,
            is_keyframe: true,
        }),
        DataType::Video(VideoFrame {
            pixel_data: noise(1000),
            width: 640,
            height: 480,
            format: ProtoPixelFormat::Encoded as i32,
            frame_number: 3,
            timestamp_us: 5,
            codec: VideoCodec::H264 as i32,
            is_keyframe: true,
        }),
        DataType::Tensor(TensorBuffer {
            data: noise(24),
            shape: vec![1, 2, 3],
            dtype: TensorDtype::F32 as i32,
            layout: "NCHW".to_owned(),
        }),
        DataType::Numpy(fortran),
        DataType::Json(JsonData {
            json_payload: r#"{"a":[1,2]}"#.to_owned(),
            schema_type: "event".to_owned(),
        }),
        DataType::Text(TextBuffer {
            text_data: "hola".as_bytes().to_vec(),
            encoding: "utf-8".to_owned(),
            language: "es".to_owned(),
            channel: "ui".to_owned(),
        }),
        DataType::Binary(BinaryBuffer {
            data: noise(9),
            mime_type: "audio/wav".to_owned(),
        }),
        DataType::Control(ControlMessage {
            message_type: Some(MessageType::CancelSpeculation(CancelSpeculation {
                from_timestamp: 10,
                to_timestamp: 20,
            })),
            segment_id: "seg-1".to_owned(),
            timestamp_ms: 1234,
            metadata: r#"{"why":"barge-in"}"#.to_owned(),
        }),
        DataType::Control(ControlMessage {
            message_type: Some(MessageType::BatchHint(BatchHint {
                suggested_batch_size: 8,
            })),
            ..ControlMessage::default()
        }),
        DataType::Control(ControlMessage {
            message_type: Some(MessageType::DeadlineWarning(DeadlineWarning {
                deadline_us: 777,
            })),
            segment_id: "s".to_owned(),
            ..ControlMessage::default()
        }),
    ];
    variants
        .into_iter()
        .enumerate()
        .map(|(i, data)| DataBuffer {
            data_type: Some(data),
            metadata: tags(&[("client", "node"), ("chunk", &i.to_string())]),
        })
        .collect()
}

#[test]
fn every_field_of_every_variant_comes_back() {
    for original in every_variant() {
        let (header, back) = round_trip(&original);
        assert_eq!(back, original, "{:?}", header.kind);
        assert_eq!(header.meta.metadata.len(), 2);
    }
}

#[test]
fn typed_fields_land_in_the_metadata_block() {
    let all = every_variant();
    let headers: Vec<Header> = all.iter().map(|b| to_frame(b, MAX).unwrap().0).collect();
    assert_eq!(
        headers[0].meta.metadata_json.as_deref(),
        Some(r#"{"speaker":"a"}"#)
    );
    assert_eq!(headers[1].meta.frame_number, Some(12));
    assert_eq!(headers[1].meta.is_keyframe, Some(true));
    let encoded = &headers[2];
    assert_eq!(encoded.pixel_format, Some(PixelFormat::Encoded));
    assert_eq!((encoded.width, encoded.height), (640, 480));
    assert_eq!(encoded.dims(), &[1000]);
    assert_eq!(encoded.meta.codec.as_deref(), Some("h264"));
    assert_eq!(headers[3].meta.layout.as_deref(), Some("NCHW"));
    let numpy = headers[4].meta.numpy.clone().unwrap();
    assert_eq!(
        (numpy.order, numpy.dtype.as_deref()),
        (Order::F, Some("<f8"))
    );
    assert_eq!(headers[5].meta.schema_type.as_deref(), Some("event"));
    assert_eq!(headers[6].meta.channel.as_deref(), Some("ui"));
    assert_eq!(headers[6].meta.language.as_deref(), Some("es"));
    assert_eq!(headers[6].meta.encoding, None, "utf-8 is the default");
    assert_eq!(headers[7].meta.mime_type.as_deref(), Some("audio/wav"));
    assert_eq!(headers[8].kind, Kind::Control);
}

#[test]
fn a_fortran_array_becomes_a_c_ordered_frame_of_the_same_values() {
    // a[i][j] = 10 i + j for shape (2, 3), laid out in Fortran order: column by column.
    let values_f: [f32; 6] = [0.0, 10.0, 1.0, 11.0, 2.0, 12.0];
    let data: Vec<u8> = values_f.iter().flat_map(|v| v.to_le_bytes()).collect();
    let array = NumpyBuffer {
        data: data.clone(),
        shape: vec![2, 3],
        dtype: "float32".to_owned(),
        strides: vec![4, 8],
        c_contiguous: false,
        f_contiguous: true,
    };
    let (header, bytes) = to_frame(&buffer(DataType::Numpy(array.clone())), MAX).unwrap();
    let c: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(c, [0.0, 1.0, 2.0, 10.0, 11.0, 12.0]);
    let DataType::Numpy(back) = from_frame(&header, &bytes).data_type.unwrap() else {
        panic!("numpy expected")
    };
    assert_eq!(back, array);
    // Flags alone (no strides) say the order too.
    let mut flags_only = array.clone();
    flags_only.strides.clear();
    let (_, bytes) = to_frame(&buffer(DataType::Numpy(flags_only)), MAX).unwrap();
    assert_eq!(bytes.len(), 24);
    assert_eq!(&bytes[12..16], &10f32.to_le_bytes());
    // Three dimensions, through and back.
    let cube = NumpyBuffer {
        data: noise(2 * 3 * 4 * 2),
        shape: vec![2, 3, 4],
        dtype: "int16".to_owned(),
        strides: vec![2, 4, 12],
        c_contiguous: false,
        f_contiguous: true,
    };
    let (_, back) = round_trip(&buffer(DataType::Numpy(cube.clone())));
    assert_eq!(back, buffer(DataType::Numpy(cube)));
}

#[test]
fn a_node_that_changes_the_dtype_drops_the_old_spelling() {
    let mut header = Header::new(Kind::Tensor, DType::I64, &[2]).unwrap();
    header.meta.numpy = Some(NumpyMeta {
        order: Order::C,
        dtype: Some("<f4".to_owned()),
    });
    let DataType::Numpy(out) = from_frame(&header, &noise(16)).data_type.unwrap() else {
        panic!("numpy expected")
    };
    assert_eq!(out.dtype, "int64");
}

#[test]
fn oversize_metadata_is_refused_naming_the_cap() {
    let mut big = text(b"x");
    big.metadata = tags(&[("k", &"v".repeat(MAX_META + 1))]);
    let message = err(&big);
    assert!(
        message.contains("DataBuffer.metadata") && message.contains(&MAX_META.to_string()),
        "{message}"
    );
    // Just under the cap of raw bytes, the JSON's quotes push it over: still refused
    // by the block's own check, with the field named.
    let mut edge = text(b"x");
    edge.metadata = tags(&[("k", &"\"".repeat(MAX_META / 2))]);
    let message = err(&edge);
    assert!(message.contains("DataBuffer.metadata"), "{message}");
}

#[test]
fn audio_metadata_json_must_be_text() {
    let mut audio = audio(AudioFormat::F32, 1, noise(8), 2);
    if let Some(DataType::Audio(a)) = audio.data_type.as_mut() {
        a.metadata_json = Some(vec![0xff, 0xfe]);
    }
    assert!(err(&audio).contains("DataBuffer.audio.metadata_json"));
}

#[test]
fn control_messages_become_control_frames() {
    let control = buffer(DataType::Control(ControlMessage::default()));
    let (header, back) = round_trip(&control);
    assert_eq!(header.kind, Kind::Control);
    assert_eq!(back, control);
}

/// A scratch directory under the target dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("zerohop-convert-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("allowed/sub")).unwrap();
        std::fs::create_dir_all(dir.join("secret")).unwrap();
        std::fs::write(dir.join("allowed/sub/clip.bin"), b"0123456789").unwrap();
        std::fs::write(dir.join("secret/key"), b"hidden").unwrap();
        std::os::unix::fs::symlink(dir.join("secret/key"), dir.join("allowed/link")).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn file(path: &Path, offset: u64, length: u64) -> DataBuffer {
    DataBuffer {
        data_type: Some(DataType::File(FileBuffer {
            path: path.to_string_lossy().into_owned(),
            filename: "clip.bin".to_owned(),
            mime_type: "application/x-test".to_owned(),
            size: 10,
            offset,
            length,
            stream_id: "s1".to_owned(),
        })),
        metadata: tags(&[("k", "v")]),
    }
}

#[test]
fn file_references_are_read_inside_the_allowed_directories_only() {
    let scratch = Scratch::new("files");
    let roots = file_roots(&[scratch.0.join("allowed")]);
    let read = |buffer: DataBuffer| into_frame(buffer, MAX, &roots);
    let clip = scratch.0.join("allowed/sub/clip.bin");

    let (header, bytes) = read(file(&clip, 0, 0)).unwrap();
    assert_eq!(bytes, b"0123456789");
    assert_eq!(header.kind, Kind::Bytes);
    assert_eq!(header.meta.mime_type.as_deref(), Some("application/x-test"));
    assert_eq!(header.meta.file.as_ref().unwrap().stream_id, "s1");
    assert_eq!(header.meta.metadata["k"], "v");
    let back = from_frame(&header, &bytes);
    let Some(DataType::Binary(binary)) = back.data_type else {
        panic!("binary expected")
    };
    assert_eq!(
        (binary.data.as_slice(), binary.mime_type.as_str()),
        (&b"0123456789"[..], "application/x-test")
    );

    let (_, part) = read(file(&clip, 2, 3)).unwrap();
    assert_eq!(part, b"234");
    let (_, tail) = read(file(&clip, 7, 0)).unwrap();
    assert_eq!(tail, b"789");

    let message = read(file(&clip, 11, 0)).unwrap_err().to_string();
    assert!(message.contains("DataBuffer.file.offset"), "{message}");
    let message = read(file(&clip, 5, 6)).unwrap_err().to_string();
    assert!(message.contains("DataBuffer.file.length"), "{message}");
    assert!(matches!(
        into_frame(file(&clip, 0, 0), 4, &roots),
        Err(Error::PayloadTooLarge { size: 10, max: 4 })
    ));

    let escapes = [
        scratch.0.join("secret/key"),
        scratch.0.join("allowed/../secret/key"),
        scratch.0.join("allowed/link"),
        scratch.0.join("allowed/../secret/missing"),
        PathBuf::from("/etc/passwd"),
    ];
    for path in escapes {
        let message = read(file(&path, 0, 0)).unwrap_err().to_string();
        assert!(
            message.contains("DataBuffer.file.path") && message.contains("outside"),
            "{path:?}: {message}"
        );
    }
    let message = read(file(Path::new("allowed/sub/clip.bin"), 0, 0))
        .unwrap_err()
        .to_string();
    assert!(message.contains("not an absolute path"), "{message}");
    let message = read(file(&scratch.0.join("allowed/nope"), 0, 0))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("DataBuffer.file.path") && !message.contains("outside"),
        "{message}"
    );
    let message = read(file(&scratch.0.join("allowed/sub"), 0, 0))
        .unwrap_err()
        .to_string();
    assert!(message.contains("not a regular file"), "{message}");
    // No directories configured: every file is refused.
    let message = into_frame(file(&clip, 0, 0), MAX, &[])
        .unwrap_err()
        .to_string();
    assert!(message.contains("none are set"), "{message}");
}

/// A buffer's frame, the buffer kept (file references refused).
fn to_frame(buffer: &DataBuffer, max_payload: usize) -> Result<(Header, Vec<u8>)> {
    into_frame(buffer.clone(), max_payload, &[])
}
