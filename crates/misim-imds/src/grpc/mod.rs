//! The gRPC edge of the host: the `HostAgent` server ARM calls and the MSRP client the host uses.
//! Generated `misim_proto` types are converted here and go no further.

pub mod agent;
mod convert;
pub mod msrp;
