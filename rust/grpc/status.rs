//! Core errors as the protocol reports them: an `ErrorResponse` in the reply (or the
//! stream), or a gRPC status where the contract asks for one.
//!
//! `ERROR_TYPE_TYPE_VALIDATION` (7) is in the proto, but remotemedia-sdk's server never
//! sends it and its Python client's enum stops at INTERNAL (6): given a 7 it raises
//! `ValueError` instead of reporting the error. So a frame problem is reported as 7
//! only to a client that says it knows it — one whose `client_version` starts with
//! `zerohop` (ours) — and as VALIDATION, with the same message, to everyone else.

use tonic::{Code, Status};

use super::plan::failing_node;
use super::proto::{ErrorResponse, ErrorType, PipelineManifest};
use crate::error::Error;

/// Which client habits a call follows, from its `client_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dialect {
    /// A zerohop client: it knows `ERROR_TYPE_TYPE_VALIDATION` (see the module docs)
    /// and reads batch outputs by node id only.
    pub zerohop: bool,
}

impl Dialect {
    pub fn of(client_version: &str) -> Dialect {
        Dialect {
            zerohop: client_version.starts_with("zerohop"),
        }
    }
}

fn error_type(err: &Error, dialect: Dialect) -> ErrorType {
    match err {
        Error::Manifest { .. } | Error::Config(_) => ErrorType::Validation,
        Error::Frame(_) if dialect.zerohop => ErrorType::TypeValidation,
        Error::Frame(_) => ErrorType::Validation,
        Error::PayloadTooLarge { .. }
        | Error::ResourceLimit(_)
        | Error::Idle { .. }
        | Error::Deadline { .. }
        | Error::NodeMemory { .. } => ErrorType::ResourceLimit,
        Error::Spawn { .. }
        | Error::NodeInit { .. }
        | Error::NodeInitTimeout { .. }
        | Error::NodeUnresponsive { .. }
        | Error::NodeCrashed { .. }
        | Error::Node { .. }
        | Error::Remote { .. } => ErrorType::NodeExecution,
        Error::Timeout { .. } | Error::Interrupted | Error::Closed(_) | Error::Ipc { .. } => {
            ErrorType::Internal
        }
    }
}

/// The `ErrorResponse` for `err`; `failing_node_id` is filled in when the error is
/// about a node (`manifest` resolves `nodes[i]` paths to ids).
pub fn error_response(
    err: &Error,
    manifest: Option<&PipelineManifest>,
    dialect: Dialect,
) -> ErrorResponse {
    let (context, stack_trace) = match err {
        Error::Manifest { path, .. } => (path.clone(), String::new()),
        Error::NodeInit { traceback, .. } | Error::Node { traceback, .. } => {
            (String::new(), traceback.clone())
        }
        Error::Remote {
            path, traceback, ..
        } => (path.clone(), traceback.clone()),
        _ => (String::new(), String::new()),
    };
    ErrorResponse {
        error_type: error_type(err, dialect) as i32,
        message: err.to_string(),
        failing_node_id: failing_node(err, manifest),
        context,
        stack_trace,
    }
}

/// A cap no manifest can raise (sessions, processes, payload size) ends the call with
/// RESOURCE_EXHAUSTED, so that clients can tell "back off" from "fix the request".
pub fn as_status(err: &Error) -> Option<Status> {
    match err {
        Error::ResourceLimit(_) | Error::PayloadTooLarge { .. } => {
            Some(Status::new(Code::ResourceExhausted, err.to_string()))
        }
        Error::Idle { .. } | Error::Deadline { .. } => {
            Some(Status::new(Code::DeadlineExceeded, err.to_string()))
        }
        _ => None,
    }
}

/// The status a call ended with as metrics label it (`OK`, `Unavailable`,
/// `ResourceExhausted`: the names grpc-go's metrics use); None is OK.
pub fn status_label(status: Option<&Status>) -> String {
    match status.map(Status::code) {
        None | Some(tonic::Code::Ok) => "OK".into(),
        Some(code) => format!("{code:?}"),
    }
}
