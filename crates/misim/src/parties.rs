//! One party per process: `misim aad`, `misim msrp`, `misim imds`, `misim arm` (for separate
//! processes and containers), and the config constructors `misim up` shares with them.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use misim_core::control::{ControlTls, Role};
use misim_core::serve::bind;
use misim_core::Clock;
use tokio_util::sync::CancellationToken;

use crate::endpoints;

/// Control-plane mutual TLS of a party run alone.
#[derive(Args, Debug)]
pub struct ControlArgs {
    /// Directory with this party's certificate (cert.pem, key.pem, ca.pem; see `misim certs issue`).
    /// Default: issue one at start from the CA in --ca-dir (convenient for several local processes;
    /// in containers give each party its own directory, and the CA key to none of them).
    #[arg(long, env = "MISIM_CONTROL_TLS_DIR")]
    pub control_tls_dir: Option<PathBuf>,
}

impl ControlArgs {
    /// Loads this party's certificate from `--control-tls-dir`, or issues one for `role` from the CA
    /// in `ca_dir` (created if missing).
    ///
    /// # Errors
    /// When the files cannot be read, carry another role, or the CA cannot be used.
    pub fn load(&self, role: Role, ca_dir: &Path) -> anyhow::Result<ControlTls> {
        match &self.control_tls_dir {
            Some(dir) => {
                let tls = ControlTls::load(dir).with_context(|| {
                    format!(
                        "cannot load the control-plane certificate from {} (make it with `misim certs issue --role {role} --out {}`)",
                        dir.display(),
                        dir.display()
                    )
                })?;
                if *tls.role() != role {
                    anyhow::bail!(
                        "the certificate in {} is for role {}, but this party is {role}",
                        dir.display(),
                        tls.role()
                    );
                }
                Ok(tls)
            }
            None => {
                let ca = misim_core::tls::LocalCa::load_or_create(ca_dir)
                    .context("cannot set up misim's certificate authority")?;
                Ok(ControlTls::issue(&ca, role, &[])?)
            }
        }
    }
}

/// `misim certs issue`: writes a party certificate.
///
/// # Errors
/// When the role is unknown, the CA cannot be used, or the files cannot be written.
pub fn certs(command: crate::cli::CertsCommand) -> anyhow::Result<()> {
    let crate::cli::CertsCommand::Issue {
        ca_dir,
        role,
        names,
        out,
    } = command;
    let role = Role::parse(&role).map_err(|e| anyhow::anyhow!(e))?;
    let ca = misim_core::tls::LocalCa::load_or_create(&ca_dir)
        .with_context(|| format!("cannot use misim's CA in {}", ca_dir.display()))?;
    let tls = ControlTls::issue(&ca, role.clone(), &names)?;
    tls.write(&out)
        .with_context(|| format!("cannot write the certificate to {}", out.display()))?;
    crate::client::print_text(
        &serde_json::json!({
            "role": role.to_string(),
            "cert": out.join(misim_core::control::CERT_FILE),
            "key": out.join(misim_core::control::KEY_FILE),
            "ca": out.join(misim_core::control::CA_FILE),
        })
        .to_string(),
    );
    Ok(())
}

