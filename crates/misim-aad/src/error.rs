//! The crate's one error type, mapped once to `tonic::Status` (admin gRPC) and once to Azure AD's
//! OAuth2 error body (token endpoint, discovery).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Result alias of this crate.
pub type Result<T, E = AadError> = std::result::Result<T, E>;

/// Everything that can go wrong in Azure AD: admin API misuse, token request rejections (one variant
/// per AADSTS code, <https://learn.microsoft.com/entra/identity-platform/reference-error-codes>)
/// and internal failures.
#[derive(Debug, thiserror::Error)]
pub enum AadError {
    /// A request argument is missing or malformed (admin API).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No tenant with this ID or domain (AADSTS90002).
    #[error("tenant '{0}' not found")]
    TenantNotFound(String),
    /// No service principal with this object ID in the tenant (admin API).
    #[error("service principal '{object_id}' not found in tenant '{tenant_id}'")]
    ServicePrincipalNotFound {
        /// The tenant searched.
        tenant_id: String,
        /// The object ID asked for.
        object_id: String,
    },
    /// No key credential with this key ID on the principal (admin API).
    #[error("key credential '{0}' not found")]
    KeyCredentialNotFound(String),
    /// A token-endpoint form parameter is missing (AADSTS900144).
    #[error("missing parameter '{0}'")]
    MissingParameter(&'static str),
    /// `grant_type` is not `client_credentials` (AADSTS70003).
    #[error("unsupported grant type '{0}'")]
    UnsupportedGrantType(String),
    /// v1 request without `resource` (AADSTS50001).
    #[error("resource identifier is not provided")]
    MissingResource,
    /// The requested resource is not known in the tenant (AADSTS500011).
    #[error("resource principal '{resource}' not found in tenant '{tenant}'")]
    UnknownResource {
        /// The resource (audience) asked for.
        resource: String,
        /// The tenant it was looked up in.
        tenant: String,
    },
    /// `resource` sent to the v2 endpoint (AADSTS901002).
    #[error("the 'resource' request parameter is not supported on v2")]
    ResourceOnV2,
    /// The v2 `scope` is not a single `<resource>/.default` (AADSTS70011).
    #[error("invalid scope '{0}'")]
    InvalidScope(String),
    /// Neither `client_assertion` nor `client_secret` was sent (AADSTS7000218).
    #[error("missing client_assertion")]
    MissingAssertion,
    /// A client secret was sent; managed identities have none (AADSTS7000215).
    #[error("invalid client secret")]
    InvalidClientSecret {
        /// The client that sent a secret.
        client_id: String,
    },
    /// No service principal with this client ID in the tenant (AADSTS700016).
    #[error("client '{client_id}' not found in tenant '{tenant}'")]
    UnknownClient {
        /// The client ID sent.
        client_id: String,
        /// The tenant it was looked up in.
        tenant: String,
    },
    /// The assertion is not a well-formed JWT (AADSTS50027).
    #[error("malformed client assertion: {0}")]
    MalformedAssertion(String),
    /// No matching key, an expired key or a bad signature (AADSTS700027).
    #[error("invalid client assertion signature: {reason}")]
    InvalidSignature {
        /// Why the signature was refused.
        reason: String,
        /// Hex SHA-1 thumbprint of the key the client named.
        thumbprint: String,
    },
    /// `iss`/`sub` differ from `client_id` (AADSTS700021).
    #[error("client assertion subject or issuer does not match client_id")]
    AssertionSubjectMismatch,
    /// `aud` is not this tenant's token endpoint (AADSTS700023).
    #[error("client assertion audience '{0}' does not match")]
    AssertionAudienceMismatch(String),
    /// `nbf`/`exp` do not cover now (AADSTS700024); all epoch seconds.
    #[error("client assertion outside its valid time range")]
    AssertionTimeRange {
        /// Azure AD's time.
        now: i64,
        /// The assertion's `nbf`, if any.
        nbf: Option<i64>,
        /// The assertion's `exp`, if any.
        exp: Option<i64>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] misim_core::StoreError),
    /// Anything else that is our fault (key generation, signing, a panicked blocking task).
    #[error("internal: {0}")]
    Internal(String),
    /// A federated assertion (workload identity federation) was refused: its AADSTS code, whether the
    /// status is 401 (else 400), the `error` value and the message ([`crate::federation`]).
    #[error("AADSTS{code}: {message}")]
    Federated {
        /// The AADSTS number.
        code: u32,
        /// 401 when true, else 400.
        unauthorized: bool,
        /// The OAuth2 `error` value.
        error: &'static str,
        /// The AADSTS message.
        message: String,
    },
}

