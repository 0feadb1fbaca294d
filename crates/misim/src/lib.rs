//! The `misim` binary's library: starting parties (`misim up` runs all of them in one process, `misim
//! arm|msrp|aad|imds` one each) and the client CLI that drives ARM over gRPC.
//!
//! The integration tests start the whole system through [`up::start`], exactly as `misim up` does.

pub mod cli;
pub mod client;
pub mod doctor;
pub mod embedded;
pub mod endpoints;
pub mod export;
pub mod output;
pub mod parties;
pub mod repair;
pub mod scenario;
pub mod up;
