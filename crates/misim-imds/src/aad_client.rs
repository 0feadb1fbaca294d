//! Step 6: IMDS asks Azure AD for a token on behalf of a VM identity with the client-credentials grant
//! and a certificate client assertion
//! (<https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow>,
//! <https://learn.microsoft.com/entra/identity-platform/certificate-credentials>).

use std::time::Duration;

use misim_core::Clock;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::{AadError, ImdsError, Result};
use crate::model::HostCredential;

/// Client assertions are valid for 10 minutes (`exp = now + 600`).
pub const ASSERTION_LIFETIME_SECS: i64 = 600;

/// A token Azure AD issued (v1 response, values parsed to numbers).
#[derive(Clone, PartialEq, Eq)]
pub struct AadToken {
    /// The JWT. Never logged.
    pub access_token: String,
    /// Expiry, epoch seconds (`exp`).
    pub expires_on: i64,
    /// Validity start, epoch seconds (`nbf`).
    pub not_before: i64,
    /// Extended lifetime, seconds.
    pub ext_expires_in: i64,
    /// The resource (audience) as AAD echoed it.
    pub resource: String,
    /// Always `Bearer`.
    pub token_type: String,
}

impl std::fmt::Debug for AadToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AadToken")
            .field("expires_on", &self.expires_on)
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

/// One token request: which identity, for which resource.
#[derive(Debug)]
pub struct TokenRequest<'a> {
    /// Tenant of the identity's service principal.
    pub tenant_id: &'a str,
    /// Client id of the identity.
    pub client_id: &'a str,
    /// Resource (App ID URI) as the VM asked for it.
    pub resource: &'a str,
    /// The identity's certificate and parsed key (shared, not copied).
    pub credential: std::sync::Arc<HostCredential>,
    /// For user-assigned identities: the VM's resource ID, sent as `xms_az_rid`.
    pub xms_az_rid: Option<&'a str>,
}

#[derive(Serialize)]
struct AssertionHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    x5t: &'a str,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

/// Builds and signs the client assertion: header `{"alg":"RS256","typ":"JWT","x5t":…}` (`ES256` for
/// an EC P-256 identity key, `misim up --identity-key-type ec-p256`), claims
/// `aud = token_endpoint`, `iss = sub = client_id`, `jti`, `nbf = iat = now`, `exp = now + 600`.
/// CPU-bound (RSA signature): call from a blocking thread.
///
/// # Errors
/// [`AadError::Key`] when the private key cannot be used, [`AadError::Sign`] when signing fails.
pub fn client_assertion(
    token_endpoint: &str,
    client_id: &str,
    credential: &HostCredential,
    now: i64,
) -> Result<String, AadError> {
    let key = credential.signing_key().map_err(AadError::Key)?;
    let header = AssertionHeader {
        alg: key.alg(),
        typ: "JWT",
        x5t: &credential.x5t,
    };
    let claims = AssertionClaims {
        aud: token_endpoint,
        iss: client_id,
        sub: client_id,
        jti: uuid::Uuid::new_v4().to_string(),
        nbf: now,
        iat: now,
        exp: now.saturating_add(ASSERTION_LIFETIME_SECS),
    };
    key.sign(&header, &claims).map_err(AadError::Sign)
}

/// HTTP client for Azure AD's v1 token endpoint.
#[derive(Clone, Debug)]
pub struct AadClient {
    http: reqwest::Client,
    aad_url: String,
    clock: Clock,
}

