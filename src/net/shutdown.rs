//! One stop signal for the whole process: [`Shutdown`] is cheap to clone, every server and
//! background task watches its own clone, and whoever owns the process's lifecycle triggers
//! it (ctrl-c or SIGTERM in `main`, the test harness in tests).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

/// A stop signal: once triggered it stays triggered, and every clone sees it.
#[derive(Clone, Debug)]
pub struct Shutdown(Arc<watch::Sender<bool>>);

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal nobody has triggered yet.
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new(false)))
    }

    /// A signal triggered by ctrl-c or SIGTERM (a task watches for them from now on).
    pub fn on_signals() -> Self {
        let shutdown = Self::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            let term = async {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let term = std::future::pending::<()>();
            tokio::select! { _ = ctrl_c => {}, () = term => {} }
            tracing::info!("shutting down");
            trigger.trigger();
        });
        shutdown
    }

    /// Triggers the signal (again is a no-op).
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// A guard that triggers the signal when it is dropped: a stop that happens however its
    /// owner ends, returned or cancelled.
    pub fn trigger_on_drop(&self) -> TriggerOnDrop {
        TriggerOnDrop(self.clone())
    }

    /// Whether the signal has been triggered.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the signal is triggered (at once if it already is). The future owns what
    /// it needs, so it can be handed to a server that wants a `'static` shutdown future.
    pub fn requested(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut watching = self.0.subscribe();
        async move {
            // The sender lives as long as `self` and every clone: waiting cannot fail while
            // anyone could still trigger it.
            let _ = watching.wait_for(|stop| *stop).await;
        }
    }
}

/// See [`Shutdown::trigger_on_drop`].
#[must_use = "the signal is triggered when the guard is dropped"]
pub struct TriggerOnDrop(Shutdown);

impl Drop for TriggerOnDrop {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_trigger_even_after_it() {
        let shutdown = Shutdown::new();
        let early = shutdown.requested();
        let clone = shutdown.clone();
        assert!(!clone.is_triggered());
        let waiter = tokio::spawn(early);
        clone.trigger();
        waiter.await.expect("the early waiter wakes");
        assert!(shutdown.is_triggered());
        // A waiter that starts after the trigger resolves at once.
        shutdown.requested().await;
        let other = Shutdown::new();
        drop(other.trigger_on_drop());
        assert!(other.is_triggered(), "a dropped guard triggers");
    }
}
