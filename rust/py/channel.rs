//! `Sender` / `Receiver` pyclasses over the core's shared-memory channels. Python's
//! `zerohop.channel` wraps them with the frame classes of `zerohop.data`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::Error;
use crate::frame::Header;
use crate::ipc::{self, ChannelConfig};
use crate::py::blocking::{without_gil, Gate};
use crate::py::errors::IntoPyResult;
use crate::py::frame::{
    buffer_bytes, build_header, check_body, contiguous_buffer, meta_from_py, RawFrame, Storage,
};

fn duration(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(PyValueError::new_err(format!(
            "timeout must be >= 0 seconds or None, got {s}"
        ))),
    }
}

/// The settings of a channel (`ipc::ChannelConfig`, the one shape they have): what
/// runtime.toml's `[channel]` section builds (`ChannelConfig.settings()`), and what
/// channel ends and sessions take. Checked when made.
#[pyclass(
    module = "zerohop._native",
    name = "ChannelSettings",
    frozen,
    eq,
    from_py_object
)]
#[derive(Clone, PartialEq)]
pub struct PyChannelSettings(pub ChannelConfig);

#[pymethods]
impl PyChannelSettings {
    #[new]
    #[pyo3(signature = (*, capacity=None, max_payload=None, initial_payload=None,
                        max_borrowed=None, max_loans=None))]
    fn new(
        capacity: Option<usize>,
        max_payload: Option<usize>,
        initial_payload: Option<usize>,
        max_borrowed: Option<usize>,
        max_loans: Option<usize>,
    ) -> PyResult<Self> {
        let default = ChannelConfig::default();
        let max_payload = max_payload.unwrap_or(default.max_payload);
        let cfg = ChannelConfig {
            capacity: capacity.unwrap_or(default.capacity),
            max_payload,
            // The default initial size is a hint: never past a smaller maximum.
            initial_payload: initial_payload.unwrap_or(default.initial_payload.min(max_payload)),
            max_borrowed: max_borrowed.unwrap_or(default.max_borrowed),
            max_loans: max_loans.unwrap_or(default.max_loans),
        };
        cfg.validate().py_err()?;
        Ok(PyChannelSettings(cfg))
    }

    /// Receiver queue depth in frames; a full queue makes `send` wait.
    #[getter]
    fn capacity(&self) -> usize {
        self.0.capacity
    }

    /// Largest payload of one frame, in bytes.
    #[getter]
    fn max_payload(&self) -> usize {
        self.0.max_payload
    }

    /// Frame size the sender's shared memory starts with, in bytes.
    #[getter]
    fn initial_payload(&self) -> usize {
        self.0.initial_payload
    }

    /// Zero-copy frames a receiver may hold at once.
    #[getter]
    fn max_borrowed(&self) -> usize {
        self.0.max_borrowed
    }

    /// Loans a sender may hold at once.
    #[getter]
    fn max_loans(&self) -> usize {
        self.0.max_loans
    }

    fn __repr__(&self) -> String {
        let c = &self.0;
        format!(
            "ChannelSettings(capacity={}, max_payload={}, initial_payload={}, max_borrowed={}, \
             max_loans={})",
            c.capacity, c.max_payload, c.initial_payload, c.max_borrowed, c.max_loans
        )
    }
}

