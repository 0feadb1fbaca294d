//! Azure AD (Entra ID) mock: tenants, managed-identity service principals with certificate key
//! credentials, the OAuth2 token endpoint (client credentials with a client assertion), OpenID
//! discovery and JWKS.
//!
//! Two surfaces: the admin gRPC API (`misim.aad.v1.AadAdmin`, used by MSRP and ARM) and the HTTP API
//! that clients and IMDS call (`/{tenant}/oauth2/token`, `/{tenant}/.well-known/openid-configuration`,
//! `/common/discovery/keys`, …).

use std::path::PathBuf;

use misim_core::Clock;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How to run Azure AD.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory of this party's sled database (created if missing).
    pub data_dir: PathBuf,
    /// Base URL under which this server's HTTP API is reachable by others, without trailing slash
    /// (e.g. `http://127.0.0.1:7702`). Used for `jwks_uri`, `token_endpoint` etc. in discovery documents.
    pub public_url: String,
    /// Lifetime of issued access tokens, seconds (Azure managed-identity tokens: about 24 h).
    pub token_lifetime_secs: i64,
    /// Time source.
    pub clock: Clock,
}

/// The listeners Azure AD serves on, bound by the caller.
pub struct Listeners {
    /// Admin gRPC API.
    pub grpc: TcpListener,
    /// OAuth2 / OpenID HTTP API.
    pub http: TcpListener,
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

/// Runs Azure AD until `shutdown` is cancelled.
///
/// # Errors
/// [`RunError`] when the store cannot be opened or a server fails.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), RunError> {
    let _ = (config, listeners, shutdown);
    todo!("misim-aad")
}
