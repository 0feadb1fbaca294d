//! One loopback IMDS listener for every VM of the host (`ImdsListener::Shared`): each VM's endpoint
//! is `http://127.0.0.1:PORT/vms/{vmId}`, a VM gets only its own identities through it, and an
//! unknown vmId gets IMDS's "Identity not found".

use crate::{get_json, guid_of, system_identity, token, user_identity, ImdsLimits, Sandbox};

#[tokio::test]
async fn one_listener_serves_many_vms_each_only_its_own_token() {
    let mut sb = Sandbox::start_shared_path(ImdsLimits::unlimited()).await;
    let names: Vec<String> = (0..40).map(|i| format!("pathvm{i}")).collect();
    let mut endpoints = Vec::new();
    let mut identities = Vec::new();
    for name in &names {
        endpoints.push(sb.place(name).await);
        let id = system_identity(name);
        sb.configure(name, &[&id]).await.unwrap();
        identities.push(id);
    }
    let base = endpoints[0]
        .split("/vms/")
        .next()
        .expect("endpoint has a /vms/ path")
        .to_string();
    for (i, (name, endpoint)) in names.iter().zip(&endpoints).enumerate() {
        assert_eq!(endpoint, &format!("{base}/vms/{}", guid_of(name)));
        let (status, body) = token(endpoint, "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["client_id"], identities[i].client_id.as_str());
        // Another VM's identity is not this VM's.
        let other = &identities[(i + 1) % identities.len()].client_id;
        let (status, body) = token(endpoint, &format!("&client_id={other}")).await;
        assert_eq!(
            (status, body["error_description"].as_str()),
            (400, Some("Identity not found"))
        );
    }

    // A user-assigned identity shared by two VMs (one credential at MSRP) serves both.
    let shared = user_identity("shared-on-two");
    sb.configure(&names[0], &[&identities[0], &shared])
        .await
        .unwrap();
    sb.configure_issued(&names[1], &[&identities[1], &shared])
        .await
        .unwrap();
    for endpoint in &endpoints[..2] {
        let (status, body) = token(endpoint, &format!("&client_id={}", shared.client_id)).await;
        assert_eq!(status, 200, "{body}");
    }

    // Unknown vmId: IMDS's identity error shape; instance metadata its own.
    let unknown = format!("{base}/vms/00000000-dead-beef-0000-000000000000");
    let (status, body) = token(&unknown, "").await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        serde_json::json!({"error":"invalid_request","error_description":"Identity not found"})
    );
    let (status, body) = get_json(&format!(
        "{unknown}/metadata/instance?api-version=2021-02-01"
    ))
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("Bad request."));

    // Instance metadata through the path is the VM's own.
    let (status, body) = get_json(&format!(
        "{}/metadata/instance/compute?api-version=2021-02-01",
        endpoints[3]
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], names[3].as_str());

    // The shared port and every VM's endpoint survive a restart.
    sb.stop_host().await;
    sb.start_host().await;
    let again = sb.place(&names[5]).await;
    assert_eq!(again, endpoints[5]);
    let (status, body) = token(&endpoints[5], "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["client_id"], identities[5].client_id.as_str());
}
