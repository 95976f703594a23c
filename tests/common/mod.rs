//! Shared harness of the integration tests: a real server on port 0, in this
//! process, on SQLite (a temp file) or on MySQL (a fresh database dropped
//! afterwards), and helpers that drive it with the crate's own client.
#![allow(dead_code)]

pub mod proxy;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chat_server::config::{Config, HashParams};
use chat_server::server::ServerHandle;
use chat_server::store::testdb::{mysql_test_db, TestDb};
use chat_server::store::{MysqlStore, SqliteStore, Store};

/// How long a test waits for something a user would see at once.
pub const WAIT: Duration = Duration::from_secs(5);

/// Which store a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Mysql,
}

/// Runs one test function against both stores, as two `#[test]`s.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite)
                }
                #[test]
                fn mysql() {
                    super::$name($crate::common::Backend::Mysql)
                }
            }
        )*
    };
}

/// A running test server and what it needs to stay alive.
pub struct TestServer {
    pub handle: Option<ServerHandle>,
    pub store: Arc<dyn Store>,
    pub url: String,
    pub mysql: Option<TestDb>,
    sqlite_path: Option<PathBuf>,
}

static NEXT_FILE: AtomicU64 = AtomicU64::new(0);

/// Settings for tests: loopback, port 0, cheap argon2 (the real parameters
/// are covered by their own tests).
pub fn test_config() -> Config {
    let mut config = Config::for_sqlite(PathBuf::from("unused.db"));
    config.hash = HashParams {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    };
    config
}

impl TestServer {
    /// A server with the test defaults; `None` when the backend is MySQL and
    /// no MySQL is reachable (the skip is printed).
    pub fn start(backend: Backend) -> Option<TestServer> {
        TestServer::start_with(backend, |_| {})
    }

    /// Like [`TestServer::start`], with settings changed by `adjust`.
    pub fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<TestServer> {
        let mut config = test_config();
        adjust(&mut config);
        let (store, mysql, sqlite_path) = open_store(backend)?;
        TestServer::start_on(config, store, mysql, sqlite_path)
    }

    pub fn start_on(
        config: Config,
        store: Arc<dyn Store>,
        mysql: Option<TestDb>,
        sqlite_path: Option<PathBuf>,
    ) -> Option<TestServer> {
        let handle = ServerHandle::start_with_store(config, store.clone()).expect("server starts");
        let url = format!("ws://{}", handle.local_addr());
        Some(TestServer {
            handle: Some(handle),
            store,
            url,
            mysql,
            sqlite_path,
        })
    }

    /// A server on a store the test built (e.g. a wrapper that injects
    /// faults); `sqlite_path` is removed afterwards.
    pub fn start_on_store(
        store: Arc<dyn Store>,
        sqlite_path: Option<PathBuf>,
        adjust: impl FnOnce(&mut Config),
    ) -> TestServer {
        let mut config = test_config();
        adjust(&mut config);
        TestServer::start_on(config, store, None, sqlite_path).expect("server starts")
    }

    /// Starts a server on an existing MySQL test database (e.g. a seed one).
    pub fn start_on_mysql(db: TestDb, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let store: Arc<dyn Store> =
            Arc::new(MysqlStore::connect(&db.settings, 4).expect("MySQL store opens"));
        let mut config = test_config();
        adjust(&mut config);
        TestServer::start_on(config, store, Some(db), None).expect("server starts")
    }

    /// Stops the server (graceful shutdown).
    pub fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(path) = &self.sqlite_path {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
}

type OpenedStore = (Arc<dyn Store>, Option<TestDb>, Option<PathBuf>);

fn open_store(backend: Backend) -> Option<OpenedStore> {
    match backend {
        Backend::Sqlite => {
            let path = std::env::temp_dir().join(format!(
                "chat_server_test_{}_{}.db",
                std::process::id(),
                NEXT_FILE.fetch_add(1, Ordering::Relaxed)
            ));
            let store = SqliteStore::open(&path).expect("SQLite store opens");
            Some((Arc::new(store), None, Some(path)))
        }
        Backend::Mysql => {
            let db = mysql_test_db()?;
            let store = MysqlStore::connect(&db.settings, 4).expect("MySQL store opens");
            Some((Arc::new(store), Some(db), None))
        }
    }
}

use chat_server::client::identity::Identity;
use chat_server::client::Client;

/// The password every test user gets.
pub fn password_of(name: &str) -> String {
    format!("password of {name}")
}

/// Registers `name` (on its own connection, like the register page).
pub fn register(server: &TestServer, name: &str) -> Identity {
    let identity = Identity::generate();
    let mut client = Client::connect(&server.url).expect("connect");
    let reply = client
        .register(name, &password_of(name), &identity)
        .expect("register reply");
    assert!(reply.is_success(), "register {name}: {reply:?}");
    client.close();
    identity
}

/// Logs `name` in with the challenge and opens the home screen (user list,
/// offline messages), as the mobile client's auto-login does.
pub fn login(server: &TestServer, name: &str, identity: &Identity) -> Client {
    let mut client = Client::connect(&server.url).expect("connect");
    let reply = client.login_challenge(name, identity).expect("login reply");
    assert!(reply.is_success(), "login {name}: {reply:?}");
    client.open_home().expect("home screen");
    client
}

/// Registers and logs in a user who is ready to chat.
pub fn user(server: &TestServer, name: &str) -> (Client, Identity) {
    let identity = register(server, name);
    let client = login(server, name, &identity);
    (client, identity)
}

use chat_server::client::{ClientConnection, Command};
use serde_json::Value;

static NEXT_NAME: AtomicU64 = AtomicU64::new(0);

/// A user name not used before in this process.
pub fn fresh_name(prefix: &str) -> String {
    format!("{prefix}{}", NEXT_NAME.fetch_add(1, Ordering::Relaxed))
}

/// Sends one command and returns the next command the server sends.
pub fn ask(conn: &mut ClientConnection, command: &Value) -> Command {
    conn.send(command).expect("send");
    conn.recv(WAIT)
        .expect("answer")
        .unwrap_or_else(|| panic!("no answer to {command} within {WAIT:?}"))
}

/// `(status, message)` of an `auth_response`; panics on anything else.
pub fn auth_status(reply: &Command) -> (String, Option<String>) {
    assert_eq!(
        reply.get("type").and_then(Value::as_str),
        Some("auth_response"),
        "expected an auth_response, got {reply:?}"
    );
    let status = reply["status"].as_str().expect("status").to_string();
    let message = reply
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string);
    (status, message)
}

/// Proves the server still serves: a fresh user registers and logs in.
pub fn assert_server_works(server: &TestServer) {
    let name = fresh_name("healthy");
    let mut client = login(server, &name, &register(server, &name));
    client
        .wait_user_online(&name, WAIT)
        .expect("the new user sees itself online");
    client.close();
}
