//! Workload identity federation: federated identity credentials on managed-identity service
//! principals, and the token endpoint's validation of an external token (for AKS, a pod's projected
//! service-account token) presented as `client_assertion`.
//!
//! As Entra does it (<https://learn.microsoft.com/en-us/entra/workload-id/workload-identity-federation>):
//! the assertion's `iss` must equal a credential's `issuer` exactly (string comparison, no trailing-slash
//! or case folding), its signature must verify with a key of the issuer's JWKS (fetched over HTTP from
//! `{issuer}/.well-known/openid-configuration` → `jwks_uri`, cached), it must be within its validity
//! period, and its `sub` and one of its `aud` values must equal the credential's `subject` and one of its
//! `audiences` (case-sensitive since 2025,
//! <https://learn.microsoft.com/en-us/entra/identity-platform/reference-breaking-changes#federated-identity-credentials-now-use-case-sensitive-matching>).
//! Rejections carry Entra's AADSTS codes as real responses show them (quoted in public issues of
//! <https://github.com/Azure/azure-workload-identity/issues>, e.g. #340, #1200, #1232):
//! AADSTS700211 (issuer), AADSTS7000272 (signing key not in the issuer's metadata), AADSTS700027
//! (signature), AADSTS700024 (time range), AADSTS70021 (subject), AADSTS700212 (audience).
//!
//! Safety: misim only ever fetches issuer metadata from loopback addresses (`127.0.0.1`, `::1`,
//! `localhost`), without proxies or redirects, plus the host names given explicitly with
//! [`Federation::with_issuer_hosts`] (the containers' internal network, e.g. `arm`; never an IP
//! literal). An issuer elsewhere is refused as unreachable.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::assertion::{signed_claims, CLOCK_SKEW_SECS};
use crate::error::{AadError, Result};
use crate::model::ServicePrincipal;
use crate::store::AadStore;
use misim_core::store::Table;

/// Most federated identity credentials one identity may have (ARM refuses the 21st:
/// <https://learn.microsoft.com/en-us/entra/workload-id/workload-identity-federation-considerations#general-federated-identity-credential-considerations>).
pub const MAX_CREDENTIALS: usize = 20;

/// How long a fetched JWKS is used before it is fetched again, and the least time between two
/// fetches triggered by an unknown `kid` (a rotated issuer key).
const JWKS_TTL: Duration = Duration::from_secs(300);
const JWKS_REFETCH_AFTER: Duration = Duration::from_secs(5);
/// Timeout of one metadata request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest metadata document read, bytes.
const MAX_METADATA_BYTES: usize = 256 * 1024;

/// A federated identity credential as Azure AD stores it on a service principal (Graph
/// `federatedIdentityCredential`: name, issuer, subject, audiences,
/// <https://learn.microsoft.com/en-us/graph/api/resources/federatedidentitycredential>).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederatedCredential {
    /// Name, unique per identity.
    pub name: String,
    /// The external issuer's URL, compared with the token's `iss` exactly.
    pub issuer: String,
    /// The external identity, compared with the token's `sub` exactly.
    pub subject: String,
    /// Accepted `aud` values (Entra allows one; the recommended one is `api://AzureADTokenExchange`).
    pub audiences: Vec<String>,
}

#[derive(Clone)]
struct CachedJwks {
    fetched: Instant,
    keys: Vec<Value>,
}

/// Federated credentials of every principal, and the issuer key cache.
pub struct Federation {
    credentials: Table<Vec<FederatedCredential>>,
    store: AadStore,
    writes: tokio::sync::Mutex<()>,
    http: reqwest::Client,
    jwks: Mutex<HashMap<String, CachedJwks>>,
    /// Host names (lower-case) issuer metadata may be fetched from besides loopback.
    issuer_hosts: Vec<String>,
}

fn key(tenant_id: &str, object_id: &str) -> String {
    format!(
        "{}/{}",
        tenant_id.to_ascii_lowercase(),
        object_id.to_ascii_lowercase()
    )
}

