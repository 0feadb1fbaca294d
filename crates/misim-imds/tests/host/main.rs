//! Integration tests of one host: the agent gRPC API and the per-VM IMDS endpoints, run in-process on
//! 127.0.0.1:0 against a fake MSRP and a fake Azure AD.
#![allow(missing_docs)] // helpers shared by the test modules, not an API

mod agent;
mod cache_throttle;
mod extension;
mod fakes;
mod instance;
mod limits;
mod restart;
mod shared;
mod shared_path;
mod token;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use fakes::{FakeAad, FakeMsrp, TestIdentity};
use misim_core::{serve, Clock};
use misim_imds::{Config, ImdsLimits, ImdsListener, RunError};
use misim_proto::imds as pb;
use misim_proto::imds::host_agent_client::HostAgentClient;
use misim_proto::msrp::msrp_server::MsrpServer;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const SUB: &str = "00000000-0000-0000-0000-00000000a001";
pub const TENANT: &str = "00000000-0000-0000-0000-00000000b001";
pub const START: i64 = 1_800_000_000;
pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A running host (`misim_imds::run`) that can be stopped and started again on the same data dir.
struct RunningHost {
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), RunError>>,
    agent_url: String,
}

/// A host with its fakes, a temp data dir and a manual clock.
pub struct Sandbox {
    pub clock: Clock,
    pub msrp: FakeMsrp,
    pub aad: FakeAad,
    pub limits: ImdsLimits,
    pub imds_listen: Option<SocketAddr>,
    pub extension_listen: Option<SocketAddr>,
    /// Per-VM listeners (default) or one listener for all VMs by path.
    pub imds_listener: ImdsListener,
    pub dir: tempfile::TempDir,
    msrp_url: String,
    pub aad_url: String,
    fakes_shutdown: CancellationToken,
    host: Option<RunningHost>,
}

async fn loopback() -> tokio::net::TcpListener {
    serve::bind(SocketAddr::new(LOCALHOST, 0))
        .await
        .expect("bind")
}

impl Sandbox {
    /// Fakes plus a host with `limits`.
    pub async fn start(limits: ImdsLimits) -> Sandbox {
        Sandbox::start_with(limits, None, None).await
    }

    /// Fakes plus a host with `limits` and the given shared listeners.
    pub async fn start_with(
        limits: ImdsLimits,
        imds_listen: Option<SocketAddr>,
        extension_listen: Option<SocketAddr>,
    ) -> Sandbox {
        Sandbox::start_full(limits, imds_listen, extension_listen, ImdsListener::PerVm).await
    }

    /// Fakes plus a host whose VMs share one loopback IMDS listener, told apart by path.
    pub async fn start_shared_path(limits: ImdsLimits) -> Sandbox {
        Sandbox::start_full(limits, None, None, ImdsListener::Shared).await
    }

    async fn start_full(
        limits: ImdsLimits,
        imds_listen: Option<SocketAddr>,
        extension_listen: Option<SocketAddr>,
        imds_listener: ImdsListener,
    ) -> Sandbox {
        let clock = Clock::manual(START);
        let fakes_shutdown = CancellationToken::new();
        let msrp = FakeMsrp::default();
        let msrp_listener = loopback().await;
        let msrp_url = format!("http://{}", msrp_listener.local_addr().unwrap());
        let routes = tonic::service::Routes::new(MsrpServer::new(msrp.clone()));
        tokio::spawn(serve::serve_grpc(
            msrp_listener,
            routes,
            &[],
            fakes_shutdown.clone(),
        ));
        let aad = FakeAad::new(clock.clone());
        let aad_listener = loopback().await;
        let aad_url = format!("http://{}", aad_listener.local_addr().unwrap());
        aad.base_url.set(aad_url.clone()).unwrap();
        tokio::spawn(serve::serve_http(
            aad_listener,
            aad.router(),
            fakes_shutdown.clone(),
        ));
        let mut sandbox = Sandbox {
            clock,
            msrp,
            aad,
            limits,
            imds_listen,
            extension_listen,
            imds_listener,
            dir: tempfile::tempdir().unwrap(),
            msrp_url,
            aad_url,
            fakes_shutdown,
            host: None,
        };
        sandbox.start_host().await;
        sandbox
    }

