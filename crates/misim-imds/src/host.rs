//! The host: the VMs placed on it, each with its own IMDS listener, and the operations the host agent
//! API exposes (place, remove, configure identities, refresh credentials; the VM extension is in
//! `extension.rs`). State changes are stored and flushed before they are acknowledged; on start the
//! stored VMs are reloaded and their listeners re-bound on the same ports.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use misim_core::{serve, Clock, ResourceId};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::aad_client::AadClient;
use crate::cache::TokenCache;
use crate::credentials::Registry;
use crate::error::{ImdsError, Result};
use crate::grpc::msrp::MsrpCredentials;
use crate::ip_index::{vm_ip, IpIndex};
use crate::listener::ListenerHandle;
use crate::model::{
    AppServiceSite, HeldIdentity, HostCredential, IdentityKind, IdentityRef, PlacedVm,
    ServedIdentity, VmInfo, VmRecord,
};
use crate::store::HostStore;
use crate::throttle::{ImdsLimits, VmThrottle};
use crate::Config;

/// Azure's limit of user-assigned identities per VM served by IMDS ("up to 1000",
/// <https://learn.microsoft.com/azure/active-directory/managed-identities-azure-resources/howto-migrate-vm-extension>).
pub const MAX_USER_ASSIGNED: usize = 1000;

/// One VM placed on this host, while its IMDS listener runs.
#[derive(Debug)]
pub struct Vm {
    /// Store key (lower-case resource ID).
    pub key: String,
    /// The current record, replaced whole on a change: a request takes an `Arc` to it, never a
    /// copy of its identities and keys (issue #18).
    record: RwLock<Arc<VmRecord>>,
    /// This VM's throttle state.
    pub throttle: VmThrottle,
    imds: Mutex<Option<ListenerHandle>>,
    /// The VM extension's loopback listener, while installed.
    pub(crate) extension: Mutex<Option<ListenerHandle>>,
}