/// `misim aad`: Azure AD alone.
#[derive(Args, Debug)]
pub struct AadArgs {
    /// Directory of Azure AD's database.
    #[arg(long, env = "MISIM_AAD_DATA_DIR", default_value = "misim-data/aad")]
    pub data_dir: PathBuf,
    /// Admin gRPC listen address.
    #[arg(long, env = "MISIM_AAD_GRPC_LISTEN", default_value_t = endpoints::default_listen(endpoints::AAD_GRPC_OFFSET))]
    pub grpc_listen: SocketAddr,
    /// HTTP (token endpoint, discovery, JWKS) listen address.
    #[arg(long, env = "MISIM_AAD_HTTP_LISTEN", default_value_t = endpoints::default_listen(endpoints::AAD_HTTP_OFFSET))]
    pub http_listen: SocketAddr,
    /// Base URL others reach the HTTP API at (used in discovery documents); default http://<http-listen>.
    #[arg(long, env = "MISIM_AAD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Access-token lifetime in seconds.
    #[arg(long, env = "MISIM_TOKEN_LIFETIME", default_value_t = misim_aad::DEFAULT_TOKEN_LIFETIME_SECS)]
    pub token_lifetime: i64,
    /// Age in seconds at which the token-signing key is rotated (0 = never; default 30 days).
    #[arg(long, env = "MISIM_SIGNING_KEY_ROTATION", default_value_t = misim_aad::DEFAULT_SIGNING_KEY_ROTATION_SECS)]
    pub signing_key_rotation: i64,
    /// HTTPS listen address for the same HTTP API (discovery then names https URLs); off if unset.
    #[arg(long, env = "MISIM_AAD_HTTPS_LISTEN")]
    pub https_listen: Option<SocketAddr>,
    /// Base URL others reach the HTTPS API at; default https://<https-listen>.
    #[arg(long, env = "MISIM_AAD_HTTPS_PUBLIC_URL")]
    pub https_public_url: Option<String>,
    /// Host names (comma-separated, e.g. arm) Azure AD may fetch federated issuers' discovery
    /// documents and keys from, besides loopback: for a container network where ARM serves the AKS
    /// cluster issuers at http://arm:7701. Host names only, no IP addresses. Default: loopback only.
    #[arg(long, env = "MISIM_AAD_FEDERATION_ISSUER_HOSTS", value_delimiter = ',')]
    pub federation_issuer_hosts: Vec<String>,
    /// TLS certificate options.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Control-plane mutual TLS.
    #[command(flatten)]
    pub control: ControlArgs,
}

/// Where misim's CA lives and which extra names the HTTPS certificate covers.
#[derive(Args, Debug)]
pub struct TlsArgs {
    /// Directory of misim's CA (`ca.pem`, `ca.key`; created on first start, shared by parties).
    #[arg(long, env = "MISIM_CA_DIR", default_value = endpoints::DEFAULT_CA_DIR)]
    pub ca_dir: PathBuf,
    /// Extra names for the HTTPS certificate besides localhost/127.0.0.1/::1 (e.g. aad,arm).
    #[arg(long = "tls-name", env = "MISIM_TLS_NAMES", value_delimiter = ',')]
    pub tls_names: Vec<String>,
}

impl TlsArgs {
    /// Loads or creates the CA and issues the server certificate.
    ///
    /// # Errors
    /// When the CA cannot be read or created, or a name is invalid.
    pub fn server_config(&self) -> anyhow::Result<std::sync::Arc<misim_core::tls::ServerConfig>> {
        let ca = misim_core::tls::LocalCa::load_or_create(&self.ca_dir)
            .context("cannot set up misim's certificate authority")?;
        tracing::info!(ca = %ca.ca_file().display(), "clients trust https endpoints through this ca file");
        Ok(ca.server_config(&self.tls_names)?)
    }
}

/// `misim msrp`: MSRP alone.
#[derive(Args, Debug)]
pub struct MsrpArgs {
    /// Directory of MSRP's database.
    #[arg(long, env = "MISIM_MSRP_DATA_DIR", default_value = "misim-data/msrp")]
    pub data_dir: PathBuf,
    /// gRPC listen address.
    #[arg(long, env = "MISIM_MSRP_LISTEN", default_value_t = endpoints::default_listen(endpoints::MSRP_GRPC_OFFSET))]
    pub listen: SocketAddr,
    /// Azure AD admin gRPC URL.
    #[arg(long, env = "MISIM_AAD_GRPC", default_value_t = endpoints::default_url(endpoints::AAD_GRPC_OFFSET))]
    pub aad_grpc: String,
    /// Directory of misim's CA (used to issue this party's certificate when --control-tls-dir is unset).
    #[arg(long, env = "MISIM_CA_DIR", default_value = endpoints::DEFAULT_CA_DIR)]
    pub ca_dir: PathBuf,
    /// Key type of identity certificates: rsa-2048 (Azure's) or ec-p256.
    #[arg(long, env = "MISIM_IDENTITY_KEY_TYPE", default_value_t = misim_core::cert::KeyType::Rsa2048)]
    pub identity_key_type: misim_core::cert::KeyType,
    /// Control-plane mutual TLS.
    #[command(flatten)]
    pub control: ControlArgs,
}

