//! Observability over the wire: one trace per flow with its parent links across parties (W3C
//! traceparent over gRPC and HTTP), the sequence diagram drawn from it, and `/metrics` counters that
//! move as requests are made. Flows are found in the process' span store by IDs unique to each
//! sandbox (principal, VM resource ID), since tests run side by side in one process.

use std::collections::HashSet;
use std::time::Duration;

use misim_core::telemetry::render;
use misim_core::telemetry::store::{self, SpanRecord};
use misim_proto::arm as pb;
use misim_tests::Sandbox;

const MGMT: &str = "https://management.azure.com/";

async fn vm_with_system_identity(sb: &Sandbox, rg: &str, vm: &str) -> (pb::VirtualMachine, String) {
    let mut arm = sb.arm().await;
    arm.create_resource_group(pb::CreateResourceGroupRequest {
        name: rg.into(),
        location: "westeurope".into(),
        ..Default::default()
    })
    .await
    .expect("create group");
    let created = arm
        .create_vm(pb::CreateVmRequest {
            resource_group: rg.into(),
            name: vm.into(),
            host: "host-1".into(),
            ..Default::default()
        })
        .await
        .expect("create vm")
        .into_inner();
    let identity = arm
        .assign_vm_identity(pb::AssignVmIdentityRequest {
            resource_group: rg.into(),
            name: vm.into(),
            system_assigned: true,
            ..Default::default()
        })
        .await
        .expect("enable identity")
        .into_inner();
    (created, identity.principal_id)
}

/// The trace (spans of this process) in which `pred` holds for some span; waits for spans that end
/// just after the response was sent.
async fn find_trace(
    pred: impl Fn(&SpanRecord) -> bool,
    also: impl Fn(&[SpanRecord]) -> bool,
) -> Vec<SpanRecord> {
    for _ in 0..100 {
        let traces = store::merge(store::all());
        if let Some(t) = traces
            .into_iter()
            .rev()
            .find(|t| t.iter().any(&pred) && also(t))
        {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no trace found in the span store");
}

fn by_id<'a>(t: &'a [SpanRecord], id: &str) -> &'a SpanRecord {
    t.iter().find(|s| s.span_id == id).expect("span present")
}

fn parent<'a>(t: &'a [SpanRecord], s: &SpanRecord) -> &'a SpanRecord {
    by_id(t, s.parent_id.as_deref().expect("has a parent"))
}

fn step_span<'a>(t: &'a [SpanRecord], step: u8, party: &str) -> &'a SpanRecord {
    t.iter()
        .find(|s| s.step() == Some(step) && s.attr("party") == Some(party))
        .unwrap_or_else(|| panic!("no step {step} span of {party} in {t:#?}"))
}

