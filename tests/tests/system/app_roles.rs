//! App registrations and app roles end to end (`misim up`): an app role assigned to a VM's managed
//! identity reaches the `roles` claim of the token IMDS hands out for the application; IMDS's cache
//! holds an older token until it is bypassed (as in Azure,
//! <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/managed-identity-best-practice-recommendations#limitation-of-using-managed-identities-for-authorization>);
//! disabling the identity removes its assignments; only the admin role may call the Applications API.

use misim_core::control::Role;
use misim_proto::aad as aadpb;
use misim_proto::aad::applications_client::ApplicationsClient;
use misim_proto::arm as pb;
use misim_proto::tonic::transport::Channel;
use misim_proto::tonic::Code;
use misim_tests::{channel_as, Sandbox};
use serde_json::json;

use crate::lifecycle_common::{enable_system, group, vm};

const API: &str = "api://sys-orders";

/// A GUID's bytes in .NET's mixed-endian order (how `rh` packs it).
fn guid_bytes_le(guid: &str) -> Vec<u8> {
    let hex: String = guid.chars().filter(|c| *c != '-').collect();
    let mut b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

async fn tenant(sb: &Sandbox) -> String {
    sb.arm()
        .await
        .get_account(pb::GetAccountRequest::default())
        .await
        .expect("account")
        .into_inner()
        .tenant_id
}

fn assignment(tenant: &str, principal: &str, value: &str) -> aadpb::CreateAppRoleAssignmentRequest {
    aadpb::CreateAppRoleAssignmentRequest {
        tenant_id: tenant.into(),
        principal_id: principal.into(),
        app: API.into(),
        app_role_value: value.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assigned_app_role_reaches_the_imds_token_and_leaves_with_the_identity() {
    let sb = Sandbox::start().await;
    let tid = tenant(&sb).await;
    group(&sb, "rg-apps").await;
    let v = vm(&sb, "rg-apps", "vm-apps", "host-1").await;
    let identity = enable_system(&sb, "rg-apps", "vm-apps").await;
    let mut apps = ApplicationsClient::new(sb.admin(&sb.endpoints.aad_grpc).await);

    let app = apps
        .create_application(aadpb::CreateApplicationRequest {
            tenant_id: tid.clone(),
            display_name: "sys-orders".into(),
            identifier_uris: vec![API.into()],
            app_roles: ["Orders.Read", "Orders.Write"]
                .iter()
                .map(|r| aadpb::NewAppRole {
                    value: r.to_string(),
                    ..Default::default()
                })
                .collect(),
            requested_access_token_version: 0,
        })
        .await
        .expect("create application")
        .into_inner();
    apps.create_app_role_assignment(assignment(&tid, &identity.principal_id, "Orders.Read"))
        .await
        .expect("assign Orders.Read");

    // Step 5/6 as code on the VM does it: IMDS -> Azure AD; the API validates the token.
    let (status, body) = sb.imds_token(&v.imds_endpoint, API, &[]).await;
    assert_eq!(status, 200, "{body}");
    let claims = sb.verify(body["access_token"].as_str().unwrap(), API).await;
    assert_eq!(claims["roles"], json!(["Orders.Read"]));
    assert_eq!(claims["oid"], identity.principal_id.as_str());
    assert_eq!(claims["ver"], "1.0");
    let rh_app = {
        use base64::Engine;
        let rh = claims["rh"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&rh[2..rh.len() - 1])
            .unwrap();
        bytes[19..35].to_vec()
    };
    assert_eq!(
        rh_app,
        guid_bytes_le(&app.app_id),
        "rh names the resource application"
    );

    // A second role shows only once IMDS's cached token is bypassed.
    apps.create_app_role_assignment(assignment(&tid, &identity.principal_id, "Orders.Write"))
        .await
        .expect("assign Orders.Write");
    let (_, cached) = sb.imds_token(&v.imds_endpoint, API, &[]).await;
    let claims = sb
        .verify(cached["access_token"].as_str().unwrap(), API)
        .await;
    assert_eq!(claims["roles"], json!(["Orders.Read"]), "cached token");
    let (_, fresh) = sb
        .imds_token(&v.imds_endpoint, API, &[("bypass_cache", "true")])
        .await;
    let claims = sb
        .verify(fresh["access_token"].as_str().unwrap(), API)
        .await;
    assert_eq!(claims["roles"], json!(["Orders.Read", "Orders.Write"]));

    // Disabling the identity deletes its service principal (MSRP -> Azure AD) and its assignments.
    sb.arm()
        .await
        .remove_vm_identity(pb::RemoveVmIdentityRequest {
            resource_group: "rg-apps".into(),
            name: "vm-apps".into(),
            system_assigned: true,
            ..Default::default()
        })
        .await
        .expect("disable");
    let left = apps
        .list_app_role_assignments(aadpb::ListAppRoleAssignmentsRequest {
            tenant_id: tid.clone(),
            app: API.into(),
            principal_id: identity.principal_id.clone(),
        })
        .await
        .expect("list")
        .into_inner()
        .app_role_assignments;
    assert!(left.is_empty(), "{left:?}");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_role_may_register_applications() {
    let sb = Sandbox::start().await;
    let tid = tenant(&sb).await;
    let url = sb.endpoints.aad_grpc.clone();
    let request = || aadpb::ListApplicationsRequest {
        tenant_id: tid.clone(),
    };
    for role in [
        Role::Arm,
        Role::Msrp,
        Role::Aad,
        Role::Host("host-1".into()),
    ] {
        let channel: Channel = channel_as(sb.dir.path(), role.clone(), &url).await;
        let err = ApplicationsClient::new(channel)
            .list_applications(request())
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::PermissionDenied, "{role}: {err:?}");
        assert!(
            err.message().contains("Applications/ListApplications"),
            "{err:?}"
        );
    }
    let mut admin = ApplicationsClient::new(sb.admin(&url).await);
    assert!(admin.list_applications(request()).await.is_ok());
    sb.stop().await;
}
