//! ARM's one error enum, mapped once to `tonic::Status` and once to ARM's HTTP error body.
//!
//! The HTTP shape is ARM's `{"error":{"code","message"}}` with the real status codes
//! (<https://learn.microsoft.com/azure/azure-resource-manager/troubleshooting/common-deployment-errors>);
//! the gRPC codes follow the same classes (404 → NotFound, 409 → AlreadyExists, 401 →
//! Unauthenticated, 403 → PermissionDenied, 503 → Unavailable).

use axum::http::StatusCode;

/// Result alias for ARM.
pub type Result<T, E = ArmError> = std::result::Result<T, E>;

/// Everything that can go wrong in ARM, each with ARM's error code.
#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    /// The subscription does not exist (ARM `SubscriptionNotFound`, 404).
    #[error("The subscription '{0}' could not be found.")]
    SubscriptionNotFound(String),
    /// The resource group does not exist (ARM `ResourceGroupNotFound`, 404).
    #[error("Resource group '{0}' could not be found.")]
    ResourceGroupNotFound(String),
    /// A resource does not exist (ARM `ResourceNotFound`, 404).
    #[error(
        "The Resource '{resource_type}/{name}' under resource group '{group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
    )]
    ResourceNotFound {
        /// Full resource type, e.g. `Microsoft.Compute/virtualMachines`.
        resource_type: String,
        /// Resource name.
        name: String,
        /// Resource group name.
        group: String,
    },
    /// The role definition does not exist (ARM `RoleDefinitionDoesNotExist`, 400).
    #[error("The specified role definition with ID '{0}' does not exist.")]
    RoleDefinitionNotFound(String),
    /// A request parameter is invalid (ARM `InvalidParameter`, 400).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request conflicts with an existing resource (ARM `InvalidResourceLocation`/`Conflict`, 409).
    #[error("{message}")]
    Conflict {
        /// ARM error code.
        code: &'static str,
        /// Human-readable message.
        message: String,
    },
    /// The desired state is recorded but a peer (MSRP, a host) could not be reached; the reconciler
    /// retries it.
    #[error("{0}; the change is recorded and will be retried")]
    ReconcilePending(#[source] Box<ArmError>),
    /// A peer (Azure AD, MSRP, a host) or a resource is not available now.
    #[error("{0}")]
    Unavailable(String),
    /// A peer's gRPC call failed (MSRP, Azure AD admin, a host agent); the status is kept.
    #[error("{peer}: {} ({:?})", .status.message(), .status.code())]
    Peer {
        /// `msrp`, `azure ad` or `host NAME`.
        peer: String,
        /// The peer's answer (or the transport's).
        #[source]
        status: Box<tonic::Status>,
    },
    /// A malformed resource id (ARM `InvalidParameter`, 400).
    #[error(transparent)]
    InvalidId(#[from] misim_core::ids::IdError),
    /// REST: the `api-version` query parameter is missing (ARM `MissingApiVersionParameter`, 400).
    #[error("The api-version query parameter (?api-version=) is required for all requests.")]
    MissingApiVersion,
    /// REST: no usable `Authorization` header (ARM `AuthenticationFailed`, 401).
    #[error("{0}")]
    AuthenticationFailed(String),
    /// REST: the bearer token is invalid (ARM `InvalidAuthenticationToken*`, 401).
    #[error("{message}")]
    InvalidToken {
        /// `InvalidAuthenticationToken`, `InvalidAuthenticationTokenAudience` or `InvalidAuthenticationTokenTenant`.
        code: &'static str,
        /// Human-readable message.
        message: String,
    },
    /// REST: the bearer token has expired (ARM `ExpiredAuthenticationToken`, 401).
    #[error("{0}")]
    ExpiredToken(String),
    /// REST: RBAC denies the action (ARM `AuthorizationFailed`, 403).
    #[error(
        "The client '{principal}' with object id '{principal}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
    )]
    AuthorizationFailed {
        /// The caller's object id (`oid`).
        principal: String,
        /// The ARM action, e.g. `Microsoft.Compute/virtualMachines/read`.
        action: String,
        /// The requested resource ID.
        scope: String,
    },
    /// REST: RBAC allows the write but not `assign/action` on a linked user-assigned identity (ARM
    /// `LinkedAuthorizationFailed`, 403; <https://github.com/Azure/aad-pod-identity/issues/487>).
    #[error(
        "The client '{principal}' with object id '{principal}' has permission to perform action '{action}' on scope '{scope}'; however, it does not have permission to perform action(s) '{linked_action}' on the linked scope(s) '{linked_scopes}' (respectively) or the linked scope(s) are invalid."
    )]
    LinkedAuthorizationFailed {
        /// The caller's object id.
        principal: String,
        /// The permitted action, e.g. `Microsoft.Compute/virtualMachines/write`.
        action: String,
        /// The resource written.
        scope: String,
        /// `Microsoft.ManagedIdentity/userAssignedIdentities/assign/action`.
        linked_action: String,
        /// The identities without permission, comma-separated.
        linked_scopes: String,
    },
    /// A request ARM rejects as a whole (ARM `BadRequest`, 400), e.g. too many identities at once.
    #[error("{0}")]
    BadRequest(String),
    /// A static private IP address another VM or instance holds (ARM `PrivateIPAddressInUse`, 400).
    #[error("The private IP address {0} is already allocated to another network interface. Choose a free address or let ARM assign one.")]
    PrivateIpInUse(String),
    /// No private IP address is free (ARM `SubnetIsFull`, 400).
    #[error(
        "Subnet with address prefix 10.0.0.0/16 does not have enough capacity for 1 IP addresses."
    )]
    SubnetFull,
    /// Key Vault data plane: no or bad bearer token (Key Vault `Unauthorized`, 401).
    #[error("{0}")]
    VaultUnauthorized(String),
    /// Key Vault data plane: RBAC denies the data action (Key Vault `Forbidden`/`ForbiddenByRbac`, 403).
    #[error("{0}")]
    VaultForbidden(String),
    /// Key Vault data plane: no such secret (Key Vault `SecretNotFound`, 404).
    #[error("A secret with (name/id) {0} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")]
    SecretNotFound(String),
    /// REST: the resource does not support the HTTP method (ARM `MethodNotAllowed`, 405).
    #[error("The requested resource does not support http method '{0}'.")]
    MethodNotAllowed(String),
    /// REST: no such route (ARM `NotFound`, 404).
    #[error("The requested path '{0}' was not found.")]
    RouteNotFound(String),
    /// The store failed.
    #[error("internal error: {0}")]
    Store(#[from] misim_core::StoreError),
}

