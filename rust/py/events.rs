//! What a session reports, as Python gets it: the events (`Progress`, `Ready`,
//! `SkippedFrame`) and each node's `NodeStatus`, frozen classes with `__match_args__`.
//!
//! Why classes and not dicts: one definition of each report's fields for both executors
//! (the in-process executor builds the same classes), checked by type checkers, and
//! matched by `case Progress(node_id, fraction):`. Events still answer `event["node_id"]`
//! and `event.get(...)` (with `"type"` their kind), as the dicts they replace did, so
//! callbacks written for those keep working; new code uses the attributes.

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::executor::{Event, NodeStatus};

/// Dict-style access to an event's fields, `"type"` giving `kind`.
fn item<'py>(event: &Bound<'py, PyAny>, kind: &str, key: &str) -> PyResult<Bound<'py, PyAny>> {
    if key == "type" {
        return Ok(pyo3::types::PyString::new(event.py(), kind).into_any());
    }
    let fields: Vec<String> = event.getattr("__match_args__")?.extract()?;
    if fields.iter().any(|f| f == key) {
        event.getattr(key)
    } else {
        Err(PyKeyError::new_err(key.to_string()))
    }
}

/// An event class: the struct, its constructor (every field, in order), dict-style
/// access and a repr.
macro_rules! event_class {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $kind:literal, { $($field:ident: $ftype:ty),+ $(,)? }) => {
        $(#[$doc])*
        #[pyclass(module = "zerohop._native", name = $name, frozen, eq, get_all)]
        #[derive(Clone, PartialEq)]
        pub struct $ty {
            $($field: $ftype),+
        }

        #[pymethods]
        impl $ty {
            #[new]
            fn new($($field: $ftype),+) -> Self {
                $ty { $($field),+ }
            }

            /// The event's kind, as the `"type"` key of the dicts events used to be.
            #[classattr]
            const KIND: &'static str = $kind;

            #[classattr]
            #[pyo3(name = "__match_args__")]
            fn match_args(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
                PyTuple::new(py, [$(stringify!($field)),+])
            }

            fn __getitem__<'py>(slf: &Bound<'py, Self>, key: &str) -> PyResult<Bound<'py, PyAny>> {
                item(slf.as_any(), $kind, key)
            }

            /// `event[key]`, or `default` when the event has no such field.
            #[pyo3(signature = (key, default=None))]
            fn get<'py>(
                slf: &Bound<'py, Self>,
                key: &str,
                default: Option<Bound<'py, PyAny>>,
            ) -> PyResult<Bound<'py, PyAny>> {
                match item(slf.as_any(), $kind, key) {
                    Err(err) if err.is_instance_of::<PyKeyError>(slf.py()) => {
                        Ok(default.unwrap_or_else(|| slf.py().None().into_bound(slf.py())))
                    }
                    other => other,
                }
            }

            fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
                let fields = [$(stringify!($field)),+]
                    .iter()
                    .map(|f| Ok(format!("{f}={}", slf.getattr(*f)?.repr()?)))
                    .collect::<PyResult<Vec<_>>>()?;
                Ok(format!("{}({})", $name, fields.join(", ")))
            }
        }
    };
}

event_class!(
    /// A node reports progress while it initializes (`fraction` in [0, 1], or None).
    PyProgress, "Progress", "progress", { node_id: String, fraction: Option<f64>, message: String }
);
event_class!(
    /// A node is ready: `init_secs` from its start to the end of its `initialize`.
    PyReady, "Ready", "ready", { node_id: String, init_secs: f64 }
);
event_class!(
    /// A frame a node failed on and skipped (`on_error="skip"`): the error, the node's
    /// traceback, the input frame's sequence number (None at flush).
    PySkippedFrame, "SkippedFrame", "frame_error",
    { node_id: String, error: String, traceback: String, sequence: Option<u64> }
);

/// The Python object of an executor event.
pub fn event_to_py(py: Python<'_>, event: Event) -> PyResult<Bound<'_, PyAny>> {
    Ok(match event {
        Event::Progress {
            node_id,
            fraction,
            message,
        } => Bound::new(
            py,
            PyProgress {
                node_id,
                fraction,
                message,
            },
        )?
        .into_any(),
        Event::Ready { node_id, init_secs } => {
            Bound::new(py, PyReady { node_id, init_secs })?.into_any()
        }
        Event::FrameError {
            node_id,
            error,
            traceback,
            sequence,
        } => Bound::new(
            py,
            PySkippedFrame {
                node_id,
                error,
                traceback,
                sequence,
            },
        )?
        .into_any(),
    })
}

/// One node of a running session: state, pid (None in process), start time (Unix
/// seconds), resident memory now and at its peak, its memory limit, init time, frames
/// in and out, and how its process ended.
#[pyclass(module = "zerohop._native", name = "NodeStatus", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct PyNodeStatus {
    node_id: String,
    state: String,
    pid: Option<i32>,
    started_at: Option<f64>,
    rss_bytes: Option<u64>,
    peak_rss_bytes: Option<u64>,
    memory_limit: Option<u64>,
    init_secs: Option<f64>,
    frames_in: u64,
    frames_out: u64,
    exit: Option<String>,
}

#[pymethods]
impl PyNodeStatus {
    #[new]
    #[pyo3(signature = (node_id, state, *, pid=None, started_at=None, rss_bytes=None,
                        peak_rss_bytes=None, memory_limit=None, init_secs=None, frames_in=0,
                        frames_out=0, exit=None))]
    #[allow(clippy::too_many_arguments)] // one per field
    fn new(
        node_id: String,
        state: String,
        pid: Option<i32>,
        started_at: Option<f64>,
        rss_bytes: Option<u64>,
        peak_rss_bytes: Option<u64>,
        memory_limit: Option<u64>,
        init_secs: Option<f64>,
        frames_in: u64,
        frames_out: u64,
        exit: Option<String>,
    ) -> Self {
        PyNodeStatus {
            node_id,
            state,
            pid,
            started_at,
            rss_bytes,
            peak_rss_bytes,
            memory_limit,
            init_secs,
            frames_in,
            frames_out,
            exit,
        }
    }

    #[classattr]
    #[pyo3(name = "__match_args__")]
    fn match_args() -> (&'static str, &'static str, &'static str) {
        ("node_id", "state", "pid")
    }

    fn __repr__(&self) -> String {
        format!(
            "NodeStatus(node_id={:?}, state={:?}, pid={:?}, frames_in={}, frames_out={})",
            self.node_id, self.state, self.pid, self.frames_in, self.frames_out
        )
    }
}

impl From<NodeStatus> for PyNodeStatus {
    fn from(status: NodeStatus) -> Self {
        PyNodeStatus {
            node_id: status.node_id,
            state: status.state.name().to_string(),
            pid: status.pid,
            started_at: status
                .started_at
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
            rss_bytes: status.rss_bytes,
            peak_rss_bytes: status.peak_rss_bytes,
            memory_limit: status.memory_limit,
            init_secs: status.init_secs,
            frames_in: status.frames_in,
            frames_out: status.frames_out,
            exit: status.exit.map(|e| e.to_string()),
        }
    }
}
