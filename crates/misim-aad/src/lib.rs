//! Azure AD (Entra ID) mock: tenants, managed-identity service principals with certificate key
//! credentials, the OAuth2 token endpoint (client credentials with a client assertion), OpenID
//! discovery and JWKS.
//!
//! Two surfaces: the admin gRPC API (`misim.aad.v1.AadAdmin`, used by MSRP and ARM) and the HTTP API
//! that clients and IMDS call (`/{tenant}/oauth2/token`, `/{tenant}/.well-known/openid-configuration`,
//! `/common/discovery/keys`, …).

use std::path::PathBuf;
use std::sync::Arc;

use misim_core::Clock;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod assertion;
mod claims;
mod directory;
mod discovery;
pub mod error;
mod grpc;
mod http;
mod keys;
mod model;
mod store;
mod token;

pub use error::AadError;

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
    /// Start-up failed (signing key generation or loading).
    #[error(transparent)]
    Startup(#[from] AadError),
}

/// Runs Azure AD until `shutdown` is cancelled.
///
/// # Errors
/// [`RunError`] when the store cannot be opened, the signing key cannot be loaded or made, or a server
/// fails. When one server fails the other is stopped too.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let db = misim_core::Store::open(&config.data_dir)?;
    let store = store::AadStore::open(db)?;
    let key = Arc::new(keys::SigningKey::load_or_create(&store, config.clock.now()).await?);
    let directory = Arc::new(directory::Directory::new(store));
    let public_url = config.public_url.trim_end_matches('/').to_string();
    let tokens = token::TokenService::new(
        directory.clone(),
        key.clone(),
        config.clock.clone(),
        config.token_lifetime_secs,
    );
    let state = Arc::new(http::HttpState {
        directory: directory.clone(),
        tokens,
        key,
        public_url,
        clock: config.clock,
    });
    let routes = tonic::service::Routes::new(grpc::server(directory));

    let stop = shutdown.child_token();
    let grpc_addr = listeners.grpc.local_addr().ok();
    let http_addr = listeners.http.local_addr().ok();
    tracing::info!(grpc = ?grpc_addr, http = ?http_addr, "azure ad serving");
    let grpc =
        misim_core::serve::serve_grpc(listeners.grpc, routes, &[grpc::SERVICE_NAME], stop.clone());
    let http = misim_core::serve::serve_http(listeners.http, http::router(state), stop.clone());
    let (grpc, http) = tokio::join!(
        async {
            let r = grpc.await;
            stop.cancel();
            r
        },
        async {
            let r = http.await;
            stop.cancel();
            r
        }
    );
    grpc?;
    http?;
    tracing::info!("azure ad stopped");
    Ok(())
}
