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
mod keyring;
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
    /// Age at which the token-signing key is replaced by a new one, seconds (default 30 days; 0 =
    /// never). The retired key stays in JWKS for the token lifetime plus 5 minutes of clock skew.
    pub signing_key_rotation_secs: i64,
    /// Base URL of the HTTPS listener (e.g. `https://127.0.0.1:7705`), used in discovery documents
    /// served over HTTPS; default `https://<https listener address>`.
    pub https_public_url: Option<String>,
    /// Time source.
    pub clock: Clock,
}

/// Default of [`Config::token_lifetime_secs`]: 86 399 s, Azure's managed-identity token lifetime.
pub const DEFAULT_TOKEN_LIFETIME_SECS: i64 = 86_399;
/// Default of [`Config::signing_key_rotation_secs`]: 30 days.
pub const DEFAULT_SIGNING_KEY_ROTATION_SECS: i64 = 30 * 86_400;

impl Config {
    /// A config with misim's defaults: 24 h tokens, signing key rotated every 30 days, HTTPS base URL
    /// taken from the HTTPS listener.
    pub fn new(data_dir: PathBuf, public_url: String, clock: Clock) -> Self {
        Config {
            data_dir,
            public_url,
            token_lifetime_secs: DEFAULT_TOKEN_LIFETIME_SECS,
            signing_key_rotation_secs: DEFAULT_SIGNING_KEY_ROTATION_SECS,
            https_public_url: None,
            clock,
        }
    }
}

/// The listeners Azure AD serves on, bound by the caller.
pub struct Listeners {
    /// Admin gRPC API.
    pub grpc: TcpListener,
    /// OAuth2 / OpenID HTTP API.
    pub http: TcpListener,
    /// The same HTTP API over TLS (discovery documents name https URLs), if wanted.
    pub https: Option<misim_core::tls::HttpsListener>,
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
    let retention = config.token_lifetime_secs.max(0) + assertion::CLOCK_SKEW_SECS;
    let keys = keyring::KeyRing::open(
        store.clone(),
        config.clock.now(),
        config.signing_key_rotation_secs.max(0),
        retention,
    )
    .await?;
    let keys = Arc::new(keys);
    let directory = Arc::new(directory::Directory::new(store));
    let tokens = token::TokenService::new(
        directory.clone(),
        keys.clone(),
        config.clock.clone(),
        config.token_lifetime_secs,
    );
    let state = Arc::new(http::HttpState {
        directory: directory.clone(),
        tokens,
        keys,
        clock: config.clock,
    });
    let routes = tonic::service::Routes::new(grpc::server(directory));

    let stop = shutdown.child_token();
    let grpc_addr = listeners.grpc.local_addr().ok();
    let http_addr = listeners.http.local_addr().ok();
    let https = match listeners.https {
        Some(https) => {
            let addr = https
                .listener
                .local_addr()
                .map_err(misim_core::serve::ServeError::Http)?;
            let url = config
                .https_public_url
                .unwrap_or_else(|| format!("https://{addr}"));
            tracing::info!(https = %addr, public_url = %url, "azure ad serving https");
            let router = http::router(state.clone(), &url);
            Some(misim_core::tls::serve_https(https, router, stop.clone()))
        }
        None => None,
    };
    tracing::info!(grpc = ?grpc_addr, http = ?http_addr, "azure ad serving");
    let grpc =
        misim_core::serve::serve_grpc(listeners.grpc, routes, &[grpc::SERVICE_NAME], stop.clone());
    let http = misim_core::serve::serve_http(
        listeners.http,
        http::router(state, &config.public_url),
        stop.clone(),
    );
    let stopping = |r| {
        stop.cancel();
        r
    };
    let (grpc, http, https) = tokio::join!(
        async { stopping(grpc.await) },
        async { stopping(http.await) },
        async {
            match https {
                Some(f) => stopping(f.await),
                None => Ok(()),
            }
        }
    );
    grpc?;
    http?;
    https?;
    tracing::info!("azure ad stopped");
    Ok(())
}
