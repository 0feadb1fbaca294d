//! Fakes of ARM's peers for tests: MSRP, a host agent and Azure AD (admin gRPC and discovery/JWKS
//! HTTP), each recording what ARM asked and able to fail on demand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use misim_proto::aad::aad_admin_server::{AadAdmin, AadAdminServer};
use misim_proto::imds::host_agent_server::{HostAgent, HostAgentServer};
use misim_proto::msrp::msrp_server::{Msrp, MsrpServer};
use misim_proto::{aad, imds, msrp};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

type R<T> = Result<Response<T>, Status>;

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

/// Fake MSRP: stable GUIDs per resource id, a log of calls, a failure switch.
#[derive(Default, Clone)]
pub struct FakeMsrp {
    pub fail: Arc<AtomicBool>,
    pub calls: Arc<Mutex<Vec<String>>>,
    ids: Arc<Mutex<HashMap<String, msrp::Identity>>>,
}

impl FakeMsrp {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    pub fn identity(&self, resource_id: &str) -> Option<msrp::Identity> {
        self.ids
            .lock()
            .unwrap()
            .get(&resource_id.to_ascii_lowercase())
            .cloned()
    }
    pub async fn serve(&self, shutdown: CancellationToken) -> String {
        let (l, url) = listener().await;
        let routes = tonic::service::Routes::new(MsrpServer::new(self.clone()));
        tokio::spawn(misim_core::serve::serve_grpc(l, routes, &[], shutdown));
        url
    }
}

#[tonic::async_trait]
impl Msrp for FakeMsrp {
    async fn create_identity(&self, r: Request<msrp::CreateIdentityRequest>) -> R<msrp::Identity> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Status::unavailable("msrp down"));
        }
        let r = r.into_inner();
        let kind = if r.kind == msrp::IdentityKind::SystemAssigned as i32 {
            "system"
        } else {
            "user"
        };
        self.calls
            .lock()
            .unwrap()
            .push(format!("create {kind} {} {}", r.resource_id, r.tenant_id));
        let mut ids = self.ids.lock().unwrap();
        let id = ids
            .entry(r.resource_id.to_ascii_lowercase())
            .or_insert_with(|| msrp::Identity {
                resource_id: r.resource_id.clone(),
                kind: r.kind,
                tenant_id: r.tenant_id.clone(),
                client_id: uuid::Uuid::new_v4().to_string(),
                principal_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            });
        Ok(Response::new(id.clone()))
    }
    async fn get_identity(&self, _: Request<msrp::GetIdentityRequest>) -> R<msrp::Identity> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_identities(
        &self,
        _: Request<msrp::ListIdentitiesRequest>,
    ) -> R<msrp::ListIdentitiesResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn delete_identity(
        &self,
        r: Request<msrp::DeleteIdentityRequest>,
    ) -> R<msrp::DeleteIdentityResponse> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Status::unavailable("msrp down"));
        }
        let r = r.into_inner();
        self.calls
            .lock()
            .unwrap()
            .push(format!("delete {}", r.resource_id));
        self.ids
            .lock()
            .unwrap()
            .remove(&r.resource_id.to_ascii_lowercase());
        Ok(Response::new(msrp::DeleteIdentityResponse {}))
    }
    async fn get_credential(&self, _: Request<msrp::GetCredentialRequest>) -> R<msrp::Credential> {
        Err(Status::permission_denied("arm never asks for credentials"))
    }
    async fn set_host_access(
        &self,
        _: Request<msrp::SetHostAccessRequest>,
    ) -> R<msrp::SetHostAccessResponse> {
        Ok(Response::new(msrp::SetHostAccessResponse {}))
    }
    async fn set_federated_identity_credentials(
        &self,
        r: Request<msrp::SetFederatedIdentityCredentialsRequest>,
    ) -> R<msrp::SetFederatedIdentityCredentialsResponse> {
        let r = r.into_inner();
        self.calls.lock().unwrap().push(format!(
            "federated {} {}",
            r.resource_id,
            r.credentials.len()
        ));
        Ok(Response::new(
            msrp::SetFederatedIdentityCredentialsResponse {},
        ))
    }
}

