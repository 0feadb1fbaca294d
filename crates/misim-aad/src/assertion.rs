//! Client-assertion verification (RFC 7523 `private_key_jwt`) as Entra does it for certificate
//! credentials: key lookup by thumbprint header, RS/PS signature, `iss`/`sub`/`aud`, time range, replay.
//!
//! Lenient where real clients differ (reference §3.1): `x5t` as base64url with or without padding or as
//! standard base64, `x5t#S256`, RS256 or PS256, float or integer NumericDates, missing `nbf`/`iat`.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::error::{AadError, Result};
use crate::model::{KeyCredential, ServicePrincipal, Tenant};

/// Clock skew tolerated on `nbf`/`exp` and on certificate validity, seconds (Entra allows 5 minutes).
pub const CLOCK_SKEW_SECS: i64 = 300;

/// `jti` values seen within their assertion's lifetime, to reject replays. In memory: a restart forgets
/// them, which only matters for assertions replayed across a restart.
#[derive(Default)]
pub struct JtiCache {
    inner: Mutex<JtiInner>,
}

#[derive(Default)]
struct JtiInner {
    seen: HashMap<String, i64>,
    prune_at: usize,
}

impl JtiCache {
    /// Records `key` as used until `expires_at` (epoch seconds); false when it is already recorded and
    /// not yet expired at `now`.
    pub fn first_use(&self, key: String, expires_at: i64, now: i64) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.seen.len() >= inner.prune_at {
            inner.seen.retain(|_, exp| *exp >= now);
            inner.prune_at = (inner.seen.len() * 2).max(1024);
        }
        match inner.seen.get(&key) {
            Some(exp) if *exp >= now => false,
            _ => {
                inner.seen.insert(key, expires_at);
                true
            }
        }
    }
}

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

/// True when `aud` is `{any scheme and host}/{tenant id or domain}/oauth2[/v2.0]/token`.
fn audience_matches(aud: &str, tenant: &Tenant) -> bool {
    let Some((_, rest)) = aud.split_once("://") else {
        return false;
    };
    let path = rest.find('/').map(|i| &rest[i + 1..]).unwrap_or("");
    let path = path
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_end_matches('/');
    let Some((t, endpoint)) = path.split_once('/') else {
        return false;
    };
    let tenant_ok =
        t.eq_ignore_ascii_case(&tenant.tenant_id) || t.eq_ignore_ascii_case(&tenant.default_domain);
    tenant_ok
        && (endpoint.eq_ignore_ascii_case("oauth2/token")
            || endpoint.eq_ignore_ascii_case("oauth2/v2.0/token"))
}

/// A NumericDate claim as whole epoch seconds (integer or float), `None` when absent or not a number.
fn numeric_date(claims: &Value, name: &str) -> Option<i64> {
    claims.get(name).and_then(Value::as_f64).map(|f| f as i64)
}

/// Verifies `assertion` for the principal `sp` (already found by `client_id` in `tenant`) at `now`
/// (epoch seconds). Returns the thumbprint (hex) of the key credential that signed it.
///
/// # Errors
/// AADSTS50027 [`AadError::MalformedAssertion`], AADSTS700027 [`AadError::InvalidSignature`],
/// AADSTS700021 [`AadError::AssertionSubjectMismatch`], AADSTS700023
/// [`AadError::AssertionAudienceMismatch`], AADSTS700024 [`AadError::AssertionTimeRange`], AADSTS50013
/// [`AadError::AssertionReplayed`].
pub fn verify(
    assertion: &str,
    sp: &ServicePrincipal,
    tenant: &Tenant,
    now: i64,
    jtis: &JtiCache,
) -> Result<String> {
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
    let rsa_algs = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ];
    if !rsa_algs.contains(&header.alg) {
        return Err(invalid("The signing algorithm is not supported."));
    }
    if now > key.end_date_time + CLOCK_SKEW_SECS || now + CLOCK_SKEW_SECS < key.start_date_time {
        return Err(invalid("The key used is expired."));
    }
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(
        assertion,
        &DecodingKey::from_rsa_der(&key.public_key_pkcs1_der),
        &validation,
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature
        | jsonwebtoken::errors::ErrorKind::Signing(_) => invalid("Signature validation failed."),
        _ => AadError::MalformedAssertion(e.to_string()),
    })?
    .claims;

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
    let expired = exp.is_none_or(|exp| now > exp + CLOCK_SKEW_SECS);
    let early = nbf.is_some_and(|nbf| now + CLOCK_SKEW_SECS < nbf);
    if expired || early {
        return Err(AadError::AssertionTimeRange { now, nbf, exp });
    }
    if let Some(jti) = claims.get("jti").and_then(Value::as_str) {
        let until = exp.unwrap_or(now) + CLOCK_SKEW_SECS;
        if !jtis.first_use(
            format!("{}/{jti}", sp.app_id.to_ascii_lowercase()),
            until,
            now,
        ) {
            return Err(AadError::AssertionReplayed(jti.to_string()));
        }
    }
    Ok(key.thumbprint_sha1_hex.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Tenant {
        Tenant {
            tenant_id: "11111111-2222-3333-4444-555555555555".into(),
            display_name: "d".into(),
            default_domain: "misim.onmicrosoft.com".into(),
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

    #[test]
    fn jti_cache_rejects_reuse_until_expiry() {
        let c = JtiCache::default();
        assert!(c.first_use("a".into(), 100, 50));
        assert!(!c.first_use("a".into(), 100, 60));
        assert!(c.first_use("a".into(), 200, 101));
    }
}
