//! Everything a node process says to the host over its control socket.

use serde::{Deserialize, Serialize};

/// One message from a runner to the host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunnerMessage {
    /// Initialization progress; also sent as a heartbeat while `initialize` runs.
    Progress {
        #[serde(default)]
        fraction: Option<f64>,
        #[serde(default)]
        message: String,
    },
    /// `initialize` returned: the node processes frames from now on.
    Ready { init_secs: f64 },
    /// The node could not be imported, its params were rejected or `initialize` raised.
    InitError { error: String, traceback: String },
    /// `process` raised and the node's policy is `fail`: the session must end.
    NodeError {
        error: String,
        traceback: String,
        #[serde(default)]
        sequence: Option<u64>,
    },
    /// `process` raised and the node's policy is `skip`: that frame was dropped.
    FrameError {
        error: String,
        traceback: String,
        #[serde(default)]
        sequence: Option<u64>,
    },
    /// Sent every heartbeat interval once the node is ready (busy or idle): a node the
    /// host has not heard from within the liveness timeout is frozen. It carries the
    /// node's frame counts, so metrics are at most one interval old without asking.
    Alive {
        #[serde(default)]
        frames_in: Option<u64>,
        #[serde(default)]
        frames_out: Option<u64>,
    },
    /// Answer to `HostMessage::Status`.
    Status {
        busy: bool,
        frames_in: u64,
        frames_out: u64,
    },
    /// The node cancels what is in flight downstream of it (`ctx.cancel()`); its
    /// markers follow on its outputs (see `executor::cancel`).
    Cancel { id: u64 },
    /// The runner finished its stop sequence and is about to exit, with its final
    /// frame counts.
    Stopped {
        #[serde(default)]
        frames_in: Option<u64>,
        #[serde(default)]
        frames_out: Option<u64>,
    },
}
