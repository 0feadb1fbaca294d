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

mod applications;
mod assertion;
mod claims;
mod directory;
mod discovery;
pub mod error;
mod federation;
mod grpc;
mod grpc_applications;
mod http;
mod keyring;
mod keys;
mod model;
pub mod resources;
mod store;
mod token;

pub use error::AadError;

/// How to run Azure AD.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory of this party's store (created if missing; [`misim_core::Store`]).
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
    /// Control-plane mTLS: Azure AD's certificate (role `aad`) for the admin gRPC API, whose callers
    /// must present misim certificates ([`misim_core::control`]). `None` only in unit tests: plain
    /// gRPC and no caller checks.
    pub control: Option<misim_core::control::ControlTls>,
    /// Host names Azure AD may fetch federated issuers' metadata (discovery document, JWKS) from
    /// besides loopback, e.g. `arm` on the containers' internal network where ARM serves the AKS
    /// cluster issuers. Empty (the default): loopback only.
    pub federation_issuer_hosts: Vec<String>,
}

/// Default of [`Config::token_lifetime_secs`]: 86 399 s, Azure's managed-identity token lifetime.
pub const DEFAULT_TOKEN_LIFETIME_SECS: i64 = 86_399;
/// Default of [`Config::signing_key_rotation_secs`]: 30 days.
pub const DEFAULT_SIGNING_KEY_ROTATION_SECS: i64 = 30 * 86_400;
/// Largest accepted [`Config::token_lifetime_secs`] and [`Config::signing_key_rotation_secs`]:
/// 10 years, in seconds (far beyond Azure's 24 h tokens; keeps every `now + period` in range).
pub const MAX_CONFIG_PERIOD_SECS: i64 = 10 * 365 * 86_400;

