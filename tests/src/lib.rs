//! The test sandbox: the whole misim system in-process on `127.0.0.1:0` listeners with a temporary data
//! directory, plus small helpers to call IMDS, ARM REST and verify tokens the way a user's code would.

use std::collections::HashMap;

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use misim::endpoints::Endpoints;
use misim::up::{start, System, UpConfig};
use misim_proto::arm::arm_client::ArmClient;
use misim_proto::tonic::transport::Channel;
use serde_json::Value;

/// Logs to the test output and records flows in memory (misim_core::telemetry), as `misim up`
/// does; the first call in a test binary installs it, later calls do nothing.
pub fn init_test_telemetry() {
    let _ = misim_core::telemetry::init(&misim_core::telemetry::TelemetryConfig {
        log_filter: "info".into(),
        test_writer: true,
        traces: true,
        service_name: "misim-tests".into(),
        ..Default::default()
    });
}

/// A running misim with a temporary data directory that outlives restarts.
pub struct Sandbox {
    system: Option<System>,
    /// Data directory (kept across [`Sandbox::restart`]).
    pub dir: tempfile::TempDir,
    /// Where each party listens now.
    pub endpoints: Endpoints,
    /// HTTP client that never uses a proxy.
    pub http: reqwest::Client,
    hosts: u16,
}

impl Sandbox {
    /// Starts misim with two hosts on ephemeral loopback ports.
    pub async fn start() -> Self {
        Self::start_with_hosts(2).await
    }

    /// Starts misim with `hosts` hosts.
    pub async fn start_with_hosts(hosts: u16) -> Self {
        init_test_telemetry();
        let dir = tempfile::tempdir().expect("temp dir");
        let system = start(config(dir.path(), hosts))
            .await
            .expect("misim starts");
        let endpoints = system.endpoints.clone();
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client");
        Sandbox {
            system: Some(system),
            dir,
            endpoints,
            http,
            hosts,
        }
    }

    /// Stops every party and starts them again on the same data directory (new ports for the
    /// parties; VMs keep their IMDS ports when they are free).
    pub async fn restart(&mut self) {
        if let Some(s) = self.system.take() {
            s.stop().await;
        }
        let system = start(config(self.dir.path(), self.hosts))
            .await
            .expect("misim restarts");
        self.endpoints = system.endpoints.clone();
        self.system = Some(system);
    }

    /// Stops every party, runs `damage` on the data directory, and starts them again; returns the
    /// start-up error when the system refuses to start (a damaged store), the system stays stopped
    /// then.
    ///
    /// # Errors
    /// The error `misim up` would print.
    pub async fn restart_after(
        &mut self,
        damage: impl FnOnce(&std::path::Path),
    ) -> anyhow::Result<()> {
        if let Some(s) = self.system.take() {
            s.stop().await;
        }
        damage(self.dir.path());
        let system = start(config(self.dir.path(), self.hosts)).await?;
        self.endpoints = system.endpoints.clone();
        self.system = Some(system);
        Ok(())
    }

    /// A gRPC client for ARM's control plane.
    pub async fn arm(&self) -> ArmClient<Channel> {
        ArmClient::connect(self.endpoints.arm_grpc.clone())
            .await
            .expect("connect to ARM")
    }

    /// `GET {imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=…&extra…` with
    /// `Metadata: true`; returns status and JSON body.
    pub async fn imds_token(
        &self,
        imds: &str,
        resource: &str,
        extra: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut q: Vec<(&str, &str)> = vec![("api-version", "2018-02-01"), ("resource", resource)];
        q.extend_from_slice(extra);
        let resp = self
            .http
            .get(format!("{imds}/metadata/identity/oauth2/token"))
            .query(&q)
            .header("Metadata", "true")
            .send()
            .await
            .expect("IMDS answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `GET {arm_rest}{path}` with a bearer token; returns status and JSON body.
    pub async fn arm_rest_get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .get(format!("{}{}", self.endpoints.arm_rest, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("ARM REST answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Verifies `token` as a relying party would: OpenID discovery of its tenant → `jwks_uri` → the key
    /// with the token's `kid`; checks RS256 signature, issuer (from discovery), audience and expiry.
    /// Returns the claims.
    ///
    /// # Panics
    /// When discovery or JWKS cannot be fetched or the token does not verify (the test fails).
    pub async fn verify(&self, token: &str, audience: &str) -> Value {
        let header = decode_header(token).expect("JWT header");
        let kid = header.kid.expect("kid header");
        let unverified: Value = unverified_claims(token);
        let tid = unverified["tid"].as_str().expect("tid claim").to_string();
        let discovery: Value = self
            .get_json(&format!(
                "{}/{tid}/.well-known/openid-configuration",
                self.endpoints.aad
            ))
            .await;
        let jwks: Value = self
            .get_json(discovery["jwks_uri"].as_str().expect("jwks_uri"))
            .await;
        let keys: HashMap<String, &Value> = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| (k["kid"].as_str().unwrap_or_default().to_string(), k))
            .collect();
        let jwk = keys
            .get(&kid)
            .unwrap_or_else(|| panic!("kid {kid} not in JWKS"));
        let key = DecodingKey::from_rsa_components(
            jwk["n"].as_str().expect("n"),
            jwk["e"].as_str().expect("e"),
        )
        .expect("RSA key from JWKS");
        let mut v = Validation::new(Algorithm::RS256);
        v.set_issuer(&[discovery["issuer"].as_str().expect("issuer")]);
        v.set_audience(&[audience]);
        decode::<Value>(token, &key, &v)
            .expect("token verifies against the published JWKS")
            .claims
    }

    async fn get_json(&self, url: &str) -> Value {
        self.http
            .get(url)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON")
    }

    /// [`admin_channel`] for this sandbox.
    pub async fn admin(&self, url: &str) -> Channel {
        admin_channel(self.dir.path(), url).await
    }

    /// Stops the system.
    pub async fn stop(mut self) {
        if let Some(s) = self.system.take() {
            s.stop().await;
        }
    }
}

/// A channel to an internal gRPC service (`url`: MSRP, a host agent, Azure AD admin) with the admin
/// certificate `misim up` wrote below `data_dir` (internal gRPC is mutual TLS).
///
/// # Panics
/// When the certificate cannot be loaded or the peer cannot be reached (the test fails).
pub async fn admin_channel(data_dir: &std::path::Path, url: &str) -> Channel {
    let admin = misim_core::control::ControlTls::load(&data_dir.join("ca").join("admin"))
        .expect("admin certificate written by misim up");
    admin
        .endpoint(url)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect with the admin certificate")
}

/// A channel to `url` presenting a certificate of `role` freshly issued by the CA below `data_dir`
/// (what a party holding that role could do), for authorization tests.
///
/// # Panics
/// When the CA cannot be loaded or the peer cannot be reached.
pub async fn channel_as(
    data_dir: &std::path::Path,
    role: misim_core::control::Role,
    url: &str,
) -> Channel {
    let ca = misim_core::tls::LocalCa::load_or_create(&data_dir.join("ca")).expect("ca");
    let tls = misim_core::control::ControlTls::issue(&ca, role, &[]).expect("issue");
    tls.endpoint(url)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

fn config(dir: &std::path::Path, hosts: u16) -> UpConfig {
    let mut cfg = UpConfig::new(dir.to_path_buf());
    cfg.base_port = 0;
    cfg.hosts = hosts;
    cfg
}

/// The claims of a JWT without verifying it (to read `tid` before discovery).
pub fn unverified_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}
