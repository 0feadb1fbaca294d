//! Test support: starts Azure AD on 127.0.0.1:0 listeners, makes client certificates, signs client
//! assertions and calls the HTTP API.

#![allow(dead_code)]

use std::path::Path;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use misim_aad::{run, Config, Listeners, RunError};
use misim_core::Clock;
use misim_proto::aad as pb;
use misim_proto::aad::aad_admin_client::AadAdminClient;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Start time of every manual clock in these tests (2023-11-14 22:13:20Z).
pub const T0: i64 = 1_700_000_000;
/// Token lifetime configured in tests, seconds.
pub const LIFETIME: i64 = 86_400;
/// A VM resource ID for system-assigned identities.
pub const VM_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/\
                         providers/Microsoft.Compute/virtualMachines/vm1";
/// A user-assigned identity resource ID.
pub const UAMI_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/\
                           providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1";

/// `id` as a token's `xms_mirid` carries it: `/resourcegroups/` in lower case, the rest as is.
pub fn mirid(id: &str) -> String {
    id.replacen("/resourceGroups/", "/resourcegroups/", 1)
}

/// A running Azure AD.
pub struct Aad {
    pub http_url: String,
    pub grpc_url: String,
    /// `https://127.0.0.1:PORT` when started with HTTPS.
    pub https_url: Option<String>,
    /// The CA that issued the HTTPS certificate, PEM.
    pub ca_pem: Option<String>,
    pub clock: Clock,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), RunError>>,
}

/// Starts Azure AD with its data in `dir` (no key rotation, no HTTPS).
pub async fn start(dir: &Path, clock: Clock) -> Aad {
    start_with(dir, clock, 0, false).await
}

