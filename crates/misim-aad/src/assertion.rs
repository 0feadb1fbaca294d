//! Client-assertion verification (RFC 7523 `private_key_jwt`) as Entra does it for certificate
//! credentials: key lookup by thumbprint header, RS/PS signature (ES256 for an EC P-256 certificate),
//! `iss`/`sub`/`aud`, time range, `jti` present. Signatures verify on aws-lc-rs (jsonwebtoken's
//! `aws_lc_rs` backend).
//!
//! Lenient where real clients differ (each variant is exercised in tests/token.rs): `x5t` as base64url
//! with or without padding or as standard base64, `x5t#S256`, RS256 or PS256, float or integer
//! NumericDates, missing `nbf`/`iat`. The clients' assertion code: msal Python
//! <https://github.com/AzureAD/microsoft-authentication-library-for-python/blob/1.39.0/msal/oauth2cli/assertion.py>,
//! Rust azure_identity <https://docs.rs/crate/azure_identity/1.0.0/source/src/client_certificate_credential.rs>.
//! All arithmetic on claim values saturates: a NumericDate of `1e30` or `i64::MAX` is a time-range
//! rejection, never an overflow.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::error::{AadError, Result};
use crate::model::{KeyAlgorithm, KeyCredential, ServicePrincipal, Tenant};

/// Clock skew tolerated on `nbf`/`exp` and on certificate validity, seconds (Entra allows 5 minutes).
pub const CLOCK_SKEW_SECS: i64 = 300;

/// Longest accepted time from now to an assertion's `exp`, seconds (1 day). Entra documents 5–10
/// minutes without publishing its limit
/// (<https://learn.microsoft.com/entra/identity-platform/certificate-credentials>); clients send now+300 or
/// now+600. misim's bound leaves them far inside.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 86_400;

/// Normalizes a base64 thumbprint (url-safe or standard, padded or not) to unpadded base64url.
fn normalize_b64(s: &str) -> String {
    s.trim()
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// Upper-case hex of a base64 thumbprint, for the AADSTS700027 message; the input when undecodable.
fn thumbprint_hex(b64: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(normalize_b64(b64))
        .map(|bytes| bytes.iter().map(|b| format!("{b:02X}")).collect())
        .unwrap_or_else(|_| b64.to_string())
}

/// Finds the key credential named by the header's `x5t`, `x5t#S256` or `kid` (hex or base64url SHA-1).
fn find_key<'a>(
    header: &jsonwebtoken::Header,
    sp: &'a ServicePrincipal,
) -> std::result::Result<&'a KeyCredential, String> {
    let keys = &sp.key_credentials;
    if let Some(t) = &header.x5t_s256 {
        let t = normalize_b64(t);
        return keys
            .iter()
            .find(|k| k.x5t_s256 == t)
            .ok_or_else(|| thumbprint_hex(&t));
    }
    if let Some(t) = &header.x5t {
        let t = normalize_b64(t);
        return keys
            .iter()
            .find(|k| k.x5t == t)
            .ok_or_else(|| thumbprint_hex(&t));
    }
    if let Some(kid) = &header.kid {
        let b64 = normalize_b64(kid);
        return keys
            .iter()
            .find(|k| k.thumbprint_sha1_hex.eq_ignore_ascii_case(kid) || k.x5t == b64)
            .ok_or_else(|| kid.clone());
    }
    Err(String::new())
}

/// True when `aud` is `{any scheme and host}/{tenant id or domain}/oauth2[/v2.0]/token` (trailing `/`,
/// query and fragment ignored).
fn audience_matches(aud: &str, tenant: &Tenant) -> bool {
    let Ok(url) = url::Url::parse(aud) else {
        return false;
    };
    let mut segments: Vec<&str> = url
        .path_segments()
        .map(Iterator::collect)
        .unwrap_or_default();
    while segments.last().is_some_and(|s| s.is_empty()) {
        segments.pop();
    }
    let Some((t, endpoint)) = segments.split_first() else {
        return false;
    };
    let tenant_ok =
        t.eq_ignore_ascii_case(&tenant.tenant_id) || t.eq_ignore_ascii_case(&tenant.default_domain);
    let is = |expected: &[&str]| {
        endpoint.len() == expected.len()
            && endpoint
                .iter()
                .zip(expected)
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
    };
    tenant_ok && (is(&["oauth2", "token"]) || is(&["oauth2", "v2.0", "token"]))
}

