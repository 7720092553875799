//! Generates the gRPC code of `rust/grpc/` from `proto/` at build time.
//!
//! `protox` (a protobuf compiler written in Rust) parses the .proto files into a
//! `FileDescriptorSet`, and `tonic-prost-build` turns that into prost messages and tonic
//! services in `OUT_DIR`. No system `protoc` is involved, so `cargo build` and
//! `pip install .` work on a machine that has none; the generated code is never checked in.
//! The descriptor set itself is written there too (`remotemedia_v1.bin`): the server's
//! reflection service hands it to tools such as grpcurl, which then need no .proto files.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "remotemedia/v1/common.proto",
    "remotemedia/v1/execution.proto",
    "remotemedia/v1/streaming.proto",
];

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let include = root.join("proto");
    // A directory here makes cargo rerun this script when any file under it changes.
    println!("cargo:rerun-if-changed={}", include.display());
    println!("cargo:rerun-if-changed=build.rs");

    let descriptors = match protox::compile(PROTOS, [&include]) {
        Ok(descriptors) => descriptors,
        Err(error) => panic!("cannot compile proto/: {error}"),
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    std::fs::write(out.join("remotemedia_v1.bin"), descriptors.encode_to_vec())
        .expect("cannot write the descriptor set");
    tonic_prost_build::configure()
        // The client is generic over any tower service; the `connect` helper for
        // tonic's own channel is left out (tonic's client transport is not a dependency).
        .build_transport(false)
        .compile_fds(descriptors)
        .expect("cannot generate the gRPC code");
}
