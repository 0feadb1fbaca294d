//! Signing-key rotation over HTTP: a token signed before a rotation keeps verifying against the
//! published JWKS until it has expired, then its key leaves the key set; rotation survives restart.

mod common;

use common::*;
use misim_core::Clock;
use serde_json::Value;

/// Rotation period used here, seconds (a week; tokens live [`LIFETIME`] = a day).
const ROTATE: i64 = 7 * 86_400;
/// Clock skew Azure AD adds to a retired key's retention, seconds.
const SKEW: i64 = 300;

async fn token(aad: &Aad, cert: &ClientCert, tid: &str, cid: &str) -> String {
    let now = aad.clock.now();
    let aud = format!("{}/{tid}/oauth2/token", aad.http_url);
    let assertion = imds_assertion(cert, cid, &aud, now);
    let form = v1_form(cid, &assertion, "https://management.azure.com/");
    let (status, body) = aad.post_form(&format!("/{tid}/oauth2/token"), &form).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

async fn kids(aad: &Aad, path: &str) -> Vec<String> {
    let (status, jwks) = aad.get_json(path).await;
    assert_eq!(status, 200);
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k: &Value| k["kid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn old_key_stays_in_jwks_until_its_tokens_expire() {
    let dir = tempfile::tempdir().unwrap();
    let aad = start_with(dir.path(), Clock::manual(T0), ROTATE, false).await;
    let cert = client_cert();
    let (tenant, sp) = aad.principal(VM_ID, &cert).await;
    let (tid, cid) = (tenant.tenant_id.as_str(), sp.app_id.as_str());
    let discovery = format!("/{tid}/.well-known/openid-configuration");

    let a = token(&aad, &cert, tid, cid).await;
    aad.clock.advance(ROTATE - 1);
    assert_eq!(kid(&token(&aad, &cert, tid, cid).await), kid(&a));

    aad.clock.advance(1);
    let b = token(&aad, &cert, tid, cid).await;
    assert_ne!(kid(&b), kid(&a), "token B is signed by a new key");
    for path in [
        "/common/discovery/keys",
        &format!("/{tid}/discovery/v2.0/keys"),
    ] {
        assert_eq!(kids(&aad, path).await, [kid(&b), kid(&a)], "{path}");
    }
    // A validator that refreshes JWKS verifies both tokens.
    let (_, claims_a) =
        verify_via_discovery(&aad, &discovery, &a, "https://management.azure.com/").await;
    let (_, claims_b) =
        verify_via_discovery(&aad, &discovery, &b, "https://management.azure.com/").await;
    assert_eq!(claims_a["appid"], cid);
    assert_eq!(claims_b["appid"], cid);

    // Key 1 last signed at the rotation (T0 + ROTATE); its tokens expire LIFETIME later, plus skew.
    aad.clock.advance(LIFETIME + SKEW - 1);
    assert_eq!(kids(&aad, "/common/discovery/keys").await.len(), 2);
    aad.clock.advance(1);
    assert_eq!(kids(&aad, "/common/discovery/keys").await, [kid(&b)]);
    assert_eq!(kid(&token(&aad, &cert, tid, cid).await), kid(&b));
    aad.stop().await;
}

#[tokio::test]
async fn rotated_keys_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let aad = start_with(dir.path(), Clock::manual(T0), ROTATE, false).await;
    let cert = client_cert();
    let (tenant, sp) = aad.principal(VM_ID, &cert).await;
    let (tid, cid) = (tenant.tenant_id.clone(), sp.app_id.clone());
    let a = token(&aad, &cert, &tid, &cid).await;
    aad.clock.advance(ROTATE);
    let b = token(&aad, &cert, &tid, &cid).await;
    aad.stop().await;

    let aad = start_with(dir.path(), Clock::manual(T0 + ROTATE + 60), ROTATE, false).await;
    assert_eq!(
        kids(&aad, "/common/discovery/keys").await,
        [kid(&b), kid(&a)]
    );
    assert_eq!(kid(&token(&aad, &cert, &tid, &cid).await), kid(&b));
    aad.stop().await;
}
