//! Client side of MSRP: fetches an identity's certificate and private key (`Msrp.GetCredential`,
//! the host-agent ↔ MSRP contract of step 3). Retries briefly while MSRP is not reachable yet.

use std::time::Duration;

use misim_proto::msrp::msrp_client::MsrpClient;
use misim_proto::msrp::GetCredentialRequest;
use tonic::transport::Channel;
use tower::retry::{Policy, Retry};
use tower::ServiceExt;

use crate::error::AgentError;
use crate::model::Credential;

/// Attempts per credential fetch while MSRP answers `Unavailable` (not started yet, restarting).
const ATTEMPTS: u32 = 3;

/// Retries a call while MSRP answers `Unavailable`, [`ATTEMPTS`] attempts in all, waiting 200 ms,
/// then 400 ms (tower's retry middleware runs the attempts).
#[derive(Clone, Debug)]
struct WhileUnavailable {
    attempt: u32,
}

impl<Req: Clone, Res> Policy<Req, Res, tonic::Status> for WhileUnavailable {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _request: &mut Req,
        result: &mut Result<Res, tonic::Status>,
    ) -> Option<Self::Future> {
        match result {
            Err(s) if s.code() == tonic::Code::Unavailable && self.attempt < ATTEMPTS => {
                let pause = Duration::from_millis(200 * u64::from(self.attempt));
                self.attempt += 1;
                Some(tokio::time::sleep(pause))
            }
            Ok(_) | Err(_) => None,
        }
    }

    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

/// A lazily connected MSRP client.
#[derive(Clone, Debug)]
pub struct MsrpCredentials {
    client: MsrpClient<Channel>,
}

impl MsrpCredentials {
    /// A client for the MSRP gRPC endpoint `url` (mutual TLS with `control`'s host certificate when
    /// given); connects on first use, so start order does not matter.
    ///
    /// # Errors
    /// [`AgentError::MsrpEndpoint`] when `url` is not a valid endpoint URI.
    pub fn new(
        url: &str,
        control: Option<&misim_core::control::ControlTls>,
    ) -> Result<Self, AgentError> {
        let channel = misim_core::control::peer_endpoint(control, url)
            .map_err(AgentError::MsrpEndpoint)?
            .connect_lazy();
        Ok(MsrpCredentials {
            client: MsrpClient::new(channel),
        })
    }

    /// The current credential of identity `resource_id`, requested on behalf of host `host`, with the
    /// client id MSRP has for it (empty if MSRP did not say).
    ///
    /// # Errors
    /// [`AgentError::Msrp`] when MSRP fails or is unreachable after a few attempts,
    /// [`AgentError::MsrpIncomplete`] when it returns no certificate or key.
    pub async fn get_credential(
        &self,
        resource_id: &str,
        host: &str,
    ) -> Result<(Credential, String), AgentError> {
        let request = GetCredentialRequest {
            resource_id: resource_id.to_string(),
            host: host.to_string(),
        };
        let client = self.client.clone();
        let call = tower::service_fn(move |request: GetCredentialRequest| {
            let mut client = client.clone();
            async move {
                let traced = misim_core::telemetry::propagation::grpc_request(request);
                client.get_credential(traced).await
            }
        });
        let credential = Retry::new(WhileUnavailable { attempt: 1 }, call)
            .oneshot(request)
            .await
            .map_err(|source| AgentError::Msrp {
                resource_id: resource_id.to_string(),
                source,
            })?
            .into_inner();
        if credential.certificate_der.is_empty() || credential.private_key_pkcs8_der.is_empty() {
            return Err(AgentError::MsrpIncomplete(resource_id.to_string()));
        }
        let identity = credential.identity.unwrap_or_default();
        Ok((
            Credential {
                certificate_der: credential.certificate_der,
                private_key_pkcs8_der: credential.private_key_pkcs8_der,
                not_after: identity.cert_not_after,
            },
            identity.client_id,
        ))
    }
}
