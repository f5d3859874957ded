//! Generates the gRPC clients for SeaweedFS from `proto/*.proto`.
//!
//! The .proto files are parsed with `protox` (pure Rust), so building kelp needs no system
//! `protoc`. Only clients are generated: kelp never serves these services.

const PROTOS: &[&str] =
    &["proto/mq_schema.proto", "proto/mq_broker.proto", "proto/filer.proto", "proto/master.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        // Message payloads are handed to the Kafka side without copying.
        .bytes(".messaging_pb.DataMessage")
        .bytes(".filer_pb.Entry.content")
        .compile_fds(descriptors)?;
    Ok(())
}
