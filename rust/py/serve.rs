//! `_native.serve`: the gRPC server of `zerohop serve`, with manifests validated and
//! planned by Python (`zerohop.serve.plan`), which owns the node registry and the
//! params models. The server itself (`crate::grpc`) knows nothing of Python.

use std::sync::Arc;

use pyo3::prelude::*;

use crate::error::Result;
use crate::executor::Graph;
use crate::grpc::{Bound, Control, Limits, Plan, Planner, ServerConfig};
use crate::py::blocking::without_gil;
use crate::py::errors::from_pyerr;
use crate::py::graph::PyGraph;
use crate::py::session::{seconds, PySessionSettings};

/// Calls the Python planner under the GIL (from the server's blocking threads).
struct PyPlanner {
    plan: Py<PyAny>,
    node_types: Py<PyAny>,
}

impl Planner for PyPlanner {
    fn plan(&self, manifest_json: &str) -> Result<Plan> {
        Python::attach(|py| {
            let planned = self
                .plan
                .call1(py, (manifest_json,))
                .map_err(|e| from_pyerr(py, e))?;
            let (graph, settings, warnings) = planned
                .extract::<(Py<PyGraph>, Py<PySessionSettings>, Vec<String>)>(py)
                .map_err(|e| from_pyerr(py, e))?;
            Ok(Plan {
                graph: Graph::clone(&graph.get().graph),
                config: settings.get().0.clone(),
                warnings,
            })
        })
    }

    fn node_types(&self) -> Result<Vec<String>> {
        Python::attach(|py| {
            self.node_types
                .call0(py)
                .and_then(|types| types.extract::<Vec<String>>(py))
                .map_err(|e| from_pyerr(py, e))
        })
    }
}

/// Serves `remotemedia.v1` on `host:port` until Ctrl-C (raised here as the signal
/// handler's exception once every session is stopped), or until a drain `draining()`
/// asked for is over. `plan(manifest_json)` returns `(graph, settings, warnings)`;
/// `node_types()` the registered type names; `on_bound("host:port", metrics)` is
/// called once the server accepts connections (`metrics`: the `/metrics` address when
/// `metrics_port` is given, else None); `file_dirs` are the directories
/// `DataBuffer.file` references may be read from.
#[pyfunction]
#[pyo3(signature = (plan, node_types, *, host, port, token, max_sessions, max_processes,
                    max_nodes_per_session, max_payload, metrics_every, file_dirs, idle_timeout, max_connections,
                    handshake_timeout, max_buffered_bytes_per_stream, drain_timeout, draining,
                    metrics_port, tls_cert, tls_key, on_bound))]
#[allow(clippy::too_many_arguments)]
pub fn serve(
    py: Python<'_>,
    plan: Py<PyAny>,
    node_types: Py<PyAny>,
    host: String,
    port: u16,
    token: Option<String>,
    max_sessions: usize,
    max_processes: usize,
    max_nodes_per_session: usize,
    max_payload: usize,
    metrics_every: u64,
    file_dirs: Vec<std::path::PathBuf>,
    idle_timeout: f64,
    max_connections: usize,
    handshake_timeout: f64,
    max_buffered_bytes_per_stream: usize,
    drain_timeout: f64,
    draining: Py<PyAny>,
    metrics_port: Option<u16>,
    tls_cert: Option<std::path::PathBuf>,
    tls_key: Option<std::path::PathBuf>,
    on_bound: Py<PyAny>,
) -> PyResult<()> {
    let positive = |value: f64, what: &str| match seconds(value, what)? {
        zero if zero.is_zero() => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "{what} must be more than 0 seconds"
        ))),
        duration => Ok(duration),
    };
    let idle_timeout = positive(idle_timeout, "idle_timeout")?;
    let handshake_timeout = positive(handshake_timeout, "handshake_timeout")?;
    // 0: a drain stops the running sessions at once.
    let drain_timeout = seconds(drain_timeout, "drain_timeout")?;
    let planner = Arc::new(PyPlanner { plan, node_types });
    let cfg = ServerConfig {
        host,
        port,
        token,
        limits: Limits {
            max_sessions,
            max_processes,
            max_nodes_per_session,
            max_payload,
        },
        metrics_every,
        file_dirs,
        idle_timeout,
        max_connections,
        handshake_timeout,
        max_buffered_bytes_per_stream,
        drain_timeout,
        metrics_port,
        tls: match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "TLS needs both a certificate and a key (tls_cert, tls_key)",
                ))
            }
        },
    };
    without_gil(py, |gate| {
        let mut bound = |addr: Bound| {
            let metrics = addr.metrics.map(|a| a.to_string());
            gate.call(|py| {
                on_bound
                    .call1(py, (addr.grpc.to_string(), metrics))
                    .map(drop)
            })
        };
        // Signals first: a second SIGTERM or Ctrl-C during a drain stops at once.
        let control = || {
            gate.check_signals()?;
            match gate.call(|py| draining.call0(py)?.is_truthy(py))? {
                true => Ok(Control::Drain),
                false => Ok(Control::Serve),
            }
        };
        crate::grpc::serve(planner, cfg, &mut bound, &control)
    })
}
