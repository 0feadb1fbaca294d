//! The host: the VMs placed on it and the operations the host agent API exposes (place, remove,
//! configure identities, refresh credentials; the VM extension is in `extension.rs`). State changes
//! are stored and flushed before they are acknowledged; on start the stored VMs are reloaded and
//! their listeners re-bound on the same ports. What is served on a listener is the serving layer's
//! business ([`VmServing`]): the host keeps state and never builds a router.
//!
//! Concurrency: the changes of one VM are serialized by that VM's own lock ([`Vm`]'s `ops`), held
//! while its record is stored; credentials are fetched from MSRP before any lock is taken, and
//! nothing host-wide is held across a fetch, a flush or a disk write.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use misim_core::{serve, ResourceId};
use tokio::net::TcpListener;
use tracing::{info, warn};

mod extension;

use crate::credentials::Registry;
use crate::directory::{vm_path_id, InsertConflict, VmDirectory};
use crate::error::AgentError;

type Result<T> = std::result::Result<T, AgentError>;
use crate::grpc::msrp::MsrpCredentials;
use crate::model::{
    AppServiceSite, HeldIdentity, HostCredential, IdentityKind, IdentityRef, PlacedVm,
    ServedIdentity, SharedCredential, VmInfo, VmRecord,
};
use crate::store::HostStore;
use crate::throttle::{ImdsLimits, VmThrottle};
use crate::tokens::Tokens;
use crate::vm::{Vm, VmListener, VmServing};
use crate::Config;

/// Azure's limit of user-assigned identities per VM served by IMDS ("up to 1000",
/// <https://learn.microsoft.com/azure/active-directory/managed-identities-azure-resources/howto-migrate-vm-extension>).
pub const MAX_USER_ASSIGNED: usize = 1000;

/// The parts of a host shared with its serving layer, built by [`crate::run`].
pub(crate) struct Shared {
    /// Token cache and Azure AD client.
    pub tokens: Arc<Tokens>,
    /// The placed VMs.
    pub vms: Arc<VmDirectory>,
    /// Serves the VMs' own listeners.
    pub serving: Arc<dyn VmServing>,
    /// The shared loopback IMDS listener's address, when VMs are told apart by `/vms/{vmId}`.
    pub path_imds: Option<SocketAddr>,
}

/// Everything one host keeps: store, MSRP client, credentials and the placed VMs.
pub struct Host {
    pub(crate) host_name: String,
    pub(crate) data_dir: PathBuf,
    listen_ip: IpAddr,
    /// Whether VMs may get their own loopback listeners ([`crate::Config::vm_listeners`]).
    vm_listeners: bool,
    /// The shared listeners' addresses, reported as the endpoints of VMs without their own.
    shared_imds: Option<SocketAddr>,
    path_imds: Option<SocketAddr>,
    shared_extension: Option<SocketAddr>,
    vm_ports: Option<std::ops::RangeInclusive<u16>>,
    limits: ImdsLimits,
    pub(crate) store: HostStore,
    pub(crate) msrp: MsrpCredentials,
    /// Token cache, Azure AD client and clock, shared with the serving layer.
    pub(crate) tokens: Arc<Tokens>,
    /// The placed VMs, shared with the serving layer.
    pub(crate) vms: Arc<VmDirectory>,
    /// One credential per identity, shared by the VMs that have it.
    pub(crate) credentials: Registry,
    pub(crate) serving: Arc<dyn VmServing>,
}

