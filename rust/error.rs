//! The one error type of the Rust core. `py/errors.rs` maps every variant to a
//! Python exception class; nothing else decides how errors look in Python.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A frame's bytes do not describe a valid frame (truncated, bad magic, shape and
    /// payload disagree, ...). Retrying never helps: the sender wrote garbage.
    #[error("invalid frame: {0}")]
    Frame(String),

    /// A payload is larger than the configured maximum.
    #[error("payload of {size} bytes exceeds the maximum of {max} bytes")]
    PayloadTooLarge { size: usize, max: usize },

    /// A blocking operation did not complete within its timeout.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },

    /// A blocking wait was interrupted (Ctrl-C in Python: the interrupt check failed).
    #[error("interrupted")]
    Interrupted,

    /// The other end of a channel is gone.
    #[error("channel '{0}' is closed")]
    Closed(String),

    /// Shared-memory / iceoryx2 failure: creating, opening or using a service.
    #[error("{context}: {detail}")]
    Ipc { context: String, detail: String },

    /// Invalid configuration or argument.
    #[error("{0}")]
    Config(String),

    /// A pipeline description is invalid; `path` points at the offending field
    /// (`nodes[2].params.sample_rate`).
    #[error("{path}: {message}")]
    Manifest { path: String, message: String },

    /// A limit (processes per session, sessions, payload) would be exceeded. Raised
    /// before anything is spawned.
    #[error("{0}")]
    ResourceLimit(String),

    /// A client sent nothing for the server's idle timeout: its stream ends and frees
    /// its session, so that silent clients cannot hold every slot.
    #[error(
        "no message from the client for {secs} s (server.idle_timeout_secs): the stream is closed"
    )]
    Idle { secs: f64 },

    /// A node process could not be started (fork/exec failed, out of memory, ...).
    #[error(
        "the session ran past its deadline of {ms} ms (resource_limits.max_timeout_ms): \
         every node was stopped"
    )]
    Deadline { ms: u64 },

    #[error("node '{node}': cannot start its process: {detail}")]
    Spawn { node: String, detail: String },

    /// A node could not be imported or configured, or its `initialize` raised.
    #[error("node '{node}' failed to initialize: {message}")]
    NodeInit {
        node: String,
        message: String,
        traceback: String,
    },

    /// A node was not ready within the init timeout.
    #[error("node '{node}' was not ready within {secs} s (init timeout)")]
    NodeInitTimeout { node: String, secs: f64 },

    /// A running node stopped answering: no heartbeat on its control socket within the
    /// liveness timeout (a frozen — SIGSTOPped, deadlocked in native code — process).
    #[error("node '{node}' is unresponsive: no heartbeat for {secs} s (liveness timeout)")]
    NodeUnresponsive { node: String, secs: f64 },

    /// A node process died (crash, signal, `os._exit`) while the session ran.
    #[error("node '{node}' crashed: {exit}")]
    NodeCrashed {
        node: String,
        exit: String,
        code: Option<i32>,
        signal: Option<i32>,
    },

    /// A node's `process` raised under the `fail` policy.
    #[error("node '{node}' raised: {message}")]
    Node {
        node: String,
        message: String,
        traceback: String,
    },

    /// A node went past a memory limit (`scope`: "its" own, or "the session's") and
    /// was stopped; `mechanism` is what held the limit (a cgroup, or the RSS watch).
    #[error(
        "node '{node}' went past {scope} memory limit of {} (peak {}, held by the {mechanism}); \
         it was stopped",
        crate::supervisor::memory::human(*.limit),
        crate::supervisor::memory::human(*.peak)
    )]
    NodeMemory {
        node: String,
        scope: String,
        limit: u64,
        peak: u64,
        mechanism: String,
    },

    /// A node on another host: its host could not be reached or refused the session,
    /// or it failed there. `path` is the manifest field that names the host
    /// (`nodes[2].host`); `traceback` is the remote node's, when it sent one.
    #[error("node '{node}' on {host} ({path}): {message}")]
    Remote {
        node: String,
        host: String,
        path: String,
        message: String,
        traceback: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an iceoryx2 error with what we were doing when it happened.
    pub fn ipc(context: impl Into<String>, detail: impl std::fmt::Debug) -> Self {
        Error::Ipc {
            context: context.into(),
            detail: format!("{detail:?}"),
        }
    }
}

impl From<crate::frame::Error> for Error {
    fn from(err: crate::frame::Error) -> Self {
        match err {
            crate::frame::Error::Frame(message) => Error::Frame(message),
            crate::frame::Error::PayloadTooLarge { size, max } => {
                Error::PayloadTooLarge { size, max }
            }
        }
    }
}
