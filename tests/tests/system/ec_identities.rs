//! `misim up --identity-key-type ec-p256`: identities get certificates with EC P-256 keys, IMDS signs
//! their client assertions ES256, and Azure AD accepts them (found by `x5t` or `x5t#S256`, as for
//! RSA certificates) and issues the same RS256 tokens, which verify against its published JWKS.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use misim_core::cert::{self, KeyType};
use misim_proto::msrp::msrp_client::MsrpClient;
use misim_proto::msrp::GetCredentialRequest;
use serde_json::{json, Value};

use crate::aad_common::{wall_now, Sys, MGMT};

/// Verifies `token` against the key set of `tid`'s discovery document (over HTTPS): RS256,
/// issuer and audience. Returns the claims.
async fn verify_with_jwks(sys: &Sys, tid: &str, token: &str) -> Value {
    let doc = sys
        .get_json(&format!(
            "{}/{tid}/.well-known/openid-configuration",
            sys.endpoints.aad_https
        ))
        .await;
    let jwks = sys
        .get_json(doc["jwks_uri"].as_str().expect("jwks_uri"))
        .await;
    let kid = crate::aad_common::kid(token);
    let jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in JWKS"));
    let key = DecodingKey::from_rsa_components(
        jwk["n"].as_str().expect("n"),
        jwk["e"].as_str().expect("e"),
    )
    .expect("RSA key");
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[doc["issuer"].as_str().expect("issuer")]);
    v.set_audience(&[MGMT]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .expect("token verifies against the published JWKS")
        .claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec_p256_identities_get_tokens_through_imds_and_es256_assertions() {
    let sys = Sys::start(|c| c.identity_key_type = KeyType::EcP256).await;
    let tid = sys.endpoints.tenant_id.clone();
    let (vm, identity) = sys.vm_with_system_identity("rg1", "vm1").await;

    // MSRP made an EC P-256 key and a certificate for it.
    let mut msrp =
        MsrpClient::new(misim_tests::admin_channel(sys.dir.path(), &sys.endpoints.msrp_grpc).await);
    let credential = msrp
        .get_credential(GetCredentialRequest {
            resource_id: vm.id.clone(),
            host: "host-1".into(),
        })
        .await
        .expect("credential")
        .into_inner();
    let pkcs8 = credential.private_key_pkcs8_der;
    assert_eq!(KeyType::of_pkcs8(&pkcs8).unwrap(), KeyType::EcP256);
    let client_id = credential.identity.expect("identity").client_id;

    // Steps 5-6: IMDS signs the client assertion ES256 and Azure AD signs the token RS256.
    let (status, body) = sys.imds_token(&vm.imds_endpoint).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().expect("access_token");
    let claims = verify_with_jwks(&sys, &tid, token).await;
    assert_eq!(claims["oid"], identity.principal_id.as_str());
    assert_eq!(claims["appid"], client_id.as_str());

    // A client's own ES256 assertion, naming the certificate by x5t#S256 (as msal does) or by x5t.
    let token_url = format!("{}/{tid}/oauth2/token", sys.endpoints.aad_https);
    let now = wall_now();
    for by_s256 in [true, false] {
        let mut header = Header::new(Algorithm::ES256);
        if by_s256 {
            header.x5t_s256 = Some(cert::x5t_s256(&credential.certificate_der));
        } else {
            header.x5t = Some(cert::x5t(&credential.certificate_der));
        }
        let claims = json!({
            "aud": token_url, "iss": client_id, "sub": client_id,
            "jti": format!("jti-{by_s256}"), "nbf": now, "exp": now + 600,
        });
        let assertion =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(&pkcs8)).unwrap();
        let resp = sys
            .http
            .post(&token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id.as_str()),
                ("resource", MGMT),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
            .await
            .expect("token endpoint answers");
        assert_eq!(resp.status(), 200, "x5t#S256 {by_s256}");
        let body: Value = resp.json().await.expect("JSON");
        let claims = verify_with_jwks(&sys, &tid, body["access_token"].as_str().unwrap()).await;
        assert_eq!(claims["oid"], identity.principal_id.as_str());
    }

    // The same assertion with RS256 in its header is refused (the certificate's key is EC).
    let mut header = Header::new(Algorithm::ES256);
    header.x5t = Some(cert::x5t(&credential.certificate_der));
    let es256 = jsonwebtoken::encode(
        &header,
        &json!({"aud": token_url, "iss": client_id, "sub": client_id, "jti": "x", "exp": now + 600}),
        &EncodingKey::from_ec_der(&pkcs8),
    )
    .unwrap();
    let mut parts: Vec<String> = es256.split('.').map(str::to_string).collect();
    parts[0] = {
        use base64::Engine;
        let h =
            json!({"alg": "RS256", "typ": "JWT", "x5t": cert::x5t(&credential.certificate_der)});
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_string())
    };
    let resp = sys
        .http
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("resource", MGMT),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", parts.join(".").as_str()),
        ])
        .send()
        .await
        .expect("token endpoint answers");
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.expect("JSON");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.starts_with("AADSTS700027")),
        "{body}"
    );
    sys.stop().await;
}
