//! Login and registration throttling (PROTOCOL.md section 3,
//! README.md, "Limits and security"): each test shows the limit holding, answered at once, and
//! the server still serving others.

mod common;

use std::time::{Duration, Instant};

use chat_server::client::identity::Identity;
use chat_server::client::{AuthReply, Client};
use chat_server::throttle::BASE_LOCKOUT;
use common::{assert_server_works, login, password_of, register, user, Backend, TestServer, WAIT};

const TOO_MANY: &str = "too many attempts";

fn password_login(server: &TestServer, name: &str, password: &str) -> AuthReply {
    let mut client = Client::connect(&server.url).expect("connect");
    let reply = client
        .login_password(name, password, None)
        .expect("an answer");
    client.close();
    reply
}

fn challenge_login(server: &TestServer, name: &str, identity: &Identity) -> AuthReply {
    let mut client = Client::connect(&server.url).expect("connect");
    let reply = client.login_challenge(name, identity).expect("an answer");
    client.close();
    reply
}

/// A throttled attempt: `LOGIN_FAILED` "too many attempts", at once.
fn assert_throttled(started: Instant, reply: &AuthReply) {
    assert_eq!(reply.status, "LOGIN_FAILED", "{reply:?}");
    assert_eq!(reply.message.as_deref(), Some(TOO_MANY), "{reply:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "not at once");
}

/// Five wrong passwords for alice: the sixth attempt (even with the right
/// password) is refused at once, while bob logs in, and alice's own
/// challenge login (auto-login) still works. After the lock-out, alice's
/// password works again.
fn wrong_passwords_lock_the_username_only(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.throttle.free_failures = 5;
        config.throttle.loopback_free_failures = 1000;
    }) else {
        return;
    };
    let alice = register(&server, "alice");
    register(&server, "bob");
    for _ in 0..5 {
        let reply = password_login(&server, "alice", "wrong password");
        assert_eq!(reply.status, "LOGIN_FAILED");
        assert_ne!(reply.message.as_deref(), Some(TOO_MANY));
    }
    let started = Instant::now();
    let reply = password_login(&server, "ALICE", &password_of("alice"));
    assert_throttled(started, &reply);
    assert!(password_login(&server, "bob", &password_of("bob")).is_success());
    assert!(challenge_login(&server, "alice", &alice).is_success());
    std::thread::sleep(BASE_LOCKOUT);
    assert!(password_login(&server, "alice", &password_of("alice")).is_success());
    assert_server_works(&server);
}

/// With a low loopback allowance, failures for many names from one address
/// lock that address: password and challenge logins from it are refused at
/// once, a session already logged in keeps chatting, and after the
/// lock-out the address is served again.
fn failures_lock_the_address(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.throttle.loopback_free_failures = 3;
    }) else {
        return;
    };
    let (mut carol, _) = user(&server, "carol");
    let dave = register(&server, "dave");
    for n in 0..3 {
        let reply = password_login(&server, &format!("nobody{n}"), "guess");
        assert_eq!(
            reply.message.as_deref(),
            Some("Invalid username or password")
        );
    }
    let started = Instant::now();
    assert_throttled(
        started,
        &password_login(&server, "dave", &password_of("dave")),
    );
    let started = Instant::now();
    assert_throttled(started, &challenge_login(&server, "dave", &dave));
    carol.request_user_list().unwrap();
    let users = carol.wait_user_list(WAIT).unwrap();
    assert!(users.contains(&("carol".to_string(), true)), "{users:?}");
    std::thread::sleep(BASE_LOCKOUT);
    let mut dave_client = login(&server, "dave", &dave);
    dave_client.wait_user_online("carol", WAIT).unwrap();
    assert_server_works(&server);
}

/// Failed challenge logins never lock the username: after many of them
/// (from an address with room), the user's password and challenge logins
/// still work.
fn challenge_failures_are_not_per_username(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.throttle.free_failures = 2;
        config.throttle.loopback_free_failures = 1000;
    }) else {
        return;
    };
    let erin = register(&server, "erin");
    let impostor = Identity::generate();
    for _ in 0..6 {
        let reply = challenge_login(&server, "erin", &impostor);
        assert_eq!(reply.status, "LOGIN_FAILED");
        assert_eq!(reply.message.as_deref(), Some("Invalid signature"));
    }
    assert!(challenge_login(&server, "erin", &erin).is_success());
    assert!(password_login(&server, "erin", &password_of("erin")).is_success());
    assert_server_works(&server);
}

/// Registrations per address: beyond the allowance `SERVER_ERROR` "too
/// many attempts" at once; logins go on, and after the lock-out the
/// address registers again.
fn registrations_are_limited_per_address(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.throttle.loopback_free_failures = 3;
        config.throttle.free_registrations = 3;
    }) else {
        return;
    };
    let frank = register(&server, "frank");
    register(&server, "grace");
    register(&server, "heidi");
    let mut client = Client::connect(&server.url).unwrap();
    let started = Instant::now();
    let reply = client
        .register("ivan", &password_of("ivan"), &Identity::generate())
        .unwrap();
    assert_eq!(reply.status, "SERVER_ERROR", "{reply:?}");
    assert_eq!(reply.message.as_deref(), Some(TOO_MANY));
    assert!(started.elapsed() < Duration::from_secs(1));
    client.close();
    let mut frank_client = login(&server, "frank", &frank);
    frank_client.request_user_list().unwrap();
    frank_client.wait_user_list(WAIT).unwrap();
    std::thread::sleep(BASE_LOCKOUT);
    register(&server, "ivan");
}

both_stores!(
    wrong_passwords_lock_the_username_only,
    failures_lock_the_address,
    challenge_failures_are_not_per_username,
    registrations_are_limited_per_address,
);
