//! AKS workload identity end to end, over the wire: ARM creates a cluster (an OIDC issuer on its
//! REST listener) and a federated identity credential on a user-assigned identity (pushed through
//! MSRP to Azure AD); the cluster issues a pod's projected service-account token; Azure AD exchanges
//! it for the identity's token after fetching the issuer's JWKS. Only ARM may set credentials on
//! MSRP and only MSRP on Azure AD. Deleting the credential, the cluster or the identity ends the
//! exchange with Entra's AADSTS errors.

use misim_core::control::Role;
use misim_proto::aad::aad_admin_client::AadAdminClient;
use misim_proto::arm as pb;
use misim_proto::msrp::msrp_client::MsrpClient;
use misim_proto::tonic::Code;
use misim_tests::{channel_as, unverified_claims, Sandbox};
use serde_json::Value;

use crate::lifecycle_common::group;

const SUBJECT: &str = "system:serviceaccount:default:app";

async fn exchange(sb: &Sandbox, tenant: &str, client_id: &str, assertion: &str) -> (u16, Value) {
    let resp = sb
        .http
        .post(format!("{}/{tenant}/oauth2/v2.0/token", sb.endpoints.aad))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .expect("azure ad answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn sa_token(
    arm: &mut pb::arm_client::ArmClient<misim_proto::tonic::transport::Channel>,
    sa: &str,
) -> pb::ServiceAccountToken {
    arm.create_service_account_token(pb::CreateServiceAccountTokenRequest {
        resource_group: "rg1".into(),
        cluster_name: "aks1".into(),
        namespace: "default".into(),
        service_account: sa.into(),
        pod_name: "app-0".into(),
        ..Default::default()
    })
    .await
    .expect("service-account token")
    .into_inner()
}

fn code(body: &Value) -> u64 {
    body["error_codes"][0].as_u64().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_service_account_token_is_exchanged_for_the_identitys_token() {
    let sb = Sandbox::start().await;
    group(&sb, "rg1").await;
    let mut arm = sb.arm().await;
    let id = arm
        .create_user_assigned_identity(pb::CreateUserAssignedIdentityRequest {
            resource_group: "rg1".into(),
            name: "id1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let cluster = arm
        .create_managed_cluster(pb::CreateManagedClusterRequest {
            resource_group: "rg1".into(),
            name: "aks1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let issuer = cluster.issuer_url.clone();
    assert!(issuer.starts_with(&format!("{}/oidc/{}/", sb.endpoints.arm_rest, id.tenant_id)));
    assert!(issuer.ends_with('/'));
    let json: Value = serde_json::from_str(&cluster.resource_json).unwrap();
    assert_eq!(
        json["properties"]["oidcIssuerProfile"]["issuerURL"],
        issuer.as_str()
    );
    assert_eq!(json["properties"]["oidcIssuerProfile"]["enabled"], true);
    assert_eq!(
        json["properties"]["securityProfile"]["workloadIdentity"]["enabled"],
        true
    );

    // The issuer's discovery and keys, unauthenticated, as Azure AD fetches them.
    let doc: Value = sb
        .http
        .get(format!("{issuer}.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], issuer.as_str());
    assert_eq!(doc["jwks_uri"], format!("{issuer}openid/v1/jwks"));

    let fic = arm
        .create_federated_identity_credential(pb::CreateFederatedIdentityCredentialRequest {
            resource_group: "rg1".into(),
            identity_name: "id1".into(),
            name: "aks1-app".into(),
            issuer: issuer.clone(),
            subject: SUBJECT.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        fic.audiences,
        vec!["api://AzureADTokenExchange".to_string()]
    );

    let t = sa_token(&mut arm, "app").await;
    let sa = unverified_claims(&t.token);
    assert_eq!(sa["iss"], issuer.as_str());
    assert_eq!(sa["sub"], SUBJECT);
    assert_eq!(sa["aud"][0], "api://AzureADTokenExchange");
    assert_eq!(sa["kubernetes.io"]["namespace"], "default");
    assert_eq!(sa["kubernetes.io"]["serviceaccount"]["name"], "app");
    assert_eq!(sa["kubernetes.io"]["pod"]["name"], "app-0");
    assert_eq!(
        sa["exp"].as_i64().unwrap() - sa["iat"].as_i64().unwrap(),
        3600
    );

    let (status, body) = exchange(&sb, &id.tenant_id, &id.client_id, &t.token).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let aud = unverified_claims(token)["aud"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(aud.starts_with("https://management.azure.com"), "{aud}");
    let claims = sb.verify(token, &aud).await;
    assert_eq!(claims["oid"], id.principal_id.as_str());
    assert_eq!(claims["appid"], id.client_id.as_str());
    assert_eq!(
        claims["xms_mirid"].as_str().unwrap().to_ascii_lowercase(),
        id.id.to_ascii_lowercase()
    );

    // The token works at ARM like any token of the identity: with Reader on the group it reads the
    // identity's federated credentials through ARM's REST surface, in Azure's shape.
    arm.create_role_assignment(pb::CreateRoleAssignmentRequest {
        scope: format!(
            "/subscriptions/{}/resourceGroups/rg1",
            sb.endpoints.subscription_id
        ),
        role: "Reader".into(),
        principal_id: id.principal_id.clone(),
        principal_type: "ServicePrincipal".into(),
    })
    .await
    .unwrap();
    let (status, list) = sb
        .arm_rest_get(
            &format!(
                "{}/federatedIdentityCredentials?api-version=2023-01-31",
                id.id
            ),
            Some(token),
        )
        .await;
    assert_eq!(status, 200, "{list}");
    let item = &list["value"][0];
    assert_eq!(item["name"], "aks1-app");
    assert_eq!(
        item["type"],
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
    );
    assert_eq!(item["properties"]["issuer"], issuer.as_str());
    assert_eq!(item["properties"]["subject"], SUBJECT);
    assert_eq!(
        item["properties"]["audiences"][0],
        "api://AzureADTokenExchange"
    );

    // Another service account of the same cluster: no credential for its subject.
    let other = sa_token(&mut arm, "other").await;
    let (status, body) = exchange(&sb, &id.tenant_id, &id.client_id, &other.token).await;
    assert_eq!((status, code(&body)), (400, 70021), "{body}");

    // Deleting the credential: Azure AD no longer trusts the issuer for this identity.
    arm.delete_federated_identity_credential(pb::DeleteFederatedIdentityCredentialRequest {
        resource_group: "rg1".into(),
        identity_name: "id1".into(),
        name: "aks1-app".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (status, body) = exchange(&sb, &id.tenant_id, &id.client_id, &t.token).await;
    assert_eq!((status, code(&body)), (401, 700211), "{body}");

    // A second credential, then the identity goes and its principal with it.
    arm.create_federated_identity_credential(pb::CreateFederatedIdentityCredentialRequest {
        resource_group: "rg1".into(),
        identity_name: "id1".into(),
        name: "aks1-app".into(),
        issuer: issuer.clone(),
        subject: SUBJECT.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (status, body) = exchange(&sb, &id.tenant_id, &id.client_id, &t.token).await;
    assert_eq!(status, 200, "{body}");
    arm.delete_user_assigned_identity(pb::DeleteUserAssignedIdentityRequest {
        resource_group: "rg1".into(),
        name: "id1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (status, body) = exchange(&sb, &id.tenant_id, &id.client_id, &t.token).await;
    assert_eq!((status, code(&body)), (400, 700016), "{body}");

    // Deleting the group deletes the cluster: its issuer stops answering.
    arm.delete_resource_group(pb::DeleteResourceGroupRequest {
        name: "rg1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let status = sb
        .http
        .get(format!("{issuer}.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_credentials_follow_the_service_rules() {
    let sb = Sandbox::start().await;
    group(&sb, "rg1").await;
    let mut arm = sb.arm().await;
    arm.create_user_assigned_identity(pb::CreateUserAssignedIdentityRequest {
        resource_group: "rg1".into(),
        name: "id1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let create = |name: String, issuer: &str, subject: String, audiences: Vec<String>| {
        pb::CreateFederatedIdentityCredentialRequest {
            resource_group: "rg1".into(),
            identity_name: "id1".into(),
            name,
            issuer: issuer.into(),
            subject,
            audiences,
            ..Default::default()
        }
    };
    let https = "https://eastus.oic.prod-aks.azure.com/t/c/";
    for bad in [
        create("ab".into(), https, SUBJECT.into(), vec![]),
        create(
            "ok-name".into(),
            "http://example.com/",
            SUBJECT.into(),
            vec![],
        ),
        create("ok-name".into(), https, String::new(), vec![]),
        create(
            "ok-name".into(),
            https,
            SUBJECT.into(),
            vec!["a".into(), "b".into()],
        ),
    ] {
        let err = arm
            .create_federated_identity_credential(bad.clone())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err}");
    }
    for i in 0..20 {
        arm.create_federated_identity_credential(create(
            format!("fic-{i}"),
            https,
            format!("system:serviceaccount:default:sa{i}"),
            vec![],
        ))
        .await
        .unwrap();
    }
    // The 21st, and a second credential for an issuer and subject pair, are refused.
    let err = arm
        .create_federated_identity_credential(create("fic-20".into(), https, "x".into(), vec![]))
        .await
        .unwrap_err();
    assert!(err.message().contains("maximum of 20"), "{err}");
    let err = arm
        .create_federated_identity_credential(create(
            "fic-0".into(),
            https,
            "system:serviceaccount:default:sa1".into(),
            vec![],
        ))
        .await
        .unwrap_err();
    assert!(err.message().contains("already has issuer"), "{err}");
    let list = arm
        .list_federated_identity_credentials(pb::ListFederatedIdentityCredentialsRequest {
            resource_group: "rg1".into(),
            identity_name: "id1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .credentials;
    assert_eq!(list.len(), 20);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_arm_sets_credentials_on_msrp_and_only_msrp_on_azure_ad() {
    let sb = Sandbox::start().await;
    let e = &sb.endpoints;
    let data = sb.dir.path();
    // A host (or a VM that stole its certificate) may not set federated credentials on MSRP.
    let mut msrp =
        MsrpClient::new(channel_as(data, Role::Host("host-1".into()), &e.msrp_grpc).await);
    let err = msrp
        .set_federated_identity_credentials(misim_proto::msrp::SetFederatedIdentityCredentialsRequest {
            resource_id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x".into(),
            credentials: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    // ARM may not bypass MSRP to set them on Azure AD.
    let mut aad = AadAdminClient::new(channel_as(data, Role::Arm, &e.aad_grpc).await);
    let err = aad
        .set_federated_identity_credentials(
            misim_proto::aad::SetFederatedIdentityCredentialsRequest {
                tenant_id: e.tenant_id.clone(),
                object_id: "o".into(),
                credentials: vec![],
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    sb.stop().await;
}
