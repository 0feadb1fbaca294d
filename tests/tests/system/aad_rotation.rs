//! Azure AD signing-key rotation end to end: a VM's IMDS token signed before a rotation keeps
//! verifying through discovery + JWKS (fetched over HTTPS, as a relying party would) until it has
//! expired; then the retired key leaves the key set.

use crate::aad_common::*;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde_json::Value;

const ROTATE: i64 = 7 * 86_400;
const LIFETIME: i64 = 86_399;
const SKEW: i64 = 300;

/// Verifies `token` like a validator that refreshes JWKS: discovery → jwks_uri → key by `kid`;
/// checks signature, issuer and audience. `Err` names what failed.
async fn verify(sys: &Sys, tid: &str, token: &str) -> Result<Value, String> {
    let doc = sys
        .get_json(&format!(
            "{}/{tid}/.well-known/openid-configuration",
            sys.endpoints.aad_https
        ))
        .await;
    let jwks = sys
        .get_json(doc["jwks_uri"].as_str().expect("jwks_uri"))
        .await;
    let want = kid(token);
    let jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == want.as_str())
        .ok_or_else(|| format!("kid {want} not in JWKS"))?;
    let key = DecodingKey::from_rsa_components(
        jwk["n"].as_str().expect("n"),
        jwk["e"].as_str().expect("e"),
    )
    .map_err(|e| e.to_string())?;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[doc["issuer"].as_str().expect("issuer")]);
    v.set_audience(&[MGMT]);
    decode::<Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

async fn token(sys: &Sys, imds: &str) -> String {
    let (status, body) = sys.imds_token(imds).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imds_tokens_verify_across_a_signing_key_rotation_until_they_expire() {
    let sys = Sys::start(|c| c.signing_key_rotation_secs = ROTATE).await;
    let tid = sys.endpoints.tenant_id.clone();
    let (vm, identity) = sys.vm_with_system_identity("rg1", "vm1").await;

    let a = token(&sys, &vm.imds_endpoint).await;
    let claims = verify(&sys, &tid, &a).await.expect("token A verifies");
    assert_eq!(claims["oid"], identity.principal_id.as_str());
    assert_eq!(sys.jwks_kids(&tid).await, [kid(&a)]);

    sys.clock.advance(ROTATE);
    let b = token(&sys, &vm.imds_endpoint).await;
    assert_ne!(kid(&b), kid(&a), "token B is signed by the new key");
    assert_eq!(sys.jwks_kids(&tid).await, [kid(&b), kid(&a)]);
    verify(&sys, &tid, &a)
        .await
        .expect("token A still verifies");
    verify(&sys, &tid, &b).await.expect("token B verifies");

    // Key 1 signed its last token at the rotation; that token expires LIFETIME later (+ skew).
    sys.clock.advance(LIFETIME + SKEW - 1);
    assert_eq!(sys.jwks_kids(&tid).await.len(), 2);
    sys.clock.advance(1);
    assert_eq!(sys.jwks_kids(&tid).await, [kid(&b)]);
    assert!(verify(&sys, &tid, &a)
        .await
        .unwrap_err()
        .contains("not in JWKS"));
    verify(&sys, &tid, &b).await.expect("token B verifies");
    sys.stop().await;
}
