//! `NativeSession`: the executor's session as Python's `zerohop.session` drives it.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::executor::graph::{self, Offer, Placement};
use crate::executor::{
    Event, Graph, ImportSpec, LaunchSpec, NodeStatus, Output, Session, SessionConfig, SpawnMethod,
    Timing,
};
use crate::py::blocking::without_gil;
use crate::py::channel::{Guard, PyChannelSettings, PySender};
use crate::py::errors::IntoPyResult;
use crate::py::frame::{RawFrame, Storage};
use crate::py::graph::PyGraph;

fn seconds(value: f64, what: &str) -> PyResult<Duration> {
    if value.is_finite() && value >= 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(PyValueError::new_err(format!(
            "{what} must be a non-negative number of seconds"
        )))
    }
}

fn event_to_py(py: Python<'_>, event: Event) -> PyResult<Bound<'_, PyDict>> {
    let out = PyDict::new(py);
    match event {
        Event::Progress {
            node_id,
            fraction,
            message,
        } => {
            out.set_item("type", "progress")?;
            out.set_item("node_id", node_id)?;
            out.set_item("fraction", fraction)?;
            out.set_item("message", message)?;
        }
        Event::Ready { node_id, init_secs } => {
            out.set_item("type", "ready")?;
            out.set_item("node_id", node_id)?;
            out.set_item("init_secs", init_secs)?;
        }
        Event::FrameError {
            node_id,
            error,
            traceback,
            sequence,
        } => {
            out.set_item("type", "frame_error")?;
            out.set_item("node_id", node_id)?;
            out.set_item("error", error)?;
            out.set_item("traceback", traceback)?;
            out.set_item("sequence", sequence)?;
        }
    }
    Ok(out)
}

fn status_to_py(py: Python<'_>, status: NodeStatus) -> PyResult<Bound<'_, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("node_id", status.node_id)?;
    out.set_item("state", status.state.name())?;
    out.set_item("pid", status.pid)?;
    out.set_item(
        "started_at",
        status
            .started_at
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64()),
    )?;
    out.set_item("rss_bytes", status.rss_bytes)?;
    out.set_item("init_secs", status.init_secs)?;
    out.set_item("frames_in", status.frames_in)?;
    out.set_item("frames_out", status.frames_out)?;
    out.set_item("exit", status.exit.map(|e| e.to_string()))?;
    Ok(out)
}

/// The settings of a session as Python gives them: the dict of
/// `zerohop.session.session_args` (`NativeSession.start`, `zerohop.serve.plan`).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct SessionArgs {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<String>,
    channel: PyChannelSettings,
    init_timeout: f64,
    grace: f64,
    term_grace: f64,
    /// Seconds a ready node may stay silent (None: no liveness check).
    liveness_timeout: Option<f64>,
    max_processes: Option<usize>,
    heartbeat_secs: f64,
    imports: Vec<(String, String, Vec<String>)>,
    sys_path: Vec<String>,
    spawn_method: String,
}

