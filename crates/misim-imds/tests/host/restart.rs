//! Restart: VMs, their IMDS ports and their identities survive, and MSRP is not called again.

use misim_proto::imds as pb;

use crate::{system_identity, token, user_identity, vm_id, Sandbox};

#[tokio::test]
async fn restart_keeps_vms_ports_and_identities_without_calling_msrp() {
    let mut sb = Sandbox::unlimited().await;
    let e1 = sb.place("vm1").await;
    let e2 = sb.place("vm2").await;
    let (s1, u1) = (system_identity("vm1"), user_identity("u1"));
    let before = sb.configure("vm1", &[&s1, &u1]).await.unwrap();
    sb.configure("vm2", &[&system_identity("vm2")])
        .await
        .unwrap();
    assert_eq!(token(&e1, "").await.0, 200);
    let msrp_calls = sb.msrp.calls();

    sb.stop_host().await;
    sb.start_host().await;

    let list = sb
        .agent()
        .await
        .list_vms(pb::ListVmsRequest {})
        .await
        .unwrap()
        .into_inner();
    let endpoints: Vec<&str> = list.vms.iter().map(|v| v.imds_endpoint.as_str()).collect();
    assert_eq!(endpoints, vec![e1.as_str(), e2.as_str()]);
    let after = sb
        .agent()
        .await
        .get_vm(pb::GetVmRequest {
            resource_id: vm_id("vm1"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.identities, before.identities);
    let (status, body) = token(&e1, &format!("&client_id={}", u1.client_id)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(token(&e1, "").await.1["client_id"], s1.client_id.as_str());
    assert_eq!(
        sb.msrp.calls(),
        msrp_calls,
        "restart must not fetch credentials again"
    );
}

#[tokio::test]
async fn restart_binds_a_new_port_when_the_old_one_is_taken() {
    let mut sb = Sandbox::unlimited().await;
    let old = sb.place("vm1").await;
    sb.configure("vm1", &[&system_identity("vm1")])
        .await
        .unwrap();
    sb.stop_host().await;
    let squatter = tokio::net::TcpListener::bind(old.trim_start_matches("http://"))
        .await
        .unwrap();
    sb.start_host().await;
    let placed = sb
        .agent()
        .await
        .get_vm(pb::GetVmRequest {
            resource_id: vm_id("vm1"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(placed.imds_endpoint, old);
    assert_eq!(token(&placed.imds_endpoint, "").await.0, 200);
    drop(squatter);
}