impl Host {
    /// Opens the host on `store`, reloads the stored VMs and re-binds their own listeners (same
    /// port when free, else a new one, logged) through `shared.serving`.
    ///
    /// # Errors
    /// [`AgentError::Store`] when the store cannot be read, [`AgentError::Bind`] when no port can be bound,
    /// [`AgentError::Internal`] when a client cannot be built.
    pub(crate) async fn start(
        config: &Config,
        store: HostStore,
        shared: Shared,
    ) -> Result<Arc<Host>> {
        let host = Arc::new(Host {
            host_name: config.host_name.clone(),
            data_dir: config.data_dir.clone(),
            listen_ip: config.vm_listen_ip,
            vm_listeners: config.vm_listeners,
            shared_imds: config.imds_listen,
            path_imds: shared.path_imds,
            shared_extension: config.extension_listen,
            vm_ports: config.vm_ports.clone(),
            limits: config.limits.clone(),
            store,
            msrp: MsrpCredentials::new(&config.msrp_grpc, config.control.as_ref())?,
            tokens: shared.tokens,
            vms: shared.vms,
            credentials: Registry::default(),
            serving: shared.serving,
        });
        for mut record in host.load_records().await? {
            let own = host.own_imds_listener(&record);
            let listener = match (own, host.bind(record.port).await) {
                (false, _) => None,
                (true, Ok(l)) => l,
                (true, Err(e)) => {
                    warn!(vm = %record.vm.resource_id, port = record.port, error = %e, "previous imds port unavailable, binding a new one");
                    host.bind(0).await?
                }
            };
            let port = local_port(listener.as_ref())?;
            if port != record.port {
                record.port = port;
                host.store.put(&record).await?;
            }
            info!(vm = %record.vm.resource_id, endpoint = %host.endpoint(&record), identities = record.identities.len(), "vm reloaded on host");
            let vm = Arc::new(Vm::new(record, host.throttle()));
            if let Err(e) = host.vms.insert(&vm) {
                warn!(vm = %vm.key, error = %e, "stored vm not served");
                continue;
            }
            host.serve_imds(&vm, listener);
            host.reload_extension(&vm).await?;
        }
        Ok(host)
    }

    fn throttle(&self) -> VmThrottle {
        VmThrottle::new(self.limits.clone(), self.tokens.clock.clone())
    }

    /// Whether the VM of `record` gets its own IMDS listener: per-VM listeners are on and the VM is
    /// not served by the shared loopback listener (web apps always get their own).
    fn own_imds_listener(&self, record: &VmRecord) -> bool {
        self.vm_listeners && (self.path_imds.is_none() || record.app_service.is_some())
    }

    fn serve_imds(&self, vm: &Arc<Vm>, listener: Option<TcpListener>) {
        if let Some(listener) = listener {
            Vm::put(&vm.imds, self.serving.serve(vm, VmListener::Imds, listener));
        }
    }

    /// The stored VMs with their identities' shared credentials (keys parsed on first use). An
    /// identity whose credential is missing from the store (a damaged store) is left out, logged:
    /// ARM configures it again on its next reconcile. Credentials no VM uses are deleted.
    async fn load_records(&self) -> Result<Vec<VmRecord>> {
        let mut loaded = self.store.load().await?;
        let mut records = Vec::with_capacity(loaded.vms.len());
        let mut filed: HashMap<String, SharedCredential> = HashMap::new();
        for stored in loaded.vms {
            let mut identities = Vec::with_capacity(stored.identities.len());
            for s in stored.identities {
                let key = s.identity.credential_key();
                let credential = match (filed.get(&key), loaded.credentials.remove(&key)) {
                    (Some(shared), _) => shared.clone(),
                    (None, Some(c)) => {
                        let shared = self.credentials.load(&s.identity, HostCredential::new(c));
                        filed.insert(key, shared.clone());
                        shared
                    }
                    (None, None) => {
                        warn!(vm = %stored.vm.resource_id, identity = %s.identity.msi_res_id, "stored identity has no stored credential: not served until arm configures it again");
                        continue;
                    }
                };
                identities.push(HeldIdentity {
                    identity: s.identity,
                    credential,
                });
            }
            records.push(VmRecord {
                vm: stored.vm,
                port: stored.port,
                identities,
                extension: stored.extension,
                app_service: stored.app_service,
            });
        }
        let unused: Vec<String> = loaded.credentials.into_keys().collect();
        self.store.remove_credentials(&unused)?;
        Ok(records)
    }

    /// Forgets (and deletes from the store) the credentials no VM has any more.
    pub(crate) fn prune_credentials(&self) {
        if let Err(e) = self.credentials.prune(&self.store) {
            warn!(error = %e, "cannot delete unused credentials; they are deleted on the next start");
        }
    }

