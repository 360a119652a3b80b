//! The two ways the services touch the store: a read on a snapshot, inline; and a durable
//! write, queued on the store's writer (group commit), answered once its transaction is on disk.
//! Both are generic over the caller's error type, so a service returns its own `Status` from
//! inside a transaction and a storage failure converts into it.

use tonic::Status;

use crate::store::{Commit, Store, StoreError, Tx, TxMut, WriteJob};

/// A storage failure reaches a client as INTERNAL without its details; the details are logged,
/// once, here. A full disk, or a store reopening after one, is UNAVAILABLE: the write was not
/// made, and a retry later may succeed.
impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            tracing::warn!(error = %e, "storage unavailable");
            return Status::unavailable(match e {
                StoreError::Full => "the store is out of disk space: nothing was written",
                StoreError::Unavailable(_) => "the database is unavailable: nothing was written",
                _ => "the store is recovering from an I/O failure: nothing was written",
            });
        }
        tracing::error!(error = %e, "storage failure");
        Status::internal("internal storage error")
    }
}

/// Runs `f` on a read snapshot. Inline on the async task: a read of cached pages takes
/// microseconds, less than a hand-off to a blocking thread would.
pub(super) fn read<T, E, F>(store: &dyn Store, f: F) -> Result<T, E>
where
    F: FnOnce(&dyn Tx) -> Result<T, E>,
    E: From<StoreError>,
{
    let mut f = Some(f);
    let mut out = None;
    store.read(&mut |tx| {
        if let Some(f) = f.take() {
            out = Some(f(tx));
        }
        Ok(())
    })?;
    out.unwrap_or_else(|| Err(StoreError::JobLost.into()))
}

/// Runs `f` in a durable write transaction (shared with concurrent writes: group commit) and
/// answers once that transaction is on disk; an `Err` rolls back `f`'s writes only.
pub(super) async fn write<T, E, F>(store: &dyn Store, f: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: FnOnce(&mut dyn TxMut) -> Result<T, E> + Send + 'static,
{
    let (reply, answer) = tokio::sync::oneshot::channel();
    store.submit(Box::new(Job {
        f: Some(f),
        result: None,
        reply,
    }));
    answer
        .await
        .unwrap_or_else(|_| Err(StoreError::Closed.into()))
}

/// A [`write`] queued on the store.
struct Job<T, E, F> {
    f: Option<F>,
    result: Option<Result<T, E>>,
    reply: tokio::sync::oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> WriteJob for Job<T, E, F>
where
    T: Send,
    E: From<StoreError> + Send,
    F: FnOnce(&mut dyn TxMut) -> Result<T, E> + Send,
{
    fn run(&mut self, tx: &mut dyn TxMut) -> Commit {
        let Some(f) = self.f.take() else {
            return Commit::No;
        };
        let result = f(tx);
        let commit = if result.is_ok() {
            Commit::Yes
        } else {
            Commit::No
        };
        self.result = Some(result);
        commit
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let answer = match (committed, self.result) {
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::JobLost.into()),
            (Err(e), _) => Err(e.into()),
        };
        // The caller may have gone (a cancelled request); the write stands either way.
        let _ = self.reply.send(answer);
    }
}
