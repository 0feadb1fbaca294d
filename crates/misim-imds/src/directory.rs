//! The host's VMs as the serving layer finds them: by store key, by private IP address (shared
//! listeners that identify the caller by source address) and by vmId (the shared loopback listener
//! whose endpoint for each VM is `http://ADDR/vms/{vmId}`). Lookups run on every request: map
//! lookups, no copy of any VM record. An address or vmId belongs to at most one VM of the host,
//! else one VM could obtain another VM's tokens.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tracing::warn;

use crate::error::AgentError;
use crate::model::VmInfo;
use crate::vm::Vm;

/// The VM's private IP address in canonical form, when it has a usable (specified) one.
pub(crate) fn vm_ip(info: &VmInfo) -> Option<IpAddr> {
    info.private_ip_address
        .trim()
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
        .filter(|ip| !ip.is_unspecified())
}

/// The VM's vmId as the shared listener's path names it (lower case), when it has one.
pub(crate) fn vm_path_id(info: &VmInfo) -> Option<String> {
    let id = info.vm_id.trim();
    (!id.is_empty() && !id.contains('/')).then(|| id.to_ascii_lowercase())
}

/// VMs by one unique attribute (IP address, vmId).
#[derive(Debug)]
struct Index<K>(RwLock<HashMap<K, Arc<Vm>>>);

impl<K> Default for Index<K> {
    fn default() -> Self {
        Index(RwLock::new(HashMap::new()))
    }
}

impl<K: Hash + Eq + Clone + Display> Index<K> {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<K, Arc<Vm>>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<K, Arc<Vm>>> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, k: &K) -> Option<Arc<Vm>> {
        self.read().get(k).cloned()
    }

    /// The other VM that has `k`, if any.
    fn holder(&self, k: &K, key: &str) -> Option<Arc<Vm>> {
        self.read().get(k).filter(|v| v.key != key).cloned()
    }

    /// Files `vm` under `k` and drops its entry under `previous`. When another VM already holds
    /// `k` (only in stores written before this was checked) the first VM keeps it (logged).
    fn file(&self, vm: &Arc<Vm>, previous: Option<K>, k: Option<K>, what: &str) {
        let mut map = self.write();
        if let Some(old) = previous.filter(|old| Some(old) != k.as_ref()) {
            if map.get(&old).is_some_and(|v| Arc::ptr_eq(v, vm)) {
                map.remove(&old);
            }
        }
        let Some(k) = k else { return };
        match map.get(&k) {
            Some(holder) if !Arc::ptr_eq(holder, vm) => {
                warn!(vm = %vm.key, holder = %holder.key, %k, "{what} already used by another vm, not serving it on shared listeners");
            }
            _ => {
                map.insert(k, Arc::clone(vm));
            }
        }
    }

    fn remove(&self, vm: &Arc<Vm>) {
        self.write().retain(|_, v| !Arc::ptr_eq(v, vm));
    }
}

/// Why [`VmDirectory::insert`] did not add a VM.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InsertConflict {
    /// A VM is placed under this key already.
    #[error("vm already placed")]
    AlreadyPlaced,
    /// Another VM has the private IP address.
    #[error(transparent)]
    Ip(AgentError),
}

/// The placed VMs and their lookup indexes.
#[derive(Debug, Default)]
pub(crate) struct VmDirectory {
    by_key: RwLock<HashMap<String, Arc<Vm>>>,
    by_ip: Index<IpAddr>,
    by_vm_id: Index<String>,
}

impl VmDirectory {
    fn keys(&self) -> RwLockReadGuard<'_, HashMap<String, Arc<Vm>>> {
        self.by_key.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The VM with store key `key`.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Vm>> {
        self.keys().get(key).cloned()
    }

    /// Every placed VM.
    pub(crate) fn all(&self) -> Vec<Arc<Vm>> {
        self.keys().values().cloned().collect()
    }

    /// The VM whose private IP address is `ip`.
    pub(crate) fn by_ip(&self, ip: IpAddr) -> Option<Arc<Vm>> {
        self.by_ip.get(&ip.to_canonical())
    }

    /// The VM whose vmId is `vm_id` (any case).
    pub(crate) fn by_vm_id(&self, vm_id: &str) -> Option<Arc<Vm>> {
        self.by_vm_id.get(&vm_id.to_ascii_lowercase())
    }

    /// Rejects `info` when its private IP address belongs to another VM (re-placing a VM with its
    /// own address is fine).
    ///
    /// # Errors
    /// [`AgentError::IpInUse`] naming the address and the VM that has it.
    pub(crate) fn check_free(&self, info: &VmInfo) -> Result<(), AgentError> {
        let Some(ip) = vm_ip(info) else {
            return Ok(());
        };
        match self.by_ip.holder(&ip, &info.resource_id.key()) {
            Some(holder) => Err(AgentError::IpInUse {
                ip: ip.to_string(),
                holder: holder.snapshot().vm.resource_id.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Adds `vm`, unless a VM is placed under its key already or another VM has its private IP
    /// address (checked and filed at once, so two concurrent placements cannot share an address).
    pub(crate) fn insert(&self, vm: &Arc<Vm>) -> std::result::Result<(), InsertConflict> {
        let mut keys = self.by_key.write().unwrap_or_else(|p| p.into_inner());
        if keys.contains_key(&vm.key) {
            return Err(InsertConflict::AlreadyPlaced);
        }
        let info = &vm.snapshot().vm;
        self.check_free(info).map_err(InsertConflict::Ip)?;
        keys.insert(vm.key.clone(), Arc::clone(vm));
        self.by_ip.file(vm, None, vm_ip(info), "private ip address");
        self.by_vm_id.file(vm, None, vm_path_id(info), "vm id");
        Ok(())
    }

    /// Re-files `vm` after its metadata changed from `previous`.
    pub(crate) fn update(&self, vm: &Arc<Vm>, previous: &VmInfo) {
        let info = &vm.snapshot().vm;
        let what = "private ip address";
        self.by_ip.file(vm, vm_ip(previous), vm_ip(info), what);
        let previous_id = vm_path_id(previous);
        self.by_vm_id
            .file(vm, previous_id, vm_path_id(info), "vm id");
    }

    /// Removes `vm` (when it is still the one placed under its key).
    pub(crate) fn remove(&self, vm: &Arc<Vm>) {
        let mut keys = self.by_key.write().unwrap_or_else(|p| p.into_inner());
        if keys.get(&vm.key).is_some_and(|v| Arc::ptr_eq(v, vm)) {
            keys.remove(&vm.key);
        }
        drop(keys);
        self.by_ip.remove(vm);
        self.by_vm_id.remove(vm);
    }
}
