//! `misim up`: every party in one process, each on its own loopback listener(s), sharing one data
//! directory (`arm/`, `msrp/`, `aad/`, `hosts/<name>/` below it).
//!
//! Listeners are bound before any party starts, so every address is known up front and no party
//! waits on another to start listening; gRPC clients connect lazily.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use misim_core::control::{ControlTls, Role};
use misim_core::serve::bind;
use misim_core::Clock;
use misim_proto::arm::GetAccountRequest;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::endpoints::*;
pub use crate::endpoints::{parse_port_range, ADMIN_CERT_DIR, DEFAULT_HOSTS, ENDPOINTS_FILE};

/// How to start the whole system.
#[derive(Clone, Debug)]
pub struct UpConfig {
    /// Data directory; each party keeps its sled database below it.
    pub data_dir: PathBuf,
    /// Number of hosts (`host-1` … `host-N`), each with its own host agent and IMDS.
    pub hosts: u16,
    /// Base of the fixed ports (see [`crate::endpoints`]); 0 binds every listener on an ephemeral port.
    pub base_port: u16,
    /// Address every listener binds to; must be a loopback address.
    pub bind_ip: IpAddr,
    /// Lifetime of access tokens Azure AD issues, seconds (default 86399, about Azure's 24 h).
    pub token_lifetime_secs: i64,
    /// Age at which Azure AD replaces its token-signing key, seconds (default 30 days; 0 = never).
    pub signing_key_rotation_secs: i64,
    /// Validity of the certificates MSRP issues to identities, seconds (Azure: 90 days).
    pub cert_validity_secs: i64,
    /// Age after which MSRP renews an identity's certificate, seconds (Azure: 45 days).
    pub cert_renew_after_secs: i64,
    /// How often MSRP looks for certificates to renew or retire, wall-clock seconds (default 60).
    pub renewal_check_secs: u64,
    /// How often each host re-fetches its identities' credentials from MSRP, wall-clock seconds
    /// (default 3600; 0 = never).
    pub credential_refresh_secs: u64,
    /// Extra names (DNS names or IPs) the HTTPS certificate covers besides localhost, 127.0.0.1 and
    /// ::1, e.g. `aad`, `arm` for containers.
    pub tls_names: Vec<String>,
    /// When set, ARM's gRPC API requires `authorization: Bearer <token>` (shared machines).
    pub arm_api_token: Option<String>,
    /// Ports of the VMs' own IMDS (and extension) listeners. `None`: [`default_vm_ports`] of the
    /// base port (any free port with `base_port` 0).
    pub vm_ports: Option<std::ops::RangeInclusive<u16>>,
    /// IMDS throttling as Azure's (20 identity requests/s and 5 at once per VM); false switches it
    /// off on every host (load tests, `misim up --no-throttle`).
    pub imds_throttle: bool,
    /// How VMs reach IMDS on every host (`misim up --imds-listener`; default per-VM ports).
    pub imds_listener: misim_imds::ImdsListener,
    /// Key type of the identity certificates MSRP makes (default RSA-2048, as Azure).
    pub identity_key_type: misim_core::cert::KeyType,
    /// Time source for every party.
    pub clock: Clock,
    /// Before writing endpoints.json and saying "misim is up", wait up to this long for ARM's
    /// consistency report (`Health/Consistency`, [`crate::doctor::wait_consistent`]) to show no
    /// differences, printing progress to stderr; `None` does not wait (`misim up --wait-consistent`).
    pub wait_consistent: Option<Duration>,
}

