//! `NativeSession`: the executor's session as Python's `zerohop.session` drives it.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::executor::graph::{self, Offer, Placement};
use crate::executor::{
    Event, Graph, ImportSpec, LaunchSpec, Output, Session, SessionConfig, SpawnMethod, Timing,
};
use crate::grpc::dial::HostAccess;
use crate::py::blocking::without_gil;
use crate::py::channel::{Guard, PyChannelSettings, PySender};
use crate::py::errors::{named_node, node_manifest_error, IntoPyResult};
use crate::py::events::{event_to_py, PyNodeStatus};
use crate::py::frame::{RawFrame, Storage};
use crate::py::graph::PyGraph;

/// `value` seconds as a duration, or a ValueError naming `what`.
pub(crate) fn seconds(value: f64, what: &str) -> PyResult<Duration> {
    if value.is_finite() && value >= 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(PyValueError::new_err(format!(
            "{what} must be a non-negative number of seconds"
        )))
    }
}

/// One `[hosts."h:p"]` of runtime.toml as Python reads it: (key, token, CA bundle,
/// connect timeout in seconds).
type HostEntry = (String, Option<String>, Option<Vec<u8>>, f64);

/// Everything a session needs besides its graph (the executor's `SessionConfig`),
/// checked when made: `zerohop.multiprocess.session_settings` builds it from the
/// runtime configuration, and `NativeSession.start` and the gRPC planner take it as
/// it is.
#[pyclass(module = "zerohop._native", name = "SessionSettings", frozen)]
pub struct PySessionSettings(pub SessionConfig);

#[pymethods]
impl PySessionSettings {
    /// `imports`: `(kind, name or path, classes)` with kind `"module"` or
    /// `"main_script"`; times in seconds; `liveness_timeout` None turns the check off;
    /// `hosts`: runtime.toml `[hosts]`, one (key, token, CA bundle, connect timeout) each;
    /// `session_memory_limit`: bytes all the session's node processes may hold together.
    #[new]
    #[pyo3(signature = (*, program, args, env, cwd, channel, init_timeout, grace, term_grace,
                        liveness_timeout, max_processes, heartbeat_secs, imports, sys_path,
                        spawn_method, hosts=Vec::new(), session_memory_limit=None))]
    #[allow(clippy::too_many_arguments)] // one per setting, all keyword-only
    fn new(
        program: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<String>,
        channel: PyChannelSettings,
        init_timeout: f64,
        grace: f64,
        term_grace: f64,
        liveness_timeout: Option<f64>,
        max_processes: Option<usize>,
        heartbeat_secs: f64,
        imports: Vec<(String, String, Vec<String>)>,
        sys_path: Vec<String>,
        spawn_method: String,
        hosts: Vec<HostEntry>,
        session_memory_limit: Option<u64>,
    ) -> PyResult<Self> {
        let hosts = hosts
            .into_iter()
            .map(|(key, token, ca_pem, connect_timeout)| {
                let connect_timeout = seconds(connect_timeout, "connect_timeout")?;
                Ok((
                    key,
                    HostAccess {
                        token,
                        ca_pem,
                        connect_timeout,
                    },
                ))
            })
            .collect::<PyResult<_>>()?;
        let imports = imports
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
        Ok(PySessionSettings(SessionConfig {
            channel: channel.0,
            timing: Timing {
                init_timeout: seconds(init_timeout, "init_timeout")?,
                grace: seconds(grace, "grace")?,
                term_grace: seconds(term_grace, "term_grace")?,
                liveness_timeout: liveness_timeout
                    .map(|secs| seconds(secs, "liveness_timeout"))
                    .transpose()?,
            },
            launch: LaunchSpec {
                program: program.into(),
                args: args.into_iter().map(OsString::from).collect(),
                env: env
                    .into_iter()
                    .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                    .collect(),
                cwd: cwd.map(Into::into),
            },
            spawn_method: spawn_method
                .parse::<SpawnMethod>()
                .map_err(PyValueError::new_err)?,
            max_processes,
            heartbeat_secs,
            imports,
            sys_path,
            hosts,
            session_memory_limit,
        }))
    }

    /// The settings of every channel of the session.
    #[getter]
    fn channel(&self) -> PyChannelSettings {
        PyChannelSettings(self.0.channel.clone())
    }

    /// At most this many node processes (None: unlimited).
    #[getter]
    fn max_processes(&self) -> Option<usize> {
        self.0.max_processes
    }

    fn __repr__(&self) -> String {
        format!(
            "SessionSettings(spawn_method={:?}, max_processes={:?}, {} imports)",
            self.0.spawn_method,
            self.0.max_processes,
            self.0.imports.len()
        )
    }
}

