//! The legacy managed-identity VM extension on a host (`Microsoft.ManagedIdentity/ManagedIdentityExtensionFor
//! Windows|Linux`, deprecated in favour of IMDS): installing, re-running (new `forceUpdateTag`) and
//! removing it on a VM, and its limits (the migration guide,
//! <https://learn.microsoft.com/azure/active-directory/managed-identities-azure-resources/howto-migrate-vm-extension>).
//!
//! While installed the VM has the extension's token endpoint `GET /oauth2/token` (in local mode on a
//! loopback listener of its own, since two VMs on one loopback cannot both have port 50342) and the
//! extension keeps the identities' credentials on the VM side ([`VmDisk`]).

use std::sync::Arc;

use misim_core::ResourceId;
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::{local_port, Host};
use crate::error::AgentError;

type Result<T> = std::result::Result<T, AgentError>;
use crate::extension::{cache_vm, check_extension_limit, DEFAULT_PORT};
use crate::model::{ExtensionState, IdentityRef, PlacedExtension, PlacedVm, VmRecord};
use crate::vm::{Vm, VmListener};
use crate::vm_disk::VmDisk;

impl Host {
    /// Installs (`installed`), re-runs or removes the extension on VM `id`. `port` 0 means the default
    /// 50342. Installing again with the same port and `force_update_tag` changes nothing; a new tag or
    /// port re-runs it: the settings and credential files are written again, the extension's token
    /// cache is emptied and its listener restarted. Removing deletes the VM-side files.
    ///
    /// # Errors
    /// [`AgentError::VmNotFound`], [`AgentError::ExtensionLimit`] when the VM has more than 32
    /// user-assigned identities, [`AgentError::Bind`], [`AgentError::Internal`] when the VM-side files
    /// cannot be written, [`AgentError::Store`].
    pub async fn set_extension(
        &self,
        id: &ResourceId,
        installed: bool,
        port: u16,
        force_update_tag: String,
    ) -> Result<PlacedVm> {
        let (vm, _ops) = self
            .lock_vm(id)
            .await
            .ok_or_else(|| AgentError::VmNotFound(id.to_string()))?;
        let mut record = VmRecord::clone(&vm.snapshot());
        if !installed {
            if record.extension.take().is_some() {
                self.store.put(&record).await?;
                vm.set(record.clone());
                self.uninstall_extension(&vm).await;
                info!(vm = %id, "vm extension removed");
            }
            return Ok(self.placed(&record));
        }
        let port = if port == 0 { DEFAULT_PORT } else { port };
        let identities: Vec<IdentityRef> = record
            .identities
            .iter()
            .map(|h| h.identity.clone())
            .collect();
        check_extension_limit(&identities)?;
        let previous = record.extension.clone();
        if let Some(p) = &previous {
            if p.port == port && p.force_update_tag == force_update_tag {
                return Ok(self.placed(&record));
            }
        }
        if let Some(h) = Vm::take(&vm.extension) {
            h.close(&vm.key, "extension").await;
        }
        let listen_port = previous.as_ref().map_or(0, |p| p.listen_port);
        let listener = self.bind_or_new(listen_port, id).await?;
        record.extension = Some(ExtensionState {
            port,
            force_update_tag,
            listen_port: local_port(listener.as_ref())?,
        });
        let written = async {
            VmDisk::of(&self.data_dir, &record)
                .write_settings(&record)
                .await?;
            self.store.put(&record).await
        };
        if let Err(e) = written.await {
            if previous.is_some() {
                // Keep the extension serving as it was.
                self.start_extension_listener(&vm, listener);
            }
            return Err(e);
        }
        vm.set(record.clone());
        self.tokens.cache.remove_vm(&cache_vm(&vm.key));
        self.start_extension_listener(&vm, listener);
        let placed = self.placed(&record);
        if let Some(e) = &placed.extension {
            info!(vm = %id, port, endpoint = %e.endpoint, credentials = %e.credential_path, rerun = previous.is_some(), "vm extension installed");
        }
        Ok(placed)
    }

    /// On host start: re-binds a stored VM's extension listener (same port when free) and writes its
    /// VM-side files again.
    ///
    /// # Errors
    /// [`AgentError::Bind`], [`AgentError::Internal`], [`AgentError::Store`].
    pub(crate) async fn reload_extension(&self, vm: &Arc<Vm>) -> Result<()> {
        let mut record = VmRecord::clone(&vm.snapshot());
        let Some(ext) = record.extension.as_mut() else {
            return Ok(());
        };
        let listener = self
            .bind_or_new(ext.listen_port, &record.vm.resource_id)
            .await?;
        let port = local_port(listener.as_ref())?;
        if port != ext.listen_port {
            ext.listen_port = port;
            self.store.put(&record).await?;
            vm.set(record.clone());
        }
        VmDisk::of(&self.data_dir, &record)
            .write_settings(&record)
            .await?;
        self.start_extension_listener(vm, listener);
        Ok(())
    }

    /// Stops the extension's listener, forgets its tokens and deletes the VM-side files.
    pub(crate) async fn uninstall_extension(&self, vm: &Vm) {
        if let Some(h) = Vm::take(&vm.extension) {
            h.close(&vm.key, "extension").await;
        }
        self.tokens.cache.remove_vm(&cache_vm(&vm.key));
        let disk = VmDisk::of(&self.data_dir, &vm.snapshot());
        if let Err(e) = disk.remove().await {
            warn!(vm = %vm.key, error = %e, "cannot remove the vm's extension files");
        }
    }

    /// Writes the VM-side files again after the identity set or a credential changed (no-op when the
    /// extension is not installed).
    ///
    /// # Errors
    /// [`AgentError::Internal`] when the files cannot be written.
    pub(crate) async fn rewrite_extension_files(&self, record: &VmRecord) -> Result<()> {
        if record.extension.is_none() {
            return Ok(());
        }
        VmDisk::of(&self.data_dir, record)
            .write_settings(record)
            .await
    }

    /// The extension as the agent API reports it.
    pub(crate) fn placed_extension(&self, record: &VmRecord) -> Option<PlacedExtension> {
        let ext = record.extension.as_ref()?;
        Some(PlacedExtension {
            endpoint: self.extension_endpoint(ext.listen_port),
            credential_path: VmDisk::of(&self.data_dir, record)
                .settings_dir()
                .display()
                .to_string(),
            port: ext.port,
        })
    }

    fn start_extension_listener(&self, vm: &Arc<Vm>, listener: Option<TcpListener>) {
        let Some(listener) = listener else {
            return;
        };
        let handle = self.serving.serve(vm, VmListener::Extension, listener);
        Vm::put(&vm.extension, handle);
    }
}