impl UpConfig {
    /// Defaults for `data_dir`: 2 hosts, ports from 7700, 127.0.0.1, 24 h tokens, signing key rotated
    /// every 30 days, certificates valid 90 days and renewed after 45 (checked every minute), hosts
    /// refreshing credentials hourly, system clock.
    pub fn new(data_dir: PathBuf) -> Self {
        UpConfig {
            data_dir,
            hosts: DEFAULT_HOSTS,
            base_port: DEFAULT_BASE_PORT,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            token_lifetime_secs: misim_aad::DEFAULT_TOKEN_LIFETIME_SECS,
            signing_key_rotation_secs: misim_aad::DEFAULT_SIGNING_KEY_ROTATION_SECS,
            cert_validity_secs: misim_msrp::DEFAULT_CERT_VALIDITY_SECS,
            cert_renew_after_secs: misim_msrp::DEFAULT_CERT_RENEW_AFTER_SECS,
            renewal_check_secs: misim_msrp::DEFAULT_RENEWAL_CHECK_SECS,
            credential_refresh_secs: misim_imds::DEFAULT_CREDENTIAL_REFRESH_SECS,
            tls_names: Vec::new(),
            arm_api_token: None,
            vm_ports: None,
            imds_throttle: true,
            imds_listener: misim_imds::ImdsListener::PerVm,
            identity_key_type: misim_core::cert::KeyType::Rsa2048,
            clock: Clock::system(),
            wait_consistent: None,
        }
    }
}

/// A running system: its endpoints, and the means to stop it.
pub struct System {
    /// Where each party listens.
    pub endpoints: Endpoints,
    /// Whether the data directory held state from an earlier run.
    pub resumed: bool,
    /// The absolute data directory.
    pub data_dir: PathBuf,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Held while running: one `misim up` per data directory.
    _lock: Option<std::fs::File>,
    /// The first error a party stopped with.
    first_error: FirstError,
}

impl System {
    /// A token cancelled when the system stops (also cancelled when a party fails).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops every party and waits until all have closed their listeners and flushed their stores;
    /// removes `endpoints.json` (its ports are no longer served).
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let _ = std::fs::remove_file(self.data_dir.join(ENDPOINTS_FILE));
    }

    /// Waits until the system stops (a party failed or the token was cancelled).
    pub async fn wait(&self) {
        self.shutdown.cancelled().await;
        self.tasks.close();
        self.tasks.wait().await;
    }
}

struct Bound {
    arm_grpc: TcpListener,
    arm_rest: TcpListener,
    aad_http: TcpListener,
    aad_https: TcpListener,
    arm_rest_https: TcpListener,
    aad_grpc: TcpListener,
    msrp_grpc: TcpListener,
    hosts: Vec<(String, TcpListener)>,
}

/// Binds `addr` for `what`, with an error that says what to do when the port is taken.
async fn bind_named(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    match bind(addr).await {
        Ok(l) => Ok(l),
        Err(misim_core::serve::ServeError::Bind { source, .. })
            if source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            bail!(
                "cannot listen for {what} on {addr}: the port is in use, most likely by another \
                 `misim up` (stop it, e.g. Ctrl-C in its terminal) or another program. To run beside \
                 it, move misim's port block: --base-port N (ports N..N+{span}), or --base-port 0 \
                 for free ports (they are written to DATA_DIR/endpoints.json)",
                span = HOST_AGENT_OFFSET + 9
            )
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot listen for {what} on {addr}"))),
    }
}

async fn bind_all(cfg: &UpConfig) -> anyhow::Result<Bound> {
    let at = |offset: u16| -> anyhow::Result<SocketAddr> {
        let port = if cfg.base_port == 0 {
            0
        } else {
            cfg.base_port
                .checked_add(offset)
                .context("--base-port too high for the port block")?
        };
        Ok(SocketAddr::new(cfg.bind_ip, port))
    };
    // ARM's gRPC first: the port a user knows (7700) is the one a busy-port error names.
    let arm_grpc = bind_named("ARM gRPC", at(ARM_GRPC_OFFSET)?).await?;
    let arm_rest = bind_named("ARM REST", at(ARM_REST_OFFSET)?).await?;
    let aad_http = bind_named("Azure AD HTTP", at(AAD_HTTP_OFFSET)?).await?;
    let aad_https = bind_named("Azure AD HTTPS", at(AAD_HTTPS_OFFSET)?).await?;
    let arm_rest_https = bind_named("ARM REST HTTPS", at(ARM_REST_HTTPS_OFFSET)?).await?;
    let aad_grpc = bind_named("Azure AD gRPC", at(AAD_GRPC_OFFSET)?).await?;
    let msrp_grpc = bind_named("MSRP gRPC", at(MSRP_GRPC_OFFSET)?).await?;
    let mut hosts = Vec::new();
    for i in 1..=cfg.hosts {
        let name = format!("host-{i}");
        let offset = HOST_AGENT_OFFSET
            .checked_add(i)
            .context("too many hosts for the port block")?;
        let listener = bind_named(&format!("the {name} agent"), at(offset)?).await?;
        hosts.push((name, listener));
    }
    Ok(Bound {
        arm_grpc,
        arm_rest,
        aad_http,
        aad_https,
        arm_rest_https,
        aad_grpc,
        msrp_grpc,
        hosts,
    })
}

