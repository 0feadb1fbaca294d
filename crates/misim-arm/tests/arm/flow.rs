//! The control-plane flow over gRPC: bootstrap, groups and VMs, the identity flow (steps 1–3),
//! reconciliation after peer failures, restart, and role assignments (step 4).

use std::sync::atomic::Ordering;
use std::time::Duration;

use misim_core::Clock;
use misim_proto::arm as pb;
use misim_proto::arm::arm_client::ArmClient;
use tokio_util::sync::CancellationToken;

use crate::fakes::{FakeHost, TENANT};
use crate::{FakePeers, Sandbox, T0};

async fn group(sb: &mut Sandbox, name: &str) -> pb::ResourceGroup {
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

async fn vm(sb: &mut Sandbox, rg: &str, name: &str) -> pb::VirtualMachine {
    let req = pb::CreateVmRequest {
        resource_group: rg.into(),
        name: name.into(),
        ..Default::default()
    };
    sb.client.create_vm(req).await.unwrap().into_inner()
}

async fn uami(sb: &mut Sandbox, rg: &str, name: &str) -> pb::UserAssignedIdentity {
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

fn assign(rg: &str, name: &str, system: bool, uamis: &[&str]) -> pb::AssignVmIdentityRequest {
    pb::AssignVmIdentityRequest {
        resource_group: rg.into(),
        name: name.into(),
        system_assigned: system,
        user_assigned_identities: uamis.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn remove(rg: &str, name: &str, system: bool, uamis: &[&str]) -> pb::RemoveVmIdentityRequest {
    pb::RemoveVmIdentityRequest {
        resource_group: rg.into(),
        name: name.into(),
        system_assigned: system,
        user_assigned_identities: uamis.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn lower(ids: &[&str]) -> Vec<String> {
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
async fn enabling_system_assigned_creates_it_in_msrp_and_configures_the_host() {
    let mut sb = Sandbox::start().await;
    group(&mut sb, "rg").await;
    let v = vm(&mut sb, "rg", "vm").await;
    let identity = sb
        .client
        .assign_vm_identity(assign("rg", "vm", true, &[]))
        .await
        .unwrap()
        .into_inner();
    let created = sb.msrp().identity(&v.id).expect("msrp identity");
    assert_eq!(
        sb.msrp().calls(),
        vec![format!("create system {} {TENANT}", v.id)]
    );
    assert_eq!(identity.r#type, "SystemAssigned");
    assert_eq!(identity.principal_id, created.principal_id);
    assert_eq!(identity.tenant_id, TENANT);
    assert!(identity.user_assigned_identities.is_empty());
    assert_eq!(sb.host(&v.host).identities(&v.id), Some(lower(&[&v.id])));
    let sent = sb.host(&v.host).configured.lock().unwrap()[&v.id.to_ascii_lowercase()][0].clone();
    assert_eq!(
        (sent.client_id, sent.principal_id, sent.tenant_id),
        (created.client_id, created.principal_id, TENANT.to_string())
    );

    let shown = sb
        .client
        .get_vm_identity(pb::GetVmIdentityRequest {
            resource_group: "rg".into(),
            name: "vm".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown, identity);
}

#[tokio::test]
async fn user_assigned_identities_are_created_assigned_and_removed() {
    let mut sb = Sandbox::start().await;
    group(&mut sb, "rg").await;
    let v = vm(&mut sb, "rg", "vm").await;
    let u = uami(&mut sb, "rg", "id1").await;
    assert_eq!(u.r#type, "Microsoft.ManagedIdentity/userAssignedIdentities");
    let m = sb.msrp().identity(&u.id).unwrap();
    assert_eq!(
        (
            u.client_id.as_str(),
            u.principal_id.as_str(),
            u.tenant_id.as_str()
        ),
        (m.client_id.as_str(), m.principal_id.as_str(), TENANT)
    );
    assert_eq!(
        uami(&mut sb, "rg", "id1").await,
        u,
        "create again returns it unchanged"
    );

    let both = sb
        .client
        .assign_vm_identity(assign("rg", "vm", true, &[&u.id]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(both.r#type, "SystemAssigned, UserAssigned");
    let entry = &both.user_assigned_identities[&u.id];
    assert_eq!(
        (entry.client_id.as_str(), entry.principal_id.as_str()),
        (u.client_id.as_str(), u.principal_id.as_str())
    );
    assert_eq!(
        sb.host(&v.host).identities(&v.id),
        Some(lower(&[&v.id, &u.id]))
    );

    let only_system = sb
        .client
        .remove_vm_identity(remove("rg", "vm", false, &[&u.id]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_system.r#type, "SystemAssigned");
    assert_eq!(sb.host(&v.host).identities(&v.id), Some(lower(&[&v.id])));

    let none = sb
        .client
        .remove_vm_identity(remove("rg", "vm", true, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none.r#type, "None");
    assert_eq!(none.principal_id, "");
    assert_eq!(sb.host(&v.host).identities(&v.id), Some(vec![]));
    assert!(
        sb.msrp().identity(&v.id).is_none(),
        "disabled system identity deleted in msrp"
    );
    assert!(sb.msrp().identity(&u.id).is_some(), "uami untouched");

    let missing = format!("/subscriptions/{}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ghost", v.subscription_id);
    let err = sb
        .client
        .assign_vm_identity(assign("rg", "vm", false, &[&missing]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().contains("userAssignedIdentities/ghost"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn deleting_a_vm_deletes_only_its_system_identity_and_deleted_uamis_dangle() {
    let mut sb = Sandbox::start().await;
    group(&mut sb, "rg").await;
    let v = vm(&mut sb, "rg", "vm").await;
    let v2 = vm(&mut sb, "rg", "vm2").await;
    let u = uami(&mut sb, "rg", "id1").await;
    sb.client
        .assign_vm_identity(assign("rg", "vm", true, &[&u.id]))
        .await
        .unwrap();
    sb.client
        .assign_vm_identity(assign("rg", "vm2", false, &[&u.id]))
        .await
        .unwrap();

    let del = pb::DeleteVmRequest {
        resource_group: "rg".into(),
        name: "vm".into(),
        ..Default::default()
    };
    sb.client.delete_vm(del.clone()).await.unwrap();
    assert!(sb.msrp().calls().contains(&format!("delete {}", v.id)));
    assert!(!sb
        .msrp()
        .calls()
        .iter()
        .any(|c| c == &format!("delete {}", u.id)));
    assert!(sb.msrp().identity(&u.id).is_some());
    assert_eq!(
        sb.host(&v.host).removed.lock().unwrap().clone(),
        vec![v.id.clone()]
    );
    let gone = sb
        .client
        .get_vm(pb::GetVmRequest {
            resource_group: "rg".into(),
            name: "vm".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(gone.unwrap_err().code(), tonic::Code::NotFound);
    sb.client
        .delete_vm(del)
        .await
        .expect("deleting an absent vm succeeds");

    let del_u = pb::DeleteUserAssignedIdentityRequest {
        resource_group: "rg".into(),
        name: "id1".into(),
        ..Default::default()
    };
    sb.client
        .delete_user_assigned_identity(del_u)
        .await
        .unwrap();
    assert!(sb.msrp().identity(&u.id).is_none());
    let ident = sb
        .client
        .get_vm_identity(pb::GetVmIdentityRequest {
            resource_group: "rg".into(),
            name: "vm2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ident.r#type, "UserAssigned");
    assert_eq!(
        ident.user_assigned_identities[&u.id].client_id, u.client_id,
        "dangling entry keeps the old ids"
    );
    sb.arm
        .reconcile_vm(&misim_core::ResourceId::parse(&v2.id).unwrap())
        .await
        .unwrap();
    assert_eq!(
        sb.host(&v2.host).identities(&v2.id),
        Some(vec![]),
        "a deleted uami is no longer served"
    );
}

#[tokio::test]
async fn reconcile_converges_after_msrp_and_host_recover() {
    let mut sb = Sandbox::start().await;
    group(&mut sb, "rg").await;
    let v = vm(&mut sb, "rg", "vm").await;
    sb.msrp().fail.store(true, Ordering::SeqCst);
    let err = sb
        .client
        .assign_vm_identity(assign("rg", "vm", true, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message().contains("will be retried"),
        "{}",
        err.message()
    );
    let recorded = sb.arm.get_vm_identity("", "rg", "vm").unwrap();
    assert_eq!(
        (recorded.kind.as_str(), recorded.principal_id.as_str()),
        ("SystemAssigned", "")
    );
    assert_eq!(
        sb.host(&v.host).identities(&v.id),
        Some(vec![]),
        "host not configured with a half-made identity"
    );
    assert_eq!(
        sb.arm.reconcile_all(true).await.unwrap(),
        1,
        "still failing while msrp is down"
    );

    sb.msrp().fail.store(false, Ordering::SeqCst);
    sb.host(&v.host).fail.store(true, Ordering::SeqCst);
    assert_eq!(
        sb.arm.reconcile_all(true).await.unwrap(),
        1,
        "msrp recovered, host still down"
    );
    let created = sb.msrp().identity(&v.id).expect("msrp created it");
    assert_eq!(
        sb.arm.get_vm_identity("", "rg", "vm").unwrap().principal_id,
        created.principal_id
    );

    sb.host(&v.host).fail.store(false, Ordering::SeqCst);
    assert_eq!(sb.arm.reconcile_all(true).await.unwrap(), 0);
    assert_eq!(sb.host(&v.host).identities(&v.id), Some(lower(&[&v.id])));
    let creates = sb
        .msrp()
        .calls()
        .iter()
        .filter(|c| c.starts_with("create system"))
        .count();
    assert_eq!(
        creates, 1,
        "the stored identity is reused, not created again"
    );
    let got = sb
        .client
        .get_vm(pb::GetVmRequest {
            resource_group: "rg".into(),
            name: "vm".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(got.unwrap().into_inner().provisioning_state, "Succeeded");
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
            .create_vm(misim_arm::vms::CreateVm {
                resource_group: "rg".into(),
                name: "vm".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let uami = arm
            .create_user_assigned_identity("", "rg", "id1", "", Default::default())
            .await
            .unwrap();
        arm.assign_vm_identity("", "rg", "vm", true, &[uami.id.to_string()])
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
    let view = again.identity_view();
    assert_eq!(view.kind, "SystemAssigned, UserAssigned");
    assert_eq!(
        view.principal_id,
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
async fn role_assignments_are_created_listed_with_inheritance_and_deleted() {
    let mut sb = Sandbox::start().await;
    let g = group(&mut sb, "rg").await;
    let v = vm(&mut sb, "rg", "vm").await;
    let principal = uuid::Uuid::new_v4().to_string();
    let create = |scope: &str, role: &str| pb::CreateRoleAssignmentRequest {
        scope: scope.into(),
        role: role.into(),
        principal_id: principal.clone(),
        principal_type: String::new(),
    };
    let ra = sb
        .client
        .create_role_assignment(create(&g.id, "Reader"))
        .await
        .unwrap()
        .into_inner();
    assert!(ra.id.starts_with(&format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/",
        g.id
    )));
    assert_eq!(ra.role_definition_name, "Reader");
    assert!(ra
        .role_definition_id
        .ends_with("/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"));
    assert_eq!(ra.principal_type, "ServicePrincipal");
    let same = sb
        .client
        .create_role_assignment(create(&g.id, "acdd72a7-3385-48ef-bd42-f606fba81ae7"))
        .await
        .unwrap();
    assert_eq!(
        same.into_inner().id,
        ra.id,
        "same principal, role and scope returns the existing assignment"
    );

    let list = |scope: &str, p: &str| pb::ListRoleAssignmentsRequest {
        scope: scope.into(),
        principal_id: p.into(),
    };
    let at_vm = sb
        .client
        .list_role_assignments(list(&v.id, ""))
        .await
        .unwrap()
        .into_inner()
        .role_assignments;
    assert_eq!(at_vm, vec![ra.clone()], "inherited from the group");
    let at_sub = sb
        .client
        .list_role_assignments(list("", ""))
        .await
        .unwrap()
        .into_inner()
        .role_assignments;
    assert!(
        at_sub.is_empty(),
        "a group assignment does not apply at the subscription"
    );
    let other = sb
        .client
        .list_role_assignments(list(&v.id, &uuid::Uuid::new_v4().to_string()))
        .await
        .unwrap();
    assert!(other.into_inner().role_assignments.is_empty());

    let vm_id = misim_core::ResourceId::parse(&v.id).unwrap();
    assert!(sb
        .arm
        .authorize(&principal, "Microsoft.Compute/virtualMachines/read", &vm_id)
        .unwrap());
    assert!(!sb
        .arm
        .authorize(
            &principal,
            "Microsoft.Compute/virtualMachines/write",
            &vm_id
        )
        .unwrap());
    let sub_id =
        misim_core::ResourceId::parse(&format!("/subscriptions/{}", v.subscription_id)).unwrap();
    assert!(!sb
        .arm
        .authorize(
            &principal,
            "Microsoft.Resources/subscriptions/read",
            &sub_id
        )
        .unwrap());

    let bad_role = sb
        .client
        .create_role_assignment(create(&g.id, "Janitor"))
        .await
        .unwrap_err();
    assert_eq!(bad_role.code(), tonic::Code::NotFound);
    let missing_scope = format!("/subscriptions/{}/resourceGroups/nope", v.subscription_id);
    let bad_scope = sb
        .client
        .create_role_assignment(create(&missing_scope, "Reader"))
        .await
        .unwrap_err();
    assert!(
        bad_scope.message().contains("ResourceGroupNotFound"),
        "{}",
        bad_scope.message()
    );

    sb.client
        .delete_role_assignment(pb::DeleteRoleAssignmentRequest { id: ra.id.clone() })
        .await
        .unwrap();
    let after = sb
        .client
        .list_role_assignments(list(&v.id, ""))
        .await
        .unwrap()
        .into_inner()
        .role_assignments;
    assert!(after.is_empty());
    assert!(!sb
        .arm
        .authorize(&principal, "Microsoft.Compute/virtualMachines/read", &vm_id)
        .unwrap());

    let defs = sb
        .client
        .list_role_definitions(pb::ListRoleDefinitionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = defs
        .role_definitions
        .iter()
        .map(|d| d.role_name.as_str())
        .collect();
    assert_eq!(names, vec!["Owner", "Contributor", "Reader"]);
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
