//! The REST surface (step 7): bearer validation against a fake Azure AD, RBAC, and Azure's JSON shapes.

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::fakes::{serve_aad_http, SigningKey, TENANT};
use crate::{Sandbox, T0};

struct Rest {
    sb: Sandbox,
    key: SigningKey,
    vm_path: String,
    sub: String,
    http: reqwest::Client,
    _aad: CancellationToken,
}

/// A sandbox with a fake Azure AD serving `key`, group `rg` and VM `vm` with a system identity.
async fn setup() -> Rest {
    let key = SigningKey::generate(T0);
    let aad = CancellationToken::new();
    let aad_url = serve_aad_http(&key, aad.clone()).await;
    let sb = Sandbox::start_with_aad(&aad_url).await;
    let arm = &sb.arm;
    let sub = arm.subscription("").unwrap().subscription_id;
    arm.create_group("", "rg", "westeurope", Default::default())
        .await
        .unwrap();
    let mut tags = std::collections::BTreeMap::new();
    tags.insert("env".to_string(), "ci".to_string());
    let req = misim_arm::CreateVm {
        resource: misim_arm::NewResource {
            resource_group: "rg".into(),
            name: "vm".into(),
            tags,
            ..Default::default()
        },
        ..Default::default()
    };
    arm.create_vm(req).await.unwrap();
    arm.assign_identity(misim_arm::IdentityTarget::vm("", "rg", "vm"), true, &[])
        .await
        .unwrap();
    let vm_path = format!(
        "/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    Rest {
        sb,
        key,
        vm_path,
        sub,
        http,
        _aad: aad,
    }
}

