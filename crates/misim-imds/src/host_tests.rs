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
    /// GetCredential calls so far.
    calls: Arc<std::sync::atomic::AtomicUsize>,
    /// GetCredential answers `Unavailable` while this is above zero (counting down).
    unavailable: Arc<std::sync::atomic::AtomicUsize>,
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
        use std::sync::atomic::Ordering::SeqCst;
        self.calls.fetch_add(1, SeqCst);
        let down = self
            .unavailable
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
        if down.is_ok() {
            return Err(Status::unavailable("msrp restarting"));
        }
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

/// A host on `store` whose MSRP is `fake`.
async fn start_host(fake: &FakeMsrp, store: Store, shutdown: &CancellationToken) -> Arc<Host> {
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
        imds_listener: crate::ImdsListener::PerVm,
        vm_ports: None,
        control: None,
    };
    let store = HostStore::new(store).unwrap();
    crate::assemble(&config, store, shutdown.clone(), TaskTracker::new())
        .await
        .unwrap()
        .host
}

fn fake_msrp(key: &[u8], client_id: &str) -> FakeMsrp {
    FakeMsrp {
        credential: Arc::new(Mutex::new(credential(key, client_id, NOW + 86_400))),
        calls: Default::default(),
        unavailable: Default::default(),
    }
}

fn user_assigned(client_id: &str) -> IdentityRef {
    IdentityRef {
        msi_res_id: ResourceId::user_assigned_identity("sub", "rg", "shared-id").unwrap(),
        kind: IdentityKind::UserAssigned,
        client_id: client_id.into(),
        principal_id: "p".into(),
        tenant_id: "t".into(),
    }
}

#[tokio::test]
async fn refresh_picks_up_a_certificate_msrp_renewed() {
    let key = cert::generate_rsa_key().unwrap();
    let fake = fake_msrp(&key, "client-1");
    let shutdown = CancellationToken::new();
    let host = start_host(&fake, Store::temporary().unwrap(), &shutdown).await;
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

#[tokio::test]
async fn a_user_assigned_identity_on_many_vms_is_one_credential_fetched_and_renewed_once() {
    let key = cert::generate_rsa_key().unwrap();
    let fake = fake_msrp(&key, "client-u");
    let shutdown = CancellationToken::new();
    let host = start_host(&fake, Store::temporary().unwrap(), &shutdown).await;
    let vms: Vec<ResourceId> = (0..5)
        .map(|i| ResourceId::vm("sub", "rg", &format!("vm{i}")).unwrap())
        .collect();
    for vm in &vms {
        host.place(vm_info(vm), None).await.unwrap();
        host.configure_identities(vm, vec![user_assigned("client-u")])
            .await
            .unwrap();
    }
    let calls = || fake.calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(calls(), 1, "one msrp fetch for five vms");
    *fake.credential.lock().unwrap() = credential(&key, "client-u", NOW + 2 * 86_400);
    assert_eq!(
        host.refresh_credentials().await,
        1,
        "one credential renewed"
    );
    assert_eq!(calls(), 2, "one refresh fetch for five vms");
    for vm in &vms {
        assert_eq!(
            host.get_vm(vm).unwrap().identities[0].cert_not_after,
            NOW + 2 * 86_400,
            "every vm presents the renewed certificate"
        );
    }
    // Once no VM has the identity, its credential is gone: configuring it again fetches it.
    for vm in &vms {
        host.configure_identities(vm, vec![]).await.unwrap();
    }
    host.configure_identities(&vms[0], vec![user_assigned("client-u")])
        .await
        .unwrap();
    assert_eq!(calls(), 3);
    shutdown.cancel();
}

#[tokio::test]
async fn a_schema_1_store_with_inline_credentials_opens_and_is_migrated() {
    let key = cert::generate_rsa_key().unwrap();
    let fake = fake_msrp(&key, "client-u");
    let kc = credential(&key, "client-u", NOW + 86_400);
    let store = Store::temporary().unwrap();
    let vms = store.table::<serde_json::Value>("vms").unwrap();
    for name in ["vm0", "vm1"] {
        let id = ResourceId::vm("sub", "rg", name).unwrap();
        // A VM record as schema 1 wrote it: the credential inline in every VM.
        let record = serde_json::json!({
            "vm": serde_json::to_value(vm_info(&id)).unwrap(),
            "port": 0,
            "identities": [{
                "identity": serde_json::to_value(user_assigned("client-u")).unwrap(),
                "credential": serde_json::to_value(crate::model::Credential {
                    certificate_der: kc.certificate_der.clone(),
                    private_key_pkcs8_der: kc.private_key_pkcs8_der.clone(),
                    not_after: NOW + 86_400,
                }).unwrap(),
            }],
        });
        vms.put(&id.key(), &record).unwrap();
    }
    let shutdown = CancellationToken::new();
    let host = start_host(&fake, store.clone(), &shutdown).await;
    for name in ["vm0", "vm1"] {
        let id = ResourceId::vm("sub", "rg", name).unwrap();
        let placed = host.get_vm(&id).unwrap();
        assert_eq!(placed.identities.len(), 1);
        assert_eq!(placed.identities[0].cert_not_after, NOW + 86_400);
        let stored = vms.get(&id.key()).unwrap().unwrap();
        assert!(
            stored["identities"][0].get("credential").is_none(),
            "rewritten without the inline credential"
        );
    }
    let credentials = store.table::<serde_json::Value>("credentials").unwrap();
    assert_eq!(credentials.len(), 1, "one stored credential for two vms");
    assert_eq!(fake.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    shutdown.cancel();
}

#[tokio::test]
async fn msrp_unavailable_is_retried_twice_then_reported() {
    use std::sync::atomic::Ordering::SeqCst;
    let key = cert::generate_rsa_key().unwrap();
    let fake = fake_msrp(&key, "client-u");
    let shutdown = CancellationToken::new();
    let host = start_host(&fake, Store::temporary().unwrap(), &shutdown).await;
    let vm = ResourceId::vm("sub", "rg", "vm1").unwrap();
    host.place(vm_info(&vm), None).await.unwrap();

    fake.unavailable.store(2, SeqCst);
    host.configure_identities(&vm, vec![user_assigned("client-u")])
        .await
        .expect("third attempt succeeds");
    assert_eq!(fake.calls.load(SeqCst), 3);

    host.configure_identities(&vm, vec![]).await.unwrap();
    fake.unavailable.store(3, SeqCst);
    let e = host
        .configure_identities(&vm, vec![user_assigned("client-u")])
        .await
        .unwrap_err();
    assert!(matches!(e, crate::AgentError::Msrp { .. }), "{e:?}");
    assert_eq!(fake.calls.load(SeqCst), 6, "three attempts, then the error");
    shutdown.cancel();
}
