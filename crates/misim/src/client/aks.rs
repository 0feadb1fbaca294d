//! AKS workload identity verbs: `misim aks create/show/delete/get-token` (like `az aks` with
//! `--enable-oidc-issuer --enable-workload-identity`, and the kubelet's projected service-account
//! token), `misim identity federated-credential create/list/show/delete` (like `az identity
//! federated-credential`) and the workload-identity flavor of `misim token get`.
//!
//! Output is az's: resource properties flattened to the top level with `resourceGroup`, and az's
//! `oidcIssuerProfile.issuerUrl` (ARM's REST API spells it `issuerURL`; az prints the Python SDK's
//! attribute names, <https://learn.microsoft.com/en-us/cli/azure/aks#az-aks-show>).
//! Sources: <https://learn.microsoft.com/en-us/azure/aks/workload-identity-deploy-cluster>,
//! <https://learn.microsoft.com/en-us/cli/azure/identity/federated-credential>.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use misim_proto::arm as pb;
use serde_json::{json, Map, Value};

use super::{print, print_text, status, Arm};
use crate::cli::Named;
use crate::cli::{
    AksCommand, FederatedCredentialCommand, ServiceAccountArgs, TokenAksArgs,
    TOKEN_EXCHANGE_AUDIENCE,
};

/// az's shape of an ARM resource: `properties` flattened, `resourceGroup` added.
fn az_shape(resource_json: &str) -> anyhow::Result<Value> {
    let v: Value = serde_json::from_str(resource_json).context("ARM answered malformed JSON")?;
    let mut out = Map::new();
    if let Value::Object(o) = &v {
        for (k, val) in o {
            if k == "properties" {
                if let Value::Object(p) = val {
                    out.extend(p.clone());
                }
            } else {
                out.insert(k.clone(), val.clone());
            }
        }
    }
    let group = v["id"]
        .as_str()
        .and_then(|id| {
            let parts: Vec<&str> = id.split('/').collect();
            parts
                .iter()
                .position(|p| p.eq_ignore_ascii_case("resourceGroups"))
                .and_then(|i| parts.get(i + 1).map(|s| s.to_string()))
        })
        .unwrap_or_default();
    out.insert("resourceGroup".into(), group.into());
    if let Some(Value::Object(oidc)) = out.get_mut("oidcIssuerProfile") {
        if let Some(url) = oidc.remove("issuerURL") {
            oidc.insert("issuerUrl".into(), url);
        }
    }
    Ok(Value::Object(out))
}

async fn sa_token(
    arm: &mut Arm,
    cluster: &Named,
    sa: &ServiceAccountArgs,
) -> anyhow::Result<pb::ServiceAccountToken> {
    let req = pb::CreateServiceAccountTokenRequest {
        resource_group: cluster.resource_group.clone(),
        cluster_name: cluster.name.clone(),
        namespace: sa.namespace.clone(),
        service_account: sa.service_account.clone(),
        audiences: sa.audiences.clone(),
        expiration_seconds: sa.expiration_seconds,
        pod_name: sa.pod.clone().unwrap_or_default(),
        ..Default::default()
    };
    Ok(arm
        .create_service_account_token(req)
        .await
        .map_err(status)?
        .into_inner())
}

/// Writes `token` to `path` as the kubelet does: a new file renamed over the old one.
fn write_token(path: &Path, token: &str) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let tmp = path.with_extension("misim-tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(token.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| {
        format!(
            "cannot replace {} (directory {})",
            path.display(),
            dir.map(|d| d.display().to_string()).unwrap_or_default()
        )
    })?;
    Ok(())
}

