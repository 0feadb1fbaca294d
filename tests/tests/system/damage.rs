//! Damaged stores (issue #15): each party's store truncated, emptied or deleted between a stop and
//! a start. The system either refuses to start with a message naming the store, what is wrong and
//! what to do, or starts and heals: ARM's reconcile re-creates what a peer lost, and `GET /readyz`
//! (what `misim doctor` reads) reports the differences until none are left.

use std::path::Path;
use std::time::{Duration, Instant};

use misim_proto::arm as pb;
use misim_tests::Sandbox;
use serde_json::Value;

use crate::lifecycle_common::{enable_system, group, imds, uami, vm};

/// Two VMs on host-1 with system-assigned identities, one also with a user-assigned identity.
async fn populated() -> (Sandbox, Vec<pb::VirtualMachine>) {
    let sb = Sandbox::start_with_hosts(1).await;
    group(&sb, "rg1").await;
    let mut vms = Vec::new();
    for name in ["vm1", "vm2"] {
        vm(&sb, "rg1", name, "host-1").await;
        enable_system(&sb, "rg1", name).await;
    }
    let u1 = uami(&sb, "rg1", "u1").await;
    sb.arm()
        .await
        .assign_vm_identity(pb::AssignVmIdentityRequest {
            resource_group: "rg1".into(),
            name: "vm1".into(),
            system_assigned: true,
            user_assigned_identities: vec![u1.id.clone()],
            ..Default::default()
        })
        .await
        .expect("assign u1");
    for name in ["vm1", "vm2"] {
        vms.push(get_vm(&sb, name).await);
    }
    wait_consistent(&sb).await;
    (sb, vms)
}

async fn get_vm(sb: &Sandbox, name: &str) -> pb::VirtualMachine {
    sb.arm()
        .await
        .get_vm(pb::GetVmRequest {
            resource_group: "rg1".into(),
            name: name.into(),
            ..Default::default()
        })
        .await
        .expect("get vm")
        .into_inner()
}

