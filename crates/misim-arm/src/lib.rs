//! ARM, Azure Resource Manager: the control plane users drive over gRPC (subscriptions, resource
//! groups, VMs, scale sets, user-assigned identities, role assignments, key vaults), the reconciler that carries identity
//! changes to MSRP and the hosts (steps 1–4), and the REST surface that checks bearer tokens (step 7).

mod authorization;
mod bootstrap;
mod clients;
pub mod error;
pub mod grpc;
mod heal;
mod identity;
pub mod model;
mod reconcile;
mod resources;
pub mod rest;
mod service;
mod store;

// The paths the REST surface and the consistency check use (crate::vms, crate::rbac, …).
pub(crate) use authorization::{rbac, roles};
pub(crate) use identity::spec as identity_spec;
pub(crate) use resources::{vault, vms, vmss, webapps};

use std::path::PathBuf;
use std::sync::Arc;

use misim_core::Clock;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

// The public façade: the handle, what its calls take and return, and what stops it.
pub use authorization::roles::{RoleDefinition, BUILT_IN_ROLES};
pub use error::ArmError;
pub use heal::{Consistency, Difference};
pub use identity::spec::{IdentityRequest, Mode};
pub use identity::workload::{
    FederatedCredential, ManagedCluster, ServiceAccountToken, TokenRequest,
};
pub use identity::{IdentityOwner, IdentityTarget};
pub use resources::extensions::SetExtension;
pub use resources::vms::CreateVm;
pub use resources::vmss::CreateVmss;
pub use resources::webapps::CreateWebApp;
pub use resources::NewResource;
pub use service::{validate_name, Arm};

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
    /// Control-plane mTLS: ARM's certificate (role `arm`), presented to MSRP, Azure AD admin and the
    /// hosts ([`misim_core::control`]). `None` only in unit tests with fake peers (plain gRPC).
    pub control: Option<misim_core::control::ControlTls>,
    /// When set, the user-facing gRPC API requires `authorization: Bearer <api_token>` on every call
    /// (for machines shared with other users); `None`: open on its (loopback) listener.
    pub api_token: Option<String>,
    /// The URL others reach the REST surface at when it is not its listener's address (e.g.
    /// `http://arm:7701` in containers, where the listener is `0.0.0.0:7701`): used in the URLs ARM
    /// hands out (AKS OIDC issuer URLs, Key Vault endpoints). `None`: `http://<rest listener>`.
    pub public_rest_url: Option<String>,
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
    /// The store could not be opened or serving failed.
    #[error(transparent)]
    Start(#[from] misim_core::RunFailure),
    /// The configuration is unusable (e.g. a malformed peer URL).
    #[error("config: {0}")]
    Config(#[source] ArmError),
}

misim_core::run_failure_from!(RunError);

/// Builds the ARM core from `config`: opens the store under `config.data_dir` and lazy clients to
/// MSRP, Azure AD admin and the hosts.
///
/// # Errors
/// [`RunError::Start`] when the store cannot be opened, [`RunError::Config`] for a malformed URL.
pub fn build(config: &Config) -> Result<Arc<Arm>, RunError> {
    let store = store::ArmStore::open(&config.data_dir)?;
    let hosts: Vec<(String, String)> = config
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.agent_grpc.clone()))
        .collect();
    let peers = clients::Peers::new(
        &config.msrp_grpc,
        &config.aad_grpc,
        &hosts,
        config.control.as_ref(),
    )
    .map_err(RunError::Config)?;
    Ok(Arc::new(Arm::new(store, peers, config.clock.clone())))
}

/// Runs ARM until `shutdown` is cancelled.
///
/// # Errors
/// [`RunError`] when the store cannot be opened or a server fails.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let arm = build(&config)?;
    if let Ok(addr) = listeners.rest.local_addr() {
        arm.set_rest_url(format!("http://{addr}"));
    }
    if let Some(url) = config.public_rest_url.clone().filter(|u| !u.is_empty()) {
        arm.set_public_rest_url(url);
    }
    let validator = rest::auth::TokenValidator::new(&config.aad_url, config.clock.clone())
        .map_err(RunError::Config)?;
    let background = tokio_util::task::TaskTracker::new();
    {
        let (arm, shutdown) = (arm.clone(), shutdown.clone());
        background.spawn(async move {
            match arm.bootstrap(&shutdown).await {
                Ok(Some(_)) => reconcile::run_loop(arm, shutdown).await,
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "bootstrap failed"),
            }
        });
    }
    background.close();
    let routes = match config.api_token.clone() {
        None => tonic::service::Routes::new(grpc::ArmGrpc::server(arm.clone())),
        Some(token) => {
            tonic::service::Routes::new(tonic::service::interceptor::InterceptedService::new(
                grpc::ArmGrpc::server(arm.clone()),
                grpc::BearerCheck::new(token),
            ))
        }
    };
    // This process' recorded requests (misim_core::events), to whoever may call ARM's API.
    let events = misim_core::events::EventsService::new(misim_core::control::ControlAuth::Off)
        .with_shutdown(shutdown.clone());
    let routes = match config.api_token.clone() {
        None => routes.add_service(events.server()),
        Some(token) => routes.add_service(tonic::service::interceptor::InterceptedService::new(
            events.server(),
            grpc::BearerCheck::new(token),
        )),
    };
    // The system's consistency report (misim.sim.v1 Health, heal.rs).
    let routes = match config.api_token.clone() {
        None => routes.add_service(heal::HealthGrpc::server(arm.clone())),
        Some(token) => routes.add_service(tonic::service::interceptor::InterceptedService::new(
            heal::HealthGrpc::server(arm.clone()),
            grpc::BearerCheck::new(token),
        )),
    };
    // Simulation control over this system's clock (misim.sim.v1 Clock, Faults, Propagation:
    // misim_core::sim_grpc), then injected faults on the whole gRPC API (misim_core::faults).
    let routes = {
        use misim_proto::sim::{
            clock_server::ClockServer, faults_server::FaultsServer,
            propagation_server::PropagationServer,
        };
        use tonic::service::interceptor::InterceptedService as With;
        let sim = misim_core::sim_grpc::SimServices::new(config.clock.clone());
        match config.api_token.clone() {
            None => routes
                .add_service(ClockServer::new(sim.clone()))
                .add_service(FaultsServer::new(sim.clone()))
                .add_service(PropagationServer::new(sim)),
            Some(token) => {
                let check = grpc::BearerCheck::new(token);
                routes
                    .add_service(With::new(ClockServer::new(sim.clone()), check.clone()))
                    .add_service(With::new(FaultsServer::new(sim.clone()), check.clone()))
                    .add_service(With::new(PropagationServer::new(sim), check))
            }
        }
    };
    let routes = misim_core::faults::grpc_with_faults(routes, &config.clock, "arm");
    let rest_router = rest::router(rest::RestState {
        arm,
        validator: Arc::new(validator),
    });
    let served = tokio::try_join!(
        misim_core::serve::serve_grpc(
            listeners.grpc,
            routes,
            &[
                "misim.arm.v1.Arm",
                "misim.events.v1.Events",
                "misim.sim.v1.Health"
            ],
            shutdown.clone()
        ),
        misim_core::serve::serve_http(
            listeners.rest,
            misim_core::faults::with_faults(rest_router, &config.clock, "arm"),
            shutdown.clone(),
        ),
    );
    shutdown.cancel();
    background.wait().await;
    served?;
    Ok(())
}
