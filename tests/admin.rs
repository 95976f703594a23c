//! The admin subcommands as an operator runs them: the `chat_server` binary
//! as a child process on a store the test prepared (SQLite file or MySQL
//! database), text and `--json` output, and one-line errors with a non-zero
//! exit for an unknown user, a bad age and a store that is down.

mod common;

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use chat_server::client::identity::Identity;
use chat_server::client::Client;
use chat_server::store::testdb::TestDb;
use chat_server::store::Store;
use serde_json::Value;

use common::{password_of, register, Backend, TestServer, WAIT};

/// The binary with the settings that reach the test's store.
fn admin(store_args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat_server"));
    command
        .current_dir(std::env::temp_dir())
        .env_remove("DATABASE_URL")
        .env_remove("DB_HOST")
        .env_remove("CHAT_SQLITE_PATH")
        .args(store_args);
    command
}

/// Flags that point the binary at the server's store.
fn store_args(server: &TestServer) -> Vec<String> {
    match &server.mysql {
        Some(db) => vec!["--db-url".into(), mysql_url(db)],
        None => {
            let name = server.store.backend_name();
            let path = name.strip_prefix("sqlite:").expect("an SQLite store");
            vec!["--sqlite".into(), path.into()]
        }
    }
}

fn mysql_url(db: &TestDb) -> String {
    let s = &db.settings;
    let credentials = match (s.user.as_str(), s.password.as_str()) {
        ("", _) => String::new(),
        (user, "") => format!("{user}@"),
        (user, password) => format!("{user}:{password}@"),
    };
    format!("mysql://{credentials}{}:{}/{}", s.host, s.port, s.database)
}

