//! Keeping the routes current: the sources (see `sources.rs`) are read again, and each
//! backend asked for its services again with `--reflect`, on SIGHUP, every
//! `--reflect-interval`, and when a call returns UNIMPLEMENTED for a method the table routes.
//! A table that builds and differs from the one served replaces it whole: requests in flight
//! finish on the routes they started with. One that does not build is logged, and the routes
//! served stay as they were.

use std::sync::Arc;
use std::time::Duration;

use super::handler::{Gateway, Routing, StartError};
use super::reflect;
use super::routes::RouteError;
use super::sources::Loaded;
use crate::net::Shutdown;

/// Tries at start before a backend that does not answer reflection fails the start.
const START_ATTEMPTS: u32 = 6;
/// Least time between two reloads asked for by UNIMPLEMENTED replies.
const STALE_SPACING: Duration = Duration::from_secs(1);

/// Why a reload changed nothing.
#[derive(Debug)]
pub enum ReloadError {
    /// A backend did not answer reflection (it names the backend).
    Reflect(String),
    /// The sources do not make a route table.
    Routes(RouteError),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reflect(why) => write!(f, "--reflect: {why}"),
            Self::Routes(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReloadError {}

impl Gateway {
    /// With `--reflect`, asks each backend for its services and serves their routes; a backend
    /// that does not answer is tried again, [`START_ATTEMPTS`] times in all (about 3 s, besides
    /// each try's own time), and then fails the start, naming it.
    pub async fn reflect_at_start(&self) -> Result<(), StartError> {
        if !self.config().sources.reflect {
            return Ok(());
        }
        let mut wait = Duration::from_millis(100);
        for attempt in 1..=START_ATTEMPTS {
            match self.reload().await {
                Ok(_) => return Ok(()),
                Err(ReloadError::Routes(e)) => return Err(StartError::Routes(e)),
                Err(ReloadError::Reflect(why)) if attempt == START_ATTEMPTS => {
                    return Err(StartError::Reflect(why));
                }
                Err(ReloadError::Reflect(why)) => {
                    tracing::info!(attempt, %why, "reflection did not answer; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Reads the sources again (and, with `--reflect`, asks each backend again) and serves the
    /// routes they make, when they differ from the routes served. `Ok(true)` when the routes
    /// changed; on `Err`, the routes served are kept.
    pub async fn reload(&self) -> Result<bool, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let sources = &self.config().sources;
        let reflected = if sources.reflect {
            self.reflected().await?
        } else {
            Vec::new()
        };
        let loaded = Loaded::read(sources, reflected).map_err(ReloadError::Routes)?;
        if loaded.fingerprint == self.routing.load().fingerprint {
            return Ok(false);
        }
        let backends = &self.backends;
        let table = loaded
            .table(sources, &|service| backends.of(service).is_some())
            .map_err(ReloadError::Routes)?;
        let routes = table.routes().len();
        self.routing
            .store(Arc::new(Routing::new(table, loaded.fingerprint)));
        tracing::info!(routes, "the route table was reloaded");
        Ok(true)
    }

    /// The files each backend reports for the services it serves here.
    async fn reflected(&self) -> Result<Vec<(String, Vec<Vec<u8>>)>, ReloadError> {
        let compiled = crate::pb::descriptor_pool();
        let known = |file: &str| compiled.get_file_by_name(file).is_some();
        let mut out = Vec::new();
        for client in self.backends.each() {
            let name = client.upstream().origin().to_string();
            let wanted = |service: &str| self.backends.serves(client, service);
            let files = match reflect::files(client, &wanted, &known).await {
                // A backend without reflection brings nothing (its services may come from a
                // descriptor set); one that does not answer at all is an error.
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    tracing::warn!(backend = %name, "the backend does not serve reflection");
                    Ok(Vec::new())
                }
                other => other,
            }
            .map_err(|status| {
                ReloadError::Reflect(format!(
                    "backend {name}: {} ({:?})",
                    status.message(),
                    status.code()
                ))
            })?;
            out.push((name, files));
        }
        Ok(out)
    }

    /// Reloads on SIGHUP (when [`super::GatewayConfig::reload_on_hangup`]), every
    /// [`super::GatewayConfig::reload_interval`], and when a routed method turns out
    /// unimplemented (with reflection), until `shutdown`.
    pub(super) async fn keep_current(self: Arc<Self>, shutdown: Shutdown) {
        let config = self.config();
        if !config.reload_on_hangup && config.reload_interval.is_none() && !config.sources.reflect {
            return;
        }
        let mut hangup = if config.reload_on_hangup {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| tracing::warn!(error = %e, "SIGHUP cannot be watched"))
                .ok()
        } else {
            None
        };
        let mut every = config.reload_interval.map(|period| {
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every
        });
        let stop = shutdown.requested();
        tokio::pin!(stop);
        loop {
            let why = tokio::select! {
                () = &mut stop => return,
                Some(()) = async {
                    match &mut hangup {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                } => "SIGHUP",
                _ = async {
                    match &mut every {
                        Some(every) => every.tick().await,
                        None => std::future::pending().await,
                    }
                } => "interval",
                () = self.stale.notified() => "a routed method is unimplemented",
            };
            match self.reload().await {
                Ok(true) => {}
                Ok(false) => tracing::debug!(why, "the sources are unchanged"),
                Err(e) => tracing::warn!(
                    why,
                    error = %e,
                    "the sources do not make a route table; the routes served are kept"
                ),
            }
            if why.starts_with("a routed") {
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(STALE_SPACING) => {}
                }
            }
        }
    }
}
