//! AKS workload identity on ARM's side: federated identity credentials as child resources of
//! user-assigned identities, AKS managed clusters as OpenID Connect issuers, and the projected
//! service-account tokens a cluster issues to its pods.
//!
//! - `Microsoft.ManagedIdentity/userAssignedIdentities/{id}/federatedIdentityCredentials/{name}`
//!   (API 2023-01-31: `properties.issuer`, `subject`, `audiences`; at most 20 per identity, name
//!   3–120 characters of letters, digits, `-` and `_` starting with a letter or digit,
//!   <https://learn.microsoft.com/en-us/rest/api/managedidentity/federated-identity-credentials/create-or-update>,
//!   <https://learn.microsoft.com/en-us/entra/workload-id/workload-identity-federation-considerations>).
//!   ARM stores them and pushes the identity's whole set to MSRP, which registers it on the
//!   identity's service principal in Azure AD.
//! - `Microsoft.ContainerService/managedClusters/{name}` with `oidcIssuerProfile {enabled, issuerURL}`
//!   and `securityProfile.workloadIdentity.enabled`
//!   (<https://learn.microsoft.com/en-us/azure/aks/use-oidc-issuer>). The cluster's issuer is served
//!   by ARM's REST listener at `{rest}/oidc/{tenant}/{cluster uid}/` (discovery at
//!   `.well-known/openid-configuration`, keys at `openid/v1/jwks`, as the AKS issuer serves them). The
//!   signing key is the cluster's own (one per cluster, kept with the cluster resource); Azure AD
//!   fetches its public half over HTTP like Entra does.
//! - Service-account tokens as the kubelet projects them for a pod using workload identity: `iss` =
//!   the issuer URL, `sub` = `system:serviceaccount:{namespace}:{name}`, `aud` =
//!   `["api://AzureADTokenExchange"]`, `iat`/`nbf`/`exp` (one hour by default, at least ten
//!   minutes), `jti` and the `kubernetes.io` claim
//!   (<https://kubernetes.io/docs/tasks/configure-pod-container/configure-service-account/#serviceaccount-token-volume-projection>,
//!   <https://learn.microsoft.com/en-us/azure/aks/workload-identity-overview>).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use misim_core::ResourceId;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use serde_json::json;
use sha2::Digest;
use tracing::info;

use crate::error::{ArmError, Result};
use crate::service::{validate_name, Arm};

use crate::model::FIC_TYPE;
pub use crate::model::{FederatedCredential, ManagedCluster};
/// The audience Azure AD recommends for federated credentials and AKS projects by default.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Most federated identity credentials per identity.
pub const MAX_FEDERATED_CREDENTIALS: usize = 20;
/// Default lifetime of a projected service-account token, seconds (the AKS workload identity
/// webhook's default `azure.workload.identity/service-account-token-expiration`).
pub const DEFAULT_SA_TOKEN_SECS: i64 = 3600;
/// Shortest lifetime Kubernetes accepts for a projected token (`expirationSeconds` ≥ 600).
pub const MIN_SA_TOKEN_SECS: i64 = 600;
/// Longest lifetime misim issues (one day; the workload identity webhook allows up to 86 400 s).
pub const MAX_SA_TOKEN_SECS: i64 = 86_400;

/// What [`Arm::service_account_token`] is asked for.
#[derive(Clone, Debug, Default)]
pub struct TokenRequest {
    /// Namespace of the service account.
    pub namespace: String,
    /// Service account name.
    pub service_account: String,
    /// Audiences; empty means `api://AzureADTokenExchange`.
    pub audiences: Vec<String>,
    /// Lifetime in seconds; 0 means [`DEFAULT_SA_TOKEN_SECS`].
    pub expiration_seconds: i64,
    /// The pod the token is projected into, if any.
    pub pod_name: String,
}

/// A projected service-account token.
#[derive(Clone, Debug)]
pub struct ServiceAccountToken {
    /// The JWT.
    pub token: String,
    /// `exp`, epoch seconds.
    pub expires_on: i64,
    /// `iss`.
    pub issuer: String,
}

