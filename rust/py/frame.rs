//! `RawFrame`: one frame as Python sees it — header fields as properties and the
//! payload through the buffer protocol, so `np.asarray(raw)` is a zero-copy view with
//! the right dtype and shape that keeps the shared-memory sample alive.

use std::ffi::{c_int, CStr};
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use pyo3::{ffi, IntoPyObjectExt};
use serde_json::Value;

use crate::error::Error;
use crate::frame::{self, DType, Header, Kind, Meta, PixelFormat, HEADER_LEN, MAX_META};
use crate::ipc::{Loan, Sample, Sender};
use crate::py::errors::IntoPyResult;

/// What holds a frame's bytes. The payload pointer of a `RawFrame` stays valid for the
/// frame's whole life in every state: shared memory does not move, and a sent loan
/// keeps its sender (and with it the publisher's memory) alive.
pub enum Storage {
    /// Received from a channel: the iceoryx2 sample (or its heap copy).
    Received(Sample),
    /// Loaned from a sender, writable, not sent yet.
    Loaned(Loan, Arc<Sender>),
    /// A loan that was sent; the sender is kept so the memory stays mapped.
    Sent(Arc<Sender>),
    /// Decoded from or built in ordinary memory.
    Heap(Vec<u8>),
}

#[pyclass(module = "zerohop._native", name = "RawFrame", frozen)]
pub struct RawFrame {
    pub header: Header,
    payload: usize,
    writable: bool,
    dims: [ffi::Py_ssize_t; frame::MAX_DIMS],
    strides: [ffi::Py_ssize_t; frame::MAX_DIMS],
    storage: Mutex<Storage>,
}

/// PEP 3118 format strings as C strings, so a buffer export allocates nothing. Native
/// formats (frames are little-endian and so is every platform we build for) keep
/// `memoryview.tolist()` and friends working.
fn format_cstr(dtype: DType) -> &'static CStr {
    match dtype {
        DType::U8 => c"B",
        DType::I8 => c"b",
        DType::U16 => c"H",
        DType::I16 => c"h",
        DType::U32 => c"I",
        DType::I32 => c"i",
        DType::U64 => c"Q",
        DType::I64 => c"q",
        DType::F16 => c"e",
        DType::F32 => c"f",
        DType::F64 => c"d",
        DType::Bool => c"?",
    }
}

impl RawFrame {
    /// Wraps a frame whose payload starts at `payload` (after the header and its metadata
    /// block). The header must already be validated against those bytes.
    pub fn new(header: Header, payload: *const u8, storage: Storage) -> RawFrame {
        let writable = !matches!(storage, Storage::Received(_));
        let mut dims = [0; frame::MAX_DIMS];
        let mut strides = [0; frame::MAX_DIMS];
        let mut stride = header.dtype.itemsize() as ffi::Py_ssize_t;
        for i in (0..usize::from(header.ndim)).rev() {
            dims[i] = header.shape[i] as ffi::Py_ssize_t;
            strides[i] = stride;
            stride *= dims[i];
        }
        RawFrame {
            payload: payload as usize,
            writable,
            dims,
            strides,
            header,
            storage: Mutex::new(storage),
        }
    }

    /// Copies a complete encoded frame into ordinary memory after validating it.
    pub fn decode(bytes: &[u8], max_payload: usize) -> crate::error::Result<RawFrame> {
        let header = Header::decode(bytes, max_payload)?;
        let start = frame::payload(bytes, &header).as_ptr() as usize - bytes.as_ptr() as usize;
        let owned = bytes[..start + header.payload_len as usize].to_vec();
        // SAFETY: `start` is within `owned` (the payload follows it, possibly empty).
        let payload = unsafe { owned.as_ptr().add(start) };
        Ok(RawFrame::new(header, payload, Storage::Heap(owned)))
    }

    pub fn storage(&self) -> MutexGuard<'_, Storage> {
        self.storage.lock().expect("frame storage lock poisoned")
    }

    pub fn payload_bytes(&self) -> &[u8] {
        // SAFETY: `payload` points at `payload_len` initialised bytes owned by `storage`,
        // which never releases them while `self` lives (see `Storage`).
        unsafe {
            std::slice::from_raw_parts(self.payload as *const u8, self.header.payload_len as usize)
        }
    }

    fn whole_frame(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header.frame_len());
        out.extend_from_slice(&self.header.to_bytes());
        out.extend_from_slice(self.payload_bytes());
        out
    }
}

