//! Client side of MSRP: fetches an identity's certificate and private key (`Msrp.GetCredential`,
//! the host-agent ↔ MSRP contract of step 3). Retries briefly while MSRP is not reachable yet.

use std::time::Duration;

use misim_proto::msrp::msrp_client::MsrpClient;
use misim_proto::msrp::GetCredentialRequest;
use tonic::transport::Channel;

use crate::error::AgentError;
use crate::model::Credential;

/// Attempts per credential fetch while MSRP answers `Unavailable` (not started yet, restarting).
const ATTEMPTS: u32 = 3;

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
        let mut attempt = 1;
        let credential = loop {
            let traced = misim_core::telemetry::propagation::grpc_request(request.clone());
            match self.client.clone().get_credential(traced).await {
                Ok(r) => break r.into_inner(),
                Err(s) if s.code() == tonic::Code::Unavailable && attempt < ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(source) => {
                    return Err(AgentError::Msrp {
                        resource_id: resource_id.to_string(),
                        source,
                    })
                }
            }
        };
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
