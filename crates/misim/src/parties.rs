//! One party per process: `misim aad`, `misim msrp`, `misim imds`, `misim arm` (for separate
//! processes and containers), and the config constructors `misim up` shares with them.

use std::path::Path;

use anyhow::Context;
use misim_core::control::{ControlTls, Role};
use misim_core::serve::bind;
use misim_core::Clock;
use tokio_util::sync::CancellationToken;

use crate::cli::{AadArgs, ArmArgs, ControlArgs, ImdsArgs, MsrpArgs, TlsArgs};

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