impl Rest {
    fn token(&self, oid: &str) -> String {
        self.key
            .token(&self.key.kid, oid, self.sb.clock.now(), 3600)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Option<String>, Value) {
        let mut req = self.http.get(format!("{}{path}", self.sb.rest_url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let www = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        (status, www, resp.json().await.unwrap())
    }

    async fn grant(&self, scope: &str, role: &str, oid: &str) {
        self.sb
            .arm
            .create_role_assignment(scope, role, oid, "")
            .await
            .unwrap();
    }
}

fn oid() -> String {
    uuid::Uuid::new_v4().to_string()
}

const API: &str = "?api-version=2024-03-01";

#[tokio::test]
async fn missing_authorization_header_is_401_authentication_failed() {
    let r = setup().await;
    let (status, www, body) = r.get(&format!("{}{API}", r.vm_path), None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "AuthenticationFailed");
    assert_eq!(
        body["error"]["message"],
        "Authentication failed. The 'Authorization' header is missing."
    );
    let www = www.expect("WWW-Authenticate header");
    assert!(www.starts_with("Bearer authorization_uri=\""), "{www}");
    assert!(www.contains("error=\"invalid_token\""), "{www}");
}

#[tokio::test]
async fn token_signed_by_another_key_is_401_invalid_authentication_token() {
    let r = setup().await;
    let impostor = SigningKey::generate(T0);
    let forged = impostor.token(&r.key.kid, &oid(), r.sb.clock.now(), 3600);
    let (status, www, body) = r.get(&format!("{}{API}", r.vm_path), Some(&forged)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    assert!(www.unwrap().contains("error=\"invalid_token\""));
}

#[tokio::test]
async fn expired_token_is_401_expired_authentication_token() {
    let r = setup().await;
    let who = oid();
    r.grant(&format!("/subscriptions/{}", r.sub), "Reader", &who)
        .await;
    let token = r.token(&who);
    assert_eq!(
        r.get(&format!("{}{API}", r.vm_path), Some(&token)).await.0,
        200
    );
    r.sb.clock.advance(3600 + 301);
    let (status, www, body) = r.get(&format!("{}{API}", r.vm_path), Some(&token)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "ExpiredAuthenticationToken");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("The access token expiry UTC time '"));
    assert!(www.is_some());
}

#[tokio::test]
async fn missing_api_version_is_400() {
    let r = setup().await;
    let (status, _, body) = r.get(&r.vm_path, Some(&r.token(&oid()))).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        serde_json::json!({"error":{"code":"MissingApiVersionParameter","message":"The api-version query parameter (?api-version=) is required for all requests."}})
    );
}

#[tokio::test]
async fn caller_without_a_role_is_403_authorization_failed() {
    let r = setup().await;
    let who = oid();
    let (status, www, body) = r
        .get(&format!("{}{API}", r.vm_path), Some(&r.token(&who)))
        .await;
    assert_eq!(status, 403);
    assert!(www.is_none());
    let expected = format!(
        "The client '{who}' with object id '{who}' does not have authorization to perform action 'Microsoft.Compute/virtualMachines/read' over scope '{}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
        r.vm_path
    );
    assert_eq!(
        body,
        serde_json::json!({"error":{"code":"AuthorizationFailed","message":expected}})
    );
}

#[tokio::test]
async fn reader_at_group_scope_reads_the_vm_in_azure_shape() {
    let r = setup().await;
    let who = oid();
    r.grant(
        &format!("/subscriptions/{}/resourceGroups/rg", r.sub),
        "Reader",
        &who,
    )
    .await;
    let path = r
        .vm_path
        .to_ascii_lowercase()
        .replace(&r.sub.to_ascii_lowercase(), &r.sub);
    let (status, _, body) = r.get(&format!("{path}{API}"), Some(&r.token(&who))).await;
    assert_eq!(status, 200, "{body}");
    let vm = r.sb.arm.get_vm("", "rg", "vm").await.unwrap();
    let sys = vm.identity.system_identity.clone().unwrap();
    assert_eq!(body["id"], r.vm_path);
    assert_eq!(body["name"], "vm");
    assert_eq!(body["type"], "Microsoft.Compute/virtualMachines");
    assert_eq!(body["location"], "westeurope");
    assert_eq!(body["tags"], serde_json::json!({"env":"ci"}));
    assert_eq!(
        body["identity"],
        serde_json::json!({"type":"SystemAssigned","principalId":sys.principal_id,"tenantId":TENANT})
    );
    assert_eq!(body["properties"]["vmId"], vm.vm_id);
    assert_eq!(
        body["properties"]["hardwareProfile"]["vmSize"],
        "Standard_D2s_v3"
    );
    assert_eq!(
        body["properties"]["storageProfile"]["osDisk"]["osType"],
        "Linux"
    );
    assert_eq!(body["properties"]["provisioningState"], "Succeeded");

    let (status, _, list) = r.get(&format!("/subscriptions/{}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines{API}", r.sub), Some(&r.token(&who))).await;
    assert_eq!(status, 200);
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
    let (status, _, _) = r
        .get(
            &format!("/subscriptions/{}{API}", r.sub),
            Some(&r.token(&who)),
        )
        .await;
    assert_eq!(
        status, 403,
        "a group-scope role does not grant reading the subscription"
    );
}

#[tokio::test]
async fn missing_resources_are_404_after_authorization() {
    let r = setup().await;
    let who = oid();
    r.grant(&format!("/subscriptions/{}", r.sub), "Reader", &who)
        .await;
    let token = r.token(&who);
    let (status, _, body) = r.get(&format!("{}2{API}", r.vm_path), Some(&token)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "ResourceNotFound");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("The Resource 'Microsoft.Compute/virtualMachines/vm2' under resource group 'rg' was not found."));
    let (status, _, body) = r
        .get(
            &format!("/subscriptions/{}/resourceGroups/nope{API}", r.sub),
            Some(&token),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "ResourceGroupNotFound");
    let (status, _, body) = r
        .get(&format!("/subscriptions/{}{API}", r.sub), Some(&token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["tenantId"], TENANT);
    assert_eq!(body["state"], "Enabled");
}

#[tokio::test]
async fn user_assigned_identity_has_azure_shape() {
    let r = setup().await;
    let who = oid();
    r.grant(&format!("/subscriptions/{}", r.sub), "Owner", &who)
        .await;
    let u =
        r.sb.arm
            .create_user_assigned_identity("", "rg", "id1", "", Default::default())
            .await
            .unwrap();
    let ids = u.identity.clone().unwrap();
    let path = format!("{}?api-version=2024-11-30", u.id);
    let (status, _, body) = r.get(&path, Some(&r.token(&who))).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["type"],
        "Microsoft.ManagedIdentity/userAssignedIdentities"
    );
    assert_eq!(
        body["properties"],
        serde_json::json!({"tenantId":TENANT,"principalId":ids.principal_id,"clientId":ids.client_id,"isolationScope":"None"})
    );
    let health = r
        .http
        .get(format!("{}/healthz", r.sb.rest_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}
