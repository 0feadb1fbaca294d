//! One host: the host agent gRPC API (ARM places VMs here and configures their identities) and the
//! Instance Metadata Service those VMs call for managed-identity tokens (steps 3, 5 and 6 of the flow).
//!
//! Local mode: every VM gets its own loopback listener, which identifies the calling VM
//! ([`ImdsListener::PerVm`]), or one loopback listener serves every VM of the host and the path
//! prefix `/vms/{vmId}` of its endpoint identifies it ([`ImdsListener::Shared`]; 10,000 VMs take
//! one descriptor). Containers: optional shared listeners (IMDS, VM extension) identify the VM by
//! source address. The legacy managed-identity VM extension can be installed per VM (`extension.rs`).
//!
//! Layers: `host` keeps state and runs the host agent's operations; `http` serves requests through
//! a narrow state ([`http`]'s `ImdsState`: token service, VM directory); `vm::VmServing` is how the
//! host starts a VM's own listener without knowing what is served on it.

mod aad_client;
mod cache;
mod credentials;
mod directory;
mod error;
mod extension;
mod grpc;
mod host;
#[cfg(test)]
mod host_tests;
mod http;
mod listener;
mod model;
mod propagation;
mod selection;
mod store;
#[cfg(test)]
mod test_support;
mod throttle;
mod tokens;
mod versions;
mod vm;
mod vm_disk;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use misim_core::{Clock, Store};
use misim_proto::imds::host_agent_server::HostAgentServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::server::NamedService;
use tracing::{info, warn};

pub use error::{AadError, AgentError, ImdsError, KeyError, QueryError, Surface};
pub use extension::{
    DEFAULT_PORT as EXTENSION_DEFAULT_PORT, MAX_USER_ASSIGNED as EXTENSION_MAX_USER_ASSIGNED,
};
pub use host::MAX_USER_ASSIGNED;
pub use throttle::ImdsLimits;

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
    /// Per-VM IMDS throttling (default: Azure's 20 req/s and 5 concurrent for identity, 5 req/s for
    /// the other categories; [`ImdsLimits::unlimited`] switches it off).
    pub limits: ImdsLimits,
    /// How often every served identity's credential is fetched again from MSRP so certificate
    /// renewals reach the host, in seconds of wall time; 0 disables. Default
    /// [`DEFAULT_CREDENTIAL_REFRESH_SECS`].
    pub credential_refresh_secs: u64,
    /// Shared IMDS listener for every VM of the host, which identifies the calling VM by its source
    /// address (= the VM's private IP). For containers, e.g. `169.254.169.254:80` inside the host
    /// container; `None` (default): only the per-VM loopback listeners.
    pub imds_listen: Option<SocketAddr>,
    /// Shared VM-extension listener (containers: the VM forwards its `localhost:50342` here), which
    /// identifies the VM by source address like [`Config::imds_listen`]. `None` (default): only the
    /// per-VM loopback extension listeners.
    pub extension_listen: Option<SocketAddr>,
    /// Whether each VM gets its own IMDS (and extension) listener on `vm_listen_ip`, which tells VMs
    /// apart by port. Such listeners are loopback-only: in local mode every local process is trusted
    /// like code in that VM. Off in the container stack, where only the shared listeners (source
    /// address = the VM's private IP) exist. Default on.
    pub vm_listeners: bool,
    /// How VMs reach IMDS in local mode (per-VM listeners on): each on its own port (default), or
    /// all through one loopback listener by path prefix.
    pub imds_listener: ImdsListener,
    /// Ports the per-VM listeners take, lowest free first (a VM keeps its port across restarts when
    /// it is free). `None`: any free port the system gives.
    pub vm_ports: Option<std::ops::RangeInclusive<u16>>,
    /// Control-plane mTLS: this host's certificate (role `host:<name>`), used to serve the host agent
    /// API (only ARM may call it) and to fetch credentials from MSRP. `None` only in unit tests with
    /// fake peers: plain gRPC and no caller checks.
    pub control: Option<misim_core::control::ControlTls>,
}

/// Default of [`Config::credential_refresh_secs`]: one hour.
pub const DEFAULT_CREDENTIAL_REFRESH_SECS: u64 = 3600;

