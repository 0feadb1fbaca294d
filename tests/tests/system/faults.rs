//! Fault injection over the wire (`misim.sim.v1.Faults` on ARM's gRPC port): each fault kind on a
//! VM's IMDS, Azure AD's token endpoint and a gRPC API, with Azure's error bodies; count, duration
//! (simulated clock) and seeded probability bounds; every injection recorded.

use std::time::{Duration, Instant};

use crate::aad_common::*;
use misim_proto::sim::{self as sim, faults_client::FaultsClient};
use serde_json::Value;

type Faults = FaultsClient<tonic::transport::Channel>;

async fn faults(sys: &Sys) -> Faults {
    FaultsClient::connect(sys.endpoints.arm_grpc.clone())
        .await
        .expect("connect to the Faults service")
}

fn on(party: &str, endpoint: &str) -> sim::FaultMatch {
    sim::FaultMatch {
        party: party.into(),
        endpoint: endpoint.into(),
        ..Default::default()
    }
}

fn http(status: u32, retry_after: u32) -> sim::FaultAction {
    sim::FaultAction {
        kind: sim::FaultKind::HttpStatus as i32,
        http_status: status,
        retry_after_secs: retry_after,
        ..Default::default()
    }
}

fn kind(k: sim::FaultKind) -> sim::FaultAction {
    sim::FaultAction {
        kind: k as i32,
        ..Default::default()
    }
}

fn count(n: u32) -> sim::FaultBounds {
    sim::FaultBounds {
        count: n,
        ..Default::default()
    }
}

async fn add(
    f: &mut Faults,
    m: sim::FaultMatch,
    a: sim::FaultAction,
    b: sim::FaultBounds,
) -> String {
    f.add_fault(sim::AddFaultRequest {
        r#match: Some(m),
        action: Some(a),
        bounds: Some(b),
    })
    .await
    .expect("add fault")
    .into_inner()
    .id
}

