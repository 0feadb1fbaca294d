//! IMDS over the real system: instance metadata of ARM-created VMs (standalone and scale-set
//! instances) and per-VM throttling of the identity category.

use std::time::Instant;

use misim_proto::arm as pb;
use misim_tests::Sandbox;
use serde_json::Value;

const MGMT: &str = "https://management.azure.com/";

async fn group(sb: &Sandbox, rg: &str) {
    sb.arm()
        .await
        .create_resource_group(pb::CreateResourceGroupRequest {
            name: rg.into(),
            location: "westeurope".into(),
            ..Default::default()
        })
        .await
        .expect("create group");
}

async fn instance(sb: &Sandbox, imds: &str, path: &str) -> (u16, Value) {
    let resp = sb
        .http
        .get(format!(
            "{imds}/metadata/instance{path}?api-version=2021-02-01"
        ))
        .header("Metadata", "true")
        .send()
        .await
        .expect("IMDS answers");
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_metadata_describes_the_arm_vm_with_tags_and_network() {
    let sb = Sandbox::start_with_hosts(1).await;
    group(&sb, "rg-meta").await;
    let vm = sb
        .arm()
        .await
        .create_vm(pb::CreateVmRequest {
            resource_group: "rg-meta".into(),
            name: "meta1".into(),
            vm_size: "Standard_B2s".into(),
            tags: [("env".to_string(), "ci".to_string())].into(),
            ..Default::default()
        })
        .await
        .expect("create vm")
        .into_inner();

    let (status, doc) = instance(&sb, &vm.imds_endpoint, "").await;
    assert_eq!(status, 200, "{doc}");
    let compute = &doc["compute"];
    assert_eq!(compute["name"], "meta1");
    assert_eq!(
        compute["resourceId"].as_str().map(str::to_lowercase),
        Some(vm.id.to_lowercase())
    );
    assert_eq!(compute["vmId"], vm.vm_id.as_str());
    assert_eq!(compute["subscriptionId"], vm.subscription_id.as_str());
    assert_eq!(compute["resourceGroupName"], "rg-meta");
    assert_eq!(compute["location"], "westeurope");
    assert_eq!(compute["vmSize"], "Standard_B2s");
    assert_eq!(compute["osType"], "Linux");
    assert_eq!(compute["vmScaleSetName"], "");
    assert_eq!(compute["tags"], "env:ci");
    assert_eq!(
        compute["tagsList"],
        serde_json::json!([{"name":"env","value":"ci"}])
    );
    let nic = &doc["network"]["interface"][0];
    assert!(!vm.private_ip_address.is_empty());
    assert_eq!(
        nic["ipv4"]["ipAddress"][0]["privateIpAddress"],
        vm.private_ip_address.as_str()
    );
    assert!(nic["macAddress"].is_string());

    // A leaf with format=text, as `curl …/compute/vmId?format=text` does.
    let text = sb
        .http
        .get(format!(
            "{}/metadata/instance/compute/vmId?api-version=2021-02-01&format=text",
            vm.imds_endpoint
        ))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, vm.vm_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_set_instances_report_their_scale_set_name() {
    let sb = Sandbox::start_with_hosts(1).await;
    group(&sb, "rg-ss").await;
    let mut arm = sb.arm().await;
    arm.create_vmss(pb::CreateVmssRequest {
        resource_group: "rg-ss".into(),
        name: "web".into(),
        capacity: 2,
        ..Default::default()
    })
    .await
    .expect("create scale set");
    let instances = arm
        .list_vmss_instances(pb::ListVmssInstancesRequest {
            resource_group: "rg-ss".into(),
            name: "web".into(),
            ..Default::default()
        })
        .await
        .expect("list instances")
        .into_inner()
        .instances;
    assert_eq!(instances.len(), 2);
    for vm in instances {
        let (status, compute) = instance(&sb, &vm.imds_endpoint, "/compute").await;
        assert_eq!(status, 200, "{compute}");
        assert_eq!(compute["vmScaleSetName"], "web");
        // Azure names scale-set instances `<scale set>_<instance id>` in IMDS.
        assert_eq!(compute["name"], format!("web_{}", vm.instance_id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_21st_identity_request_within_a_second_is_throttled() {
    let sb = Sandbox::start_with_hosts(1).await;
    group(&sb, "rg-thr").await;
    let mut arm = sb.arm().await;
    let vm = arm
        .create_vm(pb::CreateVmRequest {
            resource_group: "rg-thr".into(),
            name: "thr1".into(),
            ..Default::default()
        })
        .await
        .expect("create vm")
        .into_inner();
    arm.assign_vm_identity(pb::AssignVmIdentityRequest {
        resource_group: "rg-thr".into(),
        name: "thr1".into(),
        system_assigned: true,
        ..Default::default()
    })
    .await
    .expect("enable system identity");
    // Warm the token cache outside the measured run (the first token costs an Azure AD call).
    let (status, body) = sb.imds_token(&vm.imds_endpoint, MGMT, &[]).await;
    assert_eq!(status, 200, "{body}");

    // 42 sequential requests within one wall-clock second span at most two IMDS windows of 20:
    // at most 40 succeed, and none of the first 20 can be throttled.
    let start = Instant::now();
    let mut statuses = Vec::new();
    let mut throttled_body = Value::Null;
    for _ in 0..42 {
        let (status, body) = sb.imds_token(&vm.imds_endpoint, MGMT, &[]).await;
        if status == 429 {
            throttled_body = body;
        }
        statuses.push(status);
    }
    assert!(
        start.elapsed().as_millis() < 1000,
        "42 cached token requests took {:?}",
        start.elapsed()
    );
    // The warm-up may share the first window: 19 guaranteed successes then.
    assert!(statuses[..19].iter().all(|s| *s == 200), "{statuses:?}");
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(ok <= 40, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(
        throttled_body,
        serde_json::json!({"error":"invalid_request","error_description":"Temporarily throttled, too many requests"})
    );
}