/// The unverified claims of a compact JWS, `None` when it is not one.
fn peek_claims(jwt: &str) -> Option<Value> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// True when `assertion` is an external token rather than the client's own certificate-signed
/// assertion: its (unverified) `iss` is not the client ID but an issuer URL. A certificate assertion
/// has `iss` = `sub` = the client ID
/// (<https://learn.microsoft.com/en-us/entra/identity-platform/certificate-credentials>), and a
/// federated credential's issuer is an `https://` URL (http on loopback in misim)
/// (<https://learn.microsoft.com/en-us/entra/workload-id/workload-identity-federation-create-trust>);
/// any other `iss` is a certificate assertion for the wrong client (AADSTS700021).
pub fn is_federated(assertion: &str, client_id: &str) -> bool {
    peek_claims(assertion)
        .and_then(|c| c.get("iss").and_then(Value::as_str).map(str::to_owned))
        .is_some_and(|iss| {
            let lower = iss.to_ascii_lowercase();
            !iss.eq_ignore_ascii_case(client_id)
                && (lower.starts_with("https://") || lower.starts_with("http://"))
        })
}

/// True when `url` is `http(s)://` on a loopback host, the only places misim fetches from.
fn is_loopback_url(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    if !matches!(u.scheme(), "http" | "https") {
        return false;
    }
    let Some(host) = u.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// True for a DNS host name (not an IP literal): letters, digits, `-` and `.`, at most 253.
fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.parse::<std::net::IpAddr>().is_err()
        && h.chars().any(|c| c.is_ascii_alphabetic())
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !h.starts_with(['-', '.'])
}

/// True when `url` is `http(s)://` on one of `hosts` (lower-case host names).
fn is_allowed_host_url(url: &str, hosts: &[String]) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    if !matches!(u.scheme(), "http" | "https") {
        return false;
    }
    // the entries are host names (never IP literals), so an IP host never equals one
    u.host_str()
        .is_some_and(|d| is_host_name(d) && hosts.iter().any(|h| h.eq_ignore_ascii_case(d)))
}

fn federated(code: u32, unauthorized: bool, error: &'static str, message: String) -> AadError {
    AadError::Federated {
        code,
        unauthorized,
        error,
        message,
    }
}

const SEE: &str =
    "https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation";

fn key_not_found(kid: &str, issuer: &str, why: &str) -> AadError {
    federated(
        7000272,
        true,
        "invalid_client",
        format!(
            "The certificate with identifier {kid} used to sign the federated credential could not \
             be found in the metadata of identity provider {issuer}. Please validate that your \
             Identity Provider's metadata exposes the key used to sign the incoming token.{why}"
        ),
    )
}

