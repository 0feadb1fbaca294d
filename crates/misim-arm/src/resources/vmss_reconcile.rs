//! Reconciling a scale set: instance records follow the capacity (new ids on scale-out, highest ids
//! removed on scale-in), the scale set's one system-assigned identity is created or deleted in MSRP,
//! and every instance's host is configured with the scale set's identities. Each step is
//! idempotent, so a crash or peer outage in the middle converges on the next pass.

use misim_core::ResourceId;
use tracing::info;

use crate::error::{ArmError, Result};
use crate::model::{SyncState, Vm, Vmss};
use crate::resources::vmss::VMSS_TYPE;
use crate::service::Arm;
use crate::service::Record;
use crate::store::{record_fields, Stored};

impl Stored for Vmss {
    const TYPE: &'static str = VMSS_TYPE;
    record_fields!(vmss);
}

impl Record for Vmss {
    async fn apply(arm: &Arm, ss: &mut Self) -> Result<()> {
        arm.apply_vmss(ss).await
    }
    fn forget(arm: &Arm, ss: &Self) -> Result<()> {
        arm.store.vmss.remove(&ss.id.key())?;
        Ok(())
    }
}

impl Arm {
    async fn apply_vmss(&self, ss: &mut Vmss) -> Result<()> {
        let id = ss.id.clone();
        if ss.deleting {
            for inst in self.store.instances_of(&id)? {
                self.remove_instance(inst).await?;
            }
            return self.drop_system_identity(&id, &mut ss.identity).await;
        }
        self.follow_capacity(ss).await?;
        let refs = self.identity_refs(&id, &mut ss.identity).await?;
        // Keep progress (e.g. the system identity MSRP just created) even if a host fails below.
        self.store.vmss.put(&id.key(), ss)?;
        for mut inst in self.store.instances_of(&id)? {
            if inst.deleting {
                self.remove_instance(inst).await?;
                continue;
            }
            if !inst.placed {
                self.place(&mut inst).await?;
                self.store.instances.put(&inst.id.key(), &inst)?;
            }
            self.configure_host(&inst.host, &inst.id, &refs).await?;
            inst.sync = SyncState::Succeeded;
            self.store.instances.put(&inst.id.key(), &inst)?;
        }
        self.finish_system_delete(&id, &mut ss.identity).await
    }

    /// Adds instance records up to the capacity or marks the highest ones for removal.
    async fn follow_capacity(&self, ss: &mut Vmss) -> Result<()> {
        let live: Vec<Vm> = self
            .store
            .instances_of(&ss.id)?
            .into_iter()
            .filter(|i| !i.deleting)
            .collect();
        let want = ss.capacity as usize;
        if live.len() > want {
            self.store.transaction(|tx| {
                for mut inst in live.into_iter().skip(want) {
                    info!(instance = %inst.id, "scale in: removing instance");
                    inst.deleting = true;
                    tx.put(&self.store.instances, &inst.id.key(), &inst)?;
                }
                Ok::<_, ArmError>(())
            })?;
        } else {
            for _ in live.len()..want {
                let mut inst = self.new_instance(ss, ss.next_instance)?;
                ss.next_instance += 1;
                // The instance, its address, its host's count and the scale set's next instance id
                // are stored together.
                self.store.transaction(|tx| {
                    self.store
                        .insert_vm_in(tx, &self.store.instances, &mut inst, None)?;
                    tx.put(&self.store.vmss, &ss.id.key(), ss)?;
                    Ok::<_, ArmError>(())
                })?;
                info!(instance = %inst.id, host = %inst.host, ip = %inst.private_ip, "scale out: new instance");
            }
        }
        self.store.flush().await
    }

    fn new_instance(&self, ss: &Vmss, n: u32) -> Result<Vm> {
        let id = ResourceId::parse(&format!("{}/virtualMachines/{n}", ss.id))?;
        let host = self.spread_host(&ss.id)?;
        let (size, os) = (ss.vm_size.clone(), ss.os_type.clone());
        let mut inst = Vm::new(id, host, ss.location.clone(), size, os, ss.tags.clone());
        inst.scale_set = Some(ss.id.clone());
        Ok(inst)
    }

    /// The host for a new instance: the one with the fewest instances of this scale set, then the
    /// fewest VMs and instances overall (instances spread over hosts, like fault domains).
    fn spread_host(&self, ss: &ResourceId) -> Result<String> {
        let mine = self.store.instances_of(ss)?;
        let names = self.peers.host_names();
        let least = names
            .iter()
            .map(|h| mine.iter().filter(|i| !i.deleting && &i.host == h).count())
            .min()
            .unwrap_or(0);
        let candidates: Vec<String> = names
            .into_iter()
            .filter(|h| mine.iter().filter(|i| !i.deleting && &i.host == h).count() == least)
            .collect();
        self.choose_host_among("", &candidates)
    }

    async fn remove_instance(&self, inst: Vm) -> Result<()> {
        if self.peers.has_host(&inst.host) {
            self.peers.remove_vm(&inst.host, inst.id.as_str()).await?;
        }
        self.store.remove_vm(&self.store.instances, &inst)?;
        info!(instance = %inst.id, host = %inst.host, "removed scale set instance");
        Ok(())
    }
}
