//! gRPC: the `remotemedia.v1` protocol (generated from `proto/` by `build.rs`) and the
//! conversions between its messages and zerohop frames. The tonic service over the
//! executor builds on these.

pub mod convert;

/// Messages, enums and services of package `remotemedia.v1`, generated at build time.
///
/// Servers: [`proto::pipeline_execution_service_server::PipelineExecutionService`] and
/// [`proto::streaming_pipeline_service_server::StreamingPipelineService`].
#[allow(clippy::all)] // generated code
pub mod proto {
    tonic::include_proto!("remotemedia.v1");
}
