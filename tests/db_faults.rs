//! The database goes away while the server runs (MySQL, through a TCP proxy
//! the test cuts and restores): requests that need it get `SERVER_ERROR`,
//! routing between online users goes on, and when the database is back the
//! server recovers without a restart.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chat_server::client::identity::Identity;
use chat_server::client::Client;
use chat_server::store::testdb::mysql_test_db;
use chat_server::store::{MysqlStore, Store};
use common::proxy::Proxy;
use common::{test_config, TestServer, WAIT};
use serde_json::json;

fn register_status(server: &TestServer, name: &str) -> String {
    let mut client = Client::connect(&server.url).unwrap();
    let reply = client
        .register(name, "long enough password", &Identity::generate())
        .unwrap();
    reply.status
}

#[test]
fn database_lost_and_back_while_running() {
    let Some(db) = mysql_test_db() else { return };
    let proxy = Proxy::start(format!("{}:{}", db.settings.host, db.settings.port));
    let mut settings = db.settings.clone();
    settings.host = "127.0.0.1".into();
    settings.port = proxy.port;
    let store: Arc<dyn Store> = Arc::new(MysqlStore::connect(&settings, 4).unwrap());
    let server = TestServer::start_on(test_config(), store, Some(db), None).unwrap();
    let (mut alice, _) = common::user(&server, "alice");
    let (mut bob, _) = common::user(&server, "bob");
    alice.wait_user_online("bob", WAIT).unwrap();

    proxy.cut();
    let started = Instant::now();
    assert_eq!(register_status(&server, "carol"), "SERVER_ERROR");
    let answered_in = started.elapsed();
    assert!(
        answered_in < Duration::from_secs(15),
        "answered in {answered_in:?}"
    );
    // Routing between online users does not need the database.
    alice
        .send(&json!({"type": "E2E_MSG", "to": "bob", "payload": {"n": 1}}))
        .unwrap();
    let relayed = loop {
        let command = bob
            .connection()
            .recv(WAIT)
            .unwrap()
            .expect("relay during the outage");
        if command["type"] == "E2E_MSG" {
            break command;
        }
    };
    assert_eq!(relayed["payload"], json!({"n": 1}));

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match register_status(&server, "dave").as_str() {
            "REGISTER_SUCCESS" => break,
            status => {
                assert!(Instant::now() < deadline, "no recovery: {status}");
                thread::sleep(Duration::from_millis(200));
            }
        }
    }
    assert!(server.store.find_user("dave").unwrap().is_some());
}

/// Pooled connections that the database closed (here with `KILL`, as a
/// restart or `wait_timeout` would) are not handed out again: the
/// requests right after succeed, as when nothing happened.
#[test]
fn connections_the_database_closed_are_not_used_again() {
    use mysql::prelude::Queryable;
    let Some(db) = mysql_test_db() else { return };
    let store = MysqlStore::connect(&db.settings, 4).unwrap();
    assert_eq!(store.find_user("nobody").unwrap(), None);
    let mut admin = mysql::Conn::new(db.settings.database_opts()).unwrap();
    let ids: Vec<u64> = admin
        .exec(
            "SELECT id FROM information_schema.PROCESSLIST WHERE db = ? AND id <> CONNECTION_ID()",
            (db.settings.database.clone(),),
        )
        .unwrap();
    assert!(!ids.is_empty(), "the store holds a pooled connection");
    for id in &ids {
        admin.query_drop(format!("KILL {id}")).unwrap();
    }
    // Let the kills reach the pooled sockets.
    thread::sleep(Duration::from_millis(200));
    for _ in 0..8 {
        assert_eq!(store.find_user("nobody").unwrap(), None);
    }
}
