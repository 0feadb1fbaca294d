//! The crate's errors, one type per surface: [`AgentError`] for the host agent gRPC API (mapped once
//! to a `Status`) and [`ImdsError`] for the IMDS HTTP endpoints (mapped once to IMDS's error bodies,
//! and to the VM extension's), so every surface answers in the real service's shape. Causes are kept
//! as `#[source]`; every mapping is an exhaustive match. docs/imds.md lists each
//! body with its public source; the item docs below name these by their short titles:
//! - IMDS doc: <https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service>
//! - token how-to: <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>
//! - IMDS REST spec: <https://github.com/Azure/azure-rest-api-specs/blob/ea83a2a3e90ca3f0420e9d0ef55a811523541aba/specification/imds/data-plane/InstanceMetadataService/stable/2023-07-01/imds.json>
//! - MI FAQ: <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/managed-identities-faq>
//! - migration guide: <https://learn.microsoft.com/azure/active-directory/managed-identities-azure-resources/howto-migrate-vm-extension>

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::versions;

/// Result alias for this crate (IMDS HTTP surface by default).
pub type Result<T, E = ImdsError> = std::result::Result<T, E>;

/// An identity's private key cannot be used for signing (not PKCS#8 RSA or P-256).
#[derive(Debug, thiserror::Error)]
#[error("identity key is not a usable pkcs#8 rsa or p-256 key")]
pub struct KeyError(#[source] pub misim_core::cert::CertError);

/// Why Azure AD gave no token (IMDS then answers 500 "Failed to retrieve token from the Active
/// directory", token how-to).
#[derive(Debug, thiserror::Error)]
pub enum AadError {
    /// Azure AD could not be reached.
    #[error("cannot reach {endpoint}")]
    Unreachable {
        /// The token endpoint.
        endpoint: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The answer could not be read or is not the JSON of a token answer.
    #[error("unreadable answer ({status})")]
    Unreadable {
        /// HTTP status of the answer.
        status: u16,
        /// Why it could not be read.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Azure AD refused with an OAuth error other than `invalid_resource`.
    #[error("azure ad answered {status} {error}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// OAuth `error` code.
        error: String,
    },
    /// A success answer without this field.
    #[error("answer without {0}")]
    Missing(&'static str),
    /// A time or lifetime beyond ten years from now (`aad_client::MAX_PLAUSIBLE_SECS`).
    #[error("implausible {field} {value}")]
    Implausible {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// The identity's key cannot sign.
    #[error("cannot use the identity key")]
    Key(#[source] KeyError),
    /// Signing the client assertion failed.
    #[error("cannot sign the client assertion")]
    Sign(#[source] misim_core::cert::CertError),
    /// The signing task died.
    #[error("signing task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// A query string that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Not URL-encoded pairs.
    #[error("malformed query string")]
    Malformed(#[source] serde_urlencoded::de::Error),
    /// A name appears twice.
    #[error("duplicate query parameter '{0}'")]
    Duplicate(String),
}

/// What can go wrong answering an IMDS (or VM extension) HTTP request.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    /// The `Metadata: true` header is missing or wrong (IMDS requires it on every request; IMDS doc,
    /// token how-to).
    #[error("required metadata header not specified")]
    MissingMetadataHeader,
    /// The request carries `X-Forwarded-For` (IMDS rejects proxied requests; IMDS doc).
    #[error("request carries an x-forwarded-for header")]
    ForwardedFor,
    /// A query parameter name appears twice ("requests with duplicate query parameter names will be
    /// rejected"; IMDS doc).
    #[error("duplicate query parameter '{0}'")]
    DuplicateQuery(String),
    /// A required query variable (`api-version`, `resource`) is missing or empty.
    #[error("required query variable '{0}' is missing")]
    MissingQuery(&'static str),
    /// `api-version` is not a known IMDS version (or too old for the identity category).
    #[error("invalid api-version '{0}'")]
    InvalidApiVersion(String),
    /// More than one of `client_id`, `object_id`, `msi_res_id`/`mi_res_id` was given (IMDS REST spec).
    #[error("more than one identity selector given")]
    ConflictingSelectors,
    /// A query variable has a value IMDS does not accept (e.g. `bypass_cache=false`).
    #[error("invalid value for query variable '{0}'")]
    InvalidQueryValue(&'static str),
    /// The VM has no identity matching the request (MI FAQ; token how-to).
    #[error("identity not found")]
    IdentityNotFound,
    /// No selector given and the VM has two or more user-assigned identities and no system one (MI FAQ).
    #[error("multiple user-assigned identities exist and no selector was given")]
    MultipleUserAssigned,
    /// Azure AD answered `invalid_resource` (AADSTS500011); carries AAD's `error_description`.
    #[error("azure ad rejected the resource")]
    InvalidResource(String),
    /// Azure AD could not be reached or answered something other than a token or `invalid_resource`.
    #[error("azure ad token request failed")]
    Aad(#[from] AadError),
    /// Per-VM rate or concurrency limit exceeded (IMDS doc; MI FAQ).
    #[error("throttled")]
    Throttled,
    /// Unknown IMDS path.
    #[error("path not found")]
    NotFound,
    /// An HTTP verb other than GET.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A leaf of the instance metadata was requested without `format=text` (IMDS doc).
    #[error("leaf nodes require format=text")]
    LeafNeedsText,
    /// The request came from an address that is no VM on this host (shared listeners identify the VM
    /// by source address); carries the request URI.
    #[error("unknown source of request {0}")]
    UnknownSource(String),
    /// The query string is not URL-encoded pairs.
    #[error("malformed query string")]
    MalformedQuery(#[source] serde_urlencoded::de::Error),
    /// A shared lock was poisoned by a panic (names the lock).
    #[error("internal: {0} lock poisoned")]
    Poisoned(&'static str),
}

impl From<QueryError> for ImdsError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Malformed(e) => ImdsError::MalformedQuery(e),
            QueryError::Duplicate(name) => ImdsError::DuplicateQuery(name),
        }
    }
}

impl From<versions::ApiVersionError> for ImdsError {
    fn from(e: versions::ApiVersionError) -> Self {
        match e {
            versions::ApiVersionError::Missing => ImdsError::MissingQuery("api-version"),
            versions::ApiVersionError::Invalid(v) => ImdsError::InvalidApiVersion(v),
        }
    }
}

/// What can go wrong in a host agent call (placing VMs, configuring identities, the VM extension)
/// or when the host starts.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The VM extension would serve more user-assigned identities than it supports (32; migration
    /// guide).
    #[error("the managed identity vm extension supports at most 32 user-assigned identities per vm, this vm would have {0}; remove the extension and use imds, which serves up to 1000")]
    ExtensionLimit(usize),
    /// A host agent request is malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The VM is not placed on this host.
    #[error("vm {0} is not placed on this host")]
    VmNotFound(String),
    /// Another VM on this host already has this private IP address (shared listeners identify the
    /// calling VM by source address, so two VMs with one address would get each other's tokens).
    #[error("private ip address {ip} is already used by vm {holder} on this host")]
    IpInUse {
        /// The address.
        ip: String,
        /// Resource ID of the VM that has it.
        holder: String,
    },
    /// MSRP could not hand out a credential.
    #[error("msrp: get credential of {resource_id}")]
    Msrp {
        /// Identity resource ID.
        resource_id: String,
        /// MSRP's answer.
        #[source]
        source: tonic::Status,
    },
    /// MSRP answered a credential without certificate or key.
    #[error("msrp: credential of {0} has no certificate or key")]
    MsrpIncomplete(String),
    /// MSRP's credential belongs to another client id than the one ARM configured.
    #[error("credential of {identity} has client id {got}, expected {expected}")]
    CredentialMismatch {
        /// Identity resource ID.
        identity: String,
        /// Client id ARM configured.
        expected: String,
        /// Client id MSRP returned.
        got: String,
    },
    /// No listener could be bound for a VM's IMDS endpoint.
    #[error("cannot bind imds listener")]
    Bind(#[source] misim_core::serve::ServeError),
    /// A bound listener's address cannot be read.
    #[error("listener address")]
    ListenerAddress(#[source] std::io::Error),
    /// The configured VM port range has no free port left.
    #[error("no free port left in the VM port range {start}-{end} on {ip}: widen it (--vm-ports)")]
    NoFreePort {
        /// First port of the range.
        start: u16,
        /// Last port of the range.
        end: u16,
        /// The address listeners bind to.
        ip: std::net::IpAddr,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] misim_core::StoreError),
    /// MSRP's credential for this identity has an unusable key.
    #[error("credential of {identity} is unusable")]
    Key {
        /// Identity resource ID.
        identity: String,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// The VM extension's files on the VM side could not be written or removed.
    #[error("vm extension files")]
    Disk(#[source] std::io::Error),
    /// A background task (key parsing) died.
    #[error("background task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The MSRP endpoint URL is not usable.
    #[error("msrp endpoint: {0}")]
    MsrpEndpoint(String),
    /// A bug: an invariant of the host does not hold (names it).
    #[error("internal: {0}")]
    Internal(&'static str),
}

/// Which IMDS category answers: the identity category and the instance/other categories use
/// different error shapes (IMDS doc; token how-to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// `/metadata/identity/*`: `{"error","error_description"}`.
    Identity,
    /// `/metadata/instance`, `/metadata/versions`: `{"error":"Bad request. ..."}`.
    Instance,
}

fn identity_body(error: &str, description: &str) -> Value {
    json!({ "error": error, "error_description": description })
}

impl AgentError {
    /// The gRPC status the host agent API answers with.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Status;
        // The message carries the whole cause chain (`what: why: …`).
        let message = || {
            let mut m = self.to_string();
            let mut cause = std::error::Error::source(self);
            while let Some(c) = cause {
                m.push_str(": ");
                m.push_str(&c.to_string());
                cause = c.source();
            }
            m
        };
        match self {
            AgentError::InvalidArgument(m) => Status::invalid_argument(m.clone()),
            AgentError::VmNotFound(_) => Status::not_found(message()),
            AgentError::Msrp { .. } | AgentError::MsrpIncomplete(_) => {
                Status::unavailable(message())
            }
            AgentError::CredentialMismatch { .. }
            | AgentError::ExtensionLimit(_)
            | AgentError::Key { .. } => Status::failed_precondition(message()),
            AgentError::IpInUse { .. } => Status::already_exists(message()),
            AgentError::Bind(_)
            | AgentError::NoFreePort { .. }
            | AgentError::ListenerAddress(_) => Status::resource_exhausted(message()),
            AgentError::Store(_)
            | AgentError::Disk(_)
            | AgentError::Task(_)
            | AgentError::MsrpEndpoint(_)
            | AgentError::Internal(_) => Status::internal(message()),
        }
    }
}

impl From<AgentError> for tonic::Status {
    fn from(e: AgentError) -> Self {
        e.to_status()
    }
}

impl ImdsError {
    /// The HTTP status and JSON body IMDS answers with on `surface` (exact bodies where a public source
    /// quotes them, listed in docs/imds.md; the same shape otherwise).
    pub fn http(&self, surface: Surface) -> (StatusCode, Value) {
        match surface {
            Surface::Identity => self.identity_http(),
            Surface::Instance => self.instance_http(),
        }
    }

    fn identity_http(&self) -> (StatusCode, Value) {
        let bad = |d: &str| (StatusCode::BAD_REQUEST, identity_body("invalid_request", d));
        match self {
            ImdsError::MissingMetadataHeader => bad("Required metadata header not specified"),
            ImdsError::ForwardedFor => bad("Request must not contain the X-Forwarded-For header"),
            ImdsError::DuplicateQuery(n) => bad(&format!("Duplicate query parameter name '{}' in request", echo(n))),
            ImdsError::MissingQuery(n) => bad(&format!("Required query variable '{n}' is missing")),
            ImdsError::InvalidApiVersion(_) => bad("Invalid 'api-version' requested"),
            ImdsError::ConflictingSelectors => {
                bad("Only one of client_id, object_id or msi_res_id can be specified in the token request")
            }
            ImdsError::InvalidQueryValue(n) => bad(&format!("Invalid value for query variable '{n}'")),
            ImdsError::MalformedQuery(_) => bad("Invalid value for query variable 'query'"),
            ImdsError::IdentityNotFound | ImdsError::UnknownSource(_) => bad("Identity not found"),
            ImdsError::MultipleUserAssigned => bad(
                "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request",
            ),
            ImdsError::InvalidResource(d) => (StatusCode::BAD_REQUEST, identity_body("invalid_resource", &echo(d))),
            ImdsError::Aad(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                identity_body("unknown", "Failed to retrieve token from the Active directory"),
            ),
            ImdsError::Throttled => throttled(),
            ImdsError::NotFound => (StatusCode::NOT_FOUND, json!({ "error": "Not Found" })),
            ImdsError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                identity_body("method_not_allowed", "The requested method is not supported"),
            ),
            ImdsError::LeafNeedsText | ImdsError::Poisoned(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                identity_body("server_error", "Internal server error"),
            ),
        }
    }

    fn instance_http(&self) -> (StatusCode, Value) {
        let bad = |d: &str| {
            (
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("Bad request. {d}") }),
            )
        };
        match self {
            ImdsError::MissingMetadataHeader => bad("Required metadata header not specified"),
            ImdsError::ForwardedFor => bad("Request must not contain the X-Forwarded-For header"),
            ImdsError::DuplicateQuery(_) => {
                bad("Requests with duplicate query parameter names are not supported")
            }
            ImdsError::MissingQuery("api-version") => (
                StatusCode::BAD_REQUEST,
                json!({
                    "error": "Bad request. api-version was not specified in the request. For more information refer to aka.ms/azureimds",
                    "newest-versions": versions::newest(3),
                }),
            ),
            ImdsError::InvalidApiVersion(_) => (
                StatusCode::BAD_REQUEST,
                json!({
                    "error": "Bad request. api-version is invalid. For more information refer to aka.ms/azureimds",
                    "newest-versions": versions::newest(3),
                }),
            ),
            ImdsError::MissingQuery(n) => bad(&format!("Required query variable '{n}' is missing")),
            ImdsError::InvalidQueryValue(n) => {
                bad(&format!("Invalid value for query variable '{n}'"))
            }
            ImdsError::MalformedQuery(_) => bad("Invalid value for query variable 'query'"),
            ImdsError::LeafNeedsText => bad("Leaf nodes require format=text"),
            ImdsError::UnknownSource(_) => bad("Request source is not a VM on this host"),
            ImdsError::Throttled => throttled(),
            ImdsError::NotFound => (StatusCode::NOT_FOUND, json!({ "error": "Not found" })),
            ImdsError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({ "error": "Method not allowed" }),
            ),
            ImdsError::ConflictingSelectors
            | ImdsError::IdentityNotFound
            | ImdsError::MultipleUserAssigned
            | ImdsError::InvalidResource(_)
            | ImdsError::Aad(_)
            | ImdsError::Poisoned(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "Internal server error" }),
            ),
        }
    }
}

impl ImdsError {
    /// The HTTP status and JSON body the legacy VM extension's `/oauth2/token` answers with (the token
    /// how-to's extension table): 400 `bad_request_102` for the Metadata header, 401 `unknown_source` for a
    /// wrong URI or source, 500 `unknown` naming the extension's log file (`log_path`) when no token
    /// could be obtained, and the OAuth 2.0 codes of that table with status 400 (RFC 6749 §5.2; the
    /// table leaves their status blank) for malformed requests (`invalid_request`) and for an identity
    /// the VM does not have (`unauthorized_client`).
    pub fn extension_http(&self, log_path: &str) -> (StatusCode, Value) {
        let invalid = || {
            (
                StatusCode::BAD_REQUEST,
                identity_body(
                    "invalid_request",
                    "The request is missing a required parameter, includes an invalid parameter value, includes a parameter more than once, or is otherwise malformed.",
                ),
            )
        };
        match self {
            ImdsError::MissingMetadataHeader => (
                StatusCode::BAD_REQUEST,
                identity_body("bad_request_102", "Required metadata header not specified"),
            ),
            ImdsError::UnknownSource(uri) => (
                StatusCode::UNAUTHORIZED,
                identity_body("unknown_source", &format!("Unknown Source {}", echo(uri))),
            ),
            ImdsError::IdentityNotFound => (
                StatusCode::BAD_REQUEST,
                identity_body(
                    "unauthorized_client",
                    "The client is not authorized to request an access token using this method.",
                ),
            ),
            ImdsError::MissingQuery(_)
            | ImdsError::DuplicateQuery(_)
            | ImdsError::ConflictingSelectors
            | ImdsError::InvalidQueryValue(_)
            | ImdsError::MultipleUserAssigned
            | ImdsError::MalformedQuery(_)
            | ImdsError::MethodNotAllowed => invalid(),
            ImdsError::ForwardedFor
            | ImdsError::InvalidApiVersion(_)
            | ImdsError::InvalidResource(_)
            | ImdsError::Aad(_)
            | ImdsError::Throttled
            | ImdsError::NotFound
            | ImdsError::LeafNeedsText
            | ImdsError::Poisoned(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                identity_body(
                    "unknown",
                    &format!("Failed to retrieve token from the Active directory. For details see logs in {log_path}"),
                ),
            ),
        }
    }
}

fn throttled() -> (StatusCode, Value) {
    (
        StatusCode::TOO_MANY_REQUESTS,
        identity_body(
            "invalid_request",
            "Temporarily throttled, too many requests",
        ),
    )
}

/// Longest piece of caller input echoed in an error body, characters.
const ECHO_MAX_CHARS: usize = 200;

/// Caller input as it may appear in an error body: at most [`ECHO_MAX_CHARS`] characters (then `…`),
/// control characters replaced by U+FFFD (JSON encoding escapes the rest), so a 10 KB resource or
/// raw bytes are not reflected back.
pub(crate) fn echo(input: &str) -> String {
    let mut out: String = input
        .chars()
        .take(ECHO_MAX_CHARS)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    if input.chars().nth(ECHO_MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_errors_have_reference_bodies() {
        let (s, b) = ImdsError::MissingQuery("resource").http(Surface::Identity);
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(
            b,
            json!({"error":"invalid_request","error_description":"Required query variable 'resource' is missing"})
        );
        let (s, b) = ImdsError::Aad(AadError::Missing("access_token")).http(Surface::Identity);
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(b["error"], "unknown");
        let (s, b) = ImdsError::NotFound.http(Surface::Identity);
        assert_eq!(
            (s, b),
            (StatusCode::NOT_FOUND, json!({"error":"Not Found"}))
        );
    }

    #[test]
    fn instance_errors_have_instance_shape() {
        let (s, b) = ImdsError::MissingMetadataHeader.http(Surface::Instance);
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(
            b,
            json!({"error":"Bad request. Required metadata header not specified"})
        );
        let (_, b) = ImdsError::MissingQuery("api-version").http(Surface::Instance);
        assert_eq!(b["newest-versions"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn extension_errors_have_the_extension_table_bodies() {
        let (s, b) = ImdsError::MissingMetadataHeader.extension_http("/log");
        assert_eq!(
            (s, b),
            (
                StatusCode::BAD_REQUEST,
                json!({"error":"bad_request_102","error_description":"Required metadata header not specified"})
            )
        );
        let (s, b) =
            ImdsError::UnknownSource("http://localhost:50342/x".into()).extension_http("/log");
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(
            b["error_description"],
            "Unknown Source http://localhost:50342/x"
        );
        let (s, b) = ImdsError::InvalidResource("AADSTS500011".into()).extension_http("/v/e.log");
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            b,
            json!({"error":"unknown","error_description":"Failed to retrieve token from the Active directory. For details see logs in /v/e.log"})
        );
        assert_eq!(
            ImdsError::IdentityNotFound.extension_http("/l").1["error"],
            "unauthorized_client"
        );
        assert_eq!(
            ImdsError::MissingQuery("resource").extension_http("/l").1["error"],
            "invalid_request"
        );
    }

    #[test]
    fn agent_errors_map_to_grpc_codes() {
        assert_eq!(
            AgentError::ExtensionLimit(33).to_status().code(),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            AgentError::VmNotFound("x".into()).to_status().code(),
            tonic::Code::NotFound
        );
        assert_eq!(
            AgentError::MsrpIncomplete("down".into()).to_status().code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            AgentError::InvalidArgument("x".into()).to_status().code(),
            tonic::Code::InvalidArgument
        );
    }
}
