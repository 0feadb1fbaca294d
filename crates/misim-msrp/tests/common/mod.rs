//! Test harness: a fake Azure AD admin gRPC server that records calls, and an in-process MSRP on
//! 127.0.0.1:0 with a temp data dir.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use misim_core::Clock;
use misim_core::ResourceId;
use misim_msrp::{Config, Msrp};
use misim_proto::aad::aad_admin_server::{AadAdmin, AadAdminServer};
use misim_proto::aad::*;
use misim_proto::msrp::msrp_client::MsrpClient;
use misim_proto::msrp::{CreateIdentityRequest, GetCredentialRequest, IdentityKind};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const DAY: i64 = 86_400;
pub const T0: i64 = 1_800_000_000;

/// What the fake AAD holds and saw.
#[derive(Default)]
pub struct FakeState {
    pub principals: HashMap<String, ServicePrincipal>,
    /// Names of the RPCs called, in order.
    pub calls: Vec<String>,
    /// `key_id`s passed to RemoveKeyCredential.
    pub removed_keys: Vec<String>,
    /// When set, the next CreateServicePrincipal commits the principal and then fails (a crash of MSRP
    /// after AAD acted but before MSRP stored the result looks the same to MSRP).
    pub fail_next_create_after_commit: bool,
    /// When set, the next AddKeyCredential fails without changing anything (AAD down mid-renewal).
    pub fail_next_add: bool,
    /// While set, DeleteServicePrincipal deletes the principal and then fails (MSRP killed after
    /// Azure AD acted, before it removed its record; retries fail too).
    pub fail_deletes_after_commit: bool,
}

/// A fake `AadAdmin` recording calls.
#[derive(Clone, Default)]
pub struct FakeAad {
    pub state: Arc<Mutex<FakeState>>,
}

impl FakeAad {
    pub fn calls(&self, name: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| *c == name)
            .count()
    }

    pub fn principals(&self) -> Vec<ServicePrincipal> {
        self.state
            .lock()
            .unwrap()
            .principals
            .values()
            .cloned()
            .collect()
    }

    pub fn only_principal(&self) -> ServicePrincipal {
        let sps = self.principals();
        assert_eq!(sps.len(), 1, "expected exactly one service principal");
        sps.into_iter().next().unwrap()
    }

    fn record(&self, call: &str) -> std::sync::MutexGuard<'_, FakeState> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(call.to_string());
        s
    }
}

fn key_credential(der: &[u8]) -> KeyCredential {
    KeyCredential {
        key_id: uuid::Uuid::new_v4().to_string(),
        certificate_der: der.to_vec(),
        thumbprint_sha1_hex: misim_core::cert::sha1_thumbprint_hex(der),
        start_date_time: 0,
        end_date_time: 0,
    }
}

fn add_cert(sp: &mut ServicePrincipal, der: &[u8]) {
    let tp = misim_core::cert::sha1_thumbprint_hex(der);
    if !sp
        .key_credentials
        .iter()
        .any(|k| k.thumbprint_sha1_hex == tp)
    {
        sp.key_credentials.push(key_credential(der));
    }
}