/// `misim imds`: one host (host agent + the IMDS endpoints of its VMs).
#[derive(Args, Debug)]
pub struct ImdsArgs {
    /// Host name ARM knows this host by.
    #[arg(long, env = "MISIM_HOST_NAME", default_value = "host-1")]
    pub name: String,
    /// Directory of this host's database.
    #[arg(
        long,
        env = "MISIM_HOST_DATA_DIR",
        default_value = "misim-data/hosts/host-1"
    )]
    pub data_dir: PathBuf,
    /// Host agent gRPC listen address.
    #[arg(long, env = "MISIM_HOST_LISTEN", default_value_t = endpoints::default_listen(endpoints::HOST_AGENT_OFFSET + 1))]
    pub listen: SocketAddr,
    /// Address the VMs' IMDS listeners bind to.
    #[arg(long, env = "MISIM_VM_LISTEN_IP", default_value = "127.0.0.1")]
    pub vm_listen_ip: IpAddr,
    /// MSRP gRPC URL.
    #[arg(long, env = "MISIM_MSRP", default_value_t = endpoints::default_url(endpoints::MSRP_GRPC_OFFSET))]
    pub msrp: String,
    /// Azure AD HTTP URL.
    #[arg(long, env = "MISIM_AAD_URL", default_value_t = endpoints::default_url(endpoints::AAD_HTTP_OFFSET))]
    pub aad_url: String,
    /// Shared IMDS listener for all VMs of this host, identifying the VM by source address (= its
    /// private IP), e.g. 169.254.169.254:80 inside a host container. Default: per-VM listeners only.
    #[arg(long, env = "MISIM_IMDS_LISTEN")]
    pub imds_listen: Option<SocketAddr>,
    /// Shared VM-extension listener (VM containers forward localhost:50342 here), identifying the VM
    /// by source address. Default: per-VM extension listeners only.
    #[arg(long, env = "MISIM_EXTENSION_LISTEN")]
    pub extension_listen: Option<SocketAddr>,
    /// Switch IMDS throttling off.
    #[arg(long, env = "MISIM_NO_THROTTLE")]
    pub no_throttle: bool,
    /// Identity-category requests per second per VM before 429 (Azure: 20).
    #[arg(long, env = "MISIM_IDENTITY_RPS", default_value_t = misim_imds::ImdsLimits::default().identity_per_second)]
    pub identity_rps: u32,
    /// Identity-category requests in progress at once per VM before 429 (Azure: 5).
    #[arg(long, env = "MISIM_IDENTITY_CONCURRENT", default_value_t = misim_imds::ImdsLimits::default().identity_concurrent)]
    pub identity_concurrent: u32,
    /// Requests per second per VM for the other IMDS categories before 429 (Azure: 5).
    #[arg(long, env = "MISIM_OTHER_RPS", default_value_t = misim_imds::ImdsLimits::default().other_per_second)]
    pub other_rps: u32,
    /// Send `Retry-After: SECS` with 429 answers (default: none; unknown whether Azure sends it).
    #[arg(long, env = "MISIM_RETRY_AFTER")]
    pub retry_after: Option<u32>,
    /// No per-VM IMDS listeners: serve every VM through --imds-listen (and --extension-listen),
    /// identifying it by source address. Required when VMs are on a network (containers): per-VM
    /// listeners tell VMs apart by port and are loopback-only.
    #[arg(long, env = "MISIM_NO_VM_LISTENERS")]
    pub no_vm_listeners: bool,
    /// Ports of the VMs' own IMDS listeners, START-END (default: any free port).
    #[arg(long, env = "MISIM_VM_PORTS")]
    pub vm_ports: Option<String>,
    /// Directory of misim's CA (used to issue this host's certificate when --control-tls-dir is unset).
    #[arg(long, env = "MISIM_CA_DIR", default_value = endpoints::DEFAULT_CA_DIR)]
    pub ca_dir: PathBuf,
    /// Control-plane mutual TLS.
    #[command(flatten)]
    pub control: ControlArgs,
}