/// Fake host agent: placed VMs, the last identity set configured per VM, removals, a failure switch.
#[derive(Default, Clone)]
pub struct FakeHost {
    pub name: String,
    pub fail: Arc<AtomicBool>,
    pub placed: Arc<Mutex<HashMap<String, imds::VmInfo>>>,
    pub configured: Arc<Mutex<HashMap<String, Vec<imds::IdentityRef>>>>,
    pub removed: Arc<Mutex<Vec<String>>>,
    pub port: Arc<Mutex<u16>>,
    /// Installed VM extensions by vm id (lower-cased).
    pub extensions: Arc<Mutex<HashMap<String, Installed>>>,
    /// `ConfigureIdentities` waits for a read lock: a test holding the write lock stalls it.
    pub hold: Arc<tokio::sync::RwLock<()>>,
    /// Wakes registered waiters when a `ConfigureIdentities` call arrives (before it waits on `hold`).
    pub configure_entered: Arc<tokio::sync::Notify>,
}

impl FakeHost {
    pub fn new(name: &str) -> Self {
        FakeHost {
            name: name.to_string(),
            ..Default::default()
        }
    }
    /// The msi_res_ids last configured for a VM, sorted, lower-cased.
    pub fn identities(&self, vm: &str) -> Option<Vec<String>> {
        self.configured
            .lock()
            .unwrap()
            .get(&vm.to_ascii_lowercase())
            .map(|v| {
                let mut ids: Vec<String> = v
                    .iter()
                    .map(|r| r.msi_res_id.to_ascii_lowercase())
                    .collect();
                ids.sort();
                ids
            })
    }
    pub fn endpoint(resource_id: &str) -> String {
        format!("http://127.0.0.1:{}", 40000 + resource_id.len())
    }
    pub async fn serve(&self, shutdown: CancellationToken) -> String {
        let (l, url) = listener().await;
        let routes = tonic::service::Routes::new(HostAgentServer::new(self.clone()));
        tokio::spawn(misim_core::serve::serve_grpc(l, routes, &[], shutdown));
        url
    }
    fn placed_vm(&self, info: imds::VmInfo) -> imds::PlacedVm {
        let endpoint = Self::endpoint(&info.resource_id);
        let ext = self
            .extensions
            .lock()
            .unwrap()
            .get(&info.resource_id.to_ascii_lowercase())
            .cloned();
        imds::PlacedVm {
            extension_endpoint: ext
                .as_ref()
                .map(|(p, _, _)| format!("http://127.0.0.1:{p}"))
                .unwrap_or_default(),
            extension_credential_path: ext
                .map(|_| "/var/lib/waagent/ManagedIdentity-Settings".to_string())
                .unwrap_or_default(),
            vm: Some(info),
            host: self.name.clone(),
            imds_endpoint: endpoint,
            identities: vec![],
            ..Default::default()
        }
    }
}

/// An installed VM extension: (port, force_update_tag, how many times it ran).
pub type Installed = (u32, String, u32);

