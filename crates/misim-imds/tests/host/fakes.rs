//! Test doubles: a fake MSRP gRPC server handing out certificates made with `misim_core::cert`, and a
//! fake Azure AD token endpoint that verifies the client assertion and counts calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Form, Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use misim_core::{cert, Clock};
use misim_proto::msrp as mpb;
use misim_proto::msrp::msrp_server::Msrp;
use serde_json::{json, Value};
use tonic::{Request, Response, Status};

/// One RSA key for every test identity (key generation is slow); certificates differ per identity.
pub fn test_key() -> &'static [u8] {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| cert::generate_rsa_key().expect("rsa key"))
}

/// An identity as the fakes know it.
#[derive(Clone, Debug)]
pub struct TestIdentity {
    pub resource_id: String,
    pub system: bool,
    pub client_id: String,
    pub principal_id: String,
    pub tenant_id: String,
}

/// Fake MSRP: `GetCredential` answers from a map; can be made to fail; counts calls.
#[derive(Clone, Default)]
pub struct FakeMsrp {
    creds: Arc<Mutex<HashMap<String, mpb::Credential>>>,
    pub failing: Arc<AtomicBool>,
    pub calls: Arc<AtomicUsize>,
}

impl FakeMsrp {
    /// Issues a new certificate for `identity` (valid 90 days from `now`) and returns its DER.
    pub fn issue(&self, identity: &TestIdentity, now: i64) -> Vec<u8> {
        let kc = cert::self_signed(test_key(), &identity.client_id, now - 60, now + 90 * 86_400)
            .expect("cert");
        let kind = if identity.system {
            mpb::IdentityKind::SystemAssigned
        } else {
            mpb::IdentityKind::UserAssigned
        };
        let credential = mpb::Credential {
            identity: Some(mpb::Identity {
                resource_id: identity.resource_id.clone(),
                kind: kind as i32,
                tenant_id: identity.tenant_id.clone(),
                client_id: identity.client_id.clone(),
                principal_id: identity.principal_id.clone(),
                thumbprint_sha1_hex: cert::sha1_thumbprint_hex(&kc.certificate_der),
                cert_not_before: kc.not_before,
                cert_not_after: kc.not_after,
            }),
            certificate_der: kc.certificate_der.clone(),
            private_key_pkcs8_der: kc.private_key_pkcs8_der,
        };
        self.creds
            .lock()
            .unwrap()
            .insert(identity.resource_id.to_lowercase(), credential);
        kc.certificate_der
    }

    /// Like [`FakeMsrp::issue`] but every identity gets the same certificate (made once), so a
    /// thousand identities cost no thousand RSA signatures.
    pub fn issue_shared(&self, identity: &TestIdentity, now: i64) -> Vec<u8> {
        static SHARED: OnceLock<cert::KeyAndCert> = OnceLock::new();
        let kc = SHARED.get_or_init(|| {
            cert::self_signed(test_key(), "shared", now - 60, now + 90 * 86_400).expect("cert")
        });
        let kind = if identity.system {
            mpb::IdentityKind::SystemAssigned
        } else {
            mpb::IdentityKind::UserAssigned
        };
        let credential = mpb::Credential {
            identity: Some(mpb::Identity {
                resource_id: identity.resource_id.clone(),
                kind: kind as i32,
                tenant_id: identity.tenant_id.clone(),
                client_id: identity.client_id.clone(),
                principal_id: identity.principal_id.clone(),
                thumbprint_sha1_hex: cert::sha1_thumbprint_hex(&kc.certificate_der),
                cert_not_before: kc.not_before,
                cert_not_after: kc.not_after,
            }),
            certificate_der: kc.certificate_der.clone(),
            private_key_pkcs8_der: kc.private_key_pkcs8_der.clone(),
        };
        self.creds
            .lock()
            .unwrap()
            .insert(identity.resource_id.to_lowercase(), credential);
        kc.certificate_der.clone()
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[tonic::async_trait]
impl Msrp for FakeMsrp {
    async fn create_identity(
        &self,
        _: Request<mpb::CreateIdentityRequest>,
    ) -> Result<Response<mpb::Identity>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_identity(
        &self,
        _: Request<mpb::GetIdentityRequest>,
    ) -> Result<Response<mpb::Identity>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_identities(
        &self,
        _: Request<mpb::ListIdentitiesRequest>,
    ) -> Result<Response<mpb::ListIdentitiesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn delete_identity(
        &self,
        _: Request<mpb::DeleteIdentityRequest>,
    ) -> Result<Response<mpb::DeleteIdentityResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn set_host_access(
        &self,
        _: Request<mpb::SetHostAccessRequest>,
    ) -> Result<Response<mpb::SetHostAccessResponse>, Status> {
        Err(Status::unimplemented("hosts never set host access"))
    }
    async fn set_federated_identity_credentials(
        &self,
        _: Request<mpb::SetFederatedIdentityCredentialsRequest>,
    ) -> Result<Response<mpb::SetFederatedIdentityCredentialsResponse>, Status> {
        Err(Status::unimplemented(
            "hosts never set federated credentials",
        ))
    }
    async fn get_credential(
        &self,
        r: Request<mpb::GetCredentialRequest>,
    ) -> Result<Response<mpb::Credential>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(Status::internal("fake msrp failure"));
        }
        let key = r.into_inner().resource_id.to_lowercase();
        let found = self.creds.lock().unwrap().get(&key).cloned();
        found
            .map(Response::new)
            .ok_or_else(|| Status::not_found("no such identity"))
    }
}

