//! `grpc.health.v1.Health` following the store: every service is SERVING while the store reads
//! and writes, NOT_SERVING while it does not (and so the gateway's `/readyz` too).

use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use std::sync::Arc;

use super::storage;
use crate::net::Shutdown;
use crate::store::{Store, StoreError};

/// The store probe: every `interval` it reads the store and looks at the write in progress. A
/// failed read, a write transaction running longer than `write_stall_limit` (a commit stuck
/// on a hung disk: every write waits behind it), or writes that fail (a full disk: the probe
/// then writes a small record of its own each time) turns every service NOT_SERVING until the
/// store recovers.
#[derive(Clone, Copy, Debug)]
pub struct HealthProbe {
    /// Time between two checks.
    pub interval: Duration,
    /// Longest a write transaction may run before the store counts as unhealthy.
    pub write_stall_limit: Duration,
}

impl Default for HealthProbe {
    /// A check every 5 s; a write stuck for 10 s is unhealthy (a durable batch normally takes
    /// milliseconds).
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            write_stall_limit: Duration::from_secs(10),
        }
    }
}

/// The services whose health is reported, besides the server as a whole (`""`).
const SERVICES: [&str; 2] = [
    "yandex.cloud.compute.v1.ImageService",
    "yandex.cloud.operation.OperationService",
];

/// Keeps every service's status following the store until `shutdown` (they start SERVING:
/// see [`set_all`]).
pub(super) async fn follow_store(
    store: Arc<dyn Store>,
    probe: HealthProbe,
    health: HealthReporter,
    shutdown: Shutdown,
) {
    let stop = shutdown.requested();
    tokio::pin!(stop);
    let mut serving = true;
    let mut writes_failed = false;
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(probe.interval) => {}
        }
        let read: Result<(), StoreError> = storage::read(&*store, |_| Ok(()));
        let stalled = store
            .writing_for()
            .filter(|age| *age > probe.write_stall_limit);
        // Writes that failed since the last round (a full disk) make the store unhealthy; it
        // is healthy again after a round without failures in which a small write of the
        // probe's own commits, whether or not clients are writing.
        let writes: Result<(), String> = if store.writes_failed() {
            writes_failed = true;
            Err("a write transaction failed since the last check".into())
        } else if writes_failed {
            let probe: Result<(), StoreError> = storage::write(&*store, |tx| tx.touch()).await;
            writes_failed = probe.is_err();
            probe.map_err(|e| e.to_string())
        } else {
            Ok(())
        };
        let ok = read.is_ok() && stalled.is_none() && writes.is_ok();
        if ok != serving {
            serving = ok;
            tracing::warn!(
                serving = ok,
                read_error = read.err().map(|e| e.to_string()),
                write_error = writes.err(),
                write_stalled_ms = stalled.map(|d| d.as_millis() as u64),
                "store health changed"
            );
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_all(&health, status).await;
        }
    }
}

/// Sets the server's status and every service's.
pub(super) async fn set_all(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    for service in SERVICES {
        health.set_service_status(service, status).await;
    }
}