/// One running session of the multiprocess executor.
#[pyclass(module = "zerohop._native", name = "NativeSession", frozen)]
pub struct NativeSession {
    inner: Arc<Session>,
}

#[pymethods]
impl NativeSession {
    /// Spawns every node of `graph` and waits until all are ready; `on_event` is called
    /// with each `Progress` and `Ready` meanwhile.
    #[staticmethod]
    #[pyo3(signature = (graph, settings, *, on_event=None))]
    fn start(
        py: Python<'_>,
        graph: &PyGraph,
        settings: &PySessionSettings,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<NativeSession> {
        let graph = Graph::clone(&graph.graph);
        let config = settings.0.clone();
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

    /// Cancels what is in flight (see `executor::cancel`); returns the cancel's id.
    fn cancel(&self, py: Python<'_>) -> PyResult<u64> {
        let inner = Arc::clone(&self.inner);
        without_gil(py, |gate| inner.cancel(&|| gate.check_signals()))
    }

    /// The next output: `(output_index, RawFrame)`, an event (`SkippedFrame`), the id
    /// of a cancel that reached the outputs (an int), or None once every output has
    /// ended.
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
                (output, frame).into_pyobject(py)?.into_any()
            }
            Output::Event(event) => event_to_py(py, event)?,
            Output::Cancel { id } => id.into_pyobject(py)?.into_any(),
            Output::End => py.None().into_bound(py),
        })
    }

    /// Every node's `NodeStatus`.
    fn status(&self, py: Python<'_>) -> Vec<PyNodeStatus> {
        let inner = Arc::clone(&self.inner);
        let statuses = py.detach(|| inner.status());
        statuses.into_iter().map(PyNodeStatus::from).collect()
    }

    /// This session's metrics as OpenMetrics text (see `crate::metrics`).
    fn metrics(&self, py: Python<'_>) -> String {
        let inner = Arc::clone(&self.inner);
        py.detach(|| inner.metrics())
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
/// raises ManifestError naming `<path>.params.<field>` and node `node_id`.
#[pyfunction]
#[pyo3(signature = (node_type, params_json, *, path, node_id))]
pub fn check_native_params(
    node_type: &str,
    params_json: &str,
    path: &str,
    node_id: &str,
) -> PyResult<()> {
    let found = serde_json::from_str(params_json)
        .map_err(|e| crate::error::Error::Manifest {
            path: "params".into(),
            message: e.to_string(),
        })
        .and_then(|params| crate::nodes::create(node_type, &params))
        .map_err(|err| node_manifest_error(err, path, node_id))?;
    match found {
        Some(_) => Ok(()),
        None => Err(node_manifest_error(
            crate::error::Error::Manifest {
                path: "node_type".into(),
                message: format!("'{node_type}' is not a native node type"),
            },
            path,
            node_id,
        )),
    }
}

/// Where node `index` (id `node_id`) runs: `"native"`, `"multiprocess"` or
/// `"inprocess"`, from what the registry offers (`native`, `python`), the node's
/// `runtime_hint` and `executor`, and whether this session runs Python nodes as
/// processes (`multiprocess`). Raises ManifestError naming `nodes[index].runtime_hint`
/// (or `.executor`) and the node on a contradiction.
#[pyfunction]
#[pyo3(signature = (index, node_id, node_type, *, native, python, runtime_hint, executor,
                    multiprocess))]
#[allow(clippy::too_many_arguments)]
pub fn route_node(
    index: usize,
    node_id: &str,
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
        .map_err(|err| named_node(err, node_id))
}

/// What holds memory limits in this process: `"cgroup v2"`, `"cgroup v1 memory
/// controller"` or `"RSS watch"` (see `supervisor::memory`).
#[pyfunction]
pub fn memory_mechanism() -> &'static str {
    crate::supervisor::memory::mechanism().name()
}
