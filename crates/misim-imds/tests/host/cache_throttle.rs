//! Token cache (AAD called only on a miss, near expiry or `bypass_cache=true`; concurrent misses
//! coalesce) and per-VM throttling (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>,
//! <https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service>).

use std::sync::atomic::Ordering;

use misim_imds::ImdsLimits;
use serde_json::json;

use crate::{get_json, get_with, http, system_identity, token, Sandbox, START};

#[tokio::test]
async fn second_request_is_served_from_the_cache_with_a_recomputed_expires_in() {
    let sb = Sandbox::unlimited().await;
    let e = sb.place("vm1").await;
    sb.configure("vm1", &[&system_identity("vm1")])
        .await
        .unwrap();
    let (_, first) = token(&e, "").await;
    sb.clock.advance(100);
    let (status, second) = token(&e, "").await;
    assert_eq!(status, 200);
    assert_eq!(sb.aad.calls(), 1);
    assert_eq!(second["access_token"], first["access_token"]);
    assert_eq!(second["expires_on"], (START + 3600).to_string());
    assert_eq!(second["expires_in"], "3500");

    // Another resource is another cache entry.
    let (status, _) = get_json(&format!(
        "{e}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(sb.aad.calls(), 2);
}

#[tokio::test]
async fn nearly_expired_token_is_fetched_again() {
    let sb = Sandbox::unlimited().await;
    let e = sb.place("vm1").await;
    sb.configure("vm1", &[&system_identity("vm1")])
        .await
        .unwrap();
    token(&e, "").await;
    sb.clock.advance(3600 - 301);
    token(&e, "").await;
    assert_eq!(sb.aad.calls(), 1, "301 s left: still cached");
    sb.clock.advance(2);
    let (status, body) = token(&e, "").await;
    assert_eq!(status, 200);
    assert_eq!(sb.aad.calls(), 2, "299 s left: refetched");
    assert_eq!(body["expires_in"], "3600");
}

#[tokio::test]
async fn bypass_cache_always_calls_azure_ad() {
    let sb = Sandbox::unlimited().await;
    let e = sb.place("vm1").await;
    sb.configure("vm1", &[&system_identity("vm1")])
        .await
        .unwrap();
    token(&e, "").await;
    let (status, _) = token(&e, "&bypass_cache=true").await;
    assert_eq!(status, 200);
    assert_eq!(sb.aad.calls(), 2);
    token(&e, "").await;
    assert_eq!(
        sb.aad.calls(),
        2,
        "the bypassing answer refreshed the cache"
    );
}

#[tokio::test]
async fn ten_concurrent_misses_make_one_azure_ad_call() {
    let sb = Sandbox::unlimited().await;
    let e = sb.place("vm1").await;
    sb.configure("vm1", &[&system_identity("vm1")])
        .await
        .unwrap();
    // Slow AAD down so the ten requests overlap.
    sb.aad.delay_ms.store(300, Ordering::SeqCst);
    let requests = (0..10).map(|_| {
        let e = e.clone();
        tokio::spawn(async move { token(&e, "").await })
    });
    for r in requests.collect::<Vec<_>>() {
        assert_eq!(r.await.unwrap().0, 200);
    }
    assert_eq!(sb.aad.calls(), 1);
}

#[tokio::test]
async fn twenty_first_identity_request_in_one_second_is_throttled() {
    let sb = Sandbox::start(ImdsLimits::default()).await;
    let e = sb.place("vm1").await;
    sb.configure("vm1", &[&system_identity("vm1")])
        .await
        .unwrap();
    for i in 0..20 {
        assert_eq!(token(&e, "").await.0, 200, "request {i}");
    }
    assert_eq!(
        token(&e, "").await,
        (
            429,
            json!({"error":"invalid_request","error_description":"Temporarily throttled, too many requests"})
        )
    );
    sb.clock.advance(1);
    assert_eq!(token(&e, "").await.0, 200, "a new second has a new budget");
    // Throttling is per VM.
    let other = sb.place("vm2").await;
    sb.configure("vm2", &[&system_identity("vm2")])
        .await
        .unwrap();
    assert_eq!(token(&other, "").await.0, 200);
}

#[tokio::test]
async fn sixth_instance_request_in_one_second_is_throttled() {
    let sb = Sandbox::start(ImdsLimits::default()).await;
    let e = sb.place("vm1").await;
    let url = format!("{e}/metadata/instance?api-version=2021-02-01");
    for _ in 0..5 {
        assert_eq!(get_json(&url).await.0, 200);
    }
    assert_eq!(get_json(&url).await.0, 429);
}

#[tokio::test]
async fn retry_after_is_sent_with_429_only_when_configured() {
    let url = |e: &str| format!("{e}/metadata/instance?api-version=2021-02-01");
    let limits = ImdsLimits {
        other_per_second: 1,
        ..ImdsLimits::default()
    };
    let sb = Sandbox::start(limits.clone()).await;
    let e = sb.place("vm1").await;
    assert_eq!(get_json(&url(&e)).await.0, 200);
    let (status, headers, _) = get_with(&http(), &url(&e), &[("Metadata", "true")]).await;
    assert_eq!(status, 429);
    assert!(
        headers.get("retry-after").is_none(),
        "default: no Retry-After"
    );

    let sb = Sandbox::start(ImdsLimits {
        retry_after_secs: Some(1),
        ..limits
    })
    .await;
    let e = sb.place("vm1").await;
    assert_eq!(get_json(&url(&e)).await.0, 200);
    let (status, headers, _) = get_with(&http(), &url(&e), &[("Metadata", "true")]).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "1");
}
