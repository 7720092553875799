//! Everything the host says to a node process over its control socket.

use serde::{Deserialize, Serialize};

use crate::ipc::ChannelConfig;

/// One message from the host to a runner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// First message: what to run and how it is wired.
    Start { spec: Box<NodeSpec> },
    /// Finish the frame in hand, flush, release the channels and exit with status 0.
    Stop,
    /// Answer with a `Status` message.
    Status,
    /// Cancel `id` reached this node: drop the work in flight, send the marker on
    /// every output, discard the frames of the `discard` input channels until their
    /// marker (see `executor::cancel`).
    Cancel { id: u64, discard: Vec<String> },
}

/// What a node process needs to know to run its node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeSpec {
    pub session_id: String,
    pub node_id: String,
    pub node_type: String,
    #[serde(default)]
    pub params: serde_json::Value,
    /// One entry per input port; each lists the channels (one per incoming edge) it reads.
    pub inputs: Vec<PortSpec>,
    /// One entry per output port; each lists the channels (one per outgoing edge) it feeds.
    pub outputs: Vec<PortSpec>,
    pub channel: ChannelConfig,
    pub on_error: OnError,
    /// Seconds between progress heartbeats while the node initializes.
    pub heartbeat_secs: f64,
    /// Modules to import before resolving `node_type` (e.g. the user's main script, so
    /// that node classes defined there resolve as they do under multiprocessing).
    #[serde(default)]
    pub imports: Vec<ImportSpec>,
    /// Entries to prepend to `sys.path` (the host's script directory and path).
    #[serde(default)]
    pub sys_path: Vec<String>,
    /// The most memory the node may hold, in bytes (held by the host: see `memory`).
    #[serde(default)]
    pub memory_limit: Option<u64>,
    /// Its thread budget and CPU affinity, applied by the runner before its imports.
    #[serde(default)]
    pub threads: Option<u32>,
    #[serde(default)]
    pub cpus: Option<Vec<usize>>,
    /// Variables set before the node's imports (the GPU it is handed).
    #[serde(default)]
    pub env: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortSpec {
    pub port: String,
    pub channels: Vec<String>,
}

/// What happens when `process` raises.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// End the session with a `NodeError` naming the node.
    #[default]
    Fail,
    /// Drop the frame, report it as an error event, go on.
    Skip,
}

/// A module to import in the node process: by name, or a script run as `__mp_main__`
/// (exactly what multiprocessing's spawn does with the parent's main script). `classes`
/// are qualified names of node classes in it to register under their class names
/// (classes the host passed to a pipeline without `@register_node`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImportSpec {
    Module {
        name: String,
        #[serde(default)]
        classes: Vec<String>,
    },
    MainScript {
        path: String,
        #[serde(default)]
        classes: Vec<String>,
    },
}
