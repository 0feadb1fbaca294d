//! Concurrency and hostile input: concurrent identity changes on one VM or scale set both survive,
//! parallel creates get distinct private IPs, a static IP another VM holds is rejected, and a raw
//! UTF-8 request path is answered instead of dropping the connection.

use std::collections::BTreeSet;
use std::sync::Arc;

use misim_arm::Arm;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Sandbox;

async fn group(arm: &Arm) {
    arm.create_group("", "rg", "westeurope", Default::default())
        .await
        .unwrap();
}

fn create_vm(name: &str, ip: &str) -> misim_arm::CreateVm {
    misim_arm::CreateVm {
        resource: misim_arm::NewResource {
            resource_group: "rg".into(),
            name: name.into(),
            ..Default::default()
        },
        host: "host-1".into(),
        private_ip: ip.into(),
        ..Default::default()
    }
}

/// Holds `host`'s `ConfigureIdentities` while `busy` runs into it (so `busy` keeps the resource's
/// lock), starts `system` and `user` meanwhile, lets them reach the lock, then releases the host.
async fn race_under_held_lock<B, S, U>(sb: &Sandbox, host: &str, busy: B, system: S, user: U)
where
    B: std::future::Future + Send + 'static,
    B::Output: Send,
    S: std::future::Future + Send + 'static,
    S::Output: Send,
    U: std::future::Future + Send + 'static,
    U::Output: Send,
{
    let host = sb.host(host);
    let held = host.hold.write().await;
    let entered = host.configure_entered.notified();
    tokio::pin!(entered);
    entered.as_mut().enable();
    let busy = tokio::spawn(busy);
    entered.await;
    let a = tokio::spawn(system);
    let b = tokio::spawn(user);
    // Current-thread runtime: both tasks run up to their first pending await (the lock).
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    drop(held);
    busy.await.unwrap();
    a.await.unwrap();
    b.await.unwrap();
}

#[tokio::test]
async fn concurrent_assign_of_system_and_user_assigned_keeps_both_on_a_vm() {
    let sb = Sandbox::start().await;
    let arm = sb.arm.clone();
    group(&arm).await;
    let vm = arm.create_vm(create_vm("vm", "")).await.unwrap();
    let u = arm
        .create_user_assigned_identity("", "rg", "u1", "", Default::default())
        .await
        .unwrap();
    let uid = u.id.to_string();
    let (a1, a2, a3, vm_id) = (arm.clone(), arm.clone(), arm.clone(), vm.id.clone());
    race_under_held_lock(
        &sb,
        "host-1",
        async move { a1.reconcile_resource(&vm_id).await.unwrap() },
        async move {
            a2.assign_identity(misim_arm::IdentityTarget::vm("", "rg", "vm"), true, &[])
                .await
        },
        async move {
            a3.assign_identity(misim_arm::IdentityTarget::vm("", "rg", "vm"), false, &[uid])
                .await
        },
    )
    .await;
    let view = arm
        .get_identity(misim_arm::IdentityTarget::vm("", "rg", "vm"))
        .unwrap();
    assert_eq!(view.kind(), "SystemAssigned, UserAssigned");
    assert_eq!(view.user_assigned.len(), 1);
    let mut want = vec![vm.id.key(), u.id.key()];
    want.sort();
    assert_eq!(sb.host("host-1").identities(vm.id.as_str()), Some(want));
}

