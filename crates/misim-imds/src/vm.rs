//! One VM (or web app) placed on the host as the serving layer sees it: its current record, shared
//! by `Arc` (a request never copies identities or keys), its throttle and its listeners.

use std::sync::{Arc, Mutex, RwLock};

use tokio::net::TcpListener;

use crate::listener::ListenerHandle;
use crate::model::VmRecord;
use crate::throttle::VmThrottle;

/// The path prefix of a VM on the shared loopback listener: its IMDS endpoint is
/// `http://ADDR/vms/{vmId}`, and clients append `/metadata/identity/oauth2/token` to it (the Python
/// SDKs append it to `AZURE_POD_IDENTITY_AUTHORITY_HOST`,
/// <https://github.com/Azure/azure-sdk-for-python/blob/azure-identity_1.19.0/sdk/identity/azure-identity/azure/identity/_credentials/imds.py>).
pub const VM_PATH_PREFIX: &str = "/vms/";

/// The path of a web app's `IDENTITY_ENDPOINT` on its listener
/// (<https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference>).
pub const APP_SERVICE_TOKEN_PATH: &str = "/msi/token";

/// One VM placed on this host.
#[derive(Debug)]
pub struct Vm {
    /// Store key (lower-case resource ID).
    pub key: String,
    /// The current record, replaced whole on a change: a request takes an `Arc` to it, never a
    /// copy of its identities and keys (issue #18).
    record: RwLock<Arc<VmRecord>>,
    /// This VM's throttle state.
    pub throttle: VmThrottle,
    /// Serializes the host agent's changes of this VM (place again, identities, extension, remove),
    /// so each is stored in the order it is applied; other VMs are not held up.
    pub(crate) ops: Arc<tokio::sync::Mutex<()>>,
    pub(crate) imds: Mutex<Option<ListenerHandle>>,
    /// The VM extension's loopback listener, while installed.
    pub(crate) extension: Mutex<Option<ListenerHandle>>,
}

impl Vm {
    /// A VM with `record`, no listener yet.
    pub(crate) fn new(record: VmRecord, throttle: VmThrottle) -> Self {
        Vm {
            key: record.vm.resource_id.key(),
            record: RwLock::new(Arc::new(record)),
            throttle,
            ops: Arc::new(tokio::sync::Mutex::new(())),
            imds: Mutex::new(None),
            extension: Mutex::new(None),
        }
    }

    /// The VM's current record (metadata and identities), shared: cheap whatever the number of
    /// identities. Clone the record (`VmRecord::clone(&vm.snapshot())`, which shares the
    /// credentials) to change it, then [`Vm::set`].
    pub fn snapshot(&self) -> Arc<VmRecord> {
        Arc::clone(&self.record.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn set(&self, record: VmRecord) {
        *self.record.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(record);
    }

    /// Takes the handle out of `slot` (so it can be closed without holding the lock).
    pub(crate) fn take(slot: &Mutex<Option<ListenerHandle>>) -> Option<ListenerHandle> {
        slot.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub(crate) fn put(slot: &Mutex<Option<ListenerHandle>>, handle: ListenerHandle) {
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }
}

/// Which of a VM's own listeners to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VmListener {
    /// IMDS (or, for a web app, the App Service identity endpoint).
    Imds,
    /// The legacy VM extension's token endpoint.
    Extension,
}

/// The serving layer as the host sees it: starts serving a VM's own listener. The host keeps VM
/// state; what is served on a listener (the HTTP routers) is the serving layer's business.
pub(crate) trait VmServing: Send + Sync {
    /// Serves `which` of `vm` on `listener` until the handle is closed or the host shuts down.
    fn serve(&self, vm: &Arc<Vm>, which: VmListener, listener: TcpListener) -> ListenerHandle;
}
