//! The one place where core errors become Python exceptions. The classes live in
//! `python/zerohop/errors.py` (the documented hierarchy); this file only maps to them,
//! with one arm per core variant so that a new variant cannot be forgotten.

use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::PyErr;

use crate::error::Error;

mod classes {
    pyo3::import_exception!(zerohop.errors, FrameError);
    pyo3::import_exception!(zerohop.errors, PayloadTooLargeError);
    pyo3::import_exception!(zerohop.errors, ChannelError);
    pyo3::import_exception!(zerohop.errors, ChannelClosedError);
    pyo3::import_exception!(zerohop.errors, ZerohopTimeoutError);
    pyo3::import_exception!(zerohop.errors, ConfigError);
    pyo3::import_exception!(zerohop.errors, ManifestError);
    pyo3::import_exception!(zerohop.errors, ResourceLimitError);
    pyo3::import_exception!(zerohop.errors, SpawnError);
    pyo3::import_exception!(zerohop.errors, NodeInitError);
    pyo3::import_exception!(zerohop.errors, NodeInitTimeout);
    pyo3::import_exception!(zerohop.errors, NodeUnresponsiveError);
    pyo3::import_exception!(zerohop.errors, NodeCrashedError);
    pyo3::import_exception!(zerohop.errors, NodeError);
    pyo3::import_exception!(zerohop.errors, RemoteNodeError);
}

/// Builds `cls(message, **attrs)`.
fn with_attrs<T: pyo3::PyTypeInfo>(message: String, attrs: &[(&str, Option<Py<PyAny>>)]) -> PyErr {
    Python::attach(|py| {
        let kwargs = PyDict::new(py);
        for (key, value) in attrs {
            if let Err(err) = kwargs.set_item(key, value) {
                return err;
            }
        }
        match T::type_object(py).call((message,), Some(&kwargs)) {
            Ok(instance) => PyErr::from_value(instance),
            Err(err) => err,
        }
    })
}

fn text(py: Python<'_>, value: &str) -> Option<Py<PyAny>> {
    Some(pyo3::types::PyString::new(py, value).into_any().unbind())
}

fn int(py: Python<'_>, value: Option<i32>) -> Option<Py<PyAny>> {
    value.map(|v| v.into_pyobject(py).expect("int").into_any().unbind())
}

fn bytes_count(py: Python<'_>, value: u64) -> Option<Py<PyAny>> {
    Some(value.into_pyobject(py).expect("int").into_any().unbind())
}

