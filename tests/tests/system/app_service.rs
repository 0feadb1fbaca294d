//! App Service / Functions web apps end to end: ARM creates `Microsoft.Web/sites` with a per-site
//! secret, places the site on a host, MSRP creates its system-assigned identity, and the host serves
//! the App Service identity protocol
//! (<https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference>)
//! on the site's loopback listener: every error of the protocol, and tokens for the system- and a
//! user-assigned identity that verify against Azure AD's JWKS with the site as `xms_mirid` /
//! `xms_az_rid`. Deleting the site closes its endpoint and deletes its system-assigned identity.

use crate::lifecycle_common::*;
use misim_proto::arm as pb;
use misim_tests::Sandbox;
use serde_json::Value;

async fn site(sb: &Sandbox, rg: &str, name: &str) -> pb::WebApp {
    sb.arm()
        .await
        .create_web_app(pb::CreateWebAppRequest {
            resource_group: rg.into(),
            name: name.into(),
            host: "host-2".into(),
            ..Default::default()
        })
        .await
        .expect("create web app")
        .into_inner()
}

/// `GET {endpoint}?{query}` with `X-IDENTITY-HEADER: {header}` when given.
async fn call(endpoint: &str, header: Option<&str>, query: &[(&str, &str)]) -> (u16, Value) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = http.get(endpoint).query(query);
    if let Some(h) = header {
        req = req.header("X-IDENTITY-HEADER", h);
    }
    let resp = req.send().await.expect("identity endpoint answers");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    (status, resp.json().await.expect("JSON body"))
}

fn assert_error(got: (u16, Value), status: u16, message_part: &str) {
    let (s, body) = got;
    assert_eq!(s, status, "{body}");
    assert_eq!(body["statusCode"], status, "{body}");
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(message_part),
        "{message_part:?} not in {msg:?}"
    );
}

