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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

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
    /// Whether any change is in flight: token requests skip the lock while none is (the usual case).
    active: AtomicBool,
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
            changes.retain(|c| c.added || !c.held.identity.same_as(&h.identity));
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
            changes.retain(|c| !c.added || !c.held.identity.same_as(&h.identity));
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
        self.active.store(!vms.is_empty(), Ordering::Release);
    }

    /// The identities IMDS serves for `vm` at `now`, given those configured: `configured` itself
    /// (borrowed, not copied) when nothing is propagating for `vm`.
    pub(crate) fn effective<'a>(
        &self,
        vm: &str,
        configured: &'a [HeldIdentity],
        now: i64,
    ) -> std::borrow::Cow<'a, [HeldIdentity]> {
        if !self.active.load(Ordering::Acquire) {
            return std::borrow::Cow::Borrowed(configured);
        }
        let mut vms = self.lock();
        let Some(changes) = vms.get_mut(vm) else {
            return std::borrow::Cow::Borrowed(configured);
        };
        changes.retain(|c| c.at > now);
        let mut out: Vec<HeldIdentity> = configured
            .iter()
            .filter(|h| {
                !changes
                    .iter()
                    .any(|c| c.added && c.held.identity.same_as(&h.identity))
            })
            .cloned()
            .collect();
        out.extend(changes.iter().filter(|c| !c.added).map(|c| c.held.clone()));
        if changes.is_empty() {
            vms.remove(vm);
            self.active.store(!vms.is_empty(), Ordering::Release);
        }
        std::borrow::Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IdentityKind;
    use misim_core::ResourceId;

    fn held(name: &str) -> HeldIdentity {
        let id =
            ResourceId::user_assigned_identity("00000000-0000-0000-0000-000000000001", "rg", name)
                .unwrap();
        crate::test_support::held(id, IdentityKind::UserAssigned, name)
    }

    fn names(v: &[HeldIdentity]) -> Vec<String> {
        v.iter().map(|h| h.identity.client_id.clone()).collect()
    }

    #[test]
    fn an_addition_is_hidden_and_a_removal_kept_until_the_time() {
        let p = Propagating::default();
        let (a, b) = (held("a"), held("b"));
        // b added (not yet effective) while a is removed (still served).
        p.record(
            "vm",
            std::slice::from_ref(&b),
            std::slice::from_ref(&a),
            110,
        );
        let configured = vec![b.clone()];
        assert_eq!(names(&p.effective("vm", &configured, 109)), ["client-a"]);
        assert_eq!(names(&p.effective("vm", &configured, 110)), ["client-b"]);
        // Settled: nothing left in flight.
        assert!(p.lock().is_empty());
    }

    #[test]
    fn undoing_a_change_in_flight_cancels_it() {
        let p = Propagating::default();
        let a = held("a");
        p.record("vm", std::slice::from_ref(&a), &[], 100);
        // Removed before it took effect: it never was served.
        p.record("vm", &[], std::slice::from_ref(&a), 105);
        assert!(p.effective("vm", &[], 50).is_empty());
        // Removed, then re-added while the removal propagates: served throughout.
        p.record("vm", &[], std::slice::from_ref(&a), 200);
        p.record("vm", std::slice::from_ref(&a), &[], 201);
        assert_eq!(
            names(&p.effective("vm", std::slice::from_ref(&a), 150)),
            ["client-a"]
        );
    }
}
