//! The control plane over gRPC: bootstrap of the default subscription, groups and VMs (idempotent
//! PUTs, placement), restart on the same data dir; plus the request helpers the other test files use.

use std::time::Duration;

use misim_core::Clock;
use misim_proto::arm as pb;
use misim_proto::arm::arm_client::ArmClient;
use tokio_util::sync::CancellationToken;

use crate::fakes::{FakeHost, TENANT};
use crate::{FakePeers, Sandbox, T0};

pub(crate) async fn group(sb: &mut Sandbox, name: &str) -> pb::ResourceGroup {
    let req = pb::CreateResourceGroupRequest {
        name: name.into(),
        location: "westeurope".into(),
        ..Default::default()
    };
    sb.client
        .create_resource_group(req)
        .await
        .unwrap()
        .into_inner()
}

pub(crate) async fn vm(sb: &mut Sandbox, rg: &str, name: &str) -> pb::VirtualMachine {
    let req = pb::CreateVmRequest {
        resource_group: rg.into(),
        name: name.into(),
        ..Default::default()
    };
    sb.client.create_vm(req).await.unwrap().into_inner()
}

pub(crate) async fn uami(sb: &mut Sandbox, rg: &str, name: &str) -> pb::UserAssignedIdentity {
    let req = pb::CreateUserAssignedIdentityRequest {
        resource_group: rg.into(),
        name: name.into(),
        ..Default::default()
    };
    sb.client
        .create_user_assigned_identity(req)
        .await
        .unwrap()
        .into_inner()
}

