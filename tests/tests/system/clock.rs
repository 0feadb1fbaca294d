//! The simulated clock through `misim.sim.v1.Clock` (what `misim clock` calls): every party reads
//! it; an advance past a token's expiry makes IMDS fetch a new token, 46 days renews certificates
//! (the old one keeps working through the overlap) and 31 days rotates Azure AD's signing key (old
//! tokens verify until they expire), without waiting for the parties' wall-clock timers.

use crate::aad_common::*;
use misim_proto::msrp::msrp_client::MsrpClient;
use misim_proto::msrp::GetIdentityRequest;
use misim_proto::sim::{self as sim, clock_client::ClockClient};
use serde_json::Value;

const DAY: i64 = 86_400;

async fn clock(url: &str) -> ClockClient<tonic::transport::Channel> {
    ClockClient::connect(url.to_string())
        .await
        .expect("connect to the Clock service")
}

/// A cached IMDS token (no bypass_cache): access token and expires_on.
async fn cached_token(sys: &Sys, imds: &str) -> (String, i64) {
    let body: Value = sys
        .http
        .get(format!("{imds}/metadata/identity/oauth2/token"))
        .query(&[("api-version", "2018-02-01"), ("resource", MGMT)])
        .header("Metadata", "true")
        .send()
        .await
        .expect("IMDS answers")
        .json()
        .await
        .expect("json");
    (
        body["access_token"].as_str().expect("token").to_string(),
        body["expires_on"]
            .as_str()
            .expect("expires_on")
            .parse()
            .expect("number"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advance_and_set_move_every_party_and_imds_refetches_after_expiry() {
    let sys = Sys::start(|_| {}).await;
    let (vm, _) = sys.vm_with_system_identity("rg1", "vm1").await;
    let mut c = clock(&sys.endpoints.arm_grpc).await;
    let t0 = c
        .get_time(sim::GetTimeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(t0.manual);
    assert_eq!(t0.epoch_seconds, sys.clock.now());

    let (a, a_exp) = cached_token(&sys, &vm.imds_endpoint).await;
    let claims = unverified(&a);
    let iat = claims["iat"].as_i64().unwrap();
    assert!(
        iat <= t0.epoch_seconds && iat >= t0.epoch_seconds - 600,
        "iat {iat} from the simulated clock"
    );
    assert!(a_exp > t0.epoch_seconds && a_exp <= t0.epoch_seconds + DAY);
    // Within the lifetime the cached token is served.
    c.advance(sim::AdvanceRequest { seconds: 3_600 })
        .await
        .unwrap();
    assert_eq!(cached_token(&sys, &vm.imds_endpoint).await.0, a);

    // Past expiry (25 h later) IMDS fetches a new one, issued at the simulated time.
    let after = c
        .advance(sim::AdvanceRequest {
            seconds: 24 * 3_600,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.epoch_seconds, t0.epoch_seconds + 25 * 3_600);
    let (b, b_exp) = cached_token(&sys, &vm.imds_endpoint).await;
    assert_ne!(a, b);
    assert!(b_exp > a_exp + 24 * 3_600 - 300);
    let b_claims = unverified(&b);
    assert!(b_claims["nbf"].as_i64().unwrap() <= after.epoch_seconds);
    assert!(b_claims["nbf"].as_i64().unwrap() > t0.epoch_seconds + 24 * 3_600);

    // Set: forward only.
    let target = after.epoch_seconds + 10;
    let set = c
        .set_time(sim::SetTimeRequest {
            epoch_seconds: target,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.epoch_seconds, target);
    assert_eq!(sys.clock.now(), target);
    let back = c
        .set_time(sim::SetTimeRequest {
            epoch_seconds: target - 1,
        })
        .await
        .expect_err("backwards");
    assert_eq!(back.code(), tonic::Code::InvalidArgument);
    let zero = c
        .advance(sim::AdvanceRequest { seconds: 0 })
        .await
        .expect_err("zero");
    assert_eq!(zero.code(), tonic::Code::InvalidArgument);
    sys.stop().await;
}

fn unverified(token: &str) -> Value {
    misim_tests::unverified_claims(token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advancing_46_days_renews_certificates_and_31_days_rotates_the_signing_key() {
    // Default periods: MSRP checks renewal every 60 s of wall time, so only the clock's wake-up
    // makes this test finish in time.
    let sys = Sys::start(|_| {}).await;
    let tid = sys.endpoints.tenant_id.clone();
    let (vm, _) = sys.vm_with_system_identity("rg1", "vm1").await;
    let mut c = clock(&sys.endpoints.arm_grpc).await;
    let dir = sys.dir.path().to_path_buf();
    let mut msrp =
        MsrpClient::new(misim_tests::admin_channel(&dir, &sys.endpoints.msrp_grpc).await);
    let req = GetIdentityRequest {
        resource_id: vm.id.clone(),
    };
    let first = msrp.get_identity(req.clone()).await.unwrap().into_inner();
    let (a, _) = cached_token(&sys, &vm.imds_endpoint).await;
    let kids_before = sys.jwks_kids(&tid).await;
    assert_eq!(kids_before, [kid(&a)]);

    // 31 days: Azure AD rotates its key; the old one stays published while token A is unexpired.
    c.advance(sim::AdvanceRequest { seconds: 31 * DAY })
        .await
        .unwrap();
    let kids = eventually("the signing key to rotate", 10, || {
        let sys = &sys;
        let tid = tid.clone();
        async move {
            let k = sys.jwks_kids(&tid).await;
            (k.len() == 2).then_some(k)
        }
    })
    .await;
    assert!(kids.contains(&kid(&a)));
    let (b, _) = cached_token(&sys, &vm.imds_endpoint).await;
    assert_ne!(kid(&b), kid(&a), "a new token is signed with the new key");

    // 46 days (15 more): MSRP renews the certificate at once; tokens keep coming.
    c.advance(sim::AdvanceRequest { seconds: 15 * DAY })
        .await
        .unwrap();
    let renewed = eventually("msrp to renew the certificate", 10, || {
        let (mut msrp, req, old) = (msrp.clone(), req.clone(), first.thumbprint_sha1_hex.clone());
        async move {
            let id = msrp.get_identity(req).await.ok()?.into_inner();
            (id.thumbprint_sha1_hex != old).then_some(id)
        }
    })
    .await;
    assert_eq!(renewed.client_id, first.client_id);
    assert!(renewed.cert_not_after > first.cert_not_after);
    let (status, body) = sys.imds_token(&vm.imds_endpoint).await;
    assert_eq!(
        status, 200,
        "the host's old certificate is valid through the overlap: {body}"
    );
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_clock_cannot_be_moved() {
    let sb = misim_tests::Sandbox::start_with_hosts(1).await;
    let mut c = clock(&sb.endpoints.arm_grpc).await;
    let now = c
        .get_time(sim::GetTimeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!now.manual);
    let err = c
        .advance(sim::AdvanceRequest { seconds: 60 })
        .await
        .expect_err("system clock");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("--clock manual"),
        "{}",
        err.message()
    );
    sb.stop().await;
}