impl From<AadError> for tonic::Status {
    fn from(e: AadError) -> Self {
        use AadError::*;
        match &e {
            InvalidArgument(_) | MissingParameter(_) | InvalidScope(_) | MissingResource
            | ResourceOnV2 => tonic::Status::invalid_argument(e.to_string()),
            TenantNotFound(_)
            | ServicePrincipalNotFound { .. }
            | KeyCredentialNotFound(_)
            | UnknownClient { .. } => tonic::Status::not_found(e.to_string()),
            Store(_) | Internal(_) => {
                tracing::error!(error = %e, "admin request failed");
                tonic::Status::internal("internal error")
            }
            _ => tonic::Status::failed_precondition(e.to_string()),
        }
    }
}

/// The parts of an Azure AD OAuth2 error: HTTP status, `error`, the AADSTS number and its message.
struct AadsTs {
    status: StatusCode,
    error: &'static str,
    code: u32,
    message: String,
}

impl AadError {
    /// Status, `error` and AADSTS code + message as Entra answers
    /// (<https://learn.microsoft.com/entra/identity-platform/reference-error-codes>; statuses as real
    /// responses quoted in public issues show them, listed in docs/sources.md).
    fn aadsts(&self) -> AadsTs {
        use AadError::*;
        let (bad, unauth) = (StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED);
        let (status, error, code) = match self {
            InvalidArgument(_) | ServicePrincipalNotFound { .. } | KeyCredentialNotFound(_) => {
                (bad, "invalid_request", 900144)
            }
            MissingParameter(_) => (bad, "invalid_request", 900144),
            TenantNotFound(_) => (bad, "invalid_request", 90002),
            UnsupportedGrantType(_) => (bad, "unsupported_grant_type", 70003),
            MissingResource => (bad, "invalid_resource", 50001),
            UnknownResource { .. } => (bad, "invalid_resource", 500011),
            ResourceOnV2 => (bad, "invalid_request", 901002),
            InvalidScope(_) => (bad, "invalid_scope", 70011),
            MissingAssertion => (unauth, "invalid_client", 7000218),
            InvalidClientSecret { .. } => (unauth, "invalid_client", 7000215),
            UnknownClient { .. } => (bad, "unauthorized_client", 700016),
            MalformedAssertion(_) => (bad, "invalid_request", 50027),
            InvalidSignature { .. } => (unauth, "invalid_client", 700027),
            AssertionSubjectMismatch => (unauth, "invalid_client", 700021),
            AssertionAudienceMismatch(_) => (unauth, "invalid_client", 700023),
            AssertionTimeRange { .. } => (unauth, "invalid_client", 700024),
            Store(_) | Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", 90015),
            Federated {
                code,
                unauthorized,
                error,
                ..
            } => (if *unauthorized { unauth } else { bad }, *error, *code),
        };
        AadsTs {
            status,
            error,
            code,
            message: self.aadsts_message(),
        }
    }

    /// The AADSTS number of this error (for the refused-requests metric).
    pub(crate) fn aadsts_code(&self) -> u32 {
        self.aadsts().code
    }

