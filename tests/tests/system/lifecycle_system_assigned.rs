//! System-assigned identity lifecycle end to end: created with the enable request, deleted (service
//! principal and certificate in MSRP) with the disable request or with its VM; IMDS serves it only in
//! between. Driven over gRPC and over ARM's REST surface with an Owner's token.

use crate::lifecycle_common::*;
use misim_proto::arm as pb;
use misim_proto::msrp::{msrp_client::MsrpClient, GetIdentityRequest};
use misim_tests::Sandbox;
use serde_json::json;

async fn msrp_has(sb: &Sandbox, resource_id: &str) -> bool {
    let mut msrp = MsrpClient::new(sb.admin(&sb.endpoints.msrp_grpc).await);
    match msrp
        .get_identity(GetIdentityRequest {
            resource_id: resource_id.into(),
        })
        .await
    {
        Ok(_) => true,
        Err(s) if s.code() == tonic::Code::NotFound => false,
        Err(s) => panic!("msrp: {s}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_enable_disable_reenable_and_vm_delete() {
    let sb = Sandbox::start().await;
    group(&sb, "rg1").await;
    let v = vm(&sb, "rg1", "vm1", "host-1").await;
    assert_identity_not_found_pair(imds(&sb, &v.imds_endpoint, &[]).await);

    let first = enable_system(&sb, "rg1", "vm1").await;
    assert_eq!(first.r#type, "SystemAssigned");
    assert!(msrp_has(&sb, &v.id).await, "MSRP created SP + certificate");
    let (status, body) = imds(&sb, &v.imds_endpoint, &[]).await;
    assert_eq!(status, 200, "{body}");
    let claims = sb
        .verify(body["access_token"].as_str().unwrap(), MGMT)
        .await;
    assert_eq!(claims["oid"], first.principal_id.as_str());

    // Disable: IMDS stops serving it, MSRP deleted it.
    let removed = sb
        .arm()
        .await
        .remove_vm_identity(pb::RemoveVmIdentityRequest {
            resource_group: "rg1".into(),
            name: "vm1".into(),
            system_assigned: true,
            ..Default::default()
        })
        .await
        .expect("disable")
        .into_inner();
    assert_eq!(removed.r#type, "None");
    assert_eq!(removed.principal_id, "");
    assert!(!msrp_has(&sb, &v.id).await, "SP + certificate deleted");
    assert_identity_not_found_pair(imds(&sb, &v.imds_endpoint, &[]).await);

    // Re-enable: a new identity (new principal).
    let second = enable_system(&sb, "rg1", "vm1").await;
    assert_ne!(second.principal_id, first.principal_id);
    let (status, _) = imds(&sb, &v.imds_endpoint, &[]).await;
    assert_eq!(status, 200);

    // Deleting the VM deletes its identity.
    sb.arm()
        .await
        .delete_vm(pb::DeleteVmRequest {
            resource_group: "rg1".into(),
            name: "vm1".into(),
            ..Default::default()
        })
        .await
        .expect("delete vm");
    assert!(!msrp_has(&sb, &v.id).await, "identity deleted with its VM");
    sb.stop().await;
}

fn assert_identity_not_found_pair((status, body): (u16, serde_json::Value)) {
    assert_identity_not_found(status, &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_put_patch_delete_with_an_owner_token() {
    let sb = Sandbox::start().await;
    let owner = owner(&sb).await;
    let (status, _) = rest(
        &sb,
        "PUT",
        &rg_id(&sb, "app"),
        &owner,
        Some(json!({"location":"westeurope"})),
    )
    .await;
    assert_eq!(status, 201);
    let path = vm_id(&sb, "app", "web1");

    // PUT a new VM with a system-assigned identity: 201 with the identity block.
    let (status, body) = rest(
        &sb,
        "PUT",
        &path,
        &owner,
        Some(json!({"location":"westeurope","identity":{"type":"SystemAssigned"}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["identity"]["type"], "SystemAssigned");
    let principal = body["identity"]["principalId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        body["identity"]["tenantId"],
        sb.endpoints.tenant_id.as_str()
    );
    let imds_endpoint = sb
        .arm()
        .await
        .get_vm(pb::GetVmRequest {
            resource_group: "app".into(),
            name: "web1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .imds_endpoint;
    let (status, tok) = imds(&sb, &imds_endpoint, &[]).await;
    assert_eq!(status, 200, "{tok}");
    assert_eq!(
        sb.verify(tok["access_token"].as_str().unwrap(), MGMT).await["oid"],
        principal.as_str()
    );

    // Contradictory requests are 400 InvalidParameter and change nothing.
    let uami_id = format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x",
        rg_id(&sb, "app")
    );
    for bad in [
        json!({"identity":{"type":"SystemAssigned","userAssignedIdentities":{uami_id.clone():{}}}}),
        json!({"identity":{"type":"SystemAssigned","identityIds":[uami_id.clone()]}}),
        json!({"identity":{"type":"Everything"}}),
        json!({"identity":{"type":"UserAssigned"}}),
    ] {
        let (status, err) = rest(&sb, "PATCH", &path, &owner, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad} -> {err}");
        assert_eq!(err["error"]["code"], "InvalidParameter", "{err}");
    }
    let (_, err) = rest(
        &sb,
        "PATCH",
        &path,
        &owner,
        Some(json!({"identity":{"type":"SystemAssigned","identityIds":[uami_id]}})),
    )
    .await;
    assert_eq!(
        err["error"]["message"],
        "ResourceIdentity identityIds should not be provided if the type is \"SystemAssigned\"."
    );
    let (status, _) = imds(&sb, &imds_endpoint, &[]).await;
    assert_eq!(status, 200, "still enabled after rejected requests");

    // PATCH type None: disabled, the identity block disappears, IMDS answers Identity not found.
    let (status, body) = rest(
        &sb,
        "PATCH",
        &path,
        &owner,
        Some(json!({"identity":{"type":"None"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("identity").is_none(), "{body}");
    assert_identity_not_found_pair(imds(&sb, &imds_endpoint, &[]).await);

    // PUT again is idempotent (200), and re-enables.
    let put = json!({"location":"westeurope","identity":{"type":"SystemAssigned"}});
    let (status, body) = rest(&sb, "PUT", &path, &owner, Some(put.clone())).await;
    assert_eq!(status, 200, "{body}");
    let (status, again) = rest(&sb, "PUT", &path, &owner, Some(put)).await;
    assert_eq!(status, 200);
    assert_eq!(
        again["identity"]["principalId"],
        body["identity"]["principalId"]
    );

    // DELETE: 200, then 404 on GET, 204 on a second DELETE; IMDS endpoint is gone with the VM.
    let (status, _) = rest(&sb, "DELETE", &path, &owner, None).await;
    assert_eq!(status, 200);
    let (status, err) = rest(&sb, "GET", &path, &owner, None).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "ResourceNotFound");
    let (status, _) = rest(&sb, "DELETE", &path, &owner, None).await;
    assert_eq!(status, 204);
    sb.stop().await;
}
