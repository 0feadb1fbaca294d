//! The control plane is authenticated and authorized per call (issue: "No VM gets another's
//! identity"). Every attack here was possible before internal gRPC used mutual TLS: a caller without a
//! certificate, or with the certificate of a party that may not make the call, is refused with
//! `UNAUTHENTICATED` / `PERMISSION_DENIED` naming the caller and the rule; a host gets a credential
//! only for an identity that ARM assigned to a VM placed on that host.

use misim_core::control::Role;
use misim_proto::aad::aad_admin_client::AadAdminClient;
use misim_proto::aad::{AddKeyCredentialRequest, ListTenantsRequest};
use misim_proto::arm as pb;
use misim_proto::imds::host_agent_client::HostAgentClient;
use misim_proto::imds::{ConfigureIdentitiesRequest, ListVmsRequest};
use misim_proto::msrp::msrp_client::MsrpClient;
use misim_proto::msrp::{CreateIdentityRequest, GetCredentialRequest, SetHostAccessRequest};
use misim_proto::tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use misim_proto::tonic::Code;
use misim_tests::{channel_as, Sandbox};

use crate::lifecycle_common::{enable_system, group, vm};

/// A VM with a system-assigned identity, placed on `host`, in a new group `rg`.
async fn vm_with_identity(sb: &Sandbox, rg: &str, name: &str, host: &str) -> pb::VirtualMachine {
    group(sb, rg).await;
    let created = vm(sb, rg, name, host).await;
    enable_system(sb, rg, name).await;
    created
}

/// TLS that trusts misim's CA but presents no client certificate.
async fn no_client_cert(sb: &Sandbox, url: &str) -> Channel {
    let ca = std::fs::read_to_string(sb.dir.path().join("ca/ca.pem")).expect("ca.pem");
    Endpoint::from_shared(url.to_string())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .unwrap()
        .connect()
        .await
        .expect("tls connect without a client certificate")
}

