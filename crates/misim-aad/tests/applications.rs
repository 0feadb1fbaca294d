//! App registrations and app roles over the wire: an app-role assignment to a managed identity puts
//! the role's value into the `roles` claim of its tokens for the application, in every form the
//! resource can be named; the application's token version decides the token's shape and `aud`;
//! Graph-shaped errors; deleting the app or the identity's principal removes the assignments.
//!
//! Model: <https://learn.microsoft.com/graph/api/resources/approleassignment>,
//! <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-assign-app-role-managed-identity>;
//! `aud` and `roles`: <https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference>.

mod common;

use common::*;
use misim_core::Clock;
use misim_proto::aad as pb;
use misim_proto::aad::applications_client::ApplicationsClient;
use serde_json::{json, Value};
use tonic::transport::Channel;

fn apps(aad: &Aad) -> ApplicationsClient<Channel> {
    ApplicationsClient::new(
        Channel::from_shared(aad.grpc_url.clone())
            .unwrap()
            .connect_lazy(),
    )
}

fn role(value: &str) -> pb::NewAppRole {
    pb::NewAppRole {
        value: value.into(),
        ..Default::default()
    }
}

async fn create_app(
    aad: &Aad,
    tenant: &str,
    name: &str,
    roles: &[&str],
    version: i32,
) -> pb::Application {
    apps(aad)
        .create_application(pb::CreateApplicationRequest {
            tenant_id: tenant.into(),
            display_name: name.into(),
            identifier_uris: vec![format!("api://{name}")],
            app_roles: roles.iter().map(|r| role(r)).collect(),
            requested_access_token_version: version,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn assign(
    aad: &Aad,
    tenant: &str,
    principal: &str,
    app: &str,
    value: &str,
) -> pb::AppRoleAssignment {
    apps(aad)
        .create_app_role_assignment(pb::CreateAppRoleAssignmentRequest {
            tenant_id: tenant.into(),
            principal_id: principal.into(),
            app: app.into(),
            app_role_value: value.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Requests a token as IMDS does (v1, `resource=`) or as an SDK does (v2, `scope=`); returns the
/// status and body.
async fn token(
    aad: &Aad,
    tenant: &str,
    sp: &pb::ServicePrincipal,
    cert: &ClientCert,
    v2: bool,
    resource: &str,
) -> (u16, Value) {
    let path = if v2 {
        format!("/{tenant}/oauth2/v2.0/token")
    } else {
        format!("/{tenant}/oauth2/token")
    };
    let aud = format!("{}{path}", aad.http_url);
    let assertion = imds_assertion(cert, &sp.app_id, &aud, T0);
    let form = if v2 {
        v2_form(&sp.app_id, &assertion, resource)
    } else {
        v1_form(&sp.app_id, &assertion, resource)
    };
    aad.post_form(&path, &form).await
}

fn access_token(body: &Value) -> &str {
    body["access_token"].as_str().expect("a token")
}

#[tokio::test]
async fn assigned_app_roles_reach_the_roles_claim_in_every_form_of_the_resource() {
    let dir = tempfile::tempdir().unwrap();
    let aad = start(dir.path(), Clock::manual(T0)).await;
    let cert = client_cert();
    let (tenant, sp) = aad.principal(VM_ID, &cert).await;
    let other_cert = client_cert();
    let (_, other) = aad.principal(UAMI_ID, &other_cert).await;
    let tid = tenant.tenant_id.as_str();

    let app = create_app(&aad, tid, "orders-api", &["Orders.Read", "Orders.Write"], 0).await;
    assert_eq!(app.identifier_uris, ["api://orders-api"]);
    assert_eq!(app.app_roles.len(), 2);
    for r in &app.app_roles {
        assert!(uuid::Uuid::parse_str(&r.id).is_ok());
        assert_eq!(r.allowed_member_types, ["Application"]);
        assert!(r.is_enabled);
    }
    // Roles named by value (through the appId) and by ID (through the identifier URI).
    let read = assign(&aad, tid, &sp.object_id, &app.app_id, "Orders.Read").await;
    assert_eq!(
        (read.resource_id.as_str(), read.principal_type.as_str()),
        (app.service_principal_id.as_str(), "ServicePrincipal")
    );
    assert_eq!(read.app_role_id, app.app_roles[0].id);
    apps(&aad)
        .create_app_role_assignment(pb::CreateAppRoleAssignmentRequest {
            tenant_id: tid.into(),
            principal_id: sp.object_id.clone(),
            app: "api://orders-api".into(),
            app_role_id: app.app_roles[1].id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    let v1_discovery = format!("/{tid}/.well-known/openid-configuration");
    // v1 (IMDS) and v2 (scope) forms; the app asks for no token version, so every token is v1 and
    // its aud is the resource as requested.
    for (v2, requested, aud) in [
        (false, "api://orders-api", "api://orders-api"),
        (false, "api://orders-api/", "api://orders-api/"),
        (false, "API://Orders-API", "API://Orders-API"),
        (false, app.app_id.as_str(), app.app_id.as_str()),
        (true, "api://orders-api/.default", "api://orders-api"),
        (true, "api://orders-api//.default", "api://orders-api/"),
    ] {
        let (status, body) = token(&aad, tid, &sp, &cert, v2, requested).await;
        assert_eq!(status, 200, "{requested}: {body}");
        let (header, claims) =
            verify_via_discovery(&aad, &v1_discovery, access_token(&body), aud).await;
        assert!(header.x5t.is_some(), "v1 tokens carry x5t");
        assert_eq!(claims["ver"], "1.0", "{requested}");
        assert_eq!(claims["aud"], aud);
        assert_eq!(claims["roles"], json!(["Orders.Read", "Orders.Write"]));
        assert_eq!(claims["oid"], sp.object_id);
        assert_eq!(claims["appid"], sp.app_id);
        assert_eq!(claims["idtyp"], "app");
        assert_eq!(claims["tid"], tenant.tenant_id);
        // First-party resources only (hashicorp/vault-plugin-auth-azure#237).
        assert!(claims.get("xms_mirid").is_none(), "{claims}");
        if !v2 {
            assert_eq!(body["resource"], requested, "v1 body echoes the resource");
        }
    }

    // An identity without assignments gets a token without `roles`.
    let (status, body) = token(&aad, tid, &other, &other_cert, false, "api://orders-api").await;
    assert_eq!(status, 200, "{body}");
    let (_, claims) =
        verify_via_discovery(&aad, &v1_discovery, access_token(&body), "api://orders-api").await;
    assert!(claims.get("roles").is_none(), "{claims}");

    // Unknown identifier URIs keep AADSTS500011.
    let (status, body) = token(&aad, tid, &sp, &cert, false, "api://unknown-api").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_resource");
    assert_eq!(body["error_codes"], json!([500011]));

    // Applications and assignments survive a restart.
    aad.stop().await;
    let aad = start(dir.path(), Clock::manual(T0)).await;
    let (status, body) = token(&aad, tid, &sp, &cert, false, "api://orders-api").await;
    assert_eq!(status, 200, "{body}");
    let (_, claims) =
        verify_via_discovery(&aad, &v1_discovery, access_token(&body), "api://orders-api").await;
    assert_eq!(claims["roles"], json!(["Orders.Read", "Orders.Write"]));
    aad.stop().await;
}

#[tokio::test]
async fn an_app_that_requests_v2_tokens_gets_them_with_its_app_id_as_aud() {
    let dir = tempfile::tempdir().unwrap();
    let aad = start(dir.path(), Clock::manual(T0)).await;
    let cert = client_cert();
    let (tenant, sp) = aad.principal(UAMI_ID, &cert).await;
    let tid = tenant.tenant_id.as_str();
    let app = create_app(&aad, tid, "inventory", &["Inventory.Read"], 2).await;
    assert_eq!(app.requested_access_token_version, 2);
    assign(
        &aad,
        tid,
        &sp.object_id,
        "api://inventory",
        "Inventory.Read",
    )
    .await;

    let v2_discovery = format!("/{tid}/v2.0/.well-known/openid-configuration");
    // The resource's requested version wins over the endpoint's, IMDS's v1 endpoint included.
    for (v2, requested) in [
        (false, "api://inventory"),
        (true, "api://inventory/.default"),
    ] {
        let (status, body) = token(&aad, tid, &sp, &cert, v2, requested).await;
        assert_eq!(status, 200, "{body}");
        let (header, claims) =
            verify_via_discovery(&aad, &v2_discovery, access_token(&body), &app.app_id).await;
        assert!(header.x5t.is_none(), "v2 tokens carry no x5t");
        assert_eq!(claims["ver"], "2.0");
        assert_eq!(claims["aud"], app.app_id);
        assert_eq!(claims["azp"], sp.app_id);
        assert_eq!(claims["roles"], json!(["Inventory.Read"]));
        assert!(claims.get("xms_mirid").is_none(), "{claims}");
    }
    aad.stop().await;
}

fn code_and_message(r: Result<impl std::fmt::Debug, tonic::Status>) -> (tonic::Code, String) {
    let s = r.expect_err("the call must fail");
    (s.code(), s.message().to_string())
}

#[tokio::test]
async fn graph_errors_and_deletions_remove_assignments() {
    let dir = tempfile::tempdir().unwrap();
    let aad = start(dir.path(), Clock::manual(T0)).await;
    let cert = client_cert();
    let (tenant, sp) = aad.principal(VM_ID, &cert).await;
    let tid = tenant.tenant_id.as_str();
    let app = create_app(&aad, tid, "billing", &["Billing.Read"], 0).await;
    let mut client = apps(&aad);

    // Duplicate identifier URI (any casing, trailing slash), a foreign domain, bad token version.
    for (uri, version, expect) in [
        (
            "API://billing/",
            0,
            "Another object with the same value for property identifierUris already exists.",
        ),
        ("https://vault.azure.net", 0, "verified domain"),
        ("api://fine", 3, "requested_access_token_version"),
    ] {
        let (code, msg) = code_and_message(
            client
                .create_application(pb::CreateApplicationRequest {
                    tenant_id: tid.into(),
                    display_name: "x".into(),
                    identifier_uris: vec![uri.into()],
                    requested_access_token_version: version,
                    ..Default::default()
                })
                .await,
        );
        assert_eq!(code, tonic::Code::InvalidArgument, "{uri}: {msg}");
        assert!(msg.contains(expect), "{uri}: {msg}");
    }

    let create = |principal: &str, app: &str, value: &str| pb::CreateAppRoleAssignmentRequest {
        tenant_id: tid.into(),
        principal_id: principal.into(),
        app: app.into(),
        app_role_value: value.into(),
        ..Default::default()
    };
    let (code, msg) = code_and_message(
        client
            .create_app_role_assignment(create(&sp.object_id, "api://billing", "Billing.Write"))
            .await,
    );
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert!(
        msg.contains("Permission being assigned was not found on application"),
        "{msg}"
    );
    assert!(
        msg.contains("Billing.Read"),
        "names the defined roles: {msg}"
    );
    let (code, msg) = code_and_message(
        client
            .create_app_role_assignment(create(&sp.object_id, "api://nothing", "Billing.Read"))
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound);
    assert!(
        msg.starts_with("Request_ResourceNotFound: Resource 'api://nothing' does not exist"),
        "{msg}"
    );
    let stranger = uuid::Uuid::new_v4().to_string();
    let (code, msg) = code_and_message(
        client
            .create_app_role_assignment(create(&stranger, "api://billing", "Billing.Read"))
            .await,
    );
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert!(msg.contains("principalId"), "{msg}");
    assign(&aad, tid, &sp.object_id, "api://billing", "Billing.Read").await;
    let (code, msg) = code_and_message(
        client
            .create_app_role_assignment(create(&sp.object_id, &app.object_id, "Billing.Read"))
            .await,
    );
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert!(msg.contains("already exists"), "{msg}");

    // Lookups by appId, object ID and identifier URI find the same application.
    for id in [&app.app_id, &app.object_id, &"api://Billing/".to_string()] {
        let got = client
            .get_application(pb::GetApplicationRequest {
                tenant_id: tid.into(),
                id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.app_id, app.app_id);
    }
    let list = |app: &str, principal: &str| pb::ListAppRoleAssignmentsRequest {
        tenant_id: tid.into(),
        app: app.into(),
        principal_id: principal.into(),
    };
    let count = |r: pb::ListAppRoleAssignmentsResponse| r.app_role_assignments.len();
    assert_eq!(
        count(
            client
                .list_app_role_assignments(list("api://billing", ""))
                .await
                .unwrap()
                .into_inner()
        ),
        1
    );

    // Deleting the identity's service principal removes the assignments it holds.
    aad.admin()
        .delete_service_principal(pb::DeleteServicePrincipalRequest {
            tenant_id: tid.into(),
            object_id: sp.object_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        count(
            client
                .list_app_role_assignments(list("", &sp.object_id))
                .await
                .unwrap()
                .into_inner()
        ),
        0
    );

    // Deleting the application removes it, its assignments and its resource.
    let cert2 = client_cert();
    let (_, sp2) = aad.principal(UAMI_ID, &cert2).await;
    let grant = assign(&aad, tid, &sp2.object_id, &app.app_id, "Billing.Read").await;
    client
        .delete_application(pb::DeleteApplicationRequest {
            tenant_id: tid.into(),
            id: "api://billing".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        count(
            client
                .list_app_role_assignments(list("", ""))
                .await
                .unwrap()
                .into_inner()
        ),
        0
    );
    let (code, _) = code_and_message(
        client
            .delete_app_role_assignment(pb::DeleteAppRoleAssignmentRequest {
                tenant_id: tid.into(),
                id: grant.id,
            })
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound);
    let (status, body) = token(&aad, tid, &sp2, &cert2, false, "api://billing").await;
    assert_eq!(
        (status, body["error_codes"].clone()),
        (400, json!([500011]))
    );
    let (code, _) = code_and_message(
        client
            .get_application(pb::GetApplicationRequest {
                tenant_id: tid.into(),
                id: app.app_id.clone(),
            })
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound);
    aad.stop().await;
}
