//! gRPC: the `remotemedia.v1` protocol (generated from `proto/` by `build.rs`), the
//! conversions between its messages and zerohop frames, the tonic server that runs
//! manifests on the executor (`zerohop serve`), and the dialing side a session's
//! remote nodes use (`dial`, driven by `executor::remote`).
//!
//! The executor blocks (poll-based threads), tonic is async: each session gets its own
//! threads, and channels carry requests and responses between them and the runtime.

mod batch;
mod budget;
mod connections;
pub mod convert;
mod deadline;
pub mod dial;
pub mod limits;
mod metrics_http;
pub mod plan;
mod run;
pub mod server;
mod status;
mod stream;
#[cfg(test)]
mod tests;

pub use limits::Limits;
pub use plan::{Plan, Planner};
pub use server::{serve, Bound, Control, ServerConfig, Service};

/// Messages, enums and services of package `remotemedia.v1`, generated at build time.
///
/// Servers: [`proto::pipeline_execution_service_server::PipelineExecutionService`] and
/// [`proto::streaming_pipeline_service_server::StreamingPipelineService`].
#[allow(clippy::all)] // generated code
pub mod proto {
    tonic::include_proto!("remotemedia.v1");

    /// The encoded `FileDescriptorSet` of `proto/` (served by reflection).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/remotemedia_v1.bin"));
}
