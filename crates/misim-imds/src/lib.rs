//! One host: the host agent gRPC API (ARM places VMs here and configures their identities) and the
//! Instance Metadata Service those VMs call for managed-identity tokens (steps 3, 5 and 6 of the flow).
//!
//! Local mode: every VM gets its own loopback listener, and the listener identifies the calling VM.

use std::net::IpAddr;
use std::path::PathBuf;

use misim_core::Clock;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How to run one host.
#[derive(Clone, Debug)]
pub struct Config {
    /// Host name, e.g. `host-1`.
    pub host_name: String,
    /// Directory of this host's sled database.
    pub data_dir: PathBuf,
    /// MSRP gRPC endpoint (credentials are fetched from there).
    pub msrp_grpc: String,
    /// Azure AD HTTP base URL (token endpoint `{aad_url}/{tenant}/oauth2/token`).
    pub aad_url: String,
    /// Address the per-VM IMDS listeners bind to (local mode: `127.0.0.1`).
    pub vm_listen_ip: IpAddr,
    /// Time source.
    pub clock: Clock,
}

/// Errors that stop the host.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] misim_core::StoreError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] misim_core::serve::ServeError),
}

/// Runs the host agent on `agent_listener` and the IMDS endpoints of the VMs placed here, until
/// `shutdown` is cancelled.
///
/// # Errors
/// [`RunError`] when the store cannot be opened or the agent server fails.
pub async fn run(config: Config, agent_listener: TcpListener, shutdown: CancellationToken) -> Result<(), RunError> {
    let _ = (config, agent_listener, shutdown);
    todo!("misim-imds")
}
