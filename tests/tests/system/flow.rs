//! The seven-step flow end to end, over the wire: gRPC to ARM, HTTP to IMDS, token verified against
//! Azure AD's published JWKS, then used against ARM's REST surface.

use misim_proto::arm as pb;
use misim_tests::Sandbox;

const MGMT: &str = "https://management.azure.com/";
const READER: &str = "Reader";

async fn group_and_vm(sb: &Sandbox, rg: &str, vm: &str, host: &str) -> pb::VirtualMachine {
    let mut arm = sb.arm().await;
    arm.create_resource_group(pb::CreateResourceGroupRequest {
        name: rg.into(),
        location: "westeurope".into(),
        ..Default::default()
    })
    .await
    .expect("create group");
    arm.create_vm(pb::CreateVmRequest {
        resource_group: rg.into(),
        name: vm.into(),
        host: host.into(),
        ..Default::default()
    })
    .await
    .expect("create vm")
    .into_inner()
}

async fn enable_system(sb: &Sandbox, rg: &str, vm: &str) -> pb::VmIdentity {
    sb.arm()
        .await
        .assign_vm_identity(pb::AssignVmIdentityRequest {
            resource_group: rg.into(),
            name: vm.into(),
            system_assigned: true,
            ..Default::default()
        })
        .await
        .expect("enable system-assigned identity")
        .into_inner()
}

async fn grant(sb: &Sandbox, principal: &str, role: &str, scope: &str) {
    sb.arm()
        .await
        .create_role_assignment(pb::CreateRoleAssignmentRequest {
            scope: scope.into(),
            role: role.into(),
            principal_id: principal.into(),
            principal_type: String::new(),
        })
        .await
        .expect("create role assignment");
}