#[tokio::test]
async fn concurrent_assign_of_system_and_user_assigned_keeps_both_on_a_scale_set() {
    let sb = Sandbox::start().await;
    let arm = sb.arm.clone();
    group(&arm).await;
    let ss = arm
        .create_vmss(misim_arm::CreateVmss {
            resource: misim_arm::NewResource {
                resource_group: "rg".into(),
                name: "ss".into(),
                ..Default::default()
            },
            capacity: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, instances) = arm.list_vmss_instances("", "rg", "ss").await.unwrap();
    let host = instances[0].host.clone();
    let u = arm
        .create_user_assigned_identity("", "rg", "u1", "", Default::default())
        .await
        .unwrap();
    let uid = u.id.to_string();
    let (a1, a2, a3, ss_id) = (arm.clone(), arm.clone(), arm.clone(), ss.id.clone());
    race_under_held_lock(
        &sb,
        &host,
        async move { a1.reconcile_resource(&ss_id).await.unwrap() },
        async move {
            a2.assign_identity(
                misim_arm::IdentityTarget::scale_set("", "rg", "ss"),
                true,
                &[],
            )
            .await
        },
        async move {
            a3.assign_identity(
                misim_arm::IdentityTarget::scale_set("", "rg", "ss"),
                false,
                &[uid],
            )
            .await
        },
    )
    .await;
    let (ss, _) = arm.list_vmss_instances("", "rg", "ss").await.unwrap();
    let view = ss.identity;
    assert_eq!(view.kind(), "SystemAssigned, UserAssigned");
    assert_eq!(view.user_assigned.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_creates_get_distinct_private_ips() {
    let sb = Sandbox::start().await;
    group(&sb.arm).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let arm: Arc<Arm> = sb.arm.clone();
            tokio::spawn(async move { arm.create_vm(create_vm(&format!("vm{i}"), "")).await })
        })
        .collect();
    let mut ips = BTreeSet::new();
    for t in tasks {
        ips.insert(t.await.unwrap().unwrap().private_ip);
    }
    assert_eq!(ips.len(), 16, "{ips:?}");
}

#[tokio::test]
async fn a_static_private_ip_held_by_another_vm_is_rejected_until_it_is_deleted() {
    let mut sb = Sandbox::start().await;
    group(&sb.arm).await;
    let first = sb.arm.create_vm(create_vm("a", "")).await.unwrap();
    let err = sb
        .arm
        .create_vm(create_vm("b", &first.private_ip))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "PrivateIPAddressInUse");
    assert_eq!(err.http_status(), axum::http::StatusCode::BAD_REQUEST);
    let status = sb
        .client
        .create_vm(misim_proto::arm::CreateVmRequest {
            resource_group: "rg".into(),
            name: "b".into(),
            private_ip_address: format!(" {} ", first.private_ip),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    assert!(status.message().contains("PrivateIPAddressInUse"));
    assert!(sb.arm.get_vm("", "rg", "b").await.is_err(), "b not created");

    // A static address is skipped by automatic allocation too.
    let fixed = sb.arm.create_vm(create_vm("c", "10.0.0.6")).await.unwrap();
    let next = sb.arm.create_vm(create_vm("d", "")).await.unwrap();
    let auto = sb.arm.create_vm(create_vm("e", "")).await.unwrap();
    assert_eq!(fixed.private_ip, "10.0.0.6");
    assert_eq!(
        (next.private_ip.as_str(), auto.private_ip.as_str()),
        ("10.0.0.5", "10.0.0.7")
    );

    sb.arm.delete_vm("", "rg", "a").await.unwrap();
    let reused = sb
        .arm
        .create_vm(create_vm("b", &first.private_ip))
        .await
        .unwrap();
    assert_eq!(reused.private_ip, first.private_ip);
}

#[tokio::test]
async fn a_raw_utf8_request_path_gets_a_4xx_not_a_dropped_connection() {
    let sb = Sandbox::start().await;
    let addr = sb.rest_url.trim_start_matches("http://").to_string();
    for path in ["/vaults\u{e9}/x", "/\u{1f600}\u{1f600}/subscriptions"] {
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut resp = Vec::new();
        conn.read_to_end(&mut resp).await.unwrap();
        let head = String::from_utf8_lossy(&resp);
        let status: u16 = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no response for {path}: {head:?}"));
        assert!((400..500).contains(&status), "{path}: {head}");
    }
}