    /// Without throttling.
    pub async fn unlimited() -> Sandbox {
        Sandbox::start(ImdsLimits::unlimited()).await
    }

    pub async fn start_host(&mut self) {
        let config = Config {
            host_name: "host-1".into(),
            data_dir: self.dir.path().join("hosts/host-1"),
            msrp_grpc: self.msrp_url.clone(),
            aad_url: self.aad_url.clone(),
            vm_listen_ip: LOCALHOST,
            clock: self.clock.clone(),
            limits: self.limits.clone(),
            credential_refresh_secs: 0,
            imds_listen: self.imds_listen,
            extension_listen: self.extension_listen,
            vm_listeners: true,
            imds_listener: self.imds_listener,
            vm_ports: None,
            control: None,
        };
        let listener = loopback().await;
        let agent_url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(misim_imds::run(config, listener, shutdown.clone()));
        self.host = Some(RunningHost {
            shutdown,
            handle,
            agent_url,
        });
        // The agent answers only once `run` has reloaded the VMs and bound their listeners.
        let ready = self.agent().await.list_vms(pb::ListVmsRequest {}).await;
        if let Err(status) = ready {
            let host = self.host.take().expect("host running");
            let ended = if host.handle.is_finished() {
                format!("{:?}", host.handle.await)
            } else {
                "still running".to_string()
            };
            panic!("host not ready: {status:?}; host run: {ended}");
        }
    }

    /// Stops the host and waits until it has released its store and listeners.
    pub async fn stop_host(&mut self) {
        let host = self.host.take().expect("host running");
        host.shutdown.cancel();
        host.handle.await.expect("join").expect("host run");
    }

    pub async fn agent(&self) -> HostAgentClient<Channel> {
        let url = self.host.as_ref().expect("host running").agent_url.clone();
        let channel = Channel::from_shared(url).unwrap().connect_lazy();
        HostAgentClient::new(channel)
    }

    /// Places VM `name` and returns its IMDS endpoint.
    pub async fn place(&self, name: &str) -> String {
        let placed = self
            .agent()
            .await
            .place_vm(pb::PlaceVmRequest {
                vm: Some(vm_info(name)),
                app_service: None,
            })
            .await
            .unwrap();
        placed.into_inner().imds_endpoint
    }

    /// Issues credentials for `identities` (fake MSRP, registered in fake AAD) and configures them on VM `name`.
    pub async fn configure(
        &self,
        name: &str,
        identities: &[&TestIdentity],
    ) -> Result<pb::PlacedVm, tonic::Status> {
        for i in identities {
            let der = self.msrp.issue(i, self.clock.now());
            self.aad.register(&i.client_id, der);
        }
        self.configure_issued(name, identities).await
    }

    /// Like [`Sandbox::configure`] with one shared certificate for all identities (cheap for many).
    pub async fn configure_many(
        &self,
        name: &str,
        identities: &[&TestIdentity],
    ) -> Result<pb::PlacedVm, tonic::Status> {
        for i in identities {
            let der = self.msrp.issue_shared(i, self.clock.now());
            self.aad.register(&i.client_id, der);
        }
        self.configure_issued(name, identities).await
    }

