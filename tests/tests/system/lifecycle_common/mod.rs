//! Helpers shared by the lifecycle and RBAC integration tests: resources over gRPC, an Owner token
//! from a VM's IMDS to drive ARM's REST surface, and REST calls with any method.

#![allow(dead_code)]

use misim_proto::arm as pb;
use misim_tests::Sandbox;
use serde_json::Value;

pub const MGMT: &str = "https://management.azure.com/";
pub const VAULT: &str = "https://vault.azure.net";
pub const API: &str = "api-version=2024-07-01";

pub async fn group(sb: &Sandbox, rg: &str) {
    sb.arm()
        .await
        .create_resource_group(pb::CreateResourceGroupRequest {
            name: rg.into(),
            location: "westeurope".into(),
            ..Default::default()
        })
        .await
        .expect("create group");
}

pub async fn vm(sb: &Sandbox, rg: &str, name: &str, host: &str) -> pb::VirtualMachine {
    sb.arm()
        .await
        .create_vm(pb::CreateVmRequest {
            resource_group: rg.into(),
            name: name.into(),
            host: host.into(),
            ..Default::default()
        })
        .await
        .expect("create vm")
        .into_inner()
}

pub async fn uami(sb: &Sandbox, rg: &str, name: &str) -> pb::UserAssignedIdentity {
    sb.arm()
        .await
        .create_user_assigned_identity(pb::CreateUserAssignedIdentityRequest {
            resource_group: rg.into(),
            name: name.into(),
            ..Default::default()
        })
        .await
        .expect("create identity")
        .into_inner()
}

pub async fn enable_system(sb: &Sandbox, rg: &str, vm: &str) -> pb::VmIdentity {
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

pub async fn grant(sb: &Sandbox, principal: &str, role: &str, scope: &str) -> pb::RoleAssignment {
    sb.arm()
        .await
        .create_role_assignment(pb::CreateRoleAssignmentRequest {
            scope: scope.into(),
            role: role.into(),
            principal_id: principal.into(),
            principal_type: String::new(),
        })
        .await
        .expect("create role assignment")
        .into_inner()
}

pub fn sub(sb: &Sandbox) -> String {
    format!("/subscriptions/{}", sb.endpoints.subscription_id)
}

pub fn rg_id(sb: &Sandbox, rg: &str) -> String {
    format!("{}/resourceGroups/{rg}", sub(sb))
}

pub fn vm_id(sb: &Sandbox, rg: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Compute/virtualMachines/{name}",
        rg_id(sb, rg)
    )
}

/// A caller VM in group `rg` with a system-assigned identity holding `role` at `scope`; returns its
/// principal id and an ARM token from its IMDS.
pub async fn caller(
    sb: &Sandbox,
    rg: &str,
    name: &str,
    role: &str,
    scope: &str,
) -> (String, String) {
    group(sb, rg).await;
    let v = vm(sb, rg, name, "host-1").await;
    let identity = enable_system(sb, rg, name).await;
    if !role.is_empty() {
        grant(sb, &identity.principal_id, role, scope).await;
    }
    let (status, body) = sb.imds_token(&v.imds_endpoint, MGMT, &[]).await;
    assert_eq!(status, 200, "{body}");
    (
        identity.principal_id,
        body["access_token"].as_str().expect("token").to_string(),
    )
}

/// An Owner of the subscription (a VM in group `admin`).
pub async fn owner(sb: &Sandbox) -> String {
    let scope = sub(sb);
    caller(sb, "admin", "admin-vm", "Owner", &scope).await.1
}

/// `{method} {arm_rest}{path}?{API}` with a bearer token and optional JSON body.
pub async fn rest(
    sb: &Sandbox,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let url = format!("{}{path}{sep}{API}", sb.endpoints.arm_rest);
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = sb.http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("ARM REST answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// IMDS token status and body for a VM (bypassing IMDS's cache).
pub async fn imds(sb: &Sandbox, endpoint: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut q = vec![("bypass_cache", "true")];
    q.extend_from_slice(extra);
    sb.imds_token(endpoint, MGMT, &q).await
}

pub fn assert_identity_not_found(status: u16, body: &Value) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error_description"], "Identity not found", "{body}");
}
