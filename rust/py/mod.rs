//! All PyO3 glue. The modules above this one know nothing of Python.

mod blocking;
mod channel;
pub mod errors;
mod events;
mod frame;
mod graph;
mod metrics;
mod native_node;
mod serve;
mod session;

use pyo3::prelude::*;

/// Fills the `zerohop._native` module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<frame::RawFrame>()?;
    m.add_class::<channel::PySender>()?;
    m.add_class::<channel::PyReceiver>()?;
    m.add_class::<channel::PyChannelSettings>()?;
    m.add_class::<session::NativeSession>()?;
    m.add_class::<session::PySessionSettings>()?;
    m.add_class::<graph::PyGraph>()?;
    m.add_class::<graph::PyPort>()?;
    m.add_class::<events::PyProgress>()?;
    m.add_class::<events::PyReady>()?;
    m.add_class::<events::PySkippedFrame>()?;
    m.add_class::<events::PyNodeStatus>()?;
    m.add_class::<native_node::PyNativeNode>()?;
    m.add_function(wrap_pyfunction!(frame::encode_frame, m)?)?;
    m.add_function(wrap_pyfunction!(frame::decode_frame, m)?)?;
    m.add_function(wrap_pyfunction!(channel::reclaim_dead, m)?)?;
    m.add_function(wrap_pyfunction!(session::memory_mechanism, m)?)?;
    m.add_function(wrap_pyfunction!(session::native_nodes, m)?)?;
    m.add_function(wrap_pyfunction!(session::check_native_params, m)?)?;
    m.add_function(wrap_pyfunction!(session::route_node, m)?)?;
    m.add_function(wrap_pyfunction!(serve::serve, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::encode_metrics, m)?)?;
    for (name, value) in frame::constants(m.py())? {
        m.add(name, value)?;
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
