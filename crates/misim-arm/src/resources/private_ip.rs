//! Private IP addresses of VMs and scale-set instances: each address is held by at most one resource
//! at a time. Every claim is made in a store transaction (they run one at a time, with the record
//! of the VM or instance that holds it), so parallel VM creates and scale-set reconciles never hand
//! out the same address; the container stack gives
//! identity tokens out by source IP, so a duplicate would let one VM get another's token.
//!
//! ARM assigns addresses from 10.0.0.0/16 like Azure's dynamic allocation in a subnet (the first
//! four addresses and the last one of each /24 are skipped, as Azure reserves them); a caller may
//! name a static address instead, which Azure rejects with `PrivateIPAddressInUse` when another
//! network interface holds it.

use misim_core::store::Tx;
use misim_core::StoreError;

use crate::error::{ArmError, Result};
use crate::model::{Counter, IpClaim, Vm};
use crate::store::ArmStore;

/// How many addresses ARM assigns on its own: 250 per /24 × 256 /24s in 10.0.0.0/16.
pub const CAPACITY: u64 = 250 * 256;

/// Counter key of the allocation hint (where the next search starts).
const HINT: &str = "private_ip";

/// Address number `n` (0 ≤ n < [`CAPACITY`]) in 10.0.0.0/16: `.4`–`.253` of each /24.
pub fn nth_address(n: u64) -> String {
    format!("10.0.{}.{}", (n / 250) % 256, 4 + n % 250)
}

/// Checks a caller-given private IP: a valid dotted IPv4 address, returned in canonical form.
///
/// # Errors
/// [`ArmError::InvalidArgument`] (ARM `InvalidParameter`, 400) for anything else.
pub fn parse(raw: &str) -> Result<String> {
    raw.trim()
        .parse::<std::net::Ipv4Addr>()
        .map(|ip| ip.to_string())
        .map_err(|_| {
            ArmError::InvalidArgument(format!(
                "The private IP address '{raw}' is not a valid IPv4 address."
            ))
        })
}

impl ArmStore {
    /// Claims `ip` for `owner` (a resource id key) inside transaction `tx`; true when `owner`
    /// holds it now (newly or already), false when another resource does. Every claim is made in a
    /// transaction, and transactions run one at a time, so no address is handed out twice.
    ///
    /// # Errors
    /// Store failures.
    pub(crate) fn claim_ip_in(
        &self,
        tx: &mut Tx,
        ip: &str,
        owner: &str,
    ) -> Result<bool, StoreError> {
        match tx.get(&self.ip_claims, ip)? {
            Some(claim) => Ok(claim.owner == owner),
            None => {
                let claim = IpClaim {
                    owner: owner.to_string(),
                };
                tx.put(&self.ip_claims, ip, &claim)?;
                Ok(true)
            }
        }
    }

    /// Claims the caller-given static address `ip` for `owner` inside `tx`.
    ///
    /// # Errors
    /// [`ArmError::PrivateIpInUse`] (ARM `PrivateIPAddressInUse`, 400) when another VM or instance
    /// holds it; store failures.
    pub(crate) fn claim_static_ip_in(&self, tx: &mut Tx, ip: &str, owner: &str) -> Result<()> {
        if self.claim_ip_in(tx, ip, owner)? {
            Ok(())
        } else {
            Err(ArmError::PrivateIpInUse(ip.to_string()))
        }
    }

    /// Assigns `owner` the next free address in 10.0.0.0/16 inside `tx`, starting after the last
    /// one handed out; addresses freed by deleted VMs are used again only after a full round.
    ///
    /// # Errors
    /// [`ArmError::SubnetFull`] (ARM `SubnetIsFull`, 400) when all [`CAPACITY`] addresses are held;
    /// store failures.
    pub(crate) fn allocate_ip_in(&self, tx: &mut Tx, owner: &str) -> Result<String> {
        let start = tx.get(&self.counters, HINT)?.unwrap_or_default().next;
        for i in 0..CAPACITY {
            let n = (start + i) % CAPACITY;
            let ip = nth_address(n);
            if self.claim_ip_in(tx, &ip, owner)? {
                tx.put(&self.counters, HINT, &Counter { next: n + 1 })?;
                return Ok(ip);
            }
        }
        Err(ArmError::SubnetFull)
    }

