//! The listener tasks of a host's VMs (IMDS and VM extension): each serves one router until it is
//! closed (VM removed, extension removed or re-run) or the host shuts down.

use misim_core::{serve, Clock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// How long `RemoveVm` waits for the VM's in-flight IMDS requests.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A running listener task: cancel `stop`, then wait for `stopped`.
#[derive(Debug)]
pub struct ListenerHandle {
    stop: CancellationToken,
    stopped: CancellationToken,
}

impl ListenerHandle {
    /// Closes the listener and waits (up to a grace period) for in-flight requests.
    pub async fn close(self, vm: &str, what: &str) {
        self.stop.cancel();
        if tokio::time::timeout(STOP_GRACE, self.stopped.cancelled())
            .await
            .is_err()
        {
            warn!(
                vm,
                listener = what,
                "requests still in flight after the listener closed"
            );
        }
    }
}

/// Spawns a host's listener tasks, stopped with the host.
#[derive(Clone, Debug)]
pub(crate) struct Listeners {
    host_name: String,
    clock: Clock,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Listeners {
    /// Listener tasks of host `host_name`, tracked by `tasks`, stopped when `shutdown` is cancelled.
    pub(crate) fn new(
        host_name: &str,
        clock: Clock,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Listeners {
            host_name: host_name.to_string(),
            clock,
            shutdown,
            tasks,
        }
    }

    /// Serves `router` of VM `vm` (store key) on `listener` until the handle is closed or the host
    /// shuts down.
    pub(crate) fn spawn(
        &self,
        vm: &str,
        listener: TcpListener,
        router: axum::Router,
    ) -> ListenerHandle {
        let handle = ListenerHandle {
            stop: self.shutdown.child_token(),
            stopped: CancellationToken::new(),
        };
        // Injected faults (misim_core::faults), labelled `HOST/vm:NAME` so a rule can target one VM.
        let name = vm.rsplit('/').next().unwrap_or(vm);
        let label = format!("{}/vm:{name}", self.host_name);
        let router = misim_core::faults::with_faults(router, &self.clock, &label);
        let router = misim_core::events::with_vm(router, name); // recorded requests name the VM
                                                                // A VM's listener is named by its path (IMDS, extension, App Service), never by a closed
                                                                // party listener that had the same port before.
        if let Ok(addr) = listener.local_addr() {
            misim_core::telemetry::propagation::forget_listener(addr);
        }
        let (stop, stopped, vm) = (handle.stop.clone(), handle.stopped.clone(), vm.to_string());
        self.tasks.spawn(async move {
            if let Err(e) = serve::serve_http(listener, router, stop).await {
                warn!(vm = %vm, error = %e, "vm listener failed");
            }
            stopped.cancel();
        });
        handle
    }
}
