//! MSRP against a fake Azure AD: creation, idempotency, listing, deletion and credentials.

mod common;

use common::*;
use misim_core::Clock;
use misim_proto::msrp::{
    DeleteIdentityRequest, GetIdentityRequest, IdentityKind, ListIdentitiesRequest,
};
use tokio_util::sync::CancellationToken;

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