/// Starts Azure AD rotating its signing key every `rotation_secs` (0 = never), with an HTTPS
/// listener using a CA in `dir/ca` when `https`.
pub async fn start_with(dir: &Path, clock: Clock, rotation_secs: i64, https: bool) -> Aad {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_url = format!("http://{}", grpc.local_addr().unwrap());
    let http_url = format!("http://{}", http.local_addr().unwrap());
    let mut config = Config::new(dir.join("db"), http_url.clone(), clock.clone());
    config.token_lifetime_secs = LIFETIME;
    config.signing_key_rotation_secs = rotation_secs;
    let (mut https_url, mut ca_pem, mut https_listener) = (None, None, None);
    if https {
        let ca = misim_core::tls::LocalCa::load_or_create(&dir.join("ca")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        https_url = Some(format!("https://{}", listener.local_addr().unwrap()));
        ca_pem = Some(ca.ca_pem().to_string());
        https_listener = Some(misim_core::tls::HttpsListener {
            listener,
            tls: ca.server_config(&[]).unwrap(),
        });
    }
    let shutdown = CancellationToken::new();
    let listeners = Listeners {
        grpc,
        http,
        https: https_listener,
    };
    let task = tokio::spawn(run(config, listeners, shutdown.clone()));
    Aad {
        http_url,
        grpc_url,
        https_url,
        ca_pem,
        clock,
        shutdown,
        task,
    }
}

impl Aad {
    /// Stops the server and waits until it has returned.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }

    /// An admin gRPC client.
    pub fn admin(&self) -> AadAdminClient<Channel> {
        AadAdminClient::new(
            Channel::from_shared(self.grpc_url.clone())
                .unwrap()
                .connect_lazy(),
        )
    }

    /// Default tenant plus a service principal for `msi_resource_id` with `cert`.
    pub async fn principal(
        &self,
        msi_resource_id: &str,
        cert: &ClientCert,
    ) -> (pb::Tenant, pb::ServicePrincipal) {
        let mut admin = self.admin();
        let tenant = admin
            .ensure_default_tenant(pb::EnsureDefaultTenantRequest {})
            .await
            .unwrap()
            .into_inner();
        let sp = admin
            .create_service_principal(pb::CreateServicePrincipalRequest {
                tenant_id: tenant.tenant_id.clone(),
                display_name: "vm1".into(),
                msi_resource_id: msi_resource_id.into(),
                is_explicit: msi_resource_id.contains("userAssignedIdentities"),
                certificate_der: cert.cert_der.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        (tenant, sp)
    }

    /// POSTs a form to `path` and returns status and JSON body.
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = http()
            .post(format!("{}{path}", self.http_url))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// GETs a URL (absolute, or a path on this server) and returns status and JSON body.
    pub async fn get_json(&self, url_or_path: &str) -> (u16, Value) {
        let url = if url_or_path.starts_with("http") {
            url_or_path.to_string()
        } else {
            format!("{}{url_or_path}", self.http_url)
        };
        let resp = http().get(url).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }
}

/// An HTTP client that never uses a proxy.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A client certificate and its key (PKCS#1 DER, for jsonwebtoken).
#[derive(Clone)]
pub struct ClientCert {
    pub cert_der: Vec<u8>,
    pub key_pkcs1_der: Vec<u8>,
}

/// A fresh RSA key with a self-signed certificate valid around [`T0`].
pub fn client_cert() -> ClientCert {
    let pkcs8 = misim_core::cert::generate_rsa_key().unwrap();
    let kc = misim_core::cert::self_signed(&pkcs8, "client", T0 - 3600, T0 + 90 * 86_400).unwrap();
    let key = rsa::RsaPrivateKey::from_pkcs8_der(&pkcs8).unwrap();
    ClientCert {
        cert_der: kc.certificate_der,
        key_pkcs1_der: key.to_pkcs1_der().unwrap().as_bytes().to_vec(),
    }
}

/// The assertion IMDS sends: RS256, unpadded base64url `x5t`, integer times, `exp = now + 600`.
pub fn imds_assertion(cert: &ClientCert, client_id: &str, aud: &str, now: i64) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.x5t = Some(misim_core::cert::x5t(&cert.cert_der));
    let claims = json!({
        "aud": aud, "iss": client_id, "sub": client_id, "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now, "iat": now, "exp": now + 600,
    });
    sign(cert, &header, &claims)
}

/// Signs `claims` with `cert`'s key under `header`.
pub fn sign(cert: &ClientCert, header: &Header, claims: &Value) -> String {
    jsonwebtoken::encode(
        header,
        claims,
        &EncodingKey::from_rsa_der(&cert.key_pkcs1_der),
    )
    .unwrap()
}

/// Standard base64 (padded) SHA-1 thumbprint, as the Rust azure_identity crate sends `x5t`.
pub fn x5t_standard_padded(cert_der: &[u8]) -> String {
    use sha1::Digest;
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(cert_der))
}

/// base64url (padded) SHA-256 thumbprint, as msal Python sends `x5t#S256`.
pub fn x5t_s256_padded(cert_der: &[u8]) -> String {
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE.encode(sha2::Sha256::digest(cert_der))
}

/// The v1 token form for `resource`.
pub fn v1_form<'a>(
    client_id: &'a str,
    assertion: &'a str,
    resource: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("resource", resource),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion),
    ]
}

/// The v2 token form for `scope`.
pub fn v2_form<'a>(
    client_id: &'a str,
    assertion: &'a str,
    scope: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", scope),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion),
    ]
}

/// Verifies `token` against the JWKS that the discovery document at `discovery_path` points to, with
/// the document's issuer and `audience`; returns (header, claims).
pub async fn verify_via_discovery(
    aad: &Aad,
    discovery_path: &str,
    token: &str,
    audience: &str,
) -> (Header, Value) {
    let (status, doc) = aad.get_json(discovery_path).await;
    assert_eq!(status, 200);
    let (status, jwks) = aad.get_json(doc["jwks_uri"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("token kid is in the discovered jwks");
    let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[doc["issuer"].as_str().unwrap()]);
    // The tokens are issued at the manual clock's time (2023), so skip expiry against the wall clock.
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .expect("token verifies with the published key");
    (data.header, data.claims)
}