/// The VMs' IMDS ports for a port block at `base_port`: `base_port + 100` to `base_port + 1099`
/// (7800-8799 by default: 1,000 VM listeners); `None` (any free port) when `base_port` is 0 or the
/// range would pass 65535.
pub fn default_vm_ports(base_port: u16) -> Option<std::ops::RangeInclusive<u16>> {
    if base_port == 0 {
        return None;
    }
    let start = base_port.checked_add(100)?;
    let end = base_port.checked_add(1099)?;
    Some(start..=end)
}

/// Takes the data directory's lock (`.lock`, an exclusive `flock`), so a second `misim up` on the same
/// directory says so instead of failing inside a party's store.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::io::Write;
    let path = dir.join(".lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        let holder = holder.trim();
        bail!(
            "data directory {} is in use by another `misim up`{}: stop that one, or give this one \
             its own directory with --data-dir DIR (and --base-port N or 0 for its ports)",
            dir.display(),
            if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            }
        );
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

fn url(l: &TcpListener) -> anyhow::Result<String> {
    Ok(format!("http://{}", l.local_addr()?))
}

fn https_url(l: &TcpListener) -> anyhow::Result<String> {
    Ok(format!("https://{}", l.local_addr()?))
}

/// Loads or creates misim's CA in `ca_dir` and issues the HTTPS server certificate (off the runtime).
/// The control-plane certificates of one `misim up`: one per party instance, issued at start from
/// the data directory's CA ([`misim_core::control`]).
struct ControlCerts {
    arm: ControlTls,
    msrp: ControlTls,
    aad: ControlTls,
    hosts: BTreeMap<String, ControlTls>,
}

async fn tls_config(
    ca_dir: PathBuf,
    names: Vec<String>,
    hosts: Vec<String>,
) -> anyhow::Result<(
    PathBuf,
    std::sync::Arc<misim_core::tls::ServerConfig>,
    ControlCerts,
)> {
    tokio::task::spawn_blocking(move || {
        let ca = misim_core::tls::LocalCa::load_or_create(&ca_dir)?;
        let tls = ca.server_config(&names)?;
        let issue = |role| ControlTls::issue(&ca, role, &[]);
        let certs = ControlCerts {
            arm: issue(Role::Arm)?,
            msrp: issue(Role::Msrp)?,
            aad: issue(Role::Aad)?,
            hosts: hosts
                .into_iter()
                .map(|h| Ok((h.clone(), issue(Role::Host(h))?)))
                .collect::<Result<_, misim_core::tls::TlsError>>()?,
        };
        // For people debugging internal calls (grpcurl -cert/-key) and `identity credential export`.
        issue(Role::Admin)?.write(&ca_dir.join(ADMIN_CERT_DIR))?;
        Ok::<_, misim_core::tls::TlsError>((ca.ca_file(), tls, certs))
    })
    .await?
    .context("cannot set up misim's certificate authority for https and the control plane")
}