#[pymethods]
impl RawFrame {
    #[getter]
    fn kind(&self) -> &'static str {
        self.header.kind.name()
    }
    #[getter]
    fn dtype(&self) -> &'static str {
        self.header.dtype.name()
    }
    #[getter]
    fn shape(&self) -> Vec<u64> {
        self.header.dims().to_vec()
    }
    #[getter]
    fn sample_rate(&self) -> u32 {
        self.header.sample_rate
    }
    #[getter]
    fn channels(&self) -> u32 {
        self.header.channels
    }
    #[getter]
    fn width(&self) -> u32 {
        self.header.width
    }
    #[getter]
    fn height(&self) -> u32 {
        self.header.height
    }
    #[getter]
    fn pixel_format(&self) -> Option<&'static str> {
        self.header.pixel_format.map(PixelFormat::name)
    }
    #[getter]
    fn session_id(&self) -> u64 {
        self.header.session_id
    }
    #[getter]
    fn sequence(&self) -> u64 {
        self.header.sequence
    }
    #[getter]
    fn timestamp_ns(&self) -> u64 {
        self.header.timestamp_ns
    }
    #[getter]
    fn flags(&self) -> u16 {
        self.header.flags
    }
    /// True for the marker that ends a stream (carries no data).
    #[getter]
    fn is_end_of_stream(&self) -> bool {
        self.header.flags & frame::FLAG_END_OF_STREAM != 0
    }
    /// The id of the cancel this frame marks (see `executor::cancel`), or None for a
    /// frame of data.
    #[getter]
    fn cancel_mark(&self) -> Option<u64> {
        if self.header.flags & frame::FLAG_CANCEL_MARK == 0 {
            return None;
        }
        frame::cancel_mark_id(&self.header, self.payload_bytes())
    }
    /// The metadata block as a dict (JSON keys of `zerohop.frame::Meta`; empty if none).
    #[getter]
    fn meta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value = serde_json::to_value(&self.header.meta)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        json_to_py(py, &value)
    }
    #[getter]
    fn nbytes(&self) -> u64 {
        self.header.payload_len
    }
    /// True while this frame is an unsent loan (writable shared memory).
    #[getter]
    fn is_loan(&self) -> bool {
        matches!(*self.storage(), Storage::Loaned(..))
    }
    /// True if the payload lives in shared memory (received or loaned), not on the heap.
    #[getter]
    fn is_shared(&self) -> bool {
        !matches!(*self.storage(), Storage::Heap(_))
            && !matches!(&*self.storage(), Storage::Received(s) if !s.is_zero_copy())
    }

    /// The payload of a text, JSON or control frame as `str` (UTF-8 was checked on decode).
    fn text(&self) -> PyResult<String> {
        if !matches!(self.header.kind, Kind::Text | Kind::Json | Kind::Control) {
            return Err(PyValueError::new_err(format!(
                "a {} frame has no text",
                self.header.kind
            )));
        }
        String::from_utf8(self.payload_bytes().to_vec())
            .map_err(|e| Error::Frame(format!("payload is not valid UTF-8: {e}")))
            .py_err()
    }

    /// The complete encoded frame (header + payload) as bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.whole_frame())
    }

    fn __repr__(&self) -> String {
        format!(
            "RawFrame(kind={}, dtype={}, shape={:?}, sequence={})",
            self.header.kind,
            self.header.dtype,
            self.header.dims(),
            self.header.sequence
        )
    }

    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        if view.is_null() {
            return Err(PyBufferError::new_err("View is null"));
        }
        if (flags & ffi::PyBUF_WRITABLE) == ffi::PyBUF_WRITABLE && !this.writable {
            return Err(PyBufferError::new_err(
                "a received frame is read-only shared memory; copy it (np.array(x)) to modify",
            ));
        }
        let header = &this.header;
        let ndim = usize::from(header.ndim);
        // SAFETY: `view` is a valid Py_buffer the interpreter asked us to fill; every
        // pointer we store lives as long as `slf`, which the view keeps a reference to.
        unsafe {
            (*view).obj = slf.clone().into_any().into_ptr();
            (*view).buf = this.payload as *mut std::ffi::c_void;
            (*view).len = header.payload_len as ffi::Py_ssize_t;
            (*view).readonly = c_int::from(!this.writable);
            (*view).itemsize = header.dtype.itemsize() as ffi::Py_ssize_t;
            (*view).format = if (flags & ffi::PyBUF_FORMAT) == ffi::PyBUF_FORMAT {
                format_cstr(header.dtype).as_ptr() as *mut _
            } else {
                std::ptr::null_mut()
            };
            // A 0-d frame (a scalar tensor) must export NULL shape and strides.
            let nd = (flags & ffi::PyBUF_ND) == ffi::PyBUF_ND;
            (*view).ndim = if nd { ndim as c_int } else { 1 };
            (*view).shape = if nd && ndim > 0 {
                this.dims.as_ptr() as *mut _
            } else {
                std::ptr::null_mut()
            };
            (*view).strides = if (flags & ffi::PyBUF_STRIDES) == ffi::PyBUF_STRIDES && ndim > 0 {
                this.strides.as_ptr() as *mut _
            } else {
                std::ptr::null_mut()
            };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = std::ptr::null_mut();
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}

