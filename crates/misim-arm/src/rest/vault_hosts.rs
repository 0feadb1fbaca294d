//! One loopback HTTPS port per key vault, so each vault has a URL of its own at which it serves the
//! Key Vault data plane at the root, as Azure serves `https://{vault}.vault.azure.net/secrets/…`:
//! the vault URL (`properties.vaultUri`) becomes `https://127.0.0.1:{port}/`, ids the SDKs parse name
//! the right vault, and the Azure CLI's `--id https://127.0.0.1:{port}/secrets/{name}` works for any
//! vault. Each port is a TLS forwarder (misim's CA) to ARM's plain REST listener; the REST surface
//! tells vaults apart by the port in the `Host` header.
//!
//! Opt-in: the process that runs ARM with HTTPS (`misim up`) calls [`enable`] with its TLS config
//! before `misim_arm::run`; without it vaults are served under `{arm_rest}/vaults/{vault}` only.
//! Ports are kept in the vault record and reused after a restart when still free.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use misim_core::tls::ServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::service::Arm;

static TLS: OnceLock<Arc<ServerConfig>> = OnceLock::new();

/// How often new vaults are picked up.
const SCAN_EVERY: Duration = Duration::from_millis(200);

/// Turns per-vault HTTPS ports on for every ARM REST router built afterwards in this process.
pub fn enable(tls: Arc<ServerConfig>) {
    let _ = TLS.set(tls);
    crate::model::serve_own_vault_ports();
}

/// True once [`enable`] was called.
pub fn enabled() -> bool {
    TLS.get().is_some()
}

/// Starts the task that opens a port for every vault (when enabled and ARM's plain REST URL is
/// known); it and the ports stop with `shutdown`. It holds ARM only weakly between scans, so the
/// ARM core (and its store) never outlives the server because of it.
pub fn spawn(arm: Arc<Arm>, shutdown: CancellationToken) {
    let Some(tls) = TLS.get().cloned() else {
        return;
    };
    let Some(upstream) = arm
        .rest_url()
        .strip_prefix("http://")
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
    else {
        tracing::warn!(
            rest = arm.rest_url(),
            "per-vault https ports need ARM's plain REST address"
        );
        return;
    };
    let weak = Arc::downgrade(&arm);
    drop(arm);
    let ports = shutdown.child_token();
    tokio::spawn(async move {
        let mut open: HashSet<String> = HashSet::new();
        loop {
            let Some(arm) = weak.upgrade() else {
                ports.cancel();
                return;
            };
            if let Ok(vaults) = arm.store().vaults.values() {
                for v in vaults {
                    let name = v.id.name().to_ascii_lowercase();
                    if open.contains(&name) {
                        continue;
                    }
                    let listener = match TcpListener::bind(("127.0.0.1", v.port)).await {
                        Ok(l) => l,
                        Err(_) => match TcpListener::bind("127.0.0.1:0").await {
                            Ok(l) => l,
                            Err(e) => {
                                tracing::warn!(vault = %v.id, error = %e, "cannot open a key vault port");
                                continue;
                            }
                        },
                    };
                    let Ok(port) = listener.local_addr().map(|a| a.port()) else {
                        continue;
                    };
                    if let Err(e) = arm.set_vault_port(&name, port).await {
                        tracing::warn!(vault = %v.id, error = %e, "cannot record the key vault port");
                        continue;
                    }
                    open.insert(name);
                    tokio::spawn(misim_core::tls::serve_tls_forward(
                        listener,
                        upstream,
                        tls.clone(),
                        ports.clone(),
                    ));
                }
            }
            drop(arm);
            tokio::select! {
                _ = ports.cancelled() => return,
                _ = tokio::time::sleep(SCAN_EVERY) => {}
            }
        }
    });
}
