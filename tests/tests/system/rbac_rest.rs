//! RBAC on ARM's REST surface: 403 AuthorizationFailed without a role, roles inherited from the
//! subscription and resource group, role assignments managed over REST (Contributor may not, Owner
//! may), and LinkedAuthorizationFailed when attaching a user-assigned identity without
//! `…/assign/action` on it.

use crate::lifecycle_common::*;
use misim_tests::Sandbox;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_inherited_and_role_assignments_are_managed_over_rest() {
    let sb = Sandbox::start().await;
    let owner = owner(&sb).await;
    let (ops_pid, ops) = caller(&sb, "ops", "ops-vm", "", "").await;
    group(&sb, "app").await;
    let path = vm_id(&sb, "app", "web");
    let put = json!({"location":"westeurope"});

    let (status, err) = rest(&sb, "PUT", &path, &ops, Some(put.clone())).await;
    assert_eq!(status, 403, "{err}");
    assert_eq!(err["error"]["code"], "AuthorizationFailed");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Microsoft.Compute/virtualMachines/write"));

    // Owner grants Contributor on the group over REST; it is inherited by resources in it.
    let ra_path = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/0e1f7c39-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
        rg_id(&sb, "app")
    );
    let body = json!({"properties":{
        "roleDefinitionId": format!("{}/providers/Microsoft.Authorization/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c", sub(&sb)),
        "principalId": ops_pid, "principalType": "ServicePrincipal"}});
    let (status, ra) = rest(&sb, "PUT", &ra_path, &owner, Some(body.clone())).await;
    assert_eq!(status, 201, "{ra}");
    assert_eq!(ra["name"], "0e1f7c39-1a2b-4c3d-8e9f-0a1b2c3d4e5f");
    assert_eq!(ra["properties"]["principalId"], ops_pid.as_str());
    let (status, _) = rest(&sb, "PUT", &ra_path, &owner, Some(body)).await;
    assert_eq!(status, 200, "idempotent");

    let (status, vm) = rest(&sb, "PUT", &path, &ops, Some(put)).await;
    assert_eq!(status, 201, "{vm}");
    let (status, _) = rest(&sb, "GET", &path, &ops, None).await;
    assert_eq!(status, 200);
    // Not outside the group.
    let (status, _) = rest(&sb, "GET", &rg_id(&sb, "admin"), &ops, None).await;
    assert_eq!(status, 403);

    // Contributor cannot manage role assignments (notActions Microsoft.Authorization/*/Write).
    let other = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
        rg_id(&sb, "app")
    );
    let reader = json!({"properties":{"roleDefinitionId":"acdd72a7-3385-48ef-bd42-f606fba81ae7","principalId":ops_pid}});
    let (status, err) = rest(&sb, "PUT", &other, &ops, Some(reader)).await;
    assert_eq!(status, 403, "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Microsoft.Authorization/roleAssignments/write"));

    // List at a VM scope includes the inherited group assignment; filter by principal.
    let list_path = format!(
        "{path}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20%27{ops_pid}%27"
    );
    let (status, list) = rest(&sb, "GET", &list_path, &owner, None).await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["0e1f7c39-1a2b-4c3d-8e9f-0a1b2c3d4e5f"]);

    // Owner deletes it; the caller loses access.
    let (status, _) = rest(&sb, "DELETE", &ra_path, &owner, None).await;
    assert_eq!(status, 200);
    let (status, _) = rest(&sb, "DELETE", &ra_path, &owner, None).await;
    assert_eq!(status, 204);
    let (status, _) = rest(&sb, "GET", &path, &ops, None).await;
    assert_eq!(status, 403);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attaching_a_user_assigned_identity_needs_assign_action_on_it() {
    let sb = Sandbox::start().await;
    group(&sb, "app").await;
    group(&sb, "ids").await;
    let (ops_pid, ops) = caller(&sb, "ops", "ops-vm", "Contributor", &rg_id(&sb, "app")).await;
    let id = uami(&sb, "ids", "shared").await;
    vm(&sb, "app", "web", "host-2").await;
    let path = vm_id(&sb, "app", "web");
    let patch =
        json!({"identity":{"type":"UserAssigned","userAssignedIdentities":{id.id.clone():{}}}});

    let (status, err) = rest(&sb, "PATCH", &path, &ops, Some(patch.clone())).await;
    assert_eq!(status, 403, "{err}");
    assert_eq!(err["error"]["code"], "LinkedAuthorizationFailed");
    let expected = format!(
        "The client '{ops_pid}' with object id '{ops_pid}' has permission to perform action 'Microsoft.Compute/virtualMachines/write' on scope '{path}'; however, it does not have permission to perform action(s) 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked scope(s) '{}' (respectively) or the linked scope(s) are invalid.",
        id.id
    );
    assert_eq!(err["error"]["message"], expected.as_str());

    // Managed Identity Operator on the identity grants assign/action.
    grant(&sb, &ops_pid, "Managed Identity Operator", &id.id).await;
    let (status, body) = rest(&sb, "PATCH", &path, &ops, Some(patch)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["identity"]["userAssignedIdentities"][&id.id]["clientId"],
        id.client_id.as_str()
    );
    // Removing needs no linked permission; reading the identity resource does need a role.
    let (status, _) = rest(&sb, "GET", &id.id, &ops, None).await;
    assert_eq!(status, 200, "Managed Identity Operator reads the identity");
    let (status, body) = rest(
        &sb,
        "PATCH",
        &path,
        &ops,
        Some(json!({"identity":{"type":"None"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    sb.stop().await;
}