/// Checks a federated identity credential's name: 3–120 characters of letters, digits, `-`, `_`,
/// the first a letter or digit.
fn validate_fic_name(name: &str) -> Result<()> {
    let ok = (3..=120).contains(&name.len())
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        return Ok(());
    }
    Err(ArmError::InvalidArgument(format!(
        "The federated identity credential name '{name}' is invalid: it must be 3 to 120 characters of letters, digits, '-' and '_', starting with a letter or digit."
    )))
}

/// Checks an issuer URL: `https://…`, or `http://` on a loopback host or under ARM's own public
/// REST URL `own_rest` (misim's own cluster issuers, e.g. `http://arm:7701/oidc/…` in containers).
fn validate_issuer(issuer: &str, own_rest: &str) -> Result<()> {
    let own_rest = own_rest.trim_end_matches('/');
    if own_rest.starts_with("http://")
        && issuer
            .strip_prefix(own_rest)
            .is_some_and(|p| p.starts_with("/oidc/"))
    {
        return Ok(());
    }
    let bad = || {
        ArmError::InvalidArgument(format!(
            "The issuer '{issuer}' is invalid: it must be an https URL (misim also accepts http on 127.0.0.1 or localhost)."
        ))
    };
    let (scheme, rest) = issuer.split_once("://").ok_or_else(bad)?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_only = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    let loopback = matches!(host_only, "127.0.0.1" | "localhost" | "[::1]");
    match scheme {
        "https" if !host.is_empty() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(bad()),
    }
}

/// Checks a Kubernetes name: a DNS-1123 label for namespaces (`subdomain` false), a DNS-1123
/// subdomain for service accounts.
fn validate_k8s_name(kind: &str, name: &str, subdomain: bool) -> Result<()> {
    let max = if subdomain { 253 } else { 63 };
    let ok = !name.is_empty()
        && name.len() <= max
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (subdomain && c == '.')
        })
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        return Ok(());
    }
    Err(ArmError::InvalidArgument(format!(
        "{kind} '{name}' is invalid: a lowercase RFC 1123 {} must consist of lower case alphanumeric characters{}, and must start and end with an alphanumeric character (at most {max} characters)",
        if subdomain { "subdomain" } else { "label" },
        if subdomain { ", '-' or '.'" } else { " or '-'" },
    )))
}

