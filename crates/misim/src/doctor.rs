//! `misim doctor`: asks ARM whether ARM, MSRP and every host agree (`GET /readyz` on ARM's REST
//! listener, `misim_arm::heal`) and prints every difference and whether the reconciler is
//! repairing it; `--wait` polls until the system has settled, for scripts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// `misim doctor` options.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Data directory of the running system (its endpoints.json names ARM's REST listener).
    #[arg(long, env = "MISIM_DATA_DIR", default_value = "misim-data")]
    pub data_dir: PathBuf,
    /// ARM's REST base URL (instead of endpoints.json).
    #[arg(long)]
    pub arm_rest: Option<String>,
    /// Wait up to this many seconds for the system to become consistent (0: report once).
    #[arg(long, default_value_t = 0)]
    pub wait: u64,
    /// ARM's API token, when ARM was started with one.
    #[arg(long, env = "MISIM_ARM_TOKEN", hide_env_values = true)]
    pub arm_token: Option<String>,
}

fn arm_rest(a: &DoctorArgs) -> anyhow::Result<String> {
    if let Some(u) = &a.arm_rest {
        return Ok(u.trim_end_matches('/').to_string());
    }
    let file = a.data_dir.join(crate::up::ENDPOINTS_FILE);
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {} (is misim up running?)", file.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v["arm_rest"]
        .as_str()
        .map(|s| s.trim_end_matches('/').to_string())
        .context("endpoints.json names no arm_rest")
}

/// Runs `misim doctor`: prints ARM's consistency report as JSON; fails while differences remain.
///
/// # Errors
/// ARM unreachable, or differences left (after `--wait` seconds).
pub async fn run(a: DoctorArgs) -> anyhow::Result<()> {
    let url = format!("{}/readyz", arm_rest(&a)?);
    if !url.starts_with("http://127.")
        && !url.starts_with("http://localhost")
        && !url.starts_with("https://127.")
    {
        bail!("refusing to call non-loopback ARM endpoint {url}");
    }
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(a.wait);
    loop {
        let mut req = client.get(&url).timeout(Duration::from_secs(30));
        if let Some(t) = &a.arm_token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let ok = resp.status().is_success();
        let body: serde_json::Value = resp.json().await.context("readyz answered no JSON")?;
        if ok || Instant::now() >= deadline {
            println!("{}", serde_json::to_string_pretty(&body)?);
            if ok {
                return Ok(());
            }
            let n = body["differences"].as_array().map_or(0, Vec::len);
            bail!("{n} difference(s) between ARM and its peers (see above)");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
