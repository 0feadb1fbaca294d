//! Code that two or more misim parties truly share: ARM resource IDs, the injected clock, the typed
//! store (sled or redb behind one trait), RSA/X.509 helpers and the plumbing that serves gRPC (with
//! health and reflection), HTTP and HTTPS (with a local CA).

pub mod cert;
pub mod clock;
pub mod control;
pub mod events;
pub mod faults;
pub mod fsperm;
pub mod identity_kind;
pub mod ids;
pub mod keyed_locks;
pub mod limits;
mod run_failure;
pub mod serde_b64;
pub mod serve;
mod serve_error;
pub mod sim_grpc;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use clock::Clock;
pub use ids::ResourceId;
pub use run_failure::RunFailure;
pub use store::{Store, StoreError, Table};
