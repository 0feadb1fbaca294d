//! The Key Vault data plane a workload calls with its managed-identity token: 401 without a token or
//! with another audience, 403 ForbiddenByRbac without a data role (Owner's actions do not grant data
//! actions), 200 with Key Vault Secrets User inherited from the resource group.

use crate::lifecycle_common::*;
use misim_proto::arm as pb;
use misim_tests::Sandbox;
use serde_json::Value;

async fn get_secret(
    sb: &Sandbox,
    vault: &str,
    name: &str,
    token: Option<&str>,
) -> (u16, Value, String) {
    let mut req = sb.http.get(format!(
        "{}/vaults/{vault}/secrets/{name}?api-version=7.4",
        sb.endpoints.arm_rest
    ));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("vault answers");
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, resp.json().await.unwrap_or(Value::Null), challenge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_reads_a_secret_only_with_a_data_role() {
    let sb = Sandbox::start().await;
    group(&sb, "app").await;
    let mut arm = sb.arm().await;
    let vault = arm
        .create_vault(pb::CreateVaultRequest {
            resource_group: "app".into(),
            name: "kv-misim".into(),
            ..Default::default()
        })
        .await
        .expect("create vault")
        .into_inner();
    assert_eq!(vault.vault_uri, "https://kv-misim.vault.azure.net/");
    assert_eq!(
        vault.data_plane_endpoint,
        format!("{}/vaults/kv-misim", sb.endpoints.arm_rest)
    );
    arm.set_secret(pb::SetSecretRequest {
        vault_name: "kv-misim".into(),
        name: "db-password".into(),
        value: "s3cret".into(),
    })
    .await
    .expect("set secret");

    let v = vm(&sb, "app", "worker", "host-1").await;
    let identity = enable_system(&sb, "app", "worker").await;
    // The workload asks IMDS for a Key Vault token (no trailing slash, as azure-identity sends it).
    let (status, body) = sb.imds_token(&v.imds_endpoint, VAULT, &[]).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_string();

    let (status, err, challenge) = get_secret(&sb, "kv-misim", "db-password", None).await;
    assert_eq!(status, 401, "{err}");
    assert_eq!(err["error"]["code"], "Unauthorized");
    assert!(
        challenge.contains("resource=\"https://vault.azure.net\""),
        "{challenge}"
    );
    let (_, mgmt) = sb.imds_token(&v.imds_endpoint, MGMT, &[]).await;
    let (status, err, _) = get_secret(
        &sb,
        "kv-misim",
        "db-password",
        mgmt["access_token"].as_str(),
    )
    .await;
    assert_eq!(status, 401, "an ARM token is not a Key Vault token: {err}");

    // Owner on the vault is control plane only: 403 ForbiddenByRbac.
    grant(&sb, &identity.principal_id, "Owner", &vault.id).await;
    let (status, err, _) = get_secret(&sb, "kv-misim", "db-password", Some(&token)).await;
    assert_eq!(status, 403, "{err}");
    assert_eq!(err["error"]["code"], "Forbidden");
    assert_eq!(err["error"]["innererror"]["code"], "ForbiddenByRbac");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Caller is not authorized to perform action on resource."));

    // Key Vault Secrets User on the resource group is inherited by the vault's secrets.
    grant(
        &sb,
        &identity.principal_id,
        "Key Vault Secrets User",
        &rg_id(&sb, "app"),
    )
    .await;
    let (status, secret, _) = get_secret(&sb, "kv-misim", "db-password", Some(&token)).await;
    assert_eq!(status, 200, "{secret}");
    assert_eq!(secret["value"], "s3cret");
    assert!(secret["id"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{}/secrets/db-password/", sb.endpoints.arm_rest)));
    assert_eq!(secret["attributes"]["enabled"], true);
    // A token for "https://vault.azure.net/" (trailing slash) works too.
    let (_, slash) = sb
        .imds_token(&v.imds_endpoint, "https://vault.azure.net/", &[])
        .await;
    let (status, _, _) = get_secret(
        &sb,
        "kv-misim",
        "db-password",
        slash["access_token"].as_str(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, err, _) = get_secret(&sb, "kv-misim", "missing", Some(&token)).await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["error"]["code"], "SecretNotFound");
    sb.stop().await;
}
