//! MSRP against a fake Azure AD: creation, idempotency, deletion, credentials, restart, crash recovery,
//! renewal and the key pool.

mod common;

use common::*;
use misim_core::{Clock, ResourceId};
use misim_proto::msrp::{
    CreateIdentityRequest, DeleteIdentityRequest, GetCredentialRequest, GetIdentityRequest,
    IdentityKind, ListIdentitiesRequest,
};
use tokio_util::sync::CancellationToken;

fn uami(name: &str) -> String {
    ResourceId::user_assigned_identity("00000000-0000-0000-0000-000000000001", "rg1", name)
        .unwrap()
        .as_str()
        .to_string()
}

fn vm(name: &str) -> String {
    ResourceId::vm("00000000-0000-0000-0000-000000000001", "rg1", name)
        .unwrap()
        .as_str()
        .to_string()
}

fn create_req(resource_id: &str, kind: IdentityKind) -> CreateIdentityRequest {
    CreateIdentityRequest {
        resource_id: resource_id.to_string(),
        kind: kind as i32,
        tenant_id: TENANT.to_string(),
    }
}

fn cred_req(resource_id: &str) -> GetCredentialRequest {
    GetCredentialRequest {
        resource_id: resource_id.to_string(),
        host: "host-1".into(),
    }
}

