//! The `chat_server` binary as a user runs it: settings from flags and the
//! environment, a one-line error for a bad value, a start line naming the
//! address and the store, and a server that answers.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chat_server::client::Client;

fn chat_server() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat_server"));
    // No .env of the checkout and no MySQL settings leak in.
    command
        .current_dir(std::env::temp_dir())
        .env_remove("DATABASE_URL")
        .env_remove("DB_HOST")
        .env("CHAT_ARGON2_M_KIB", "256")
        .env("CHAT_ARGON2_T", "1");
    command
}

#[test]
fn bad_setting_is_one_line_naming_it() {
    let output = chat_server()
        .args(["--renew-min-frames", "90", "--renew-max-frames", "10"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("CHAT_RENEW"), "{stderr}");

    let output = chat_server().env("CHAT_BIND", "nowhere").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("CHAT_BIND"));
}

#[test]
fn help_lists_the_settings() {
    let output = chat_server().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for setting in [
        "--bind",
        "CHAT_BIND",
        "DATABASE_URL",
        "DB_HOST",
        "--sqlite",
        "CHAT_RENEW_HOLD_MS",
        "CHAT_LOGIN_FREE_FAILURES",
        "CHAT_LOOPBACK_FREE_FAILURES",
        "CHAT_REGISTRATIONS_PER_ADDRESS",
        "CHAT_LOGIN_LOCKOUT_MAX_SECS",
        "CHAT_THROTTLE_TABLE_SIZE",
        "CHAT_RATE_LIMIT_PER_SEC",
        "CHAT_RATE_LIMIT_BURST",
        "CHAT_TYPING_RATE_PER_SEC",
        "CHAT_TYPING_RATE_BURST",
        "CHAT_RATE_LIMIT_STRIKES",
        "CHAT_OFFLINE_QUOTA",
        "CHAT_OFFLINE_MAX_AGE",
        "CHAT_METRICS_PUBLIC",
        "TLS_CERT",
        "TLS_KEY",
        "users",
        "offline",
    ] {
        assert!(help.contains(setting), "--help lacks {setting}");
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn starts_with_the_embedded_store_and_serves() {
    let db = std::env::temp_dir().join(format!("chat_server_binary_{}.db", std::process::id()));
    let mut child = chat_server()
        .args(["--bind", "127.0.0.1:0", "--sqlite"])
        .arg(&db)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _running = Running(child);
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let start_line = loop {
        assert!(Instant::now() < deadline, "no start line");
        let line = lines.next().expect("server exited early").unwrap();
        if line.contains("listening on") {
            break line;
        }
    };
    assert!(start_line.contains("sqlite"), "store named: {start_line}");
    let address = start_line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_owned();
    let url = format!("ws://{address}");
    let (mut alice, _) = Client::register_and_login(&url, "alice", "secret password").unwrap();
    alice.request_user_list().unwrap();
    let users = alice.wait_user_list(Duration::from_secs(5)).unwrap();
    assert_eq!(users, vec![("alice".to_string(), true)]);
    let connected = lines
        .take_while(|line| line.is_ok())
        .map(|line| line.unwrap_or_default())
        .find(|line| line.contains("alice") && line.contains("logged in"));
    assert!(connected.is_some(), "a log line for the login");
    drop(_running);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// Starts the binary on a port of its choice and the SQLite file `db`;
/// returns the child and its WebSocket URL.
fn start_binary(db: &std::path::Path) -> (Child, String) {
    let mut child = chat_server()
        .args(["--bind", "127.0.0.1:0", "--sqlite"])
        .arg(db)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("server: {line}");
            if line.contains("listening on") {
                let _ = line_tx.send(line);
            }
        }
    });
    let start_line = line_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no start line");
    let address = start_line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_owned();
    (child, format!("ws://{address}"))
}

/// SIGTERM shuts the server down gracefully: a logged-in client sees close
/// code 1001, a message queued for a session that is not ready yet is in the
/// offline store, and the process exits 0 within 5 s.
#[test]
fn sigterm_shuts_down_gracefully() {
    use chat_server::client::identity::Identity;
    use chat_server::store::{SqliteStore, Store};
    use serde_json::json;

    let db =
        std::env::temp_dir().join(format!("chat_server_binary_term_{}.db", std::process::id()));
    let (child, url) = start_binary(&db);
    let mut running = Running(child);
    let (mut alice, _) = Client::register_and_login(&url, "alice", "secret password").unwrap();
    alice.request_user_list().unwrap();
    alice.wait_user_list(Duration::from_secs(5)).unwrap();
    // Bob logs in but never opens his home screen: relays to him are queued.
    let bob_identity = Identity::generate();
    let mut register = Client::connect(&url).unwrap();
    assert!(register
        .register("bob", "bob password", &bob_identity)
        .unwrap()
        .is_success());
    register.close();
    let mut bob = Client::connect(&url).unwrap();
    assert!(bob
        .login_challenge("bob", &bob_identity)
        .unwrap()
        .is_success());
    alice
        .send(&json!({"type": "E2E_MSG", "to": "bob",
            "payload": {"iv": "aXY=", "ct": "Y3Q=", "mac": "bWFj"}}))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let pid = libc::pid_t::try_from(running.0.id()).unwrap();
    let signalled = Instant::now();
    // SAFETY: kill with a valid pid and signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let close = alice.wait_closed(Duration::from_secs(5)).unwrap();
    assert_eq!(close.code, 1001, "{close:?}");
    let status = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    drop(bob);
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(store.count_offline("bob").unwrap(), 1);
    drop(store);
    drop(running);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}
