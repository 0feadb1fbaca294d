//! MSRP state across restarts, crashes half-way through a create, and an unreachable Azure AD.

mod common;

use common::*;
use misim_core::Clock;
use misim_proto::msrp::{DeleteIdentityRequest, GetIdentityRequest, IdentityKind};
use tokio_util::sync::CancellationToken;

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

/// Found by the crash soak (docs/reliability.md): MSRP killed between Azure AD's deletion of the
/// principal and the removal of its record, then the identity assigned again. The record must not be
/// handed back as Ready with the deleted principal (its VMs would never get a token).
#[tokio::test]
async fn a_delete_interrupted_after_azure_ad_acted_does_not_leave_a_ready_identity_without_principal(
) {
    let aad_stop = CancellationToken::new();
    let (aad_url, aad) = start_fake_aad(aad_stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut m = Running::start(&config(dir.path(), &aad_url, &Clock::manual(T0))).await;

    let id = uami("uami1");
    m.client
        .create_identity(create_req(&id, IdentityKind::UserAssigned))
        .await
        .unwrap();
    aad.state.lock().unwrap().fail_deletes_after_commit = true;
    m.client
        .delete_identity(DeleteIdentityRequest {
            resource_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert!(aad.principals().is_empty());
    aad.state.lock().unwrap().fail_deletes_after_commit = false;

    let again = m
        .client
        .create_identity(create_req(&id, IdentityKind::UserAssigned))
        .await
        .unwrap()
        .into_inner();
    let principals = aad.principals();
    assert_eq!(principals.len(), 1);
    assert_eq!(principals[0].object_id, again.principal_id);
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
