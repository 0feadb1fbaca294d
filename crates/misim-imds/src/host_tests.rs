//! Unit tests of [`Host`](crate::host::Host) against a minimal fake MSRP: certificate renewals at MSRP
//! reach the host through [`Host::refresh_credentials`](crate::host::Host::refresh_credentials).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use misim_core::{cert, serve, Clock, ResourceId, Store};
use misim_proto::msrp as mpb;
use misim_proto::msrp::msrp_server::{Msrp, MsrpServer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use crate::host::Host;
use crate::model::{IdentityKind, IdentityRef, VmInfo};
use crate::store::HostStore;
use crate::{Config, ImdsLimits};

const NOW: i64 = 1_800_000_000;

#[derive(Clone)]
struct FakeMsrp {
    credential: Arc<Mutex<mpb::Credential>>,
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
        _: Request<mpb::GetCredentialRequest>,
    ) -> Result<Response<mpb::Credential>, Status> {
        Ok(Response::new(
            self.credential
                .lock()
                .map_err(|_| Status::internal("poisoned"))?
                .clone(),
        ))
    }
}

fn credential(key: &[u8], client_id: &str, not_after: i64) -> mpb::Credential {
    let kc = cert::self_signed(key, client_id, NOW - 60, not_after).unwrap();
    mpb::Credential {
        identity: Some(mpb::Identity {
            client_id: client_id.into(),
            cert_not_after: not_after,
            ..Default::default()
        }),
        certificate_der: kc.certificate_der,
        private_key_pkcs8_der: kc.private_key_pkcs8_der,
    }
}

fn vm_info(id: &ResourceId) -> VmInfo {
    VmInfo {
        resource_id: id.clone(),
        vm_id: "vm-guid".into(),
        name: id.name().into(),
        subscription_id: "sub".into(),
        resource_group: "rg".into(),
        location: "westeurope".into(),
        vm_size: "Standard_B1s".into(),
        os_type: "Linux".into(),
        vm_scale_set_name: String::new(),
        tags: Default::default(),
        private_ip_address: String::new(),
        mac_address: String::new(),
    }
}

#[tokio::test]
async fn refresh_picks_up_a_certificate_msrp_renewed() {
    let key = cert::generate_rsa_key().unwrap();
    let fake = FakeMsrp {
        credential: Arc::new(Mutex::new(credential(&key, "client-1", NOW + 86_400))),
    };
    let shutdown = CancellationToken::new();
    let listener = serve::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
        .await
        .unwrap();
    let msrp_grpc = format!("http://{}", listener.local_addr().unwrap());
    let routes = tonic::service::Routes::new(MsrpServer::new(fake.clone()));
    tokio::spawn(serve::serve_grpc(listener, routes, &[], shutdown.clone()));

    let config = Config {
        host_name: "host-1".into(),
        data_dir: std::path::PathBuf::new(),
        msrp_grpc,
        aad_url: "http://127.0.0.1:9".into(),
        vm_listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        clock: Clock::manual(NOW),
        limits: ImdsLimits::unlimited(),
        credential_refresh_secs: 0,
        imds_listen: None,
        extension_listen: None,
        vm_listeners: true,
        vm_ports: None,
        control: None,
    };
    let store = HostStore::new(Store::temporary().unwrap()).unwrap();
    let host = Host::start(&config, store, shutdown.clone(), TaskTracker::new())
        .await
        .unwrap();
    let vm = ResourceId::vm("sub", "rg", "vm1").unwrap();
    host.place(vm_info(&vm), None).await.unwrap();
    let identity = IdentityRef {
        msi_res_id: vm.clone(),
        kind: IdentityKind::SystemAssigned,
        client_id: "client-1".into(),
        principal_id: "p".into(),
        tenant_id: "t".into(),
    };
    let placed = host
        .configure_identities(&vm, vec![identity])
        .await
        .unwrap();
    let first = placed.identities[0].thumbprint_sha1_hex.clone();

    assert_eq!(
        host.refresh_credentials().await,
        0,
        "unchanged certificate: nothing to do"
    );
    *fake.credential.lock().unwrap() = credential(&key, "client-1", NOW + 2 * 86_400);
    assert_eq!(host.refresh_credentials().await, 1);
    let served = &host.get_vm(&vm).unwrap().identities[0];
    assert_ne!(served.thumbprint_sha1_hex, first);
    assert_eq!(served.cert_not_after, NOW + 2 * 86_400);
    shutdown.cancel();
}