#[tonic::async_trait]
impl AadAdmin for FakeAad {
    async fn ensure_default_tenant(
        &self,
        _: Request<EnsureDefaultTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn create_tenant(
        &self,
        _: Request<CreateTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_tenant(&self, _: Request<GetTenantRequest>) -> Result<Response<Tenant>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_tenants(
        &self,
        _: Request<ListTenantsRequest>,
    ) -> Result<Response<ListTenantsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn create_service_principal(
        &self,
        req: Request<CreateServicePrincipalRequest>,
    ) -> Result<Response<ServicePrincipal>, Status> {
        let r = req.into_inner();
        let mut s = self.record("CreateServicePrincipal");
        let existing = s.principals.values_mut().find(|sp| {
            sp.tenant_id == r.tenant_id
                && sp.msi_resource_id.eq_ignore_ascii_case(&r.msi_resource_id)
        });
        let sp = match existing {
            Some(sp) => {
                add_cert(sp, &r.certificate_der);
                sp.clone()
            }
            None => {
                let sp = ServicePrincipal {
                    tenant_id: r.tenant_id.clone(),
                    object_id: uuid::Uuid::new_v4().to_string(),
                    app_id: uuid::Uuid::new_v4().to_string(),
                    display_name: r.display_name.clone(),
                    service_principal_type: "ManagedIdentity".into(),
                    alternative_names: vec![
                        format!(
                            "isExplicit={}",
                            if r.is_explicit { "True" } else { "False" }
                        ),
                        r.msi_resource_id.clone(),
                    ],
                    msi_resource_id: r.msi_resource_id.clone(),
                    key_credentials: vec![key_credential(&r.certificate_der)],
                };
                s.principals.insert(sp.object_id.clone(), sp.clone());
                sp
            }
        };
        if std::mem::take(&mut s.fail_next_create_after_commit) {
            return Err(Status::internal("simulated failure after commit"));
        }
        Ok(Response::new(sp))
    }

    async fn get_service_principal(
        &self,
        req: Request<GetServicePrincipalRequest>,
    ) -> Result<Response<ServicePrincipal>, Status> {
        let r = req.into_inner();
        let s = self.record("GetServicePrincipal");
        s.principals
            .get(&r.object_id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found("no such principal"))
    }

    async fn list_service_principals(
        &self,
        req: Request<ListServicePrincipalsRequest>,
    ) -> Result<Response<ListServicePrincipalsResponse>, Status> {
        let r = req.into_inner();
        let s = self.record("ListServicePrincipals");
        let service_principals = s
            .principals
            .values()
            .filter(|sp| sp.tenant_id == r.tenant_id)
            .cloned()
            .collect();
        Ok(Response::new(ListServicePrincipalsResponse {
            service_principals,
        }))
    }

    async fn add_key_credential(
        &self,
        req: Request<AddKeyCredentialRequest>,
    ) -> Result<Response<ServicePrincipal>, Status> {
        let r = req.into_inner();
        let mut s = self.record("AddKeyCredential");
        if std::mem::take(&mut s.fail_next_add) {
            return Err(Status::internal("simulated failure"));
        }
        let sp = s
            .principals
            .get_mut(&r.object_id)
            .ok_or_else(|| Status::not_found("no such principal"))?;
        add_cert(sp, &r.certificate_der);
        Ok(Response::new(sp.clone()))
    }

    async fn remove_key_credential(
        &self,
        req: Request<RemoveKeyCredentialRequest>,
    ) -> Result<Response<ServicePrincipal>, Status> {
        let r = req.into_inner();
        let mut s = self.record("RemoveKeyCredential");
        s.removed_keys.push(r.key_id.clone());
        let sp = s
            .principals
            .get_mut(&r.object_id)
            .ok_or_else(|| Status::not_found("no such principal"))?;
        sp.key_credentials.retain(|k| k.key_id != r.key_id);
        Ok(Response::new(sp.clone()))
    }

    async fn delete_service_principal(
        &self,
        req: Request<DeleteServicePrincipalRequest>,
    ) -> Result<Response<DeleteServicePrincipalResponse>, Status> {
        let r = req.into_inner();
        let mut s = self.record("DeleteServicePrincipal");
        s.principals.remove(&r.object_id);
        if s.fail_deletes_after_commit {
            return Err(Status::unavailable("deleted, then the connection broke"));
        }
        Ok(Response::new(DeleteServicePrincipalResponse {}))
    }
    async fn set_federated_identity_credentials(
        &self,
        _: Request<misim_proto::aad::SetFederatedIdentityCredentialsRequest>,
    ) -> Result<Response<misim_proto::aad::SetFederatedIdentityCredentialsResponse>, Status> {
        drop(self.record("SetFederatedIdentityCredentials"));
        Ok(Response::new(
            misim_proto::aad::SetFederatedIdentityCredentialsResponse {},
        ))
    }
}

/// Starts the fake AAD on 127.0.0.1:0; returns its URL. Stops when `shutdown` is cancelled.
pub async fn start_fake_aad(shutdown: CancellationToken) -> (String, FakeAad) {
    let fake = FakeAad::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let routes = tonic::service::Routes::new(AadAdminServer::new(fake.clone()));
    tokio::spawn(misim_core::serve::serve_grpc(
        listener,
        routes,
        &[],
        shutdown,
    ));
    (url, fake)
}

/// An address nobody listens on.
pub async fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// Test config: manual clock at [`T0`], Azure lifetimes, no key pool unless asked.
pub fn config(dir: &Path, aad: &str, clock: &Clock) -> Config {
    Config {
        key_pool_size: 0,
        ..Config::new(dir.to_path_buf(), aad.to_string(), clock.clone())
    }
}

/// MSRP served in-process, with the domain handle kept for direct calls (renewal, key pool stats).
pub struct Running {
    pub msrp: Arc<Msrp>,
    pub client: MsrpClient<Channel>,
    shutdown: CancellationToken,
    join: JoinHandle<()>,
}

impl Running {
    /// Opens MSRP on `config` and serves its gRPC API on 127.0.0.1:0.
    pub async fn start(config: &Config) -> Running {
        let shutdown = CancellationToken::new();
        let msrp = misim_msrp::open(config, shutdown.clone()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let routes = tonic::service::Routes::new(misim_msrp::grpc::server(
            msrp.clone(),
            misim_core::control::ControlAuth::Off,
        ));
        let token = shutdown.clone();
        let join = tokio::spawn(async move {
            misim_core::serve::serve_grpc(
                listener,
                routes,
                &[misim_msrp::grpc::SERVICE_NAME],
                token,
            )
            .await
            .unwrap();
        });
        let client = MsrpClient::connect(url).await.unwrap();
        Running {
            msrp,
            client,
            shutdown,
            join,
        }
    }

    /// Stops serving and drops every handle on the store, so the data dir can be reopened.
    pub async fn stop(self) {
        let Running {
            msrp,
            client,
            shutdown,
            join,
        } = self;
        drop(client);
        shutdown.cancel();
        join.await.unwrap();
        assert_eq!(
            Arc::strong_count(&msrp),
            1,
            "msrp still shared after shutdown"
        );
        drop(msrp);
    }
}

/// Serves `misim_msrp::run` on 127.0.0.1:0; returns a client, the shutdown token and the task.
pub async fn start_run(config: Config) -> (MsrpClient<Channel>, CancellationToken, JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let token = shutdown.clone();
    let join = tokio::spawn(async move { misim_msrp::run(config, listener, token).await.unwrap() });
    let client = MsrpClient::connect(url).await.unwrap();
    (client, shutdown, join)
}

pub fn uami(name: &str) -> String {
    ResourceId::user_assigned_identity("00000000-0000-0000-0000-000000000001", "rg1", name)
        .unwrap()
        .as_str()
        .to_string()
}

pub fn vm(name: &str) -> String {
    ResourceId::vm("00000000-0000-0000-0000-000000000001", "rg1", name)
        .unwrap()
        .as_str()
        .to_string()
}

pub fn create_req(resource_id: &str, kind: IdentityKind) -> CreateIdentityRequest {
    CreateIdentityRequest {
        resource_id: resource_id.to_string(),
        kind: kind as i32,
        tenant_id: TENANT.to_string(),
    }
}

pub fn cred_req(resource_id: &str) -> GetCredentialRequest {
    GetCredentialRequest {
        resource_id: resource_id.to_string(),
        host: "host-1".into(),
    }
}