impl SessionArgs {
    pub fn into_config(self) -> PyResult<SessionConfig> {
        let imports = self
            .imports
            .into_iter()
            .map(|(kind, value, classes)| match kind.as_str() {
                "module" => Ok(ImportSpec::Module {
                    name: value,
                    classes,
                }),
                "main_script" => Ok(ImportSpec::MainScript {
                    path: value,
                    classes,
                }),
                other => Err(PyValueError::new_err(format!(
                    "unknown import kind {other:?}"
                ))),
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(SessionConfig {
            channel: self.channel.0,
            timing: Timing {
                init_timeout: seconds(self.init_timeout, "init_timeout")?,
                grace: seconds(self.grace, "grace")?,
                term_grace: seconds(self.term_grace, "term_grace")?,
                liveness_timeout: self
                    .liveness_timeout
                    .map(|secs| seconds(secs, "liveness_timeout"))
                    .transpose()?,
            },
            launch: LaunchSpec {
                program: self.program.into(),
                args: self.args.into_iter().map(OsString::from).collect(),
                env: self
                    .env
                    .into_iter()
                    .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                    .collect(),
                cwd: self.cwd.map(Into::into),
            },
            spawn_method: self
                .spawn_method
                .parse::<SpawnMethod>()
                .map_err(PyValueError::new_err)?,
            max_processes: self.max_processes,
            heartbeat_secs: self.heartbeat_secs,
            imports,
            sys_path: self.sys_path,
        })
    }
}

/// One running session of the multiprocess executor.
#[pyclass(module = "zerohop._native", name = "NativeSession", frozen)]
pub struct NativeSession {
    inner: Arc<Session>,
}

#[pymethods]
impl NativeSession {
    /// Spawns every node of `graph` and waits until all are ready. `settings` is the
    /// dict `zerohop.multiprocess.session_args` builds; `on_event(dict)` is called with
    /// progress and ready events meanwhile.
    #[staticmethod]
    #[pyo3(signature = (graph, settings, *, on_event=None))]
    fn start(
        py: Python<'_>,
        graph: &PyGraph,
        settings: SessionArgs,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<NativeSession> {
        let graph = Graph::clone(&graph.graph);
        let config = settings.into_config()?;
        let session = without_gil(py, |gate| {
            let mut forward = |event: Event| match &on_event {
                Some(callback) => gate.call(|py| {
                    callback.call1(py, (event_to_py(py, event)?,))?;
                    Ok(())
                }),
                None => Ok(()),
            };
            Session::start(graph, &config, &mut forward, &|| gate.check_signals())
        })?;
        Ok(NativeSession {
            inner: Arc::new(session),
        })
    }

    #[getter]
    fn id(&self) -> String {
        self.inner.id.clone()
    }

    /// The sender of input `index`; a blocked send fails once the session has failed.
    fn input(&self, index: usize) -> PyResult<PySender> {
        let sender = self.inner.input(index).py_err()?;
        let name = format!("{}/input{index}", self.inner.id);
        let (check, explain) = (Arc::clone(&self.inner), Arc::clone(&self.inner));
        let guard = Guard {
            check: Box::new(move || check.check()),
            explain_closed: Box::new(move |err| explain.explain_closed(err)),
        };
        Ok(PySender::from_parts(
            sender,
            name,
            0,
            usize::MAX,
            Arc::new(guard),
        ))
    }

    /// Sends the end of stream into every input.
    #[pyo3(signature = (timeout=None))]
    fn end_inputs(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = timeout.map(|t| seconds(t, "timeout")).transpose()?;
        let inner = Arc::clone(&self.inner);
        without_gil(py, |gate| {
            inner.end_inputs(timeout, &|| gate.check_signals())
        })
    }

    /// The next output: `("frame", output_index, RawFrame)`, `("event", dict)` or
    /// `("end", None)`.
    #[pyo3(signature = (timeout=None))]
    fn recv<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let timeout = timeout.map(|t| seconds(t, "timeout")).transpose()?;
        let inner = Arc::clone(&self.inner);
        let output = without_gil(py, |gate| inner.recv(timeout, &|| gate.check_signals()))?;
        Ok(match output {
            Output::Frame {
                output,
                header,
                sample,
            } => {
                let payload = crate::frame::payload(&sample, &header).as_ptr();
                let frame = RawFrame::new(header, payload, Storage::Received(sample));
                ("frame", output, frame).into_pyobject(py)?.into_any()
            }
            Output::Event(event) => ("event", event_to_py(py, event)?)
                .into_pyobject(py)?
                .into_any(),
            Output::End => ("end", py.None()).into_pyobject(py)?.into_any(),
        })
    }

    /// One dict per node: state, pid, started_at, rss_bytes, init_secs, frames in/out.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let inner = Arc::clone(&self.inner);
        let statuses = py.detach(|| inner.status());
        let items = statuses
            .into_iter()
            .map(|s| status_to_py(py, s))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// Pids of the node processes.
    fn pids(&self) -> Vec<i32> {
        self.inner.supervisor().pids()
    }

    /// Stops every node and releases every channel (blocks until done).
    fn close(&self, py: Python<'_>) {
        let inner = Arc::clone(&self.inner);
        py.detach(|| inner.close());
    }
}

/// The native (Rust) node types: `(node_type, description, params JSON Schema as JSON)`.
#[pyfunction]
pub fn native_nodes() -> Vec<(&'static str, &'static str, String)> {
    crate::nodes::registry()
        .iter()
        .map(|info| {
            (
                info.node_type,
                info.description,
                info.params_schema.to_string(),
            )
        })
        .collect()
}

/// Checks `params_json` for native node type `node_type` the way a session start would;
/// raises ManifestError whose path starts at `params`.
#[pyfunction]
pub fn check_native_params(node_type: &str, params_json: &str) -> PyResult<()> {
    let params: serde_json::Value = serde_json::from_str(params_json)
        .map_err(|e| crate::error::Error::Manifest {
            path: "params".into(),
            message: e.to_string(),
        })
        .py_err()?;
    match crate::nodes::create(node_type, &params).py_err()? {
        Some(_) => Ok(()),
        None => Err(crate::error::Error::Manifest {
            path: "node_type".into(),
            message: format!("'{node_type}' is not a native node type"),
        })
        .py_err(),
    }
}

/// Where node `index` runs: `"native"`, `"multiprocess"` or `"inprocess"`, from what the
/// registry offers (`native`, `python`), the node's `runtime_hint` and `executor`, and
/// whether this session runs Python nodes as processes (`multiprocess`). Raises
/// ManifestError naming `nodes[index].runtime_hint` (or `.executor`) on a contradiction.
#[pyfunction]
#[pyo3(signature = (index, node_type, *, native, python, runtime_hint, executor, multiprocess))]
#[allow(clippy::too_many_arguments)]
pub fn route_node(
    index: usize,
    node_type: &str,
    native: bool,
    python: bool,
    runtime_hint: Option<&str>,
    executor: Option<&str>,
    multiprocess: bool,
) -> PyResult<&'static str> {
    let session = if multiprocess {
        Placement::Multiprocess
    } else {
        Placement::Inprocess
    };
    let offer = Offer { native, python };
    graph::route(index, node_type, offer, runtime_hint, executor, session)
        .map(graph::placement_name)
        .py_err()
}