    /// Binds `vm_listen_ip:port`; when `port` is taken (a previous run's port), a new one. `None` when
    /// per-VM listeners are off (the shared listeners serve every VM).
    pub(crate) async fn bind_or_new(
        &self,
        port: u16,
        vm: &ResourceId,
    ) -> Result<Option<TcpListener>> {
        match self.bind(port).await {
            Ok(l) => Ok(l),
            Err(e) if port != 0 => {
                warn!(vm = %vm, port, error = %e, "previous port unavailable, binding a new one");
                self.bind(0).await
            }
            Err(e) => Err(e),
        }
    }

    async fn bind(&self, port: u16) -> Result<Option<TcpListener>> {
        if !self.vm_listeners {
            return Ok(None);
        }
        if let (0, Some(range)) = (port, &self.vm_ports) {
            // The lowest free port of the configured range.
            for p in range.clone() {
                if let Ok(l) = serve::bind(SocketAddr::new(self.listen_ip, p)).await {
                    return Ok(Some(l));
                }
            }
            return Err(AgentError::NoFreePort {
                start: *range.start(),
                end: *range.end(),
                ip: self.listen_ip,
            });
        }
        serve::bind(SocketAddr::new(self.listen_ip, port))
            .await
            .map(Some)
            .map_err(AgentError::Bind)
    }

    /// The IMDS endpoint of the VM of `record`: its own listener, else its path on the shared
    /// loopback listener (`http://ADDR/vms/{vmId}`), else the shared listener identifying VMs by
    /// source address; empty when none serves it.
    pub(crate) fn endpoint(&self, record: &VmRecord) -> String {
        match (record.port, self.path_imds, vm_path_id(&record.vm)) {
            (0, Some(addr), Some(id)) => {
                format!("http://{addr}{}{id}", crate::vm::VM_PATH_PREFIX)
            }
            (port, _, _) => self.listener_url(port, self.shared_imds),
        }
    }

    /// The extension endpoint of a VM whose extension listener has `port` (0: the shared one).
    pub(crate) fn extension_endpoint(&self, port: u16) -> String {
        self.listener_url(port, self.shared_extension)
    }

    /// `http://` URL of a VM's own listener on `port`, or of `shared` when it has none (port 0).
    fn listener_url(&self, port: u16, shared: Option<SocketAddr>) -> String {
        match (port, shared) {
            (0, Some(shared)) => format!("http://{shared}"),
            (0, None) => String::new(),
            _ => format!("http://{}", SocketAddr::new(self.listen_ip, port)),
        }
    }

    pub(crate) fn vm(&self, id: &ResourceId) -> Option<Arc<Vm>> {
        self.vms.get(&id.key())
    }

    /// The VM `id` with its change lock held; `None` when it is not placed (or was removed while
    /// this call waited for the lock).
    pub(crate) async fn lock_vm(
        &self,
        id: &ResourceId,
    ) -> Option<(Arc<Vm>, tokio::sync::OwnedMutexGuard<()>)> {
        loop {
            let vm = self.vm(id)?;
            let ops = Arc::clone(&vm.ops).lock_owned().await;
            match self.vm(id) {
                Some(now) if Arc::ptr_eq(&now, &vm) => return Some((vm, ops)),
                Some(_) => continue, // removed and placed again meanwhile
                None => return None,
            }
        }
    }

    pub(crate) fn placed(&self, record: &VmRecord) -> PlacedVm {
        // A web app has no IMDS: its listener serves the App Service protocol at `/msi/token`
        // (only on its own loopback listener; the shared listeners serve VMs only).
        let (imds_endpoint, identity_endpoint) = match (&record.app_service, record.port) {
            (None, _) => (self.endpoint(record), String::new()),
            (Some(_), 0) => (String::new(), String::new()),
            (Some(_), port) => (
                String::new(),
                format!(
                    "{}{}",
                    self.listener_url(port, None),
                    crate::vm::APP_SERVICE_TOKEN_PATH
                ),
            ),
        };
        PlacedVm {
            vm: record.vm.clone(),
            host: self.host_name.clone(),
            imds_endpoint,
            identities: record.identities.iter().map(ServedIdentity::of).collect(),
            extension: self.placed_extension(record),
            identity_endpoint,
        }
    }