#[tonic::async_trait]
impl HostAgent for FakeHost {
    async fn place_vm(&self, r: Request<imds::PlaceVmRequest>) -> R<imds::PlacedVm> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Status::unavailable("host down"));
        }
        let info = r
            .into_inner()
            .vm
            .ok_or_else(|| Status::invalid_argument("vm"))?;
        self.placed
            .lock()
            .unwrap()
            .insert(info.resource_id.to_ascii_lowercase(), info.clone());
        Ok(Response::new(self.placed_vm(info)))
    }
    async fn get_vm(&self, r: Request<imds::GetVmRequest>) -> R<imds::PlacedVm> {
        let id = r.into_inner().resource_id.to_ascii_lowercase();
        let info = self
            .placed
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found("vm"))?;
        Ok(Response::new(self.placed_vm(info)))
    }
    async fn list_vms(&self, _: Request<imds::ListVmsRequest>) -> R<imds::ListVmsResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn set_extension(&self, r: Request<imds::SetExtensionRequest>) -> R<imds::PlacedVm> {
        let r = r.into_inner();
        let id = r.resource_id.to_ascii_lowercase();
        let info = self
            .placed
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found("vm"))?;
        let too_many = self
            .configured
            .lock()
            .unwrap()
            .get(&id)
            .is_some_and(|v| v.len() > 32);
        if r.installed && too_many {
            return Err(Status::failed_precondition(
                "the VM extension serves at most 32 user-assigned identities",
            ));
        }
        {
            let mut ext = self.extensions.lock().unwrap();
            if r.installed {
                let runs = ext.get(&id).map(|e| e.2).unwrap_or(0) + 1;
                ext.insert(id, (r.port, r.force_update_tag, runs));
            } else {
                ext.remove(&id);
            }
        }
        Ok(Response::new(self.placed_vm(info)))
    }
    async fn remove_vm(&self, r: Request<imds::RemoveVmRequest>) -> R<imds::RemoveVmResponse> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Status::unavailable("host down"));
        }
        let id = r.into_inner().resource_id;
        self.placed.lock().unwrap().remove(&id.to_ascii_lowercase());
        self.configured
            .lock()
            .unwrap()
            .remove(&id.to_ascii_lowercase());
        self.removed.lock().unwrap().push(id);
        Ok(Response::new(imds::RemoveVmResponse {}))
    }
    async fn configure_identities(
        &self,
        r: Request<imds::ConfigureIdentitiesRequest>,
    ) -> R<imds::PlacedVm> {
        self.configure_entered.notify_waiters();
        let _held = self.hold.read().await;
        if self.fail.load(Ordering::SeqCst) {
            return Err(Status::unavailable("host down"));
        }
        let r = r.into_inner();
        let id = r.resource_id.to_ascii_lowercase();
        let info = self
            .placed
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found("vm not placed"))?;
        self.configured.lock().unwrap().insert(id, r.identities);
        Ok(Response::new(self.placed_vm(info)))
    }
}

/// Fake Azure AD admin API: only `EnsureDefaultTenant` is real; it can fail a number of times first.
#[derive(Default, Clone)]
pub struct FakeAadAdmin {
    pub failures_left: Arc<Mutex<u32>>,
    pub calls: Arc<Mutex<u32>>,
}

impl FakeAadAdmin {
    pub async fn serve(&self, shutdown: CancellationToken) -> String {
        let (l, url) = listener().await;
        let routes = tonic::service::Routes::new(AadAdminServer::new(self.clone()));
        tokio::spawn(misim_core::serve::serve_grpc(l, routes, &[], shutdown));
        url
    }
}

