//! Everything the zygote says to the host over its socket: its hello, the answer to each
//! spawn request, and an exit report for each child it reaps (`python/zerohop/zygote.py`
//! describes the protocol for both sides).
//!
//! Only a `spawned` reply carries an fd (the child's pidfd, SCM_RIGHTS): the reader
//! queues received fds in arrival order and takes one per `spawned`. A message larger
//! than `MAX_MESSAGE` is a protocol error; real ones are a few dozen bytes.
//!
//! A file of its own, like `runner_to_host.rs` beside `host_to_runner.rs`: each direction
//! of the wire can be read, and checked against the Python side, in one place.

use std::io;

use serde::Deserialize;

/// A larger zygote message is a protocol error (they are a few dozen bytes).
const MAX_MESSAGE: usize = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum FromZygote {
    /// Also carries `threads`, its thread count (diagnostics only).
    Hello {
        pid: i32,
    },
    Spawned {
        serial: u64,
        pid: i32,
    },
    SpawnError {
        error: String,
    },
    Exit {
        serial: u64,
        code: Option<i32>,
        signal: Option<i32>,
    },
}

/// Removes one complete length-prefixed message from the front of `buf`.
pub(super) fn take_message(buf: &mut Vec<u8>) -> io::Result<Option<Vec<u8>>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "oversized zygote message",
        ));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let body = buf[4..4 + len].to_vec();
    buf.drain(..4 + len);
    Ok(Some(body))
}