impl Federation {
    /// Opens the federated-credential table of `store`.
    ///
    /// # Errors
    /// [`AadError::Store`] when the tree cannot be opened; [`AadError::Internal`] when the HTTP
    /// client cannot be built.
    pub fn open(store: &AadStore) -> Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| AadError::Internal(format!("http client: {e}")))?;
        Ok(Federation {
            credentials: store.open_table("federated_identity_credentials")?,
            store: store.clone(),
            writes: tokio::sync::Mutex::new(()),
            http,
            jwks: Mutex::new(HashMap::new()),
            issuer_hosts: Vec::new(),
        })
    }

    /// Also fetches issuer metadata from these host names (e.g. `arm` on a container network where
    /// ARM serves the cluster issuers), besides loopback. Only DNS names are accepted.
    ///
    /// # Errors
    /// [`AadError::InvalidArgument`] for an entry that is empty, an IP literal, or not a host name
    /// (letters, digits, `-`, `.`).
    pub fn with_issuer_hosts(mut self, hosts: &[String]) -> Result<Self> {
        for h in hosts {
            if !is_host_name(h) {
                return Err(AadError::InvalidArgument(format!(
                    "federation issuer host '{h}' is not a host name (an IP address or URL is not accepted)"
                )));
            }
            self.issuer_hosts.push(h.to_ascii_lowercase());
        }
        Ok(self)
    }

    /// True when issuer metadata may be fetched from `url`: loopback, or an allowed host name.
    fn may_fetch(&self, url: &str) -> bool {
        is_loopback_url(url) || is_allowed_host_url(url, &self.issuer_hosts)
    }

    /// Replaces the federated credentials of principal `object_id` in `tenant_id` (empty clears).
    ///
    /// # Errors
    /// [`AadError::InvalidArgument`] for more than [`MAX_CREDENTIALS`], a credential without name,
    /// issuer, subject or audience, or two with the same name; store errors.
    pub async fn set(
        &self,
        tenant_id: &str,
        object_id: &str,
        credentials: Vec<FederatedCredential>,
    ) -> Result<()> {
        if credentials.len() > MAX_CREDENTIALS {
            return Err(AadError::InvalidArgument(format!(
                "at most {MAX_CREDENTIALS} federated identity credentials per identity, got {}",
                credentials.len()
            )));
        }
        for (i, c) in credentials.iter().enumerate() {
            if c.name.is_empty() || c.issuer.is_empty() || c.subject.is_empty() {
                return Err(AadError::InvalidArgument(
                    "a federated identity credential needs name, issuer and subject".into(),
                ));
            }
            if c.audiences.is_empty() || c.audiences.iter().any(String::is_empty) {
                return Err(AadError::InvalidArgument(format!(
                    "federated identity credential '{}' needs an audience",
                    c.name
                )));
            }
            if credentials[..i]
                .iter()
                .any(|o| o.name.eq_ignore_ascii_case(&c.name))
            {
                return Err(AadError::InvalidArgument(format!(
                    "duplicate federated identity credential name '{}'",
                    c.name
                )));
            }
        }
        let _w = self.writes.lock().await;
        let k = key(tenant_id, object_id);
        if credentials.is_empty() {
            self.credentials.remove(&k)?;
        } else {
            self.credentials.put(&k, &credentials)?;
        }
        self.store.flush().await?;
        tracing::info!(
            tenant_id,
            object_id,
            count = credentials.len(),
            "set federated identity credentials"
        );
        Ok(())
    }

    /// The federated credentials of a principal (empty when none).
    ///
    /// # Errors
    /// Store errors.
    pub fn credentials(
        &self,
        tenant_id: &str,
        object_id: &str,
    ) -> Result<Vec<FederatedCredential>> {
        Ok(self
            .credentials
            .get(&key(tenant_id, object_id))?
            .unwrap_or_default())
    }

    /// Forgets the credentials of a deleted principal.
    ///
    /// # Errors
    /// Store errors.
    pub async fn remove(&self, tenant_id: &str, object_id: &str) -> Result<()> {
        self.set(tenant_id, object_id, Vec::new()).await
    }

    /// GETs `url` (loopback or an allowed host name only) as JSON.
    async fn fetch_json(&self, url: &str) -> std::result::Result<Value, String> {
        if !self.may_fetch(url) {
            return Err(format!(
                " misim fetches issuer metadata from loopback addresses only (and hosts allowed explicitly), not {url}."
            ));
        }
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!(" Fetching {url} failed: {e}."))?;
        if !resp.status().is_success() {
            return Err(format!(" {url} answered {}.", resp.status()));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!(" Reading {url} failed: {e}."))?;
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(format!(" {url} is larger than {MAX_METADATA_BYTES} bytes."));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!(" {url} is not JSON: {e}."))
    }

    /// Fetches the issuer's discovery document and JWKS (`keys` of the document at `jwks_uri`).
    async fn fetch_jwks(&self, issuer: &str) -> std::result::Result<Vec<Value>, String> {
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc = self.fetch_json(&discovery).await?;
        if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
            return Err(format!(
                " The discovery document at {discovery} names issuer {}, not {issuer}.",
                doc.get("issuer").unwrap_or(&Value::Null)
            ));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| format!(" The discovery document at {discovery} has no jwks_uri."))?;
        let jwks = self.fetch_json(jwks_uri).await?;
        Ok(jwks
            .get("keys")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// The issuer's key with `kid` (or its only key when the token names none), from the cache
    /// or, when absent or stale, fetched again.
    async fn issuer_key(&self, issuer: &str, kid: Option<&str>) -> Result<Value> {
        let pick = |keys: &[Value]| -> Option<Value> {
            match kid {
                Some(kid) => keys
                    .iter()
                    .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
                    .cloned(),
                None if keys.len() == 1 => keys.first().cloned(),
                None => None,
            }
        };
        let cached = self
            .jwks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(issuer)
            .cloned();
        if let Some(c) = &cached {
            let fresh = c.fetched.elapsed() < JWKS_TTL;
            if let Some(k) = pick(&c.keys).filter(|_| fresh) {
                return Ok(k);
            }
            if c.fetched.elapsed() < JWKS_REFETCH_AFTER {
                return Err(key_not_found(kid.unwrap_or(""), issuer, ""));
            }
        }
        let keys = self
            .fetch_jwks(issuer)
            .await
            .map_err(|why| key_not_found(kid.unwrap_or(""), issuer, &why))?;
        let found = pick(&keys);
        self.jwks.lock().unwrap_or_else(|p| p.into_inner()).insert(
            issuer.to_string(),
            CachedJwks {
                fetched: Instant::now(),
                keys,
            },
        );
        found.ok_or_else(|| key_not_found(kid.unwrap_or(""), issuer, ""))
    }

    /// Validates the external token `assertion` for principal `sp` at `now` (epoch seconds) against
    /// its federated credentials; returns the name of the credential that matched.
    ///
    /// # Errors
    /// AADSTS50027 (not a JWT), AADSTS700211 (no credential with the token's issuer), AADSTS7000272
    /// (signing key not in the issuer's JWKS, or the metadata cannot be fetched), AADSTS700027
    /// (signature), AADSTS700024 (outside `nbf`..`exp` with 5 minutes' skew), AADSTS70021 (no
    /// credential with that issuer and subject), AADSTS700212 (none with that audience too).
    pub async fn verify(&self, assertion: &str, sp: &ServicePrincipal, now: i64) -> Result<String> {
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|e| AadError::MalformedAssertion(e.to_string()))?;
        let unverified = peek_claims(assertion)
            .ok_or_else(|| AadError::MalformedAssertion("the payload is not JSON".into()))?;
        let issuer = unverified
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| AadError::MalformedAssertion("the assertion has no iss".into()))?
            .to_string();
        let all = self.credentials(&sp.tenant_id, &sp.object_id)?;
        let by_issuer: Vec<&FederatedCredential> =
            all.iter().filter(|c| c.issuer == issuer).collect();
        if by_issuer.is_empty() {
            return Err(federated(
                700211,
                true,
                "invalid_client",
                format!(
                    "No matching federated identity record found for presented assertion issuer \
                     '{issuer}'. Please check your federated identity credential Subject, Audience \
                     and Issuer against the presented assertion. {SEE}"
                ),
            ));
        }
        let kid = header.kid.clone().unwrap_or_default();
        let invalid = |reason: &str| AadError::InvalidSignature {
            reason: reason.to_string(),
            thumbprint: kid.clone(),
        };
        if !crate::assertion::RSA_ALGORITHMS.contains(&header.alg) {
            return Err(invalid("The signing algorithm is not supported."));
        }
        let jwk = self.issuer_key(&issuer, header.kid.as_deref()).await?;
        let (Some(n), Some(e)) = (
            jwk.get("n").and_then(Value::as_str),
            jwk.get("e").and_then(Value::as_str),
        ) else {
            return Err(key_not_found(&kid, &issuer, " The key is not an RSA key."));
        };
        let decoding = DecodingKey::from_rsa_components(n, e)
            .map_err(|_| key_not_found(&kid, &issuer, " The key is not an RSA key."))?;
        let claims = signed_claims(assertion, &decoding, header.alg, &kid)?;
        let date = |name: &str| claims.get(name).and_then(Value::as_f64).map(|f| f as i64);
        let (nbf, exp) = (date("nbf"), date("exp"));
        let expired = exp.is_none_or(|exp| now > exp.saturating_add(CLOCK_SKEW_SECS));
        let early = nbf.is_some_and(|nbf| now.saturating_add(CLOCK_SKEW_SECS) < nbf);
        if expired || early {
            return Err(AadError::AssertionTimeRange { now, nbf, exp });
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let by_subject: Vec<&&FederatedCredential> =
            by_issuer.iter().filter(|c| c.subject == subject).collect();
        if by_subject.is_empty() {
            return Err(federated(
                70021,
                false,
                "invalid_request",
                format!(
                    "No matching federated identity record found for presented assertion. \
                     Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion \
                     Audience: '{}'. {SEE}",
                    audiences.join(",")
                ),
            ));
        }
        let matched = by_subject
            .iter()
            .find(|c| c.audiences.iter().any(|a| audiences.contains(&a.as_str())));
        match matched {
            Some(c) => Ok(c.name.clone()),
            None => Err(federated(
                700212,
                true,
                "invalid_client",
                format!(
                    "No matching federated identity record found for presented assertion audience \
                     '{}'. Please check your federated identity credential Subject, Audience and \
                     Issuer against the presented assertion. {SEE}",
                    audiences.join(",")
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_fetched() {
        for ok in [
            "http://127.0.0.1:7701/oidc/x/",
            "https://localhost/x",
            "http://[::1]:80/",
        ] {
            assert!(is_loopback_url(ok), "{ok}");
        }
        for bad in [
            "http://169.254.169.254/metadata",
            "https://eastus.oic.prod-aks.azure.com/t/c/",
            "http://10.0.0.1/",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(!is_loopback_url(bad), "{bad}");
        }
    }

    #[test]
    fn named_issuer_hosts_are_fetched_only_when_allowed() {
        let hosts = vec!["arm".to_string()];
        assert!(is_allowed_host_url("http://arm:7701/oidc/t/u/", &hosts));
        assert!(is_allowed_host_url("http://ARM:7701/oidc/t/u/", &hosts));
        assert!(!is_allowed_host_url("http://arm:7701/oidc/t/u/", &[]));
        for bad in [
            "http://arm.evil:7701/",
            "http://169.254.169.254/metadata",
            "http://aad:7702/",
            "file://arm/etc/passwd",
        ] {
            assert!(!is_allowed_host_url(bad, &hosts), "{bad}");
        }
        for ok in ["arm", "arm.internal", "host-1"] {
            assert!(is_host_name(ok), "{ok}");
        }
        for bad in [
            "",
            "169.254.169.254",
            "::1",
            "http://arm",
            "arm:7701",
            "-x",
            "1.2.3.4",
        ] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }

    #[test]
    fn certificate_assertions_are_not_federated() {
        let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let jwt = |iss: &str| {
            format!(
                "{}.{}.sig",
                enc(serde_json::json!({"alg":"RS256"})),
                enc(serde_json::json!({"iss": iss}))
            )
        };
        assert!(!is_federated(&jwt("ABC"), "abc"));
        assert!(is_federated(&jwt("http://127.0.0.1/oidc/"), "abc"));
        assert!(!is_federated("garbage", "abc"));
    }

    #[tokio::test]
    async fn set_validates_and_replaces_the_whole_set() {
        let store = AadStore::temporary();
        let f = Federation::open(&store).unwrap();
        let c = |name: &str| FederatedCredential {
            name: name.into(),
            issuer: "http://127.0.0.1/i/".into(),
            subject: "system:serviceaccount:ns:sa".into(),
            audiences: vec!["api://AzureADTokenExchange".into()],
        };
        f.set("T", "O", vec![c("a"), c("b")]).await.unwrap();
        assert_eq!(f.credentials("t", "o").unwrap().len(), 2);
        assert!(f.set("t", "o", vec![c("a"), c("A")]).await.is_err());
        let too_many = (0..=MAX_CREDENTIALS).map(|i| c(&format!("c{i}"))).collect();
        assert!(f.set("t", "o", too_many).await.is_err());
        f.remove("t", "o").await.unwrap();
        assert!(f.credentials("t", "o").unwrap().is_empty());
    }
}
