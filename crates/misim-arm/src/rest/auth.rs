//! Bearer-token validation for the REST surface, as ARM does it: RS256 signature with Azure AD's keys
//! (OpenID discovery of the token's tenant, then its JWKS, cached by `kid` and refetched on an
//! unknown `kid` at most every [`JWKS_REFETCH_SECONDS`]), issuer, audience and lifetime.

use std::collections::HashMap;
use std::sync::Mutex;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use misim_core::Clock;
use serde::Deserialize;
use tracing::{info, warn};

use crate::error::{ArmError, Result};

/// Audiences ARM accepts: the ARM resource URIs, with and without trailing slash, and ARM's
/// first-party application ID (the `aud` of v2-shaped tokens,
/// <https://learn.microsoft.com/en-us/entra/identity-platform/access-token-claims-reference>).
pub const ARM_AUDIENCES: &[&str] = &[
    "https://management.azure.com/",
    "https://management.azure.com",
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
    "797f4846-ba00-4fd7-ba43-dac1f8f63013",
];

/// Clock skew tolerated on `exp` and `nbf`, seconds (ARM and Entra tolerate 5 minutes).
pub const CLOCK_SKEW_SECONDS: i64 = 300;

/// Minimum seconds between JWKS refetches triggered by an unknown `kid`.
pub const JWKS_REFETCH_SECONDS: i64 = 10;

/// Who called: the validated token's object id and tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct Caller {
    /// `oid` claim: the principal's object id.
    pub object_id: String,
    /// `tid` claim.
    pub tenant_id: String,
    /// `appid` claim: the client id.
    pub app_id: String,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    tid: String,
    #[serde(default)]
    iss: String,
    #[serde(default)]
    aud: serde_json::Value,
    exp: Option<i64>,
    nbf: Option<i64>,
    #[serde(default)]
    oid: String,
    #[serde(default)]
    appid: String,
    #[serde(default)]
    azp: String,
}

#[derive(Deserialize, Clone)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize, Clone)]
struct Jwk {
    #[serde(default)]
    kid: String,
    #[serde(default)]
    n: String,
    #[serde(default)]
    e: String,
}

#[derive(Default)]
struct Cache {
    discovery: HashMap<String, Discovery>,
    /// jwks path → (kid → key, fetched at epoch seconds).
    keys: HashMap<String, (HashMap<String, Jwk>, i64)>,
}

/// Validates bearer tokens against Azure AD's published keys.
pub struct TokenValidator {
    http: reqwest::Client,
    aad_url: String,
    clock: Clock,
    cache: Mutex<Cache>,
}

fn invalid(message: impl Into<String>) -> ArmError {
    ArmError::InvalidToken {
        code: "InvalidAuthenticationToken",
        message: message.into(),
    }
}

/// ARM's time format in token errors, e.g. `11/23/2026 9:05:07 AM`.
pub fn arm_time(epoch_seconds: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(epoch_seconds)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (h, ampm) = match t.hour() {
        0 => (12, "AM"),
        h @ 1..=11 => (h, "AM"),
        12 => (12, "PM"),
        h => (h - 12, "PM"),
    };
    format!(
        "{}/{}/{} {}:{:02}:{:02} {}",
        u8::from(t.month()),
        t.day(),
        t.year(),
        h,
        t.minute(),
        t.second(),
        ampm
    )
}

/// The path (and query) of a URL, so keys are fetched from the Azure AD base URL ARM was configured
/// with even when discovery advertises a public host name ARM cannot reach. A relative reference
/// (`/x`) is its own path; a string that is not a URL reference gives `/`.
fn url_path(url: &str) -> String {
    use reqwest::Url; // the `url` crate
    let parsed = Url::parse(url)
        .or_else(|_| Url::parse("http://localhost/").and_then(|base| base.join(url)));
    match parsed {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
        Err(_) => "/".to_string(),
    }
}

