//! Everything the host says to the zygote over its socket: one message, a spawn request
//! (`python/zerohop/zygote.py` describes the protocol for both sides).
//!
//! Every message is a little-endian u32 byte length followed by that much UTF-8 JSON, as
//! on a node's control socket. Byte strings (the cwd, environment entries) travel as
//! hex, since paths and environment variables need not be UTF-8. The fds a request
//! carries go beside the bytes, as SCM_RIGHTS (`fd_passing.rs`).
//!
//! A file of its own, like `host_to_runner.rs` beside `runner_to_host.rs`: each direction
//! of the wire can be read, and checked against the Python side, in one place.

use std::os::fd::RawFd;

use serde::Serialize;

#[derive(Debug, Serialize)]
pub(super) struct SpawnRequest {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    /// Hex of the directory bytes (paths need not be UTF-8).
    pub(super) cwd: Option<String>,
    pub(super) env_set: Vec<(String, String)>,
    pub(super) env_unset: Vec<String>,
    /// Which of our fds 0..=2 follow the control socket in the message's SCM_RIGHTS.
    pub(super) stdio: Vec<RawFd>,
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}