fn assert_links_intact(t: &[SpanRecord]) {
    let ids: HashSet<&str> = t.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<&SpanRecord> = t.iter().filter(|s| s.parent_id.is_none()).collect();
    assert_eq!(roots.len(), 1, "one root span: {roots:#?}");
    for s in t {
        if let Some(p) = &s.parent_id {
            assert!(
                ids.contains(p.as_str()),
                "parent {p} of {} is in the trace",
                s.name
            );
        }
        assert_eq!(s.trace_id, t[0].trace_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_request_is_one_trace_across_imds_and_azure_ad() {
    let sb = Sandbox::start().await;
    let (vm, principal) = vm_with_system_identity(&sb, "rg-obs", "obs-token-vm").await;
    let (status, body) = sb.imds_token(&vm.imds_endpoint, MGMT, &[]).await;
    assert_eq!(status, 200, "{body}");

    let t = find_trace(
        |s| {
            s.step() == Some(6)
                && s.attr("party") == Some("aad")
                && s.attr("principal") == Some(principal.as_str())
        },
        |t| t.iter().any(|s| s.step() == Some(5)),
    )
    .await;
    assert_links_intact(&t);

    // workload -> IMDS (root server span) -> step 5 -> step 6 (IMDS) -> Azure AD server span -> step 6 (Azure AD)
    let aad_step = step_span(&t, 6, "aad");
    assert_eq!(aad_step.attr("resource"), Some(MGMT));
    assert_eq!(aad_step.attr("outcome"), Some("success"));
    let aad_server = parent(&t, aad_step);
    assert_eq!(aad_server.kind, "server");
    assert_eq!(aad_server.attr("party"), Some("aad"));
    assert!(
        aad_server.name.starts_with("POST /") && aad_server.name.ends_with("/oauth2/token"),
        "{}",
        aad_server.name
    );
    assert_eq!(aad_server.attr("result"), Some("200"));
    let imds6 = parent(&t, aad_server);
    assert_eq!((imds6.step(), imds6.attr("party")), (Some(6), Some("imds")));
    let imds5 = parent(&t, imds6);
    assert_eq!((imds5.step(), imds5.attr("party")), (Some(5), Some("imds")));
    assert_eq!(imds5.attr("vm"), Some(vm.id.as_str()));
    assert!(imds5
        .attr("identity")
        .is_some_and(|i| i.eq_ignore_ascii_case(&vm.id)));
    assert_eq!(imds5.attr("resource"), Some(MGMT));
    let root = parent(&t, imds5);
    assert_eq!(root.kind, "server");
    assert_eq!(root.name, "GET /metadata/identity/oauth2/token");
    assert_eq!(root.attr("result"), Some("200"));
    assert!(root.parent_id.is_none());
    assert!(
        root.attr("trace_id") == Some(root.trace_id.as_str()),
        "the server span carries its trace id for the logs"
    );
    assert_eq!(aad_step.name, misim_core::telemetry::STEP_NAMES[6]);
    assert_eq!(imds5.name, misim_core::telemetry::STEP_NAMES[5]);

    // The diagram: workload -> IMDS (5) and IMDS -> Azure AD (6).
    let d = render::trace_diagram(&t);
    let arrows: Vec<(&str, &str, Option<u8>)> = d
        .arrows
        .iter()
        .map(|a| (a.from.as_str(), a.to.as_str(), a.step))
        .collect();
    assert_eq!(
        arrows,
        vec![("workload", "IMDS", Some(5)), ("IMDS", "Azure AD", Some(6))]
    );
    let m = render::mermaid(&d);
    assert!(
        m.contains(
            "workload->>IMDS: 5. token request: GET /metadata/identity/oauth2/token → 200 ("
        ),
        "{m}"
    );
    assert!(
        m.contains(
            "IMDS->>Azure_AD: 6. token from Azure AD: POST /{tenantId}/oauth2/token → 200 ("
        ),
        "{m}"
    );
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_enable_is_one_trace_across_arm_msrp_azure_ad_and_the_host() {
    let sb = Sandbox::start().await;
    let (vm, principal) = vm_with_system_identity(&sb, "rg-obs", "obs-enable-vm").await;
    let t = find_trace(
        |s| s.step() == Some(1) && s.attr("vm") == Some(vm.id.as_str()),
        |t| {
            t.iter()
                .any(|s| s.step() == Some(3) && s.attr("party") == Some("host-1"))
        },
    )
    .await;
    assert_links_intact(&t);

    let root = t.iter().find(|s| s.parent_id.is_none()).expect("root");
    assert_eq!(root.name, "/misim.arm.v1.Arm/AssignVmIdentity");
    assert_eq!(root.attr("party"), Some("arm"));
    assert_eq!(root.attr("result"), Some("OK"));
    let s1 = step_span(&t, 1, "arm");
    assert_eq!(s1.attr("outcome"), Some("success"));
    // Step 2 in MSRP and in Azure AD, under MSRP's CreateIdentity and Azure AD's CreateServicePrincipal.
    let msrp2 = step_span(&t, 2, "msrp");
    assert_eq!(msrp2.attr("principal"), Some(principal.as_str()));
    let msrp_server = parent(&t, msrp2);
    assert_eq!(msrp_server.name, "/misim.msrp.v1.Msrp/CreateIdentity");
    assert_eq!(
        parent(&t, msrp_server).span_id,
        s1.span_id,
        "ARM's step 1 span made the call"
    );
    let aad2 = step_span(&t, 2, "aad");
    let aad_server = parent(&t, aad2);
    assert_eq!(
        aad_server.name,
        "/misim.aad.v1.AadAdmin/CreateServicePrincipal"
    );
    assert_eq!(
        parent(&t, aad_server).span_id,
        msrp_server.span_id,
        "MSRP called Azure AD"
    );
    // Step 3: the host configured (under ARM's call to the host agent) and its credential from MSRP.
    let host3 = step_span(&t, 3, "host-1");
    assert_eq!(host3.attr("vm"), Some(vm.id.as_str()));
    let host_server = parent(&t, host3);
    assert!(
        host_server.name.ends_with("/ConfigureIdentities"),
        "{}",
        host_server.name
    );
    assert_eq!(host_server.attr("party"), Some("host-1"));
    let cred3 = step_span(&t, 3, "msrp");
    let cred_server = parent(&t, cred3);
    assert!(
        cred_server.name.ends_with("/GetCredential"),
        "{}",
        cred_server.name
    );
    let parties: HashSet<&str> = t
        .iter()
        .filter(|s| s.kind == "server")
        .filter_map(|s| s.attr("party"))
        .collect();
    for p in ["arm", "msrp", "aad", "host-1"] {
        assert!(
            parties.contains(p),
            "{p} served part of the flow: {parties:?}"
        );
    }
    let steps = render::steps(&t);
    assert!([1, 2, 3].iter().all(|n| steps.contains(n)), "{steps:?}");
    let m = render::mermaid(&render::trace_diagram(&t));
    assert!(
        m.contains("user->>ARM: 1. enable identity: /misim.arm.v1.Arm/AssignVmIdentity → OK"),
        "{m}"
    );
    assert!(
        m.contains("ARM->>MSRP: 2. create identity: /misim.msrp.v1.Msrp/CreateIdentity → OK"),
        "{m}"
    );
    assert!(m.contains("MSRP->>Azure_AD: 2. create identity: /misim.aad.v1.AadAdmin/CreateServicePrincipal → OK"), "{m}");
    assert!(m.contains("ARM->>host_1: 3. configure host"), "{m}");
    assert!(
        m.contains("host_1->>MSRP: 3. configure host: /misim.msrp.v1.Msrp/GetCredential → OK"),
        "{m}"
    );
    sb.stop().await;
}

/// The value of the series of `metric` whose labels include every `labels` pair (0 if absent).
fn value(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(sb: &Sandbox) -> String {
    let resp = sb
        .http
        .get(format!("{}/metrics", sb.endpoints.arm_rest))
        .send()
        .await
        .expect("/metrics answers");
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_counters_move_as_requests_are_made() {
    let sb = Sandbox::start().await;
    let (vm, _) = vm_with_system_identity(&sb, "rg-obs", "obs-metrics-vm").await;
    let before = metrics(&sb).await;
    let vm_label = [
        ("party", "imds"),
        ("vm", "obs-metrics-vm"),
        ("status", "200"),
    ];
    assert_eq!(value(&before, "misim_requests_total", &vm_label), 0.0);

    let (status, _) = sb
        .imds_token(&vm.imds_endpoint, "https://vault.azure.net", &[])
        .await;
    assert_eq!(status, 200);
    let (status, _) = sb
        .imds_token(&vm.imds_endpoint, "https://vault.azure.net", &[])
        .await;
    assert_eq!(status, 200);
    // An unknown resource: Azure AD refuses it (AADSTS500011), IMDS answers 400.
    let (status, _) = sb
        .imds_token(&vm.imds_endpoint, "https://unknown.example.com/", &[])
        .await;
    assert_eq!(status, 400);

    let after = metrics(&sb).await;
    assert_eq!(
        value(&after, "misim_requests_total", &vm_label),
        2.0,
        "two 200s for this VM"
    );
    assert_eq!(
        value(
            &after,
            "misim_requests_total",
            &[
                ("party", "imds"),
                ("vm", "obs-metrics-vm"),
                ("status", "400")
            ]
        ),
        1.0
    );
    let grew = |metric: &str, labels: &[(&str, &str)]| {
        let (b, a) = (
            value(&before, metric, labels),
            value(&after, metric, labels),
        );
        assert!(a > b, "{metric}{labels:?}: {b} -> {a}");
    };
    grew("misim_imds_token_cache_total", &[("result", "miss")]);
    grew("misim_imds_token_cache_total", &[("result", "hit")]);
    grew(
        "misim_aad_tokens_issued_total",
        &[
            ("resource", "https://vault.azure.net"),
            ("grant_type", "client_credentials"),
        ],
    );
    grew("misim_aad_assertion_failures_total", &[("code", "500011")]);
    grew(
        "misim_request_duration_seconds_count",
        &[
            ("party", "imds"),
            ("endpoint", "/metadata/identity/oauth2/token"),
        ],
    );
    assert!(
        value(
            &after,
            "misim_requests_total",
            &[
                ("party", "arm"),
                ("endpoint", "/misim.arm.v1.Arm/AssignVmIdentity"),
                ("status", "OK")
            ]
        ) >= 1.0
    );
    assert!(
        value(
            &after,
            "misim_resources",
            &[("party", "arm"), ("kind", "hosts")]
        ) >= 2.0,
        "{after}"
    );
    assert!(
        value(
            &after,
            "misim_resources",
            &[("party", "arm"), ("kind", "vms")]
        ) >= 1.0
    );
    for name in [
        "misim_throttled_requests_total",
        "misim_certificate_renewals_total",
        "misim_signing_key_rotations_total",
    ] {
        assert!(
            after.contains(&format!("# HELP {name}")) || !after.contains(name),
            "{name} is described when present"
        );
    }
    sb.stop().await;
}
