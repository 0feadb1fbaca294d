//! Workload identity federation at the token endpoint, over HTTP: a user-assigned identity's
//! principal with federated identity credentials (set over the admin API), an external OIDC issuer
//! on a loopback port (discovery + JWKS, as an AKS cluster serves them), and every AADSTS answer
//! Entra gives for a federated assertion that does not match.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use misim_core::Clock;
use misim_proto::aad as pb;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

const AUDIENCE: &str = "api://AzureADTokenExchange";
const SUBJECT: &str = "system:serviceaccount:default:app";

/// An OIDC issuer on 127.0.0.1: its URL (with trailing slash, as AKS's), its signing key and kid,
/// and how often its JWKS was fetched.
struct Issuer {
    url: String,
    key: EncodingKey,
    kid: String,
    jwks_fetches: Arc<AtomicUsize>,
}

fn rsa_key() -> (EncodingKey, String, String) {
    let pkcs8 = misim_core::cert::generate_rsa_key().unwrap();
    let key = rsa::RsaPrivateKey::from_pkcs8_der(&pkcs8).unwrap();
    let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
    let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
    let enc = EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes());
    (enc, n, e)
}

async fn issuer() -> Issuer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/oidc/tenant/cluster/",
        listener.local_addr().unwrap()
    );
    let (key, n, e) = rsa_key();
    let kid = "cluster-key-1".to_string();
    let fetches = Arc::new(AtomicUsize::new(0));
    let discovery = json!({
        "issuer": url,
        "jwks_uri": format!("{url}openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    let jwks =
        json!({"keys": [{"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256", "n": n, "e": e}]});
    let counter = fetches.clone();
    let app = Router::new()
        .route(
            "/oidc/tenant/cluster/.well-known/openid-configuration",
            get(move || {
                let d = discovery.clone();
                async move { Json(d) }
            }),
        )
        .route(
            "/oidc/tenant/cluster/openid/v1/jwks",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let j = jwks.clone();
                async move { Json(j) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Issuer {
        url,
        key,
        kid,
        jwks_fetches: fetches,
    }
}

/// A projected service-account token as the kubelet writes it, issued at `now`.
fn sa_token(
    key: &EncodingKey,
    kid: &str,
    iss: &str,
    sub: &str,
    aud: &str,
    now: i64,
    lifetime: i64,
) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    let claims = json!({
        "aud": [aud], "iss": iss, "sub": sub, "iat": now, "nbf": now, "exp": now + lifetime,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "app", "uid": "u"}},
    });
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

struct Setup {
    aad: Aad,
    issuer: Issuer,
    tenant: String,
    client_id: String,
    object_id: String,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let aad = start(dir.path(), Clock::manual(T0)).await;
    let cert = client_cert();
    let (tenant, sp) = aad.principal(UAMI_ID, &cert).await;
    let issuer = issuer().await;
    aad.admin()
        .set_federated_identity_credentials(pb::SetFederatedIdentityCredentialsRequest {
            tenant_id: tenant.tenant_id.clone(),
            object_id: sp.object_id.clone(),
            credentials: vec![pb::FederatedIdentityCredential {
                name: "aks1-app".into(),
                issuer: issuer.url.clone(),
                subject: SUBJECT.into(),
                audiences: vec![AUDIENCE.into()],
            }],
        })
        .await
        .unwrap();
    Setup {
        aad,
        issuer,
        tenant: tenant.tenant_id,
        client_id: sp.app_id,
        object_id: sp.object_id,
        _dir: dir,
    }
}

impl Setup {
    fn token(&self, sub: &str, aud: &str, now: i64, lifetime: i64) -> String {
        sa_token(
            &self.issuer.key,
            &self.issuer.kid,
            &self.issuer.url,
            sub,
            aud,
            now,
            lifetime,
        )
    }

    async fn exchange(&self, client_id: &str, assertion: &str) -> (u16, Value) {
        self.aad
            .post_form(
                &format!("/{}/oauth2/v2.0/token", self.tenant),
                &v2_form(client_id, assertion, "https://vault.azure.net/.default"),
            )
            .await
    }
}

/// `(status, error, first error code, description)` of a refusal.
fn refusal(status: u16, body: &Value) -> (u16, String, u64, String) {
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
        body["error_codes"][0].as_u64().unwrap_or_default(),
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test]
async fn a_matching_service_account_token_is_exchanged_for_the_identitys_token() {
    let s = setup().await;
    let assertion = s.token(SUBJECT, AUDIENCE, T0, 3600);
    let (status, body) = s.exchange(&s.client_id, &assertion).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().unwrap();
    let (_, claims) = verify_via_discovery(
        &s.aad,
        &format!("/{}/v2.0/.well-known/openid-configuration", s.tenant),
        token,
        "cfa8b339-82a2-471a-a3c9-0fc0be7a4093",
    )
    .await;
    // The identity's own token: the same claims as an IMDS token of this user-assigned identity.
    assert_eq!(claims["oid"], s.object_id.as_str());
    assert_eq!(claims["sub"], s.object_id.as_str());
    assert_eq!(claims["azp"], s.client_id.as_str());
    assert_eq!(claims["azpacr"], "2");
    assert_eq!(claims["idtyp"], "app");
    assert_eq!(claims["xms_mirid"], mirid(UAMI_ID).as_str());
    assert_eq!(claims["tid"], s.tenant.as_str());

    // v1 as well; the same projected token may be presented again (not a one-time assertion).
    let (status, body) = s
        .aad
        .post_form(
            &format!("/{}/oauth2/token", s.tenant),
            &v1_form(&s.client_id, &assertion, "https://management.azure.com/"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resource"], "https://management.azure.com/");
    // The issuer's keys were fetched once and cached.
    assert_eq!(s.issuer.jwks_fetches.load(Ordering::SeqCst), 1);
    s.aad.stop().await;
}

#[tokio::test]
async fn an_unknown_issuer_is_aadsts700211() {
    let s = setup().await;
    // Exact-string match: the issuer without its trailing slash is another issuer.
    let other = s.issuer.url.trim_end_matches('/').to_string();
    let assertion = sa_token(
        &s.issuer.key,
        &s.issuer.kid,
        &other,
        SUBJECT,
        AUDIENCE,
        T0,
        3600,
    );
    let (status, body) = s.exchange(&s.client_id, &assertion).await;
    let (status, error, code, description) = refusal(status, &body);
    assert_eq!(
        (status, error.as_str(), code),
        (401, "invalid_client", 700211),
        "{body}"
    );
    assert!(description.starts_with(&format!(
        "AADSTS700211: No matching federated identity record found for presented assertion issuer '{other}'."
    )));
    // Nothing was fetched for an issuer no credential names.
    assert_eq!(s.issuer.jwks_fetches.load(Ordering::SeqCst), 0);
    s.aad.stop().await;
}

#[tokio::test]
async fn another_subject_is_aadsts70021() {
    let s = setup().await;
    let sub = "system:serviceaccount:default:other";
    let (status, body) = s
        .exchange(&s.client_id, &s.token(sub, AUDIENCE, T0, 3600))
        .await;
    let (status, error, code, description) = refusal(status, &body);
    assert_eq!(
        (status, error.as_str(), code),
        (400, "invalid_request", 70021),
        "{body}"
    );
    assert!(
        description.starts_with(&format!(
            "AADSTS70021: No matching federated identity record found for presented assertion. \
             Assertion Issuer: '{}'. Assertion Subject: '{sub}'. Assertion Audience: '{AUDIENCE}'.",
            s.issuer.url
        )),
        "{description}"
    );
    // Subjects are compared case-sensitively.
    let upper = SUBJECT.to_uppercase();
    let (status, body) = s
        .exchange(&s.client_id, &s.token(&upper, AUDIENCE, T0, 3600))
        .await;
    assert_eq!(refusal(status, &body).2, 70021, "{body}");
    s.aad.stop().await;
}

#[tokio::test]
async fn another_audience_is_aadsts700212() {
    let s = setup().await;
    let (status, body) = s
        .exchange(&s.client_id, &s.token(SUBJECT, "api://other", T0, 3600))
        .await;
    let (status, error, code, description) = refusal(status, &body);
    assert_eq!(
        (status, error.as_str(), code),
        (401, "invalid_client", 700212),
        "{body}"
    );
    assert!(description.contains("presented assertion audience 'api://other'"));
    s.aad.stop().await;
}

#[tokio::test]
async fn an_expired_or_future_token_is_aadsts700024() {
    let s = setup().await;
    // Expired an hour ago (beyond the 5 minutes of skew).
    let expired = s.token(SUBJECT, AUDIENCE, T0 - 7200, 3600);
    let (status, body) = s.exchange(&s.client_id, &expired).await;
    let (status, error, code, description) = refusal(status, &body);
    assert_eq!(
        (status, error.as_str(), code),
        (401, "invalid_client", 700024),
        "{body}"
    );
    assert!(description.contains("Client assertion is not within its valid time range."));
    // Not valid for another hour.
    let early = s.token(SUBJECT, AUDIENCE, T0 + 3600, 3600);
    let (status, body) = s.exchange(&s.client_id, &early).await;
    assert_eq!(refusal(status, &body).2, 700024, "{body}");
    // Within the skew still works.
    let just_expired = s.token(SUBJECT, AUDIENCE, T0 - 3700, 3600);
    let (status, body) = s.exchange(&s.client_id, &just_expired).await;
    assert_eq!(status, 200, "{body}");
    s.aad.stop().await;
}

#[tokio::test]
async fn a_bad_signature_or_unknown_key_is_refused() {
    let s = setup().await;
    // Another key under the issuer's kid: the signature does not verify (AADSTS700027).
    let (forged_key, _, _) = rsa_key();
    let forged = sa_token(
        &forged_key,
        &s.issuer.kid,
        &s.issuer.url,
        SUBJECT,
        AUDIENCE,
        T0,
        3600,
    );
    let (status, body) = s.exchange(&s.client_id, &forged).await;
    let (status, error, code, description) = refusal(status, &body);
    assert_eq!(
        (status, error.as_str(), code),
        (401, "invalid_client", 700027),
        "{body}"
    );
    assert!(description.contains("Signature validation failed."));
    // A kid the issuer does not publish (AADSTS7000272).
    let unknown = sa_token(
        &s.issuer.key,
        "rotated-away",
        &s.issuer.url,
        SUBJECT,
        AUDIENCE,
        T0,
        3600,
    );
    let (status, body) = s.exchange(&s.client_id, &unknown).await;
    let (status, error, code, description) = refusal(status, &body);
    assert_eq!(
        (status, error.as_str(), code),
        (401, "invalid_client", 7000272),
        "{body}"
    );
    assert!(description.contains("The certificate with identifier rotated-away used to sign the federated credential could not be found in the metadata of identity provider"));
    // A tampered payload under the real signature.
    let good = s.token(SUBJECT, AUDIENCE, T0, 3600);
    let parts: Vec<&str> = good.split('.').collect();
    let claims = json!({"aud": [AUDIENCE], "iss": s.issuer.url, "sub": SUBJECT, "nbf": T0, "exp": T0 + 86_400});
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    let (status, body) = s.exchange(&s.client_id, &tampered).await;
    assert_eq!(refusal(status, &body).2, 700027, "{body}");
    s.aad.stop().await;
}

#[tokio::test]
async fn an_unknown_client_id_is_aadsts700016() {
    let s = setup().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, body) = s
        .exchange(&unknown, &s.token(SUBJECT, AUDIENCE, T0, 3600))
        .await;
    let (status, error, code, description) = refusal(status, &body);
    assert_eq!(
        (status, error.as_str(), code),
        (400, "unauthorized_client", 700016),
        "{body}"
    );
    assert!(description.contains(&format!("Application with identifier '{unknown}'")));
    s.aad.stop().await;
}

#[tokio::test]
async fn credentials_are_replaced_as_a_set_and_go_with_the_principal() {
    let s = setup().await;
    let mut admin = s.aad.admin();
    let assertion = s.token(SUBJECT, AUDIENCE, T0, 3600);
    // An empty set: the issuer is no longer trusted.
    admin
        .set_federated_identity_credentials(pb::SetFederatedIdentityCredentialsRequest {
            tenant_id: s.tenant.clone(),
            object_id: s.object_id.clone(),
            credentials: vec![],
        })
        .await
        .unwrap();
    let (status, body) = s.exchange(&s.client_id, &assertion).await;
    assert_eq!(refusal(status, &body).2, 700211, "{body}");
    // 21 credentials are refused; a principal that does not exist cannot get any.
    let many = (0..21)
        .map(|i| pb::FederatedIdentityCredential {
            name: format!("c{i}"),
            issuer: s.issuer.url.clone(),
            subject: format!("system:serviceaccount:default:sa{i}"),
            audiences: vec![AUDIENCE.into()],
        })
        .collect();
    let err = admin
        .set_federated_identity_credentials(pb::SetFederatedIdentityCredentialsRequest {
            tenant_id: s.tenant.clone(),
            object_id: s.object_id.clone(),
            credentials: many,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    admin
        .delete_service_principal(pb::DeleteServicePrincipalRequest {
            tenant_id: s.tenant.clone(),
            object_id: s.object_id.clone(),
        })
        .await
        .unwrap();
    let err = admin
        .set_federated_identity_credentials(pb::SetFederatedIdentityCredentialsRequest {
            tenant_id: s.tenant.clone(),
            object_id: s.object_id.clone(),
            credentials: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    s.aad.stop().await;
}
