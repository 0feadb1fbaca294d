//! Admin gRPC API: idempotent tenant and principal creation, key credentials, errors, and restart
//! persistence (tenant, principal and token-signing key survive).

mod common;

use common::*;
use misim_core::Clock;
use misim_proto::aad as pb;

#[tokio::test]
async fn admin_api_is_idempotent_and_manages_key_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let aad = start(dir.path(), Clock::manual(T0)).await;
    let mut admin = aad.admin();
    let (cert1, cert2) = (client_cert(), client_cert());
    let (tenant, sp) = aad.principal(UAMI_ID, &cert1).await;
    assert_eq!(
        admin
            .ensure_default_tenant(pb::EnsureDefaultTenantRequest {})
            .await
            .unwrap()
            .into_inner(),
        tenant
    );
    assert_eq!(
        (tenant.display_name.as_str(), tenant.default_domain.as_str()),
        ("misim default directory", "misim.onmicrosoft.com")
    );
    assert_eq!(sp.service_principal_type, "ManagedIdentity");
    assert_eq!(
        sp.alternative_names,
        vec!["isExplicit=True".to_string(), UAMI_ID.to_string()]
    );
    assert_eq!(sp.key_credentials.len(), 1);
    assert_eq!(
        sp.key_credentials[0].thumbprint_sha1_hex,
        misim_core::cert::sha1_thumbprint_hex(&cert1.cert_der)
    );
    assert_eq!(sp.key_credentials[0].start_date_time, T0 - 3600);

    // Same identity (other casing) with a new certificate: same principal, certificate added once.
    let tid = tenant.tenant_id.clone();
    let again = |cert: &ClientCert| pb::CreateServicePrincipalRequest {
        tenant_id: tid.clone(),
        display_name: "id1".into(),
        msi_resource_id: UAMI_ID.to_lowercase(),
        is_explicit: true,
        certificate_der: cert.cert_der.clone(),
    };
    let sp2 = admin
        .create_service_principal(again(&cert2))
        .await
        .unwrap()
        .into_inner();
    let sp3 = admin
        .create_service_principal(again(&cert2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (sp2.object_id.as_str(), sp2.app_id.as_str()),
        (sp.object_id.as_str(), sp.app_id.as_str())
    );
    assert_eq!(
        (sp2.key_credentials.len(), sp3.key_credentials.len()),
        (2, 2)
    );

    let by_app = pb::GetServicePrincipalRequest {
        tenant_id: tid.clone(),
        object_id: String::new(),
        app_id: sp.app_id.clone(),
    };
    assert_eq!(
        admin
            .get_service_principal(by_app)
            .await
            .unwrap()
            .into_inner(),
        sp3
    );
    let list = admin
        .list_service_principals(pb::ListServicePrincipalsRequest {
            tenant_id: tid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.service_principals, vec![sp3.clone()]);

    let remove = pb::RemoveKeyCredentialRequest {
        tenant_id: tid.clone(),
        object_id: sp.object_id.clone(),
        key_id: sp.key_credentials[0].key_id.clone(),
    };
    let after = admin
        .remove_key_credential(remove.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.key_credentials.len(), 1);
    assert_eq!(
        admin
            .remove_key_credential(remove)
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
    let add = pb::AddKeyCredentialRequest {
        tenant_id: tid.clone(),
        object_id: sp.object_id.clone(),
        certificate_der: cert1.cert_der.clone(),
    };
    assert_eq!(
        admin
            .add_key_credential(add)
            .await
            .unwrap()
            .into_inner()
            .key_credentials
            .len(),
        2
    );

    let delete = pb::DeleteServicePrincipalRequest {
        tenant_id: tid.clone(),
        object_id: sp.object_id.clone(),
    };
    admin
        .delete_service_principal(delete.clone())
        .await
        .unwrap();
    admin.delete_service_principal(delete).await.unwrap();
    let by_oid = pb::GetServicePrincipalRequest {
        tenant_id: tid.clone(),
        object_id: sp.object_id.clone(),
        app_id: String::new(),
    };
    assert_eq!(
        admin
            .get_service_principal(by_oid)
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );

    // Errors: unknown tenant, bad certificate, missing selector.
    let mut bad = again(&cert1);
    bad.tenant_id = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        admin
            .create_service_principal(bad)
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
    let mut bad = again(&cert1);
    bad.certificate_der = b"not a certificate".to_vec();
    let status = admin.create_service_principal(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("certificate"),
        "{}",
        status.message()
    );
    let neither = pb::GetServicePrincipalRequest {
        tenant_id: tid.clone(),
        object_id: String::new(),
        app_id: String::new(),
    };
    assert_eq!(
        admin
            .get_service_principal(neither)
            .await
            .unwrap_err()
            .code(),
        tonic::Code::InvalidArgument
    );
    aad.stop().await;
}

#[tokio::test]
async fn restart_keeps_tenant_principal_and_signing_key() {
    let dir = tempfile::tempdir().unwrap();
    let cert = client_cert();
    let aad = start(dir.path(), Clock::manual(T0)).await;
    let (tenant, sp) = aad.principal(VM_ID, &cert).await;
    let tid = tenant.tenant_id.clone();
    let aud = format!("{}/{tid}/oauth2/token", aad.http_url);
    let a = imds_assertion(&cert, &sp.app_id, &aud, T0);
    let (status, body) = aad
        .post_form(
            &format!("/{tid}/oauth2/token"),
            &v1_form(&sp.app_id, &a, "https://vault.azure.net"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let old_token = body["access_token"].as_str().unwrap().to_string();
    aad.stop().await;

    let aad = start(dir.path(), Clock::manual(T0 + 60)).await;
    let mut admin = aad.admin();
    assert_eq!(
        admin
            .ensure_default_tenant(pb::EnsureDefaultTenantRequest {})
            .await
            .unwrap()
            .into_inner(),
        tenant
    );
    let by_app = pb::GetServicePrincipalRequest {
        tenant_id: tid.clone(),
        object_id: String::new(),
        app_id: sp.app_id.clone(),
    };
    assert_eq!(
        admin
            .get_service_principal(by_app)
            .await
            .unwrap()
            .into_inner(),
        sp
    );
    // The token from before the restart verifies against the restarted server's JWKS.
    let (_, claims) = verify_via_discovery(
        &aad,
        &format!("/{tid}/.well-known/openid-configuration"),
        &old_token,
        "https://vault.azure.net",
    )
    .await;
    assert_eq!(claims["oid"], sp.object_id.as_str());
    // And the principal still authenticates (new server address in the assertion audience).
    let aud = format!("{}/{tid}/oauth2/token", aad.http_url);
    let a = imds_assertion(&cert, &sp.app_id, &aud, T0 + 60);
    let (status, body) = aad
        .post_form(
            &format!("/{tid}/oauth2/token"),
            &v1_form(&sp.app_id, &a, "https://vault.azure.net"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    aad.stop().await;
}

#[tokio::test]
async fn adding_a_certificate_twice_registers_it_once() {
    // MSRP retries a renewal whose answer it lost; Azure AD must not list the certificate twice.
    let dir = tempfile::tempdir().unwrap();
    let aad = start(dir.path(), Clock::manual(T0)).await;
    let (cert0, cert1) = (client_cert(), client_cert());
    let (tenant, sp) = aad.principal(VM_ID, &cert0).await;
    let mut admin = aad.admin();
    let add = pb::AddKeyCredentialRequest {
        tenant_id: tenant.tenant_id.clone(),
        object_id: sp.object_id.clone(),
        certificate_der: cert1.cert_der.clone(),
    };
    let first = admin
        .add_key_credential(add.clone())
        .await
        .unwrap()
        .into_inner();
    let second = admin.add_key_credential(add).await.unwrap().into_inner();
    assert_eq!(first.key_credentials.len(), 2);
    assert_eq!(second.key_credentials, first.key_credentials);
    // Re-adding the first certificate is a no-op too.
    let again = pb::AddKeyCredentialRequest {
        tenant_id: tenant.tenant_id.clone(),
        object_id: sp.object_id.clone(),
        certificate_der: cert0.cert_der.clone(),
    };
    let third = admin.add_key_credential(again).await.unwrap().into_inner();
    assert_eq!(third.key_credentials, first.key_credentials);
    aad.stop().await;
}