impl ArmError {
    /// ARM's error code string (`error.code` in the HTTP body).
    pub fn code(&self) -> &'static str {
        match self {
            ArmError::SubscriptionNotFound(_) => "SubscriptionNotFound",
            ArmError::ResourceGroupNotFound(_) => "ResourceGroupNotFound",
            ArmError::ResourceNotFound { .. } => "ResourceNotFound",
            ArmError::RoleDefinitionNotFound(_) => "RoleDefinitionDoesNotExist",
            ArmError::InvalidArgument(_) => "InvalidParameter",
            ArmError::Conflict { code, .. } | ArmError::InvalidToken { code, .. } => code,
            ArmError::ReconcilePending(_) | ArmError::Unavailable(_) | ArmError::Peer { .. } => {
                "ServiceUnavailable"
            }
            ArmError::InvalidId(_) => "InvalidParameter",
            ArmError::MissingApiVersion => "MissingApiVersionParameter",
            ArmError::AuthenticationFailed(_) => "AuthenticationFailed",
            ArmError::ExpiredToken(_) => "ExpiredAuthenticationToken",
            ArmError::AuthorizationFailed { .. } => "AuthorizationFailed",
            ArmError::LinkedAuthorizationFailed { .. } => "LinkedAuthorizationFailed",
            ArmError::BadRequest(_) => "BadRequest",
            ArmError::PrivateIpInUse(_) => "PrivateIPAddressInUse",
            ArmError::SubnetFull => "SubnetIsFull",
            ArmError::VaultUnauthorized(_) => "Unauthorized",
            ArmError::VaultForbidden(_) => "Forbidden",
            ArmError::SecretNotFound(_) => "SecretNotFound",
            ArmError::RouteNotFound(_) => "NotFound",
            ArmError::MethodNotAllowed(_) => "MethodNotAllowed",
            ArmError::Store(_) => "InternalServerError",
        }
    }

    /// The HTTP status ARM answers with.
    pub fn http_status(&self) -> StatusCode {
        match self {
            ArmError::SubscriptionNotFound(_)
            | ArmError::ResourceGroupNotFound(_)
            | ArmError::ResourceNotFound { .. }
            | ArmError::SecretNotFound(_)
            | ArmError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ArmError::RoleDefinitionNotFound(_)
            | ArmError::BadRequest(_)
            | ArmError::InvalidArgument(_)
            | ArmError::InvalidId(_)
            | ArmError::PrivateIpInUse(_)
            | ArmError::SubnetFull
            | ArmError::MissingApiVersion => StatusCode::BAD_REQUEST,
            ArmError::Conflict { .. } => StatusCode::CONFLICT,
            ArmError::ReconcilePending(_) | ArmError::Unavailable(_) | ArmError::Peer { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ArmError::AuthenticationFailed(_)
            | ArmError::InvalidToken { .. }
            | ArmError::VaultUnauthorized(_)
            | ArmError::ExpiredToken(_) => StatusCode::UNAUTHORIZED,
            ArmError::AuthorizationFailed { .. }
            | ArmError::LinkedAuthorizationFailed { .. }
            | ArmError::VaultForbidden(_) => StatusCode::FORBIDDEN,
            ArmError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ArmError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// True for the 401 family (the response also carries a `WWW-Authenticate` header).
    pub fn is_authentication(&self) -> bool {
        self.http_status() == StatusCode::UNAUTHORIZED
    }

    /// ARM's JSON error body: `{"error":{"code","message"}}`. Internal errors do not leak causes.
    pub fn body(&self) -> serde_json::Value {
        let message = match self {
            ArmError::Store(_) => "An internal error occurred.".to_string(),
            other => other.to_string(),
        };
        if let ArmError::VaultForbidden(_) = self {
            return serde_json::json!({ "error": {
                "code": self.code(), "message": message,
                "innererror": { "code": "ForbiddenByRbac" }
            } });
        }
        serde_json::json!({ "error": { "code": self.code(), "message": message } })
    }
}

impl From<ArmError> for tonic::Status {
    fn from(e: ArmError) -> Self {
        use tonic::Code;
        let code = match &e {
            ArmError::SubscriptionNotFound(_)
            | ArmError::ResourceGroupNotFound(_)
            | ArmError::ResourceNotFound { .. }
            | ArmError::RoleDefinitionNotFound(_)
            | ArmError::SecretNotFound(_)
            | ArmError::RouteNotFound(_) => Code::NotFound,
            ArmError::InvalidArgument(_)
            | ArmError::InvalidId(_)
            | ArmError::BadRequest(_)
            | ArmError::MethodNotAllowed(_)
            | ArmError::MissingApiVersion => Code::InvalidArgument,
            ArmError::Conflict { .. } | ArmError::PrivateIpInUse(_) => Code::AlreadyExists,
            ArmError::SubnetFull => Code::ResourceExhausted,
            ArmError::ReconcilePending(_) | ArmError::Unavailable(_) | ArmError::Peer { .. } => {
                Code::Unavailable
            }
            ArmError::AuthenticationFailed(_)
            | ArmError::InvalidToken { .. }
            | ArmError::VaultUnauthorized(_)
            | ArmError::ExpiredToken(_) => Code::Unauthenticated,
            ArmError::AuthorizationFailed { .. }
            | ArmError::LinkedAuthorizationFailed { .. }
            | ArmError::VaultForbidden(_) => Code::PermissionDenied,
            ArmError::Store(_) => Code::Internal,
        };
        if let ArmError::Store(cause) = &e {
            tracing::error!(error = %cause, "store failure");
        }
        tonic::Status::new(code, format!("{}: {}", e.code(), e))
    }
}

impl ArmError {
    /// The desired state is recorded but carrying it out failed with `cause` (a peer down, a
    /// resource still being deleted): the reconciler retries ([`ArmError::ReconcilePending`]). A
    /// cause that is already pending is kept as it is.
    pub fn pending(cause: ArmError) -> ArmError {
        match cause {
            pending @ ArmError::ReconcilePending(_) => pending,
            other => ArmError::ReconcilePending(Box::new(other)),
        }
    }
}

/// ARM's 404 `ResourceNotFound` for `id` of `resource_type`.
pub(crate) fn not_found(resource_type: &str, id: &misim_core::ResourceId) -> ArmError {
    ArmError::ResourceNotFound {
        resource_type: resource_type.to_string(),
        name: id.name().to_string(),
        group: id.resource_group_name().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_maps_to_404_and_grpc_not_found_with_arm_message() {
        let e = ArmError::ResourceNotFound {
            resource_type: "Microsoft.Compute/virtualMachines".into(),
            name: "vm1".into(),
            group: "rg1".into(),
        };
        assert_eq!(e.http_status(), StatusCode::NOT_FOUND);
        assert_eq!(e.body()["error"]["code"], "ResourceNotFound");
        assert!(e.body()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("The Resource 'Microsoft.Compute/virtualMachines/vm1' under resource group 'rg1' was not found."));
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::NotFound);
    }

    #[test]
    fn reconcile_pending_is_unavailable_and_says_it_will_be_retried() {
        let s = tonic::Status::from(ArmError::pending(ArmError::Unavailable(
            "msrp unreachable".into(),
        )));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.message().contains("will be retried"));
    }
}
