//! `Graph` and `Port`: the validated pipeline graph as Python holds it.
//!
//! The host builds a graph description once (`Pipeline.graph()`), and Rust validates
//! it once, here; what Python gets back is the validated graph itself, frozen, which
//! `NativeSession.start` and the gRPC planner take as it is (no JSON parsed twice) and
//! from which the in-process executor reads its wiring (the same resolved edges and
//! input/output labels the multiprocess executor uses, so the two cannot disagree on
//! what a port-less connection means or how an output is labelled).

use std::sync::Arc;

use pyo3::prelude::*;

use crate::executor::{Graph, PortRef};
use crate::py::errors::IntoPyResult;

/// One port of one node, with its session label (`node` or `node.port`).
#[pyclass(module = "zerohop._native", name = "Port", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyPort {
    node_id: String,
    port: String,
    label: String,
}

#[pymethods]
impl PyPort {
    /// `case Port(node_id, port):` matches by position.
    #[classattr]
    #[pyo3(name = "__match_args__")]
    fn match_args() -> (&'static str, &'static str, &'static str) {
        ("node_id", "port", "label")
    }

    fn __repr__(&self) -> String {
        format!(
            "Port(node_id={:?}, port={:?}, label={:?})",
            self.node_id, self.port, self.label
        )
    }
}

/// A pipeline graph, validated: ids, ports, connections, cycles. Raises
/// `ManifestError` naming the field.
#[pyclass(module = "zerohop._native", name = "Graph", frozen)]
pub struct PyGraph {
    pub graph: Arc<Graph>,
}

impl PyGraph {
    fn port(&self, port: &PortRef, outputs: bool) -> PyPort {
        PyPort {
            node_id: self.graph.nodes[port.node].id.clone(),
            port: port.port.clone(),
            label: self.graph.port_label(port, outputs),
        }
    }
}

#[pymethods]
impl PyGraph {
    #[new]
    fn new(graph_json: &str) -> PyResult<PyGraph> {
        Ok(PyGraph {
            graph: Arc::new(Graph::from_json(graph_json).py_err()?),
        })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.graph.name
    }

    /// The session inputs (input ports nothing feeds), in order.
    #[getter]
    fn inputs(&self) -> Vec<PyPort> {
        let g = &self.graph;
        g.inputs.iter().map(|p| self.port(p, false)).collect()
    }

    /// The session outputs (output ports that feed nothing), in order.
    #[getter]
    fn outputs(&self) -> Vec<PyPort> {
        let g = &self.graph;
        g.outputs.iter().map(|p| self.port(p, true)).collect()
    }

    /// The connections, ports resolved: `(from, to)`.
    #[getter]
    fn edges(&self) -> Vec<(PyPort, PyPort)> {
        let g = &self.graph;
        g.edges
            .iter()
            .map(|(from, to)| (self.port(from, true), self.port(to, false)))
            .collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "Graph({:?}, {} nodes, {} edges)",
            self.graph.name,
            self.graph.nodes.len(),
            self.graph.edges.len()
        )
    }
}