/// `misim arm`: ARM alone.
#[derive(Args, Debug)]
pub struct ArmArgs {
    /// Directory of ARM's database.
    #[arg(long, env = "MISIM_ARM_DATA_DIR", default_value = "misim-data/arm")]
    pub data_dir: PathBuf,
    /// Control-plane gRPC listen address.
    #[arg(long, env = "MISIM_ARM_GRPC_LISTEN", default_value_t = endpoints::default_listen(endpoints::ARM_GRPC_OFFSET))]
    pub grpc_listen: SocketAddr,
    /// REST surface listen address.
    #[arg(long, env = "MISIM_ARM_REST_LISTEN", default_value_t = endpoints::default_listen(endpoints::ARM_REST_OFFSET))]
    pub rest_listen: SocketAddr,
    /// MSRP gRPC URL.
    #[arg(long, env = "MISIM_MSRP", default_value_t = endpoints::default_url(endpoints::MSRP_GRPC_OFFSET))]
    pub msrp: String,
    /// Azure AD admin gRPC URL.
    #[arg(long, env = "MISIM_AAD_GRPC", default_value_t = endpoints::default_url(endpoints::AAD_GRPC_OFFSET))]
    pub aad_grpc: String,
    /// Azure AD HTTP URL (discovery and JWKS).
    #[arg(long, env = "MISIM_AAD_URL", default_value_t = endpoints::default_url(endpoints::AAD_HTTP_OFFSET))]
    pub aad_url: String,
    /// A host VMs can be placed on, as NAME=AGENT_URL; repeat for more hosts.
    #[arg(
        long = "host",
        env = "MISIM_HOSTS",
        value_delimiter = ',',
        default_values_t = [format!("host-1={}", endpoints::default_url(endpoints::HOST_AGENT_OFFSET + 1))]
    )]
    pub hosts: Vec<String>,
    /// Require `authorization: Bearer TOKEN` on ARM's gRPC API (machines shared with other users;
    /// clients set MISIM_ARM_TOKEN).
    #[arg(
        long = "api-token",
        env = "MISIM_ARM_API_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// URL others reach the REST surface at when it differs from --rest-listen (e.g.
    /// http://arm:7701 in containers, where the listener is 0.0.0.0:7701): used in the URLs ARM hands
    /// out, such as AKS OIDC issuer URLs (`iss` of service-account tokens) and Key Vault endpoints.
    /// Default: http://<rest-listen>.
    #[arg(long, env = "MISIM_ARM_PUBLIC_REST_URL")]
    pub public_rest_url: Option<String>,
    /// HTTPS listen address for the REST surface (TLS forwarded to --rest-listen); off if unset.
    #[arg(long, env = "MISIM_ARM_HTTPS_LISTEN")]
    pub https_listen: Option<SocketAddr>,
    /// TLS certificate options.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Control-plane mutual TLS.
    #[command(flatten)]
    pub control: ControlArgs,
}

/// Runs Azure AD until Ctrl-C / SIGTERM.
///
/// # Errors
/// When a listener cannot be bound or the server fails.
pub async fn run_aad(a: AadArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let grpc = bind(a.grpc_listen).await?;
    let http = bind(a.http_listen).await?;
    name(&[&grpc, &http], "aad");
    let public_url = a
        .public_url
        .unwrap_or_else(|| format!("http://{}", a.http_listen));
    tracing::info!(grpc = %a.grpc_listen, http = %a.http_listen, %public_url, "azure ad listening");
    let mut cfg = misim_aad::Config::new(a.data_dir, public_url, Clock::system());
    cfg.token_lifetime_secs = a.token_lifetime;
    cfg.signing_key_rotation_secs = a.signing_key_rotation;
    cfg.https_public_url = a.https_public_url;
    cfg.federation_issuer_hosts = a.federation_issuer_hosts;
    cfg.control = Some(a.control.load(Role::Aad, &a.tls.ca_dir)?);
    let https = match a.https_listen {
        Some(addr) => Some(misim_core::tls::HttpsListener {
            listener: {
                let l = bind(addr).await?;
                name(&[&l], "aad");
                l
            },
            tls: a.tls.server_config()?,
        }),
        None => None,
    };
    misim_aad::run(cfg, misim_aad::Listeners { grpc, http, https }, shutdown).await?;
    Ok(())
}

