//! The `chat_client` binary driven as child processes against a server
//! started in this process (SQLite): registration and logins as the mobile
//! client does them, two clients exchanging end-to-end encrypted messages
//! both ways, a message to an offline user picked up later, and exit codes.

mod cli_support;
mod common;

use std::os::unix::fs::PermissionsExt;

use cli_support::{
    cli, expect_code, password, register, run, text, wait_presence, wait_until, Running, TempDir,
};
use common::{user, Backend, TestServer};

fn recv(url: &str, dir: &TempDir, args: &[&str]) -> Running {
    let mut all = vec!["recv"];
    all.extend_from_slice(args);
    Running::start(cli(url, dir, &all), "")
}

fn send(url: &str, dir: &TempDir, to: &str, message: &str) -> String {
    expect_code(&run(cli(url, dir, &["send", "--to", to, message]), ""), 0)
}

#[test]
fn two_clients_chat_both_ways_and_offline() {
    let server = TestServer::start(Backend::Sqlite).expect("server");
    let url = server.url.as_str();
    let (a, b) = (TempDir::new("alice"), TempDir::new("bob"));
    register(url, &a, "alice");
    register(url, &b, "bob");
    let (mut observer, _) = user(&server, "observer");

    // alice -> bob: bob listens, alice runs the handshake, then sends.
    let bob = recv(url, &b, &["--count", "1", "--timeout", "20"]);
    wait_presence(&mut observer, "bob", true);
    send(url, &a, "bob", "hello bob, olá");
    let out = expect_code(&bob.finish(), 0);
    assert!(out.contains("alice: hello bob, olá"), "{out}");

    // bob -> alice, with the keys both saved; JSON output.
    let alice = recv(url, &a, &["--count", "1", "--timeout", "20", "--json"]);
    wait_presence(&mut observer, "alice", true);
    send(url, &b, "alice", "hi alice");
    let out = expect_code(&alice.finish(), 0);
    let line: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(line["from"], "bob");
    assert_eq!(line["text"], "hi alice");
    assert!(line["time"].as_u64().is_some(), "{line}");

    // alice -> offline bob: sealed with the saved keys, stored, read later.
    wait_presence(&mut observer, "bob", false);
    send(url, &a, "bob", "while you were away");
    assert_eq!(server.store.count_offline("bob").unwrap(), 1);
    let out = expect_code(
        &recv(url, &b, &["--count", "1", "--timeout", "10"]).finish(),
        0,
    );
    assert!(out.contains("alice: while you were away"), "{out}");
    wait_until("the offline store to empty", || {
        server.store.count_offline("bob").unwrap() == 0
    });
}

#[test]
fn login_uses_the_password_once_then_the_saved_key() {
    let server = TestServer::start(Backend::Sqlite).expect("server");
    let url = server.url.as_str();
    let (first, second) = (TempDir::new("first"), TempDir::new("second"));
    register(url, &first, "dora");
    // A second machine: the password, with a fresh key saved afterwards.
    let login = |dir: &TempDir, input: &str| {
        run(cli(url, dir, &["login", "dora", "--password-stdin"]), input)
    };
    let out = login(&second, &password("dora"));
    let (stdout, stderr) = text(&out);
    expect_code(&out, 0);
    let files: Vec<_> = walk(second.path());
    let id_file = files
        .iter()
        .find(|p| p.ends_with("identity.json"))
        .expect("identity saved");
    let mode = std::fs::metadata(id_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let seed = std::fs::read_to_string(id_file).unwrap();
    let seed: serde_json::Value = serde_json::from_str(&seed).unwrap();
    let seed = seed["seed"].as_str().unwrap();
    assert!(!stdout.contains(seed) && !stderr.contains(seed));
    // Afterwards the saved key logs in (no password on stdin).
    expect_code(&login(&second, ""), 0);
    // The first machine's key was replaced: without a password it fails...
    let out = run(cli(url, &first, &["recv", "--timeout", "0.2"]), "");
    expect_code(&out, 3);
    // ...and with the password it logs in again.
    expect_code(&login(&first, &password("dora")), 0);
    expect_code(&run(cli(url, &first, &["recv", "--timeout", "0.2"]), ""), 0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn exit_codes_say_what_happened() {
    let server = TestServer::start(Backend::Sqlite).expect("server");
    let url = server.url.as_str();
    let dir = TempDir::new("codes");
    register(url, &dir, "erin");
    let one_line = |out: &std::process::Output| {
        let (_, stderr) = text(out);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        stderr
    };
    // Usage.
    let out = run(cli(url, &dir, &["send", "--to", "x"]), "");
    expect_code(&out, 2);
    // The name is taken; a wrong password.
    let out = run(
        cli(url, &dir, &["register", "erin", "--password-stdin"]),
        "wrong password\n",
    );
    expect_code(&out, 3);
    assert!(one_line(&out).contains("taken"));
    let other = TempDir::new("other");
    let out = run(
        cli(url, &other, &["login", "erin", "--password-stdin"]),
        "wrong\n",
    );
    expect_code(&out, 3);
    one_line(&out);
    // No such user; an offline user with no session yet.
    let out = run(cli(url, &dir, &["send", "--to", "nobody", "hi"]), "");
    expect_code(&out, 1);
    assert!(one_line(&out).contains("no user named nobody"));
    register(url, &other, "fred");
    let out = run(
        cli(url, &dir, &["--user", "erin", "send", "--to", "fred", "hi"]),
        "",
    );
    expect_code(&out, 1);
    assert!(one_line(&out).contains("offline"));
    // recv that times out before its count.
    let out = run(
        cli(url, &dir, &["recv", "--count", "1", "--timeout", "0.3"]),
        "",
    );
    expect_code(&out, 5);
    // No server there.
    let dead = "ws://127.0.0.1:1";
    let out = run(
        cli(dead, &dir, &["register", "x", "--password-stdin"]),
        "wrong password\n",
    );
    expect_code(&out, 4);
    assert!(one_line(&out).contains("cannot connect"));
}