/// A stable GUID derived from `parts` (the service account's `uid`).
fn derived_uid(parts: &[&str]) -> String {
    let digest = sha2::Sha256::digest(parts.join("/").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn cluster_not_found(id: &ResourceId) -> ArmError {
    ArmError::ResourceNotFound {
        resource_type: "Microsoft.ContainerService/managedClusters".into(),
        name: id.name().to_string(),
        group: id.resource_group_name().unwrap_or_default().to_string(),
    }
}

fn fic_not_found(id: &ResourceId) -> ArmError {
    ArmError::ResourceNotFound {
        resource_type: FIC_TYPE.into(),
        name: id.name().to_string(),
        group: id.resource_group_name().unwrap_or_default().to_string(),
    }
}

/// Generates a cluster signing key: PKCS#8 DER, kid, n, e.
fn generate_signing_key() -> Result<(Vec<u8>, String, String, String)> {
    let internal = |e: String| ArmError::Unavailable(format!("cluster signing key: {e}"));
    let der = misim_core::cert::generate_rsa_key().map_err(|e| internal(e.to_string()))?;
    let key = rsa::RsaPrivateKey::from_pkcs8_der(&der).map_err(|e| internal(e.to_string()))?;
    let public = key.to_public_key();
    let spki = public
        .to_public_key_der()
        .map_err(|e| internal(e.to_string()))?;
    let kid = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(spki.as_bytes()));
    let n = URL_SAFE_NO_PAD.encode(public.n().to_bytes_be());
    let e = URL_SAFE_NO_PAD.encode(public.e().to_bytes_be());
    Ok((der, kid, n, e))
}

impl Arm {
    fn identity_for_fic(
        &self,
        subscription_id: &str,
        group: &str,
        identity_name: &str,
    ) -> Result<crate::model::Uami> {
        self.get_user_assigned_identity(subscription_id, group, identity_name)
    }

    /// The federated credentials of identity `identity` (by id), sorted by name.
    ///
    /// # Errors
    /// Store failures.
    pub fn federated_credentials_of(
        &self,
        identity: &ResourceId,
    ) -> Result<Vec<FederatedCredential>> {
        Ok(self
            .store
            .federated_credentials
            .scan_prefix(&format!("{}/federatedidentitycredentials/", identity.key()))?
            .into_iter()
            .map(|(_, f)| f)
            .collect())
    }

    /// Pushes the identity's whole credential set to MSRP (which registers it in Azure AD).
    async fn push_federated_credentials(&self, identity: &ResourceId) -> Result<()> {
        let set = self.federated_credentials_of(identity)?;
        self.peers
            .set_federated_credentials(identity.as_str(), &set)
            .await
    }

    /// Creates or replaces federated identity credential `name` on user-assigned identity
    /// `identity_name` (ARM PUT). `audiences` empty means `api://AzureADTokenExchange`.
    ///
    /// # Errors
    /// Lookup errors; [`ArmError::InvalidArgument`] for a bad name, issuer, subject or audiences,
    /// the 21st credential, or an issuer and subject pair another credential of the identity has;
    /// [`ArmError::Unavailable`] when MSRP or Azure AD cannot register it (nothing is kept then).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_federated_credential(
        &self,
        subscription_id: &str,
        group: &str,
        identity_name: &str,
        name: &str,
        issuer: &str,
        subject: &str,
        audiences: Vec<String>,
    ) -> Result<FederatedCredential> {
        let uami = self.identity_for_fic(subscription_id, group, identity_name)?;
        validate_fic_name(name)?;
        validate_issuer(issuer, self.public_rest_url())?;
        if subject.trim().is_empty() || subject.len() > 600 {
            return Err(ArmError::InvalidArgument(
                "The subject is required and may be at most 600 characters.".into(),
            ));
        }
        let audiences = if audiences.is_empty() {
            vec![TOKEN_EXCHANGE_AUDIENCE.to_string()]
        } else {
            audiences
        };
        if audiences.len() != 1 || audiences[0].trim().is_empty() || audiences[0].len() > 600 {
            return Err(ArmError::InvalidArgument(
                "Exactly one audience of at most 600 characters is supported.".into(),
            ));
        }
        let id = ResourceId::parse(&format!(
            "{}/federatedIdentityCredentials/{name}",
            uami.id.as_str()
        ))?;
        let _guard = self.locks.lock(&uami.id.key()).await;
        let existing = self.federated_credentials_of(&uami.id)?;
        let others: Vec<&FederatedCredential> =
            existing.iter().filter(|f| f.id.key() != id.key()).collect();
        if others.len() >= MAX_FEDERATED_CREDENTIALS {
            return Err(ArmError::InvalidArgument(format!(
                "The identity '{identity_name}' already has the maximum of {MAX_FEDERATED_CREDENTIALS} federated identity credentials."
            )));
        }
        if let Some(dup) = others
            .iter()
            .find(|f| f.issuer == issuer && f.subject == subject)
        {
            return Err(ArmError::InvalidArgument(format!(
                "The federated identity credential '{}' of identity '{identity_name}' already has issuer '{issuer}' and subject '{subject}'.",
                dup.name()
            )));
        }
        let fic = FederatedCredential {
            id: id.clone(),
            identity: uami.id.clone(),
            issuer: issuer.to_string(),
            subject: subject.to_string(),
            audiences,
        };
        let previous = existing.iter().find(|f| f.id.key() == id.key()).cloned();
        self.store.federated_credentials.put(&id.key(), &fic)?;
        if let Err(e) = self.push_federated_credentials(&uami.id).await {
            match previous {
                Some(p) => self.store.federated_credentials.put(&id.key(), &p)?,
                None => {
                    self.store.federated_credentials.remove(&id.key())?;
                }
            }
            return Err(e);
        }
        self.store.flush().await?;
        info!(credential = %id, issuer, subject, "created federated identity credential");
        Ok(fic)
    }

    /// The federated credentials of user-assigned identity `identity_name`.
    ///
    /// # Errors
    /// Lookup errors.
    pub fn list_federated_credentials(
        &self,
        subscription_id: &str,
        group: &str,
        identity_name: &str,
    ) -> Result<Vec<FederatedCredential>> {
        let uami = self.identity_for_fic(subscription_id, group, identity_name)?;
        self.federated_credentials_of(&uami.id)
    }

    /// One federated credential.
    ///
    /// # Errors
    /// Lookup errors, [`ArmError::ResourceNotFound`].
    pub fn get_federated_credential(
        &self,
        subscription_id: &str,
        group: &str,
        identity_name: &str,
        name: &str,
    ) -> Result<FederatedCredential> {
        let uami = self.identity_for_fic(subscription_id, group, identity_name)?;
        let id = ResourceId::parse(&format!(
            "{}/federatedIdentityCredentials/{name}",
            uami.id.as_str()
        ))
        .map_err(|_| ArmError::InvalidArgument(format!("invalid name '{name}'")))?;
        self.store
            .federated_credentials
            .get(&id.key())?
            .ok_or_else(|| fic_not_found(&id))
    }

    /// Deletes a federated credential (absent: success, as ARM's DELETE); Azure AD stops accepting
    /// it once MSRP has pushed the remaining set.
    ///
    /// # Errors
    /// Lookup errors; [`ArmError::Unavailable`] when MSRP cannot update Azure AD (then it is kept).
    pub async fn delete_federated_credential(
        &self,
        subscription_id: &str,
        group: &str,
        identity_name: &str,
        name: &str,
    ) -> Result<bool> {
        let uami = self.identity_for_fic(subscription_id, group, identity_name)?;
        let Ok(id) = ResourceId::parse(&format!(
            "{}/federatedIdentityCredentials/{name}",
            uami.id.as_str()
        )) else {
            return Ok(false);
        };
        let _guard = self.locks.lock(&uami.id.key()).await;
        let Some(old) = self.store.federated_credentials.get(&id.key())? else {
            return Ok(false);
        };
        self.store.federated_credentials.remove(&id.key())?;
        if let Err(e) = self.push_federated_credentials(&uami.id).await {
            self.store.federated_credentials.put(&id.key(), &old)?;
            return Err(e);
        }
        self.store.flush().await?;
        info!(credential = %id, "deleted federated identity credential");
        Ok(true)
    }

    /// `c` with its issuer URL under ARM's current REST URL.
    fn with_issuer(&self, mut c: ManagedCluster) -> ManagedCluster {
        let rest = self.public_rest_url().trim_end_matches('/');
        if !rest.is_empty() {
            c.issuer_url = format!("{rest}/oidc/{}/{}/", c.tenant_id, c.uid);
        }
        c
    }

    fn cluster_id(&self, subscription_id: &str, group: &str, name: &str) -> Result<ResourceId> {
        let g = self.group(subscription_id, group)?;
        validate_name("managed cluster", name)?;
        Ok(ResourceId::resource(
            g.id.subscription_id(),
            g.id.name(),
            "Microsoft.ContainerService",
            "managedClusters",
            name,
        )?)
    }

    /// Creates an AKS cluster with the OIDC issuer and workload identity enabled (`az aks create
    /// --enable-oidc-issuer --enable-workload-identity`); creating it again returns it unchanged.
    ///
    /// # Errors
    /// Lookup and name errors; [`ArmError::Unavailable`] when ARM's REST surface (which serves the
    /// issuer) is not running or the key cannot be made.
    pub async fn create_managed_cluster(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
        location: &str,
    ) -> Result<ManagedCluster> {
        let g = self.group(subscription_id, group)?;
        let id = self.cluster_id(subscription_id, group, name)?;
        let tenant_id = self.subscription(g.id.subscription_id())?.tenant_id;
        let rest = self.public_rest_url().trim_end_matches('/').to_string();
        if rest.is_empty() {
            return Err(ArmError::Unavailable(
                "ARM's REST surface is not running: it serves the clusters' OIDC issuers".into(),
            ));
        }
        let _guard = self.locks.lock(&id.key()).await;
        if let Some(existing) = self.store.clusters.get(&id.key())? {
            return Ok(self.with_issuer(existing));
        }
        let (signing_key_pkcs8_der, kid, n, e) = tokio::task::spawn_blocking(generate_signing_key)
            .await
            .map_err(|e| ArmError::Unavailable(format!("cluster signing key task: {e}")))??;
        let uid = uuid::Uuid::new_v4().to_string();
        let cluster = ManagedCluster {
            issuer_url: format!("{rest}/oidc/{tenant_id}/{uid}/"),
            id: id.clone(),
            location: if location.is_empty() {
                g.location.clone()
            } else {
                location.to_string()
            },
            tenant_id,
            uid,
            signing_key_pkcs8_der,
            kid,
            n,
            e,
        };
        self.store.clusters.put(&id.key(), &cluster)?;
        self.store.flush().await?;
        info!(cluster = %id, issuer = %cluster.issuer_url, "created managed cluster with oidc issuer");
        Ok(cluster)
    }

    /// An AKS cluster.
    ///
    /// # Errors
    /// Lookup errors, [`ArmError::ResourceNotFound`].
    pub fn get_managed_cluster(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
    ) -> Result<ManagedCluster> {
        let id = self.cluster_id(subscription_id, group, name)?;
        self.store
            .clusters
            .get(&id.key())?
            .map(|c| self.with_issuer(c))
            .ok_or_else(|| cluster_not_found(&id))
    }

    /// The clusters of a resource group.
    ///
    /// # Errors
    /// Lookup errors.
    pub fn list_managed_clusters(
        &self,
        subscription_id: &str,
        group: &str,
    ) -> Result<Vec<ManagedCluster>> {
        let g = self.group(subscription_id, group)?;
        Ok(self
            .store
            .clusters
            .scan_prefix(&format!("{}/", g.id.key()))?
            .into_iter()
            .map(|(_, c)| self.with_issuer(c))
            .collect())
    }

    /// Deletes a cluster (absent: success); its issuer stops answering, so tokens it issued can no
    /// longer be exchanged.
    ///
    /// # Errors
    /// Lookup errors.
    pub async fn delete_managed_cluster(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
    ) -> Result<bool> {
        let Ok(id) = self.cluster_id(subscription_id, group, name) else {
            return Ok(false);
        };
        let existed = self.store.clusters.remove(&id.key())?.is_some();
        self.store.flush().await?;
        if existed {
            info!(cluster = %id, "deleted managed cluster");
        }
        Ok(existed)
    }

    /// The cluster whose issuer is `/oidc/{tenant}/{uid}/`.
    ///
    /// # Errors
    /// Store failures.
    pub fn cluster_by_issuer(&self, tenant: &str, uid: &str) -> Result<Option<ManagedCluster>> {
        Ok(self
            .store
            .clusters
            .values()?
            .into_iter()
            .find(|c| c.uid.eq_ignore_ascii_case(uid) && c.tenant_id.eq_ignore_ascii_case(tenant))
            .map(|c| self.with_issuer(c)))
    }

    /// Issues a projected service-account token of cluster `cluster_name`, as the kubelet writes
    /// it into a pod that uses workload identity (a new token on every call: rotation).
    ///
    /// # Errors
    /// Lookup errors; [`ArmError::InvalidArgument`] for bad names, audiences or lifetimes.
    pub fn service_account_token(
        &self,
        subscription_id: &str,
        group: &str,
        cluster_name: &str,
        req: &TokenRequest,
    ) -> Result<ServiceAccountToken> {
        let cluster = self.get_managed_cluster(subscription_id, group, cluster_name)?;
        validate_k8s_name("namespace", &req.namespace, false)?;
        validate_k8s_name("service account", &req.service_account, true)?;
        let lifetime = match req.expiration_seconds {
            0 => DEFAULT_SA_TOKEN_SECS,
            s if (MIN_SA_TOKEN_SECS..=MAX_SA_TOKEN_SECS).contains(&s) => s,
            s => {
                return Err(ArmError::InvalidArgument(format!(
                    "expirationSeconds {s} is out of range: it must be between {MIN_SA_TOKEN_SECS} and {MAX_SA_TOKEN_SECS}"
                )))
            }
        };
        let audiences = if req.audiences.is_empty() {
            vec![TOKEN_EXCHANGE_AUDIENCE.to_string()]
        } else {
            req.audiences.clone()
        };
        if audiences.iter().any(|a| a.trim().is_empty()) {
            return Err(ArmError::InvalidArgument(
                "an audience may not be empty".into(),
            ));
        }
        let now = self.clock().now();
        let mut k8s = json!({
            "namespace": req.namespace,
            "serviceaccount": {
                "name": req.service_account,
                "uid": derived_uid(&[&cluster.uid, &req.namespace, &req.service_account]),
            },
        });
        if !req.pod_name.is_empty() {
            validate_k8s_name("pod", &req.pod_name, true)?;
            k8s["pod"] = json!({
                "name": req.pod_name,
                "uid": derived_uid(&[&cluster.uid, &req.namespace, "pod", &req.pod_name]),
            });
        }
        let claims = json!({
            "aud": audiences,
            "exp": now + lifetime,
            "iat": now,
            "iss": cluster.issuer_url,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": k8s,
            "nbf": now,
            "sub": format!("system:serviceaccount:{}:{}", req.namespace, req.service_account),
        });
        let key = rsa::RsaPrivateKey::from_pkcs8_der(&cluster.signing_key_pkcs8_der)
            .map_err(|e| ArmError::Unavailable(format!("cluster signing key: {e}")))?;
        let pkcs1 = key
            .to_pkcs1_der()
            .map_err(|e| ArmError::Unavailable(format!("cluster signing key: {e}")))?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(cluster.kid.clone());
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_der(pkcs1.as_bytes()),
        )
        .map_err(|e| ArmError::Unavailable(format!("signing the service-account token: {e}")))?;
        info!(cluster = %cluster.id, namespace = %req.namespace, service_account = %req.service_account, "issued projected service-account token");
        Ok(ServiceAccountToken {
            token,
            expires_on: now + lifetime,
            issuer: cluster.issuer_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_issuers_follow_the_service_rules() {
        for ok in ["abc", "k8s-default_sa", &"a".repeat(120)] {
            assert!(validate_fic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "-abc", "a.b", &"a".repeat(121), "ä12"] {
            assert!(validate_fic_name(bad).is_err(), "{bad}");
        }
        for ok in [
            "https://eastus.oic.prod-aks.azure.com/t/c/",
            "http://127.0.0.1:7701/oidc/t/c/",
            "http://localhost/x",
        ] {
            assert!(validate_issuer(ok, "").is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/",
            "ftp://127.0.0.1/",
            "issuer",
            "https://",
        ] {
            assert!(validate_issuer(bad, "").is_err(), "{bad}");
        }
        // ARM's own issuers under its public REST URL (containers: http://arm:7701), nothing else there
        let own = "http://arm:7701";
        assert!(validate_issuer("http://arm:7701/oidc/t/c/", own).is_ok());
        assert!(validate_issuer("http://arm:7701/other/", own).is_err());
        assert!(validate_issuer("http://arm:77011/oidc/t/c/", own).is_err());
        assert!(validate_issuer("http://arm:7701/oidc/t/c/", "").is_err());
        assert!(validate_k8s_name("namespace", "default", false).is_ok());
        assert!(validate_k8s_name("namespace", "Default", false).is_err());
        assert!(validate_k8s_name("namespace", "a.b", false).is_err());
        assert!(validate_k8s_name("service account", "a.b", true).is_ok());
    }

    #[test]
    fn signing_keys_have_kubernetes_style_kids() {
        let (_, kid, n, e) = generate_signing_key().unwrap();
        assert_eq!(kid.len(), 43);
        assert_eq!(e, "AQAB");
        assert!(n.len() > 300);
        assert_eq!(derived_uid(&["a", "b"]), derived_uid(&["a", "b"]));
        assert_ne!(derived_uid(&["a", "b"]), derived_uid(&["a", "c"]));
    }
}