#[tokio::test]
async fn create_registers_a_service_principal_with_the_identity_certificate() {
    let aad_stop = CancellationToken::new();
    let (aad_url, aad) = start_fake_aad(aad_stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let mut m = Running::start(&config(dir.path(), &aad_url, &clock)).await;

    let id = uami("uami1");
    let identity = m
        .client
        .create_identity(create_req(&id, IdentityKind::UserAssigned))
        .await
        .unwrap()
        .into_inner();

    let sp = aad.only_principal();
    assert_eq!(identity.resource_id, id);
    assert_eq!(identity.kind, IdentityKind::UserAssigned as i32);
    assert_eq!(identity.tenant_id, TENANT);
    assert_eq!(identity.client_id, sp.app_id);
    assert_eq!(identity.principal_id, sp.object_id);
    assert_eq!(sp.msi_resource_id, id);
    assert_eq!(sp.display_name, "uami1");
    assert!(sp
        .alternative_names
        .contains(&"isExplicit=True".to_string()));
    assert_eq!(sp.key_credentials.len(), 1);
    assert_eq!(
        sp.key_credentials[0].thumbprint_sha1_hex,
        identity.thumbprint_sha1_hex
    );
    assert_eq!(identity.cert_not_before, T0);
    assert_eq!(identity.cert_not_after, T0 + 90 * DAY);
    m.stop().await;
    aad_stop.cancel();
}

#[tokio::test]
async fn create_is_idempotent_on_resource_id() {
    let aad_stop = CancellationToken::new();
    let (aad_url, aad) = start_fake_aad(aad_stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut m = Running::start(&config(dir.path(), &aad_url, &Clock::manual(T0))).await;

    let id = uami("uami1");
    let first = m
        .client
        .create_identity(create_req(&id, IdentityKind::UserAssigned))
        .await
        .unwrap()
        .into_inner();
    // Same identity, different casing of the resource ID.
    let again = create_req(
        &id.to_uppercase()
            .replace("/SUBSCRIPTIONS/", "/subscriptions/"),
        IdentityKind::UserAssigned,
    );
    let second = m.client.create_identity(again).await.unwrap().into_inner();

    assert_eq!(second, first);
    assert_eq!(aad.principals().len(), 1);
    assert_eq!(aad.calls("CreateServicePrincipal"), 1);
    m.stop().await;
    aad_stop.cancel();
}

#[tokio::test]
async fn system_assigned_kind_is_inferred_and_listed_and_other_tenant_conflicts() {
    let aad_stop = CancellationToken::new();
    let (aad_url, aad) = start_fake_aad(aad_stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut m = Running::start(&config(dir.path(), &aad_url, &Clock::manual(T0))).await;

    let id = vm("vm1");
    let identity = m
        .client
        .create_identity(create_req(&id, IdentityKind::Unspecified))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(identity.kind, IdentityKind::SystemAssigned as i32);
    assert!(aad
        .only_principal()
        .alternative_names
        .contains(&"isExplicit=False".to_string()));

    let list = m
        .client
        .list_identities(ListIdentitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.identities, vec![identity]);

    let mut other = create_req(&id, IdentityKind::SystemAssigned);
    other.tenant_id = "11111111-1111-1111-1111-111111111111".into();
    let err = m.client.create_identity(other).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    m.stop().await;
    aad_stop.cancel();
}

#[tokio::test]
async fn delete_removes_the_service_principal_and_the_record_and_is_idempotent() {
    let aad_stop = CancellationToken::new();
    let (aad_url, aad) = start_fake_aad(aad_stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut m = Running::start(&config(dir.path(), &aad_url, &Clock::manual(T0))).await;

    let id = uami("uami1");
    m.client
        .create_identity(create_req(&id, IdentityKind::UserAssigned))
        .await
        .unwrap();
    m.client
        .delete_identity(DeleteIdentityRequest {
            resource_id: id.clone(),
        })
        .await
        .unwrap();

    assert!(aad.principals().is_empty());
    assert_eq!(aad.calls("DeleteServicePrincipal"), 1);
    let err = m
        .client
        .get_identity(GetIdentityRequest {
            resource_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // Absent: success, and AAD is not called again.
    m.client
        .delete_identity(DeleteIdentityRequest {
            resource_id: id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(aad.calls("DeleteServicePrincipal"), 1);
    m.stop().await;
    aad_stop.cancel();
}

#[tokio::test]
async fn get_credential_returns_a_key_matching_the_certificate() {
    let aad_stop = CancellationToken::new();
    let (aad_url, _aad) = start_fake_aad(aad_stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut m = Running::start(&config(dir.path(), &aad_url, &Clock::manual(T0))).await;

    let id = uami("uami1");
    let identity = m
        .client
        .create_identity(create_req(&id, IdentityKind::UserAssigned))
        .await
        .unwrap()
        .into_inner();
    let cred = m
        .client
        .get_credential(cred_req(&id))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(cred.identity.as_ref(), Some(&identity));
    assert_eq!(
        misim_core::cert::sha1_thumbprint_hex(&cred.certificate_der),
        identity.thumbprint_sha1_hex
    );
    // The certificate embeds the key's SubjectPublicKeyInfo verbatim.
    let spki = misim_core::cert::public_key_spki_der(&cred.private_key_pkcs8_der).unwrap();
    assert!(cred
        .certificate_der
        .windows(spki.len())
        .any(|w| w == spki.as_slice()));
    m.stop().await;
    aad_stop.cancel();
}

#[tokio::test]
async fn bad_and_unknown_resource_ids_are_rejected() {
    let aad_stop = CancellationToken::new();
    let (aad_url, _aad) = start_fake_aad(aad_stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut m = Running::start(&config(dir.path(), &aad_url, &Clock::manual(T0))).await;

    let err = m
        .client
        .get_credential(cred_req(&uami("nobody")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = m
        .client
        .get_credential(cred_req("not-a-resource-id"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = m
        .client
        .create_identity(create_req("/subscriptions", IdentityKind::UserAssigned))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let mut no_tenant = create_req(&uami("x"), IdentityKind::UserAssigned);
    no_tenant.tenant_id.clear();
    let err = m.client.create_identity(no_tenant).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    m.stop().await;
    aad_stop.cancel();
}

#[tokio::test]
async fn identity_survives_a_restart_with_the_same_client_id_and_certificate() {
    let aad_stop = CancellationToken::new();
    let (aad_url, aad) = start_fake_aad(aad_stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let id = uami("uami1");

    let (mut client, stop, join) = start_run(config(dir.path(), &aad_url, &clock)).await;
    let before = client
        .create_identity(create_req(&id, IdentityKind::UserAssigned))
        .await
        .unwrap()
        .into_inner();
    let cred_before = client
        .get_credential(cred_req(&id))
        .await
        .unwrap()
        .into_inner();
    drop(client);
    stop.cancel();
    join.await.unwrap();

    let (mut client, stop, join) = start_run(config(dir.path(), &aad_url, &clock)).await;
    let after = client
        .get_identity(GetIdentityRequest {
            resource_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let cred_after = client
        .get_credential(cred_req(&id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after, before);
    assert_eq!(cred_after.certificate_der, cred_before.certificate_der);
    assert_eq!(
        cred_after.private_key_pkcs8_der,
        cred_before.private_key_pkcs8_der
    );
    assert_eq!(aad.calls("CreateServicePrincipal"), 1);
    drop(client);
    stop.cancel();
    join.await.unwrap();
    aad_stop.cancel();
}

#[tokio::test]
async fn crash_after_aad_created_the_principal_reuses_the_pending_certificate() {
    let aad_stop = CancellationToken::new();
    let (aad_url, aad) = start_fake_aad(aad_stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let id = uami("uami1");

    let mut m = Running::start(&config(dir.path(), &aad_url, &clock)).await;
    aad.state.lock().unwrap().fail_next_create_after_commit = true;
    m.client
        .create_identity(create_req(&id, IdentityKind::UserAssigned))
        .await
        .unwrap_err();
    let pending = m
        .client
        .get_identity(GetIdentityRequest {
            resource_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        pending.client_id.is_empty(),
        "pending identity has no client id yet"
    );
    let err = m.client.get_credential(cred_req(&id)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    m.stop().await;

    let mut m = Running::start(&config(dir.path(), &aad_url, &clock)).await;
    let ready = m
        .client
        .create_identity(create_req(&id, IdentityKind::UserAssigned))
        .await
        .unwrap()
        .into_inner();

    let sp = aad.only_principal();
    assert_eq!(ready.thumbprint_sha1_hex, pending.thumbprint_sha1_hex);
    assert_eq!(ready.client_id, sp.app_id);
    assert_eq!(sp.key_credentials.len(), 1);
    assert_eq!(
        sp.key_credentials[0].thumbprint_sha1_hex,
        pending.thumbprint_sha1_hex
    );
    m.client.get_credential(cred_req(&id)).await.unwrap();
    m.stop().await;
    aad_stop.cancel();
}

#[tokio::test]
async fn deleting_a_pending_identity_deletes_its_orphan_principal() {
    let aad_stop = CancellationToken::new();
    let (aad_url, aad) = start_fake_aad(aad_stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut m = Running::start(&config(dir.path(), &aad_url, &Clock::manual(T0))).await;

    let id = uami("uami1");
    aad.state.lock().unwrap().fail_next_create_after_commit = true;
    m.client
        .create_identity(create_req(&id, IdentityKind::UserAssigned))
        .await
        .unwrap_err();
    assert_eq!(aad.principals().len(), 1);
    m.client
        .delete_identity(DeleteIdentityRequest {
            resource_id: id.clone(),
        })
        .await
        .unwrap();

    assert!(aad.principals().is_empty());
    let err = m
        .client
        .get_identity(GetIdentityRequest { resource_id: id })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    m.stop().await;
    aad_stop.cancel();
}

#[tokio::test]
async fn unreachable_aad_is_unavailable_and_a_later_create_completes_with_the_same_certificate() {
    let aad_stop = CancellationToken::new();
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let id = uami("uami1");

    let mut m = Running::start(&config(dir.path(), &closed_port_url().await, &clock)).await;
    let err = m
        .client
        .create_identity(create_req(&id, IdentityKind::UserAssigned))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message().contains("azure ad is unavailable"),
        "{}",
        err.message()
    );
    let pending = m
        .client
        .get_identity(GetIdentityRequest {
            resource_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    m.stop().await;

    let (aad_url, aad) = start_fake_aad(aad_stop.clone()).await;
    let mut m = Running::start(&config(dir.path(), &aad_url, &clock)).await;
    let ready = m
        .client
        .create_identity(create_req(&id, IdentityKind::UserAssigned))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ready.thumbprint_sha1_hex, pending.thumbprint_sha1_hex);
    assert_eq!(ready.principal_id, aad.only_principal().object_id);
    m.stop().await;
    aad_stop.cancel();
}

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
