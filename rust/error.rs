//! The one error type of the Rust core. `py/errors.rs` maps every variant to a
//! Python exception class; nothing else decides how errors look in Python.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
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
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an iceoryx2 error with what we were doing when it happened.
    pub fn ipc(context: impl Into<String>, detail: impl std::fmt::Debug) -> Self {
        Error::Ipc { context: context.into(), detail: format!("{detail:?}") }
    }
}