/// Converts a core error into the matching `zerohop.errors` exception.
pub fn to_pyerr(err: Error) -> PyErr {
    let message = err.to_string();
    Python::attach(|py| match &err {
        Error::Frame(_) => classes::FrameError::new_err(message),
        Error::PayloadTooLarge { .. } => classes::PayloadTooLargeError::new_err(message),
        Error::Timeout { .. } | Error::Idle { .. } | Error::Deadline { .. } => {
            classes::ZerohopTimeoutError::new_err(message)
        }
        Error::Interrupted => PyKeyboardInterrupt::new_err(message),
        Error::Closed(_) => classes::ChannelClosedError::new_err(message),
        Error::Ipc { .. } => classes::ChannelError::new_err(message),
        Error::Config(_) => classes::ConfigError::new_err(message),
        Error::Manifest { path, .. } => {
            with_attrs::<classes::ManifestError>(message, &[("path", text(py, path))])
        }
        Error::ResourceLimit(_) => classes::ResourceLimitError::new_err(message),
        Error::NodeMemory {
            node, limit, peak, ..
        } => with_attrs::<classes::ResourceLimitError>(
            message,
            &[
                ("node_id", text(py, node)),
                ("limit_bytes", bytes_count(py, *limit)),
                ("peak_bytes", bytes_count(py, *peak)),
            ],
        ),
        Error::Spawn { node, .. } => {
            with_attrs::<classes::SpawnError>(message, &[("node_id", text(py, node))])
        }
        Error::NodeInit {
            node,
            message: short,
            traceback,
        } => with_attrs::<classes::NodeInitError>(
            format!("node '{node}' failed to initialize: {short}"),
            &[
                ("node_id", text(py, node)),
                ("traceback", text(py, traceback)),
            ],
        ),
        Error::NodeInitTimeout { node, .. } => {
            with_attrs::<classes::NodeInitTimeout>(message, &[("node_id", text(py, node))])
        }
        Error::NodeUnresponsive { node, .. } => {
            with_attrs::<classes::NodeUnresponsiveError>(message, &[("node_id", text(py, node))])
        }
        Error::NodeCrashed {
            node, code, signal, ..
        } => with_attrs::<classes::NodeCrashedError>(
            message,
            &[
                ("node_id", text(py, node)),
                ("exit_code", int(py, *code)),
                ("signal", int(py, *signal)),
            ],
        ),
        Error::Remote {
            node,
            host,
            path,
            traceback,
            ..
        } => with_attrs::<classes::RemoteNodeError>(
            message,
            &[
                ("node_id", text(py, node)),
                ("host", text(py, host)),
                ("path", text(py, path)),
                ("traceback", text(py, traceback)),
            ],
        ),
        Error::Node {
            node, traceback, ..
        } => with_attrs::<classes::NodeError>(
            message,
            &[
                ("node_id", text(py, node)),
                ("traceback", text(py, traceback)),
            ],
        ),
    })
}

/// A manifest error about node `node_id`, created where it is raised with its whole
/// path: `prefix` (the node's own path, `nodes[2]`) joined to the path the core gave
/// (`params.target_rate`), and the node named in the message and in `node_id`.
pub fn node_manifest_error(err: Error, prefix: &str, node_id: &str) -> PyErr {
    match err {
        Error::Manifest { path, message } => Python::attach(|py| {
            let path = format!("{prefix}.{path}");
            with_attrs::<classes::ManifestError>(
                format!("{path}: {message} (node '{node_id}')"),
                &[("path", text(py, &path)), ("node_id", text(py, node_id))],
            )
        }),
        other => to_pyerr(other),
    }
}

/// `err`, a manifest error whose path already leads to node `node_id`, raised with
/// `node_id` set.
pub fn named_node(err: Error, node_id: &str) -> PyErr {
    let message = err.to_string();
    match err {
        Error::Manifest { path, .. } => Python::attach(|py| {
            with_attrs::<classes::ManifestError>(
                message,
                &[("path", text(py, &path)), ("node_id", text(py, node_id))],
            )
        }),
        other => to_pyerr(other),
    }
}

/// The core error for an exception Python code raised on the core's behalf (the
/// manifest planner of `zerohop serve`): a `ManifestError` keeps its path.
pub fn from_pyerr(py: Python<'_>, err: PyErr) -> Error {
    let value = err.value(py);
    let message = value.str().map(|s| s.to_string()).unwrap_or_default();
    if err.is_instance_of::<classes::ManifestError>(py) {
        let path = value
            .getattr("path")
            .and_then(|p| p.extract::<Option<String>>())
            .ok()
            .flatten()
            .unwrap_or_else(|| "$".to_owned());
        // The message repeats the path ("manifest: nodes[1].id: ..."): keep what follows.
        let message = match message.split_once(&format!("{path}: ")) {
            Some((_, rest)) => rest.to_owned(),
            None => message,
        };
        return Error::Manifest { path, message };
    }
    if err.is_instance_of::<classes::ResourceLimitError>(py) {
        return Error::ResourceLimit(message);
    }
    let name = value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    Error::Config(format!("{name}: {message}"))
}

/// `?`-friendly conversion for results of the core.
pub trait IntoPyResult<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T, E: Into<Error>> IntoPyResult<T> for Result<T, E> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(|err| to_pyerr(err.into()))
    }
}
