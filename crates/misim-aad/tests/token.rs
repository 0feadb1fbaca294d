//! Token endpoint over HTTP: successful v1/v2 issuance verified against the discovered JWKS, and every
//! AADSTS rejection with its status and Entra's error body.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, Header};
use misim_core::Clock;
use serde_json::{json, Value};

#[tokio::test]
async fn v1_and_v2_tokens_verify_against_discovered_jwks_with_expected_claims() {
    let dir = tempfile::tempdir().unwrap();
    let aad = start(dir.path(), Clock::manual(T0)).await;
    let cert = client_cert();
    let (tenant, sp) = aad.principal(VM_ID, &cert).await;
    let tid = tenant.tenant_id.as_str();
    let cid = sp.app_id.as_str();
    assert_eq!(
        http()
            .get(format!("{}/healthz", aad.http_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );

    // v1, as IMDS asks: resource with trailing slash, assertion audience = v1 endpoint.
    let aud = format!("{}/{tid}/oauth2/token", aad.http_url);
    let assertion = imds_assertion(&cert, cid, &aud, T0);
    let (status, body) = aad
        .post_form(
            &format!("/{tid}/oauth2/token"),
            &v1_form(cid, &assertion, "https://management.azure.com/"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], "https://management.azure.com/");
    assert_eq!(body["expires_in"], LIFETIME.to_string());
    assert_eq!(body["expires_on"], (T0 + LIFETIME).to_string());
    assert_eq!(body["not_before"], (T0 - 300).to_string());
    let token = body["access_token"].as_str().unwrap();
    let (header, c) = verify_via_discovery(
        &aad,
        &format!("/{tid}/.well-known/openid-configuration"),
        token,
        "https://management.azure.com/",
    )
    .await;
    assert_eq!(header.x5t, header.kid);
    assert_eq!(c["iss"], format!("https://sts.windows.net/{tid}/"));
    assert_eq!(c["idp"], c["iss"]);
    assert_eq!(
        (
            c["appid"].as_str(),
            c["appidacr"].as_str(),
            c["ver"].as_str()
        ),
        (Some(cid), Some("2"), Some("1.0"))
    );
    assert_eq!(
        (c["oid"].as_str(), c["sub"].as_str()),
        (Some(sp.object_id.as_str()), Some(sp.object_id.as_str()))
    );
    assert_eq!(
        (
            c["tid"].as_str(),
            c["idtyp"].as_str(),
            c["xms_mirid"].as_str()
        ),
        (Some(tid), Some("app"), Some(mirid(VM_ID).as_str()))
    );
    assert_eq!(
        (c["iat"].as_i64(), c["nbf"].as_i64(), c["exp"].as_i64()),
        (Some(T0 - 300), Some(T0 - 300), Some(T0 + LIFETIME))
    );
    assert!(c.get("xms_az_rid").is_none());

    // v2 through the tenant's domain, msal-style assertion: PS256, padded x5t#S256, float times, no nbf,
    // audience = v2 endpoint on another host; xms_az_rid is copied into the token.
    let mut header = Header::new(Algorithm::PS256);
    header.x5t_s256 = Some(x5t_s256_padded(&cert.cert_der));
    let claims = json!({
        "aud": format!("https://login.example/{tid}/oauth2/v2.0/token"),
        "iss": cid,
        "sub": cid,
        "jti": "j-msal",
        "iat": T0 as f64 + 0.523,
        "exp": (T0 + 600) as f64 + 0.523,
    });
    let assertion = sign(&cert, &header, &claims);
    let mut form = v2_form(cid, &assertion, "https://vault.azure.net/.default");
    form.push(("xms_az_rid", VM_ID));
    let (status, body) = aad
        .post_form("/misim.onmicrosoft.com/oauth2/v2.0/token", &form)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["expires_in"].as_i64(), body["ext_expires_in"].as_i64()),
        (Some(LIFETIME), Some(LIFETIME))
    );
    let token = body["access_token"].as_str().unwrap();
    let (header, c) = verify_via_discovery(
        &aad,
        &format!("/{tid}/v2.0/.well-known/openid-configuration"),
        token,
        // v2 tokens carry the resource application's ID: Key Vault's.
        "cfa8b339-82a2-471a-a3c9-0fc0be7a4093",
    )
    .await;
    assert!(header.x5t.is_none());
    assert_eq!(
        c["iss"],
        format!("https://login.microsoftonline.com/{tid}/v2.0")
    );
    assert_eq!(
        (c["azp"].as_str(), c["azpacr"].as_str(), c["ver"].as_str()),
        (Some(cid), Some("2"), Some("2.0"))
    );
    assert!(c.get("appid").is_none());
    assert_eq!(c["xms_az_rid"], VM_ID);

    // Rust azure_identity style: RS256, standard-base64 padded x5t, integer times without iat.
    let mut header = Header::new(Algorithm::RS256);
    header.x5t = Some(x5t_standard_padded(&cert.cert_der));
    let claims = json!({
        "aud": format!("https://h/{tid}/oauth2/v2.0/token"),
        "iss": cid,
        "sub": cid,
        "jti": "j-rust",
        "nbf": T0,
        "exp": T0 + 300,
    });
    let assertion = sign(&cert, &header, &claims);
    let (status, body) = aad
        .post_form(
            &format!("/{tid}/oauth2/token"),
            &v1_form(cid, &assertion, "https://storage.azure.com"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    aad.stop().await;
}

/// Posts `form` to the v1 (or v2) endpoint and asserts status, `error` and AADSTS code.
async fn expect_error(
    aad: &Aad,
    path: &str,
    form: &[(&str, &str)],
    status: u16,
    error: &str,
    code: u64,
) -> Value {
    let (got, body) = aad.post_form(path, form).await;
    assert_eq!(
        (got, body["error"].as_str(), body["error_codes"][0].as_u64()),
        (status, Some(error), Some(code)),
        "{body}"
    );
    body
}

#[tokio::test]
async fn token_rejections_carry_aadsts_codes_statuses_and_entra_body() {
    let dir = tempfile::tempdir().unwrap();
    let aad = start(dir.path(), Clock::manual(T0)).await;
    let cert = client_cert();
    let (tenant, sp) = aad.principal(VM_ID, &cert).await;
    let (tid, cid) = (tenant.tenant_id.as_str(), sp.app_id.as_str());
    let (v1, v2) = (
        format!("/{tid}/oauth2/token"),
        format!("/{tid}/oauth2/v2.0/token"),
    );
    let aud = format!("{}{v1}", aad.http_url);
    let fresh = || imds_assertion(&cert, cid, &aud, T0);
    let arm = "https://management.azure.com/";

    let a = fresh();
    let mut form = v1_form(cid, &a, arm);
    form[0] = ("grant_type", "password");
    expect_error(&aad, &v1, &form, 400, "unsupported_grant_type", 70003).await;
    let body = expect_error(
        &aad,
        "/00000000-0000-0000-0000-00000000dead/oauth2/token",
        &v1_form(cid, &a, arm),
        400,
        "invalid_request",
        90002,
    )
    .await;
    // Entra's body shape: description with trace/correlation/timestamp lines, ids, error_uri.
    let desc = body["error_description"].as_str().unwrap();
    assert!(
        desc.starts_with("AADSTS90002: Tenant '00000000-0000-0000-0000-00000000dead' not found."),
        "{desc}"
    );
    assert!(desc.contains(&format!(
        "\r\nTrace ID: {}\r\nCorrelation ID: {}\r\n",
        body["trace_id"].as_str().unwrap(),
        body["correlation_id"].as_str().unwrap()
    )));
    assert!(desc.ends_with("Timestamp: 2023-11-14 22:13:20Z"));
    assert_eq!(body["timestamp"], "2023-11-14 22:13:20Z");
    assert_eq!(
        body["error_uri"],
        "https://login.microsoftonline.com/error?code=90002"
    );

    let mut form = v2_form(cid, &a, "https://vault.azure.net/.default");
    form.push(("resource", arm));
    expect_error(&aad, &v2, &form, 400, "invalid_request", 901002).await;
    expect_error(
        &aad,
        &v2,
        &v2_form(cid, &a, "https://vault.azure.net/user_impersonation"),
        400,
        "invalid_scope",
        70011,
    )
    .await;
    let no_assertion: Vec<_> = v1_form(cid, &a, arm)
        .into_iter()
        .filter(|(k, _)| *k != "client_assertion")
        .collect();
    expect_error(&aad, &v1, &no_assertion, 401, "invalid_client", 7000218).await;
    let other = uuid::Uuid::new_v4().to_string();
    expect_error(
        &aad,
        &v1,
        &v1_form(&other, &a, arm),
        400,
        "unauthorized_client",
        700016,
    )
    .await;

    // Signed by a key whose certificate is not registered: unknown thumbprint, then a forged signature
    // under the registered certificate's thumbprint.
    let stranger = client_cert();
    let unknown = imds_assertion(&stranger, cid, &aud, T0);
    let body = expect_error(
        &aad,
        &v1,
        &v1_form(cid, &unknown, arm),
        401,
        "invalid_client",
        700027,
    )
    .await;
    let hex = misim_core::cert::sha1_thumbprint_hex(&stranger.cert_der);
    assert!(body["error_description"].as_str().unwrap().contains(&hex));
    let mut header = Header::new(Algorithm::RS256);
    header.x5t = Some(misim_core::cert::x5t(&cert.cert_der));
    let forged = sign(
        &stranger,
        &header,
        &json!({"aud": aud, "iss": cid, "sub": cid, "exp": T0 + 600}),
    );
    expect_error(
        &aad,
        &v1,
        &v1_form(cid, &forged, arm),
        401,
        "invalid_client",
        700027,
    )
    .await;

    let claims = |aud: &str, iss: &str| {
        let jti = uuid::Uuid::new_v4().to_string();
        json!({"aud": aud, "iss": iss, "sub": cid, "exp": T0 + 600, "jti": jti})
    };
    let wrong_iss = sign(&cert, &header, &claims(&aud, &other));
    expect_error(
        &aad,
        &v1,
        &v1_form(cid, &wrong_iss, arm),
        401,
        "invalid_client",
        700021,
    )
    .await;
    let wrong_aud = sign(
        &cert,
        &header,
        &claims(&format!("{}/{other}/oauth2/token", aad.http_url), cid),
    );
    expect_error(
        &aad,
        &v1,
        &v1_form(cid, &wrong_aud, arm),
        401,
        "invalid_client",
        700023,
    )
    .await;
    expect_error(
        &aad,
        &v1,
        &v1_form(cid, "not-a-jwt", arm),
        400,
        "invalid_request",
        50027,
    )
    .await;

    let body = expect_error(
        &aad,
        &v1,
        &v1_form(cid, &fresh(), "https://unknown.example/"),
        400,
        "invalid_resource",
        500011,
    )
    .await;
    let expected = format!(
        "AADSTS500011: The resource principal named https://unknown.example/ was not found in \
         the tenant named {tid}."
    );
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .starts_with(&expected));

    // Reuse: the same assertion (same jti) works again within its lifetime, as MSAL relies on.
    let once = fresh();
    assert_eq!(aad.post_form(&v1, &v1_form(cid, &once, arm)).await.0, 200);
    assert_eq!(aad.post_form(&v1, &v1_form(cid, &once, arm)).await.0, 200);

    // Time range: an assertion made now is rejected once the clock passes exp (600 s) + skew (300 s).
    let later = fresh();
    aad.clock.advance(901);
    expect_error(
        &aad,
        &v1,
        &v1_form(cid, &later, arm),
        401,
        "invalid_client",
        700024,
    )
    .await;
    aad.stop().await;
}
