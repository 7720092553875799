//! `NativeNode`: one native Rust node driven from Python, so the in-process executor
//! runs the same nodes (and gets the same bytes out) as the multiprocess one.

use std::sync::Mutex;

use pyo3::prelude::*;

use crate::error::Error;
use crate::frame::Header;
use crate::nodes::{self, OutFrame};
use crate::py::errors::IntoPyResult;
use crate::py::frame::{buffer_bytes, contiguous_buffer, RawFrame, Storage};

/// A native node (`AudioChunkerNode`, ...) built from its params; `process` takes a
/// `RawFrame` or the bytes of an encoded frame and returns the frames it emits.
#[pyclass(module = "zerohop._native", name = "NativeNode", frozen)]
pub struct PyNativeNode {
    node_type: String,
    // `process` runs without the GIL; the lock keeps one caller at a time.
    node: Mutex<Box<dyn nodes::NativeNode>>,
}

fn to_raw(frames: Vec<OutFrame>) -> Vec<RawFrame> {
    frames
        .into_iter()
        .map(|frame| {
            let mut bytes = frame.header.to_bytes();
            let start = bytes.len();
            bytes.extend_from_slice(&frame.payload);
            // SAFETY: `start` is within `bytes` (the payload follows it, possibly empty).
            let payload = unsafe { bytes.as_ptr().add(start) };
            RawFrame::new(frame.header, payload, Storage::Heap(bytes))
        })
        .collect()
}

impl PyNativeNode {
    fn run(
        &self,
        py: Python<'_>,
        call: impl FnOnce(&mut dyn nodes::NativeNode, &mut Vec<OutFrame>) -> crate::error::Result<()>
            + Send,
    ) -> PyResult<Vec<RawFrame>> {
        let out = py.detach(|| {
            let mut node = self.node.lock().expect("native node lock poisoned");
            let mut out = Vec::new();
            call(node.as_mut(), &mut out).map(|()| out)
        });
        out.map(to_raw).py_err()
    }
}

#[pymethods]
impl PyNativeNode {
    /// Builds a node of `node_type` from `params_json` (a JSON object). Raises
    /// ManifestError whose path starts at `params`, or at `node_type` for a type that is
    /// not native.
    #[new]
    #[pyo3(signature = (node_type, params_json="{}"))]
    fn new(node_type: &str, params_json: &str) -> PyResult<Self> {
        let params: serde_json::Value = serde_json::from_str(params_json)
            .map_err(|e| Error::Manifest {
                path: "params".into(),
                message: e.to_string(),
            })
            .py_err()?;
        let node = nodes::create(node_type, &params).py_err()?.ok_or_else(|| {
            crate::py::errors::to_pyerr(Error::Manifest {
                path: "node_type".into(),
                message: format!("'{node_type}' is not a native node type"),
            })
        })?;
        Ok(PyNativeNode {
            node_type: node_type.to_string(),
            node: Mutex::new(node),
        })
    }

    #[getter]
    fn node_type(&self) -> &str {
        &self.node_type
    }

    /// Takes one frame (a `RawFrame`, or any buffer holding an encoded frame) and
    /// returns the frames the node emits for it. Raises FrameError for a frame the node
    /// cannot take.
    fn process(&self, py: Python<'_>, frame: &Bound<'_, PyAny>) -> PyResult<Vec<RawFrame>> {
        if let Ok(raw) = frame.cast::<RawFrame>() {
            let raw = raw.get();
            return self.run(py, |node, out| {
                node.handle(&raw.header, raw.payload_bytes(), out)
            });
        }
        let buffer = contiguous_buffer(frame)?;
        let bytes = buffer_bytes(&buffer);
        let header = Header::decode(bytes, usize::MAX).py_err()?;
        let payload = crate::frame::payload(bytes, &header);
        self.run(py, |node, out| node.handle(&header, payload, out))
    }

    /// End of stream: the frames the node still holds (the chunker's partial chunk, the
    /// resampler's tail). The node is then ready for a new stream.
    fn flush(&self, py: Python<'_>) -> PyResult<Vec<RawFrame>> {
        self.run(py, |node, out| node.flush(out))
    }

    fn __repr__(&self) -> String {
        format!("NativeNode({:?})", self.node_type)
    }
}