impl Vm {
    /// The VM's current record (metadata and identities), shared: cheap whatever the number of
    /// identities. Clone the record (`VmRecord::clone(&vm.snapshot())`) to change it, then [`Vm::set`].
    pub fn snapshot(&self) -> Arc<VmRecord> {
        match self.record.read() {
            Ok(r) => Arc::clone(&r),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub(crate) fn set(&self, record: VmRecord) {
        let record = Arc::new(record);
        match self.record.write() {
            Ok(mut r) => *r = record,
            Err(poisoned) => *poisoned.into_inner() = record,
        }
    }

    /// Takes the handle out of `slot` (so it can be closed without holding the lock).
    pub(crate) fn take(slot: &Mutex<Option<ListenerHandle>>) -> Option<ListenerHandle> {
        slot.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub(crate) fn put(slot: &Mutex<Option<ListenerHandle>>, handle: ListenerHandle) {
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }
}

/// Everything one host runs: store, MSRP and AAD clients, token cache and the placed VMs.
pub struct Host {
    pub(crate) host_name: String,
    pub(crate) data_dir: PathBuf,
    listen_ip: IpAddr,
    /// Whether each VM gets its own loopback listeners ([`crate::Config::vm_listeners`]).
    vm_listeners: bool,
    /// The shared listeners' addresses, reported as the endpoints when per-VM listeners are off.
    shared_imds: Option<SocketAddr>,
    shared_extension: Option<SocketAddr>,
    vm_ports: Option<std::ops::RangeInclusive<u16>>,
    limits: ImdsLimits,
    /// Time source.
    pub clock: Clock,
    pub(crate) store: HostStore,
    pub(crate) msrp: MsrpCredentials,
    /// Azure AD token client (step 6).
    pub aad: AadClient,
    /// Token cache.
    pub cache: TokenCache,
    vms: RwLock<HashMap<String, Arc<Vm>>>,
    by_ip: IpIndex,
    pub(crate) admin: tokio::sync::Mutex<()>,
    /// One credential per identity, shared by the VMs that have it.
    pub(crate) credentials: Registry,
    /// Identity changes still propagating (`misim up --propagation identity=…`).
    pub(crate) propagating: crate::propagation::Propagating,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

impl Host {
    /// Opens the host on `store`, reloads the stored VMs and re-binds their IMDS listeners (same port
    /// when free, else a new one, logged). Listeners stop when `shutdown` is cancelled; their tasks are
    /// tracked by `tasks`.
    ///
    /// # Errors
    /// [`ImdsError::Store`] when the store cannot be read, [`ImdsError::Bind`] when no port can be bound,
    /// [`ImdsError::Internal`] when a client cannot be built.
    pub async fn start(
        config: &Config,
        store: HostStore,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Arc<Host>> {
        let host = Arc::new(Host {
            host_name: config.host_name.clone(),
            data_dir: config.data_dir.clone(),
            listen_ip: config.vm_listen_ip,
            vm_listeners: config.vm_listeners,
            shared_imds: config.imds_listen,
            shared_extension: config.extension_listen,
            vm_ports: config.vm_ports.clone(),
            limits: config.limits.clone(),
            clock: config.clock.clone(),
            store,
            msrp: MsrpCredentials::new(&config.msrp_grpc, config.control.as_ref())?,
            aad: AadClient::new(&config.aad_url, config.clock.clone())?,
            cache: TokenCache::new(config.clock.clone()),
            vms: RwLock::new(HashMap::new()),
            by_ip: IpIndex::default(),
            admin: tokio::sync::Mutex::new(()),
            propagating: Default::default(),
            credentials: Registry::default(),
            shutdown,
            tasks,
        });
        for mut record in host.load_records().await? {
            let listener = match host.bind(record.port).await {
                Ok(l) => l,
                Err(e) => {
                    warn!(vm = %record.vm.resource_id, port = record.port, error = %e, "previous imds port unavailable, binding a new one");
                    host.bind(0).await?
                }
            };
            let port = local_port(listener.as_ref())?;
            if port != record.port {
                record.port = port;
                host.store.put(&record).await?;
            }
            info!(vm = %record.vm.resource_id, endpoint = %host.endpoint(port), identities = record.identities.len(), "vm reloaded on host");
            let vm = host.spawn_vm(record, listener);
            host.reload_extension(&vm).await?;
        }
        Ok(host)
    }

    /// The stored VMs with their identities' shared credentials (keys parsed on first use). An
    /// identity whose credential is missing from the store (written by no version of misim; a
    /// damaged store) is left out, logged: ARM configures it again on its next reconcile.
    /// Credentials no VM uses are deleted.
    async fn load_records(&self) -> Result<Vec<VmRecord>> {
        let mut loaded = self.store.load().await?;
        let mut records = Vec::with_capacity(loaded.vms.len());
        for stored in loaded.vms {
            let mut identities = Vec::with_capacity(stored.identities.len());
            for s in stored.identities {
                let key = s.identity.credential_key();
                let credential = match (
                    self.credentials.get(&s.identity),
                    loaded.credentials.remove(&key),
                ) {
                    (Some(shared), _) => shared,
                    (None, Some(c)) => self.credentials.insert(&s.identity, HostCredential::new(c)),
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
        if !unused.is_empty() {
            self.store.remove_credentials(&unused)?;
        }
        Ok(records)
    }

    /// Forgets (and deletes from the store) the credentials no VM has any more.
    pub(crate) fn prune_credentials(&self) {
        let gone = self.credentials.prune();
        if let Err(e) = self.store.remove_credentials(&gone) {
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
            return Err(ImdsError::Bind(format!(
                "no free port left in the VM port range {}-{} on {}: widen it (--vm-ports)",
                range.start(),
                range.end(),
                self.listen_ip
            )));
        }
        serve::bind(SocketAddr::new(self.listen_ip, port))
            .await
            .map(Some)
            .map_err(|e| ImdsError::Bind(e.to_string()))
    }

    /// The IMDS endpoint of a VM whose listener has `port` (0: no own listener, the shared one).
    pub(crate) fn endpoint(&self, port: u16) -> String {
        self.listener_url(port, self.shared_imds)
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

    /// The VM whose private IP address is `ip` (shared listeners identify the caller by source address).
    pub fn vm_by_ip(&self, ip: IpAddr) -> Option<Arc<Vm>> {
        self.by_ip.get(ip)
    }

    /// `Retry-After` seconds for 429 answers, when configured.
    pub fn retry_after_secs(&self) -> Option<u32> {
        self.limits.retry_after_secs.filter(|_| self.limits.enabled)
    }

    pub(crate) fn vms_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Vm>>> {
        self.vms.read().unwrap_or_else(|p| p.into_inner())
    }

    fn vms_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Vm>>> {
        self.vms.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn vm(&self, id: &ResourceId) -> Option<Arc<Vm>> {
        self.vms_read().get(&id.key()).cloned()
    }

    fn spawn_vm(self: &Arc<Self>, record: VmRecord, listener: Option<TcpListener>) -> Arc<Vm> {
        let ip = vm_ip(&record.vm);
        let vm = Arc::new(Vm {
            key: record.vm.resource_id.key(),
            throttle: VmThrottle::new(self.limits.clone(), self.clock.clone()),
            imds: Mutex::new(None),
            extension: Mutex::new(None),
            record: RwLock::new(Arc::new(record)),
        });
        self.vms_write().insert(vm.key.clone(), Arc::clone(&vm));
        self.by_ip.file(&vm, None, ip);
        let ctx = crate::http::VmCtx {
            host: Arc::clone(self),
            vm: Arc::clone(&vm),
        };
        let router = if vm.snapshot().app_service.is_some() {
            crate::http::app_service::router(ctx)
        } else {
            crate::http::router(ctx)
        };
        if let Some(listener) = listener {
            Vm::put(&vm.imds, self.spawn_listener(&vm.key, listener, router));
        }
        vm
    }

    pub(crate) fn placed(&self, record: &VmRecord) -> PlacedVm {
        // A web app has no IMDS: its listener serves the App Service protocol at `/msi/token`
        // (only on its own loopback listener; the shared listeners serve VMs only).
        let (imds_endpoint, identity_endpoint) = match (&record.app_service, record.port) {
            (None, port) => (self.endpoint(port), String::new()),
            (Some(_), 0) => (String::new(), String::new()),
            (Some(_), port) => (
                String::new(),
                format!(
                    "{}{}",
                    self.listener_url(port, None),
                    crate::http::app_service::TOKEN_PATH
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

    /// Places a VM and opens its IMDS endpoint on a new port; placing a VM again only updates its
    /// metadata (same endpoint, same identities). A private IP address belongs to one VM of the host.
    /// `app_service` makes the placement an App Service web app instead of a VM: its listener then
    /// serves the App Service identity protocol with the site's secret, and placing again also
    /// updates the secret.
    ///
    /// # Errors
    /// [`ImdsError::IpInUse`] when another VM here has its private IP address, [`ImdsError::Bind`] when
    /// no port is free, [`ImdsError::Store`] when the write fails, [`ImdsError::InvalidArgument`] when
    /// a placement would change between VM and web app.
    pub async fn place(
        self: &Arc<Self>,
        info: VmInfo,
        app_service: Option<AppServiceSite>,
    ) -> Result<PlacedVm> {
        let _admin = self.admin.lock().await;
        self.by_ip.check_free(&info)?;
        if let Some(vm) = self.vm(&info.resource_id) {
            let mut record = VmRecord::clone(&vm.snapshot());
            if record.app_service.is_some() != app_service.is_some() {
                return Err(ImdsError::InvalidArgument(format!(
                    "{} is already placed here as a {}",
                    info.resource_id,
                    if record.app_service.is_some() {
                        "web app"
                    } else {
                        "vm"
                    }
                )));
            }
            let previous = vm_ip(&record.vm);
            record.vm = info;
            record.app_service = app_service;
            self.store.put(&record).await?;
            vm.set(record.clone());
            self.by_ip.file(&vm, previous, vm_ip(&record.vm));
            return Ok(self.placed(&record));
        }
        let listener = self.bind(0).await?;
        let record = VmRecord {
            vm: info,
            port: local_port(listener.as_ref())?,
            identities: Vec::new(),
            extension: None,
            app_service,
        };
        self.store.put(&record).await?;
        info!(vm = %record.vm.resource_id, endpoint = %self.endpoint(record.port), "vm placed on host");
        self.spawn_vm(record.clone(), listener);
        Ok(self.placed(&record))
    }

    /// The VM `id` as placed here.
    ///
    /// # Errors
    /// [`ImdsError::VmNotFound`] when it is not placed here.
    pub fn get_vm(&self, id: &ResourceId) -> Result<PlacedVm> {
        let vm = self
            .vm(id)
            .ok_or_else(|| ImdsError::VmNotFound(id.to_string()))?;
        Ok(self.placed(&vm.snapshot()))
    }

    /// All VMs placed here, by resource ID.
    pub fn list_vms(&self) -> Vec<PlacedVm> {
        let mut records: Vec<Arc<VmRecord>> =
            self.vms_read().values().map(|vm| vm.snapshot()).collect();
        records.sort_by_key(|r| r.vm.resource_id.key());
        records.iter().map(|r| self.placed(r)).collect()
    }

    /// Removes a VM: closes its listeners, drops its identities and cached tokens, and deletes its
    /// VM-side extension files. Absent VMs succeed.
    ///
    /// # Errors
    /// [`ImdsError::Store`] when the delete cannot be flushed.
    pub async fn remove_vm(&self, id: &ResourceId) -> Result<()> {
        let _admin = self.admin.lock().await;
        self.store.remove(id).await?;
        let removed = self.vms_write().remove(&id.key());
        if let Some(vm) = removed {
            self.by_ip.remove(&vm);
            // The listeners close at once; in-flight requests get a little time to finish.
            if let Some(h) = Vm::take(&vm.imds) {
                h.close(&vm.key, "imds").await;
            }
            self.uninstall_extension(&vm).await;
            info!(vm = %id, "vm removed from host");
        }
        self.cache.remove_vm(&id.key());
        self.prune_credentials();
        Ok(())
    }

    /// Replaces the VM's identity set (step 3). Identities already held with the same client id keep
    /// their credential; the others are fetched from MSRP first. If any fetch fails nothing changes.
    ///
    /// # Errors
    /// [`ImdsError::InvalidArgument`] for duplicate identities or two system-assigned ones,
    /// [`ImdsError::VmNotFound`], [`ImdsError::Msrp`] / [`ImdsError::CredentialMismatch`] when a
    /// credential cannot be obtained, [`ImdsError::Store`].
    pub async fn configure_identities(
        &self,
        id: &ResourceId,
        identities: Vec<IdentityRef>,
    ) -> Result<PlacedVm> {
        check_identity_set(&identities)?;
        if self.vm(id).is_none() {
            return Err(ImdsError::VmNotFound(id.to_string()));
        }
        // Credentials the host does not hold yet are fetched from MSRP before the lock is taken;
        // one another VM of the host already has is shared, not fetched again.
        let mut fetched: HashMap<String, HostCredential> = HashMap::new();
        let _admin = loop {
            let missing: Vec<IdentityRef> = identities
                .iter()
                .filter(|i| {
                    !fetched.contains_key(&i.credential_key()) && self.credentials.get(i).is_none()
                })
                .cloned()
                .collect();
            if !missing.is_empty() {
                let got = self.fetch_credentials(&missing).await?;
                fetched.extend(missing.iter().map(|i| i.credential_key()).zip(got));
            }
            let admin = self.admin.lock().await;
            // Pruned while this call fetched (the last VM with it was reconfigured): fetch again.
            if identities.iter().all(|i| {
                fetched.contains_key(&i.credential_key()) || self.credentials.get(i).is_some()
            }) {
                break admin;
            }
        };
        let vm = self
            .vm(id)
            .ok_or_else(|| ImdsError::VmNotFound(id.to_string()))?;
        let current = vm.snapshot();
        if current.extension.is_some() {
            crate::extension::check_extension_limit(&identities)?;
        }
        let newly: Vec<IdentityRef> = identities
            .iter()
            .filter(|i| {
                !current
                    .identities
                    .iter()
                    .any(|h| same_identity(&h.identity, i))
            })
            .cloned()
            .collect();
        let mut stored_new = Vec::new();
        let mut next = Vec::with_capacity(identities.len());
        for identity in identities {
            let key = identity.credential_key();
            let credential = match (self.credentials.get(&identity), fetched.remove(&key)) {
                (Some(shared), _) => shared,
                (None, Some(c)) => {
                    stored_new.push((key, c.credential.clone()));
                    self.credentials.insert(&identity, c)
                }
                (None, None) => {
                    return Err(ImdsError::Internal(format!(
                        "no credential fetched for {}",
                        identity.msi_res_id
                    )))
                }
            };
            next.push(HeldIdentity {
                identity,
                credential,
            });
        }
        let delay = self.clock.propagation().identity_secs();
        if delay > 0 {
            let changed = |from: &[HeldIdentity], to: &[HeldIdentity]| -> Vec<HeldIdentity> {
                from.iter()
                    .filter(|h| !to.iter().any(|o| same_identity(&o.identity, &h.identity)))
                    .cloned()
                    .collect()
            };
            let (added, removed) = (
                changed(&next, &current.identities),
                changed(&current.identities, &next),
            );
            let at = self.clock.now().saturating_add(delay);
            self.propagating.record(&vm.key, &added, &removed, at);
        }
        let mut record = VmRecord::clone(&current);
        record.identities = next;
        let writes: Vec<(String, &crate::model::Credential)> =
            stored_new.iter().map(|(k, c)| (k.clone(), c)).collect();
        let stored = self.store.put_with(&record, &writes).await;
        if let Err(e) = stored {
            drop(record);
            self.prune_credentials();
            return Err(e);
        }
        vm.set(record.clone());
        for old in &current.identities {
            if !record
                .identities
                .iter()
                .any(|h| same_identity(&h.identity, &old.identity))
            {
                self.cache.remove_identity(&vm.key, &old.identity.client_id);
                self.cache.remove_identity(
                    &crate::extension::cache_vm(&vm.key),
                    &old.identity.client_id,
                );
            }
        }
        drop(current);
        self.prune_credentials();
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

pub(crate) fn same_identity(a: &IdentityRef, b: &IdentityRef) -> bool {
    a.msi_res_id == b.msi_res_id && a.client_id.eq_ignore_ascii_case(&b.client_id)
}

/// Rejects duplicate identities, two system-assigned ones and more than [`MAX_USER_ASSIGNED`]
/// user-assigned ones.
fn check_identity_set(identities: &[IdentityRef]) -> Result<()> {
    let user = identities
        .iter()
        .filter(|i| i.kind == IdentityKind::UserAssigned)
        .count();
    if user > MAX_USER_ASSIGNED {
        return Err(ImdsError::InvalidArgument(format!(
            "{user} user-assigned identities: imds serves at most {MAX_USER_ASSIGNED} per vm"
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(identities.len());
    if let Some(twice) = identities.iter().find(|i| !seen.insert(i.msi_res_id.key())) {
        let msg = format!("identity {} listed twice", twice.msi_res_id);
        return Err(ImdsError::InvalidArgument(msg));
    }
    if identities.len() - user > 1 {
        return Err(ImdsError::InvalidArgument(
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
        .map_err(|e| ImdsError::Bind(e.to_string()))
}