impl Config {
    /// Checks the periods: `token_lifetime_secs` in 1..=[`MAX_CONFIG_PERIOD_SECS`],
    /// `signing_key_rotation_secs` in 0..=[`MAX_CONFIG_PERIOD_SECS`] (0 = never rotate).
    ///
    /// # Errors
    /// [`RunError::Config`] naming the field, the accepted range and the value.
    pub fn validate(&self) -> Result<(), RunError> {
        let check = |name: &str, value: i64, min: i64| {
            if (min..=MAX_CONFIG_PERIOD_SECS).contains(&value) {
                Ok(())
            } else {
                Err(RunError::Config(format!(
                    "{name} must be between {min} and {MAX_CONFIG_PERIOD_SECS} seconds, got {value}"
                )))
            }
        };
        check("token_lifetime_secs", self.token_lifetime_secs, 1)?;
        check(
            "signing_key_rotation_secs",
            self.signing_key_rotation_secs,
            0,
        )
    }

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
            control: None,
            federation_issuer_hosts: Vec::new(),
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
    /// The configuration is out of range (see [`Config::validate`]).
    #[error("invalid azure ad configuration: {0}")]
    Config(String),
    /// The store could not be opened or serving failed.
    #[error(transparent)]
    Start(#[from] misim_core::RunFailure),
    /// Start-up failed (signing key generation or loading).
    #[error(transparent)]
    Startup(#[from] AadError),
}

misim_core::run_failure_from!(RunError);

/// Runs Azure AD until `shutdown` is cancelled.
///
/// # Errors
/// [`RunError`] when the configuration is invalid ([`Config::validate`]), the store cannot be
/// opened, the signing key cannot be loaded or made, or a server fails. When one server fails the
/// other is stopped too.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    config.validate()?;
    let store = store::AadStore::open(&config.data_dir)?;
    let directory = Arc::new(directory::Directory::new(
        store.clone(),
        config.clock.clone(),
    ));
    let stop = shutdown.child_token();
    let grpc_addr = listeners.grpc.local_addr().ok();
    let http_addr = listeners.http.local_addr().ok();

    // The admin API needs no signing key: serve it at once, so ARM and MSRP start while the first
    // signing key is generated (its HTTP listener is bound already; clients wait in its backlog).
    let auth = misim_core::control::ControlAuth::for_config(config.control.as_ref());
    let federation = Arc::new(
        federation::Federation::open(&store)?
            .with_issuer_hosts(&config.federation_issuer_hosts)
            .map_err(|e| RunError::Config(e.to_string()))?,
    );
    let routes =
        tonic::service::Routes::new(grpc::server(directory.clone(), federation.clone(), auth));
    // App registrations (misim.aad.v1.Applications), admin only.
    let routes = routes.add_service(grpc_applications::server(
        directory.clone(),
        misim_core::control::ControlAuth::for_config(config.control.as_ref()),
    ));
    let routes = misim_core::faults::grpc_with_faults(routes, &config.clock, "aad"); // injected faults
    let grpc_tls = config.control.as_ref().map(|c| c.server_tls());
    let grpc = {
        let stop = stop.clone();
        let served = misim_core::serve::serve_grpc_tls(
            listeners.grpc,
            routes,
            &[grpc::SERVICE_NAME, grpc_applications::SERVICE_NAME],
            grpc_tls,
            stop.clone(),
        );
        tokio::spawn(async move {
            let r = served.await;
            stop.cancel();
            r
        })
    };

    let retention = config
        .token_lifetime_secs
        .saturating_add(assertion::CLOCK_SKEW_SECS);
    let keys = match keyring::KeyRing::open(
        store.clone(),
        config.clock.now(),
        config.signing_key_rotation_secs,
        retention,
    )
    .await
    {
        Ok(keys) => Arc::new(keys),
        Err(e) => {
            stop.cancel();
            let _ = grpc.await;
            return Err(e.into());
        }
    };
    let tokens = token::TokenService::new(
        directory.clone(),
        keys.clone(),
        config.clock.clone(),
        config.token_lifetime_secs,
    )
    .with_federation(federation);
    let state = Arc::new(http::HttpState {
        directory,
        tokens,
        keys,
        clock: config.clock,
    });

    // A simulated clock's advance rotates a due signing key at once, not only at the next request.
    {
        let (keys, clock, stop) = (state.keys.clone(), state.clock.clone(), stop.clone());
        tokio::spawn(async move {
            let mut moved = clock.subscribe();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = moved.changed() => if r.is_err() { return },
                }
                if let Err(e) = keys.rotate_if_due(clock.now()).await {
                    tracing::warn!(error = %e, "signing key rotation after a clock advance failed");
                }
            }
        });
    }
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
            let router = misim_core::faults::with_faults(router, &state.clock, "aad");
            Some(misim_core::tls::serve_https(https, router, stop.clone()))
        }
        None => None,
    };
    tracing::info!(grpc = ?grpc_addr, http = ?http_addr, "azure ad serving");
    let http = misim_core::serve::serve_http(
        listeners.http,
        misim_core::faults::with_faults(
            http::router(state.clone(), &config.public_url),
            &state.clock,
            "aad",
        ),
        stop.clone(),
    );
    let stopping = |r| {
        stop.cancel();
        r
    };
    let (http, https) = tokio::join!(async { stopping(http.await) }, async {
        match https {
            Some(f) => stopping(f.await),
            None => Ok(()),
        }
    });
    let grpc = grpc
        .await
        .map_err(|e| RunError::Config(format!("admin grpc task: {e}")))?;
    grpc?;
    http?;
    https?;
    tracing::info!("azure ad stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_periods_are_checked_before_anything_starts() {
        let ok = Config::new("d".into(), "http://127.0.0.1:1".into(), Clock::manual(0));
        assert!(ok.validate().is_ok());
        let never_rotate = Config {
            signing_key_rotation_secs: 0,
            ..ok.clone()
        };
        assert!(never_rotate.validate().is_ok());
        for (lifetime, rotation) in [
            (0, DEFAULT_SIGNING_KEY_ROTATION_SECS),
            (-1, DEFAULT_SIGNING_KEY_ROTATION_SECS),
            (i64::MAX, DEFAULT_SIGNING_KEY_ROTATION_SECS),
            (
                MAX_CONFIG_PERIOD_SECS + 1,
                DEFAULT_SIGNING_KEY_ROTATION_SECS,
            ),
            (DEFAULT_TOKEN_LIFETIME_SECS, -1),
            (DEFAULT_TOKEN_LIFETIME_SECS, i64::MAX),
        ] {
            let bad = Config {
                token_lifetime_secs: lifetime,
                signing_key_rotation_secs: rotation,
                ..ok.clone()
            };
            let err = bad.validate().unwrap_err();
            assert!(matches!(err, RunError::Config(_)), "{lifetime} {rotation}");
            let field = if lifetime == DEFAULT_TOKEN_LIFETIME_SECS {
                "signing_key_rotation_secs"
            } else {
                "token_lifetime_secs"
            };
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[tokio::test]
    async fn run_refuses_an_invalid_config() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(
            dir.path().join("aad"),
            "http://127.0.0.1:1".into(),
            Clock::manual(0),
        );
        config.token_lifetime_secs = 0;
        let listeners = Listeners {
            grpc: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            http: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            https: None,
        };
        let r = run(config, listeners, CancellationToken::new()).await;
        assert!(matches!(r, Err(RunError::Config(_))));
        assert!(!dir.path().join("aad").exists());
    }
}
