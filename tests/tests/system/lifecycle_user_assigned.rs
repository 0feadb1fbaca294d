//! User-assigned identity lifecycle end to end: its own resource, shared by VMs on two hosts, kept
//! when a VM is deleted; deleting it while assigned leaves a dangling entry on the VM, IMDS issues
//! no new token, and a token issued before still verifies. PATCH semantics over REST ({} adds, null
//! removes, the no-space type spelling, the per-request limit).

use crate::lifecycle_common::*;
use misim_proto::arm as pb;
use misim_tests::Sandbox;
use serde_json::{json, Value};

async fn assign(sb: &Sandbox, rg: &str, vm: &str, uami: &str) -> pb::VmIdentity {
    sb.arm()
        .await
        .assign_vm_identity(pb::AssignVmIdentityRequest {
            resource_group: rg.into(),
            name: vm.into(),
            user_assigned_identities: vec![uami.into()],
            ..Default::default()
        })
        .await
        .expect("assign")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_identity_survives_vm_delete_and_dangles_after_its_own_delete() {
    let sb = Sandbox::start().await;
    group(&sb, "rg1").await;
    let id = uami(&sb, "rg1", "shared").await;
    let vm1 = vm(&sb, "rg1", "vm1", "host-1").await;
    let vm2 = vm(&sb, "rg1", "vm2", "host-2").await;
    let (status, body) = imds(&sb, &vm1.imds_endpoint, &[]).await;
    assert_identity_not_found(status, &body);
    assign(&sb, "rg1", "vm1", &id.id).await;
    let identity = assign(&sb, "rg1", "vm2", &id.id).await;
    assert_eq!(identity.r#type, "UserAssigned");
    assert_eq!(
        identity.principal_id, "",
        "no system identity: principalId empty"
    );
    for v in [&vm1, &vm2] {
        let (status, body) = imds(&sb, &v.imds_endpoint, &[("client_id", &id.client_id)]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["client_id"], id.client_id.as_str());
    }

    // Deleting a VM leaves the identity intact; the other VM keeps using it.
    sb.arm()
        .await
        .delete_vm(pb::DeleteVmRequest {
            resource_group: "rg1".into(),
            name: "vm1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let still = sb
        .arm()
        .await
        .get_user_assigned_identity(pb::GetUserAssignedIdentityRequest {
            resource_group: "rg1".into(),
            name: "shared".into(),
            ..Default::default()
        })
        .await
        .expect("identity survives VM delete")
        .into_inner();
    assert_eq!(still.client_id, id.client_id);
    let (status, old) = imds(&sb, &vm2.imds_endpoint, &[("client_id", &id.client_id)]).await;
    assert_eq!(status, 200, "{old}");
    let old_token = old["access_token"].as_str().unwrap().to_string();

    // Deleting the identity while assigned: dangling entry, no new tokens, old token still verifies.
    sb.arm()
        .await
        .delete_user_assigned_identity(pb::DeleteUserAssignedIdentityRequest {
            resource_group: "rg1".into(),
            name: "shared".into(),
            ..Default::default()
        })
        .await
        .expect("delete identity");
    let vm2_now = sb
        .arm()
        .await
        .get_vm_identity(pb::GetVmIdentityRequest {
            resource_group: "rg1".into(),
            name: "vm2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        vm2_now.r#type, "UserAssigned",
        "dangling entry kept, as Azure"
    );
    let entry = vm2_now
        .user_assigned_identities
        .values()
        .next()
        .expect("entry");
    assert_eq!(entry.client_id, id.client_id, "old ids kept");
    let (status, body) = imds(&sb, &vm2.imds_endpoint, &[("client_id", &id.client_id)]).await;
    assert_identity_not_found(status, &body);
    let claims = sb.verify(&old_token, MGMT).await;
    assert_eq!(
        claims["appid"],
        id.client_id.as_str(),
        "token issued before stays valid"
    );
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_patch_adds_with_empty_object_and_removes_with_null() {
    let sb = Sandbox::start().await;
    let owner = owner(&sb).await;
    group(&sb, "app").await;
    let a = uami(&sb, "app", "id-a").await;
    let b = uami(&sb, "app", "id-b").await;
    let v = vm(&sb, "app", "web", "host-2").await;
    let path = vm_id(&sb, "app", "web");
    // Keys in lower-case `resourcegroups`, as the docs' samples send them.
    let a_key = a.id.replace("/resourceGroups/", "/resourcegroups/");

    let (status, body) = rest(
        &sb,
        "PATCH",
        &path,
        &owner,
        Some(json!({"identity":{
        "type":"SystemAssigned,UserAssigned",
        "userAssignedIdentities":{a_key.clone():{}, b.id.clone():{}}}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["identity"]["type"], "SystemAssigned, UserAssigned");
    let uas = body["identity"]["userAssignedIdentities"]
        .as_object()
        .unwrap();
    assert_eq!(uas.len(), 2);
    for id in [&a, &b] {
        let (status, tok) = imds(&sb, &v.imds_endpoint, &[("client_id", &id.client_id)]).await;
        assert_eq!(status, 200, "{tok}");
    }

    // null removes one (compared case-insensitively); the system identity stays.
    let (status, body) = rest(
        &sb,
        "PATCH",
        &path,
        &owner,
        Some(json!({"identity":{
        "type":"SystemAssigned, UserAssigned",
        "userAssignedIdentities":{a.id.to_uppercase(): Value::Null}}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let uas = body["identity"]["userAssignedIdentities"]
        .as_object()
        .unwrap();
    assert_eq!(uas.keys().collect::<Vec<_>>(), vec![&b.id]);
    let (status, tok) = imds(&sb, &v.imds_endpoint, &[("client_id", &a.client_id)]).await;
    assert_identity_not_found(status, &tok);
    let (status, _) = imds(&sb, &v.imds_endpoint, &[("client_id", &b.client_id)]).await;
    assert_eq!(status, 200);

    // type SystemAssigned drops all user-assigned identities.
    let (status, body) = rest(
        &sb,
        "PATCH",
        &path,
        &owner,
        Some(json!({"identity":{"type":"SystemAssigned"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["identity"].get("userAssignedIdentities").is_none(),
        "{body}"
    );
    let (status, _) = imds(&sb, &v.imds_endpoint, &[("client_id", &b.client_id)]).await;
    assert_eq!(status, 400);

    // More than 150 new identities in one request: Azure's BadRequest.
    let many: serde_json::Map<String, Value> = (0..151)
        .map(|i| {
            (
                format!(
                    "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u{i}",
                    rg_id(&sb, "app")
                ),
                json!({}),
            )
        })
        .collect();
    let (status, err) = rest(
        &sb,
        "PATCH",
        &path,
        &owner,
        Some(json!({"identity":{"type":"UserAssigned","userAssignedIdentities":many}})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "BadRequest");
    assert_eq!(
        err["error"]["message"],
        "User Assigned Identities Number '151' Assign exceed limit '150' in one request."
    );

    // Assigning an identity that does not exist is a 404.
    let (status, err) = rest(&sb, "PATCH", &path, &owner, Some(json!({"identity":{"type":"UserAssigned","userAssignedIdentities":{
        format!("{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/nope", rg_id(&sb, "app")):{}}}}))).await;
    assert_eq!(status, 404, "{err}");
    sb.stop().await;
}
