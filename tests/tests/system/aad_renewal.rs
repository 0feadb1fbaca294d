//! Certificate renewal end to end: MSRP renews an identity's certificate, registers it with Azure AD
//! next to the old one, the host picks it up on its periodic refresh, MSRP retires the old one after
//! it expires, and a VM asking IMDS for tokens the whole time (bypassing the token cache, so every
//! request reaches Azure AD with a client assertion) never sees a failure.
//!
//! The clock is manual; only MSRP's renewal check and the host's credential refresh run on short
//! wall-clock periods (1 s), so the test waits for those background passes, never for expiry.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::aad_common::*;
use misim_proto::aad::aad_admin_client::AadAdminClient;
use misim_proto::aad::GetServicePrincipalRequest;
use misim_proto::imds::host_agent_client::HostAgentClient;
use misim_proto::imds::GetVmRequest;
use misim_proto::msrp::msrp_client::MsrpClient;
use misim_proto::msrp::GetIdentityRequest;
use tokio_util::sync::CancellationToken;

/// Certificate validity and renewal age used here, seconds (Azure: 90 and 45 days).
const VALIDITY: i64 = 10_000;
const RENEW_AFTER: i64 = 6_000;
/// Clock skew Azure AD allows on a key credential's validity, seconds.
const SKEW: i64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_fail_while_a_certificate_is_renewed_and_the_old_one_retired() {
    let sys = Sys::start(|c| {
        c.cert_validity_secs = VALIDITY;
        c.cert_renew_after_secs = RENEW_AFTER;
        c.renewal_check_secs = 1;
        c.credential_refresh_secs = 1;
    })
    .await;
    let tid = sys.endpoints.tenant_id.clone();
    let (vm, identity) = sys.vm_with_system_identity("rg1", "vm1").await;
    let admin = |url: String| {
        let dir = sys.dir.path().to_path_buf();
        async move { misim_tests::admin_channel(&dir, &url).await }
    };
    let mut msrp = MsrpClient::new(admin(sys.endpoints.msrp_grpc.clone()).await);
    let host = HostAgentClient::new(admin(sys.endpoints.hosts["host-1"].clone()).await);
    let mut aad = AadAdminClient::new(admin(sys.endpoints.aad_grpc.clone()).await);
    let get_identity = GetIdentityRequest {
        resource_id: vm.id.clone(),
    };
    let first = msrp
        .get_identity(get_identity.clone())
        .await
        .expect("identity")
        .into_inner();

    // A workload asking for a fresh token every 100 ms for the whole test (IMDS allows 20/s).
    let stop = CancellationToken::new();
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workload = {
        let (http, imds, stop) = (sys.http.clone(), vm.imds_endpoint.clone(), stop.clone());
        let (ok, failed) = (ok.clone(), failed.clone());
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.is_cancelled() {
                let (status, body) = imds_token(&http, &imds).await;
                if status == 200 {
                    ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    failed.fetch_add(1, Ordering::SeqCst);
                    errors.push(format!("{status} {body}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            errors
        })
    };
    let served = |want: usize| {
        let ok = ok.clone();
        async move {
            eventually("more successful token requests", 30, || {
                let n = ok.load(Ordering::SeqCst);
                async move { (n >= want).then_some(()) }
            })
            .await
        }
    };
    served(3).await;

    // 1. MSRP renews once the certificate is RENEW_AFTER old.
    sys.clock.advance(RENEW_AFTER + 1);
    let renewed = eventually("msrp to renew the certificate", 30, || {
        let (mut msrp, req, old) = (
            msrp.clone(),
            get_identity.clone(),
            first.thumbprint_sha1_hex.clone(),
        );
        async move {
            let id = msrp.get_identity(req).await.ok()?.into_inner();
            (id.thumbprint_sha1_hex != old).then_some(id)
        }
    })
    .await;
    assert_eq!(
        renewed.client_id, first.client_id,
        "same identity, new certificate"
    );
    assert!(renewed.cert_not_after > first.cert_not_after);

    // 2. Azure AD holds both certificates; adding the new one again changes nothing.
    let principal = GetServicePrincipalRequest {
        tenant_id: tid.clone(),
        object_id: identity.principal_id.clone(),
        app_id: String::new(),
    };
    let sp = aad
        .get_service_principal(principal.clone())
        .await
        .expect("principal")
        .into_inner();
    let thumbs: Vec<&str> = sp
        .key_credentials
        .iter()
        .map(|k| k.thumbprint_sha1_hex.as_str())
        .collect();
    assert_eq!(thumbs.len(), 2, "{thumbs:?}");
    assert!(thumbs.contains(&first.thumbprint_sha1_hex.as_str()));
    assert!(thumbs.contains(&renewed.thumbprint_sha1_hex.as_str()));

    // 3. The host picks the new certificate up on its periodic refresh; tokens keep coming.
    eventually("the host to serve the new certificate", 30, || {
        let (mut host, vm_id, want) = (
            host.clone(),
            vm.id.clone(),
            renewed.thumbprint_sha1_hex.clone(),
        );
        async move {
            let placed = host
                .get_vm(GetVmRequest { resource_id: vm_id })
                .await
                .ok()?
                .into_inner();
            placed
                .identities
                .iter()
                .any(|i| i.thumbprint_sha1_hex == want)
                .then_some(())
        }
    })
    .await;
    served(ok.load(Ordering::SeqCst) + 3).await;

    // 4. Past the old certificate's expiry (+ skew) Azure AD would refuse it; MSRP removes it.
    sys.clock.advance(VALIDITY - RENEW_AFTER + SKEW);
    eventually("msrp to retire the old certificate", 30, || {
        let (mut aad, req) = (aad.clone(), principal.clone());
        async move {
            let sp = aad.get_service_principal(req).await.ok()?.into_inner();
            (sp.key_credentials.len() == 1).then_some(sp)
        }
    })
    .await;
    served(ok.load(Ordering::SeqCst) + 3).await;

    stop.cancel();
    let errors = workload.await.expect("workload");
    assert!(errors.is_empty(), "failed token requests: {errors:?}");
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert!(ok.load(Ordering::SeqCst) >= 9);
    sys.stop().await;
}