    /// Installs (`Some(tag)`) or removes (`None`) the VM extension on VM `name` with `port`.
    pub async fn set_extension(
        &self,
        name: &str,
        port: u32,
        tag: Option<&str>,
    ) -> Result<pb::PlacedVm, tonic::Status> {
        self.agent()
            .await
            .set_extension(pb::SetExtensionRequest {
                resource_id: vm_id(name),
                installed: tag.is_some(),
                port,
                force_update_tag: tag.unwrap_or_default().to_string(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Configures `identities` on VM `name` with the credentials MSRP issued already.
    pub async fn configure_issued(
        &self,
        name: &str,
        identities: &[&TestIdentity],
    ) -> Result<pb::PlacedVm, tonic::Status> {
        let request = pb::ConfigureIdentitiesRequest {
            resource_id: vm_id(name),
            identities: identities.iter().map(|i| identity_ref(i)).collect(),
        };
        self.agent()
            .await
            .configure_identities(request)
            .await
            .map(|r| r.into_inner())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(host) = &self.host {
            host.shutdown.cancel();
        }
        self.fakes_shutdown.cancel();
    }
}

pub fn vm_id(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{name}")
}

/// A vmId GUID derived from the VM name (FNV-1a), so VMs placed on one host have distinct ones.
pub fn guid_of(name: &str) -> String {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("11111111-0000-0000-0000-{:012x}", h & 0xffff_ffff_ffff)
}

/// A private IP address derived from the VM name (10.x.y.z, FNV-1a of the name), so VMs placed on
/// one host do not share an address.
pub fn private_ip(name: &str) -> String {
    let h = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let [_, a, b, c] = h.to_be_bytes();
    format!("10.{a}.{b}.{c}")
}

pub fn vm_info(name: &str) -> pb::VmInfo {
    pb::VmInfo {
        resource_id: vm_id(name),
        vm_id: guid_of(name),
        name: name.into(),
        subscription_id: SUB.into(),
        resource_group: "rg1".into(),
        location: "westeurope".into(),
        vm_size: "Standard_D2s_v3".into(),
        os_type: "Linux".into(),
        vm_scale_set_name: String::new(),
        tags: [("env".to_string(), "ci".to_string())].into(),
        private_ip_address: private_ip(name),
        mac_address: "000D3AF806EC".into(),
    }
}

pub fn system_identity(vm: &str) -> TestIdentity {
    TestIdentity {
        resource_id: vm_id(vm),
        system: true,
        client_id: uuid::Uuid::new_v4().to_string(),
        principal_id: uuid::Uuid::new_v4().to_string(),
        tenant_id: TENANT.into(),
    }
}

pub fn user_identity(name: &str) -> TestIdentity {
    TestIdentity {
        resource_id: format!(
            "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
        ),
        system: false,
        client_id: uuid::Uuid::new_v4().to_string(),
        principal_id: uuid::Uuid::new_v4().to_string(),
        tenant_id: TENANT.into(),
    }
}

pub fn identity_ref(i: &TestIdentity) -> pb::IdentityRef {
    let kind = if i.system {
        pb::IdentityKind::SystemAssigned
    } else {
        pb::IdentityKind::UserAssigned
    };
    pb::IdentityRef {
        msi_res_id: i.resource_id.clone(),
        kind: kind as i32,
        client_id: i.client_id.clone(),
        principal_id: i.principal_id.clone(),
        tenant_id: i.tenant_id.clone(),
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A client whose connections come from `source` (a 127.0.0.x address standing in for a VM's IP).
pub fn http_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// A free loopback address for a shared listener (bound, read, released).
pub async fn free_loopback_addr() -> SocketAddr {
    loopback().await.local_addr().unwrap()
}

/// A GET with optional headers from `client`; returns status, headers and JSON body.
pub async fn get_with(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let h = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        h,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text:?}: {e}")),
    )
}

/// A GET with `Metadata: true`; returns status and JSON body.
pub async fn get_json(url: &str) -> (u16, Value) {
    let r = http()
        .get(url)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text:?}: {e}")),
    )
}

/// `GET {endpoint}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=…{extra}`.
pub async fn token(endpoint: &str, extra: &str) -> (u16, Value) {
    get_json(&format!(
        "{endpoint}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/{extra}"
    ))
    .await
}

/// The error description of an identity error body.
pub fn description(body: &Value) -> &str {
    body["error_description"].as_str().unwrap_or_default()
}
