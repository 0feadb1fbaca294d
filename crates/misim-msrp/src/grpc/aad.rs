//! MSRP's client of the Azure AD admin gRPC API (`misim.aad.v1.AadAdmin`): the edge that turns
//! service-principal calls into pb requests and AAD's answers into plain Rust values.
//!
//! The channel connects lazily (start order does not matter); calls that find AAD unreachable are
//! retried a few times with backoff before failing with [`MsrpError::AadUnavailable`].

use std::future::Future;
use std::time::Duration;

use misim_core::telemetry::propagation::grpc_request as traced;
use misim_proto::aad::aad_admin_client::AadAdminClient;
use misim_proto::aad::{
    AddKeyCredentialRequest, CreateServicePrincipalRequest, DeleteServicePrincipalRequest,
    ListServicePrincipalsRequest, RemoveKeyCredentialRequest, ServicePrincipal,
};
use tonic::transport::Channel;
use tracing::warn;

use crate::error::{MsrpError, Result};
use crate::principal::{FederatedCredential, NewPrincipal, Principal};

/// Attempts per call while AAD is unreachable, and the first backoff (doubled each time).
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

impl From<ServicePrincipal> for Principal {
    fn from(sp: ServicePrincipal) -> Self {
        Principal {
            key_credentials: sp
                .key_credentials
                .into_iter()
                .map(|k| {
                    let thumbprint = if k.thumbprint_sha1_hex.is_empty() {
                        misim_core::cert::sha1_thumbprint_hex(&k.certificate_der)
                    } else {
                        k.thumbprint_sha1_hex
                    };
                    (k.key_id, thumbprint)
                })
                .collect(),
            object_id: sp.object_id,
            app_id: sp.app_id,
            msi_resource_id: sp.msi_resource_id,
        }
    }
}

/// Azure AD admin client on a lazily connected channel.
#[derive(Clone)]
pub struct AadClient {
    client: AadAdminClient<Channel>,
    endpoint: String,
}

