//! MSRP's one error type and its one mapping to `tonic::Status` (MSRP has no HTTP surface: ARM and the
//! host agents reach it over gRPC only, so there is no HTTP error body to model).

use misim_core::cert::CertError;
use misim_core::ids::IdError;
use misim_core::StoreError;
use tracing::error;

/// Everything that can go wrong in MSRP.
#[derive(Debug, thiserror::Error)]
pub enum MsrpError {
    /// The resource ID does not follow ARM's resource-ID grammar.
    #[error(transparent)]
    InvalidResourceId(#[from] IdError),
    /// A request field is missing or malformed; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// No identity exists for this resource ID.
    #[error("identity '{0}' not found")]
    NotFound(String),
    /// A host asked for the credential of an identity that no VM placed on it has (ARM grants
    /// access with `SetHostAccess` before configuring the host).
    #[error("host '{host}' may not fetch the credential of identity '{identity}': no VM placed on that host has it")]
    HostNotGranted {
        /// The requesting host.
        host: String,
        /// The identity asked for.
        identity: String,
    },
    /// The identity exists but its service principal is not created yet (a create is in progress or
    /// failed half-way and will be completed by the next create).
    #[error("identity '{0}' is not ready: its service principal is still being created")]
    NotReady(String),
    /// The identity already exists in another tenant.
    #[error("identity '{resource_id}' already exists in tenant '{existing}', not '{requested}'")]
    TenantConflict {
        /// The identity's resource ID.
        resource_id: String,
        /// Tenant the identity was created in.
        existing: String,
        /// Tenant the caller asked for.
        requested: String,
    },
    /// Azure AD's admin API could not be reached (not up yet, or down) after retries.
    #[error("azure ad is unavailable at {endpoint}: {message}")]
    AadUnavailable {
        /// The configured AAD gRPC endpoint.
        endpoint: String,
        /// The transport's message.
        message: String,
    },
    /// Azure AD answered with an error.
    #[error("azure ad rejected {operation}: {message}")]
    AadRejected {
        /// The AAD admin RPC that failed, e.g. `CreateServicePrincipal`.
        operation: &'static str,
        /// AAD's gRPC code.
        code: tonic::Code,
        /// AAD's message.
        message: String,
    },
    /// The sled store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Key or certificate generation failed.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// A background task failed (panicked or was cancelled).
    #[error("internal: {0}")]
    Internal(String),
}

/// MSRP's result type.
pub type Result<T, E = MsrpError> = std::result::Result<T, E>;

impl From<MsrpError> for tonic::Status {
    /// The one mapping of MSRP errors to gRPC codes. Internal failures are logged with their cause; no
    /// message ever contains key material (none of the variants carries any).
    fn from(e: MsrpError) -> Self {
        let msg = e.to_string();
        match &e {
            MsrpError::InvalidResourceId(_) | MsrpError::InvalidArgument(_) => {
                tonic::Status::invalid_argument(msg)
            }
            MsrpError::NotFound(_) | MsrpError::NotReady(_) => tonic::Status::not_found(msg),
            MsrpError::TenantConflict { .. } => tonic::Status::failed_precondition(msg),
            MsrpError::HostNotGranted { .. } => tonic::Status::permission_denied(msg),
            MsrpError::AadUnavailable { .. } => tonic::Status::unavailable(msg),
            MsrpError::AadRejected { code, .. } => match code {
                tonic::Code::InvalidArgument
                | tonic::Code::NotFound
                | tonic::Code::FailedPrecondition => tonic::Status::new(*code, msg),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    tonic::Status::unavailable(msg)
                }
                _ => {
                    error!(error = %msg, "azure ad call failed");
                    tonic::Status::internal(msg)
                }
            },
            MsrpError::Store(_) | MsrpError::Cert(_) | MsrpError::Internal(_) => {
                error!(error = %msg, "internal error");
                tonic::Status::internal(msg)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_grpc_codes() {
        let bad = misim_core::ResourceId::parse("nope").unwrap_err();
        assert_eq!(
            tonic::Status::from(MsrpError::from(bad)).code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            tonic::Status::from(MsrpError::NotFound("x".into())).code(),
            tonic::Code::NotFound
        );
        assert_eq!(
            tonic::Status::from(MsrpError::NotReady("x".into())).code(),
            tonic::Code::NotFound
        );
        let unavailable = MsrpError::AadUnavailable {
            endpoint: "http://127.0.0.1:1".into(),
            message: "refused".into(),
        };
        let status = tonic::Status::from(unavailable);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status
            .message()
            .contains("azure ad is unavailable at http://127.0.0.1:1"));
        let rejected = MsrpError::AadRejected {
            operation: "CreateServicePrincipal",
            code: tonic::Code::NotFound,
            message: "tenant not found".into(),
        };
        assert_eq!(tonic::Status::from(rejected).code(), tonic::Code::NotFound);
        let internal = MsrpError::AadRejected {
            operation: "x",
            code: tonic::Code::Unknown,
            message: "?".into(),
        };
        assert_eq!(tonic::Status::from(internal).code(), tonic::Code::Internal);
    }
}
