//! `_native.encode_metrics`: the in-process executor's session metrics, through the
//! encoder the multiprocess sessions and `zerohop serve` use (`crate::metrics`), so
//! both executors' `Session.metrics()` give the same names.

use pyo3::prelude::*;

use crate::metrics::{encode_rows, NodeRow};

/// One session's metrics as OpenMetrics text. `rows` are `(node_type, frames_in,
/// frames_out, rss_bytes, is_process)` per node; `credits_used` / `credits` are the
/// frames queued in the session's inputs and what they hold at most.
#[pyfunction]
pub fn encode_metrics(
    rows: Vec<(String, u64, u64, Option<u64>, bool)>,
    credits_used: u64,
    credits: u64,
) -> String {
    let rows: Vec<NodeRow> = rows
        .into_iter()
        .map(
            |(node_type, frames_in, frames_out, rss_bytes, process)| NodeRow {
                node_type,
                frames_in,
                frames_out,
                rss_bytes,
                process,
            },
        )
        .collect();
    encode_rows(&rows, (credits_used, credits), 1)
}
