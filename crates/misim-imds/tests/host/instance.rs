//! `/metadata/instance` (with route filtering and `format=text`) and `/metadata/versions`.

use serde_json::json;

use crate::{get_json, http, vm_id, Sandbox, SUB};

#[tokio::test]
async fn instance_metadata_comes_from_the_placed_vm() {
    let sb = Sandbox::unlimited().await;
    let e = sb.place("vm1").await;
    let (status, body) = get_json(&format!("{e}/metadata/instance?api-version=2021-02-01")).await;
    assert_eq!(status, 200);
    assert_eq!(body["compute"]["resourceId"], vm_id("vm1"));
    assert_eq!(body["compute"]["subscriptionId"], SUB);
    assert_eq!(body["compute"]["tags"], "env:ci");
    assert_eq!(body["compute"]["platformFaultDomain"], "0");
    assert_eq!(
        body["network"]["interface"][0]["macAddress"],
        "000D3AF806EC"
    );
    let (status, compute) = get_json(&format!(
        "{e}/metadata/instance/compute?api-version=2021-02-01"
    ))
    .await;
    assert_eq!((status, &compute), (200, &body["compute"]));
}

#[tokio::test]
async fn leaves_need_format_text() {
    let sb = Sandbox::unlimited().await;
    let e = sb.place("vm1").await;
    let url = format!("{e}/metadata/instance/compute/vmId?api-version=2021-02-01");
    let r = http()
        .get(format!("{url}&format=text"))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(r.text().await.unwrap(), crate::vm_info("vm1").vm_id);
    assert_eq!(
        get_json(&url).await,
        (
            400,
            json!({"error":"Bad request. Leaf nodes require format=text"})
        )
    );
    let ip = format!("{e}/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress?api-version=2021-02-01&format=text");
    let r = http()
        .get(ip)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        crate::vm_info("vm1").private_ip_address
    );
}

#[tokio::test]
async fn instance_errors_have_the_instance_shape() {
    let sb = Sandbox::unlimited().await;
    let e = sb.place("vm1").await;
    let r = http()
        .get(format!("{e}/metadata/instance?api-version=2021-02-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"error":"Bad request. Required metadata header not specified"})
    );
    let (status, body) = get_json(&format!("{e}/metadata/instance")).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "Bad request. api-version was not specified in the request. For more information refer to aka.ms/azureimds"
    );
    assert_eq!(body["newest-versions"][0], "2023-07-01");
    let (status, _) = get_json(&format!(
        "{e}/metadata/instance/compute/nope?api-version=2021-02-01"
    ))
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        get_json(&format!("{e}/metadata/nothing")).await,
        (404, json!({"error":"Not found"}))
    );
}

#[tokio::test]
async fn versions_lists_the_known_api_versions() {
    let sb = Sandbox::unlimited().await;
    let e = sb.place("vm1").await;
    let (status, body) = get_json(&format!("{e}/metadata/versions")).await;
    assert_eq!(status, 200);
    let versions = body["apiVersions"].as_array().unwrap();
    assert!(versions.contains(&json!("2018-02-01")));
    assert!(versions.contains(&json!("2021-02-01")));
}
