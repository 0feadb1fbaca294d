//! The legacy managed-identity VM extension (`Microsoft.Compute/virtualMachines/extensions`,
//! publisher `Microsoft.ManagedIdentity`,
//! <https://learn.microsoft.com/azure/active-directory/managed-identities-azure-resources/howto-migrate-vm-extension>):
//! set (install or re-run), delete and list.
//! ARM records the extension on the VM (flushed) and the reconciler asks the VM's host to
//! install/remove it (`HostAgent.SetExtension`), storing the endpoint the host reports.

use tracing::info;

use crate::error::{ArmError, Result};
use crate::model::{SyncState, Vm, VmExtension};
use crate::service::Arm;

/// The only publisher misim knows.
pub const PUBLISHER: &str = "Microsoft.ManagedIdentity";
/// Extension types of that publisher.
pub const TYPES: &[&str] = &[
    "ManagedIdentityExtensionForWindows",
    "ManagedIdentityExtensionForLinux",
];
/// The extension's default port (`settings.port`).
pub const DEFAULT_PORT: u32 = 50342;

/// An extension PUT as a caller sends it.
#[derive(Clone, Debug, Default)]
pub struct SetExtension {
    /// Extension resource name.
    pub name: String,
    /// `publisher`.
    pub publisher: String,
    /// `type`.
    pub extension_type: String,
    /// `typeHandlerVersion`; empty: `1.0`.
    pub type_handler_version: String,
    /// `settings` as JSON text, e.g. `{"port":50342}`; empty: defaults.
    pub settings_json: String,
    /// `forceUpdateTag`.
    pub force_update_tag: String,
}

fn not_in_repository(r: &SetExtension) -> ArmError {
    ArmError::InvalidArgument(format!(
        "Extension with publisher '{}', type '{}', and type handler version '{}' could not be found in the extension repository. misim supports publisher '{PUBLISHER}' with types {} and version 1.0.",
        r.publisher, r.extension_type, r.type_handler_version, TYPES.join(", ")
    ))
}

/// Validates a request and builds the extension record (not yet applied).
///
/// # Errors
/// [`ArmError::InvalidArgument`] for another publisher/type/version, a type for the other OS, or
/// bad settings.
pub fn validate(r: &SetExtension, os_type: &str) -> Result<VmExtension> {
    let mut r = r.clone();
    if r.type_handler_version.is_empty() {
        r.type_handler_version = "1.0".into();
    }
    let Some(kind) = TYPES
        .iter()
        .find(|t| t.eq_ignore_ascii_case(&r.extension_type))
    else {
        return Err(not_in_repository(&r));
    };
    if !r.publisher.eq_ignore_ascii_case(PUBLISHER) || !r.type_handler_version.starts_with('1') {
        return Err(not_in_repository(&r));
    }
    if !kind
        .to_ascii_lowercase()
        .ends_with(&os_type.to_ascii_lowercase())
    {
        return Err(ArmError::InvalidArgument(format!(
            "The extension type '{kind}' cannot be installed on a {os_type} virtual machine."
        )));
    }
    let port = if r.settings_json.trim().is_empty() {
        DEFAULT_PORT
    } else {
        let v: serde_json::Value = serde_json::from_str(&r.settings_json).map_err(|e| {
            ArmError::InvalidArgument(format!("The extension settings are not valid JSON: {e}"))
        })?;
        match v.get("port") {
            None | Some(serde_json::Value::Null) => DEFAULT_PORT,
            Some(p) => p
                .as_u64()
                .filter(|p| (1..=65535).contains(p))
                .map(|p| p as u32)
                .ok_or_else(|| {
                    ArmError::InvalidArgument(format!(
                        "The extension setting 'port' must be a port number (1-65535), got {p}."
                    ))
                })?,
        }
    };
    crate::service::validate_name("extension", &r.name)?;
    Ok(VmExtension {
        name: r.name.clone(),
        publisher: PUBLISHER.into(),
        extension_type: kind.to_string(),
        type_handler_version: r.type_handler_version,
        port,
        force_update_tag: r.force_update_tag,
        applied: false,
    })
}