/// `settings`, or the defaults.
fn config(settings: Option<&PyChannelSettings>) -> ChannelConfig {
    settings.map_or_else(ChannelConfig::default, |s| s.0.clone())
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of Python's `time.monotonic_ns()` and
/// `time.perf_counter_ns()` on Linux, so timestamps compare across processes.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// The writing end of a channel. Frames get this sender's session id and, unless the
/// caller gives one, the next sequence number and the current monotonic time.
#[pyclass(module = "zerohop._native", name = "Sender", frozen)]
pub struct PySender {
    inner: Arc<ipc::Sender>,
    #[pyo3(get)]
    name: String,
    #[pyo3(get)]
    session_id: u64,
    #[pyo3(get)]
    max_payload: usize,
    next_sequence: AtomicU64,
    /// Extra check while blocked (a session's failure), besides Ctrl-C.
    guard: Option<Arc<Guard>>,
}

/// Ties a sender to what it feeds (a session): a blocked send stops when `check`
/// fails, and a closed channel is explained by `explain_closed` (the node failure that
/// closed it, rather than the bare fact).
pub struct Guard {
    pub check: Box<dyn Fn() -> crate::error::Result<()> + Send + Sync>,
    pub explain_closed: Box<dyn Fn(Error) -> Error + Send + Sync>,
}

impl PySender {
    /// Wraps a sender the executor created (a session input).
    pub fn from_parts(
        inner: Arc<ipc::Sender>,
        name: String,
        session_id: u64,
        max_payload: usize,
        guard: Arc<Guard>,
    ) -> Self {
        PySender {
            inner,
            name,
            session_id,
            max_payload,
            next_sequence: AtomicU64::new(0),
            guard: Some(guard),
        }
    }

    fn guard(&self, gate: &Gate) -> crate::error::Result<()> {
        if let Some(guard) = &self.guard {
            (guard.check)()?;
        }
        gate.check_signals()
    }

    fn explain(&self, err: Error) -> Error {
        match (&err, &self.guard) {
            (Error::Closed(_), Some(guard)) => (guard.explain_closed)(err),
            _ => err,
        }
    }

    fn stamp(&self, header: &mut Header, sequence: Option<u64>, timestamp_ns: Option<u64>) {
        header.session_id = self.session_id;
        header.sequence =
            sequence.unwrap_or_else(|| self.next_sequence.fetch_add(1, Ordering::Relaxed));
        header.timestamp_ns = timestamp_ns.unwrap_or_else(now_ns);
    }
}

#[pymethods]
impl PySender {
    #[new]
    #[pyo3(signature = (name, settings=None, *, session_id=0))]
    fn new(
        py: Python<'_>,
        name: String,
        settings: Option<PyRef<'_, PyChannelSettings>>,
        session_id: u64,
    ) -> PyResult<Self> {
        let cfg = config(settings.as_deref());
        let max_payload = cfg.max_payload;
        let inner = py.detach(|| ipc::Sender::create(&name, &cfg)).py_err()?;
        Ok(PySender {
            inner: Arc::new(inner),
            name,
            session_id,
            max_payload,
            next_sequence: AtomicU64::new(0),
            guard: None,
        })
    }

    /// Loans a shared-memory frame whose payload the caller fills through the buffer
    /// protocol (a writable numpy view), then passes to `send_loan`.
    /// `meta` (the metadata block, see `RawFrame.meta`) sizes the loan; giving another
    /// block to `send_loan` costs a copy if it needs another size.
    #[pyo3(signature = (kind, dtype, shape, *, sample_rate=0, channels=0, width=0, height=0,
                        pixel_format=None, meta=None))]
    #[allow(clippy::too_many_arguments)]
    fn loan(
        &self,
        py: Python<'_>,
        kind: &str,
        dtype: &str,
        shape: Vec<u64>,
        sample_rate: u32,
        channels: u32,
        width: u32,
        height: u32,
        pixel_format: Option<&str>,
        meta: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<RawFrame> {
        let header = build_header(
            kind,
            dtype,
            shape,
            sample_rate,
            channels,
            width,
            height,
            pixel_format,
            meta_from_py(meta)?,
            None,
        )
        .py_err()?;
        let inner = Arc::clone(&self.inner);
        let len = header.frame_len();
        let mut loan = py.detach(|| inner.loan(len)).py_err()?;
        let start = header.encode(&mut loan);
        // SAFETY: the loan is `len` bytes, `start` of them the header and block.
        let payload = unsafe { loan.as_ptr().add(start) };
        Ok(RawFrame::new(
            header,
            payload,
            Storage::Loaned(loan, Arc::clone(&self.inner)),
        ))
    }

    /// Sends a loaned frame without copying. Returns the sequence number it carries.
    /// `meta` replaces the metadata block given at loan time; a block of another padded
    /// size than the loan's makes this one copy into a fresh slice instead.
    #[pyo3(signature = (frame, *, sequence=None, timestamp_ns=None, timeout=None, meta=None))]
    fn send_loan(
        &self,
        py: Python<'_>,
        frame: &Bound<'_, RawFrame>,
        sequence: Option<u64>,
        timestamp_ns: Option<u64>,
        timeout: Option<f64>,
        meta: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let timeout = duration(timeout)?;
        let new_meta = match meta {
            Some(m) if !m.is_none() => Some(meta_from_py(Some(m))?),
            _ => None,
        };
        let frame = frame.get();
        let mut storage = frame.storage();
        let (mut loan, owner) =
            match std::mem::replace(&mut *storage, Storage::Sent(Arc::clone(&self.inner))) {
                Storage::Loaned(loan, owner) => (loan, owner),
                other => {
                    *storage = other;
                    return Err(PyValueError::new_err(
                        "only an unsent frame loaned from a Sender can be sent with send_loan",
                    ));
                }
            };
        if !Arc::ptr_eq(&owner, &self.inner) {
            *storage = Storage::Loaned(loan, owner);
            return Err(PyValueError::new_err(
                "this frame was loaned from another Sender",
            ));
        }
        let mut header = frame.header.clone();
        self.stamp(&mut header, sequence, timestamp_ns);
        let loaned_len = frame.header.header_len();
        if let Some(meta) = new_meta {
            header.meta = meta;
            header.validate().py_err()?;
        }
        let sent_sequence = header.sequence;
        let inner = Arc::clone(&self.inner);
        if header.header_len() != loaned_len {
            // The payload cannot move inside the slice: send header, block and payload
            // with one copy (the loan is dropped unsent).
            let bytes = header.to_bytes();
            let body = &loan[loaned_len..];
            without_gil(py, |gate| {
                inner
                    .send_copy(&[&bytes, body], timeout, &|| self.guard(gate))
                    .map_err(|e| self.explain(e))
            })?;
            return Ok(sent_sequence);
        }
        header.encode(&mut loan);
        // The storage lock is held across the send: the frame is in no usable state until
        // it has either gone out or failed (and a failed loan is gone either way).
        without_gil(py, move |gate| {
            inner
                .send(loan, timeout, &|| self.guard(gate))
                .map_err(|e| self.explain(e))
        })?;
        Ok(sent_sequence)
    }

    /// Sends a frame built from `payload` (any C-contiguous buffer) with one copy into
    /// shared memory. Returns the sequence number it carries.
    #[pyo3(signature = (kind, dtype, shape, payload, *, sample_rate=0, channels=0, width=0,
                        height=0, pixel_format=None, sequence=None, timestamp_ns=None, timeout=None,
                        meta=None))]
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        py: Python<'_>,
        kind: &str,
        dtype: &str,
        shape: Vec<u64>,
        payload: &Bound<'_, PyAny>,
        sample_rate: u32,
        channels: u32,
        width: u32,
        height: u32,
        pixel_format: Option<&str>,
        sequence: Option<u64>,
        timestamp_ns: Option<u64>,
        timeout: Option<f64>,
        meta: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let timeout = duration(timeout)?;
        let buffer = contiguous_buffer(payload)?;
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
            Some(buffer.len_bytes()),
        )
        .py_err()?;
        let body = buffer_bytes(&buffer);
        check_body(&header, body).py_err()?;
        self.stamp(&mut header, sequence, timestamp_ns);
        let sequence = header.sequence;
        let inner = Arc::clone(&self.inner);
        let bytes = header.to_bytes();
        without_gil(py, |gate| {
            inner
                .send_copy(&[&bytes, body], timeout, &|| self.guard(gate))
                .map_err(|e| self.explain(e))
        })?;
        Ok(sequence)
    }

    /// Forwards a frame (e.g. one just received) with one copy, keeping its header and
    /// metadata block unless `sequence` / `timestamp_ns` / `meta` are given.
    #[pyo3(signature = (frame, *, sequence=None, timestamp_ns=None, timeout=None, meta=None))]
    fn send_frame(
        &self,
        py: Python<'_>,
        frame: &Bound<'_, RawFrame>,
        sequence: Option<u64>,
        timestamp_ns: Option<u64>,
        timeout: Option<f64>,
        meta: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let timeout = duration(timeout)?;
        let frame = frame.get();
        let mut header = frame.header.clone();
        if meta.is_some_and(|m| !m.is_none()) {
            header.meta = meta_from_py(meta)?;
            header.validate().py_err()?;
        }
        header.session_id = self.session_id;
        header.sequence = sequence.unwrap_or(header.sequence);
        header.timestamp_ns = timestamp_ns.unwrap_or(header.timestamp_ns);
        let sequence = header.sequence;
        let bytes = header.to_bytes();
        let inner = Arc::clone(&self.inner);
        let body = frame.payload_bytes();
        without_gil(py, |gate| {
            inner
                .send_copy(&[&bytes, body], timeout, &|| self.guard(gate))
                .map_err(|e| self.explain(e))
        })?;
        Ok(sequence)
    }

    /// Waits until the receiver has taken every frame sent so far. Closing a sender
    /// whose receiver has not mapped its latest memory yet would lose those frames.
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = duration(timeout)?;
        let inner = Arc::clone(&self.inner);
        without_gil(py, |gate| {
            inner
                .flush(timeout, &|| self.guard(gate))
                .map_err(|e| self.explain(e))
        })
    }

    /// Sends the marker of cancel `id` (see `executor::cancel`): the receiver drops
    /// the frames sent before it once it has heard of the cancel.
    #[pyo3(signature = (id, *, timeout=None))]
    fn send_cancel_mark(&self, py: Python<'_>, id: u64, timeout: Option<f64>) -> PyResult<()> {
        let timeout = duration(timeout)?;
        let (mut header, payload) = crate::frame::cancel_mark(id);
        // Not data: no sequence number of the stream is used up.
        self.stamp(&mut header, Some(0), None);
        let bytes = header.to_bytes();
        let inner = Arc::clone(&self.inner);
        without_gil(py, |gate| {
            inner
                .send_copy(&[&bytes, &payload], timeout, &|| self.guard(gate))
                .map_err(|e| self.explain(e))
        })
    }

    /// Sends the end-of-stream marker: no more frames follow on this channel.
    #[pyo3(signature = (*, timeout=None))]
    fn send_end_of_stream(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = duration(timeout)?;
        let mut header = Header::bytes_like(crate::frame::Kind::Bytes, 0).py_err()?;
        header.flags = crate::frame::FLAG_END_OF_STREAM;
        self.stamp(&mut header, None, None);
        let bytes = header.to_bytes();
        let inner = Arc::clone(&self.inner);
        without_gil(py, |gate| {
            inner
                .send_copy(&[&bytes], timeout, &|| self.guard(gate))
                .map_err(|e| self.explain(e))
        })
    }

    fn __repr__(&self) -> String {
        format!("Sender(name={:?})", self.name)
    }
}