    /// Places a VM and opens its IMDS endpoint (a new port, or its path on the shared listener);
    /// placing a VM again only updates its metadata (same endpoint, same identities). A private IP
    /// address belongs to one VM of the host. `app_service` makes the placement an App Service web
    /// app instead of a VM: its listener then serves the App Service identity protocol with the
    /// site's secret, and placing again also updates the secret.
    ///
    /// # Errors
    /// [`AgentError::IpInUse`] when another VM here has its private IP address, [`AgentError::Bind`] when
    /// no port is free, [`AgentError::Store`] when the write fails, [`AgentError::InvalidArgument`] when
    /// a placement would change between VM and web app.
    pub async fn place(
        &self,
        info: VmInfo,
        app_service: Option<AppServiceSite>,
    ) -> Result<PlacedVm> {
        loop {
            self.vms.check_free(&info)?;
            if let Some((vm, _ops)) = self.lock_vm(&info.resource_id).await {
                return self.place_again(&vm, info, app_service).await;
            }
            let mut record = VmRecord {
                vm: info.clone(),
                port: 0,
                identities: Vec::new(),
                extension: None,
                app_service: app_service.clone(),
            };
            let listener = match self.own_imds_listener(&record) {
                true => self.bind(0).await?,
                false => None,
            };
            record.port = local_port(listener.as_ref())?;
            let vm = Arc::new(Vm::new(record.clone(), self.throttle()));
            let _ops = Arc::clone(&vm.ops).lock_owned().await;
            match self.vms.insert(&vm) {
                Ok(()) => {}
                Err(InsertConflict::AlreadyPlaced) => continue, // placed concurrently: update it
                Err(InsertConflict::Ip(e)) => return Err(e),
            }
            if let Err(e) = self.store.put(&record).await {
                self.vms.remove(&vm);
                return Err(e);
            }
            info!(vm = %record.vm.resource_id, endpoint = %self.endpoint(&record), "vm placed on host");
            self.serve_imds(&vm, listener);
            return Ok(self.placed(&record));
        }
    }

    async fn place_again(
        &self,
        vm: &Arc<Vm>,
        info: VmInfo,
        app_service: Option<AppServiceSite>,
    ) -> Result<PlacedVm> {
        let mut record = VmRecord::clone(&vm.snapshot());
        if record.app_service.is_some() != app_service.is_some() {
            return Err(AgentError::InvalidArgument(format!(
                "{} is already placed here as a {}",
                info.resource_id,
                if record.app_service.is_some() {
                    "web app"
                } else {
                    "vm"
                }
            )));
        }
        let previous = std::mem::replace(&mut record.vm, info);
        record.app_service = app_service;
        self.store.put(&record).await?;
        vm.set(record.clone());
        self.vms.update(vm, &previous);
        Ok(self.placed(&record))
    }

    /// The VM `id` as placed here.
    ///
    /// # Errors
    /// [`AgentError::VmNotFound`] when it is not placed here.
    pub fn get_vm(&self, id: &ResourceId) -> Result<PlacedVm> {
        let vm = self
            .vm(id)
            .ok_or_else(|| AgentError::VmNotFound(id.to_string()))?;
        Ok(self.placed(&vm.snapshot()))
    }

    /// All VMs placed here, by resource ID.
    pub fn list_vms(&self) -> Vec<PlacedVm> {
        let mut records: Vec<Arc<VmRecord>> =
            self.vms.all().iter().map(|vm| vm.snapshot()).collect();
        records.sort_by_key(|r| r.vm.resource_id.key());
        records.iter().map(|r| self.placed(r)).collect()
    }

