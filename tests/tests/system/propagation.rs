//! Azure's propagation delays (`misim.sim.v1.Propagation`, `misim up --propagation`), measured on the
//! simulated clock: a role assignment authorizes ARM REST calls only after its delay (403 before) and
//! its deletion likewise; an identity assigned to a VM is served by IMDS only after its delay (400
//! "Identity not found" before) and a removed one until then.

use crate::aad_common::*;
use misim_proto::arm as pb;
use misim_proto::imds::host_agent_client::HostAgentClient;
use misim_proto::imds::GetVmRequest;
use misim_proto::sim::{self as sim, propagation_client::PropagationClient};
use serde_json::Value;

async fn set_delays(sys: &Sys, role_assignment_secs: i64, identity_secs: i64) {
    let mut p = PropagationClient::connect(sys.endpoints.arm_grpc.clone())
        .await
        .expect("connect to the Propagation service");
    let set = p
        .set_propagation(sim::PropagationDelays {
            role_assignment_secs,
            identity_secs,
        })
        .await
        .expect("set delays")
        .into_inner();
    assert_eq!(set.role_assignment_secs, role_assignment_secs);
    let got = p
        .get_propagation(sim::GetPropagationRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, set);
}

async fn read_group(sys: &Sys, token: &str) -> (u16, Value) {
    let resp = sys
        .http
        .get(format!(
            "{}/subscriptions/{}/resourceGroups/rg1?api-version=2021-04-01",
            sys.endpoints.arm_rest, sys.endpoints.subscription_id
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("ARM REST answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_assignment_authorizes_only_after_its_delay_and_its_deletion_likewise() {
    let sys = Sys::start(|_| {}).await;
    set_delays(&sys, 60, 0).await;
    let (vm, identity) = sys.vm_with_system_identity("rg1", "vm1").await;
    let (status, body) = sys.imds_token(&vm.imds_endpoint).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_string();

    let mut arm = sys.arm().await;
    let ra = arm
        .create_role_assignment(pb::CreateRoleAssignmentRequest {
            scope: format!(
                "/subscriptions/{}/resourceGroups/rg1",
                sys.endpoints.subscription_id
            ),
            role: "Reader".into(),
            principal_id: identity.principal_id.clone(),
            principal_type: String::new(),
        })
        .await
        .expect("create role assignment")
        .into_inner();
    let (status, body) = read_group(&sys, &token).await;
    assert_eq!(status, 403, "not yet propagated: {body}");
    assert_eq!(body["error"]["code"], "AuthorizationFailed");
    sys.clock.advance(59);
    assert_eq!(read_group(&sys, &token).await.0, 403);
    sys.clock.advance(1);
    let (status, body) = read_group(&sys, &token).await;
    assert_eq!(status, 200, "{body}");

    // The deletion takes as long: still allowed for 60 s.
    arm.delete_role_assignment(pb::DeleteRoleAssignmentRequest { id: ra.id.clone() })
        .await
        .expect("delete");
    assert_eq!(read_group(&sys, &token).await.0, 200);
    sys.clock.advance(60);
    assert_eq!(read_group(&sys, &token).await.0, 403);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imds_serves_a_new_identity_only_after_its_delay_and_a_removed_one_until_then() {
    let sys = Sys::start(|_| {}).await;
    set_delays(&sys, 0, 10).await;
    let (vm, _) = sys.vm_with_system_identity("rg1", "vm1").await;
    let (status, body) = sys.imds_token(&vm.imds_endpoint).await;
    assert_eq!(status, 400, "not yet propagated: {body}");
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(body["error_description"], "Identity not found");
    sys.clock.advance(9);
    assert_eq!(sys.imds_token(&vm.imds_endpoint).await.0, 400);
    sys.clock.advance(1);
    let (status, body) = sys.imds_token(&vm.imds_endpoint).await;
    assert_eq!(status, 200, "{body}");

    // A user-assigned identity: added (10 s), then removed (served 10 s more). Its service principal
    // outlives the assignment, so Azure AD keeps issuing while IMDS still serves it. (A removed
    // system-assigned identity's principal is deleted at once: IMDS would select it, Azure AD refuse.)
    let mut arm = sys.arm().await;
    let uami = arm
        .create_user_assigned_identity(pb::CreateUserAssignedIdentityRequest {
            resource_group: "rg1".into(),
            name: "u1".into(),
            ..Default::default()
        })
        .await
        .expect("create identity")
        .into_inner();
    let dir = sys.dir.path().to_path_buf();
    let host = HostAgentClient::new(
        misim_tests::admin_channel(&dir, &sys.endpoints.hosts["host-1"]).await,
    );
    let host_serves = |n: usize| {
        let (host, resource_id) = (host.clone(), vm.id.clone());
        async move {
            eventually("the host to be reconfigured", 10, || {
                let (mut host, resource_id) = (host.clone(), resource_id.clone());
                async move {
                    let placed = host
                        .get_vm(GetVmRequest { resource_id })
                        .await
                        .ok()?
                        .into_inner();
                    (placed.identities.len() == n).then_some(())
                }
            })
            .await
        }
    };
    arm.assign_vm_identity(pb::AssignVmIdentityRequest {
        resource_group: "rg1".into(),
        name: "vm1".into(),
        user_assigned_identities: vec![uami.id.clone()],
        ..Default::default()
    })
    .await
    .expect("assign u1");
    host_serves(2).await;
    let by_client_id = |sys: &Sys| {
        let (http, imds, client_id) = (
            sys.http.clone(),
            vm.imds_endpoint.clone(),
            uami.client_id.clone(),
        );
        async move {
            let resp = http
                .get(format!("{imds}/metadata/identity/oauth2/token"))
                .query(&[
                    ("api-version", "2018-02-01"),
                    ("resource", MGMT),
                    ("client_id", client_id.as_str()),
                ])
                .header("Metadata", "true")
                .send()
                .await
                .expect("IMDS answers");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = by_client_id(&sys).await;
    assert_eq!(status, 400, "u1 not yet propagated: {body}");
    assert_eq!(body["error_description"], "Identity not found");
    sys.clock.advance(10);
    let (status, body) = by_client_id(&sys).await;
    assert_eq!(status, 200, "{body}");

    arm.remove_vm_identity(pb::RemoveVmIdentityRequest {
        resource_group: "rg1".into(),
        name: "vm1".into(),
        user_assigned_identities: vec![uami.id.clone()],
        ..Default::default()
    })
    .await
    .expect("remove u1");
    host_serves(1).await;
    let (status, body) = by_client_id(&sys).await;
    assert_eq!(status, 200, "removal still propagating: {body}");
    sys.clock.advance(10);
    let (status, body) = by_client_id(&sys).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error_description"], "Identity not found");
    sys.stop().await;
}
