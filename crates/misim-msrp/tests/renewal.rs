//! Certificate renewal with a manual clock, and the pre-generated key pool.

mod common;

use common::*;
use misim_core::{Clock, ResourceId};
use misim_proto::msrp::IdentityKind;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn renewal_rolls_the_certificate_after_45_days_and_retires_the_old_one_at_expiry() {
    let aad_stop = CancellationToken::new();
    let (aad_url, aad) = start_fake_aad(aad_stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let mut m = Running::start(&config(dir.path(), &aad_url, &clock)).await;
    let id = uami("uami1");
    let old = m
        .client
        .create_identity(create_req(&id, IdentityKind::UserAssigned))
        .await
        .unwrap()
        .into_inner();
    let old_key_id = aad.only_principal().key_credentials[0].key_id.clone();

    clock.advance(45 * DAY - 1);
    assert_eq!(
        m.msrp.renew_due().await.unwrap(),
        misim_msrp::RenewalReport::default()
    );

    clock.advance(1);
    let report = m.msrp.renew_due().await.unwrap();
    assert_eq!(report.renewed, vec![id.clone()]);
    let cred = m
        .client
        .get_credential(cred_req(&id))
        .await
        .unwrap()
        .into_inner();
    let new = cred.identity.unwrap();
    assert_ne!(new.thumbprint_sha1_hex, old.thumbprint_sha1_hex);
    assert_eq!(
        misim_core::cert::sha1_thumbprint_hex(&cred.certificate_der),
        new.thumbprint_sha1_hex
    );
    assert_eq!(
        (new.cert_not_before, new.cert_not_after),
        (T0 + 45 * DAY, T0 + 135 * DAY)
    );
    assert_eq!(new.client_id, old.client_id);
    let thumbprints: Vec<String> = aad
        .only_principal()
        .key_credentials
        .iter()
        .map(|k| k.thumbprint_sha1_hex.clone())
        .collect();
    assert_eq!(
        thumbprints,
        vec![
            old.thumbprint_sha1_hex.clone(),
            new.thumbprint_sha1_hex.clone()
        ]
    );
    let record = m.msrp.get(&ResourceId::parse(&id).unwrap()).unwrap();
    assert_eq!(record.previous.len(), 1);
    assert_eq!(
        record.previous[0].thumbprint_sha1_hex,
        old.thumbprint_sha1_hex
    );

    // Old certificate still valid one second before it expires: kept in AAD.
    clock.advance(45 * DAY - 1);
    assert_eq!(m.msrp.renew_due().await.unwrap().retired, 0);
    assert_eq!(aad.only_principal().key_credentials.len(), 2);

    // At 90 days the first certificate expires and is removed from AAD; the second one is 45 days old
    // at that moment, so the same pass renews it (Azure's cadence: each certificate overlaps the next).
    clock.advance(1);
    let report = m.msrp.renew_due().await.unwrap();
    assert_eq!((report.retired, report.renewed.len()), (1, 1));
    let in_aad: Vec<String> = aad
        .only_principal()
        .key_credentials
        .iter()
        .map(|k| k.thumbprint_sha1_hex.clone())
        .collect();
    assert!(!in_aad.contains(&old.thumbprint_sha1_hex));
    assert_eq!(in_aad.len(), 2);
    assert_eq!(in_aad[0], new.thumbprint_sha1_hex);
    assert_eq!(aad.state.lock().unwrap().removed_keys, vec![old_key_id]);
    let record = m.msrp.get(&ResourceId::parse(&id).unwrap()).unwrap();
    let previous: Vec<&str> = record
        .previous
        .iter()
        .map(|c| c.thumbprint_sha1_hex.as_str())
        .collect();
    assert_eq!(previous, vec![new.thumbprint_sha1_hex.as_str()]);
    assert_eq!(record.current.thumbprint_sha1_hex, in_aad[1]);
    m.stop().await;
    aad_stop.cancel();
}

#[tokio::test]
async fn a_failed_renewal_is_retried_with_the_same_staged_certificate() {
    let aad_stop = CancellationToken::new();
    let (aad_url, aad) = start_fake_aad(aad_stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let mut m = Running::start(&config(dir.path(), &aad_url, &clock)).await;
    let id = uami("uami1");
    let old = m
        .client
        .create_identity(create_req(&id, IdentityKind::UserAssigned))
        .await
        .unwrap()
        .into_inner();
    let rid = misim_core::ResourceId::parse(&id).unwrap();

    clock.advance(45 * DAY);
    aad.state.lock().unwrap().fail_next_add = true;
    let report = m.msrp.renew_due().await.unwrap();
    assert_eq!(report.failed, vec![id.clone()]);
    let staged = m
        .msrp
        .get(&rid)
        .unwrap()
        .next
        .expect("renewal credential staged")
        .thumbprint_sha1_hex;
    let cred = m
        .client
        .get_credential(cred_req(&id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        cred.identity.unwrap().thumbprint_sha1_hex,
        old.thumbprint_sha1_hex
    );

    let report = m.msrp.renew_due().await.unwrap();
    assert_eq!(report.renewed, vec![id.clone()]);
    let record = m.msrp.get(&rid).unwrap();
    assert_eq!(record.current.thumbprint_sha1_hex, staged);
    assert!(record.next.is_none());
    assert_eq!(aad.only_principal().key_credentials.len(), 2);
    m.stop().await;
    aad_stop.cancel();
}

#[tokio::test]
async fn key_pool_serves_a_burst_of_creates() {
    let aad_stop = CancellationToken::new();
    let (aad_url, aad) = start_fake_aad(aad_stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = misim_msrp::Config {
        key_pool_size: 2,
        ..config(dir.path(), &aad_url, &Clock::manual(T0))
    };
    let mut m = Running::start(&cfg).await;
    m.msrp.key_pool().wait_filled().await;

    for name in ["a", "b"] {
        m.client
            .create_identity(create_req(&uami(name), IdentityKind::UserAssigned))
            .await
            .unwrap();
    }

    let stats = m.msrp.key_pool().stats();
    assert_eq!((stats.from_pool, stats.on_demand), (2, 0));
    assert_eq!(aad.principals().len(), 2);
    m.stop().await;
    aad_stop.cancel();
}
