//! Scale-set lifecycle end to end: instances spread over hosts, each with its own IMDS; the scale
//! set's one system-assigned identity (resource id = the scale set) and its user-assigned identities
//! serve on every instance; scale out configures new instances, scale in removes instances; delete
//! removes the identity. Over gRPC and REST.

use crate::lifecycle_common::*;
use misim_proto::arm as pb;
use misim_tests::Sandbox;
use serde_json::json;

async fn instances(sb: &Sandbox, rg: &str, name: &str) -> Vec<pb::VirtualMachine> {
    sb.arm()
        .await
        .list_vmss_instances(pb::ListVmssInstancesRequest {
            resource_group: rg.into(),
            name: name.into(),
            ..Default::default()
        })
        .await
        .expect("list instances")
        .into_inner()
        .instances
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_scale_set_identity_serves_every_instance_and_follows_scaling() {
    let sb = Sandbox::start().await;
    group(&sb, "rg1").await;
    let id = uami(&sb, "rg1", "pool-id").await;
    let mut arm = sb.arm().await;
    let ss = arm
        .create_vmss(pb::CreateVmssRequest {
            resource_group: "rg1".into(),
            name: "pool".into(),
            capacity: 2,
            ..Default::default()
        })
        .await
        .expect("create vmss")
        .into_inner();
    let first = instances(&sb, "rg1", "pool").await;
    assert_eq!(first.len(), 2);
    assert_ne!(first[0].host, first[1].host, "spread over hosts");
    assert_eq!(first[0].vm_scale_set, "pool");
    assert!(
        first[0]
            .id
            .ends_with("/virtualMachineScaleSets/pool/virtualMachines/0"),
        "{}",
        first[0].id
    );
    let (status, body) = imds(&sb, &first[0].imds_endpoint, &[]).await;
    assert_identity_not_found(status, &body);

    let identity = arm
        .assign_vmss_identity(pb::AssignVmssIdentityRequest {
            resource_group: "rg1".into(),
            name: "pool".into(),
            system_assigned: true,
            user_assigned_identities: vec![id.id.clone()],
            ..Default::default()
        })
        .await
        .expect("assign")
        .into_inner();
    assert_eq!(identity.r#type, "SystemAssigned, UserAssigned");
    for inst in &first {
        let (status, body) = imds(&sb, &inst.imds_endpoint, &[("msi_res_id", &ss.id)]).await;
        assert_eq!(status, 200, "{body}");
        let claims = sb
            .verify(body["access_token"].as_str().unwrap(), MGMT)
            .await;
        assert_eq!(
            claims["oid"],
            identity.principal_id.as_str(),
            "one shared identity"
        );
        assert!(claims["xms_mirid"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(&ss.id));
        let (status, _) = imds(&sb, &inst.imds_endpoint, &[("client_id", &id.client_id)]).await;
        assert_eq!(status, 200);
    }

    // Scale out: the new instance is configured; scale in: removed instances stop answering.
    arm.scale_vmss(pb::ScaleVmssRequest {
        resource_group: "rg1".into(),
        name: "pool".into(),
        capacity: 3,
        ..Default::default()
    })
    .await
    .expect("scale out");
    let grown = instances(&sb, "rg1", "pool").await;
    assert_eq!(grown.len(), 3);
    let (status, body) = imds(
        &sb,
        &grown[2].imds_endpoint,
        &[("client_id", &id.client_id)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    arm.scale_vmss(pb::ScaleVmssRequest {
        resource_group: "rg1".into(),
        name: "pool".into(),
        capacity: 1,
        ..Default::default()
    })
    .await
    .expect("scale in");
    let left = instances(&sb, "rg1", "pool").await;
    assert_eq!(
        left.iter()
            .map(|i| i.instance_id.as_str())
            .collect::<Vec<_>>(),
        ["0"]
    );
    let gone = sb
        .http
        .get(format!(
            "{}/metadata/identity/oauth2/token",
            grown[2].imds_endpoint
        ))
        .query(&[("api-version", "2018-02-01"), ("resource", MGMT)])
        .header("Metadata", "true")
        .send()
        .await;
    assert!(
        gone.is_err() || gone.unwrap().status() != 200,
        "removed instance no longer serves tokens"
    );

    // Remove the system identity: instances keep the user-assigned one only.
    arm.remove_vmss_identity(pb::RemoveVmssIdentityRequest {
        resource_group: "rg1".into(),
        name: "pool".into(),
        system_assigned: true,
        ..Default::default()
    })
    .await
    .expect("remove system");
    let (status, body) = imds(&sb, &left[0].imds_endpoint, &[("msi_res_id", &ss.id)]).await;
    assert_identity_not_found(status, &body);
    let (status, _) = imds(&sb, &left[0].imds_endpoint, &[]).await;
    assert_eq!(
        status, 200,
        "the only identity left is the user-assigned one"
    );

    arm.delete_vmss(pb::DeleteVmssRequest {
        resource_group: "rg1".into(),
        name: "pool".into(),
        ..Default::default()
    })
    .await
    .expect("delete");
    let err = arm
        .get_vmss(pb::GetVmssRequest {
            resource_group: "rg1".into(),
            name: "pool".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_put_scale_set_with_identity_and_list_instances() {
    let sb = Sandbox::start().await;
    let owner = owner(&sb).await;
    group(&sb, "app").await;
    let path = format!(
        "{}/providers/Microsoft.Compute/virtualMachineScaleSets/ss",
        rg_id(&sb, "app")
    );
    let (status, body) = rest(
        &sb,
        "PUT",
        &path,
        &owner,
        Some(json!({
        "location":"westeurope","sku":{"name":"Standard_D2s_v3","capacity":2},
        "identity":{"type":"SystemAssigned"}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["sku"]["capacity"], 2);
    let principal = body["identity"]["principalId"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, list) = rest(&sb, "GET", &format!("{path}/virtualMachines"), &owner, None).await;
    assert_eq!(status, 200, "{list}");
    let items = list["value"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["instanceId"], "0");
    assert_eq!(items[0]["identity"]["principalId"], principal.as_str());
    // PATCH sku.capacity scales; the new instance serves the identity.
    let (status, body) = rest(
        &sb,
        "PATCH",
        &path,
        &owner,
        Some(json!({"sku":{"capacity":3}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sku"]["capacity"], 3);
    let inst = instances(&sb, "app", "ss").await;
    let (status, tok) = imds(&sb, &inst[2].imds_endpoint, &[]).await;
    assert_eq!(status, 200, "{tok}");
    assert_eq!(
        sb.verify(tok["access_token"].as_str().unwrap(), MGMT).await["oid"],
        principal.as_str()
    );
    let (status, _) = rest(&sb, "DELETE", &path, &owner, None).await;
    assert_eq!(status, 200);
    let (status, _) = rest(&sb, "GET", &path, &owner, None).await;
    assert_eq!(status, 404);
    sb.stop().await;
}