impl AadClient {
    /// A client for `endpoint` (e.g. `http://127.0.0.1:7703`), over mutual TLS with `control`'s
    /// certificate when given; does not connect until the first call.
    ///
    /// # Errors
    /// [`MsrpError::InvalidArgument`] when `endpoint` is not a valid URI.
    pub fn new(endpoint: &str, control: Option<&misim_core::control::ControlTls>) -> Result<Self> {
        let channel = misim_core::control::peer_endpoint(control, endpoint)
            .map_err(|e| MsrpError::InvalidArgument(format!("azure ad endpoint: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(15))
            .connect_lazy();
        Ok(AadClient {
            client: AadAdminClient::new(channel),
            endpoint: endpoint.to_string(),
        })
    }

    /// Creates (or, idempotently on tenant + resource ID, returns) the identity's service principal.
    ///
    /// # Errors
    /// [`MsrpError::AadUnavailable`] after retries, [`MsrpError::AadRejected`] when AAD refuses.
    pub async fn create_service_principal(&self, p: NewPrincipal<'_>) -> Result<Principal> {
        let req = CreateServicePrincipalRequest {
            tenant_id: p.tenant_id.to_string(),
            display_name: p.display_name.to_string(),
            msi_resource_id: p.msi_resource_id.to_string(),
            is_explicit: p.is_explicit,
            certificate_der: p.certificate_der.to_vec(),
        };
        let sp = self
            .call("CreateServicePrincipal", |mut c| {
                let req = req.clone();
                async move { c.create_service_principal(traced(req)).await }
            })
            .await?;
        Ok(sp.into())
    }

    /// Registers `certificate_der` as an additional key credential (renewal).
    ///
    /// # Errors
    /// As [`AadClient::create_service_principal`].
    pub async fn add_key_credential(
        &self,
        tenant_id: &str,
        object_id: &str,
        certificate_der: &[u8],
    ) -> Result<Principal> {
        let req = AddKeyCredentialRequest {
            tenant_id: tenant_id.to_string(),
            object_id: object_id.to_string(),
            certificate_der: certificate_der.to_vec(),
        };
        let sp = self
            .call("AddKeyCredential", |mut c| {
                let req = req.clone();
                async move { c.add_key_credential(traced(req)).await }
            })
            .await?;
        Ok(sp.into())
    }

    /// Removes key credential `key_id`; an absent principal or key counts as removed.
    ///
    /// # Errors
    /// As [`AadClient::create_service_principal`], except NotFound which is success.
    pub async fn remove_key_credential(
        &self,
        tenant_id: &str,
        object_id: &str,
        key_id: &str,
    ) -> Result<()> {
        let req = RemoveKeyCredentialRequest {
            tenant_id: tenant_id.to_string(),
            object_id: object_id.to_string(),
            key_id: key_id.to_string(),
        };
        let res = self
            .call("RemoveKeyCredential", |mut c| {
                let req = req.clone();
                async move { c.remove_key_credential(traced(req)).await }
            })
            .await;
        absent_is_ok(res.map(|_| ()))
    }

    /// Deletes the service principal `object_id`; absent counts as deleted.
    ///
    /// # Errors
    /// As [`AadClient::create_service_principal`], except NotFound which is success.
    pub async fn delete_service_principal(&self, tenant_id: &str, object_id: &str) -> Result<()> {
        let req = DeleteServicePrincipalRequest {
            tenant_id: tenant_id.to_string(),
            object_id: object_id.to_string(),
        };
        let res = self
            .call("DeleteServicePrincipal", |mut c| {
                let req = req.clone();
                async move { c.delete_service_principal(traced(req)).await }
            })
            .await;
        absent_is_ok(res.map(|_| ()))
    }

    /// The service principals of `tenant_id` that belong to `msi_resource_id` (compared ignoring case);
    /// empty when the tenant does not exist.
    ///
    /// # Errors
    /// As [`AadClient::create_service_principal`].
    pub async fn principals_of(
        &self,
        tenant_id: &str,
        msi_resource_id: &str,
    ) -> Result<Vec<Principal>> {
        let req = ListServicePrincipalsRequest {
            tenant_id: tenant_id.to_string(),
        };
        let res = self
            .call("ListServicePrincipals", |mut c| {
                let req = req.clone();
                async move { c.list_service_principals(traced(req)).await }
            })
            .await;
        match res {
            Ok(list) => Ok(list
                .service_principals
                .into_iter()
                .filter(|sp| sp.msi_resource_id.eq_ignore_ascii_case(msi_resource_id))
                .map(Principal::from)
                .collect()),
            Err(MsrpError::AadRejected {
                code: tonic::Code::NotFound,
                ..
            }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Runs `f` on a clone of the client, retrying with backoff while AAD is unreachable.
    async fn call<T, F, Fut>(&self, operation: &'static str, f: F) -> Result<T>
    where
        F: Fn(AadAdminClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match f(self.client.clone()).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(s) if s.code() == tonic::Code::Unavailable && attempt < ATTEMPTS => {
                    warn!(operation, attempt, error = %s.message(), "azure ad unavailable, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    return Err(MsrpError::AadUnavailable {
                        endpoint: self.endpoint.clone(),
                        message: s.message().to_string(),
                    })
                }
                Err(s) => {
                    return Err(MsrpError::AadRejected {
                        operation,
                        code: s.code(),
                        message: s.message().to_string(),
                    })
                }
            }
        }
    }
}

impl AadClient {
    /// Replaces the federated identity credentials of principal `object_id` (workload identity
    /// federation, [`crate::federation`]).
    ///
    /// # Errors
    /// As [`AadClient::create_service_principal`].
    pub async fn set_federated_credentials(
        &self,
        tenant_id: &str,
        object_id: &str,
        credentials: Vec<FederatedCredential>,
    ) -> Result<()> {
        use misim_proto::aad::{
            FederatedIdentityCredential, SetFederatedIdentityCredentialsRequest,
        };
        let req = SetFederatedIdentityCredentialsRequest {
            tenant_id: tenant_id.to_string(),
            object_id: object_id.to_string(),
            credentials: credentials
                .into_iter()
                .map(|c| FederatedIdentityCredential {
                    name: c.name,
                    issuer: c.issuer,
                    subject: c.subject,
                    audiences: c.audiences,
                })
                .collect(),
        };
        self.call("SetFederatedIdentityCredentials", |mut c| {
            let req = req.clone();
            async move { c.set_federated_identity_credentials(traced(req)).await }
        })
        .await?;
        Ok(())
    }
}

fn absent_is_ok(res: Result<()>) -> Result<()> {
    match res {
        Err(MsrpError::AadRejected {
            code: tonic::Code::NotFound,
            ..
        }) => Ok(()),
        other => other,
    }
}
