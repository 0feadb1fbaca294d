//! MSRP, the Managed Identity Resource Provider: for each identity it generates an RSA-2048 key and an
//! X.509 certificate, registers a service principal with that certificate in Azure AD (step 2 of the
//! flow), hands the credential to the hosts that serve the identity, and deletes all of it with the identity.

use std::path::PathBuf;

use misim_core::Clock;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How to run MSRP.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory of this party's sled database.
    pub data_dir: PathBuf,
    /// Azure AD admin gRPC endpoint, e.g. `http://127.0.0.1:7703`.
    pub aad_grpc: String,
    /// Certificate validity, seconds (Azure: 90 days).
    pub cert_validity_secs: i64,
    /// Age after which a certificate is renewed, seconds (Azure: 45 days).
    pub cert_renew_after_secs: i64,
    /// Time source.
    pub clock: Clock,
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] misim_core::StoreError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] misim_core::serve::ServeError),
}

/// Runs MSRP's gRPC API on `listener` until `shutdown` is cancelled.
///
/// # Errors
/// [`RunError`] when the store cannot be opened or the server fails.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), RunError> {
    let _ = (config, listener, shutdown);
    todo!("misim-msrp")
}
