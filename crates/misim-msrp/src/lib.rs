//! MSRP, the Managed Identity Resource Provider: for each identity it generates a key (RSA-2048 as
//! Azure, or EC P-256 with `--identity-key-type ec-p256`) and an X.509 certificate, registers a
//! service principal with that certificate in Azure AD (step 2 of the flow), hands the credential to
//! the hosts that serve the identity, and deletes all of it with the identity.
//!
//! Code map: [`service`] (create/get/list/delete/credential), [`renewal`] (certificate roll-over),
//! [`keypool`] (pre-generated keys), [`store`] (sled table), [`identity`] (domain types),
//! [`principal`] (values exchanged with Azure AD), [`federation`] (federated credentials),
//! [`grpc`] (the only module seeing pb types: the MSRP server and the Azure AD client), [`error`].

pub mod error;
pub mod federation;
pub mod grpc;
pub mod identity;
pub mod keypool;
pub mod principal;
pub mod renewal;
pub mod service;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use misim_core::Clock;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use error::MsrpError;
pub use identity::{IdentityKind, IdentityRecord, IdentityState, NewIdentity};
pub use renewal::RenewalReport;
pub use service::{CertPolicy, Msrp};

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
    /// Number of pre-generated keys kept ready for creations (0 disables the pool; default two per
    /// core, [`keypool::default_size`]).
    pub key_pool_size: usize,
    /// Key type of identity certificates (default RSA-2048, as Azure; EC P-256 for large
    /// simulations, see [`misim_core::cert::KeyType`]).
    pub key_type: misim_core::cert::KeyType,
    /// How often the renewal task looks for certificates to renew or retire, seconds (default 60).
    pub renewal_check_secs: u64,
    /// Control-plane mTLS: MSRP's certificate (role `msrp`), used to serve (callers must present
    /// misim certificates; see [`misim_core::control`]) and to call Azure AD. `None` only in unit
    /// tests with fake peers: plain gRPC and no caller checks.
    pub control: Option<misim_core::control::ControlTls>,
}

/// Validity of the certificates MSRP issues, seconds: 90 days, as Azure's
/// (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-managed-identities-work-vm>).
pub const DEFAULT_CERT_VALIDITY_SECS: i64 = 90 * 86_400;
/// Age after which MSRP renews a certificate, seconds: 45 days, as Azure's (same source).
pub const DEFAULT_CERT_RENEW_AFTER_SECS: i64 = 45 * 86_400;
/// How often the renewal task looks for certificates to renew or retire, seconds.
pub const DEFAULT_RENEWAL_CHECK_SECS: u64 = 60;

impl Config {
    /// A config with Azure's certificate lifetimes (valid 90 days, renewed after 45;
    /// <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-managed-identities-work-vm>), RSA-2048 keys, a key pool of two keys per
    /// core and a renewal check every 60 seconds.
    pub fn new(data_dir: PathBuf, aad_grpc: String, clock: Clock) -> Self {
        Config {
            data_dir,
            aad_grpc,
            cert_validity_secs: DEFAULT_CERT_VALIDITY_SECS,
            cert_renew_after_secs: DEFAULT_CERT_RENEW_AFTER_SECS,
            clock,
            key_pool_size: keypool::default_size(),
            key_type: misim_core::cert::KeyType::Rsa2048,
            renewal_check_secs: DEFAULT_RENEWAL_CHECK_SECS,
            control: None,
        }
    }
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store could not be opened or serving failed.
    #[error(transparent)]
    Start(#[from] misim_core::RunFailure),
    /// The configuration is unusable (bad Azure AD endpoint, non-positive lifetimes).
    #[error("msrp setup: {0}")]
    Setup(#[from] MsrpError),
}

misim_core::run_failure_from!(RunError);

/// Opens MSRP's store under `config.data_dir`, prepares the Azure AD client (connected lazily) and
/// starts the key pool filler, which stops when `shutdown` is cancelled.
///
/// # Errors
/// [`RunError::Start`] when the store cannot be opened (e.g. locked by another process),
/// [`RunError::Setup`] for a bad Azure AD endpoint or non-positive certificate lifetimes.
pub fn open(config: &Config, shutdown: CancellationToken) -> Result<Arc<Msrp>, RunError> {
    if config.cert_validity_secs <= 0 || config.cert_renew_after_secs <= 0 {
        return Err(MsrpError::InvalidArgument(
            "certificate validity and renewal age must be positive".into(),
        )
        .into());
    }
    let store = misim_core::Store::open_party(&config.data_dir, "msrp", store::SCHEMA_VERSION)?;
    if store.was_fresh() {
        tracing::warn!(dir = %config.data_dir.display(), "MSRP's identity store is new and empty: if ARM knows identities, they were lost and ARM's reconcile re-creates them");
    }
    let store = store::IdentityStore::new(store)?;
    let aad = grpc::aad::AadClient::new(&config.aad_grpc, config.control.as_ref())?;
    let keys = keypool::KeyPool::start(config.key_pool_size, config.key_type, shutdown);
    let policy = CertPolicy {
        validity_secs: config.cert_validity_secs,
        renew_after_secs: config.cert_renew_after_secs,
    };
    Ok(Arc::new(Msrp::new(
        store,
        aad,
        keys,
        config.clock.clone(),
        policy,
    )))
}

/// Runs MSRP's gRPC API on `listener` until `shutdown` is cancelled, with certificate renewal every
/// `config.renewal_check_secs`. On return the store is closed (the data dir can be reopened).
///
/// # Errors
/// [`RunError`] when the store cannot be opened or the server fails.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let tasks = shutdown.child_token();
    let msrp = open(&config, tasks.clone())?;
    let period = Duration::from_secs(config.renewal_check_secs.max(1));
    let renewal = tokio::spawn(renewal::renewal_loop(msrp.clone(), period, tasks.clone()));
    info!(
        data_dir = %config.data_dir.display(),
        aad = %config.aad_grpc,
        key_pool_size = config.key_pool_size,
        key_type = %config.key_type,
        "msrp serving"
    );
    let auth = misim_core::control::ControlAuth::for_config(config.control.as_ref());
    let routes = tonic::service::Routes::new(grpc::server(msrp, auth));
    let routes = misim_core::faults::grpc_with_faults(routes, &config.clock, "msrp"); // injected faults
    let tls = config.control.as_ref().map(|c| c.server_tls());
    let served =
        misim_core::serve::serve_grpc_tls(listener, routes, &[grpc::SERVICE_NAME], tls, shutdown)
            .await;
    tasks.cancel();
    let _ = renewal.await;
    Ok(served?)
}
