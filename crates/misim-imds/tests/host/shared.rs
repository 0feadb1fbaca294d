//! Shared listeners (containers): one IMDS address and one extension address for every VM of the
//! host; the calling VM is the one whose private IP is the TCP source address. Tests stand in for VM
//! addresses with 127.0.0.x sources.

use std::collections::BTreeMap;

use misim_proto::imds as pb;

use crate::{
    free_loopback_addr, get_with, http_from, system_identity, vm_info, ImdsLimits, Sandbox,
};

const TOKEN: &str =
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/";

async fn place_with_ip(sb: &Sandbox, name: &str, ip: &str) {
    let mut vm = vm_info(name);
    vm.private_ip_address = ip.into();
    vm.tags = BTreeMap::from([("vm".to_string(), name.to_string())])
        .into_iter()
        .collect();
    sb.agent()
        .await
        .place_vm(pb::PlaceVmRequest { vm: Some(vm) })
        .await
        .unwrap();
}

#[tokio::test]
async fn shared_imds_listener_identifies_the_vm_by_source_address() {
    let imds = free_loopback_addr().await;
    let sb = Sandbox::start_with(ImdsLimits::unlimited(), Some(imds), None).await;
    place_with_ip(&sb, "vm2", "127.0.0.2").await;
    place_with_ip(&sb, "vm3", "127.0.0.3").await;
    let (s2, s3) = (system_identity("vm2"), system_identity("vm3"));
    sb.configure("vm2", &[&s2]).await.unwrap();
    sb.configure("vm3", &[&s3]).await.unwrap();

    let base = format!("http://{imds}");
    for (source, identity, name) in [("127.0.0.2", &s2, "vm2"), ("127.0.0.3", &s3, "vm3")] {
        let client = http_from(source);
        let (status, _, body) =
            get_with(&client, &format!("{base}{TOKEN}"), &[("Metadata", "true")]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["client_id"], identity.client_id.as_str());
        let (status, _, body) = get_with(
            &client,
            &format!("{base}/metadata/instance/compute?api-version=2021-02-01"),
            &[("Metadata", "true")],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["name"], name);
    }

    // 127.0.0.4 is no VM of this host.
    let stranger = http_from("127.0.0.4");
    let (status, _, body) = get_with(
        &stranger,
        &format!("{base}{TOKEN}"),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        serde_json::json!({"error":"invalid_request","error_description":"Identity not found"})
    );
}

#[tokio::test]
async fn shared_extension_listener_identifies_the_vm_and_rejects_unknown_sources() {
    let ext = free_loopback_addr().await;
    let sb = Sandbox::start_with(ImdsLimits::unlimited(), None, Some(ext)).await;
    place_with_ip(&sb, "vm2", "127.0.0.2").await;
    place_with_ip(&sb, "vm3", "127.0.0.3").await;
    let s2 = system_identity("vm2");
    sb.configure("vm2", &[&s2]).await.unwrap();
    sb.configure("vm3", &[&system_identity("vm3")])
        .await
        .unwrap();
    sb.set_extension("vm2", 0, Some("1")).await.unwrap();

    let url = format!("http://{ext}/oauth2/token?resource=https://management.azure.com/");
    let (status, _, body) = get_with(&http_from("127.0.0.2"), &url, &[("Metadata", "true")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"]
        .as_str()
        .unwrap()
        .ends_with(&s2.client_id));

    // vm3 has no extension and 127.0.0.4 is no VM: both are unknown sources to the extension.
    for source in ["127.0.0.3", "127.0.0.4"] {
        let (status, _, body) = get_with(&http_from(source), &url, &[("Metadata", "true")]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unknown_source")),
            "{source}"
        );
        assert_eq!(body["error_description"], format!("Unknown Source {url}"));
    }
}