/// A JSON value as the Python object `json.loads` would give.
fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_bound_py_any(py)?,
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.into_bound_py_any(py)?,
            (_, Some(i)) => i.into_bound_py_any(py)?,
            _ => n.as_f64().unwrap_or(f64::NAN).into_bound_py_any(py)?,
        },
        Value::String(text) => text.into_bound_py_any(py)?,
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (key, item) in map {
                dict.set_item(key, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// A Python value (dicts, lists, str, int, float, bool, None) as JSON. `budget` counts
/// down the bytes of strings seen, so an oversize block fails before it is built.
fn py_to_json(obj: &Bound<'_, PyAny>, budget: &mut usize, depth: usize) -> PyResult<Value> {
    fn spend(budget: &mut usize, len: usize) -> PyResult<()> {
        *budget = budget
            .checked_sub(len)
            .ok_or_else(|| {
                Error::Frame(format!(
                    "the metadata block would exceed its cap of {MAX_META} bytes"
                ))
            })
            .py_err()?;
        Ok(())
    }
    if depth > 16 {
        return Err(Error::Frame("metadata is nested too deeply".into())).py_err();
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Ok(Value::from(obj.extract::<i64>()?));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::from(f.value()));
    }
    if let Ok(text) = obj.cast::<PyString>() {
        let text = text.to_str()?;
        spend(budget, text.len())?;
        return Ok(Value::String(text.to_owned()));
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        let mut map = serde_json::Map::new();
        for (key, item) in dict.iter() {
            let key: String = key
                .extract()
                .map_err(|_| {
                    Error::Frame(format!(
                        "metadata keys must be str, got {}",
                        key.get_type().name().map_or("?".into(), |n| n.to_string())
                    ))
                })
                .py_err()?;
            spend(budget, key.len())?;
            let item = py_to_json(&item, budget, depth + 1)?;
            map.insert(key, item);
        }
        return Ok(Value::Object(map));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let items = obj
            .try_iter()?
            .map(|item| py_to_json(&item?, budget, depth + 1))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(Value::Array(items));
    }
    Err(Error::Frame(format!(
        "metadata values must be str, int, float, bool, None, list or dict, got {}",
        obj.get_type().name().map_or("?".into(), |n| n.to_string())
    )))
    .py_err()
}

/// The metadata block from the dict the Python frame classes pass (the JSON keys of
/// [`Meta`]); None stays none. Bad types are a FrameError naming the key; a block over
/// [`MAX_META`] fails before it is built.
pub fn meta_from_py(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Meta> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(Meta::default());
    };
    if !obj.is_instance_of::<PyDict>() {
        return Err(Error::Frame("meta must be a dict".into())).py_err();
    }
    let mut budget = MAX_META;
    let value = py_to_json(obj, &mut budget, 0)?;
    serde_json::from_value(value)
        .map_err(|e| Error::Frame(format!("frame metadata: {e}")))
        .py_err()
}

