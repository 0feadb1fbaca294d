//! The whole system in-process on free loopback ports, for Rust tests and `misim scenario run
//! --embedded` (the same machinery as `misim up`, [`crate::up::start`], with `--base-port 0`).
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let running = misim::embedded::start(misim::embedded::EmbeddedConfig::default()).await?;
//! let mut arm = running.arm().await?; // ARM's gRPC API, as the CLI uses it
//! let account = arm.get_account(misim_proto::arm::GetAccountRequest::default()).await?;
//! assert_eq!(account.into_inner().subscription_id, running.endpoints.subscription_id);
//! running.shutdown().await;
//! # Ok(()) }
//! ```

use std::path::PathBuf;

use misim_core::Clock;

use crate::endpoints::Endpoints;
use crate::up::{System, UpConfig};

/// How to start an embedded system.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// Number of hosts (default 1).
    pub hosts: u16,
    /// A manual clock (moved only by `Clock/Advance`), starting at the wall-clock time; the system
    /// clock when false (the default).
    pub manual_clock: bool,
    /// Data directory; a temporary directory removed at shutdown when `None`.
    pub data_dir: Option<PathBuf>,
    /// IMDS throttling as Azure's (default true).
    pub imds_throttle: bool,
    /// Adjusts the rest of [`UpConfig`] (token lifetime, certificate validity, ...).
    pub tweak: Option<fn(&mut UpConfig)>,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            hosts: 1,
            manual_clock: false,
            data_dir: None,
            imds_throttle: true,
            tweak: None,
        }
    }
}

/// A running embedded system.
pub struct Running {
    /// Where every party listens (ephemeral ports), with the tenant and subscription.
    pub endpoints: Endpoints,
    /// The data directory (endpoints.json, ca/admin, each party's store).
    pub data_dir: PathBuf,
    /// The clock every party reads.
    pub clock: Clock,
    system: System,
    _tmp: Option<tempfile::TempDir>,
}

impl Running {
    /// A client of ARM's gRPC API (the one the CLI verbs use).
    ///
    /// # Errors
    /// When ARM cannot be reached.
    pub async fn arm(&self) -> anyhow::Result<crate::client::Arm> {
        crate::client::connect(&self.endpoints.arm_grpc, None).await
    }

    /// A token cancelled when the system stops.
    pub fn shutdown_token(&self) -> tokio_util::sync::CancellationToken {
        self.system.shutdown_token()
    }

    /// Stops every party and removes the temporary data directory.
    pub async fn shutdown(self) {
        self.system.stop().await;
    }
}

/// Starts every party in this process on free loopback ports and waits until ARM has bootstrapped.
///
/// # Errors
/// As [`crate::up::start`]; also when the temporary directory cannot be created.
pub async fn start(cfg: EmbeddedConfig) -> anyhow::Result<Running> {
    let (data_dir, tmp) = match cfg.data_dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("misim-embedded")
                .tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let mut up = UpConfig::new(data_dir);
    up.base_port = 0;
    up.hosts = cfg.hosts.max(1);
    up.imds_throttle = cfg.imds_throttle;
    if cfg.manual_clock {
        up.clock = Clock::manual(Clock::system().now());
    }
    if let Some(f) = cfg.tweak {
        f(&mut up);
    }
    let clock = up.clock.clone();
    let system = crate::up::start(up).await?;
    Ok(Running {
        endpoints: system.endpoints.clone(),
        data_dir: system.data_dir.clone(),
        clock,
        system,
        _tmp: tmp,
    })
}
