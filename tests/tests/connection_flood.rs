//! One VM's connection flood cannot starve another VM: listeners cap their connections (per listener
//! and per source address) inside a process-wide descriptor budget, so after one VM's IMDS endpoint
//! is flooded with more idle connections than its cap, another VM still gets its token at once.

use std::time::{Duration, Instant};

use misim_core::limits::ConnLimits;
use misim_proto::arm as pb;
use misim_tests::Sandbox;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[path = "system/lifecycle_common/mod.rs"]
mod lifecycle_common;
use lifecycle_common::{enable_system, group, vm, MGMT};

/// A VM with a system-assigned identity on host-1, in group `rg`.
async fn vm_with_identity(sb: &Sandbox, name: &str) -> pb::VirtualMachine {
    let created = vm(sb, "rg", name, "host-1").await;
    enable_system(sb, "rg", name).await;
    created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_to_one_vm_leaves_another_vm_its_token() {
    misim_core::limits::raise_fd_limit();
    let sb = Sandbox::start_with_hosts(1).await;
    group(&sb, "rg").await;
    let attacker = vm_with_identity(&sb, "attacker").await;
    let victim = vm_with_identity(&sb, "victim").await;
    // The victim's token is cached before the flood (a cold token measures Azure AD, not fairness).
    let (status, _) = sb.imds_token(&victim.imds_endpoint, MGMT, &[]).await;
    assert_eq!(status, 200);

    // More idle connections to the attacker's IMDS endpoint than a listener accepts.
    let addr = attacker
        .imds_endpoint
        .trim_start_matches("http://")
        .to_string();
    let flood = ConnLimits::HTTP.max_connections + 50;
    let mut conns = Vec::with_capacity(flood);
    for _ in 0..flood {
        conns.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    // The listener closes those over its cap: some of them read EOF at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut closed = 0;
    for c in &mut conns {
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(2), c.read(&mut b)).await {
            closed += 1;
        }
    }
    assert!(
        closed >= 50,
        "the connections over the cap are closed by the server (closed {closed} of {flood})"
    );

    // The victim VM is served at once; so is Azure AD's discovery.
    let started = Instant::now();
    let (status, body) = sb.imds_token(&victim.imds_endpoint, MGMT, &[]).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(
        took < Duration::from_millis(100),
        "victim's token took {took:?} during the flood"
    );
    drop(conns);
    sb.stop().await;
}