/// Starts every party and waits until ARM has bootstrapped the default tenant and subscription.
///
/// # Errors
/// When `bind_ip` is not loopback, a port cannot be bound (the message names it), a data directory
/// cannot be created, or ARM does not bootstrap within 30 seconds.
pub async fn start(cfg: UpConfig) -> anyhow::Result<System> {
    if !cfg.bind_ip.is_loopback() {
        bail!(
            "misim up binds loopback addresses only, not {}",
            cfg.bind_ip
        );
    }
    if cfg.hosts == 0 {
        bail!("--hosts must be at least 1");
    }
    let mut cfg = cfg;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;
    // Absolute paths in endpoints.json and the banner, right from any directory.
    cfg.data_dir = std::fs::canonicalize(&cfg.data_dir)
        .with_context(|| format!("cannot resolve data directory {}", cfg.data_dir.display()))?;
    let lock = lock_data_dir(&cfg.data_dir)?;
    misim_core::events::set_clock(cfg.clock.clone()); // recorded requests carry simulated time
    let resumed = cfg.data_dir.join("arm").exists();
    let b = bind_all(&cfg).await?;
    let scenario_port = match cfg.base_port {
        0 => 0,
        base => base.saturating_add(SCENARIO_GRPC_OFFSET),
    };
    let scenario_listener = bind_named(
        "the Scenario service",
        SocketAddr::new(cfg.bind_ip, scenario_port),
    )
    .await?;
    name_listeners(&b); // the party of each listener's spans and metrics
    misim_arm::rest::console::set_token(cfg.arm_api_token.clone());
    let host_names: Vec<String> = b.hosts.iter().map(|(name, _)| name.clone()).collect();
    let (ca_file, tls, mut certs) =
        tls_config(cfg.data_dir.join("ca"), cfg.tls_names.clone(), host_names).await?;
    let mut endpoints = Endpoints {
        arm_grpc: url(&b.arm_grpc)?,
        arm_rest: url(&b.arm_rest)?,
        aad: url(&b.aad_http)?,
        aad_https: https_url(&b.aad_https)?,
        arm_rest_https: https_url(&b.arm_rest_https)?,
        ca_file: ca_file.display().to_string(),
        aad_grpc: https_url(&b.aad_grpc)?,
        msrp_grpc: https_url(&b.msrp_grpc)?,
        hosts: BTreeMap::new(),
        scenario_grpc: url(&scenario_listener)?,
        tenant_id: String::new(),
        subscription_id: String::new(),
    };
    for (name, l) in &b.hosts {
        endpoints.hosts.insert(name.clone(), https_url(l)?);
    }

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let first_error = FirstError::default();
    let dir = &cfg.data_dir;

    let mut aad = misim_aad::Config::new(dir.join("aad"), endpoints.aad.clone(), cfg.clock.clone());
    aad.token_lifetime_secs = cfg.token_lifetime_secs;
    aad.signing_key_rotation_secs = cfg.signing_key_rotation_secs;
    aad.https_public_url = Some(endpoints.aad_https.clone());
    aad.control = Some(certs.aad);
    spawn_party(
        &tasks,
        &shutdown,
        &first_error,
        "aad",
        misim_aad::run(
            aad,
            misim_aad::Listeners {
                grpc: b.aad_grpc,
                http: b.aad_http,
                https: Some(misim_core::tls::HttpsListener {
                    listener: b.aad_https,
                    tls: tls.clone(),
                }),
            },
            shutdown.clone(),
        ),
    );
    let arm_rest_addr = b.arm_rest.local_addr()?;
    misim_arm::rest::vault_hosts::enable(tls.clone()); // each key vault gets its own https port
    misim_arm::rest::metadata::set_login_endpoint(endpoints.aad_https.clone()); // cloud metadata
    spawn_party(
        &tasks,
        &shutdown,
        &first_error,
        "arm-https",
        misim_core::tls::serve_tls_forward(b.arm_rest_https, arm_rest_addr, tls, shutdown.clone()),
    );

    let mut msrp = misim_msrp::Config::new(
        dir.join("msrp"),
        endpoints.aad_grpc.clone(),
        cfg.clock.clone(),
    );
    msrp.cert_validity_secs = cfg.cert_validity_secs;
    msrp.cert_renew_after_secs = cfg.cert_renew_after_secs;
    msrp.renewal_check_secs = cfg.renewal_check_secs;
    msrp.key_type = cfg.identity_key_type;
    msrp.control = Some(certs.msrp);
    spawn_party(
        &tasks,
        &shutdown,
        &first_error,
        "msrp",
        misim_msrp::run(msrp, b.msrp_grpc, shutdown.clone()),
    );

    for (name, listener) in b.hosts {
        let mut host = misim_imds::Config::new(
            name.clone(),
            dir.join("hosts").join(&name),
            endpoints.msrp_grpc.clone(),
            endpoints.aad.clone(),
            cfg.bind_ip,
            cfg.clock.clone(),
        );
        host.credential_refresh_secs = cfg.credential_refresh_secs;
        host.vm_ports = cfg
            .vm_ports
            .clone()
            .or_else(|| default_vm_ports(cfg.base_port));
        host.control = certs.hosts.remove(&name);
        host.imds_listener = cfg.imds_listener;
        if !cfg.imds_throttle {
            host.limits = misim_imds::ImdsLimits::unlimited();
        }
        spawn_party(
            &tasks,
            &shutdown,
            &first_error,
            "imds",
            misim_imds::run(host, listener, shutdown.clone()),
        );
    }

    let arm = misim_arm::Config {
        data_dir: dir.join("arm"),
        msrp_grpc: endpoints.msrp_grpc.clone(),
        aad_grpc: endpoints.aad_grpc.clone(),
        aad_url: endpoints.aad.clone(),
        hosts: endpoints
            .hosts
            .iter()
            .map(|(name, agent)| misim_arm::HostEndpoint {
                name: name.clone(),
                agent_grpc: agent.clone(),
            })
            .collect(),
        clock: cfg.clock.clone(),
        control: Some(certs.arm),
        api_token: cfg.arm_api_token.clone(),
        public_rest_url: None,
    };
    let cfg_token = cfg.arm_api_token.clone();
    spawn_party(
        &tasks,
        &shutdown,
        &first_error,
        "arm",
        misim_arm::run(
            arm,
            misim_arm::Listeners {
                grpc: b.arm_grpc,
                rest: b.arm_rest,
            },
            shutdown.clone(),
        ),
    );

    let system = System {
        endpoints,
        resumed,
        data_dir: cfg.data_dir.clone(),
        shutdown,
        tasks,
        _lock: Some(lock),
        first_error: first_error.clone(),
    };
    match wait_for_bootstrap(
        &system.endpoints.arm_grpc,
        cfg_token.as_deref(),
        &system.shutdown,
        &system.first_error,
    )
    .await
    {
        // A party that failed (a damaged store) while ARM bootstrapped: no "misim is up".
        Ok(_) if system.shutdown.is_cancelled() => {
            let first_error = system.first_error.clone();
            system.stop().await;
            Err(startup_failure(
                &first_error,
                "a party stopped during start-up",
            ))
        }
        Ok((tenant, sub)) => {
            let mut system = system;
            system.endpoints.tenant_id = tenant;
            system.endpoints.subscription_id = sub;
            // Scenario documents run against this system over gRPC (crate::scenario::grpc).
            let target = crate::scenario::Target {
                endpoints: system.endpoints.clone(),
                data_dir: system.data_dir.clone(),
                misim_bin: crate::scenario::misim_bin(),
            };
            spawn_party(
                &system.tasks,
                &system.shutdown,
                &system.first_error,
                "scenario",
                misim_core::serve::serve_grpc(
                    scenario_listener,
                    tonic::service::Routes::new(
                        crate::scenario::grpc::ScenarioService::new(target).server(),
                    ),
                    &["misim.scenario.v1.Scenario"],
                    system.shutdown.clone(),
                ),
            );
            if let Some(timeout) = cfg.wait_consistent {
                if let Err(e) = settle(&system, cfg_token.as_deref(), timeout).await {
                    system.stop().await;
                    return Err(e);
                }
            }
            std::fs::write(dir.join(ENDPOINTS_FILE), system.endpoints.to_json())
                .with_context(|| format!("cannot write {}", dir.join(ENDPOINTS_FILE).display()))?;
            info!(data_dir = %dir.display(), "misim is up");
            Ok(system)
        }
        Err(e) => {
            system.stop().await;
            Err(e)
        }
    }
}