impl AadClient {
    /// A client for the AAD at `aad_url` (no proxy, 30 s timeout).
    ///
    /// # Errors
    /// The [`reqwest::Error`] when the HTTP client cannot be built.
    pub fn new(aad_url: &str, clock: Clock) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(AadClient {
            http,
            aad_url: aad_url.trim_end_matches('/').to_string(),
            clock,
        })
    }

    /// `POST {aad_url}/{tenant}/oauth2/token` with a signed client assertion.
    ///
    /// # Errors
    /// [`ImdsError::InvalidResource`] with AAD's description when AAD answers `invalid_resource`
    /// (unknown resource, AADSTS500011); [`ImdsError::Aad`] when AAD is unreachable or answers
    /// anything else (IMDS then reports 500 "Failed to retrieve token from the Active directory",
    /// <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>).
    pub async fn fetch(&self, req: TokenRequest<'_>) -> Result<AadToken> {
        let endpoint = format!("{}/{}/oauth2/token", self.aad_url, req.tenant_id);
        let now = self.clock.now();
        let (aud, client_id, credential) = (
            endpoint.clone(),
            req.client_id.to_string(),
            std::sync::Arc::clone(&req.credential),
        );
        let assertion = tokio::task::spawn_blocking(move || {
            client_assertion(&aud, &client_id, &credential, now)
        })
        .await
        .map_err(AadError::Task)??;
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", req.client_id),
            ("resource", req.resource),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
        ];
        if let Some(rid) = req.xms_az_rid {
            form.push(("xms_az_rid", rid));
        }
        let resp = self
            .http
            .post(&endpoint)
            .headers(trace_headers())
            .form(&form)
            .send()
            .await
            .map_err(|source| AadError::Unreachable {
                endpoint: endpoint.clone(),
                source,
            })?;
        let status = resp.status();
        let unreadable = |source: Box<dyn std::error::Error + Send + Sync>| AadError::Unreadable {
            status: status.as_u16(),
            source,
        };
        let body = resp.bytes().await.map_err(|e| unreadable(Box::new(e)))?;
        if status.is_success() {
            let answer: TokenAnswer =
                serde_json::from_slice(&body).map_err(|e| unreadable(Box::new(e)))?;
            return Ok(parse_token(answer, now)?);
        }
        let refusal: ErrorAnswer =
            serde_json::from_slice(&body).map_err(|e| unreadable(Box::new(e)))?;
        if refusal.error == "invalid_resource" {
            return Err(ImdsError::InvalidResource(refusal.error_description));
        }
        let first_line = refusal.error_description.lines().next().unwrap_or_default();
        warn!(
            status = status.as_u16(),
            error = %refusal.error,
            description = first_line,
            "azure ad refused the token request"
        );
        Err(AadError::Refused {
            status: status.as_u16(),
            error: refusal.error,
        }
        .into())
    }
}

/// Azure AD's token answer: v1 sends numbers as JSON strings, v2 as integers
/// (<https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow>).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TokenAnswer {
    access_token: String,
    expires_on: Option<Number>,
    expires_in: Option<Number>,
    not_before: Option<Number>,
    ext_expires_in: Option<Number>,
    resource: Option<String>,
    token_type: Option<String>,
}

/// Azure AD's error answer (`error`, `error_description`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorAnswer {
    error: String,
    error_description: String,
}

/// A number that AAD sends as a JSON string (v1) or integer (v2); anything else is no number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Number {
    Integer(i64),
    Text(String),
    Other(serde::de::IgnoredAny),
}

impl Number {
    fn get(n: &Option<Number>) -> Option<i64> {
        match n {
            Some(Number::Integer(i)) => Some(*i),
            Some(Number::Text(s)) => s.parse().ok(),
            Some(Number::Other(_)) | None => None,
        }
    }
}

/// The widest span, in seconds, misim accepts between now and a time Azure AD reports (and for a
/// lifetime it reports): ten years. Real tokens live minutes to a day; anything beyond this is a broken
/// answer, and rejecting it keeps the arithmetic on AAD's numbers from overflowing.
pub const MAX_PLAUSIBLE_SECS: i64 = 10 * 365 * 86_400;

/// `t` (epoch seconds) lies within [`MAX_PLAUSIBLE_SECS`] of `now`.
fn plausible_time(t: i64, now: i64) -> bool {
    t.abs_diff(now) <= MAX_PLAUSIBLE_SECS.unsigned_abs()
}

/// `secs` is a lifetime between zero and [`MAX_PLAUSIBLE_SECS`].
fn plausible_lifetime(secs: i64) -> bool {
    (0..=MAX_PLAUSIBLE_SECS).contains(&secs)
}