impl Arm {
    /// Sets (installs, updates or re-runs with a new `forceUpdateTag`) the managed-identity extension
    /// of a VM. Setting it again with the same settings and tag changes nothing (idempotent PUT).
    ///
    /// # Errors
    /// [`validate`]'s errors, VM lookups, [`ArmError::InvalidArgument`] when the host rejects it,
    /// [`ArmError::ReconcilePending`] when the host is unreachable (recorded and retried).
    pub async fn set_vm_extension(
        &self,
        subscription_id: &str,
        group: &str,
        vm_name: &str,
        req: SetExtension,
    ) -> Result<(Vm, VmExtension)> {
        let id = self.vm_id(subscription_id, group, vm_name)?;
        let guard = self.locks.lock(&id.key()).await;
        let mut vm = self.live::<Vm>(&id)?;
        let ext = validate(&req, &vm.os_type)?;
        let key = ext.name.to_ascii_lowercase();
        if let Some(other) = vm.extensions.keys().find(|k| **k != key) {
            return Err(ArmError::InvalidArgument(format!(
                "The virtual machine already has the managed identity extension '{other}'; delete it first."
            )));
        }
        let unchanged = vm.extensions.get(&key).is_some_and(|e| {
            e.applied
                && e.port == ext.port
                && e.force_update_tag == ext.force_update_tag
                && e.extension_type == ext.extension_type
        });
        if !unchanged {
            info!(vm = %id, extension = %ext.name, port = ext.port, "set vm extension");
            vm.extensions.insert(key.clone(), ext);
            vm.sync = SyncState::Pending;
            self.store.vms.put(&id.key(), &vm)?;
            self.store.flush().await?;
            let result = self.reconcile_locked::<Vm>(&id).await;
            if let Err(e @ ArmError::InvalidArgument(_)) = result {
                // The host refused: forget the extension so the VM does not retry forever.
                let mut vm = self.live::<Vm>(&id)?;
                vm.extensions.remove(&key);
                vm.sync = SyncState::Pending;
                self.store.vms.put(&id.key(), &vm)?;
                self.store.flush().await?;
                let _ = self.reconcile_locked::<Vm>(&id).await;
                return Err(e);
            }
            result.map_err(ArmError::pending)?;
        }
        drop(guard);
        let vm = self.get_vm(subscription_id, group, vm_name).await?;
        let ext = vm.extensions.get(&key).cloned().ok_or_else(|| {
            ArmError::Unavailable("the extension disappeared while being set".into())
        })?;
        Ok((vm, ext))
    }

    /// Deletes a VM extension (the host removes it); deleting an absent one succeeds.
    ///
    /// # Errors
    /// VM lookups, [`ArmError::ReconcilePending`] when the host is unreachable.
    pub async fn delete_vm_extension(
        &self,
        subscription_id: &str,
        group: &str,
        vm_name: &str,
        name: &str,
    ) -> Result<()> {
        let id = self.vm_id(subscription_id, group, vm_name)?;
        let _guard = self.locks.lock(&id.key()).await;
        let mut vm = self.live::<Vm>(&id)?;
        if vm.extensions.remove(&name.to_ascii_lowercase()).is_none() {
            return Ok(());
        }
        info!(vm = %id, extension = name, "delete vm extension");
        vm.sync = SyncState::Pending;
        self.store.vms.put(&id.key(), &vm)?;
        self.store.flush().await?;
        self.reconcile_locked::<Vm>(&id)
            .await
            .map_err(ArmError::pending)
    }

    /// The VM's extensions.
    ///
    /// # Errors
    /// VM lookups.
    pub fn list_vm_extensions(
        &self,
        subscription_id: &str,
        group: &str,
        vm_name: &str,
    ) -> Result<Vec<VmExtension>> {
        let id = self.vm_id(subscription_id, group, vm_name)?;
        Ok(self.live::<Vm>(&id)?.extensions.into_values().collect())
    }

    /// Reconcile step: installs unapplied extensions, or removes the extension from the host when
    /// the VM has none but the host still reports an endpoint.
    pub(crate) async fn apply_extensions(&self, vm: &mut Vm) -> Result<()> {
        let id = vm.id.to_string();
        if vm.extensions.is_empty() {
            if !vm.extension_endpoint.is_empty() {
                self.peers
                    .set_extension(&vm.host, &id, false, 0, "")
                    .await?;
                vm.extension_endpoint.clear();
                vm.extension_credential_path.clear();
                info!(vm = %id, "removed vm extension from host");
            }
            return Ok(());
        }
        for ext in vm.extensions.values_mut() {
            if ext.applied {
                continue;
            }
            let live = self
                .peers
                .set_extension(&vm.host, &id, true, ext.port, &ext.force_update_tag)
                .await?;
            ext.applied = true;
            vm.extension_endpoint = live.extension_endpoint;
            vm.extension_credential_path = live.extension_credential_path;
            info!(vm = %id, extension = %ext.name, endpoint = %vm.extension_endpoint, "installed vm extension on host");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(publisher: &str, t: &str, settings: &str) -> SetExtension {
        SetExtension {
            name: "ManagedIdentityExtensionForLinux".into(),
            publisher: publisher.into(),
            extension_type: t.into(),
            type_handler_version: "1.0".into(),
            settings_json: settings.into(),
            force_update_tag: String::new(),
        }
    }

    #[test]
    fn accepts_the_managed_identity_extension_with_its_port() {
        let e = validate(
            &req(
                PUBLISHER,
                "ManagedIdentityExtensionForLinux",
                r#"{"port":50343}"#,
            ),
            "Linux",
        )
        .unwrap();
        assert_eq!(e.port, 50343);
        let d = validate(
            &req(PUBLISHER, "ManagedIdentityExtensionForLinux", ""),
            "Linux",
        )
        .unwrap();
        assert_eq!(d.port, DEFAULT_PORT);
    }

    #[test]
    fn rejects_other_publishers_types_os_and_ports() {
        let e = validate(
            &req("Microsoft.Azure.Extensions", "CustomScript", ""),
            "Linux",
        )
        .unwrap_err();
        assert!(e
            .to_string()
            .contains("could not be found in the extension repository"));
        assert!(validate(
            &req(PUBLISHER, "ManagedIdentityExtensionForWindows", ""),
            "Linux"
        )
        .is_err());
        assert!(validate(
            &req(
                PUBLISHER,
                "ManagedIdentityExtensionForLinux",
                r#"{"port":70000}"#
            ),
            "Linux"
        )
        .is_err());
    }
}