/// Runs `misim aks …`.
///
/// # Errors
/// ARM's errors, or the token file cannot be written.
pub async fn aks(arm: &mut Arm, c: AksCommand) -> anyhow::Result<()> {
    match c {
        AksCommand::Create { cluster, location } => {
            let req = pb::CreateManagedClusterRequest {
                resource_group: cluster.resource_group,
                name: cluster.name,
                location: location.unwrap_or_default(),
                ..Default::default()
            };
            let c = arm
                .create_managed_cluster(req)
                .await
                .map_err(status)?
                .into_inner();
            print(&az_shape(&c.resource_json)?);
        }
        AksCommand::Show { cluster } => {
            let req = pb::GetManagedClusterRequest {
                resource_group: cluster.resource_group,
                name: cluster.name,
                ..Default::default()
            };
            let c = arm
                .get_managed_cluster(req)
                .await
                .map_err(status)?
                .into_inner();
            print(&az_shape(&c.resource_json)?);
        }
        AksCommand::Delete { cluster } => {
            let req = pb::DeleteManagedClusterRequest {
                resource_group: cluster.resource_group,
                name: cluster.name,
                ..Default::default()
            };
            arm.delete_managed_cluster(req).await.map_err(status)?;
        }
        AksCommand::GetToken {
            cluster,
            sa,
            out,
            watch,
        } => loop {
            let t = sa_token(arm, &cluster, &sa).await?;
            let Some(path) = &out else {
                print_text(&t.token);
                return Ok(());
            };
            write_token(path, &t.token)?;
            print(&json!({
                "path": path.display().to_string(),
                "issuer": t.issuer,
                "expiresOn": t.expiration_timestamp,
            }));
            if !watch {
                return Ok(());
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default();
            let left = (t.expiration_timestamp - now).max(0);
            // The kubelet renews a projected token once 80% of its lifetime has passed.
            let wait = (sa.expiration_seconds.max(1) * 8 / 10).min(left).max(1);
            tokio::time::sleep(Duration::from_secs(wait as u64)).await;
        },
    }
    Ok(())
}

/// Runs `misim identity federated-credential …`.
///
/// # Errors
/// ARM's errors.
pub async fn federated_credential(
    arm: &mut Arm,
    c: FederatedCredentialCommand,
) -> anyhow::Result<()> {
    match c {
        FederatedCredentialCommand::Create {
            credential,
            issuer,
            subject,
            audiences,
        } => {
            let req = pb::CreateFederatedIdentityCredentialRequest {
                resource_group: credential.resource_group,
                identity_name: credential.identity_name,
                name: credential.name,
                issuer,
                subject,
                audiences,
                ..Default::default()
            };
            let f = arm
                .create_federated_identity_credential(req)
                .await
                .map_err(status)?
                .into_inner();
            print(&az_shape(&f.resource_json)?);
        }
        FederatedCredentialCommand::List {
            resource_group,
            identity_name,
        } => {
            let list = list_fics(arm, &resource_group, &identity_name).await?;
            let shaped: anyhow::Result<Vec<Value>> =
                list.iter().map(|f| az_shape(&f.resource_json)).collect();
            print(&Value::Array(shaped?));
        }
        FederatedCredentialCommand::Show { credential } => {
            let list =
                list_fics(arm, &credential.resource_group, &credential.identity_name).await?;
            let Some(f) = list
                .iter()
                .find(|f| f.name.eq_ignore_ascii_case(&credential.name))
            else {
                bail!(
                    "not found: The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/{}/federatedIdentityCredentials/{}' under resource group '{}' was not found.",
                    credential.identity_name,
                    credential.name,
                    credential.resource_group
                );
            };
            print(&az_shape(&f.resource_json)?);
        }
        FederatedCredentialCommand::Delete { credential } => {
            let req = pb::DeleteFederatedIdentityCredentialRequest {
                resource_group: credential.resource_group,
                identity_name: credential.identity_name,
                name: credential.name,
                ..Default::default()
            };
            arm.delete_federated_identity_credential(req)
                .await
                .map_err(status)?;
        }
    }
    Ok(())
}

async fn list_fics(
    arm: &mut Arm,
    resource_group: &str,
    identity_name: &str,
) -> anyhow::Result<Vec<pb::FederatedIdentityCredential>> {
    let req = pb::ListFederatedIdentityCredentialsRequest {
        resource_group: resource_group.to_string(),
        identity_name: identity_name.to_string(),
        ..Default::default()
    };
    Ok(arm
        .list_federated_identity_credentials(req)
        .await
        .map_err(status)?
        .into_inner()
        .credentials)
}

/// The client ID of the user-assigned identity in `group` with a federated credential for
/// `issuer` and `subject` (what the service account's `azure.workload.identity/client-id`
/// annotation names in AKS).
async fn client_id_for(
    arm: &mut Arm,
    group: &str,
    issuer: &str,
    subject: &str,
) -> anyhow::Result<String> {
    let req = pb::ListUserAssignedIdentitiesRequest {
        resource_group: group.to_string(),
        ..Default::default()
    };
    let ids = arm
        .list_user_assigned_identities(req)
        .await
        .map_err(status)?
        .into_inner()
        .identities;
    for id in ids {
        let fics = list_fics(arm, group, &id.name).await?;
        if fics
            .iter()
            .any(|f| f.issuer == issuer && f.subject == subject)
        {
            return Ok(id.client_id);
        }
    }
    bail!(
        "no user-assigned identity in resource group '{group}' has a federated credential for issuer \
         {issuer} and subject {subject}: create one (misim identity federated-credential create) or \
         pass --client-id"
    )
}

/// `misim token get --aks NAME -g RG --namespace NS --service-account SA [--client-id ID]`: the
/// pod's projected token, exchanged at Azure AD's v2 token endpoint for `resource`, as
/// azure-identity's `WorkloadIdentityCredential` does
/// (<https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow#third-case-access-token-request-with-a-federated-credential>).
/// Prints Azure AD's JSON answer.
///
/// # Errors
/// ARM's errors, Azure AD unreachable, or Azure AD's AADSTS error (printed as the error).
pub async fn token_via_aks(
    arm: &mut Arm,
    group: &str,
    args: &TokenAksArgs,
    resource: &str,
    client_id: Option<&str>,
) -> anyhow::Result<()> {
    let Some(cluster) = &args.aks else {
        bail!("--aks is required");
    };
    let Some(sa_name) = &args.service_account else {
        bail!("--aks needs --service-account");
    };
    let named = Named {
        resource_group: group.to_string(),
        name: cluster.clone(),
    };
    let sa = ServiceAccountArgs {
        namespace: args.namespace.clone(),
        service_account: sa_name.clone(),
        audiences: vec![TOKEN_EXCHANGE_AUDIENCE.to_string()],
        expiration_seconds: 3600,
        pod: None,
    };
    let t = sa_token(arm, &named, &sa).await?;
    let subject = format!(
        "system:serviceaccount:{}:{}",
        sa.namespace, sa.service_account
    );
    let client_id = match client_id {
        Some(c) => c.to_string(),
        None => client_id_for(arm, group, &t.issuer, &subject).await?,
    };
    let account = arm
        .get_account(pb::GetAccountRequest::default())
        .await
        .map_err(status)?
        .into_inner();
    let aad = args.aad_url.trim_end_matches('/');
    if !(aad.starts_with("http://127.0.0.1")
        || aad.starts_with("https://127.0.0.1")
        || aad.starts_with("http://localhost")
        || aad.starts_with("https://localhost"))
    {
        bail!(
            "--aad-url / MISIM_AAD must be misim's Azure AD on 127.0.0.1 or localhost, not {aad}"
        );
    }
    let resource = resource.trim_end_matches('/');
    let scope = format!("{resource}/.default");
    let url = format!("{aad}/{}/oauth2/v2.0/token", account.tenant_id);
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", t.token.as_str()),
        ("scope", scope.as_str()),
    ];
    let resp = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?
        .post(&url)
        .form(&form)
        .send()
        .await
        .with_context(|| format!("cannot reach Azure AD at {url} (set --aad-url / MISIM_AAD)"))?;
    let code = resp.status();
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("Azure AD at {url} answered {code} without JSON"))?;
    if !code.is_success() {
        bail!(
            "Azure AD refused the exchange ({code}): {}",
            body["error_description"]
                .as_str()
                .unwrap_or(&body.to_string())
        );
    }
    print(&body);
    Ok(())
}
