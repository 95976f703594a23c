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
