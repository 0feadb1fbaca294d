//! Reconciling a scale set: instance records follow the capacity (new ids on scale-out, highest ids
//! removed on scale-in), the scale set's one system-assigned identity is created or deleted in MSRP,
//! and every instance's host is configured with the scale set's identities. Each step is
//! idempotent, so a crash or peer outage in the middle converges on the next pass.

use std::collections::BTreeMap;

use misim_core::ResourceId;
use tracing::{info, warn};

use crate::error::Result;
use crate::model::{SyncState, Vm, Vmss};
use crate::service::Arm;

impl Arm {
    /// Reconciles one scale set under its lock.
    ///
    /// # Errors
    /// The first failing step's error; the scale set is marked failed and retried by the loop.
    pub async fn reconcile_vmss(&self, id: &ResourceId) -> Result<()> {
        let _guard = self.locks.lock(&id.key()).await;
        self.reconcile_vmss_locked(id).await
    }

    /// Reconciles a scale set; the caller holds its lock.
    pub(crate) async fn reconcile_vmss_locked(&self, id: &ResourceId) -> Result<()> {
        let Some(mut ss) = self.store.vmss.get(&id.key())? else {
            return Ok(());
        };
        let result = self.apply_vmss(&mut ss).await;
        match &result {
            Ok(()) if ss.deleting => {
                self.store.vmss.remove(&id.key())?;
                info!(vmss = %id, "deleted virtual machine scale set");
            }
            Ok(()) => {
                ss.sync = SyncState::Succeeded;
                self.store.vmss.put(&id.key(), &ss)?;
            }
            Err(e) => {
                warn!(vmss = %id, error = %e, "scale set reconcile failed; will retry");
                ss.sync = SyncState::Failed(e.to_string());
                self.store.vmss.put(&id.key(), &ss)?;
                crate::reconcile::retry_soon();
            }
        }
        self.store.flush().await?;
        result
    }

    async fn apply_vmss(&self, ss: &mut Vmss) -> Result<()> {
        let id = ss.id.clone();
        if ss.deleting {
            for inst in self.store.instances_of(&id)? {
                self.remove_instance(inst).await?;
            }
            self.peers.delete_identity(id.as_str()).await?;
            ss.system_identity = None;
            return Ok(());
        }
        self.follow_capacity(ss).await?;
        let refs = self
            .identity_refs(
                &id,
                ss.system_assigned,
                &mut ss.system_identity,
                &mut ss.user_assigned,
            )
            .await?;
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
            self.peers
                .configure_identities(&inst.host, inst.id.as_str(), &refs)
                .await?;
            inst.sync = SyncState::Succeeded;
            self.store.instances.put(&inst.id.key(), &inst)?;
            info!(step = 3, instance = %inst.id, host = %inst.host, identities = refs.len(), "configured scale set instance identities on host");
        }
        if ss.system_delete_pending && !ss.system_assigned {
            self.peers.delete_identity(id.as_str()).await?;
            ss.system_identity = None;
            ss.system_delete_pending = false;
            info!(identity = %id, "deleted system-assigned identity of scale set");
        }
        Ok(())
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
            for mut inst in live.into_iter().skip(want) {
                info!(instance = %inst.id, "scale in: removing instance");
                inst.deleting = true;
                self.store.instances.put(&inst.id.key(), &inst)?;
            }
        } else {
            for _ in live.len()..want {
                let n = ss.next_instance;
                ss.next_instance += 1;
                self.store.vmss.put(&ss.id.key(), ss)?;
                let inst = self.new_instance(ss, n)?;
                info!(instance = %inst.id, host = %inst.host, "scale out: new instance");
                self.store.instances.put(&inst.id.key(), &inst)?;
            }
        }
        self.store.flush().await
    }

    fn new_instance(&self, ss: &Vmss, n: u32) -> Result<Vm> {
        let id = ResourceId::parse(&format!("{}/virtualMachines/{n}", ss.id))?;
        let host = self.spread_host(&ss.id)?;
        let private_ip = self.store.allocate_ip(&id.key())?;
        let vm_uuid = uuid::Uuid::new_v4();
        Ok(Vm {
            id,
            vm_id: vm_uuid.to_string(),
            location: ss.location.clone(),
            vm_size: ss.vm_size.clone(),
            os_type: ss.os_type.clone(),
            tags: ss.tags.clone(),
            host,
            private_ip,
            mac_address: crate::vms::mac_from_vm_id(&vm_uuid),
            imds_endpoint: String::new(),
            placed: false,
            system_assigned: false,
            user_assigned: BTreeMap::new(),
            system_identity: None,
            system_delete_pending: false,
            deleting: false,
            sync: SyncState::Pending,
            scale_set: Some(ss.id.clone()),
            extensions: BTreeMap::new(),
            extension_endpoint: String::new(),
            extension_credential_path: String::new(),
        })
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
        if self.peers.host_names().contains(&inst.host) {
            self.peers.remove_vm(&inst.host, inst.id.as_str()).await?;
        }
        self.store.remove_vm_and_ip(&self.store.instances, &inst)?;
        info!(instance = %inst.id, host = %inst.host, "removed scale set instance");
        Ok(())
    }
}
