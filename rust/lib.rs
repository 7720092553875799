//! zerohop's Rust core: frames, shared-memory channels, and (as they land) the
//! supervisor, executor, native nodes and gRPC service. Everything here is plain Rust;
//! the PyO3 glue lives only in `py/`, compiled with the `python` feature.

pub mod error;
pub mod executor;
mod fork;
pub mod frame;
pub mod grpc;
pub mod ipc;
pub mod metrics;
pub mod nodes;
pub mod supervisor;

#[cfg(feature = "python")]
mod py;

#[cfg(feature = "python")]
#[pyo3::pymodule]
fn _native(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    py::register(m)
}
