//! Test support (hidden from docs, public so `tests/` can use it): throwaway
//! MySQL databases for tests, dropped again when the guard goes out of scope,
//! and the exact seed schema of the Python server.
//!
//! The server comes from env `CHAT_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`; the database part is ignored). When it
//! is unreachable, [`mysql_test_db`] prints `SKIPPED: MySQL unreachable at ...`
//! to stderr and returns `None`, unless `CHAT_TEST_REQUIRE_MYSQL=1`, in which
//! case it panics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::mysql::prelude::{FromRow, Queryable};
use ::mysql::Conn;

use super::mysql::MysqlSettings;

/// Env var holding the test server URL.
pub const URL_ENV: &str = "CHAT_TEST_MYSQL_URL";
/// Env var that turns "MySQL unreachable" from a skip into a failure.
pub const REQUIRE_ENV: &str = "CHAT_TEST_REQUIRE_MYSQL";
/// Test server URL when [`URL_ENV`] is unset.
pub const DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// The Python server's schema, verbatim from the seed document.
pub const SEED_SCHEMA: [&str; 2] = [
    "CREATE TABLE usuarios (
    id INT AUTO_INCREMENT PRIMARY KEY,
    userName VARCHAR(255) NOT NULL UNIQUE,
    senha VARCHAR(255) NOT NULL, -- Hash Argon2
    public_key TEXT NOT NULL     -- Chave Publica de Assinatura
)",
    "CREATE TABLE mensagens_offline (
    id INT AUTO_INCREMENT PRIMARY KEY,
    remetente_username VARCHAR(255) NOT NULL,
    destinatario_username VARCHAR(255) NOT NULL,
    conteudo TEXT NOT NULL,      -- Payload E2EE (Nao legivel pelo servidor)
    data_envio TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)",
];

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A freshly created, uniquely named, empty database; dropped on `Drop`
/// (also when the test panics).
pub struct TestDb {
    /// Settings pointing at the new database.
    pub settings: MysqlSettings,
}

/// The settings from [`URL_ENV`] (or [`DEFAULT_URL`]).
pub fn test_server_settings() -> MysqlSettings {
    let url = std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_string());
    match MysqlSettings::from_url(&url) {
        Ok(s) => s,
        Err(e) => panic!("{URL_ENV} is not a usable MySQL URL: {e}"),
    }
}

/// Creates a new database `chat_test_<pid>_<counter>_<nanos>` on the test
/// server, or returns `None` (after printing `SKIPPED: ...`) if the server
/// cannot be reached and [`REQUIRE_ENV`] is not `1`.
pub fn mysql_test_db() -> Option<TestDb> {
    let server = test_server_settings();
    let opts = server
        .server_opts()
        .tcp_connect_timeout(Some(Duration::from_secs(2)));
    let mut conn = match Conn::new(opts) {
        Ok(c) => c,
        Err(e) => {
            if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
                panic!("MySQL unreachable at {server} ({REQUIRE_ENV}=1 requires it): {e}");
            }
            eprintln!("SKIPPED: MySQL unreachable at {server}: {e}");
            return None;
        }
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "chat_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    );
    // Plain CREATE DATABASE, as the seed document does: server defaults.
    if let Err(e) = conn.query_drop(format!("CREATE DATABASE `{name}`")) {
        panic!("cannot create test database {name} on {server}: {e}");
    }
    let mut settings = server;
    settings.database = name;
    Some(TestDb { settings })
}

impl TestDb {
    fn connect(&self) -> Conn {
        match Conn::new(self.settings.database_opts()) {
            Ok(c) => c,
            Err(e) => panic!("cannot connect to {}: {e}", self.settings),
        }
    }

    /// Runs one raw SQL statement in the test database; panics on error.
    pub fn exec(&self, sql: &str) {
        if let Err(e) = self.connect().query_drop(sql) {
            panic!("{sql}: {e}");
        }
    }

    /// First row of a raw query in the test database; panics on error.
    pub fn query_first<T: FromRow>(&self, sql: &str) -> Option<T> {
        match self.connect().query_first(sql) {
            Ok(r) => r,
            Err(e) => panic!("{sql}: {e}"),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = &self.settings.database;
        let result = Conn::new(self.settings.server_opts())
            .and_then(|mut c| c.query_drop(format!("DROP DATABASE IF EXISTS `{name}`")));
        if let Err(e) = result {
            eprintln!("warning: could not drop test database {name}: {e}");
        }
    }
}