/// Names each listener's party for its server spans and request metrics (misim_core::telemetry).
fn name_listeners(b: &Bound) {
    use misim_core::telemetry::propagation::name_listener;
    let named = [
        (&b.arm_grpc, "arm"),
        (&b.arm_rest, "arm"),
        (&b.aad_http, "aad"),
        (&b.aad_https, "aad"),
        (&b.aad_grpc, "aad"),
        (&b.msrp_grpc, "msrp"),
    ];
    for (l, party) in named {
        if let Ok(addr) = l.local_addr() {
            name_listener(addr, party);
        }
    }
    for (name, l) in &b.hosts {
        if let Ok(addr) = l.local_addr() {
            name_listener(addr, name);
        }
    }
}

fn spawn_party<E: std::fmt::Display>(
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
    first_error: &FirstError,
    party: &'static str,
    fut: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
) {
    let shutdown = shutdown.clone();
    let first_error = first_error.clone();
    tasks.spawn(async move {
        if let Err(e) = fut.await {
            error!(party, error = %e, "party stopped with an error; stopping misim");
            let _ = first_error.set(format!("{party}: {e}"));
        }
        // Whatever the reason a party ends, the system is no longer whole.
        shutdown.cancel();
    });
}

/// The first error a party of one system stopped with (a damaged store names its path and the fix).
type FirstError = std::sync::Arc<std::sync::OnceLock<String>>;