/// The reading end of a channel.
#[pyclass(module = "zerohop._native", name = "Receiver", frozen)]
pub struct PyReceiver {
    inner: Arc<ipc::Receiver>,
    #[pyo3(get)]
    name: String,
    #[pyo3(get)]
    max_payload: usize,
}

impl PyReceiver {
    fn wrap(&self, sample: ipc::Sample) -> PyResult<RawFrame> {
        let header = Header::decode(&sample, self.max_payload).py_err()?;
        let payload = crate::frame::payload(&sample, &header).as_ptr();
        Ok(RawFrame::new(header, payload, Storage::Received(sample)))
    }
}

#[pymethods]
impl PyReceiver {
    #[new]
    #[pyo3(signature = (name, settings=None))]
    fn new(
        py: Python<'_>,
        name: String,
        settings: Option<PyRef<'_, PyChannelSettings>>,
    ) -> PyResult<Self> {
        let cfg = config(settings.as_deref());
        let max_payload = cfg.max_payload;
        let inner = py.detach(|| ipc::Receiver::open(&name, &cfg)).py_err()?;
        Ok(PyReceiver {
            inner: Arc::new(inner),
            name,
            max_payload,
        })
    }

    /// Blocks (without the GIL) until a frame arrives. `timeout` in seconds; None waits
    /// forever. Raises ZerohopTimeoutError, ChannelClosedError or FrameError.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<RawFrame> {
        let timeout = duration(timeout)?;
        let inner = Arc::clone(&self.inner);
        let sample = without_gil(py, |gate| inner.recv(timeout, &|| gate.check_signals()))?;
        self.wrap(sample)
    }

    /// The next frame if one is waiting, else None. Never blocks.
    fn try_recv(&self) -> PyResult<Option<RawFrame>> {
        match self.inner.try_recv().py_err()? {
            Some(sample) => self.wrap(sample).map(Some),
            None => Ok(None),
        }
    }

    /// A file descriptor that becomes readable when a frame may be waiting (for
    /// `loop.add_reader`); drain with `try_recv` after it fires.
    fn wait_fd(&self) -> i32 {
        self.inner.wait_fd()
    }

    fn __repr__(&self) -> String {
        format!("Receiver(name={:?})", self.name)
    }
}

/// Removes shared memory left behind by dead processes; returns how many were reclaimed.
#[pyfunction]
pub fn reclaim_dead(py: Python<'_>) -> PyResult<usize> {
    py.detach(ipc::reclaim_dead).py_err()
}
