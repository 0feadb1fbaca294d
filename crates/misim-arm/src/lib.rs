//! ARM, Azure Resource Manager: the control plane users drive over gRPC (subscriptions, resource
//! groups, VMs, user-assigned identities, role assignments), the reconciler that carries identity
//! changes to MSRP and the hosts (steps 1–4), and the REST surface that checks bearer tokens (step 7).

use std::path::PathBuf;

use misim_core::Clock;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A host ARM can place VMs on.
#[derive(Clone, Debug)]
pub struct HostEndpoint {
    /// Host name, e.g. `host-1`.
    pub name: String,
    /// Host agent gRPC endpoint, e.g. `http://127.0.0.1:7711`.
    pub agent_grpc: String,
}

/// How to run ARM.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory of this party's sled database.
    pub data_dir: PathBuf,
    /// MSRP gRPC endpoint.
    pub msrp_grpc: String,
    /// Azure AD admin gRPC endpoint (bootstrap of the default tenant).
    pub aad_grpc: String,
    /// Azure AD HTTP base URL (OpenID discovery and JWKS for bearer-token validation).
    pub aad_url: String,
    /// The hosts VMs are placed on.
    pub hosts: Vec<HostEndpoint>,
    /// Time source.
    pub clock: Clock,
}

/// The listeners ARM serves on, bound by the caller.
pub struct Listeners {
    /// Control-plane gRPC API.
    pub grpc: TcpListener,
    /// REST surface (`https://management.azure.com` shapes).
    pub rest: TcpListener,
}

/// Errors that stop ARM.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] misim_core::StoreError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] misim_core::serve::ServeError),
}

/// Runs ARM until `shutdown` is cancelled.
///
/// # Errors
/// [`RunError`] when the store cannot be opened or a server fails.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), RunError> {
    let _ = (config, listeners, shutdown);
    todo!("misim-arm")
}