/// `what`, with the first party's error when one stopped with an error.
fn startup_failure(first_error: &FirstError, what: &str) -> anyhow::Error {
    match first_error.get() {
        Some(e) => anyhow::anyhow!("{what}: {e}"),
        None => anyhow::anyhow!("{what} (see the log above)"),
    }
}

/// `--wait-consistent`: waits until ARM's consistency report has no differences, printing
/// progress to stderr.
///
/// # Errors
/// Differences left after `timeout` (listed), a party that stopped, or ARM unreachable.
async fn settle(system: &System, token: Option<&str>, timeout: Duration) -> anyhow::Result<()> {
    let waiting =
        crate::doctor::wait_consistent(&system.endpoints.arm_grpc, token, timeout, |r, waited| {
            eprintln!("{}", crate::doctor::progress_line(r, waited))
        });
    let r = tokio::select! {
        r = waiting => r?,
        _ = system.shutdown.cancelled() => {
            return Err(startup_failure(&system.first_error, "a party stopped while waiting for consistency"))
        }
    };
    if r.consistent {
        return Ok(());
    }
    let report = serde_json::to_string_pretty(&crate::doctor::report_json(&r)).unwrap_or_default();
    bail!(
        "not consistent within {} s (--wait-consistent): {} difference(s) left:\n{report}",
        timeout.as_secs(),
        r.differences.len()
    )
}

async fn wait_for_bootstrap(
    arm_grpc: &str,
    token: Option<&str>,
    shutdown: &CancellationToken,
    first_error: &FirstError,
) -> anyhow::Result<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        if shutdown.is_cancelled() {
            return Err(startup_failure(
                first_error,
                "a party stopped during start-up",
            ));
        }
        match crate::client::connect(arm_grpc, token).await {
            Ok(mut arm) => match arm.get_account(GetAccountRequest::default()).await {
                Ok(sub) => {
                    let sub = sub.into_inner();
                    return Ok((sub.tenant_id, sub.subscription_id));
                }
                Err(status) => last = status.message().to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("ARM did not bootstrap its default subscription within 30 s: {last}")
}

/// `misim up`: starts the system, prints where everything is, runs until Ctrl-C / SIGTERM.
///
/// # Errors
/// As [`start`].
pub async fn run_until_signal(a: crate::cli::UpArgs) -> anyhow::Result<()> {
    let mut cfg = UpConfig::new(a.data_dir);
    cfg.hosts = a.hosts;
    cfg.base_port = a.base_port;
    cfg.token_lifetime_secs = a.token_lifetime;
    cfg.signing_key_rotation_secs = a.signing_key_rotation;
    cfg.tls_names = a.tls_names;
    cfg.arm_api_token = a.arm_api_token;
    cfg.vm_ports = a.vm_ports.as_deref().map(parse_port_range).transpose()?;
    cfg.imds_throttle = !a.no_throttle;
    cfg.imds_listener = a.imds_listener;
    cfg.identity_key_type = a.identity_key_type;
    // Simulated time and propagation delays (docs/faults-and-time.md).
    if a.clock == "manual" {
        cfg.clock = Clock::manual_from_now();
    }
    let (role_assignment, identity) = parse_propagation(&a.propagation)?;
    cfg.clock.propagation().set(role_assignment, identity);
    cfg.wait_consistent = a.wait_consistent.map(Duration::from_secs);
    let system = start(cfg).await?;
    crate::client::print_text(&banner(&system.endpoints, &system.data_dir, system.resumed));
    let signal = crate::parties::shutdown_on_signal();
    tokio::select! {
        _ = signal.cancelled() => system.stop().await,
        _ = system.wait() => return Err(startup_failure(&system.first_error, "a party stopped unexpectedly")),
    }
    Ok(())
}

/// Parses `--propagation role-assignment=60s,identity=10s` into (role assignment, identity) delays in
/// seconds; missing keys are 0.
///
/// # Errors
/// For an unknown key or a malformed duration.
pub fn parse_propagation(s: &str) -> anyhow::Result<(i64, i64)> {
    let (mut role_assignment, mut identity) = (0, 0);
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').with_context(|| {
            format!("--propagation {part:?} is not KEY=DURATION, e.g. role-assignment=60s")
        })?;
        let secs = crate::client::clock::parse_duration(v)?;
        match k.trim() {
            "role-assignment" => role_assignment = secs,
            "identity" => identity = secs,
            other => bail!("--propagation knows role-assignment and identity, not {other:?}"),
        }
    }
    Ok((role_assignment, identity))
}