/// Runs MSRP until Ctrl-C / SIGTERM.
///
/// # Errors
/// When the listener cannot be bound or the server fails.
pub async fn run_msrp(a: MsrpArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let listener = bind(a.listen).await?;
    name(&[&listener], "msrp");
    tracing::info!(grpc = %a.listen, aad = %a.aad_grpc, "msrp listening");
    let mut cfg = misim_msrp::Config::new(a.data_dir, a.aad_grpc, Clock::system());
    cfg.key_type = a.identity_key_type;
    cfg.control = Some(a.control.load(Role::Msrp, &a.ca_dir)?);
    misim_msrp::run(cfg, listener, shutdown).await?;
    Ok(())
}

/// Runs one host until Ctrl-C / SIGTERM.
///
/// # Errors
/// When the listener cannot be bound or the server fails.
pub async fn run_imds(a: ImdsArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let listener = bind(a.listen).await?;
    name(&[&listener], &a.name);
    tracing::info!(host = %a.name, agent = %a.listen, vm_listen_ip = %a.vm_listen_ip, "host agent listening");
    let mut cfg = misim_imds::Config::new(
        a.name,
        a.data_dir,
        a.msrp,
        a.aad_url,
        a.vm_listen_ip,
        Clock::system(),
    );
    cfg.imds_listen = a.imds_listen;
    cfg.extension_listen = a.extension_listen;
    cfg.vm_listeners = !a.no_vm_listeners;
    cfg.vm_ports = a
        .vm_ports
        .as_deref()
        .map(crate::endpoints::parse_port_range)
        .transpose()?;
    cfg.control = Some(
        a.control
            .load(Role::Host(cfg.host_name.clone()), &a.ca_dir)?,
    );
    cfg.limits = misim_imds::ImdsLimits {
        enabled: !a.no_throttle,
        identity_per_second: a.identity_rps,
        identity_concurrent: a.identity_concurrent,
        other_per_second: a.other_rps,
        retry_after_secs: a.retry_after,
    };
    misim_imds::run(cfg, listener, shutdown).await?;
    Ok(())
}

/// Runs ARM until Ctrl-C / SIGTERM.
///
/// # Errors
/// When a `--host` is not NAME=URL, a listener cannot be bound, or the server fails.
pub async fn run_arm(a: ArmArgs) -> anyhow::Result<()> {
    let hosts = a
        .hosts
        .iter()
        .map(|h| {
            let (name, url) = h
                .split_once('=')
                .with_context(|| format!("--host {h:?} is not NAME=URL"))?;
            Ok(misim_arm::HostEndpoint {
                name: name.to_string(),
                agent_grpc: url.to_string(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let shutdown = shutdown_on_signal();
    let grpc = bind(a.grpc_listen).await?;
    let rest = bind(a.rest_listen).await?;
    name(&[&grpc, &rest], "arm");
    misim_arm::rest::console::set_token(a.api_token.clone());
    tracing::info!(grpc = %a.grpc_listen, rest = %a.rest_listen, hosts = hosts.len(), "arm listening");
    let cfg = misim_arm::Config {
        data_dir: a.data_dir,
        msrp_grpc: a.msrp,
        aad_grpc: a.aad_grpc,
        aad_url: a.aad_url,
        hosts,
        clock: Clock::system(),
        control: Some(a.control.load(Role::Arm, &a.tls.ca_dir)?),
        api_token: a.api_token,
        public_rest_url: a.public_rest_url,
    };
    let forwarder = match a.https_listen {
        Some(addr) => {
            let listener = bind(addr).await?;
            let tls = a.tls.server_config()?;
            let upstream = rest.local_addr()?;
            Some(tokio::spawn(misim_core::tls::serve_tls_forward(
                listener,
                upstream,
                tls,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let served = misim_arm::run(cfg, misim_arm::Listeners { grpc, rest }, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(f) = forwarder {
        f.await??;
    }
    served?;
    Ok(())
}

/// Names the party serving on `listeners` (its server spans' and metrics' `party`).
fn name(listeners: &[&tokio::net::TcpListener], party: &str) {
    for l in listeners {
        if let Ok(addr) = l.local_addr() {
            misim_core::telemetry::propagation::name_listener(addr, party);
        }
    }
}

/// A token cancelled on Ctrl-C or SIGTERM (what `docker stop` sends).
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