/// The token in AAD's success answer. Times and lifetimes outside [`MAX_PLAUSIBLE_SECS`] make the answer
/// an AAD failure (IMDS then answers 500 `unknown`, as [`AadClient::fetch`] says) rather than a
/// wrapped or overflowing number.
fn parse_token(answer: TokenAnswer, now: i64) -> Result<AadToken, AadError> {
    let implausible = |field, value| AadError::Implausible { field, value };
    if answer.access_token.is_empty() {
        return Err(AadError::Missing("access_token"));
    }
    let expires_on = match (
        Number::get(&answer.expires_on),
        Number::get(&answer.expires_in),
    ) {
        (Some(on), _) if plausible_time(on, now) => on,
        (Some(on), _) => return Err(implausible("expires_on", on)),
        (None, Some(secs)) if plausible_lifetime(secs) => now.saturating_add(secs),
        (None, Some(secs)) => return Err(implausible("expires_in", secs)),
        (None, None) => return Err(AadError::Missing("expires_on")),
    };
    let not_before = match Number::get(&answer.not_before) {
        Some(t) if plausible_time(t, now) => t,
        Some(t) => return Err(implausible("not_before", t)),
        None => now,
    };
    let ext_expires_in = match Number::get(&answer.ext_expires_in) {
        Some(secs) if plausible_lifetime(secs) => secs,
        Some(secs) => return Err(implausible("ext_expires_in", secs)),
        None => expires_on.saturating_sub(now).max(0),
    };
    Ok(AadToken {
        access_token: answer.access_token,
        expires_on,
        not_before,
        ext_expires_in,
        resource: answer.resource.unwrap_or_default(),
        token_type: answer.token_type.unwrap_or_else(|| "Bearer".into()),
    })
}

/// The current flow's W3C `traceparent` for the call to Azure AD (misim_core::telemetry).
fn trace_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    misim_core::telemetry::propagation::inject_headers(&mut headers);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(v: serde_json::Value) -> TokenAnswer {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn parses_v1_strings_and_v2_integers() {
        let v1 = json!({"access_token":"a","expires_on":"2000","not_before":"1000","ext_expires_in":"5","resource":"r","token_type":"Bearer"});
        let t = parse_token(answer(v1), 1_000).unwrap();
        assert_eq!(
            (t.expires_on, t.not_before, t.ext_expires_in),
            (2_000, 1_000, 5)
        );
        let v2 = json!({"access_token":"a","expires_in":3599,"token_type":"Bearer"});
        assert_eq!(parse_token(answer(v2), 1_000).unwrap().expires_on, 4_599);
        assert!(parse_token(answer(json!({"expires_in":1})), 0).is_err());
    }

    #[test]
    fn absurd_numbers_are_an_aad_failure_not_a_panic() {
        let now = 1_800_000_000;
        let max = i64::MAX.to_string();
        let min = i64::MIN.to_string();
        for body in [
            json!({"access_token":"a","expires_in": i64::MAX}),
            json!({"access_token":"a","expires_in": max}),
            json!({"access_token":"a","expires_in": "-5"}),
            json!({"access_token":"a","expires_on": i64::MAX}),
            json!({"access_token":"a","expires_on": min}),
            json!({"access_token":"a","expires_on": "0"}),
            json!({"access_token":"a","expires_in": 3599, "not_before": i64::MIN}),
            json!({"access_token":"a","expires_in": 3599, "ext_expires_in": max}),
            json!({"access_token":"a","expires_in": 3599, "ext_expires_in": -1}),
        ] {
            assert!(
                matches!(
                    parse_token(answer(body.clone()), now),
                    Err(AadError::Implausible { .. })
                ),
                "{body}"
            );
        }
        // Near the edge of i64 the clock itself is absurd, but nothing overflows either.
        assert!(parse_token(answer(json!({"access_token":"a","expires_in":5})), i64::MAX).is_ok());
        let t = parse_token(
            answer(json!({"access_token":"a","expires_on":"1"})),
            i64::MIN + 1,
        );
        assert!(t.is_err());
    }
}