    /// The AADSTS message text (after `AADSTSnnnn: `), as Entra words it.
    fn aadsts_message(&self) -> String {
        use AadError::*;
        const NOT_INSTALLED: &str = "This can happen if the application has not been installed by \
            the administrator of the tenant or consented to by any user in the tenant.";
        match self {
            InvalidArgument(_) | ServicePrincipalNotFound { .. } | KeyCredentialNotFound(_) => {
                self.to_string()
            }
            TenantNotFound(t) => format!(
                "Tenant '{t}' not found. Check to make sure you have the correct tenant ID and \
                 are signing into the correct cloud. Check with your subscription administrator, \
                 this may happen if there are no active subscriptions for the tenant."
            ),
            MissingParameter(p) => {
                format!("The request body must contain the following parameter: '{p}'.")
            }
            UnsupportedGrantType(g) => {
                format!("The app requested an unsupported grant type '{g}'.")
            }
            MissingResource => "Resource identifier is not provided.".into(),
            UnknownResource { resource, tenant } => format!(
                "The resource principal named {resource} was not found in the tenant named \
                 {tenant}. {NOT_INSTALLED} You might have sent your authentication request to the \
                 wrong tenant."
            ),
            ResourceOnV2 => "The 'resource' request parameter isn't supported.".into(),
            InvalidScope(s) => format!(
                "The provided value for the input parameter 'scope' isn't valid. The scope {s} \
                 isn't valid."
            ),
            MissingAssertion => "The request body must contain the following parameter: \
                                 'client_assertion' or 'client_secret'."
                .into(),
            InvalidClientSecret { client_id } => format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{client_id}'."
            ),
            UnknownClient { client_id, tenant } => format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{tenant}'. {NOT_INSTALLED} You may have sent your authentication request to the \
                 wrong tenant."
            ),
            MalformedAssertion(_) => "JWT token is invalid or malformed.".into(),
            InvalidSignature { reason, thumbprint } => format!(
                "Client assertion contains an invalid signature. [Reason - {reason}, Thumbprint \
                 of key used by client: '{thumbprint}']"
            ),
            AssertionSubjectMismatch => "Client assertion application identifier doesn't match \
                                         'client_id' parameter."
                .into(),
            AssertionAudienceMismatch(aud) => format!(
                "Client assertion audience claim does not match Realm issuer. Audience: '{aud}'."
            ),
            AssertionTimeRange { now, nbf, exp } => format!(
                "Client assertion is not within its valid time range. Current time: {}, \
                 assertion valid from {}, expiry time of assertion {}.",
                aad_timestamp(*now),
                nbf.map(aad_timestamp).unwrap_or_default(),
                exp.map(aad_timestamp).unwrap_or_default()
            ),
            Store(_) | Internal(_) => "An internal error occurred.".into(),
            Federated { message, .. } => message.clone(),
        }
    }

    /// The HTTP response Entra sends for this error: its status and the JSON body
    /// `{"error","error_description":"AADSTSn: …\r\nTrace ID: …\r\nCorrelation ID: …\r\nTimestamp: …",
    /// "error_codes":[n],"timestamp","trace_id","correlation_id","error_uri"}`
    /// (<https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow>), with
    /// `now` (epoch seconds) as the timestamp.
    pub fn into_http_response(self, now: i64) -> Response {
        if matches!(self, AadError::Store(_) | AadError::Internal(_)) {
            tracing::error!(error = %self, "token request failed");
        }
        let AadsTs {
            status,
            error,
            code,
            message,
        } = self.aadsts();
        let trace_id = uuid::Uuid::new_v4().to_string();
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let timestamp = aad_timestamp(now);
        let body = serde_json::json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {message}\r\nTrace ID: {trace_id}\r\n\
                 Correlation ID: {correlation_id}\r\nTimestamp: {timestamp}"
            ),
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        });
        (status, axum::Json(body)).into_response()
    }
}

/// Entra's timestamp format `YYYY-MM-DD HH:MM:SSZ` for epoch seconds; times beyond the years
/// -9999..=9999 show as the nearest end of that range.
pub fn aad_timestamp(epoch_seconds: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(epoch_seconds).unwrap_or_else(|_| {
        if epoch_seconds > 0 {
            time::PrimitiveDateTime::MAX.assume_utc()
        } else {
            time::PrimitiveDateTime::MIN.assume_utc()
        }
    });
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_has_entra_format() {
        assert_eq!(aad_timestamp(1_700_000_000), "2023-11-14 22:13:20Z");
        assert_eq!(aad_timestamp(i64::MAX), "9999-12-31 23:59:59Z");
        assert!(aad_timestamp(i64::MIN).starts_with("-9999-01-01"));
    }

    #[test]
    fn http_error_carries_code_status_and_description() {
        let e = AadError::UnknownResource {
            resource: "https://x/".into(),
            tenant: "t1".into(),
        };
        let AadsTs {
            status,
            error,
            code,
            message,
        } = e.aadsts();
        assert_eq!(
            (status, error, code),
            (StatusCode::BAD_REQUEST, "invalid_resource", 500011)
        );
        assert!(message.starts_with(
            "The resource principal named https://x/ was not found in the tenant named t1."
        ));
    }

    #[test]
    fn grpc_mapping_uses_not_found_and_invalid_argument() {
        let s: tonic::Status = AadError::TenantNotFound("x".into()).into();
        assert_eq!(s.code(), tonic::Code::NotFound);
        let s: tonic::Status = AadError::InvalidArgument("bad".into()).into();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().contains("bad"));
    }
}
