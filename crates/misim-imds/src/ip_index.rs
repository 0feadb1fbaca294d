//! The host's VMs by private IP address. The shared IMDS and extension listeners (containers: one
//! address for every VM of the host) identify the calling VM by the request's source address, so the
//! lookup runs on every such request: a map lookup, no copy of any VM record. An address belongs to
//! at most one VM of the host, else one VM could obtain another VM's tokens.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tracing::warn;

use crate::error::{ImdsError, Result};
use crate::host::Vm;
use crate::model::VmInfo;

/// VMs by canonical private IP address (IPv4-mapped IPv6 addresses are filed as IPv4).
#[derive(Debug, Default)]
pub(crate) struct IpIndex(RwLock<HashMap<IpAddr, Arc<Vm>>>);

/// The VM's private IP address in canonical form, when it has a usable (specified) one.
pub(crate) fn vm_ip(info: &VmInfo) -> Option<IpAddr> {
    info.private_ip_address
        .trim()
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
        .filter(|ip| !ip.is_unspecified())
}

impl IpIndex {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<IpAddr, Arc<Vm>>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<IpAddr, Arc<Vm>>> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The VM whose private IP address is `ip`.
    pub(crate) fn get(&self, ip: IpAddr) -> Option<Arc<Vm>> {
        self.read().get(&ip.to_canonical()).cloned()
    }

    /// Rejects `info` when its private IP address belongs to another VM (re-placing a VM with its own
    /// address is fine).
    ///
    /// # Errors
    /// [`ImdsError::IpInUse`] naming the address and the VM that has it.
    pub(crate) fn check_free(&self, info: &VmInfo) -> Result<()> {
        let Some(ip) = vm_ip(info) else {
            return Ok(());
        };
        let holder = match self.read().get(&ip) {
            Some(holder) if holder.key != info.resource_id.key() => Arc::clone(holder),
            _ => return Ok(()),
        };
        Err(ImdsError::IpInUse {
            ip: ip.to_string(),
            holder: holder.snapshot().vm.resource_id.to_string(),
        })
    }

    /// Files `vm` under `ip` and drops its entry under `previous` (its address before an update).
    /// When another VM already holds `ip` (only in stores written before addresses were checked) the
    /// first VM keeps it and `vm` is not reachable through the shared listeners (logged).
    pub(crate) fn file(&self, vm: &Arc<Vm>, previous: Option<IpAddr>, ip: Option<IpAddr>) {
        let mut by_ip = self.write();
        if let Some(old) = previous.filter(|old| Some(*old) != ip) {
            if by_ip.get(&old).is_some_and(|v| Arc::ptr_eq(v, vm)) {
                by_ip.remove(&old);
            }
        }
        let Some(ip) = ip else { return };
        match by_ip.get(&ip) {
            Some(holder) if !Arc::ptr_eq(holder, vm) => {
                warn!(vm = %vm.key, holder = %holder.key, %ip, "private ip address already used by another vm, not serving it on shared listeners");
            }
            _ => {
                by_ip.insert(ip, Arc::clone(vm));
            }
        }
    }

    /// Forgets every address of `vm`.
    pub(crate) fn remove(&self, vm: &Arc<Vm>) {
        self.write().retain(|_, v| !Arc::ptr_eq(v, vm));
    }
}