#[tonic::async_trait]
impl AadAdmin for FakeAadAdmin {
    async fn ensure_default_tenant(
        &self,
        _: Request<aad::EnsureDefaultTenantRequest>,
    ) -> R<aad::Tenant> {
        *self.calls.lock().unwrap() += 1;
        let mut left = self.failures_left.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return Err(Status::unavailable("aad starting"));
        }
        Ok(Response::new(aad::Tenant {
            tenant_id: TENANT.into(),
            display_name: "misim".into(),
            default_domain: "misim.onmicrosoft.com".into(),
        }))
    }
    async fn create_tenant(&self, _: Request<aad::CreateTenantRequest>) -> R<aad::Tenant> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_tenant(&self, _: Request<aad::GetTenantRequest>) -> R<aad::Tenant> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_tenants(
        &self,
        _: Request<aad::ListTenantsRequest>,
    ) -> R<aad::ListTenantsResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn create_service_principal(
        &self,
        _: Request<aad::CreateServicePrincipalRequest>,
    ) -> R<aad::ServicePrincipal> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_service_principal(
        &self,
        _: Request<aad::GetServicePrincipalRequest>,
    ) -> R<aad::ServicePrincipal> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_service_principals(
        &self,
        _: Request<aad::ListServicePrincipalsRequest>,
    ) -> R<aad::ListServicePrincipalsResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn add_key_credential(
        &self,
        _: Request<aad::AddKeyCredentialRequest>,
    ) -> R<aad::ServicePrincipal> {
        Err(Status::unimplemented("fake"))
    }
    async fn remove_key_credential(
        &self,
        _: Request<aad::RemoveKeyCredentialRequest>,
    ) -> R<aad::ServicePrincipal> {
        Err(Status::unimplemented("fake"))
    }
    async fn delete_service_principal(
        &self,
        _: Request<aad::DeleteServicePrincipalRequest>,
    ) -> R<aad::DeleteServicePrincipalResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn set_federated_identity_credentials(
        &self,
        _: Request<aad::SetFederatedIdentityCredentialsRequest>,
    ) -> R<aad::SetFederatedIdentityCredentialsResponse> {
        Err(Status::unimplemented("fake"))
    }
}

/// A signing key of the fake Azure AD (and its kid).
pub struct SigningKey {
    pub kid: String,
    pub pkcs8: Vec<u8>,
}

impl SigningKey {
    pub fn generate(now: i64) -> Self {
        let pkcs8 = misim_core::cert::generate_rsa_key().unwrap();
        let cert =
            misim_core::cert::self_signed(&pkcs8, "fake aad", now - 3600, now + 86400).unwrap();
        SigningKey {
            kid: misim_core::cert::x5t(&cert.certificate_der),
            pkcs8,
        }
    }

    fn jwk(&self) -> serde_json::Value {
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::from_pkcs8_der(&self.pkcs8).unwrap();
        let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        serde_json::json!({
            "kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid,
            "n": b64(key.n().to_bytes_be()), "e": b64(key.e().to_bytes_be())
        })
    }

    /// A v1 ARM token (aud management.azure.com) for `oid` with `kid` in the header, signed by this key.
    pub fn token(&self, kid: &str, oid: &str, now: i64, lifetime: i64) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(kid.to_string());
        header.x5t = Some(kid.to_string());
        let claims = serde_json::json!({
            "aud": "https://management.azure.com/",
            "iss": format!("https://sts.windows.net/{TENANT}/"),
            "iat": now - 300, "nbf": now - 300, "exp": now + lifetime,
            "appid": uuid::Uuid::new_v4().to_string(), "appidacr": "2", "idtyp": "app",
            "oid": oid, "sub": oid, "tid": TENANT, "ver": "1.0"
        });
        let pem = misim_core::cert::to_pem("PRIVATE KEY", &self.pkcs8);
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

/// Serves the fake Azure AD HTTP surface (v1 discovery and `/common/discovery/keys`) for `key`.
pub async fn serve_aad_http(key: &SigningKey, shutdown: CancellationToken) -> String {
    use axum::extract::Path;
    use axum::routing::get;
    let (l, url) = listener().await;
    let jwks = serde_json::json!({ "keys": [key.jwk()] });
    let base = url.clone();
    let router = axum::Router::new()
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(move |Path(tenant): Path<String>| {
                let base = base.clone();
                async move {
                    axum::Json(serde_json::json!({
                        "issuer": format!("https://sts.windows.net/{tenant}/"),
                        "jwks_uri": format!("{base}/common/discovery/keys"),
                        "token_endpoint": format!("{base}/{tenant}/oauth2/token"),
                    }))
                }
            }),
        )
        .route(
            "/common/discovery/keys",
            get(move || async move { axum::Json(jwks) }),
        );
    tokio::spawn(misim_core::serve::serve_http(l, router, shutdown));
    url
}