impl TokenValidator {
    /// A validator reading discovery and keys from `aad_url` (e.g. `http://127.0.0.1:7700`).
    ///
    /// # Errors
    /// [`ArmError::Unavailable`] when the HTTP client cannot be built.
    pub fn new(aad_url: &str, clock: Clock) -> Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| ArmError::Unavailable(format!("http client: {e}")))?;
        Ok(TokenValidator {
            http,
            aad_url: aad_url.trim_end_matches('/').to_string(),
            clock,
            cache: Mutex::default(),
        })
    }

    /// The Azure AD base URL (for the `WWW-Authenticate` header).
    pub fn aad_url(&self) -> &str {
        &self.aad_url
    }

    /// Validates an `Authorization` header value. `tenant_trusted` says whether a tenant id belongs
    /// to a known subscription.
    ///
    /// # Errors
    /// [`ArmError::AuthenticationFailed`] (missing/malformed header), [`ArmError::InvalidToken`] (bad
    /// token, signature, issuer, audience, tenant), [`ArmError::ExpiredToken`],
    /// [`ArmError::Unavailable`] when Azure AD cannot be reached.
    pub async fn validate(
        &self,
        header: Option<&str>,
        tenant_trusted: impl Fn(&str) -> bool,
    ) -> Result<Caller> {
        self.validate_for(header, tenant_trusted, ARM_AUDIENCES)
            .await
    }

    /// As [`TokenValidator::validate`] for a service with other `audiences` (e.g. Key Vault's).
    ///
    /// # Errors
    /// As [`TokenValidator::validate`].
    pub async fn validate_for(
        &self,
        header: Option<&str>,
        tenant_trusted: impl Fn(&str) -> bool,
        audiences: &[&str],
    ) -> Result<Caller> {
        let header = header.ok_or_else(|| {
            ArmError::AuthenticationFailed(
                "Authentication failed. The 'Authorization' header is missing.".into(),
            )
        })?;
        let token = match header.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => t.trim(),
            _ => {
                return Err(ArmError::AuthenticationFailed(
                    "Authentication failed. The 'Authorization' header is provided in an invalid format.".into(),
                ))
            }
        };
        let jwt_header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("The access token is invalid."))?;
        let unverified: Claims = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| invalid("The access token is invalid."))?;
        if !tenant_trusted(&unverified.tid) {
            return Err(ArmError::InvalidToken {
                code: "InvalidAuthenticationTokenTenant",
                message: format!("The access token is from the wrong issuer '{}'. It must match a tenant associated with a subscription.", unverified.iss),
            });
        }
        if jwt_header.alg != Algorithm::RS256 {
            return Err(invalid("The access token is invalid."));
        }
        let kid = jwt_header
            .kid
            .or(jwt_header.x5t)
            .ok_or_else(|| invalid("The access token is invalid."))?;
        let discovery = self.discovery(&unverified.tid).await?;
        let jwk = self
            .key(&discovery.jwks_uri, &kid)
            .await?
            .ok_or_else(|| invalid("The access token signature is invalid."))?;
        let key = DecodingKey::from_rsa_components(&jwk.n, &jwk.e)
            .map_err(|_| invalid("The access token is invalid."))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|_| invalid("The access token signature is invalid."))?
            .claims;
        // ARM accepts v1 (`https://sts.windows.net/{tid}/`) and v2
        // (`https://login.microsoftonline.com/{tid}/v2.0`) tokens for its audience: the issuer must
        // be the one the tenant's v1 or v2 OpenID discovery document names.
        if claims.iss != discovery.issuer
            && self
                .discovery_at(&format!("{}/v2.0", unverified.tid))
                .await
                .map_or(true, |v2| claims.iss != v2.issuer)
        {
            return Err(invalid(format!(
                "The access token is from the wrong issuer '{}'.",
                claims.iss
            )));
        }
        let auds: Vec<String> = match &claims.aud {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => vec![],
        };
        if !auds.iter().any(|a| audiences.contains(&a.as_str())) {
            return Err(ArmError::InvalidToken {
                code: "InvalidAuthenticationTokenAudience",
                message: format!(
                    "The access token has been obtained for wrong audience or resource '{}'. It should exactly match with one of the allowed audiences {}.",
                    auds.join(","),
                    audiences.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(",")
                ),
            });
        }
        let now = self.clock.now();
        let exp = claims
            .exp
            .ok_or_else(|| invalid("The access token is invalid."))?;
        if now > exp + CLOCK_SKEW_SECONDS {
            return Err(ArmError::ExpiredToken(format!(
                "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                arm_time(exp),
                arm_time(now)
            )));
        }
        if claims.nbf.is_some_and(|nbf| now + CLOCK_SKEW_SECONDS < nbf) {
            return Err(invalid("The access token is not yet valid."));
        }
        if claims.oid.is_empty() {
            return Err(invalid("The access token is invalid."));
        }
        Ok(Caller {
            object_id: claims.oid,
            tenant_id: claims.tid,
            app_id: if claims.appid.is_empty() {
                claims.azp
            } else {
                claims.appid
            },
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{}", self.aad_url, path);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| ArmError::Unavailable(format!("azure ad {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(ArmError::Unavailable(format!(
                "azure ad {url}: status {}",
                resp.status()
            )));
        }
        resp.json()
            .await
            .map_err(|e| ArmError::Unavailable(format!("azure ad {url}: {e}")))
    }

    async fn discovery(&self, tenant: &str) -> Result<Discovery> {
        self.discovery_at(tenant).await
    }

    /// The OpenID discovery document at `/{prefix}/.well-known/openid-configuration` (`prefix` is
    /// `{tenant}` or `{tenant}/v2.0`), cached.
    async fn discovery_at(&self, tenant: &str) -> Result<Discovery> {
        if let Some(d) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .discovery
            .get(tenant)
        {
            return Ok(d.clone());
        }
        let d: Discovery = self
            .get_json(&format!("/{tenant}/.well-known/openid-configuration"))
            .await?;
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .discovery
            .insert(tenant.to_string(), d.clone());
        Ok(d)
    }

    async fn key(&self, jwks_uri: &str, kid: &str) -> Result<Option<Jwk>> {
        let path = url_path(jwks_uri);
        let now = self.clock.now();
        let may_fetch = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match cache.keys.get(&path) {
                Some((keys, _)) if keys.contains_key(kid) => return Ok(keys.get(kid).cloned()),
                Some((_, fetched)) => now - fetched >= JWKS_REFETCH_SECONDS,
                None => true,
            }
        };
        if !may_fetch {
            warn!(kid, "unknown signing key; jwks refetch rate-limited");
            return Ok(None);
        }
        let jwks: Jwks = self.get_json(&path).await?;
        let keys: HashMap<String, Jwk> =
            jwks.keys.into_iter().map(|k| (k.kid.clone(), k)).collect();
        info!(jwks = %path, keys = keys.len(), "fetched azure ad signing keys");
        let found = keys.get(kid).cloned();
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys
            .insert(path, (keys, now));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_time_uses_us_format_with_am_pm() {
        assert_eq!(arm_time(0), "1/1/1970 12:00:00 AM");
        assert_eq!(arm_time(13 * 3600 + 5 * 60 + 7), "1/1/1970 1:05:07 PM");
    }

    #[test]
    fn url_path_keeps_only_the_path() {
        assert_eq!(
            url_path("https://login.example/common/discovery/keys"),
            "/common/discovery/keys"
        );
        assert_eq!(url_path("http://127.0.0.1:1/x"), "/x");
        assert_eq!(url_path("http://host"), "/");
        assert_eq!(url_path("https://h/k?appid=1#f"), "/k?appid=1");
        assert_eq!(url_path("/relative/keys"), "/relative/keys");
    }
}
