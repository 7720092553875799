//! zerohop's Rust core: frames, shared-memory channels and (later) the supervisor and
//! executor. Everything here is plain Rust; the PyO3 glue lives only in `py/`.

pub mod error;
pub mod frame;
pub mod ipc;

#[cfg(feature = "python")]
mod py;
