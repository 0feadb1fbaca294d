//! Azure AD over HTTPS: discovery served on the HTTPS listener names https URLs (MSAL posts to the
//! discovered `token_endpoint` and requires https), the plain-HTTP listener keeps naming http URLs,
//! and a token request over TLS succeeds for a client that trusts misim's CA.

mod common;

use common::*;
use misim_core::Clock;
use serde_json::Value;

#[tokio::test]
async fn https_discovery_names_https_endpoints_and_issues_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let aad = start_with(dir.path(), Clock::manual(T0), 0, true).await;
    let https_url = aad.https_url.clone().unwrap();
    let ca = reqwest::Certificate::from_pem(aad.ca_pem.as_ref().unwrap().as_bytes()).unwrap();
    let tls = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let cert = client_cert();
    let (tenant, sp) = aad.principal(UAMI_ID, &cert).await;
    let (tid, cid) = (tenant.tenant_id.as_str(), sp.app_id.as_str());

    let get = |url: String| {
        let tls = tls.clone();
        async move {
            tls.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let v2 = get(format!(
        "{https_url}/{tid}/v2.0/.well-known/openid-configuration"
    ))
    .await;
    assert_eq!(
        v2["token_endpoint"],
        format!("{https_url}/{tid}/oauth2/v2.0/token")
    );
    assert_eq!(
        v2["jwks_uri"],
        format!("{https_url}/{tid}/discovery/v2.0/keys")
    );
    assert_eq!(
        v2["issuer"],
        format!("https://login.microsoftonline.com/{tid}/v2.0")
    );
    let v1 = get(format!(
        "{https_url}/{tid}/.well-known/openid-configuration"
    ))
    .await;
    assert_eq!(
        v1["token_endpoint"],
        format!("{https_url}/{tid}/oauth2/token")
    );
    let (_, plain) = aad
        .get_json(&format!("/{tid}/v2.0/.well-known/openid-configuration"))
        .await;
    assert_eq!(
        plain["token_endpoint"],
        format!("{}/{tid}/oauth2/v2.0/token", aad.http_url)
    );
    let jwks = get(v2["jwks_uri"].as_str().unwrap().to_string()).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);

    // The assertion audience is the discovered https token endpoint, as MSAL builds it.
    let endpoint = v2["token_endpoint"].as_str().unwrap();
    let assertion = imds_assertion(&cert, cid, endpoint, T0);
    let resp = tls
        .post(endpoint)
        .form(&v2_form(
            cid,
            &assertion,
            "https://management.azure.com/.default",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    // ARM accepts v1 tokens only, so Entra issues a v1-shaped token from the v2 endpoint too.
    let claims = verify_via_discovery(
        &aad,
        &format!("/{tid}/.well-known/openid-configuration"),
        body["access_token"].as_str().unwrap(),
        "https://management.azure.com",
    )
    .await
    .1;
    assert_eq!(
        (claims["appid"].as_str(), claims["ver"].as_str()),
        (Some(cid), Some("1.0"))
    );
    assert_eq!(claims["xms_mirid"], mirid(UAMI_ID));
    aad.stop().await;
}
