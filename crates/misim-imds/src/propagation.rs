//! Identity propagation delay: an identity newly assigned to a VM is served by IMDS only once the
//! system's identity delay has passed on the simulated clock, and a removed one is still served
//! until then, as Azure's managed identities take a while to reach (and leave) a VM
//! (<https://learn.microsoft.com/en-us/entra/identity/managed-identities-azure-resources/managed-identity-best-practice-recommendations#limitation-of-using-managed-identities-for-authorization>).
//! Meanwhile IMDS answers as for an identity the VM does not have: 400 `invalid_request`
//! "Identity not found"
//! (<https://learn.microsoft.com/en-us/entra/identity/managed-identities-azure-resources/how-to-use-vm-token#error-handling>).
//! The delay is `misim up --propagation identity=…` ([`misim_core::clock::Propagation`]); changes in
//! flight are kept in memory (a restart makes them effective at once).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::host::same_identity;
use crate::model::HeldIdentity;

#[derive(Debug)]
struct Change {
    held: HeldIdentity,
    added: bool,
    at: i64,
}

/// Identity changes still propagating, per VM key.
#[derive(Debug, Default)]
pub(crate) struct Propagating {
    vms: Mutex<HashMap<String, Vec<Change>>>,
}

impl Propagating {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Change>>> {
        self.vms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `added` and `removed` identities of `vm`, effective at `at`.
    pub(crate) fn record(
        &self,
        vm: &str,
        added: &[HeldIdentity],
        removed: &[HeldIdentity],
        at: i64,
    ) {
        let mut vms = self.lock();
        let changes = vms.entry(vm.to_string()).or_default();
        for h in added {
            // Re-added while its removal propagates: it never stopped being served.
            let before = changes.len();
            changes.retain(|c| c.added || !same_identity(&c.held.identity, &h.identity));
            if changes.len() == before {
                changes.push(Change {
                    held: h.clone(),
                    added: true,
                    at,
                });
            }
        }
        for h in removed {
            // Removed before its addition took effect: it was never served.
            let before = changes.len();
            changes.retain(|c| !c.added || !same_identity(&c.held.identity, &h.identity));
            if changes.len() == before {
                changes.push(Change {
                    held: h.clone(),
                    added: false,
                    at,
                });
            }
        }
        if changes.is_empty() {
            vms.remove(vm);
        }
    }

    /// The identities IMDS serves for `vm` at `now`, given those configured.
    pub(crate) fn effective(
        &self,
        vm: &str,
        configured: &[HeldIdentity],
        now: i64,
    ) -> Vec<HeldIdentity> {
        let mut vms = self.lock();
        let Some(changes) = vms.get_mut(vm) else {
            return configured.to_vec();
        };
        changes.retain(|c| c.at > now);
        let mut out: Vec<HeldIdentity> = configured
            .iter()
            .filter(|h| {
                !changes
                    .iter()
                    .any(|c| c.added && same_identity(&c.held.identity, &h.identity))
            })
            .cloned()
            .collect();
        out.extend(changes.iter().filter(|c| !c.added).map(|c| c.held.clone()));
        if changes.is_empty() {
            vms.remove(vm);
        }
        out
    }
}