    /// Releases `ip` inside `tx` if `owner` holds it (a VM or instance is gone). Only the holder
    /// releases, so this never frees an address another resource holds.
    ///
    /// # Errors
    /// Store failures.
    pub(crate) fn release_ip_in(
        &self,
        tx: &mut Tx,
        ip: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        if !ip.is_empty()
            && tx
                .get(&self.ip_claims, ip)?
                .is_some_and(|c| c.owner == owner)
        {
            tx.remove(&self.ip_claims, ip)?;
        }
        Ok(())
    }

    /// Records claims for VMs and instances stored before claims existed (run at open; a no-op
    /// once every address is claimed).
    ///
    /// # Errors
    /// Store failures.
    pub(crate) fn backfill_ip_claims(&self) -> Result<(), StoreError> {
        let vms = self.vms.values()?.into_iter();
        let all: Vec<Vm> = vms.chain(self.instances.values()?).collect();
        self.transaction(|tx| {
            for vm in all.iter().filter(|vm| !vm.private_ip.is_empty()) {
                self.claim_ip_in(tx, &vm.private_ip, &vm.id.key())?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use misim_core::Store;

    use super::*;

    fn store() -> ArmStore {
        ArmStore::from_store(Store::temporary().unwrap()).unwrap()
    }

    impl ArmStore {
        fn claim_ip(&self, ip: &str, owner: &str) -> Result<bool> {
            self.transaction(|tx| Ok(self.claim_ip_in(tx, ip, owner)?))
        }
        fn claim_static_ip(&self, ip: &str, owner: &str) -> Result<()> {
            self.transaction(|tx| self.claim_static_ip_in(tx, ip, owner))
        }
        fn allocate_ip(&self, owner: &str) -> Result<String> {
            self.transaction(|tx| self.allocate_ip_in(tx, owner))
        }
        fn release_ip(&self, ip: &str, owner: &str) -> Result<()> {
            self.transaction(|tx| Ok(self.release_ip_in(tx, ip, owner)?))
        }
    }

    #[test]
    fn addresses_start_at_dot_4_and_stay_in_range() {
        assert_eq!(nth_address(0), "10.0.0.4");
        assert_eq!(nth_address(1), "10.0.0.5");
        assert_eq!(nth_address(CAPACITY - 1), "10.0.255.253");
        for n in 0..2000 {
            let ip = nth_address(n);
            let last: u32 = ip.rsplit('.').next().unwrap().parse().unwrap();
            assert!((4..=253).contains(&last), "{ip}");
        }
    }

    #[test]
    fn parallel_allocations_get_distinct_addresses() {
        let s = Arc::new(store());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .map(|i| s.allocate_ip(&format!("vm-{t}-{i}")).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<String> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let distinct: HashSet<&String> = all.iter().collect();
        assert_eq!(all.len(), 400);
        assert_eq!(distinct.len(), 400, "an address was handed out twice");
    }

    #[test]
    fn a_static_address_held_by_another_resource_is_rejected_and_skipped() {
        let s = store();
        s.claim_static_ip("10.0.0.4", "vm-a").unwrap();
        s.claim_static_ip("10.0.0.4", "vm-a").unwrap();
        let err = s.claim_static_ip("10.0.0.4", "vm-b").unwrap_err();
        assert_eq!(err.code(), "PrivateIPAddressInUse");
        assert_eq!(s.allocate_ip("vm-c").unwrap(), "10.0.0.5");
    }

    #[test]
    fn released_addresses_are_reused_only_after_a_full_round() {
        let s = store();
        let a = s.allocate_ip("vm-a").unwrap();
        s.release_ip(&a, "vm-other").unwrap();
        assert!(!s.claim_ip(&a, "vm-b").unwrap(), "only the holder releases");
        s.release_ip(&a, "vm-a").unwrap();
        assert_eq!(s.allocate_ip("vm-b").unwrap(), "10.0.0.5");
        s.counters
            .put(HINT, &Counter { next: CAPACITY - 1 })
            .unwrap();
        assert_eq!(s.allocate_ip("vm-c").unwrap(), "10.0.255.253");
        assert_eq!(
            s.allocate_ip("vm-d").unwrap(),
            a,
            "wraps to the freed address"
        );
    }

    #[test]
    fn a_full_subnet_is_an_error_not_a_reused_address() {
        let s = store();
        for n in 0..CAPACITY {
            assert!(s.claim_ip(&nth_address(n), &format!("vm-{n}")).unwrap());
        }
        let err = s.allocate_ip("vm-new").unwrap_err();
        assert_eq!(err.code(), "SubnetIsFull");
        assert_eq!(err.http_status(), axum::http::StatusCode::BAD_REQUEST);
    }
}