fn vm_path(vm: &pb::VirtualMachine) -> String {
    format!("{}?api-version=2024-07-01", vm.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_assigned_flow_gives_a_verifiable_token_that_arm_accepts_only_with_a_role() {
    let sb = Sandbox::start().await;
    let vm = group_and_vm(&sb, "rg1", "vm1", "host-1").await;
    assert!(
        vm.imds_endpoint.starts_with("http://127.0.0.1:"),
        "loopback IMDS endpoint: {}",
        vm.imds_endpoint
    );

    // Steps 1-3: enable; MSRP creates the principal; ARM configures the host.
    let identity = enable_system(&sb, "rg1", "vm1").await;
    assert_eq!(identity.r#type, "SystemAssigned");
    assert_eq!(identity.tenant_id, sb.endpoints.tenant_id);
    assert!(!identity.principal_id.is_empty());

    // Steps 5-6: the workload asks its IMDS.
    let (status, body) = sb.imds_token(&vm.imds_endpoint, MGMT, &[]).await;
    assert_eq!(status, 200, "{body}");
    for field in [
        "access_token",
        "client_id",
        "expires_in",
        "expires_on",
        "ext_expires_in",
        "not_before",
        "resource",
        "token_type",
    ] {
        assert!(
            body[field].is_string(),
            "{field} must be a JSON string: {body}"
        );
    }
    assert_eq!(body["resource"], MGMT);
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().unwrap();
    let claims = sb.verify(token, MGMT).await;
    assert_eq!(claims["oid"], identity.principal_id.as_str());
    assert_eq!(claims["sub"], identity.principal_id.as_str());
    assert_eq!(claims["appid"], body["client_id"]);
    assert_eq!(claims["tid"], sb.endpoints.tenant_id.as_str());
    assert!(claims["xms_mirid"]
        .as_str()
        .unwrap()
        .eq_ignore_ascii_case(&vm.id));
    assert_eq!(
        claims["exp"].as_i64().unwrap().to_string(),
        body["expires_on"].as_str().unwrap()
    );

    // Step 7 without a role: 403 in ARM's shape.
    let (status, err) = sb.arm_rest_get(&vm_path(&vm), Some(token)).await;
    assert_eq!(status, 403, "{err}");
    assert_eq!(err["error"]["code"], "AuthorizationFailed");
    // No token at all: 401.
    let (status, _) = sb.arm_rest_get(&vm_path(&vm), None).await;
    assert_eq!(status, 401);

    // Step 4: Reader on the resource group, then step 7 succeeds with the VM JSON.
    let rg_scope = format!(
        "/subscriptions/{}/resourceGroups/rg1",
        sb.endpoints.subscription_id
    );
    grant(&sb, &identity.principal_id, READER, &rg_scope).await;
    let (status, body) = sb.arm_rest_get(&vm_path(&vm), Some(token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "vm1");
    assert_eq!(body["identity"]["type"], "SystemAssigned");
    assert_eq!(
        body["identity"]["principalId"],
        identity.principal_id.as_str()
    );
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_assigned_identity_is_shared_by_vms_on_two_hosts_and_selected_by_client_id() {
    let sb = Sandbox::start().await;
    let vm1 = group_and_vm(&sb, "rg1", "vm1", "host-1").await;
    let vm2 = sb
        .arm()
        .await
        .create_vm(pb::CreateVmRequest {
            resource_group: "rg1".into(),
            name: "vm2".into(),
            host: "host-2".into(),
            ..Default::default()
        })
        .await
        .expect("create vm2")
        .into_inner();
    assert_eq!(vm2.host, "host-2");
    let uami = sb
        .arm()
        .await
        .create_user_assigned_identity(pb::CreateUserAssignedIdentityRequest {
            resource_group: "rg1".into(),
            name: "id1".into(),
            ..Default::default()
        })
        .await
        .expect("create identity")
        .into_inner();
    assert!(!uami.client_id.is_empty() && !uami.principal_id.is_empty());
    for vm in ["vm1", "vm2"] {
        let block = sb
            .arm()
            .await
            .assign_vm_identity(pb::AssignVmIdentityRequest {
                resource_group: "rg1".into(),
                name: vm.into(),
                user_assigned_identities: vec![uami.id.clone()],
                ..Default::default()
            })
            .await
            .expect("assign identity")
            .into_inner();
        assert_eq!(block.r#type, "UserAssigned");
        let value = block
            .user_assigned_identities
            .values()
            .next()
            .expect("one identity");
        assert_eq!(value.client_id, uami.client_id);
    }
    for vm in [&vm1, &vm2] {
        let (status, body) = sb
            .imds_token(&vm.imds_endpoint, MGMT, &[("client_id", &uami.client_id)])
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["client_id"], uami.client_id.as_str());
        let claims = sb
            .verify(body["access_token"].as_str().unwrap(), MGMT)
            .await;
        assert_eq!(claims["oid"], uami.principal_id.as_str());
        assert!(claims["xms_mirid"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(&uami.id));
        assert!(claims["xms_az_rid"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(&vm.id));
    }
    // With the role on the subscription, the UAMI's token reads the VM through ARM REST.
    grant(
        &sb,
        &uami.principal_id,
        READER,
        &format!("/subscriptions/{}", sb.endpoints.subscription_id),
    )
    .await;
    let (_, body) = sb
        .imds_token(&vm2.imds_endpoint, MGMT, &[("client_id", &uami.client_id)])
        .await;
    let (status, vm_json) = sb
        .arm_rest_get(&vm_path(&vm2), body["access_token"].as_str())
        .await;
    assert_eq!(status, 200, "{vm_json}");
    assert!(vm_json["identity"]["userAssignedIdentities"]
        .as_object()
        .unwrap()
        .keys()
        .any(|k| k.eq_ignore_ascii_case(&uami.id)));
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_cannot_obtain_another_vms_identity_through_its_own_endpoint() {
    let sb = Sandbox::start().await;
    let vm_a = group_and_vm(&sb, "rg1", "vma", "host-1").await;
    let vm_b = sb
        .arm()
        .await
        .create_vm(pb::CreateVmRequest {
            resource_group: "rg1".into(),
            name: "vmb".into(),
            host: "host-1".into(),
            ..Default::default()
        })
        .await
        .expect("create vmb")
        .into_inner();
    assert_ne!(
        vm_a.imds_endpoint, vm_b.imds_endpoint,
        "each VM has its own IMDS listener"
    );
    enable_system(&sb, "rg1", "vma").await;
    let (_, a_token) = sb.imds_token(&vm_a.imds_endpoint, MGMT, &[]).await;
    let a_client = a_token["client_id"]
        .as_str()
        .expect("vma gets a token")
        .to_string();

    // vmb has no identity: nothing by default, and not vma's by client_id either.
    let (status, body) = sb.imds_token(&vm_b.imds_endpoint, MGMT, &[]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error_description"], "Identity not found");
    let (status, body) = sb
        .imds_token(&vm_b.imds_endpoint, MGMT, &[("client_id", &a_client)])
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error_description"], "Identity not found");

    // Once vmb has its own identity it gets a different principal's token, never vma's.
    enable_system(&sb, "rg1", "vmb").await;
    let (status, body) = sb.imds_token(&vm_b.imds_endpoint, MGMT, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["client_id"], a_client.as_str());
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_identities_and_the_vm_still_gets_tokens() {
    let mut sb = Sandbox::start().await;
    let vm = group_and_vm(&sb, "rg1", "vm1", "host-1").await;
    let identity = enable_system(&sb, "rg1", "vm1").await;
    let (_, before) = sb.imds_token(&vm.imds_endpoint, MGMT, &[]).await;
    let tenant = sb.endpoints.tenant_id.clone();
    let subscription = sb.endpoints.subscription_id.clone();

    sb.restart().await;

    assert_eq!(sb.endpoints.tenant_id, tenant);
    assert_eq!(sb.endpoints.subscription_id, subscription);
    let vm_after = sb
        .arm()
        .await
        .get_vm(pb::GetVmRequest {
            resource_group: "rg1".into(),
            name: "vm1".into(),
            ..Default::default()
        })
        .await
        .expect("vm survives restart")
        .into_inner();
    let after_identity = vm_after.identity.expect("identity block");
    assert_eq!(after_identity.principal_id, identity.principal_id);
    let (status, after) = sb
        .imds_token(&vm_after.imds_endpoint, MGMT, &[("bypass_cache", "true")])
        .await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(
        after["client_id"], before["client_id"],
        "same clientId after restart"
    );
    let claims = sb
        .verify(after["access_token"].as_str().unwrap(), MGMT)
        .await;
    assert_eq!(claims["oid"], identity.principal_id.as_str());
    // A token issued before the restart still verifies: the signing key survived too.
    sb.verify(before["access_token"].as_str().unwrap(), MGMT)
        .await;
    sb.stop().await;
}
