//! PostgreSQL for the tests: the machine's server (`CG_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), a fresh database per test server, dropped
//! afterwards.
//!
//! Without a server, [`TestDatabase::create`] returns `None` and says once that the
//! PostgreSQL tests were skipped and why; with `CG_REQUIRE_POSTGRES=1` (as `.ci/run` sets it)
//! it fails instead. `CG_TEST_STORE=postgres` runs every suite's test servers on PostgreSQL.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

/// The URL of the server's maintenance database.
fn admin_url() -> String {
    std::env::var("CG_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Whether every suite's servers use PostgreSQL (`CG_TEST_STORE=postgres`).
pub(crate) fn wanted_for_every_server() -> bool {
    std::env::var("CG_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// Runs blocking client work off the async runtime's thread.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("the database thread"))
}

/// A database of its own, dropped with this.
pub(crate) struct TestDatabase {
    name: String,
    /// Its URL.
    pub(crate) url: String,
}

impl TestDatabase {
    /// A new empty database; `None` (and one line on stderr) when no server answers, unless
    /// `CG_REQUIRE_POSTGRES=1`.
    pub(crate) fn create() -> Option<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let admin = admin_url();
        let name = format!(
            "cg_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default()
        );
        let created = off_runtime(|| {
            let mut client = postgres::Client::connect(&admin, postgres::NoTls)?;
            client.batch_execute(&format!("CREATE DATABASE {name}"))
        });
        if let Err(e) = created {
            if std::env::var("CG_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("PostgreSQL is required (CG_REQUIRE_POSTGRES=1) but {admin} fails: {e}");
            }
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                eprintln!(
                    "PostgreSQL tests skipped: no server at {admin} ({e}); set CG_TEST_DATABASE_URL"
                )
            });
            return None;
        }
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Some(Self {
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl TestDatabase {
    /// Runs `sql` on the maintenance database (with this database's name as `$1`); its rows.
    pub(crate) fn admin_query(&self, sql: &str) -> Vec<postgres::Row> {
        let admin = admin_url();
        off_runtime(|| {
            let mut client = postgres::Client::connect(&admin, postgres::NoTls).expect("admin");
            client.query(sql, &[&self.name]).expect("admin query")
        })
    }

    /// The connections to this database: (over TLS, in plain text).
    pub(crate) fn connections_by_tls(&self) -> (i64, i64) {
        let rows = self.admin_query(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
        );
        (rows[0].get(0), rows[0].get(1))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = admin_url();
        let name = self.name.clone();
        off_runtime(move || {
            if let Ok(mut client) = postgres::Client::connect(&admin, postgres::NoTls) {
                let _ =
                    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        });
    }
}
