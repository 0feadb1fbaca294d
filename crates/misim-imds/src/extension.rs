//! The legacy managed-identity VM extension (`Microsoft.ManagedIdentity/ManagedIdentityExtensionFor
//! Windows|Linux`, deprecated in favour of IMDS): its limits and its own token cache (the migration
//! guide, <https://learn.microsoft.com/azure/active-directory/managed-identities-azure-resources/howto-migrate-vm-extension>).
//! Installing, re-running and removing it is in `host/extension.rs`; its endpoint in
//! `http/extension.rs`.

use crate::error::AgentError;
use crate::model::{IdentityKind, IdentityRef};

/// The extension's default `settings.port` (migration guide: "50342 is the default port and
/// can be configured").
pub const DEFAULT_PORT: u16 = 50342;

/// User-assigned identities the extension serves per VM (migration guide: "the VM extension only
/// supports having 32 user-assigned managed identities per VM").
pub const MAX_USER_ASSIGNED: usize = 32;

/// The key the extension's token cache is filed under: its own cache, apart from IMDS's.
pub fn cache_vm(vm_key: &str) -> String {
    format!("{vm_key}#extension")
}

/// Checks the extension's identity limit for an identity set.
///
/// # Errors
/// [`AgentError::ExtensionLimit`] when more than [`MAX_USER_ASSIGNED`] are user-assigned.
pub fn check_extension_limit(identities: &[IdentityRef]) -> Result<(), AgentError> {
    let user = identities
        .iter()
        .filter(|i| i.kind == IdentityKind::UserAssigned)
        .count();
    if user > MAX_USER_ASSIGNED {
        return Err(AgentError::ExtensionLimit(user));
    }
    Ok(())
}
