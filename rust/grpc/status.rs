//! Core errors as the protocol reports them: an `ErrorResponse` in the reply (or the
//! stream), or a gRPC status where the contract asks for one.

use tonic::{Code, Status};

use super::plan::failing_node;
use super::proto::{ErrorResponse, ErrorType, PipelineManifest};
use crate::error::Error;

fn error_type(err: &Error) -> ErrorType {
    match err {
        Error::Manifest { .. } | Error::Config(_) => ErrorType::Validation,
        Error::Frame(_) => ErrorType::TypeValidation,
        Error::PayloadTooLarge { .. } | Error::ResourceLimit(_) => ErrorType::ResourceLimit,
        Error::Spawn { .. }
        | Error::NodeInit { .. }
        | Error::NodeInitTimeout { .. }
        | Error::NodeUnresponsive { .. }
        | Error::NodeCrashed { .. }
        | Error::Node { .. } => ErrorType::NodeExecution,
        Error::Timeout { .. } | Error::Interrupted | Error::Closed(_) | Error::Ipc { .. } => {
            ErrorType::Internal
        }
    }
}

/// The `ErrorResponse` for `err`; `failing_node_id` is filled in when the error is
/// about a node (`manifest` resolves `nodes[i]` paths to ids).
pub fn error_response(err: &Error, manifest: Option<&PipelineManifest>) -> ErrorResponse {
    let (context, stack_trace) = match err {
        Error::Manifest { path, .. } => (path.clone(), String::new()),
        Error::NodeInit { traceback, .. } | Error::Node { traceback, .. } => {
            (String::new(), traceback.clone())
        }
        _ => (String::new(), String::new()),
    };
    ErrorResponse {
        error_type: error_type(err) as i32,
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
        _ => None,
    }
}
