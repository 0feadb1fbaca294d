//! The legacy managed-identity VM extension over the real system: installed on an ARM-created VM
//! through its host's agent API, it serves verifiable tokens on `/oauth2/token`, and the credential it
//! keeps on the VM side is readable by anyone on the VM and usable against Azure AD without the host
//! (the weakness that made Azure replace it with IMDS,
//! <https://learn.microsoft.com/azure/active-directory/managed-identities-azure-resources/howto-migrate-vm-extension>); removal deletes it.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use misim_proto::arm as pb;
use misim_proto::imds as hpb;
use misim_proto::imds::host_agent_client::HostAgentClient;
use misim_tests::Sandbox;
use serde_json::{json, Value};

const MGMT: &str = "https://management.azure.com/";

/// The DER of the first PEM block labelled `label` in `pem`.
fn pem_block(pem: &str, label: &str) -> Vec<u8> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body: String = pem
        .split(&begin)
        .nth(1)
        .and_then(|rest| rest.split(&end).next())
        .expect("pem block")
        .split_whitespace()
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("pem base64")
}

async fn ext_token(sb: &Sandbox, ext: &str) -> (u16, Value) {
    let resp = sb
        .http
        .get(format!("{ext}/oauth2/token"))
        .query(&[("resource", MGMT)])
        .header("Metadata", "true")
        .send()
        .await
        .expect("extension answers");
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_token_verifies_and_its_vm_side_credential_is_a_stealable_secret() {
    let sb = Sandbox::start_with_hosts(1).await;
    let mut arm = sb.arm().await;
    arm.create_resource_group(pb::CreateResourceGroupRequest {
        name: "rg-ext".into(),
        location: "westeurope".into(),
        ..Default::default()
    })
    .await
    .expect("create group");
    let vm = arm
        .create_vm(pb::CreateVmRequest {
            resource_group: "rg-ext".into(),
            name: "ext1".into(),
            ..Default::default()
        })
        .await
        .expect("create vm")
        .into_inner();
    let identity = arm
        .assign_vm_identity(pb::AssignVmIdentityRequest {
            resource_group: "rg-ext".into(),
            name: "ext1".into(),
            system_assigned: true,
            ..Default::default()
        })
        .await
        .expect("enable system identity")
        .into_inner();

    let mut host = HostAgentClient::new(sb.admin(&sb.endpoints.hosts["host-1"]).await);
    let placed = host
        .set_extension(hpb::SetExtensionRequest {
            resource_id: vm.id.clone(),
            installed: true,
            port: 50342,
            force_update_tag: "1".into(),
        })
        .await
        .expect("install extension")
        .into_inner();
    assert_eq!(placed.extension_port, 50342);

    // The extension's token is a real Azure AD token of the VM's identity.
    let (status, body) = ext_token(&sb, &placed.extension_endpoint).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["refresh_token"], "");
    let claims = sb
        .verify(body["access_token"].as_str().expect("access_token"), MGMT)
        .await;
    assert_eq!(claims["oid"], identity.principal_id.as_str());
    assert_eq!(
        claims["xms_mirid"].as_str().map(str::to_lowercase),
        Some(vm.id.to_lowercase())
    );

    // Anyone on the VM can read the credential and use it against Azure AD directly.
    let dir = std::path::Path::new(&placed.extension_credential_path);
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("settings.json")).unwrap()).unwrap();
    let entry = &settings["identities"][0];
    let client_id = entry["clientId"].as_str().expect("clientId").to_string();
    let pem =
        std::fs::read_to_string(dir.join(entry["certificateFile"].as_str().unwrap())).unwrap();
    let cert_der = pem_block(&pem, "CERTIFICATE");
    let key_der = pem_block(&pem, "PRIVATE KEY");
    let token_endpoint = format!("{}/{}/oauth2/token", sb.endpoints.aad, identity.tenant_id);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut header = Header::new(Algorithm::RS256);
    header.x5t = Some(misim_core::cert::x5t(&cert_der));
    let assertion = jsonwebtoken::encode(
        &header,
        &json!({"aud": token_endpoint, "iss": client_id, "sub": client_id,
                "jti": format!("stolen-{now}"), "nbf": now, "iat": now, "exp": now + 600}),
        &EncodingKey::from_rsa_pem(misim_core::cert::to_pem("PRIVATE KEY", &key_der).as_bytes())
            .expect("PKCS#8 key from the VM disk"),
    )
    .expect("sign assertion");
    let form = format!(
        "grant_type=client_credentials&client_id={client_id}&resource={}&client_assertion_type={}&client_assertion={assertion}",
        "https%3A%2F%2Fmanagement.azure.com%2F",
        "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer",
    );
    let resp = sb
        .http
        .post(&token_endpoint)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "stolen credential works");
    let stolen: Value = resp.json().await.unwrap();
    let claims = sb
        .verify(stolen["access_token"].as_str().unwrap(), MGMT)
        .await;
    assert_eq!(claims["oid"], identity.principal_id.as_str());

    // Removal deletes the credential and closes the endpoint; IMDS keeps serving the VM.
    let removed = host
        .set_extension(hpb::SetExtensionRequest {
            resource_id: vm.id.clone(),
            installed: false,
            ..Default::default()
        })
        .await
        .expect("remove extension")
        .into_inner();
    assert_eq!(removed.extension_endpoint, "");
    assert!(!dir.exists());
    assert!(sb
        .http
        .get(format!("{}/oauth2/token", placed.extension_endpoint))
        .header("Metadata", "true")
        .send()
        .await
        .is_err());
    let (status, body) = sb.imds_token(&vm.imds_endpoint, MGMT, &[]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_code_works_against_the_extension_and_imds_by_changing_the_url() {
    let sb = Sandbox::start_with_hosts(1).await;
    let mut arm = sb.arm().await;
    arm.create_resource_group(pb::CreateResourceGroupRequest {
        name: "rg-mig".into(),
        location: "westeurope".into(),
        ..Default::default()
    })
    .await
    .expect("create group");
    let vm = arm
        .create_vm(pb::CreateVmRequest {
            resource_group: "rg-mig".into(),
            name: "mig1".into(),
            ..Default::default()
        })
        .await
        .expect("create vm")
        .into_inner();
    arm.assign_vm_identity(pb::AssignVmIdentityRequest {
        resource_group: "rg-mig".into(),
        name: "mig1".into(),
        system_assigned: true,
        ..Default::default()
    })
    .await
    .expect("enable system identity");
    let mut host = HostAgentClient::new(sb.admin(&sb.endpoints.hosts["host-1"]).await);
    let ext = host
        .set_extension(hpb::SetExtensionRequest {
            resource_id: vm.id.clone(),
            installed: true,
            port: 0,
            force_update_tag: String::new(),
        })
        .await
        .expect("install extension")
        .into_inner()
        .extension_endpoint;

    // The migration guide: "there are few changes to the request": only the URL differs.
    let urls = [
        format!("{ext}/oauth2/token?resource={MGMT}"),
        format!(
            "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={MGMT}",
            vm.imds_endpoint
        ),
    ];
    for url in urls {
        let resp = sb
            .http
            .get(&url)
            .header("Metadata", "true")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{url}");
        let body: Value = resp.json().await.unwrap();
        for field in [
            "access_token",
            "expires_in",
            "expires_on",
            "not_before",
            "resource",
            "token_type",
        ] {
            assert!(body[field].is_string(), "{url}: {field} in {body}");
        }
        sb.verify(body["access_token"].as_str().unwrap(), MGMT)
            .await;
    }
}