/// A NumericDate claim as whole epoch seconds (integer or float), `None` when absent or not a number.
/// Values beyond the `i64` range saturate (`as` casts from `f64` do), so `1e30` reads as `i64::MAX`.
fn numeric_date(claims: &Value, name: &str) -> Option<i64> {
    claims.get(name).and_then(Value::as_f64).map(|f| f as i64)
}

/// Verifies `assertion` for the principal `sp` (already found by `client_id` in `tenant`) at `now`
/// (epoch seconds). Returns the thumbprint (hex) of the key credential that signed it.
///
/// # Errors
/// AADSTS50027 [`AadError::MalformedAssertion`], AADSTS700027 [`AadError::InvalidSignature`],
/// AADSTS700021 [`AadError::AssertionSubjectMismatch`], AADSTS700023
/// [`AadError::AssertionAudienceMismatch`], AADSTS700024 [`AadError::AssertionTimeRange`] (also for an
/// `exp` more than [`MAX_ASSERTION_LIFETIME_SECS`] ahead).
///
/// A `jti` is required but may be reused within the assertion's lifetime: MSAL reuses one signed
/// assertion for up to 9 minutes (`AutoRefresher` in msal 1.39's `msal/oauth2cli/assertion.py`,
/// <https://github.com/AzureAD/microsoft-authentication-library-for-python/blob/1.39.0/msal/oauth2cli/assertion.py>),
/// which Entra accepts.
pub fn verify(assertion: &str, sp: &ServicePrincipal, tenant: &Tenant, now: i64) -> Result<String> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|e| AadError::MalformedAssertion(e.to_string()))?;
    let key = find_key(&header, sp).map_err(|thumbprint| AadError::InvalidSignature {
        reason: "The key was not found.".into(),
        thumbprint,
    })?;
    let invalid = |reason: &str| AadError::InvalidSignature {
        reason: reason.to_string(),
        thumbprint: key.thumbprint_sha1_hex.clone(),
    };
    let (algs, decoding): (&[Algorithm], DecodingKey) = match key.key_algorithm {
        KeyAlgorithm::Rsa => (
            &RSA_ALGORITHMS,
            DecodingKey::from_rsa_der(&key.public_key_pkcs1_der),
        ),
        KeyAlgorithm::EcP256 => (
            &[Algorithm::ES256],
            DecodingKey::from_ec_der(&key.public_key_pkcs1_der),
        ),
    };
    if !algs.contains(&header.alg) {
        return Err(invalid("The signing algorithm is not supported."));
    }
    if now > key.end_date_time.saturating_add(CLOCK_SKEW_SECS)
        || now.saturating_add(CLOCK_SKEW_SECS) < key.start_date_time
    {
        return Err(invalid("The key used is expired."));
    }
    let claims = signed_claims(assertion, &decoding, header.alg, &key.thumbprint_sha1_hex)?;

    let is_client = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .is_some_and(|v| v.eq_ignore_ascii_case(&sp.app_id))
    };
    if !is_client("iss") || !is_client("sub") {
        return Err(AadError::AssertionSubjectMismatch);
    }
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !auds.iter().any(|a| audience_matches(a, tenant)) {
        return Err(AadError::AssertionAudienceMismatch(auds.join(" ")));
    }
    let (nbf, exp) = (numeric_date(&claims, "nbf"), numeric_date(&claims, "exp"));
    let expired = exp.is_none_or(|exp| now > exp.saturating_add(CLOCK_SKEW_SECS));
    let too_long = exp.is_some_and(|exp| exp.saturating_sub(now) > MAX_ASSERTION_LIFETIME_SECS);
    let early = nbf.is_some_and(|nbf| now.saturating_add(CLOCK_SKEW_SECS) < nbf);
    if expired || too_long || early {
        return Err(AadError::AssertionTimeRange { now, nbf, exp });
    }
    // `jti` is a required claim of a client assertion
    // (<https://learn.microsoft.com/en-us/entra/identity-platform/certificate-credentials>); Entra
    // answers AADSTS50027 without it.
    if claims
        .get("jti")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(AadError::MalformedAssertion(
            "the client assertion has no jti claim".into(),
        ));
    }
    Ok(key.thumbprint_sha1_hex.clone())
}