/// Builds a header from the keyword arguments the Python data classes pass; with
/// `payload_len`, also checks that the payload is exactly what the shape needs.
#[allow(clippy::too_many_arguments)]
pub fn build_header(
    kind: &str,
    dtype: &str,
    shape: Vec<u64>,
    sample_rate: u32,
    channels: u32,
    width: u32,
    height: u32,
    pixel_format: Option<&str>,
    meta: Meta,
    payload_len: Option<usize>,
) -> crate::error::Result<Header> {
    let kind = Kind::from_name(kind)
        .ok_or_else(|| Error::Frame(format!("unknown frame kind '{kind}'")))?;
    let dtype = DType::from_name(dtype).ok_or_else(|| {
        Error::Frame(format!(
            "unsupported dtype '{dtype}' (supported: {})",
            DType::ALL
                .iter()
                .map(|d| d.name())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let mut header = Header::new(kind, dtype, &shape)?;
    header.sample_rate = sample_rate;
    header.channels = channels;
    header.width = width;
    header.height = height;
    header.pixel_format = match pixel_format {
        None => None,
        Some(name) => Some(
            PixelFormat::from_name(name)
                .ok_or_else(|| Error::Frame(format!("unknown pixel format '{name}'")))?,
        ),
    };
    header.meta = meta;
    header.validate()?;
    if let Some(len) = payload_len.filter(|&len| len as u64 != header.payload_len) {
        return Err(Error::Frame(format!(
            "payload has {len} bytes, shape {:?} of {} needs {}",
            header.dims(),
            header.dtype,
            header.payload_len
        )));
    }
    Ok(header)
}

/// Checks a payload a header's kind constrains beyond its size: a control message must
/// be one (what a receiver's decode would refuse is refused at the sender instead).
pub fn check_body(header: &Header, body: &[u8]) -> crate::error::Result<()> {
    if header.kind == Kind::Control {
        frame::Control::from_json(body)?;
    }
    Ok(())
}

/// A C-contiguous buffer exported by any Python object (numpy array, bytes, memoryview).
pub fn contiguous_buffer(obj: &Bound<'_, PyAny>) -> PyResult<PyUntypedBuffer> {
    let buffer = PyUntypedBuffer::get(obj)?;
    if !buffer.is_c_contiguous() {
        return Err(PyBufferError::new_err(
            "payload must be C-contiguous (use np.ascontiguousarray)",
        ));
    }
    Ok(buffer)
}

pub fn buffer_bytes(buffer: &PyUntypedBuffer) -> &[u8] {
    // SAFETY: the exporter keeps `len_bytes` bytes at `buf_ptr` while the buffer is held.
    unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.len_bytes()) }
}

/// `encode_frame(kind, dtype, shape, payload, ...) -> bytes`: a complete frame in ordinary
/// memory (what a test, the gRPC bridge or a file writer needs).
#[pyfunction]
#[pyo3(signature = (kind, dtype, shape, payload, *, sample_rate=0, channels=0, width=0, height=0,
                    pixel_format=None, session_id=0, sequence=0, timestamp_ns=0, meta=None))]
#[allow(clippy::too_many_arguments)]
pub fn encode_frame<'py>(
    py: Python<'py>,
    kind: &str,
    dtype: &str,
    shape: Vec<u64>,
    payload: &Bound<'py, PyAny>,
    sample_rate: u32,
    channels: u32,
    width: u32,
    height: u32,
    pixel_format: Option<&str>,
    session_id: u64,
    sequence: u64,
    timestamp_ns: u64,
    meta: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let buffer = contiguous_buffer(payload)?;
    let body = buffer_bytes(&buffer);
    let mut header = build_header(
        kind,
        dtype,
        shape,
        sample_rate,
        channels,
        width,
        height,
        pixel_format,
        meta_from_py(meta)?,
        Some(body.len()),
    )
    .py_err()?;
    check_body(&header, body).py_err()?;
    header.session_id = session_id;
    header.sequence = sequence;
    header.timestamp_ns = timestamp_ns;
    PyBytes::new_with(py, header.frame_len(), |out| {
        let start = header.encode(out);
        out[start..].copy_from_slice(body);
        Ok(())
    })
}

/// `decode_frame(data, max_payload=None) -> RawFrame`: validates and copies a frame.
#[pyfunction]
#[pyo3(signature = (data, max_payload=None))]
pub fn decode_frame(data: &Bound<'_, PyAny>, max_payload: Option<usize>) -> PyResult<RawFrame> {
    let buffer = contiguous_buffer(data)?;
    RawFrame::decode(buffer_bytes(&buffer), max_payload.unwrap_or(usize::MAX)).py_err()
}

/// Python-visible constants of the wire format.
pub fn constants(py: Python<'_>) -> PyResult<Vec<(&'static str, Py<PyAny>)>> {
    let names = |all: &[&'static str]| all.to_vec().into_py_any(py);
    Ok(vec![
        ("HEADER_LEN", HEADER_LEN.into_py_any(py)?),
        ("MAX_META", MAX_META.into_py_any(py)?),
        ("VIDEO_CODECS", names(&["vp8", "h264", "av1"])?),
        (
            "CONTROL_ACTIONS",
            names(
                &frame::CONTROL_ACTIONS
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>(),
            )?,
        ),
        ("MAX_DIMS", frame::MAX_DIMS.into_py_any(py)?),
        (
            "KINDS",
            names(&Kind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>())?,
        ),
        (
            "DTYPES",
            names(&DType::ALL.iter().map(|d| d.name()).collect::<Vec<_>>())?,
        ),
        (
            "PIXEL_FORMATS",
            names(
                &PixelFormat::ALL
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>(),
            )?,
        ),
    ])
}