fn get_credential(id: &str) -> GetCredentialRequest {
    GetCredentialRequest {
        resource_id: id.into(),
        host: "host-1".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_certificate_are_refused_everywhere() {
    let sb = Sandbox::start().await;
    let vm = vm_with_identity(&sb, "rg1", "vm1", "host-1").await;
    let e = &sb.endpoints;

    // Plain HTTP/2 (what `curl --http2-prior-knowledge` did from a VM) does not even get an answer.
    let plain = e.msrp_grpc.replacen("https://", "http://", 1);
    let mut msrp = MsrpClient::new(Endpoint::from_shared(plain).unwrap().connect_lazy());
    assert!(msrp.get_credential(get_credential(&vm.id)).await.is_err());

    // TLS without a client certificate: UNAUTHENTICATED, with what to do.
    let mut msrp = MsrpClient::new(no_client_cert(&sb, &e.msrp_grpc).await);
    let s = msrp
        .get_credential(get_credential(&vm.id))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(
        s.message().contains("client certificate"),
        "{}",
        s.message()
    );

    let mut host = HostAgentClient::new(no_client_cert(&sb, &e.hosts["host-1"]).await);
    let s = host.list_vms(ListVmsRequest {}).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

    let mut aad = AadAdminClient::new(no_client_cert(&sb, &e.aad_grpc).await);
    let s = aad.list_tenants(ListTenantsRequest {}).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

    // A certificate from another CA fails the handshake.
    let other = tempfile::tempdir().unwrap();
    let foreign = misim_core::tls::LocalCa::load_or_create(&other.path().join("ca")).unwrap();
    let tls = misim_core::control::ControlTls::issue(&foreign, Role::Arm, &[]).unwrap();
    let ca = std::fs::read_to_string(sb.dir.path().join("ca/ca.pem")).unwrap();
    let endpoint = Endpoint::from_shared(e.hosts["host-1"].clone())
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .identity(misim_proto::tonic::transport::Identity::from_pem(
                    tls.cert_pem(),
                    tls.key_pem(),
                )),
        )
        .unwrap();
    let refused = match endpoint.connect().await {
        Err(_) => true,
        Ok(ch) => HostAgentClient::new(ch)
            .list_vms(ListVmsRequest {})
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a certificate from another CA must not be accepted"
    );
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_gets_only_the_credentials_of_its_own_vms_identities() {
    let sb = Sandbox::start().await;
    let vm1 = vm_with_identity(&sb, "rg1", "vm1", "host-1").await;
    let vm2 = vm_with_identity(&sb, "rg2", "vm2", "host-2").await;
    assert_eq!((vm1.host.as_str(), vm2.host.as_str()), ("host-1", "host-2"));
    let dir = sb.dir.path();
    let e = &sb.endpoints;

    // host-1 fetches its own VM's identity.
    let mut as_host1 =
        MsrpClient::new(channel_as(dir, Role::Host("host-1".into()), &e.msrp_grpc).await);
    let cred = as_host1
        .get_credential(get_credential(&vm1.id))
        .await
        .expect("host-1 may fetch vm1's credential")
        .into_inner();
    assert!(!cred.private_key_pkcs8_der.is_empty());

    // host-1 asking for vm2's identity (on host-2), even naming itself host-2 in the request: refused.
    let mut req = get_credential(&vm2.id);
    req.host = "host-2".into();
    let s = as_host1.get_credential(req).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        s.message().contains("host-1") && s.message().contains(&vm2.id),
        "{}",
        s.message()
    );

    // A host cannot grant itself access, create identities, configure hosts or add key credentials.
    let s = as_host1
        .set_host_access(SetHostAccessRequest {
            host: "host-1".into(),
            vm_resource_id: vm1.id.clone(),
            identity_resource_ids: vec![vm2.id.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        s.message().contains("caller host:host-1") && s.message().contains("only arm"),
        "{}",
        s.message()
    );
    let s = as_host1
        .create_identity(CreateIdentityRequest {
            resource_id: vm1.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");

    let mut other_host = HostAgentClient::new(
        channel_as(dir, Role::Host("host-1".into()), &e.hosts["host-2"]).await,
    );
    let s = other_host
        .configure_identities(ConfigureIdentitiesRequest {
            resource_id: vm2.id.clone(),
            identities: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let s = other_host.list_vms(ListVmsRequest {}).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");

    for role in [Role::Host("host-1".into()), Role::Arm] {
        let mut aad = AadAdminClient::new(channel_as(dir, role.clone(), &e.aad_grpc).await);
        let s = aad
            .add_key_credential(AddKeyCredentialRequest::default())
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{role}: {s:?}");
    }

    // ARM never sees a private key.
    let mut as_arm = MsrpClient::new(channel_as(dir, Role::Arm, &e.msrp_grpc).await);
    let s = as_arm
        .get_credential(get_credential(&vm1.id))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");

    // Once the identity is removed from vm1, host-1 may no longer fetch it.
    sb.arm()
        .await
        .remove_vm_identity(pb::RemoveVmIdentityRequest {
            resource_group: "rg1".into(),
            name: "vm1".into(),
            system_assigned: true,
            ..Default::default()
        })
        .await
        .expect("remove identity");
    let s = as_host1
        .get_credential(get_credential(&vm1.id))
        .await
        .unwrap_err();
    assert!(
        matches!(s.code(), Code::PermissionDenied | Code::NotFound),
        "{s:?}"
    );
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_assigned_identity_shared_by_vms_on_two_hosts_is_fetched_by_both_and_revoked_per_host(
) {
    let sb = Sandbox::start().await;
    let dir = sb.dir.path();
    let e = &sb.endpoints;
    let mut arm = sb.arm().await;
    arm.create_resource_group(pb::CreateResourceGroupRequest {
        name: "rg".into(),
        location: "westeurope".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let uami = arm
        .create_user_assigned_identity(pb::CreateUserAssignedIdentityRequest {
            resource_group: "rg".into(),
            name: "shared".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for (vm, host) in [("a", "host-1"), ("b", "host-2")] {
        arm.create_vm(pb::CreateVmRequest {
            resource_group: "rg".into(),
            name: vm.into(),
            host: host.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        arm.assign_vm_identity(pb::AssignVmIdentityRequest {
            resource_group: "rg".into(),
            name: vm.into(),
            user_assigned_identities: vec![uami.id.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    for host in ["host-1", "host-2"] {
        let mut c = MsrpClient::new(channel_as(dir, Role::Host(host.into()), &e.msrp_grpc).await);
        c.get_credential(get_credential(&uami.id))
            .await
            .unwrap_or_else(|s| panic!("{host} may fetch the shared identity: {s:?}"));
    }
    // Deleting vm "b" revokes host-2's access; host-1 keeps it.
    arm.delete_vm(pb::DeleteVmRequest {
        resource_group: "rg".into(),
        name: "b".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut h2 = MsrpClient::new(channel_as(dir, Role::Host("host-2".into()), &e.msrp_grpc).await);
    let s = h2
        .get_credential(get_credential(&uami.id))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let mut h1 = MsrpClient::new(channel_as(dir, Role::Host("host-1".into()), &e.msrp_grpc).await);
    h1.get_credential(get_credential(&uami.id)).await.unwrap();
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_arm_api_token_option_refuses_calls_without_the_token() {
    // The whole system in-process on free ports (misim::embedded); `start` itself waits for ARM
    // through the token.
    let system = misim::embedded::start(misim::embedded::EmbeddedConfig {
        tweak: Some(|cfg| cfg.arm_api_token = Some("s3cret-token".into())),
        ..Default::default()
    })
    .await
    .expect("misim starts with a token");
    let url = system.endpoints.arm_grpc.clone();

    let mut open = misim_proto::arm::arm_client::ArmClient::connect(url.clone())
        .await
        .unwrap();
    let s = open
        .get_account(pb::GetAccountRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains("MISIM_ARM_TOKEN"), "{}", s.message());

    let mut wrong = misim::client::connect(&url, Some("s3cret-tokeN"))
        .await
        .unwrap();
    let s = wrong
        .get_account(pb::GetAccountRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

    let mut right = misim::client::connect(&url, Some("s3cret-token"))
        .await
        .unwrap();
    let sub = right
        .get_account(pb::GetAccountRequest::default())
        .await
        .expect("the right token is accepted")
        .into_inner();
    assert!(!sub.subscription_id.is_empty());
    // The recorded requests are behind the same token.
    let mut events = misim_proto::events::events_client::EventsClient::connect(url.clone())
        .await
        .unwrap();
    let s = events
        .list(misim_proto::events::ListEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    system.shutdown().await;
}

/// The services gRPC reflection lists on `channel`.
async fn reflected_services(channel: Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection answers")
        .into_inner();
    let resp = stream.message().await.unwrap().expect("one response");
    match resp.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            let mut names: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_on_each_port_lists_only_the_services_it_serves() {
    let sb = Sandbox::start_with_hosts(1).await;
    let e = &sb.endpoints;
    let arm = Endpoint::from_shared(e.arm_grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(
        reflected_services(arm).await,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "misim.arm.v1.Arm",
            "misim.events.v1.Events",
            "misim.sim.v1.Health"
        ]
    );
    let msrp = sb.admin(&e.msrp_grpc).await;
    assert_eq!(
        reflected_services(msrp).await,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "misim.events.v1.Events",
            "misim.msrp.v1.Msrp"
        ]
    );
    sb.stop().await;
}