/// The JWS algorithms accepted with an RSA key: RS256/384/512 and PS256/384/512, as Entra accepts
/// for certificate client assertions and federated tokens (RFC 7518 §3.1 names them).
pub(crate) const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Checks the signature of the JWT `token` with `key` for `alg` and returns its claims; checks
/// nothing else (times, audience and issuer are the caller's, with Entra's own error texts;
/// RFC 7515 §5.2 <https://www.rfc-editor.org/rfc/rfc7515#section-5.2>).
///
/// # Errors
/// [`AadError::InvalidSignature`] ("Signature validation failed.", naming `thumbprint`) when the
/// signature does not verify, [`AadError::MalformedAssertion`] when the token does not decode.
pub(crate) fn signed_claims(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    thumbprint: &str,
) -> Result<Value> {
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature
            | jsonwebtoken::errors::ErrorKind::Signing(_) => AadError::InvalidSignature {
                reason: "Signature validation failed.".to_string(),
                thumbprint: thumbprint.to_string(),
            },
            _ => AadError::MalformedAssertion(e.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn tenant() -> Tenant {
        Tenant {
            tenant_id: "11111111-2222-3333-4444-555555555555".into(),
            display_name: "d".into(),
            default_domain: "misim.onmicrosoft.com".into(),
            created_date_time: 1,
        }
    }

    #[test]
    fn audience_accepts_v1_v2_any_host_and_domain_but_not_other_tenants() {
        let t = tenant();
        for ok in [
            "http://127.0.0.1:7702/11111111-2222-3333-4444-555555555555/oauth2/token",
            "https://aad:443/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token/",
            "https://login.microsoftonline.com/MISIM.onmicrosoft.com/oauth2/token",
        ] {
            assert!(audience_matches(ok, &t), "{ok}");
        }
        for bad in [
            "http://h/99999999-2222-3333-4444-555555555555/oauth2/token",
            "http://h/11111111-2222-3333-4444-555555555555/oauth2/authorize",
            "11111111-2222-3333-4444-555555555555/oauth2/token",
            "http://h",
        ] {
            assert!(!audience_matches(bad, &t), "{bad}");
        }
    }

    #[test]
    fn thumbprints_normalize_across_base64_flavours() {
        assert_eq!(
            normalize_b64("CrhGAKO+vHY88rgVob+nR49EHj8="),
            "CrhGAKO-vHY88rgVob-nR49EHj8"
        );
        assert_eq!(
            normalize_b64("CrhGAKO-vHY88rgVob-nR49EHj8="),
            "CrhGAKO-vHY88rgVob-nR49EHj8"
        );
        assert_eq!(thumbprint_hex("AAE"), "0001");
    }

    /// A principal of [`tenant`] with one certificate, and the key that signs its assertions.
    fn principal() -> (ServicePrincipal, EncodingKey) {
        let pkcs8 = misim_core::cert::generate_rsa_key().unwrap();
        let kc = misim_core::cert::self_signed(&pkcs8, "c", NOW - 3600, NOW + 86_400).unwrap();
        let key = rsa::RsaPrivateKey::from_pkcs8_der(&pkcs8).unwrap();
        let sp = ServicePrincipal {
            tenant_id: tenant().tenant_id,
            object_id: "o".into(),
            app_id: "client".into(),
            display_name: "d".into(),
            msi_resource_id: "/subscriptions/s".into(),
            is_explicit: false,
            key_credentials: vec![KeyCredential::from_certificate(&kc.certificate_der).unwrap()],
        };
        let signer = EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes());
        (sp, signer)
    }

    fn assertion(sp: &ServicePrincipal, signer: &EncodingKey, times: Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.x5t = Some(sp.key_credentials[0].x5t.clone());
        let mut claims = json!({
            "aud": format!("http://h/{}/oauth2/token", tenant().tenant_id),
            "iss": sp.app_id, "sub": sp.app_id, "jti": uuid::Uuid::new_v4().to_string(),
        });
        if let (Some(c), Value::Object(t)) = (claims.as_object_mut(), times) {
            c.extend(t);
        }
        jsonwebtoken::encode(&header, &claims, signer).unwrap()
    }

    #[test]
    fn an_assertion_without_jti_is_refused_and_one_with_jti_may_be_reused_as_msal_does() {
        let (sp, signer) = principal();
        for missing in [json!(null), json!(""), json!(7)] {
            let a = assertion(
                &sp,
                &signer,
                json!({"nbf": NOW, "exp": NOW + 300, "jti": missing}),
            );
            assert!(
                matches!(
                    verify(&a, &sp, &tenant(), NOW),
                    Err(AadError::MalformedAssertion(_))
                ),
                "jti {missing}"
            );
        }
        let a = assertion(&sp, &signer, json!({"nbf": NOW, "exp": NOW + 300}));
        assert!(verify(&a, &sp, &tenant(), NOW).is_ok());
        assert!(verify(&a, &sp, &tenant(), NOW + 60).is_ok());
    }

    #[test]
    fn extreme_numeric_dates_are_time_range_rejections_not_overflows() {
        let (sp, signer) = principal();
        for times in [
            json!({"nbf": NOW, "exp": 1e30}),
            json!({"nbf": NOW, "exp": i64::MAX}),
            json!({"exp": u64::MAX}),
            json!({"nbf": 1e30, "exp": 1e30}),
            json!({"nbf": -1e30, "exp": -1e30}),
            json!({"exp": i64::MIN}),
            json!({"nbf": NOW, "exp": NOW + MAX_ASSERTION_LIFETIME_SECS + 1}),
        ] {
            let a = assertion(&sp, &signer, times.clone());
            let err = verify(&a, &sp, &tenant(), NOW).unwrap_err();
            assert!(
                matches!(err, AadError::AssertionTimeRange { .. }),
                "{times}: {err:?}"
            );
            let response = err.into_http_response(NOW);
            assert_eq!(response.status(), 401, "{times}");
        }
        for times in [
            json!({"nbf": NOW, "iat": NOW, "exp": NOW + 600}),
            json!({"iat": 1.7e9, "exp": NOW as f64 + 600.5}),
            json!({"exp": NOW + MAX_ASSERTION_LIFETIME_SECS}),
        ] {
            let a = assertion(&sp, &signer, times.clone());
            assert!(verify(&a, &sp, &tenant(), NOW).is_ok(), "{times}");
        }
    }

    #[test]
    fn key_validity_checks_saturate_at_the_ends_of_time() {
        let (mut sp, signer) = principal();
        sp.key_credentials[0].start_date_time = i64::MIN;
        sp.key_credentials[0].end_date_time = i64::MAX;
        let a = assertion(&sp, &signer, json!({"exp": NOW + 600}));
        assert!(verify(&a, &sp, &tenant(), NOW).is_ok());
        let a = assertion(&sp, &signer, json!({"exp": NOW + 600}));
        let err = verify(&a, &sp, &tenant(), i64::MIN).unwrap_err();
        assert!(
            matches!(err, AadError::AssertionTimeRange { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn an_ec_p256_certificate_accepts_es256_assertions_only() {
        let pkcs8 = misim_core::cert::generate_key(misim_core::cert::KeyType::EcP256).unwrap();
        let kc = misim_core::cert::self_signed(&pkcs8, "ec", NOW - 3600, NOW + 86_400).unwrap();
        let (mut sp, _) = principal();
        sp.key_credentials = vec![KeyCredential::from_certificate(&kc.certificate_der).unwrap()];
        assert_eq!(sp.key_credentials[0].key_algorithm, KeyAlgorithm::EcP256);
        let claims = json!({
            "aud": format!("http://h/{}/oauth2/token", tenant().tenant_id),
            "iss": sp.app_id, "sub": sp.app_id, "jti": "j", "exp": NOW + 600,
        });
        let sign = |alg: Algorithm, key: &EncodingKey| {
            let mut header = Header::new(alg);
            header.x5t = Some(sp.key_credentials[0].x5t.clone());
            jsonwebtoken::encode(&header, &claims, key).unwrap()
        };
        let es256 = sign(Algorithm::ES256, &EncodingKey::from_ec_der(&pkcs8));
        assert_eq!(
            verify(&es256, &sp, &tenant(), NOW).unwrap(),
            sp.key_credentials[0].thumbprint_sha1_hex
        );
        // Signed by another P-256 key under the same thumbprint: the signature fails.
        let other = misim_core::cert::generate_key(misim_core::cert::KeyType::EcP256).unwrap();
        let forged = sign(Algorithm::ES256, &EncodingKey::from_ec_der(&other));
        assert!(matches!(
            verify(&forged, &sp, &tenant(), NOW),
            Err(AadError::InvalidSignature { .. })
        ));
        // An RSA-signed assertion naming the EC certificate: algorithm not supported.
        let (_, rsa_signer) = principal();
        let rs256 = sign(Algorithm::RS256, &rsa_signer);
        assert!(matches!(
            verify(&rs256, &sp, &tenant(), NOW),
            Err(AadError::InvalidSignature { reason, .. }) if reason.contains("algorithm")
        ));
    }
}