impl Config {
    /// A config with Azure's throttling limits ([`ImdsLimits::default`]) and the default credential
    /// refresh period ([`DEFAULT_CREDENTIAL_REFRESH_SECS`]).
    pub fn new(
        host_name: String,
        data_dir: PathBuf,
        msrp_grpc: String,
        aad_url: String,
        vm_listen_ip: IpAddr,
        clock: Clock,
    ) -> Self {
        Config {
            host_name,
            data_dir,
            msrp_grpc,
            aad_url,
            vm_listen_ip,
            clock,
            limits: ImdsLimits::default(),
            credential_refresh_secs: DEFAULT_CREDENTIAL_REFRESH_SECS,
            imds_listen: None,
            extension_listen: None,
            vm_listeners: true,
            imds_listener: ImdsListener::PerVm,
            vm_ports: None,
            control: None,
        }
    }
}

/// How the VMs of a host reach IMDS in local mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImdsListener {
    /// Each VM gets its own loopback port; its `imdsEndpoint` is `http://127.0.0.1:PORT`. One file
    /// descriptor per VM.
    #[default]
    PerVm,
    /// One loopback listener serves every VM of the host; a VM's `imdsEndpoint` is
    /// `http://127.0.0.1:PORT/vms/{vmId}` and clients append `/metadata/identity/oauth2/token` to it
    /// (as the Python SDKs do with `AZURE_POD_IDENTITY_AUTHORITY_HOST`). The port is kept across
    /// restarts when free. Web apps and the VM extension keep their own listeners.
    Shared,
}

impl std::str::FromStr for ImdsListener {
    type Err = String;

    /// `per-vm` or `shared` (the values of `misim up --imds-listener`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "per-vm" => Ok(ImdsListener::PerVm),
            "shared" => Ok(ImdsListener::Shared),
            other => Err(format!("unknown imds listener {other:?}: per-vm or shared")),
        }
    }
}

impl std::fmt::Display for ImdsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImdsListener::PerVm => "per-vm",
            ImdsListener::Shared => "shared",
        })
    }
}