    /// Removes a VM: closes its listeners, drops its identities and cached tokens, and deletes its
    /// VM-side extension files. Absent VMs succeed.
    ///
    /// # Errors
    /// [`AgentError::Store`] when the delete cannot be flushed.
    pub async fn remove_vm(&self, id: &ResourceId) -> Result<()> {
        let Some((vm, _ops)) = self.lock_vm(id).await else {
            self.store.remove(id).await?;
            return Ok(());
        };
        self.store.remove(id).await?;
        self.vms.remove(&vm);
        // The listeners close at once; in-flight requests get a little time to finish.
        if let Some(h) = Vm::take(&vm.imds) {
            h.close(&vm.key, "imds").await;
        }
        self.uninstall_extension(&vm).await;
        info!(vm = %id, "vm removed from host");
        self.tokens.cache.remove_vm(&id.key());
        vm.set(VmRecord {
            identities: Vec::new(),
            ..VmRecord::clone(&vm.snapshot())
        });
        drop(vm);
        self.prune_credentials();
        Ok(())
    }

    /// The shared credentials of `identities`: the ones the host holds already (another VM has the
    /// identity), the others fetched from MSRP (before any lock is taken) and filed.
    async fn credentials_of(
        &self,
        identities: &[IdentityRef],
    ) -> Result<HashMap<String, SharedCredential>> {
        let mut out = HashMap::with_capacity(identities.len());
        let mut missing = Vec::new();
        for identity in identities {
            match self.credentials.get(identity) {
                // Holding the shared credential keeps it from being pruned meanwhile.
                Some(c) => {
                    out.insert(identity.credential_key(), c);
                }
                None => missing.push(identity.clone()),
            }
        }
        let fetched = crate::credentials::fetch_all(&self.msrp, &self.host_name, &missing).await?;
        for (identity, credential) in missing.iter().zip(fetched) {
            let shared = self.credentials.insert(identity, credential, &self.store)?;
            out.insert(identity.credential_key(), shared);
        }
        Ok(out)
    }

    /// Replaces the VM's identity set (step 3). Identities the host holds a credential for (on this
    /// VM or another) share it; the others are fetched from MSRP first. If any fetch fails nothing
    /// changes.
    ///
    /// # Errors
    /// [`AgentError::InvalidArgument`] for duplicate identities or two system-assigned ones,
    /// [`AgentError::VmNotFound`], [`AgentError::Msrp`] / [`AgentError::CredentialMismatch`] when a
    /// credential cannot be obtained, [`AgentError::Store`].
    pub async fn configure_identities(
        &self,
        id: &ResourceId,
        identities: Vec<IdentityRef>,
    ) -> Result<PlacedVm> {
        check_identity_set(&identities)?;
        if self.vm(id).is_none() {
            return Err(AgentError::VmNotFound(id.to_string()));
        }
        let mut credentials = self.credentials_of(&identities).await?;
        let result = self
            .apply_identities(id, identities, &mut credentials)
            .await;
        drop(credentials);
        self.prune_credentials();
        result
    }