/// Runs the binary with `args`; returns (exit code, stdout, stderr).
fn run(server: &TestServer, args: &[&str]) -> (i32, String, String) {
    let output: Output = admin(&store_args(server))
        .args(args)
        .output()
        .expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs a command that must succeed; returns its stdout.
fn ok(server: &TestServer, args: &[&str]) -> String {
    let (code, stdout, stderr) = run(server, args);
    assert_eq!(code, 0, "{args:?}: {stderr}");
    stdout
}

fn json(server: &TestServer, args: &[&str]) -> Value {
    let stdout = ok(server, args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

/// A server whose store holds users and offline messages written directly.
fn prepared(backend: Backend) -> Option<TestServer> {
    let server = TestServer::start(backend)?;
    let store: &Arc<dyn Store> = &server.store;
    store
        .create_user("Alice", "hash", "a2V5LWE=")
        .expect("user");
    store.create_user("bob", "hash", "a2V5LWI=").expect("user");
    for n in 0..3 {
        store
            .store_offline("bob", "alice", &format!("{{\"n\":{n}}}"))
            .expect("offline");
    }
    store.store_offline("Alice", "bob", "{}").expect("offline");
    Some(server)
}

fn users_list_shows_keys_and_waiting_messages(backend: Backend) {
    let Some(server) = prepared(backend) else {
        return;
    };
    server.store.reset_public_key("bob").expect("reset");
    let text = ok(&server, &["users", "list"]);
    assert_eq!(
        text,
        "USER   KEY  OFFLINE\nAlice  yes  3\nbob    no   1\n2 users\n"
    );
    let listed = json(&server, &["users", "list", "--json"]);
    assert_eq!(
        listed,
        serde_json::json!([
            {"username": "Alice", "has_key": true, "offline_waiting": 3},
            {"username": "bob", "has_key": false, "offline_waiting": 1},
        ])
    );
}

fn users_delete_removes_the_user_and_its_mailbox(backend: Backend) {
    let Some(server) = prepared(backend) else {
        return;
    };
    let text = ok(&server, &["users", "delete", "ALICE"]);
    assert_eq!(
        text,
        "deleted user Alice and 3 offline messages waiting for it\n"
    );
    assert_eq!(server.store.find_user("alice").expect("store"), None);
    assert_eq!(server.store.count_offline("alice").expect("store"), 0);
    assert_eq!(server.store.count_offline("bob").expect("store"), 1);
    let deleted = json(&server, &["users", "delete", "bob", "--json"]);
    assert_eq!(
        deleted,
        serde_json::json!({"deleted": "bob", "offline_deleted": 1})
    );

    let (code, stdout, stderr) = run(&server, &["users", "delete", "alice"]);
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert_eq!(stderr, "chat_server: no user named \"alice\"\n");
}

/// After `users reset-key` the old key no longer logs in by challenge; a
/// password login with a new key does, and that key works afterwards.
fn users_reset_key_forces_a_password_login(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let old = register(&server, "carol");
    let text = ok(&server, &["users", "reset-key", "Carol"]);
    assert_eq!(
        text,
        "cleared the public key of carol: the next login must use the password\n"
    );

    let mut client = Client::connect(&server.url).expect("connect");
    let reply = client.login_challenge("carol", &old).expect("reply");
    assert!(!reply.is_success(), "{reply:?}");

    let new = Identity::generate();
    let mut client = Client::connect(&server.url).expect("connect");
    let reply = client
        .login_password("carol", &password_of("carol"), Some(&new))
        .expect("reply");
    assert!(reply.is_success(), "{reply:?}");
    client.close();
    let mut client = Client::connect(&server.url).expect("connect");
    let reply = client.login_challenge("carol", &new).expect("reply");
    assert!(reply.is_success(), "{reply:?}");
    client.open_home().expect("home");
    client
        .wait_user_online("carol", WAIT)
        .expect("carol is online");

    let reset = json(&server, &["users", "reset-key", "carol", "--json"]);
    assert_eq!(reset, serde_json::json!({"reset_key": "carol"}));
    let (code, _, stderr) = run(&server, &["users", "reset-key", "dave"]);
    assert_eq!(code, 1);
    assert_eq!(stderr, "chat_server: no user named \"dave\"\n");
}

fn offline_stats_and_purge(backend: Backend) {
    let Some(server) = prepared(backend) else {
        return;
    };
    let text = ok(&server, &["offline", "stats"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "offline messages waiting: 4");
    assert!(lines[1].starts_with("oldest: "), "{text}");
    assert_eq!(
        &lines[2..],
        ["RECIPIENT  WAITING", "alice      3", "bob        1"]
    );
    let stats = json(&server, &["offline", "stats", "--json"]);
    assert_eq!(stats["total"], 4);
    assert!(stats["oldest_age_secs"].is_u64(), "{stats}");
    assert_eq!(
        stats["per_recipient"],
        serde_json::json!([
            {"recipient": "alice", "waiting": 3},
            {"recipient": "bob", "waiting": 1},
        ])
    );

    let text = ok(&server, &["offline", "purge", "--older-than", "30d"]);
    assert_eq!(text, "purged 0 offline messages older than 30d\n");
    // The database clock counts whole seconds.
    std::thread::sleep(Duration::from_millis(2100));
    let purged = json(
        &server,
        &["offline", "purge", "--older-than", "1s", "--json"],
    );
    assert_eq!(
        purged,
        serde_json::json!({"purged": 4, "older_than_secs": 1})
    );
    let text = ok(&server, &["offline", "stats"]);
    assert_eq!(text, "offline messages waiting: 0\n");
}

both_stores!(
    users_list_shows_keys_and_waiting_messages,
    users_delete_removes_the_user_and_its_mailbox,
    users_reset_key_forces_a_password_login,
    offline_stats_and_purge,
);

#[test]
fn a_store_that_is_down_is_a_one_line_error() {
    let output = admin(&["--db-url".into(), "mysql://root@127.0.0.1:1/chat".into()])
        .args(["users", "list"])
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("chat_server: store unavailable"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn a_bad_age_is_a_usage_error() {
    let output = admin(&[])
        .args(["offline", "purge", "--older-than", "soon"])
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--older-than"), "{stderr}");
}
