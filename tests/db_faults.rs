//! The database goes away while the server runs (MySQL, through a TCP proxy
//! the test cuts and restores): requests that need it get `SERVER_ERROR`,
//! routing between online users goes on, and when the database is back the
//! server recovers without a restart.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chat_server::client::identity::Identity;
use chat_server::client::Client;
use chat_server::store::testdb::mysql_test_db;
use chat_server::store::{MysqlStore, Store};
use common::{test_config, TestServer, WAIT};
use serde_json::json;

/// A TCP proxy to the database that can be cut (every connection dropped,
/// new ones refused) and restored.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (cut_flag, streams) = (cut.clone(), open.clone());
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if cut_flag.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut streams = streams.lock().unwrap();
                streams.push(client.try_clone().unwrap());
                streams.push(server.try_clone().unwrap());
                pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                pump(server, client);
            }
        });
        Proxy { port, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0 || to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

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
