//! Retention: done Operations and idempotency records are kept for a limited time, then purged
//! in the background, a bounded batch per write transaction so that no purge holds the writer
//! for long. The real API keeps Operations for a limited time too; idempotency keys expire
//! after 24 hours, as Stripe's do. The store reuses the pages purged records free, so the data
//! file of a steady workload stops growing.

use std::sync::Arc;
use std::time::Duration;

use super::storage;
use crate::net::Shutdown;
use crate::store::{Cutoffs, Store, StoreError, now_nanos};

/// Records of each kind removed per write transaction: a few milliseconds of the writer.
const BATCH: usize = 256;

/// How long records are kept, and how often the purge runs.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Done Operations older than this are purged (with their place in their image's history).
    pub operations: Duration,
    /// Idempotency records older than this are purged: a retry after it is a new request.
    pub idempotency_keys: Duration,
    /// Time between two purges (the first runs at start).
    pub interval: Duration,
}

impl Default for Retention {
    /// Operations for 30 days, idempotency keys for 24 hours, a purge every minute.
    fn default() -> Self {
        Self {
            operations: Duration::from_secs(30 * 24 * 60 * 60),
            idempotency_keys: Duration::from_secs(24 * 60 * 60),
            interval: Duration::from_secs(60),
        }
    }
}

/// Purges on every interval until `shutdown`.
pub(super) async fn run(store: Arc<dyn Store>, retention: Retention, shutdown: Shutdown) {
    let stop = shutdown.requested();
    tokio::pin!(stop);
    loop {
        match purge(&*store, retention).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged expired operations and idempotency keys"),
            // Logged where the error is made into a Status; the next round tries again.
            Err(e) => tracing::warn!(error = %e, "retention purge failed"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(retention.interval) => {}
        }
    }
}

/// Purges everything expired now, [`BATCH`] of each kind per transaction; returns how many
/// records went.
pub(super) async fn purge(store: &dyn Store, retention: Retention) -> Result<usize, StoreError> {
    let now = now_nanos();
    let cutoffs = Cutoffs {
        operations: now.saturating_sub(retention.operations.as_nanos()),
        idempotency_keys: now.saturating_sub(retention.idempotency_keys.as_nanos()),
        tokens: now,
    };
    let mut total = 0;
    loop {
        let purged: usize = storage::write(store, move |tx| tx.purge(cutoffs, BATCH)).await?;
        if purged == 0 {
            return Ok(total);
        }
        total += purged;
    }
}