pub(crate) fn assign(
    rg: &str,
    name: &str,
    system: bool,
    uamis: &[&str],
) -> pb::AssignVmIdentityRequest {
    pb::AssignVmIdentityRequest {
        resource_group: rg.into(),
        name: name.into(),
        system_assigned: system,
        user_assigned_identities: uamis.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub(crate) fn remove(
    rg: &str,
    name: &str,
    system: bool,
    uamis: &[&str],
) -> pb::RemoveVmIdentityRequest {
    pb::RemoveVmIdentityRequest {
        resource_group: rg.into(),
        name: name.into(),
        system_assigned: system,
        user_assigned_identities: uamis.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub(crate) fn lower(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_ascii_lowercase()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn run_bootstraps_default_subscription_after_aad_comes_up() {
    let peers = FakePeers::start().await;
    *peers.aad.failures_left.lock().unwrap() = 2;
    let dir = tempfile::tempdir().unwrap();
    let config = peers.config(dir.path(), "http://127.0.0.1:9", Clock::manual(T0));
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", grpc.local_addr().unwrap());
    let rest = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(misim_arm::run(
        config,
        misim_arm::Listeners { grpc, rest },
        shutdown.clone(),
    ));
    let mut client = ArmClient::connect(url).await.unwrap();
    // Bootstrap retries with backoff until the fake Azure AD answers; wait for it, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let sub = loop {
        match client.get_account(pb::GetAccountRequest::default()).await {
            Ok(s) => break s.into_inner(),
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "bootstrap did not finish"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(sub.tenant_id, TENANT);
    assert_eq!(sub.display_name, "misim default subscription");
    assert_eq!(sub.state, "Enabled");
    assert!(sub.is_default);
    assert_eq!(sub.id, format!("/subscriptions/{}", sub.subscription_id));
    assert_eq!(*peers.aad.calls.lock().unwrap(), 3);
    let subs = client
        .list_subscriptions(pb::ListSubscriptionsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(subs.subscriptions.len(), 1);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn groups_and_vms_are_idempotent_and_vms_are_placed_on_the_emptiest_host() {
    let mut sb = Sandbox::start().await;
    let g1 = group(&mut sb, "rg1").await;
    let g2 = group(&mut sb, "RG1").await;
    assert_eq!(g1, g2);
    let other_location = pb::CreateResourceGroupRequest {
        name: "rg1".into(),
        location: "eastus".into(),
        ..Default::default()
    };
    let err = sb
        .client
        .create_resource_group(other_location)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);

    let a = vm(&mut sb, "rg1", "vm-a").await;
    let again = vm(&mut sb, "rg1", "vm-a").await;
    assert_eq!(a.vm_id, again.vm_id);
    assert_eq!(a.location, "westeurope");
    assert_eq!(
        (a.vm_size.as_str(), a.os_type.as_str()),
        ("Standard_D2s_v3", "Linux")
    );
    assert_eq!(a.provisioning_state, "Succeeded");
    assert_eq!(a.identity.as_ref().unwrap().r#type, "None");
    let b = vm(&mut sb, "rg1", "vm-b").await;
    assert_ne!(a.host, b.host, "second vm goes to the other, emptier host");
    let placed = sb
        .host(&a.host)
        .placed
        .lock()
        .unwrap()
        .get(&a.id.to_ascii_lowercase())
        .cloned()
        .unwrap();
    assert!(placed.private_ip_address.starts_with("10.0.0."));
    assert_eq!(placed.mac_address.len(), 12);
    assert_eq!(placed.vm_id, a.vm_id);
    assert_eq!(a.imds_endpoint, FakeHost::endpoint(&a.id));

    let got = sb
        .client
        .get_vm(pb::GetVmRequest {
            resource_group: "RG1".into(),
            name: "VM-A".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.vm_id, a.vm_id);
    let list = sb
        .client
        .list_vms(pb::ListVmsRequest {
            resource_group: "rg1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(list.into_inner().vms.len(), 2);

    let missing = sb
        .client
        .get_vm(pb::GetVmRequest {
            resource_group: "rg1".into(),
            name: "nope".into(),
            ..Default::default()
        })
        .await;
    let missing = missing.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(
        missing.message().contains("ResourceNotFound"),
        "{}",
        missing.message()
    );
    let no_group = sb
        .client
        .get_vm(pb::GetVmRequest {
            resource_group: "zz".into(),
            name: "x".into(),
            ..Default::default()
        })
        .await;
    assert!(no_group
        .unwrap_err()
        .message()
        .contains("Resource group 'zz' could not be found."));
}

#[tokio::test]
async fn state_survives_restart_on_the_same_data_dir() {
    let peers = FakePeers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = peers.config(dir.path(), "http://127.0.0.1:9", Clock::manual(T0));
    let token = CancellationToken::new();
    let (sub, vm, uami, ra) = {
        let arm = misim_arm::build(&config).unwrap();
        let sub = arm.bootstrap(&token).await.unwrap().unwrap();
        arm.create_group("", "rg", "westeurope", Default::default())
            .await
            .unwrap();
        let vm = arm
            .create_vm(misim_arm::CreateVm {
                resource: misim_arm::NewResource {
                    resource_group: "rg".into(),
                    name: "vm".into(),
                    ..Default::default()
                },
                ..Default::default()
            })
            .await
            .unwrap();
        let uami = arm
            .create_user_assigned_identity("", "rg", "id1", "", Default::default())
            .await
            .unwrap();
        arm.assign_identity(
            misim_arm::IdentityTarget::vm("", "rg", "vm"),
            true,
            &[uami.id.to_string()],
        )
        .await
        .unwrap();
        let ra = arm
            .create_role_assignment(
                vm.id.as_str(),
                "Reader",
                &uuid::Uuid::new_v4().to_string(),
                "",
            )
            .await
            .unwrap();
        (sub, vm, uami, ra)
    };
    let arm = misim_arm::build(&config).unwrap();
    assert_eq!(
        arm.bootstrap(&token).await.unwrap().unwrap(),
        sub,
        "no second default subscription"
    );
    assert_eq!(*peers.aad.calls.lock().unwrap(), 1);
    let again = arm.get_vm("", "rg", "vm").await.unwrap();
    assert_eq!(again.vm_id, vm.vm_id);
    let view = again.identity;
    assert_eq!(view.kind(), "SystemAssigned, UserAssigned");
    assert_eq!(
        view.principal_id(),
        peers.msrp.identity(vm.id.as_str()).unwrap().principal_id
    );
    assert_eq!(
        arm.get_user_assigned_identity("", "rg", "id1").unwrap(),
        uami
    );
    assert_eq!(
        arm.list_role_assignments(vm.id.as_str(), "").unwrap(),
        vec![ra]
    );
    assert_eq!(
        arm.reconcile_all(false).await.unwrap(),
        0,
        "startup reconcile of everything is a no-op success"
    );
}

#[tokio::test]
async fn unknown_host_is_rejected_and_named_host_is_used() {
    let mut sb = Sandbox::start().await;
    group(&mut sb, "rg").await;
    let named = pb::CreateVmRequest {
        resource_group: "rg".into(),
        name: "a".into(),
        host: "host-2".into(),
        ..Default::default()
    };
    assert_eq!(
        sb.client.create_vm(named).await.unwrap().into_inner().host,
        "host-2"
    );
    let bad = pb::CreateVmRequest {
        resource_group: "rg".into(),
        name: "b".into(),
        host: "host-9".into(),
        ..Default::default()
    };
    assert_eq!(
        sb.client.create_vm(bad).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
}
