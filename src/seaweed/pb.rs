//! Code generated from `proto/*.proto` by `build.rs`. Nothing outside `seaweed/` sees these
//! types: every call site converts to kelp's own types and errors.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod schema_pb {
    tonic::include_proto!("schema_pb");
}

pub mod messaging_pb {
    tonic::include_proto!("messaging_pb");
}

pub mod filer_pb {
    tonic::include_proto!("filer_pb");
}

pub mod master_pb {
    tonic::include_proto!("master_pb");
}