/// Polls `GET /readyz` until 200; returns every report seen with differences.
async fn wait_consistent(sb: &Sandbox) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut seen = Vec::new();
    loop {
        let (status, body) = sb.arm_rest_get("/readyz", None).await;
        if status == 200 {
            assert_eq!(body["consistent"], true, "{body}");
            return seen;
        }
        assert_eq!(status, 503, "{body}");
        seen.push(body.clone());
        assert!(
            Instant::now() < deadline,
            "not consistent within 40 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn truncate_half(file: &Path) {
    let len = std::fs::metadata(file).expect("store file").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

fn truncate_to_zero(file: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(0)
        .unwrap();
}

/// The database file of a store directory, whichever engine wrote it.
fn db_file(dir: &Path) -> std::path::PathBuf {
    ["db", "store.redb"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .expect("a database file")
}

fn assert_refusal(e: &anyhow::Error, store: &Path, party: &str) {
    let msg = format!("{e:#}");
    assert!(
        msg.contains(&store.display().to_string()),
        "names the store: {msg}"
    );
    assert!(msg.contains("is damaged"), "says what is wrong: {msg}");
    assert!(
        msg.contains(&format!("misim repair --party {party}")),
        "says what to do: {msg}"
    );
}

/// Every VM gets a token from its IMDS for each identity it has.
async fn assert_tokens(sb: &Sandbox, vms: &[pb::VirtualMachine]) {
    for v in vms {
        let now = get_vm(sb, &v.name).await;
        let (status, body) = imds(sb, &now.imds_endpoint, &[]).await;
        assert_eq!(status, 200, "{}: {body}", v.name);
        for u in now
            .identity
            .as_ref()
            .map(|i| {
                i.user_assigned_identities
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
        {
            let (status, body) = imds(sb, &now.imds_endpoint, &[("msi_res_id", &u)]).await;
            assert_eq!(status, 200, "{} as {u}: {body}", v.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_store_cut_to_zero_bytes_is_refused_without_a_panic() {
    let (mut sb, _) = populated().await;
    let store = sb.dir.path().join("arm");
    let started = Instant::now();
    let e = sb
        .restart_after(|d| truncate_to_zero(&db_file(&d.join("arm"))))
        .await
        .expect_err("ARM refuses a store that lost its data");
    assert_refusal(&e, &store, "arm");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "refused promptly"
    );
}

/// A truncated store either fails the checks at open (a refusal naming it and the fix) or, when
/// the engine recovered a consistent earlier state, starts and is healed. Returns whether it was
/// refused.
async fn refused_or_healed(sb: &mut Sandbox, party: &str, vms: &[pb::VirtualMachine]) -> bool {
    let store = sb.dir.path().join(party);
    let p = party.to_string();
    match sb
        .restart_after(move |d| truncate_half(&db_file(&d.join(&p))))
        .await
    {
        Err(e) => {
            assert_refusal(&e, &store, party);
            true
        }
        Ok(()) => {
            wait_consistent(sb).await;
            assert_tokens(sb, vms).await;
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aad_store_truncated_to_half_is_refused_or_healed() {
    let (mut sb, vms) = populated().await;
    refused_or_healed(&mut sb, "aad", &vms).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msrp_store_truncated_to_half_is_refused_or_healed_then_repair_heals() {
    let (mut sb, vms) = populated().await;
    refused_or_healed(&mut sb, "msrp", &vms).await;
    // `misim repair --party msrp`: the store is moved aside, MSRP starts empty, ARM heals.
    let data = sb.dir.path().to_path_buf();
    sb.restart_after(|_| {
        misim::repair::run(misim::repair::RepairArgs {
            data_dir: data.clone(),
            party: "msrp".into(),
        })
        .expect("repair");
    })
    .await
    .expect("MSRP starts empty after repair");
    assert!(std::fs::read_dir(sb.dir.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("msrp.damaged-")));
    wait_consistent(&sb).await;
    assert_tokens(&sb, &vms).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aad_store_moved_aside_by_repair_is_healed_tenant_and_principals() {
    let (mut sb, vms) = populated().await;
    let data = sb.dir.path().to_path_buf();
    sb.restart_after(|_| {
        misim::repair::run(misim::repair::RepairArgs {
            data_dir: data.clone(),
            party: "aad".into(),
        })
        .expect("repair");
    })
    .await
    .expect("Azure AD starts empty after repair");
    let reports = wait_consistent(&sb).await;
    // Azure AD lost the subscription's tenant and every principal: the tenant comes back with its
    // ID and the identities with new principal IDs, as Azure gives re-created identities.
    let text = serde_json::to_string(&reports).unwrap();
    assert!(
        reports.is_empty() || text.contains("\"party\":\"aad\""),
        "{text}"
    );
    for v in &vms {
        let now = get_vm(&sb, &v.name).await;
        assert_eq!(now.provisioning_state, "Succeeded", "{now:?}");
        let (a, b) = (
            v.identity.as_ref().map(|i| i.tenant_id.clone()),
            now.identity.as_ref().map(|i| i.tenant_id.clone()),
        );
        assert_eq!(a, b, "{}: same tenant", v.name);
    }
    assert_tokens(&sb, &vms).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msrp_store_deleted_is_reported_and_healed() {
    let (mut sb, vms) = populated().await;
    sb.restart_after(|d| std::fs::remove_dir_all(d.join("msrp")).unwrap())
        .await
        .expect("MSRP starts empty");
    let reports = wait_consistent(&sb).await;
    // The identities stay the same principals: Azure AD still has their service principals.
    for v in &vms {
        let now = get_vm(&sb, &v.name).await;
        let (a, b) = (
            v.identity.as_ref().map(|i| i.principal_id.clone()),
            now.identity.as_ref().map(|i| i.principal_id.clone()),
        );
        assert_eq!(a, b, "{}", v.name);
    }
    assert_tokens(&sb, &vms).await;
    // What doctor saw while converging named MSRP's lost identities.
    let text = serde_json::to_string(&reports).unwrap();
    assert!(
        reports.is_empty() || text.contains("MSRP has no identity"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_store_deleted_vms_are_placed_again() {
    let (mut sb, vms) = populated().await;
    sb.restart_after(|d| std::fs::remove_dir_all(d.join("hosts").join("host-1")).unwrap())
        .await
        .expect("the host starts empty");
    wait_consistent(&sb).await;
    for v in &vms {
        let now = get_vm(&sb, &v.name).await;
        assert_eq!(now.provisioning_state, "Succeeded", "{now:?}");
    }
    assert_tokens(&sb, &vms).await;
}

/// A web app on host-1 with its system-assigned identity and user-assigned `u1`; returns it.
async fn web_app(sb: &Sandbox) -> pb::WebApp {
    let arm = sb.arm().await;
    let web = arm
        .clone()
        .create_web_app(pb::CreateWebAppRequest {
            resource_group: "rg1".into(),
            name: "web1".into(),
            host: "host-1".into(),
            ..Default::default()
        })
        .await
        .expect("create web app")
        .into_inner();
    let u1 = format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u1",
        web.id.split("/providers/").next().unwrap_or_default()
    );
    arm.clone()
        .assign_web_app_identity(pb::AssignVmIdentityRequest {
            resource_group: "rg1".into(),
            name: "web1".into(),
            system_assigned: true,
            user_assigned_identities: vec![u1],
            ..Default::default()
        })
        .await
        .expect("assign the web app's identities");
    get_web_app(sb).await
}

async fn get_web_app(sb: &Sandbox) -> pb::WebApp {
    sb.arm()
        .await
        .get_web_app(pb::GetWebAppRequest {
            resource_group: "rg1".into(),
            name: "web1".into(),
            ..Default::default()
        })
        .await
        .expect("get web app")
        .into_inner()
}

/// The web app's App Service identity endpoint answers a token for each of its identities.
async fn assert_web_app_tokens(sb: &Sandbox, web: &pb::WebApp) {
    let identity = web.identity.as_ref().expect("identity block");
    let mut asks = vec![Vec::new()];
    for u in identity.user_assigned_identities.keys() {
        asks.push(vec![("mi_res_id", u.as_str())]);
    }
    for extra in asks {
        let mut query = vec![
            ("api-version", "2019-08-01"),
            ("resource", "https://management.azure.com/"),
        ];
        query.extend(extra.iter().copied());
        let resp = sb
            .http
            .get(&web.identity_endpoint)
            .header("X-IDENTITY-HEADER", &web.identity_header)
            .query(&query)
            .send()
            .await
            .expect("the web app's identity endpoint answers");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("JSON body");
        assert_eq!(status, 200, "web1 {extra:?}: {body}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_store_deleted_web_apps_are_placed_again_and_orphans_removed() {
    let (mut sb, vms) = populated().await;
    let before = web_app(&sb).await;
    wait_consistent(&sb).await;
    // The host loses everything: the web app is placed again with its secret and identities.
    let backup = sb.dir.path().join("host-1.backup");
    let keep = backup.clone();
    sb.restart_after(move |d| {
        let host = d.join("hosts").join("host-1");
        copy_dir(&host, &keep);
        std::fs::remove_dir_all(host).unwrap();
    })
    .await
    .expect("the host starts empty");
    let reports = wait_consistent(&sb).await;
    let after = get_web_app(&sb).await;
    assert_eq!(after.provisioning_state, "Succeeded", "{after:?}");
    assert_eq!(after.identity_header, before.identity_header, "same secret");
    assert_eq!(
        after.identity.as_ref().map(|i| &i.principal_id),
        before.identity.as_ref().map(|i| &i.principal_id),
        "same system-assigned principal"
    );
    assert_web_app_tokens(&sb, &after).await;
    assert_tokens(&sb, &vms).await;
    let text = serde_json::to_string(&reports).unwrap();
    assert!(
        reports.is_empty() || text.contains("Microsoft.Web/sites/web1"),
        "the reports named the web app: {text}"
    );
    // `misim doctor`'s gRPC report agrees with /readyz once settled.
    let report = misim::doctor::consistency(&sb.endpoints.arm_grpc, None)
        .await
        .expect("Health/Consistency");
    assert!(
        report.consistent && report.converging && report.differences.is_empty(),
        "{report:?}"
    );

    // The web app is deleted, then the host comes back with its old state that still runs it:
    // an orphan ARM removes from the host.
    sb.arm()
        .await
        .delete_web_app(pb::DeleteWebAppRequest {
            resource_group: "rg1".into(),
            name: "web1".into(),
            ..Default::default()
        })
        .await
        .expect("delete web app");
    sb.restart_after(move |d| {
        let host = d.join("hosts").join("host-1");
        std::fs::remove_dir_all(&host).unwrap();
        copy_dir(&backup, &host);
    })
    .await
    .expect("the host starts with its old state");
    let reports = wait_consistent(&sb).await;
    let text = serde_json::to_string(&reports).unwrap();
    assert!(
        reports.is_empty() || text.contains("orphaned-vm"),
        "the reports named the orphan: {text}"
    );
    let listed = misim_tests::admin_channel(sb.dir.path(), &sb.endpoints.hosts["host-1"]).await;
    let vms_on_host = misim_proto::imds::host_agent_client::HostAgentClient::new(listed)
        .list_vms(misim_proto::imds::ListVmsRequest {})
        .await
        .expect("host ListVms")
        .into_inner()
        .vms;
    assert!(
        !vms_on_host.iter().any(|v| v
            .vm
            .as_ref()
            .is_some_and(|i| i.resource_id.contains("Microsoft.Web/sites/web1"))),
        "the orphaned web app is gone from host-1"
    );
    assert_tokens(&sb, &vms).await;
}

/// `misim up --wait-consistent` against a difference that does not converge: a VM placed on a
/// host the restarted system does not run. The start fails after the timeout, naming the
/// difference, and writes no endpoints.json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_consistent_fails_on_a_difference_that_does_not_converge() {
    let dir = tempfile::tempdir().unwrap();
    let config = |hosts: u16| {
        let mut cfg = misim::up::UpConfig::new(dir.path().to_path_buf());
        cfg.base_port = 0;
        cfg.hosts = hosts;
        cfg
    };
    let system = misim::up::start(config(2)).await.expect("misim starts");
    let mut arm = pb::arm_client::ArmClient::connect(system.endpoints.arm_grpc.clone())
        .await
        .expect("connect to ARM");
    arm.create_resource_group(pb::CreateResourceGroupRequest {
        name: "rg1".into(),
        location: "westeurope".into(),
        ..Default::default()
    })
    .await
    .expect("create group");
    arm.create_vm(pb::CreateVmRequest {
        resource_group: "rg1".into(),
        name: "vm1".into(),
        host: "host-2".into(),
        ..Default::default()
    })
    .await
    .expect("create vm on host-2");
    system.stop().await;

    let mut cfg = config(1);
    cfg.wait_consistent = Some(Duration::from_secs(2));
    let e = misim::up::start(cfg)
        .await
        .err()
        .expect("not consistent: host-2 is not run");
    let msg = format!("{e:#}");
    assert!(msg.contains("not consistent within 2 s"), "{msg}");
    assert!(
        msg.contains("missing-host") && msg.contains("virtualMachines/vm1"),
        "{msg}"
    );
    assert!(msg.contains("\"converging\": false"), "{msg}");
    assert!(!dir.path().join(misim::up::ENDPOINTS_FILE).exists());
}

/// ARM's VM list (stored records, what `misim vm list` shows): name → IMDS endpoint.
async fn listed_endpoints(sb: &Sandbox) -> std::collections::BTreeMap<String, String> {
    sb.arm()
        .await
        .list_vms(pb::ListVmsRequest {
            resource_group: "rg1".into(),
            ..Default::default()
        })
        .await
        .expect("list vms")
        .into_inner()
        .vms
        .into_iter()
        .map(|v| (v.name, v.imds_endpoint))
        .collect()
}

/// Found by the long crash soak: a host restarted while another process held one of its VMs'
/// ports serves that VM on a new port; ARM's stored endpoint must follow (a `stale-endpoint`
/// difference until it does), or `vm list` shows the old port, which another VM may get next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_restarted_without_its_vm_port_gets_the_new_endpoint_recorded() {
    let (mut sb, vms) = populated().await;
    let before = listed_endpoints(&sb).await;
    let old = before["vm1"].clone();
    let port: u16 = old
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("vm1's endpoint is a loopback port: {old}"));
    let squatter = std::sync::Mutex::new(None);
    sb.restart_after(|_| {
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).expect("take vm1's old port");
        *squatter.lock().unwrap() = Some(l);
    })
    .await
    .expect("the host starts on another port");
    wait_consistent(&sb).await;
    let after = listed_endpoints(&sb).await;
    assert_ne!(
        after["vm1"], old,
        "ARM still records the port another process holds"
    );
    assert_eq!(after["vm1"], get_vm(&sb, "vm1").await.imds_endpoint);
    assert_eq!(
        after["vm2"], before["vm2"],
        "vm2's port was free and is kept"
    );
    assert_tokens(&sb, &vms).await;
    drop(squatter);
}