/// GET the VM's IMDS token endpoint; status, Retry-After and raw body (Err: the connection failed).
async fn raw_imds(sys: &Sys, imds: &str) -> Result<(u16, Option<String>, String), String> {
    let resp = sys
        .http
        .get(format!("{imds}/metadata/identity/oauth2/token"))
        .query(&[("api-version", "2018-02-01"), ("resource", MGMT)])
        .header("Metadata", "true")
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.text().await.map_err(|e| format!("body: {e}"))?;
    Ok((status, retry, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_on_a_vms_imds_with_azures_bodies_and_recorded_hits() {
    let sys = Sys::start(|_| {}).await;
    let (vm, _) = sys.vm_with_system_identity("rg1", "vm1").await;
    let imds = vm.imds_endpoint.clone();
    let mut f = faults(&sys).await;
    assert_eq!(raw_imds(&sys, &imds).await.expect("ok").0, 200);

    // HTTP statuses with IMDS's error shape (how-to-use-vm-token#error-handling), one each.
    for (status, error, retry) in [
        (404, "not_found", 0),
        (410, "gone", 0),
        (429, "invalid_request", 7),
        (500, "unknown", 0),
        (503, "service_unavailable", 0),
    ] {
        let id = add(&mut f, on("vm:vm1", "imds"), http(status, retry), count(1)).await;
        let (got, retry_after, body) = raw_imds(&sys, &imds).await.expect("answer");
        assert_eq!(u32::from(got), status, "{body}");
        let body: Value = serde_json::from_str(&body).expect("json error body");
        assert_eq!(body["error"], error, "{body}");
        assert!(body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
        assert_eq!(retry_after, (retry > 0).then(|| retry.to_string()));
        // Count 1: the next request is served.
        assert_eq!(raw_imds(&sys, &imds).await.expect("ok").0, 200);
        let hits = f
            .list_fault_hits(sim::ListFaultHitsRequest { rule_id: id })
            .await
            .expect("hits")
            .into_inner()
            .hits;
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].party, "host-1/vm:vm1");
        assert_eq!(hits[0].path, "/metadata/identity/oauth2/token");
        assert_eq!(hits[0].action, format!("http {status}"));
    }

    // Latency: the answer is normal, only later.
    add(
        &mut f,
        on("vm:vm1", "imds"),
        sim::FaultAction {
            kind: sim::FaultKind::Latency as i32,
            latency_ms: 300,
            ..Default::default()
        },
        count(1),
    )
    .await;
    let t = Instant::now();
    assert_eq!(raw_imds(&sys, &imds).await.expect("ok").0, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );

    // Closed connection: no answer at all.
    add(
        &mut f,
        on("vm:vm1", "imds"),
        kind(sim::FaultKind::Close),
        count(1),
    )
    .await;
    let err = raw_imds(&sys, &imds).await.expect_err("no answer");
    assert!(err.starts_with("send"), "{err}");

    // Reset: the status line arrives, the body is cut.
    add(
        &mut f,
        on("vm:vm1", "imds"),
        kind(sim::FaultKind::Reset),
        count(1),
    )
    .await;
    let err = raw_imds(&sys, &imds).await.expect_err("cut body");
    assert!(err.starts_with("body"), "{err}");

    // Malformed: 200 with JSON that does not parse.
    add(
        &mut f,
        on("vm:vm1", "imds"),
        kind(sim::FaultKind::Malformed),
        count(1),
    )
    .await;
    let (status, _, body) = raw_imds(&sys, &imds).await.expect("answer");
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<Value>(&body).is_err(), "{body}");

    // Every rule is spent; everything was recorded.
    let rules = f
        .list_faults(sim::ListFaultsRequest {})
        .await
        .expect("list")
        .into_inner()
        .rules;
    assert_eq!(rules.len(), 9);
    assert!(rules.iter().all(|r| !r.active && r.hits == 1));
    let all = f
        .list_fault_hits(sim::ListFaultHitsRequest::default())
        .await
        .expect("hits")
        .into_inner()
        .hits;
    assert_eq!(all.len(), 9);
    assert_eq!(raw_imds(&sys, &imds).await.expect("ok").0, 200);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_ad_and_grpc_faults_identity_matching_and_clear() {
    let sys = Sys::start(|_| {}).await;
    let (vm, identity) = sys.vm_with_system_identity("rg1", "vm1").await;
    let mut f = faults(&sys).await;

    // Azure AD's token endpoint throttles: IMDS (step 6) fails the request with its 500.
    add(&mut f, on("aad", "aad-token"), http(429, 0), count(1)).await;
    let (status, body) = sys.imds_token(&vm.imds_endpoint).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(sys.imds_token(&vm.imds_endpoint).await.0, 200);

    // Called directly, Azure AD's 429 is Entra's: plain text and Retry-After: 60.
    add(&mut f, on("aad", "aad-token"), http(429, 0), count(1)).await;
    let resp = sys
        .http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            sys.endpoints.aad, sys.endpoints.tenant_id
        ))
        .form(&[("grant_type", "client_credentials"), ("client_id", "x")])
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "60");
    assert_eq!(resp.text().await.unwrap(), "Too Many Requests");

    // A 503 in Entra's JSON shape.
    add(&mut f, on("aad", "aad-token"), http(503, 0), count(1)).await;
    let resp = sys
        .http
        .post(format!(
            "{}/{}/oauth2/token",
            sys.endpoints.aad, sys.endpoints.tenant_id
        ))
        .form(&[("grant_type", "client_credentials"), ("client_id", "x")])
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 503);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS"));
    assert!(body["error_codes"].is_array());

    // Matching on the identity: only requests naming this object id fail.
    add(
        &mut f,
        sim::FaultMatch {
            party: "host-1".into(),
            identity: identity.principal_id.clone(),
            ..Default::default()
        },
        http(500, 0),
        sim::FaultBounds::default(),
    )
    .await;
    assert_eq!(
        sys.imds_token(&vm.imds_endpoint).await.0,
        200,
        "no selector: not matched"
    );
    let resp = sys
        .http
        .get(format!(
            "{}/metadata/identity/oauth2/token",
            vm.imds_endpoint
        ))
        .query(&[
            ("api-version", "2018-02-01"),
            ("resource", MGMT),
            ("object_id", identity.principal_id.as_str()),
        ])
        .header("Metadata", "true")
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 500);

    // A gRPC status on ARM's own API, then clearing every rule.
    add(
        &mut f,
        sim::FaultMatch {
            party: "arm".into(),
            path: "/misim.arm.v1.Arm/GetAccount".into(),
            ..Default::default()
        },
        sim::FaultAction {
            kind: sim::FaultKind::GrpcStatus as i32,
            grpc_code: tonic::Code::Unavailable as i32,
            message: "injected".into(),
            ..Default::default()
        },
        count(1),
    )
    .await;
    let mut arm = sys.arm().await;
    let err = arm
        .get_account(misim_proto::arm::GetAccountRequest::default())
        .await
        .expect_err("injected");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(err.message(), "injected");
    arm.get_account(misim_proto::arm::GetAccountRequest::default())
        .await
        .expect("served again");

    let removed = f
        .clear_faults(sim::ClearFaultsRequest {
            id: String::new(),
            clear_hits: false,
        })
        .await
        .expect("clear")
        .into_inner()
        .removed;
    assert_eq!(removed, 5);
    let hits = f
        .list_fault_hits(sim::ListFaultHitsRequest::default())
        .await
        .expect("hits")
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 5, "hits are kept after the rules are cleared");
    assert!(hits
        .iter()
        .any(|h| h.party == "arm" && h.action == "grpc 14"));
    let bad = f
        .add_fault(sim::AddFaultRequest {
            r#match: None,
            action: Some(http(700, 0)),
            bounds: None,
        })
        .await
        .expect_err("invalid status");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_probability_repeats_and_duration_follows_the_simulated_clock() {
    let sys = Sys::start(|c| c.imds_throttle = false).await;
    let (vm, _) = sys.vm_with_system_identity("rg1", "vm1").await;
    let mut f = faults(&sys).await;
    let seeded = sim::FaultBounds {
        probability: 0.5,
        seed: 7,
        ..Default::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        add(&mut f, on("vm:vm1", "imds"), http(503, 0), seeded).await;
        let mut pattern = Vec::new();
        for _ in 0..24 {
            pattern.push(raw_imds(&sys, &vm.imds_endpoint).await.expect("answer").0);
        }
        f.clear_faults(sim::ClearFaultsRequest {
            id: String::new(),
            clear_hits: true,
        })
        .await
        .expect("clear");
        runs.push(pattern);
    }
    assert_eq!(
        runs[0], runs[1],
        "the same seed injects on the same requests"
    );
    let injected = runs[0].iter().filter(|s| **s == 503).count();
    assert!((4..=20).contains(&injected), "{:?}", runs[0]);

    // A 60-second rule: in force until the simulated clock has moved 60 s.
    add(
        &mut f,
        on("vm:vm1", "imds"),
        http(500, 0),
        sim::FaultBounds {
            duration_secs: 60,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(raw_imds(&sys, &vm.imds_endpoint).await.unwrap().0, 500);
    sys.clock.advance(59);
    assert_eq!(raw_imds(&sys, &vm.imds_endpoint).await.unwrap().0, 500);
    sys.clock.advance(1);
    assert_eq!(raw_imds(&sys, &vm.imds_endpoint).await.unwrap().0, 200);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inter_party_grpc_fault_delays_enablement_until_arm_retries() {
    // IMDS throttling windows are seconds of the (manual, unmoving) clock: polling needs it off.
    let sys = Sys::start(|c| c.imds_throttle = false).await;
    let mut f = faults(&sys).await;
    // MSRP refuses ARM's first two CreateIdentity calls (step 2) as a restarting server would.
    let rule = add(
        &mut f,
        sim::FaultMatch {
            party: "msrp".into(),
            endpoint: "grpc".into(),
            path: "/misim.msrp.v1.Msrp/CreateIdentity".into(),
            ..Default::default()
        },
        sim::FaultAction {
            kind: sim::FaultKind::GrpcStatus as i32,
            grpc_code: tonic::Code::Unavailable as i32,
            message: "msrp restarting".into(),
            ..Default::default()
        },
        count(2),
    )
    .await;
    let mut arm = sys.arm().await;
    arm.create_resource_group(misim_proto::arm::CreateResourceGroupRequest {
        name: "rg1".into(),
        location: "westeurope".into(),
        ..Default::default()
    })
    .await
    .expect("group");
    let vm = arm
        .create_vm(misim_proto::arm::CreateVmRequest {
            resource_group: "rg1".into(),
            name: "vm1".into(),
            host: "host-1".into(),
            ..Default::default()
        })
        .await
        .expect("vm")
        .into_inner();
    // Whether ARM reports the first failure or accepts and retries, it converges.
    let _ = arm
        .assign_vm_identity(misim_proto::arm::AssignVmIdentityRequest {
            resource_group: "rg1".into(),
            name: "vm1".into(),
            system_assigned: true,
            ..Default::default()
        })
        .await;
    eventually("ARM to retry until the identity is served", 20, || {
        let (sys, imds) = (&sys, vm.imds_endpoint.clone());
        async move {
            let (status, _) = sys.imds_token(&imds).await;
            (status == 200).then_some(())
        }
    })
    .await;
    let hits = f
        .list_fault_hits(sim::ListFaultHitsRequest { rule_id: rule })
        .await
        .expect("hits")
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().all(|h| h.party == "msrp"
        && h.path == "/misim.msrp.v1.Msrp/CreateIdentity"
        && h.action == "grpc 14"));
    sys.stop().await;
}