/// Errors that stop the host.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store could not be opened or serving failed.
    #[error(transparent)]
    Start(#[from] misim_core::RunFailure),
    /// The stored VMs could not be reloaded (unreadable store, no port for a listener).
    #[error(transparent)]
    Host(#[from] AgentError),
    /// The HTTP client for Azure AD could not be built.
    #[error("http client")]
    HttpClient(#[from] reqwest::Error),
    /// The configuration is unsafe or incomplete; the message says what to change.
    #[error("host config: {0}")]
    Config(String),
}

misim_core::run_failure_from!(RunError);

async fn bind_opt(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, RunError> {
    match addr {
        Some(addr) => Ok(Some(misim_core::serve::bind(addr).await?)),
        None => Ok(None),
    }
}

/// A host with its serving layer, before anything is served on the shared listeners.
pub(crate) struct Assembled {
    host: Arc<host::Host>,
    serving: Arc<http::Serving>,
    /// The shared loopback listener of [`ImdsListener::Shared`].
    path_listener: Option<TcpListener>,
}

/// Builds the host's parts: token service, VM directory, serving layer, the shared loopback
/// listener when VMs are served by path (bound on the port of the previous run when free), and
/// the host itself (its stored VMs reloaded). VM listeners stop when `shutdown` is cancelled.
pub(crate) async fn assemble(
    config: &Config,
    store: store::HostStore,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> Result<Assembled, RunError> {
    let limits = &config.limits;
    let tokens = Arc::new(tokens::Tokens {
        clock: config.clock.clone(),
        aad: aad_client::AadClient::new(&config.aad_url, config.clock.clone())?,
        cache: cache::TokenCache::new(config.clock.clone()),
        propagating: Default::default(),
        retry_after_secs: limits.retry_after_secs.filter(|_| limits.enabled),
    });
    let vms = Arc::new(directory::VmDirectory::default());
    let listeners =
        listener::Listeners::new(&config.host_name, config.clock.clone(), shutdown, tasks);
    let state = http::ImdsState {
        tokens: Arc::clone(&tokens),
        vms: Arc::clone(&vms),
        data_dir: Arc::new(config.data_dir.clone()),
    };
    let serving = Arc::new(http::Serving::new(state, listeners));
    let path_listener = match (config.vm_listeners, config.imds_listener) {
        (true, ImdsListener::Shared) => {
            let previous = store.shared_port()?;
            let at = |port| SocketAddr::new(config.vm_listen_ip, port);
            let listener = match misim_core::serve::bind(at(previous)).await {
                Ok(l) => l,
                Err(e) if previous != 0 => {
                    warn!(port = previous, error = %e, "previous shared imds port unavailable, binding a new one: vm endpoints change");
                    misim_core::serve::bind(at(0)).await?
                }
                Err(e) => return Err(e.into()),
            };
            let port = host::local_port(Some(&listener))?;
            if port != previous {
                store.set_shared_port(port).await?;
            }
            Some(listener)
        }
        _ => None,
    };
    let path_imds = path_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()
        .map_err(AgentError::ListenerAddress)?;
    let host = host::Host::start(
        config,
        store,
        host::Shared {
            tokens,
            vms,
            serving: serving.clone(),
            path_imds,
        },
    )
    .await?;
    Ok(Assembled {
        host,
        serving,
        path_listener,
    })
}

/// Runs the host agent on `agent_listener` and the IMDS endpoints of the VMs placed here, until
/// `shutdown` is cancelled. On start, VMs stored by a previous run are reloaded with their identities
/// and credentials (MSRP is not called) and their IMDS listeners re-bound on the same ports when free.
///
/// # Errors
/// [`RunError`] when the store cannot be opened or the agent server fails.
pub async fn run(
    config: Config,
    agent_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    if config.vm_listeners && !config.vm_listen_ip.is_loopback() {
        return Err(RunError::Config(format!(
            "per-VM IMDS listeners tell VMs apart by port and are loopback-only, but vm_listen_ip is \
             {}: use 127.0.0.1, or switch per-VM listeners off (--no-vm-listeners) and serve VMs through \
             the shared listener (--imds-listen), which identifies them by source address",
            config.vm_listen_ip
        )));
    }
    if !config.vm_listeners && config.imds_listen.is_none() {
        return Err(RunError::Config(
            "per-VM listeners are off but no shared IMDS listener is set: add --imds-listen ADDR:PORT"
                .into(),
        ));
    }
    let store = Store::open_party(
        &config.data_dir,
        &format!("host:{}", config.host_name),
        store::SCHEMA_VERSION,
    )?;
    if store.was_fresh() {
        info!(host = %config.host_name, dir = %config.data_dir.display(), "host store is new and empty: ARM re-places this host's VMs on its next reconcile");
    }
    let store = store::HostStore::new(store)?;
    let tasks = TaskTracker::new();
    let vms_shutdown = shutdown.child_token();
    let assembled = assemble(&config, store, vms_shutdown.clone(), tasks.clone()).await?;
    let host = assembled.host;
    let shared = [
        (
            assembled.path_listener,
            "imds (vms by path)",
            assembled.serving.shared_imds_router(true),
            misim_core::limits::ConnLimits::SHARED_LOOPBACK,
        ),
        (
            bind_opt(config.imds_listen).await?,
            "imds",
            assembled.serving.shared_imds_router(false),
            misim_core::limits::ConnLimits::SHARED,
        ),
        (
            bind_opt(config.extension_listen).await?,
            "vm extension",
            assembled.serving.shared_extension_router(),
            misim_core::limits::ConnLimits::SHARED,
        ),
    ];
    for (listener, what, router, limits) in shared {
        let Some(listener) = listener else { continue };
        let router = misim_core::faults::with_faults(router, &config.clock, &config.host_name);
        info!(host = %config.host_name, listener = what, addr = ?listener.local_addr().ok(), "shared listener serving every vm of the host");
        let stop = vms_shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) =
                misim_core::serve::serve_http_limited(listener, router, limits, stop).await
            {
                tracing::warn!(listener = what, error = %e, "shared listener failed");
            }
        });
    }
    if config.credential_refresh_secs > 0 {
        let period = Duration::from_secs(config.credential_refresh_secs);
        host::spawn_periodic_refresh(host.clone(), period, &tasks, vms_shutdown.clone());
    }
    let auth = misim_core::control::ControlAuth::for_config(config.control.as_ref());
    let service = HostAgentServer::new(grpc::agent::AgentService::new(host.clone(), auth));
    let name = <HostAgentServer<grpc::agent::AgentService> as NamedService>::NAME;
    info!(host = %config.host_name, agent = ?agent_listener.local_addr().ok(), "host agent listening");
    let served = misim_core::serve::serve_grpc_tls(
        agent_listener,
        misim_core::faults::grpc_with_faults(
            tonic::service::Routes::new(service),
            &config.clock,
            &config.host_name,
        ),
        &[name],
        config.control.as_ref().map(|c| c.server_tls()),
        shutdown,
    )
    .await;
    vms_shutdown.cancel();
    drop(host);
    tasks.close();
    tasks.wait().await;
    served?;
    Ok(())
}