    async fn apply_identities(
        &self,
        id: &ResourceId,
        identities: Vec<IdentityRef>,
        credentials: &mut HashMap<String, SharedCredential>,
    ) -> Result<PlacedVm> {
        let (vm, _ops) = self
            .lock_vm(id)
            .await
            .ok_or_else(|| AgentError::VmNotFound(id.to_string()))?;
        let current = vm.snapshot();
        if current.extension.is_some() {
            crate::extension::check_extension_limit(&identities)?;
        }
        let newly: Vec<IdentityRef> = identities
            .iter()
            .filter(|i| !current.identities.iter().any(|h| h.identity.same_as(i)))
            .cloned()
            .collect();
        let mut next = Vec::with_capacity(identities.len());
        for identity in identities {
            let credential =
                credentials
                    .remove(&identity.credential_key())
                    .ok_or(AgentError::Internal(
                        "an identity's credential was not resolved",
                    ))?;
            next.push(HeldIdentity {
                identity,
                credential,
            });
        }
        let delay = self.tokens.clock.propagation().identity_secs();
        if delay > 0 {
            let changed = |from: &[HeldIdentity], to: &[HeldIdentity]| -> Vec<HeldIdentity> {
                from.iter()
                    .filter(|h| !to.iter().any(|o| o.identity.same_as(&h.identity)))
                    .cloned()
                    .collect()
            };
            let (added, removed) = (
                changed(&next, &current.identities),
                changed(&current.identities, &next),
            );
            let at = self.tokens.clock.now().saturating_add(delay);
            self.tokens
                .propagating
                .record(&vm.key, &added, &removed, at);
        }
        let mut record = VmRecord::clone(&current);
        record.identities = next;
        self.store.put(&record).await?;
        vm.set(record.clone());
        for old in &current.identities {
            if !record
                .identities
                .iter()
                .any(|h| h.identity.same_as(&old.identity))
            {
                let cache = &self.tokens.cache;
                cache.remove_identity(&vm.key, &old.identity.client_id);
                cache.remove_identity(
                    &crate::extension::cache_vm(&vm.key),
                    &old.identity.client_id,
                );
            }
        }
        for identity in &newly {
            info!(step = 3, vm = %id, identity = %identity.msi_res_id, client_id = %identity.client_id, "identity configured on host");
            let step = misim_core::telemetry::step_span(3, &self.host_name); // the flow's trace
            misim_core::telemetry::record_vm(&step, id.as_str());
            step.record("identity", identity.msi_res_id.as_str());
            step.record("outcome", "success");
        }
        self.rewrite_extension_files(&record).await?;
        Ok(self.placed(&record))
    }
}

impl Host {
    /// Fetches every credential of the host from MSRP again and keeps the renewed ones
    /// ([`crate::credentials::refresh`]), then rewrites the VM extension's files of the VMs that
    /// have a renewed identity. Returns how many credentials changed.
    pub async fn refresh_credentials(&self) -> usize {
        let renewed = crate::credentials::refresh(
            &self.credentials,
            &self.store,
            &self.msrp,
            &self.host_name,
        )
        .await;
        if renewed.is_empty() {
            return 0;
        }
        for vm in self.vms.all() {
            let _ops = vm.ops.lock().await;
            let record = vm.snapshot();
            let affected = record
                .identities
                .iter()
                .any(|h| renewed.iter().any(|r| r.same_as(&h.identity)));
            if !affected {
                continue;
            }
            if let Err(e) = self.rewrite_extension_files(&record).await {
                warn!(vm = %vm.key, error = %e, "cannot write renewed credentials for the vm extension");
            }
        }
        renewed.len()
    }
}

/// Spawns the periodic credential refresh (every `period`) on `tasks` until `stop` is cancelled.
pub(crate) fn spawn_periodic_refresh(
    host: Arc<Host>,
    period: std::time::Duration,
    tasks: &tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
) {
    tasks.spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => { host.refresh_credentials().await; }
            }
        }
    });
}

/// Rejects duplicate identities, two system-assigned ones and more than [`MAX_USER_ASSIGNED`]
/// user-assigned ones.
fn check_identity_set(identities: &[IdentityRef]) -> Result<()> {
    let user = identities
        .iter()
        .filter(|i| i.kind == IdentityKind::UserAssigned)
        .count();
    if user > MAX_USER_ASSIGNED {
        return Err(AgentError::InvalidArgument(format!(
            "{user} user-assigned identities: imds serves at most {MAX_USER_ASSIGNED} per vm"
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(identities.len());
    if let Some(twice) = identities.iter().find(|i| !seen.insert(i.msi_res_id.key())) {
        let msg = format!("identity {} listed twice", twice.msi_res_id);
        return Err(AgentError::InvalidArgument(msg));
    }
    if identities.len() - user > 1 {
        return Err(AgentError::InvalidArgument(
            "more than one system-assigned identity".into(),
        ));
    }
    Ok(())
}

/// The port `listener` is bound to; 0 without a listener (per-VM listeners off).
pub(crate) fn local_port(listener: Option<&TcpListener>) -> Result<u16> {
    let Some(listener) = listener else {
        return Ok(0);
    };
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(AgentError::ListenerAddress)
}