const V: (&str, &str) = ("api-version", "2019-08-01");
const R: (&str, &str) = ("resource", MGMT);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_service_protocol_errors_and_tokens_for_system_and_user_assigned() {
    let sb = Sandbox::start().await;
    group(&sb, "rg1").await;
    let web = site(&sb, "rg1", "web1").await;
    assert_eq!(web.host, "host-2");
    assert_eq!(web.kind, "app");
    assert!(
        web.identity_endpoint.starts_with("http://127.0.0.1:")
            && web.identity_endpoint.ends_with("/msi/token"),
        "{}",
        web.identity_endpoint
    );
    assert_eq!(web.identity_header.len(), 64);
    let (ep, secret) = (web.identity_endpoint.as_str(), web.identity_header.as_str());

    // The secret header comes first: missing, wrong or a prefix of the right one.
    assert_error(call(ep, None, &[V, R]).await, 401, "X-IDENTITY-HEADER");
    assert_error(
        call(ep, Some("wrong"), &[V, R]).await,
        401,
        "does not match",
    );
    assert_error(
        call(ep, Some(&secret[..32]), &[V, R]).await,
        401,
        "does not match",
    );
    // api-version: required, 2019-08-01 only.
    assert_error(call(ep, Some(secret), &[R]).await, 400, "api-version");
    let old = ("api-version", "2017-09-01");
    assert_error(call(ep, Some(secret), &[old, R]).await, 400, "2017-09-01");
    // resource required.
    assert_error(call(ep, Some(secret), &[V]).await, 400, "resource");
    // No identity yet: App Service's "not found" message.
    let not_found = "No User Assigned or Delegated Managed Identity found";
    assert_error(call(ep, Some(secret), &[V, R]).await, 400, not_found);

    // System-assigned identity: enabled through ARM, MSRP creates it, the host is configured.
    let block = sb
        .arm()
        .await
        .assign_web_app_identity(pb::AssignVmIdentityRequest {
            resource_group: "rg1".into(),
            name: "web1".into(),
            system_assigned: true,
            ..Default::default()
        })
        .await
        .expect("enable system-assigned")
        .into_inner();
    assert_eq!(block.r#type, "SystemAssigned");
    let (status, body) = call(ep, Some(secret), &[V, R]).await;
    assert_eq!(status, 200, "{body}");
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_token",
            "client_id",
            "expires_on",
            "resource",
            "token_type"
        ],
        "App Service's response shape"
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], MGMT);
    let expires_on: i64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    assert!(expires_on > 0);
    let claims = sb
        .verify(body["access_token"].as_str().unwrap(), MGMT)
        .await;
    assert_eq!(claims["oid"], block.principal_id.as_str());
    assert_eq!(claims["appid"], body["client_id"]);
    let mirid = claims["xms_mirid"].as_str().unwrap();
    assert!(
        mirid.ends_with("/providers/Microsoft.Web/sites/web1"),
        "{mirid}"
    );

    // A user-assigned identity, selected by client_id, principal_id, object_id or mi_res_id.
    let id = uami(&sb, "rg1", "id1").await;
    sb.arm()
        .await
        .assign_web_app_identity(pb::AssignVmIdentityRequest {
            resource_group: "rg1".into(),
            name: "web1".into(),
            user_assigned_identities: vec![id.id.clone()],
            ..Default::default()
        })
        .await
        .expect("assign user-assigned");
    for sel in [
        ("client_id", id.client_id.as_str()),
        ("principal_id", id.principal_id.as_str()),
        ("object_id", id.principal_id.as_str()),
        ("mi_res_id", id.id.as_str()),
    ] {
        let (status, body) = call(ep, Some(secret), &[V, R, sel]).await;
        assert_eq!(status, 200, "{sel:?}: {body}");
        assert_eq!(body["client_id"], id.client_id.as_str(), "{sel:?}");
    }
    let (_, body) = call(ep, Some(secret), &[V, R, ("client_id", &id.client_id)]).await;
    let claims = sb
        .verify(body["access_token"].as_str().unwrap(), MGMT)
        .await;
    assert_eq!(claims["oid"], id.principal_id.as_str());
    let rid = claims["xms_az_rid"].as_str().unwrap_or_default();
    assert!(
        rid.ends_with("/providers/Microsoft.Web/sites/web1"),
        "{claims}"
    );
    // Without a selector the system-assigned identity still answers.
    let (_, body) = call(ep, Some(secret), &[V, R]).await;
    assert_ne!(body["client_id"], id.client_id.as_str());

    // Unknown ids of each selector, and two selectors at once.
    let other = "00000000-0000-0000-0000-0000000000ff";
    for sel in [
        ("client_id", other),
        ("principal_id", other),
        ("mi_res_id", "/subscriptions/x"),
    ] {
        assert_error(call(ep, Some(secret), &[V, R, sel]).await, 400, not_found);
    }
    let two = [
        V,
        R,
        ("client_id", id.client_id.as_str()),
        ("mi_res_id", id.id.as_str()),
    ];
    assert_error(call(ep, Some(secret), &two).await, 400, "Only one of");

    // An unknown resource: Azure AD's AADSTS500011 behind App Service's 500.
    let (status, body) = call(
        ep,
        Some(secret),
        &[V, ("resource", "https://unknown.example")],
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["statusCode"], 500);
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.starts_with("An unexpected error occured while fetching the AAD Token."),
        "{msg}"
    );
    assert!(msg.contains("AADSTS500011"), "{msg}");
    assert!(body["correlationId"].is_string());

    // Another site on the same host cannot use this site's secret or see its identities.
    let web2 = site(&sb, "rg1", "web2").await;
    assert_ne!(web2.identity_header, web.identity_header);
    assert_error(
        call(&web2.identity_endpoint, Some(secret), &[V, R]).await,
        401,
        "does not match",
    );
    let sel = ("client_id", id.client_id.as_str());
    assert_error(
        call(
            &web2.identity_endpoint,
            Some(&web2.identity_header),
            &[V, R, sel],
        )
        .await,
        400,
        not_found,
    );

    // Deleting the site closes its endpoint; the user-assigned identity stays.
    sb.arm()
        .await
        .delete_web_app(pb::DeleteWebAppRequest {
            resource_group: "rg1".into(),
            name: "web1".into(),
            ..Default::default()
        })
        .await
        .expect("delete web app");
    let gone = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(ep)
        .send()
        .await;
    assert!(gone.is_err(), "endpoint closed after delete");
    let err = sb
        .arm()
        .await
        .get_web_app(pb::GetWebAppRequest {
            resource_group: "rg1".into(),
            name: "web1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_over_rest_with_the_identity_block_and_without_the_secret() {
    let sb = Sandbox::start().await;
    let token = owner(&sb).await;
    group(&sb, "rg2").await;
    let id = uami(&sb, "rg2", "web-id").await;
    let path = format!(
        "{}/providers/Microsoft.Web/sites/web-rest",
        rg_id(&sb, "rg2")
    );
    let body = serde_json::json!({
        "location": "westeurope",
        "kind": "functionapp",
        "identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {id.id.clone(): {}}},
    });
    let (status, site) = rest(&sb, "PUT", &path, &token, Some(body)).await;
    assert_eq!(status, 201, "{site}");
    assert_eq!(site["type"], "Microsoft.Web/sites");
    assert_eq!(site["kind"], "functionapp");
    assert_eq!(
        site["properties"]["defaultHostName"],
        "web-rest.azurewebsites.net"
    );
    let identity = &site["identity"];
    assert_eq!(identity["type"], "SystemAssigned, UserAssigned", "{site}");
    assert!(identity["principalId"].is_string() && identity["tenantId"].is_string());
    let entry = identity["userAssignedIdentities"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    assert_eq!(entry["clientId"], id.client_id.as_str());
    assert_eq!(entry["principalId"], id.principal_id.as_str());

    // The gRPC admin view has the secret; REST never shows it.
    let grpc = sb
        .arm()
        .await
        .get_web_app(pb::GetWebAppRequest {
            resource_group: "rg2".into(),
            name: "web-rest".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (status, got) = rest(&sb, "GET", &path, &token, None).await;
    assert_eq!(status, 200, "{got}");
    assert!(!got.to_string().contains(&grpc.identity_header));
    assert_eq!(got["identity"], site["identity"]);

    // PATCH removes the user-assigned identity (null), keeps the system-assigned one.
    let patch = serde_json::json!({"identity": {"type": "SystemAssigned", "userAssignedIdentities": {id.id.clone(): null}}});
    let (status, patched) = rest(&sb, "PATCH", &path, &token, Some(patch)).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["identity"]["type"], "SystemAssigned");
    assert_eq!(
        patched["identity"]["principalId"],
        site["identity"]["principalId"]
    );

    // Lists: the group's sites and the subscription's.
    let list_path = format!("{}/providers/Microsoft.Web/sites", rg_id(&sb, "rg2"));
    let (status, list) = rest(&sb, "GET", &list_path, &token, None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["value"][0]["name"], "web-rest");
    let sub_path = format!("{}/providers/Microsoft.Web/sites", sub(&sb));
    let (status, list) = rest(&sb, "GET", &sub_path, &token, None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["value"].as_array().unwrap().len(), 1);

    let (status, _) = rest(&sb, "DELETE", &path, &token, None).await;
    assert_eq!(status, 200);
    let (status, err) = rest(&sb, "GET", &path, &token, None).await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["error"]["code"], "ResourceNotFound");
    let (status, _) = rest(&sb, "DELETE", &path, &token, None).await;
    assert_eq!(status, 204);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_keeps_its_endpoint_secret_and_identity_across_a_restart_and_goes_with_its_group() {
    let mut sb = Sandbox::start().await;
    group(&sb, "rg3").await;
    let web = site(&sb, "rg3", "web-keep").await;
    let block = sb
        .arm()
        .await
        .assign_web_app_identity(pb::AssignVmIdentityRequest {
            resource_group: "rg3".into(),
            name: "web-keep".into(),
            system_assigned: true,
            ..Default::default()
        })
        .await
        .expect("enable system-assigned")
        .into_inner();

    sb.restart().await;
    let again = sb
        .arm()
        .await
        .get_web_app(pb::GetWebAppRequest {
            resource_group: "rg3".into(),
            name: "web-keep".into(),
            ..Default::default()
        })
        .await
        .expect("site after restart")
        .into_inner();
    assert_eq!(again.identity_header, web.identity_header, "same secret");
    assert_eq!(
        again.identity_endpoint, web.identity_endpoint,
        "same port when free"
    );
    let (status, body) = call(
        &again.identity_endpoint,
        Some(&again.identity_header),
        &[V, R],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let claims = sb
        .verify(body["access_token"].as_str().unwrap(), MGMT)
        .await;
    assert_eq!(claims["oid"], block.principal_id.as_str());

    // Deleting the group deletes the site and closes its endpoint.
    sb.arm()
        .await
        .delete_resource_group(pb::DeleteResourceGroupRequest {
            name: "rg3".into(),
            ..Default::default()
        })
        .await
        .expect("delete group");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        http.get(&again.identity_endpoint).send().await.is_err(),
        "endpoint closed"
    );
    sb.stop().await;
}