/// What `misim up` prints once everything is up.
pub fn banner(e: &Endpoints, data_dir: &std::path::Path, resumed: bool) -> String {
    let next = if resumed {
        format!(
            "State from an earlier run in {dir} is loaded: resource groups, VMs and identities keep \
             their IDs, and VMs their IMDS ports.\nSee it with: misim group list, misim vm list -g <group>",
            dir = data_dir.display()
        )
    } else {
        "Next: misim group create -n rg1 && misim vm create -g rg1 -n vm1 && \
         misim vm identity assign -g rg1 -n vm1 --identities system"
            .to_string()
    };
    let hosts: Vec<String> = e
        .hosts
        .iter()
        .map(|(n, u)| format!("  {n:<14}{u}  (host agent gRPC)"))
        .collect();
    format!(
        "misim is up.\n\
         \n  ARM gRPC      {arm}   (export MISIM_ARM={arm})\
         \n  ARM REST      {rest}   (https: {rest_https})\
         \n  Azure AD      {aad}   (discovery: {aad}/{tenant}/.well-known/openid-configuration)\
         \n  Azure AD TLS  {aad_https}\
         \n  Azure AD gRPC {aadg}\
         \n  MSRP gRPC     {msrp}   (export MISIM_MSRP={msrp}, for `misim identity credential export`)\
         \n{hosts}\
         \n\n  tenant        {tenant}\
         \n  subscription  {sub}\
         \n  endpoints     {file}\
         \n  CA file       {ca}\
         \n\nTo use the https endpoints (certificate credentials need an https authority):\
         \n  export REQUESTS_CA_BUNDLE={ca} SSL_CERT_FILE={ca}\
         \n  export AZURE_AUTHORITY_HOST={aad_https} AZURE_TENANT_ID={tenant}\
         \n  and disable instance discovery in the SDK (azure-identity: disable_instance_discovery=True;\
         \n  msal: instance_discovery=False), or MSAL asks login.microsoftonline.com about the authority\
         \n\n{next}\
         \nThen point an Azure SDK at the VM's IMDS (imdsEndpoint from `misim vm show -g rg1 -n vm1`):\
         \n  export AZURE_POD_IDENTITY_AUTHORITY_HOST=<imdsEndpoint>",
        arm = e.arm_grpc,
        rest = e.arm_rest,
        rest_https = e.arm_rest_https,
        aad = e.aad,
        aad_https = e.aad_https,
        ca = e.ca_file,
        aadg = e.aad_grpc,
        msrp = e.msrp_grpc,
        hosts = hosts.join("\n"),
        tenant = e.tenant_id,
        sub = e.subscription_id,
        file = data_dir.join(ENDPOINTS_FILE).display(),
    )
}
