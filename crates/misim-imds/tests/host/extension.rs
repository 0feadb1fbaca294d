//! The legacy VM extension through the host agent API: its token endpoint, its errors, the credential
//! files it keeps on the VM side, re-runs on a new forceUpdateTag, removal and restart.

use std::path::Path;

use serde_json::Value;

use crate::{get_with, http, system_identity, user_identity, Sandbox};

const MGMT: &str = "https%3A%2F%2Fmanagement.azure.com%2F";

fn settings(path: &str) -> Value {
    let text = std::fs::read_to_string(Path::new(path).join("settings.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn installed_extension_serves_tokens_and_keeps_readable_credentials_on_the_vm() {
    let sb = Sandbox::unlimited().await;
    sb.place("vm1").await;
    let (s, u) = (system_identity("vm1"), user_identity("u1"));
    sb.configure("vm1", &[&s, &u]).await.unwrap();

    let placed = sb.set_extension("vm1", 0, Some("1")).await.unwrap();
    assert_eq!(placed.extension_port, 50342, "default settings.port");
    assert!(placed.extension_endpoint.starts_with("http://127.0.0.1:"));
    let ext = placed.extension_endpoint.clone();

    // Token without api-version, Metadata: true, and the response shape: the request and response of
    // https://learn.microsoft.com/azure/active-directory/managed-identities-azure-resources/howto-migrate-vm-extension
    let url = format!("{ext}/oauth2/token?resource={MGMT}");
    let (status, headers, body) = get_with(&http(), &url, &[("Metadata", "true")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["refresh_token"], "");
    assert_eq!(body["resource"], "https://management.azure.com/");
    assert_eq!(body["token_type"], "Bearer");
    for field in ["access_token", "expires_in", "expires_on", "not_before"] {
        assert!(body[field].is_string(), "{field} is a string: {body}");
    }
    assert!(body["access_token"]
        .as_str()
        .unwrap()
        .ends_with(&s.client_id));
    let by_client = format!("{url}&client_id={}", u.client_id);
    let (status, _, body) = get_with(&http(), &by_client, &[("Metadata", "true")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"]
        .as_str()
        .unwrap()
        .ends_with(&u.client_id));
    let by_object = format!("{url}&object_id={}", u.principal_id);
    assert_eq!(
        get_with(&http(), &by_object, &[("Metadata", "true")])
            .await
            .0,
        200
    );

    // Credentials on the VM side: world-readable PEMs with the private key, settings like waagent's.
    let dir = Path::new(&placed.extension_credential_path);
    assert!(
        dir.ends_with("ManagedIdentity-Settings"),
        "{}",
        dir.display()
    );
    assert!(dir.starts_with(sb.dir.path()));
    for i in [&s, &u] {
        let pem_path = dir.join(format!("{}.pem", i.client_id));
        let pem = std::fs::read_to_string(&pem_path).unwrap();
        assert!(pem.contains("-----BEGIN PRIVATE KEY-----"));
        #[cfg(unix)]
        assert_eq!(mode(&pem_path), 0o644);
    }
    let st = settings(&placed.extension_credential_path);
    assert_eq!(st["port"], 50342);
    assert_eq!(st["type"], "ManagedIdentityExtensionForLinux");
    assert_eq!(st["identities"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn extension_errors_follow_the_extension_table() {
    let sb = Sandbox::unlimited().await;
    sb.place("vm1").await;
    sb.configure("vm1", &[&user_identity("u1"), &user_identity("u2")])
        .await
        .unwrap();
    let ext = sb
        .set_extension("vm1", 50342, Some("t"))
        .await
        .unwrap()
        .extension_endpoint;
    let url = format!("{ext}/oauth2/token?resource={MGMT}");

    let (status, _, body) = get_with(&http(), &url, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_request_102"))
    );
    assert_eq!(
        body["error_description"],
        "Required metadata header not specified"
    );

    let wrong = format!("{ext}/metadata/identity/oauth2/token?resource={MGMT}");
    let (status, _, body) = get_with(&http(), &wrong, &[("Metadata", "true")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unknown_source"))
    );
    let host = ext.trim_start_matches("http://");
    assert_eq!(
        body["error_description"],
        format!("Unknown Source http://{host}/metadata/identity/oauth2/token?resource={MGMT}")
    );

    let (status, _, body) = get_with(&http(), &url, &[("Metadata", "true")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "two UAMIs need a selector"
    );
    let no_resource = format!("{ext}/oauth2/token");
    let (status, _, body) = get_with(&http(), &no_resource, &[("Metadata", "true")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let unknown = format!("{url}&client_id=00000000-0000-0000-0000-000000000000");
    let (status, _, body) = get_with(&http(), &unknown, &[("Metadata", "true")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );

    // Azure AD rejects the resource: 500 unknown naming the extension's log file, which has the cause.
    let u3 = user_identity("u3");
    sb.configure("vm1", &[&u3]).await.unwrap();
    let bad = format!("{ext}/oauth2/token?resource=https://nope.example/");
    let (status, _, body) = get_with(&http(), &bad, &[("Metadata", "true")]).await;
    assert_eq!((status, body["error"].as_str()), (500, Some("unknown")));
    let description = body["error_description"].as_str().unwrap();
    let log = description
        .strip_prefix(
            "Failed to retrieve token from the Active directory. For details see logs in ",
        )
        .unwrap_or_else(|| panic!("{description}"));
    assert!(std::fs::read_to_string(log)
        .unwrap()
        .contains("azure ad rejected the resource"));
}

#[tokio::test]
async fn new_force_update_tag_reruns_and_removal_deletes_the_credentials() {
    let sb = Sandbox::unlimited().await;
    sb.place("vm1").await;
    let s = system_identity("vm1");
    sb.configure("vm1", &[&s]).await.unwrap();
    let first = sb.set_extension("vm1", 50342, Some("a")).await.unwrap();
    let url = format!("{}/oauth2/token?resource={MGMT}", first.extension_endpoint);
    assert_eq!(
        get_with(&http(), &url, &[("Metadata", "true")]).await.0,
        200
    );
    assert_eq!(
        get_with(&http(), &url, &[("Metadata", "true")]).await.0,
        200
    );
    assert_eq!(sb.aad.calls(), 1, "the extension caches its token");

    let same = sb.set_extension("vm1", 50342, Some("a")).await.unwrap();
    assert_eq!(same, first, "same tag and port: nothing to do");
    assert_eq!(
        get_with(&http(), &url, &[("Metadata", "true")]).await.0,
        200
    );
    assert_eq!(sb.aad.calls(), 1);

    let rerun = sb.set_extension("vm1", 50343, Some("b")).await.unwrap();
    assert_eq!(rerun.extension_port, 50343);
    assert_eq!(
        settings(&rerun.extension_credential_path)["forceUpdateTag"],
        "b"
    );
    let url = format!("{}/oauth2/token?resource={MGMT}", rerun.extension_endpoint);
    assert_eq!(
        get_with(&http(), &url, &[("Metadata", "true")]).await.0,
        200
    );
    assert_eq!(sb.aad.calls(), 2, "a re-run starts with an empty cache");

    // IMDS is unaffected by the extension and keeps its own cache.
    let (status, _) = crate::token(&first.imds_endpoint, "").await;
    assert_eq!(status, 200);
    assert_eq!(sb.aad.calls(), 3);

    let removed = sb.set_extension("vm1", 0, None).await.unwrap();
    assert_eq!(removed.extension_endpoint, "");
    assert_eq!(removed.extension_credential_path, "");
    assert_eq!(removed.extension_port, 0);
    assert!(!Path::new(&rerun.extension_credential_path).exists());
    assert!(
        http()
            .get(&url)
            .header("Metadata", "true")
            .send()
            .await
            .is_err(),
        "listener closed"
    );
    assert_eq!(crate::token(&first.imds_endpoint, "").await.0, 200);
}

#[tokio::test]
async fn identity_changes_rewrite_the_files_and_vm_removal_deletes_them() {
    let sb = Sandbox::unlimited().await;
    sb.place("vm1").await;
    let (s, u) = (system_identity("vm1"), user_identity("u1"));
    sb.configure("vm1", &[&s]).await.unwrap();
    let placed = sb.set_extension("vm1", 0, Some("1")).await.unwrap();
    let dir = Path::new(&placed.extension_credential_path).to_path_buf();
    assert!(dir.join(format!("{}.pem", s.client_id)).exists());

    sb.configure("vm1", &[&u]).await.unwrap();
    assert!(!dir.join(format!("{}.pem", s.client_id)).exists());
    assert!(dir.join(format!("{}.pem", u.client_id)).exists());

    sb.agent()
        .await
        .remove_vm(misim_proto::imds::RemoveVmRequest {
            resource_id: crate::vm_id("vm1"),
        })
        .await
        .unwrap();
    assert!(!dir.exists());
}

#[tokio::test]
async fn extension_survives_a_host_restart_on_the_same_port() {
    let mut sb = Sandbox::unlimited().await;
    sb.place("vm1").await;
    let s = system_identity("vm1");
    sb.configure("vm1", &[&s]).await.unwrap();
    let before = sb.set_extension("vm1", 0, Some("1")).await.unwrap();
    sb.stop_host().await;
    sb.start_host().await;
    let after = sb
        .agent()
        .await
        .get_vm(misim_proto::imds::GetVmRequest {
            resource_id: crate::vm_id("vm1"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.extension_endpoint, before.extension_endpoint);
    assert_eq!(
        after.extension_credential_path,
        before.extension_credential_path
    );
    assert_eq!(after.extension_port, 50342);
    let url = format!("{}/oauth2/token?resource={MGMT}", after.extension_endpoint);
    let (status, _, body) = get_with(&http(), &url, &[("Metadata", "true")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(Path::new(&after.extension_credential_path)
        .join(format!("{}.pem", s.client_id))
        .exists());
}
