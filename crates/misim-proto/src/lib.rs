//! Generated gRPC types and services for every misim party, one module per proto package.
//!
//! This is the only crate that contains generated code. Other crates convert these types into their
//! own domain types at the edge (`grpc.rs` in each crate) and do not pass `pb` types inward.

pub use prost;
pub use tonic;

/// ARM control plane (`misim.arm.v1`).
#[allow(missing_docs)] // generated; the .proto files document each message and field
pub mod arm {
    tonic::include_proto!("misim.arm.v1");
}

/// MSRP, the Managed Identity Resource Provider (`misim.msrp.v1`).
#[allow(missing_docs)] // generated; the .proto files document each message and field
pub mod msrp {
    tonic::include_proto!("misim.msrp.v1");
}

/// Azure AD admin API (`misim.aad.v1`).
#[allow(missing_docs)] // generated; the .proto files document each message and field
pub mod aad {
    tonic::include_proto!("misim.aad.v1");
}

/// Host agent next to IMDS (`misim.imds.v1`).
#[allow(missing_docs)] // generated; the .proto files document each message and field
pub mod imds {
    tonic::include_proto!("misim.imds.v1");
}

/// Simulation control: clock, fault injection, propagation delays, and the system's consistency
/// report (`Health`) (`misim.sim.v1`).
#[allow(missing_docs)] // generated; the .proto files document each message and field
pub mod sim {
    tonic::include_proto!("misim.sim.v1");
}

/// Request recording: the `Events` service (`misim.events.v1`).
#[allow(missing_docs)] // generated; the .proto files document each message and field
pub mod events {
    tonic::include_proto!("misim.events.v1");
}

/// Scenarios run by misim: the `Scenario` service (`misim.scenario.v1`).
#[allow(missing_docs)] // generated; the .proto files document each message and field
pub mod scenario {
    tonic::include_proto!("misim.scenario.v1");
}

/// Encoded `FileDescriptorSet` of all misim protos, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/misim_descriptor.bin"));
