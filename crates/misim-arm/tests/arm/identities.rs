//! The identity flow over gRPC (steps 1–3): system- and user-assigned identities, VM deletion,
//! dangling entries, and reconciliation after MSRP or a host failed.

use std::sync::atomic::Ordering;

use misim_proto::arm as pb;

use crate::fakes::TENANT;
use crate::flow::{assign, group, lower, remove, uami, vm};
use crate::Sandbox;

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
        .reconcile_resource(&misim_core::ResourceId::parse(&v2.id).unwrap())
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
    let recorded = sb
        .arm
        .get_identity(misim_arm::IdentityTarget::vm("", "rg", "vm"))
        .unwrap();
    assert_eq!(
        (recorded.kind(), recorded.principal_id()),
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
        sb.arm
            .get_identity(misim_arm::IdentityTarget::vm("", "rg", "vm"))
            .unwrap()
            .principal_id(),
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
async fn deleting_a_group_deletes_its_vms_identities_and_role_assignments() {
    let mut sb = Sandbox::start().await;
    group(&mut sb, "rg").await;
    let v = vm(&mut sb, "rg", "vm").await;
    let u = uami(&mut sb, "rg", "id1").await;
    sb.client
        .assign_vm_identity(assign("rg", "vm", true, &[&u.id]))
        .await
        .unwrap();
    let principal = uuid::Uuid::new_v4().to_string();
    sb.arm
        .create_role_assignment(&v.id, "Reader", &principal, "")
        .await
        .unwrap();
    assert_eq!(
        sb.arm
            .list_role_assignments(&v.id, &principal)
            .unwrap()
            .len(),
        1
    );

    let del = pb::DeleteResourceGroupRequest {
        name: "rg".into(),
        ..Default::default()
    };
    sb.client.delete_resource_group(del).await.unwrap();
    assert!(
        sb.msrp().identity(&v.id).is_none(),
        "system identity deleted"
    );
    assert!(
        sb.msrp().identity(&u.id).is_none(),
        "uami in the group deleted"
    );
    assert_eq!(
        sb.host(&v.host).removed.lock().unwrap().clone(),
        vec![v.id.clone()]
    );
    assert!(sb
        .arm
        .list_role_assignments(&v.id, &principal)
        .unwrap()
        .is_empty());
    let get = pb::GetResourceGroupRequest {
        name: "rg".into(),
        ..Default::default()
    };
    assert_eq!(
        sb.client.get_resource_group(get).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
}
