//! Host agent API: placing, listing, removing VMs and configuring their identities (step 3).

use misim_core::cert;
use misim_proto::imds as pb;

use crate::{identity_ref, system_identity, token, user_identity, vm_id, vm_info, Sandbox};

#[tokio::test]
async fn place_vm_opens_a_loopback_endpoint_and_placing_again_keeps_it() {
    let sb = Sandbox::unlimited().await;
    let endpoint = sb.place("vm1").await;
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    let mut info = vm_info("vm1");
    info.vm_size = "Standard_D4s_v3".into();
    let again = sb
        .agent()
        .await
        .place_vm(pb::PlaceVmRequest {
            vm: Some(info),
            app_service: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.imds_endpoint, endpoint);
    assert_eq!(again.host, "host-1");
    let got = sb
        .agent()
        .await
        .get_vm(pb::GetVmRequest {
            resource_id: vm_id("vm1"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.vm.unwrap().vm_size, "Standard_D4s_v3");
    sb.place("vm2").await;
    let list = sb
        .agent()
        .await
        .list_vms(pb::ListVmsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.vms.len(), 2);
}

#[tokio::test]
async fn bad_agent_requests_are_rejected_with_grpc_codes() {
    let sb = Sandbox::unlimited().await;
    let mut agent = sb.agent().await;
    let err = agent
        .place_vm(pb::PlaceVmRequest {
            vm: None,
            app_service: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = agent
        .get_vm(pb::GetVmRequest {
            resource_id: vm_id("nope"),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = sb
        .configure("nope", &[&system_identity("nope")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    sb.place("vm1").await;
    let u = user_identity("u1");
    let twice = pb::ConfigureIdentitiesRequest {
        resource_id: vm_id("vm1"),
        identities: vec![identity_ref(&u), identity_ref(&u)],
    };
    assert_eq!(
        agent.configure_identities(twice).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
}

#[tokio::test]
async fn configure_identities_fetches_each_new_credential_once_and_reports_thumbprints() {
    let sb = Sandbox::unlimited().await;
    sb.place("vm1").await;
    let (s, u) = (system_identity("vm1"), user_identity("u1"));
    let placed = sb.configure("vm1", &[&s, &u]).await.unwrap();
    assert_eq!(sb.msrp.calls(), 2);
    assert_eq!(placed.identities.len(), 2);
    let served = &placed.identities[0];
    assert_eq!(served.identity.as_ref().unwrap().client_id, s.client_id);
    assert_eq!(served.thumbprint_sha1_hex.len(), 40);
    assert!(served.cert_not_after > crate::START);

    // Same set again: nothing fetched. Drop the UAMI: only the system identity remains.
    let request = |ids: Vec<pb::IdentityRef>| pb::ConfigureIdentitiesRequest {
        resource_id: vm_id("vm1"),
        identities: ids,
    };
    let mut agent = sb.agent().await;
    agent
        .configure_identities(request(vec![identity_ref(&s), identity_ref(&u)]))
        .await
        .unwrap();
    assert_eq!(sb.msrp.calls(), 2);
    let placed = agent
        .configure_identities(request(vec![identity_ref(&s)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(placed.identities.len(), 1);
    assert_eq!(sb.msrp.calls(), 2);
    let (status, body) = token(
        &placed.imds_endpoint,
        &format!("&client_id={}", u.client_id),
    )
    .await;
    assert_eq!(
        (status, crate::description(&body)),
        (400, "Identity not found")
    );
}

#[tokio::test]
async fn msrp_failure_returns_unavailable_and_keeps_the_previous_identity_set() {
    let sb = Sandbox::unlimited().await;
    let endpoint = sb.place("vm1").await;
    let s = system_identity("vm1");
    let before = sb.configure("vm1", &[&s]).await.unwrap();
    sb.msrp
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let u = user_identity("u1");
    let request = pb::ConfigureIdentitiesRequest {
        resource_id: vm_id("vm1"),
        identities: vec![identity_ref(&s), identity_ref(&u)],
    };
    let err = sb
        .agent()
        .await
        .configure_identities(request)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let now = sb
        .agent()
        .await
        .get_vm(pb::GetVmRequest {
            resource_id: vm_id("vm1"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.identities, before.identities);
    let (status, body) = token(&endpoint, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["client_id"], s.client_id.as_str());
}

#[tokio::test]
async fn remove_vm_closes_its_endpoint_and_is_idempotent() {
    let sb = Sandbox::unlimited().await;
    let endpoint = sb.place("vm1").await;
    sb.configure("vm1", &[&system_identity("vm1")])
        .await
        .unwrap();
    assert_eq!(token(&endpoint, "").await.0, 200);
    let mut agent = sb.agent().await;
    agent
        .remove_vm(pb::RemoveVmRequest {
            resource_id: vm_id("vm1"),
        })
        .await
        .unwrap();
    agent
        .remove_vm(pb::RemoveVmRequest {
            resource_id: vm_id("vm1"),
        })
        .await
        .unwrap();
    assert_eq!(
        agent
            .get_vm(pb::GetVmRequest {
                resource_id: vm_id("vm1")
            })
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
    let fresh = crate::http()
        .get(format!("{endpoint}/metadata/versions"))
        .header("Metadata", "true")
        .send()
        .await;
    assert!(fresh.is_err(), "listener still answers after RemoveVm");
}

#[tokio::test]
async fn identities_report_the_certificate_msrp_issued() {
    let sb = Sandbox::unlimited().await;
    sb.place("vm1").await;
    let u = user_identity("u1");
    let der = sb.msrp.issue(&u, crate::START);
    sb.aad.register(&u.client_id, der.clone());
    let request = pb::ConfigureIdentitiesRequest {
        resource_id: vm_id("vm1"),
        identities: vec![identity_ref(&u)],
    };
    let placed = sb
        .agent()
        .await
        .configure_identities(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        placed.identities[0].thumbprint_sha1_hex,
        cert::sha1_thumbprint_hex(&der)
    );
}
