//! Support for the `aad_*` integration tests: the whole system via `misim::up::start` with a
//! caller-shaped `UpConfig` (manual clock, short renewal periods), a VM with a system-assigned
//! identity, IMDS token requests and verification through discovery + JWKS.

#![allow(dead_code)]

use std::time::Duration;

use misim::endpoints::Endpoints;
use misim::up::{start, System, UpConfig};
use misim_core::Clock;
use misim_proto::arm as pb;
use misim_proto::arm::arm_client::ArmClient;
use serde_json::Value;

/// The resource every test asks tokens for.
pub const MGMT: &str = "https://management.azure.com/";

/// A running system with a manual clock.
pub struct Sys {
    system: Option<System>,
    /// Data directory.
    pub dir: tempfile::TempDir,
    /// Where everything listens.
    pub endpoints: Endpoints,
    /// The clock every party reads.
    pub clock: Clock,
    /// HTTP client (no proxy) that trusts misim's CA.
    pub http: reqwest::Client,
}

/// Wall-clock now, epoch seconds (manual clocks start here so tokens are valid for real validators).
pub fn wall_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Sys {
    /// Starts one host on ephemeral ports with a manual clock at wall time; `shape` adjusts the config.
    pub async fn start(shape: impl FnOnce(&mut UpConfig)) -> Sys {
        misim_tests::init_test_telemetry();
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Clock::manual(wall_now());
        let mut cfg = UpConfig::new(dir.path().to_path_buf());
        cfg.base_port = 0;
        cfg.hosts = 1;
        cfg.clock = clock.clone();
        shape(&mut cfg);
        let system = start(cfg).await.expect("misim starts");
        let endpoints = system.endpoints.clone();
        let ca = std::fs::read(&endpoints.ca_file).expect("ca file exists");
        let http = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca pem"))
            .build()
            .expect("http client");
        Sys {
            system: Some(system),
            dir,
            endpoints,
            clock,
            http,
        }
    }

    /// Stops every party and starts them again on the same data directory (default config apart
    /// from ephemeral ports, one host and the same clock).
    pub async fn restart(&mut self) {
        if let Some(s) = self.system.take() {
            s.stop().await;
        }
        let mut cfg = UpConfig::new(self.dir.path().to_path_buf());
        cfg.base_port = 0;
        cfg.hosts = 1;
        cfg.clock = self.clock.clone();
        let system = start(cfg).await.expect("misim restarts");
        self.endpoints = system.endpoints.clone();
        self.system = Some(system);
    }

    /// Stops every party.
    pub async fn stop(mut self) {
        if let Some(s) = self.system.take() {
            s.stop().await;
        }
    }

    /// ARM's control plane.
    pub async fn arm(&self) -> ArmClient<tonic::transport::Channel> {
        ArmClient::connect(self.endpoints.arm_grpc.clone())
            .await
            .expect("connect to ARM")
    }

    /// Creates group `rg` and VM `vm` on host-1 with a system-assigned identity; returns the VM
    /// (with its IMDS endpoint) and the identity.
    pub async fn vm_with_system_identity(
        &self,
        rg: &str,
        vm: &str,
    ) -> (pb::VirtualMachine, pb::VmIdentity) {
        let mut arm = self.arm().await;
        arm.create_resource_group(pb::CreateResourceGroupRequest {
            name: rg.into(),
            location: "westeurope".into(),
            ..Default::default()
        })
        .await
        .expect("create group");
        let created = arm
            .create_vm(pb::CreateVmRequest {
                resource_group: rg.into(),
                name: vm.into(),
                host: "host-1".into(),
                ..Default::default()
            })
            .await
            .expect("create vm")
            .into_inner();
        let identity = arm
            .assign_vm_identity(pb::AssignVmIdentityRequest {
                resource_group: rg.into(),
                name: vm.into(),
                system_assigned: true,
                ..Default::default()
            })
            .await
            .expect("enable system-assigned identity")
            .into_inner();
        (created, identity)
    }

    /// `GET {imds}/metadata/identity/oauth2/token` for [`MGMT`] with `Metadata: true`, bypassing
    /// IMDS's token cache so each call reaches Azure AD; returns status and body.
    pub async fn imds_token(&self, imds: &str) -> (u16, Value) {
        imds_token(&self.http, imds).await
    }

    /// GETs JSON from `url`.
    pub async fn get_json(&self, url: &str) -> Value {
        self.http
            .get(url)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON")
    }

    /// The `kid`s of the key set that `tid`'s v1 discovery document points to, over HTTPS.
    pub async fn jwks_kids(&self, tid: &str) -> Vec<String> {
        let doc = self
            .get_json(&format!(
                "{}/{tid}/.well-known/openid-configuration",
                self.endpoints.aad_https
            ))
            .await;
        let jwks = self
            .get_json(doc["jwks_uri"].as_str().expect("jwks_uri"))
            .await;
        jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// See [`Sys::imds_token`].
pub async fn imds_token(http: &reqwest::Client, imds: &str) -> (u16, Value) {
    let resp = http
        .get(format!("{imds}/metadata/identity/oauth2/token"))
        .query(&[
            ("api-version", "2018-02-01"),
            ("resource", MGMT),
            ("bypass_cache", "true"),
        ])
        .header("Metadata", "true")
        .send()
        .await
        .expect("IMDS answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The `kid` header of a JWT.
pub fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("JWT header")
        .kid
        .expect("kid")
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most `secs` seconds (background tasks
/// with wall-clock periods: MSRP's renewal check, the hosts' credential refresh).
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