/// Fake Azure AD: verifies client assertions against the registered certificate of each client id.
#[derive(Clone)]
pub struct FakeAad {
    pub clock: Clock,
    pub base_url: Arc<OnceLock<String>>,
    certs: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    pub calls: Arc<AtomicUsize>,
    pub delay_ms: Arc<AtomicU64>,
    pub last_form: Arc<Mutex<Option<HashMap<String, String>>>>,
}

pub const KNOWN_RESOURCES: &[&str] = &[
    "https://management.azure.com/",
    "https://vault.azure.net",
    "https://storage.azure.com/",
];

impl FakeAad {
    pub fn new(clock: Clock) -> Self {
        FakeAad {
            clock,
            base_url: Arc::new(OnceLock::new()),
            certs: Arc::default(),
            calls: Arc::default(),
            delay_ms: Arc::default(),
            last_form: Arc::default(),
        }
    }

    /// Registers (or replaces) the certificate of `client_id`.
    pub fn register(&self, client_id: &str, certificate_der: Vec<u8>) {
        self.certs
            .lock()
            .unwrap()
            .insert(client_id.to_string(), certificate_der);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/{tenant}/oauth2/token", axum::routing::post(token))
            .with_state(self.clone())
    }

    fn verify(&self, tenant: &str, form: &HashMap<String, String>) -> Result<(), String> {
        let client_id = form.get("client_id").ok_or("no client_id")?;
        let cert_der = self
            .certs
            .lock()
            .unwrap()
            .get(client_id)
            .cloned()
            .ok_or("unknown client")?;
        let assertion = form.get("client_assertion").ok_or("no assertion")?;
        if form.get("client_assertion_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return Err("bad assertion type".into());
        }
        let header = jsonwebtoken::decode_header(assertion).map_err(|e| e.to_string())?;
        if header.alg != Algorithm::RS256 || header.typ.as_deref() != Some("JWT") {
            return Err("bad header".into());
        }
        if header.x5t.as_deref() != Some(cert::x5t(&cert_der).as_str()) {
            return Err("x5t does not match the registered certificate".into());
        }
        let spki = cert::public_key_spki_der(test_key()).map_err(|e| e.to_string())?;
        let key = DecodingKey::from_rsa_pem(cert::to_pem("PUBLIC KEY", &spki).as_bytes())
            .map_err(|e| e.to_string())?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let base = self.base_url.get().ok_or("no base url")?;
        validation.set_audience(&[format!("{base}/{tenant}/oauth2/token")]);
        let claims = jsonwebtoken::decode::<Value>(assertion, &key, &validation)
            .map_err(|e| e.to_string())?
            .claims;
        let now = self.clock.now();
        let (iat, exp) = (
            claims["iat"].as_i64().unwrap_or(0),
            claims["exp"].as_i64().unwrap_or(0),
        );
        if claims["iss"] != *client_id
            || claims["sub"] != *client_id
            || claims["jti"].as_str().is_none()
        {
            return Err("bad iss/sub/jti".into());
        }
        if iat != now || exp != now + 600 || claims["nbf"].as_i64() != Some(now) {
            return Err("bad times".into());
        }
        Ok(())
    }
}

async fn token(
    State(aad): State<FakeAad>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> impl IntoResponse {
    let n = aad.calls.fetch_add(1, Ordering::SeqCst) + 1;
    *aad.last_form.lock().unwrap() = Some(form.clone());
    let delay = aad.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let Err(e) = aad.verify(&tenant, &form) {
        let body =
            json!({"error":"invalid_client","error_description":format!("AADSTS700027: {e}")});
        return (StatusCode::UNAUTHORIZED, Json(body));
    }
    let resource = form.get("resource").cloned().unwrap_or_default();
    if !KNOWN_RESOURCES.contains(&resource.as_str()) {
        let description = format!(
            "AADSTS500011: The resource principal named {resource} was not found in the tenant named {tenant}. \
             This can happen if the application has not been installed by the administrator of the tenant."
        );
        let body = json!({"error":"invalid_resource","error_description":description,"error_codes":[500011]});
        return (StatusCode::BAD_REQUEST, Json(body));
    }
    let now = aad.clock.now();
    let client_id = &form["client_id"];
    (
        StatusCode::OK,
        Json(json!({
            "token_type": "Bearer",
            "expires_in": "3600",
            "ext_expires_in": "3600",
            "expires_on": (now + 3600).to_string(),
            "not_before": (now - 300).to_string(),
            "resource": resource,
            "access_token": format!("token-{n}-{client_id}"),
        })),
    )
}
