//! Shared listeners (containers): one IMDS address and one extension address for every VM of the
//! host; the calling VM is the one whose private IP is the TCP source address. Tests stand in for VM
//! addresses with 127.0.0.x sources.

use std::collections::BTreeMap;

use misim_proto::imds as pb;

use crate::{
    free_loopback_addr, get_with, http_from, system_identity, vm_id, vm_info, ImdsLimits, Sandbox,
};

const TOKEN: &str =
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/";

async fn try_place_with_ip(sb: &Sandbox, name: &str, ip: &str) -> Result<(), tonic::Status> {
    let mut vm = vm_info(name);
    vm.private_ip_address = ip.into();
    vm.tags = BTreeMap::from([("vm".to_string(), name.to_string())])
        .into_iter()
        .collect();
    sb.agent()
        .await
        .place_vm(pb::PlaceVmRequest {
            vm: Some(vm),
            app_service: None,
        })
        .await
        .map(drop)
}

async fn place_with_ip(sb: &Sandbox, name: &str, ip: &str) {
    try_place_with_ip(sb, name, ip).await.unwrap();
}

/// The client id of the token the shared listener at `base` hands to `source`, or the error status.
async fn client_id_for(base: &str, source: &str) -> Result<String, u16> {
    let (status, _, body) = get_with(
        &http_from(source),
        &format!("{base}{TOKEN}"),
        &[("Metadata", "true")],
    )
    .await;
    match status {
        200 => Ok(body["client_id"].as_str().unwrap().to_string()),
        s => Err(s),
    }
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

#[tokio::test]
async fn a_private_ip_belongs_to_one_vm_through_re_placement_removal_and_restart() {
    let imds = free_loopback_addr().await;
    let mut sb = Sandbox::start_with(ImdsLimits::unlimited(), Some(imds), None).await;
    let base = format!("http://{imds}");
    place_with_ip(&sb, "vm2", "127.0.0.2").await;
    let (s2, s3) = (system_identity("vm2"), system_identity("vm3"));
    sb.configure("vm2", &[&s2]).await.unwrap();

    // Another VM with vm2's address would be served vm2's tokens: refused, and not placed.
    let err = try_place_with_ip(&sb, "vm3", "127.0.0.2")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(
        err.message().contains("127.0.0.2") && err.message().contains(&vm_id("vm2")),
        "{}",
        err.message()
    );
    // The same address written differently (IPv4-mapped IPv6) is the same address.
    let err = try_place_with_ip(&sb, "vm3", "::ffff:127.0.0.2")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    let listed = sb
        .agent()
        .await
        .list_vms(pb::ListVmsRequest {})
        .await
        .unwrap();
    assert_eq!(listed.into_inner().vms.len(), 1);
    assert_eq!(
        client_id_for(&base, "127.0.0.2").await,
        Ok(s2.client_id.clone())
    );

    // Re-placing vm2 with its own address is fine; moving it frees the old one.
    place_with_ip(&sb, "vm2", "127.0.0.2").await;
    place_with_ip(&sb, "vm2", "127.0.0.5").await;
    assert_eq!(client_id_for(&base, "127.0.0.2").await, Err(400));
    assert_eq!(
        client_id_for(&base, "127.0.0.5").await,
        Ok(s2.client_id.clone())
    );
    place_with_ip(&sb, "vm3", "127.0.0.2").await;
    sb.configure("vm3", &[&s3]).await.unwrap();
    assert_eq!(
        client_id_for(&base, "127.0.0.2").await,
        Ok(s3.client_id.clone())
    );

    // The index is rebuilt from the store on restart.
    sb.stop_host().await;
    sb.start_host().await;
    assert_eq!(
        client_id_for(&base, "127.0.0.2").await,
        Ok(s3.client_id.clone())
    );
    assert_eq!(
        client_id_for(&base, "127.0.0.5").await,
        Ok(s2.client_id.clone())
    );
    let err = try_place_with_ip(&sb, "vm2", "127.0.0.2")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);

    // A removed VM's address is free again and reaches nobody.
    sb.agent()
        .await
        .remove_vm(pb::RemoveVmRequest {
            resource_id: vm_id("vm3"),
        })
        .await
        .unwrap();
    assert_eq!(client_id_for(&base, "127.0.0.2").await, Err(400));
    place_with_ip(&sb, "vm2", "127.0.0.2").await;
    assert_eq!(
        client_id_for(&base, "127.0.0.2").await,
        Ok(s2.client_id.clone())
    );
}
