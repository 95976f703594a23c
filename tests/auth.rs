//! Authentication (PROTOCOL.md section 3) over real sockets, against both
//! stores: register, password login, challenge login, the per-connection
//! rules, the signature oracle, case-insensitive names, rehashing, session
//! replacement and clients that vanish mid-login.

mod common;

use std::time::{Duration, Instant};

use chat_server::client::{Client, ClientConnection, Command, Event, Identity};
use chat_server::config::HashParams;
use chat_server::crypto::{b64_decode, b64_encode};
use common::{
    ask, assert_server_works, auth_status, login, password_of, register, user, Backend, TestServer,
    WAIT,
};
use serde_json::{json, Value};

fn connect(server: &TestServer) -> ClientConnection {
    ClientConnection::connect(&server.url).expect("connect")
}

fn register_cmd(name: &str, identity: &Identity) -> Value {
    json!({
        "type": "REGISTER",
        "username": name,
        "password": password_of(name),
        "public_key": identity.public_key_b64(),
    })
}

fn kind(command: &Command) -> &str {
    command.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Asks for a challenge and returns its decoded nonce.
fn challenge(conn: &mut ClientConnection, name: &str) -> Vec<u8> {
    let reply = ask(
        conn,
        &json!({"type": "LOGIN_CHALLENGE_REQUEST", "username": name}),
    );
    assert_eq!(kind(&reply), "LOGIN_CHALLENGE", "{reply:?}");
    let nonce = b64_decode(reply["nonce"].as_str().expect("nonce string")).expect("base64 nonce");
    assert_eq!(nonce.len(), 32, "nonce length");
    nonce
}

/// Answers a challenge with `signature` and returns `(status, message)`.
fn respond(conn: &mut ClientConnection, name: &str, signature: &[u8]) -> (String, Option<String>) {
    auth_status(&ask(
        conn,
        &json!({
            "type": "LOGIN_CHALLENGE_RESPONSE",
            "username": name,
            "signature": b64_encode(signature),
        }),
    ))
}

/// A full challenge login on a new connection; returns `(status, message)`
/// and the connection.
fn challenge_login(
    server: &TestServer,
    name: &str,
    identity: &Identity,
) -> ((String, Option<String>), ClientConnection) {
    let mut conn = connect(server);
    let nonce = challenge(&mut conn, name);
    (respond(&mut conn, name, &identity.sign(&nonce)), conn)
}

fn assert_login_failed(reply: &(String, Option<String>), message: &str) {
    assert_eq!(reply.0, "LOGIN_FAILED", "{reply:?}");
    assert_eq!(reply.1.as_deref(), Some(message), "{reply:?}");
}

/// After `LOGIN_FAILED` (or a refused command) the server closes.
fn assert_closed_by_server(conn: &mut ClientConnection) {
    let info = conn
        .wait_closed(WAIT)
        .expect("the server closes the connection");
    assert!(
        conn.recv(Duration::ZERO).is_err(),
        "nothing may follow the close: {info:?}"
    );
}

/// The connection stays open (nothing arrives, no close) for a moment.
fn assert_still_open(conn: &mut ClientConnection) {
    match conn.recv(Duration::from_millis(200)) {
        Ok(None) => {}
        other => panic!("expected an open, silent connection, got {other:?}"),
    }
}

/// The user list `client` gets when it asks now (the last one to arrive).
fn current_user_list(client: &mut Client) -> Vec<(String, bool)> {
    client.request_user_list().expect("REQUEST_USER_LIST");
    let mut last = client.wait_user_list(WAIT).expect("a user list");
    for event in client.drain_events(Duration::from_millis(300)).unwrap() {
        if let Event::UserList(users) = event {
            last = users;
        }
    }
    last
}

fn online_in(users: &[(String, bool)], name: &str) -> Option<bool> {
    users.iter().find(|(u, _)| u == name).map(|(_, o)| *o)
}

// ----- register and password login -------------------------------------------

fn password_login_commits_the_new_key_before_success(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let old = register(&server, "alice");
    let new = Identity::generate();
    let mut client = Client::connect(&server.url).unwrap();
    let reply = client
        .login_password("alice", &password_of("alice"), Some(&new))
        .unwrap();
    assert_eq!(reply.status, "LOGIN_SUCCESS", "{reply:?}");
    // Committed before LOGIN_SUCCESS: visible at once, through the store.
    let stored = server.store.find_user("alice").unwrap().expect("alice");
    assert_eq!(stored.public_key, new.public_key_b64());
    client.close();

    let (reply, mut conn) = challenge_login(&server, "alice", &old);
    assert_login_failed(&reply, "Invalid signature");
    assert_closed_by_server(&mut conn);
    let (reply, _conn) = challenge_login(&server, "alice", &new);
    assert_eq!(reply.0, "LOGIN_SUCCESS", "{reply:?}");
}

both_stores!(password_login_commits_the_new_key_before_success);

fn password_login_without_or_with_a_bad_new_key(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let identity = register(&server, "alice");
    // A bad new_public_key: SERVER_ERROR, key untouched, connection usable.
    let mut conn = connect(&server);
    let reply = auth_status(&ask(
        &mut conn,
        &json!({"type": "LOGIN", "username": "alice", "password": password_of("alice"),
                "new_public_key": "c2hvcnQ="}),
    ));
    assert_eq!(reply.0, "SERVER_ERROR", "{reply:?}");
    assert!(reply.1.is_some_and(|m| !m.is_empty()));
    assert_still_open(&mut conn);
    // Without new_public_key the stored key stays.
    let reply = auth_status(&ask(
        &mut conn,
        &json!({"type": "LOGIN", "username": "alice", "password": password_of("alice")}),
    ));
    assert_eq!(reply.0, "LOGIN_SUCCESS", "{reply:?}");
    let stored = server.store.find_user("alice").unwrap().unwrap();
    assert_eq!(stored.public_key, identity.public_key_b64());
    drop(conn);
    let (reply, _conn) = challenge_login(&server, "alice", &identity);
    assert_eq!(reply.0, "LOGIN_SUCCESS", "{reply:?}");
}

both_stores!(password_login_without_or_with_a_bad_new_key);

fn duplicate_registration_in_any_case_and_connection_stays_usable(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    register(&server, "alice");
    let mut conn = connect(&server);
    for name in ["alice", "ALICE", "aLiCe"] {
        let reply = auth_status(&ask(&mut conn, &register_cmd(name, &Identity::generate())));
        assert_eq!(
            reply.0, "REGISTER_FAILED:USERNAME_EXISTS",
            "{name}: {reply:?}"
        );
    }
    // The register connection stays open and may go on (4th and 5th command).
    let bob = Identity::generate();
    let reply = auth_status(&ask(&mut conn, &register_cmd("bob", &bob)));
    assert_eq!(reply.0, "REGISTER_SUCCESS", "{reply:?}");
    let reply = auth_status(&ask(&mut conn, &register_cmd("Bob", &bob)));
    assert_eq!(reply.0, "REGISTER_FAILED:USERNAME_EXISTS", "{reply:?}");
    // The first registration's key and spelling are kept.
    let stored = server.store.find_user("ALICE").unwrap().unwrap();
    assert_eq!(stored.username, "alice");
    assert_server_works(&server);
}

both_stores!(duplicate_registration_in_any_case_and_connection_stays_usable);

fn invalid_registration_fields_get_server_error(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let key = Identity::generate().public_key_b64();
    let long = "x".repeat(65);
    let cases: Vec<(&str, Value)> = vec![
        (
            "empty name",
            json!({"username": "", "password": "pw", "public_key": key}),
        ),
        (
            "leading space",
            json!({"username": " carol", "password": "pw", "public_key": key}),
        ),
        (
            "trailing space",
            json!({"username": "carol ", "password": "pw", "public_key": key}),
        ),
        (
            "trailing tab",
            json!({"username": "carol\t", "password": "pw", "public_key": key}),
        ),
        (
            "control char",
            json!({"username": "ca\u{7}rol", "password": "pw", "public_key": key}),
        ),
        (
            "newline",
            json!({"username": "ca\nrol", "password": "pw", "public_key": key}),
        ),
        (
            "65 chars",
            json!({"username": long, "password": "pw", "public_key": key}),
        ),
        (
            "short key",
            json!({"username": "carol", "password": "pw", "public_key": "c2hvcnQ="}),
        ),
        (
            "not base64",
            json!({"username": "carol", "password": "pw", "public_key": "not base64!"}),
        ),
        (
            "missing username",
            json!({"password": "pw", "public_key": key}),
        ),
        (
            "missing password",
            json!({"username": "carol", "public_key": key}),
        ),
        (
            "missing key",
            json!({"username": "carol", "password": "pw"}),
        ),
        (
            "name not a string",
            json!({"username": 7, "password": "pw", "public_key": key}),
        ),
    ];
    for (case, mut command) in cases {
        command["type"] = json!("REGISTER");
        let mut conn = connect(&server);
        let reply = auth_status(&ask(&mut conn, &command));
        assert_eq!(reply.0, "SERVER_ERROR", "{case}: {reply:?}");
        assert!(
            reply.1.as_deref().is_some_and(|m| !m.is_empty()),
            "{case}: SERVER_ERROR needs a message: {reply:?}"
        );
        if let Some(name) = command["username"].as_str() {
            if !name.is_empty() {
                assert!(
                    server.store.find_user(name).unwrap().is_none(),
                    "{case}: stored anyway"
                );
            }
        }
        // The connection stays usable: a valid registration on it succeeds.
        assert_still_open(&mut conn);
        let name = common::fresh_name("valid");
        let reply = auth_status(&ask(&mut conn, &register_cmd(&name, &Identity::generate())));
        assert_eq!(reply.0, "REGISTER_SUCCESS", "{case}: then {reply:?}");
    }
    assert!(server.store.find_user("carol").unwrap().is_none());
    // 64 characters (not bytes) is the limit.
    let name64 = "é".repeat(64);
    let mut conn = connect(&server);
    let reply = auth_status(&ask(
        &mut conn,
        &register_cmd(&name64, &Identity::generate()),
    ));
    assert_eq!(reply.0, "REGISTER_SUCCESS", "64 characters: {reply:?}");
    assert_server_works(&server);
}

both_stores!(invalid_registration_fields_get_server_error);

fn register_success_only_after_commit(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    for n in 0..5 {
        let name = format!("user{n}");
        let identity = Identity::generate();
        let mut conn = connect(&server);
        let reply = auth_status(&ask(&mut conn, &register_cmd(&name, &identity)));
        assert_eq!(reply.0, "REGISTER_SUCCESS", "{reply:?}");
        let stored = server
            .store
            .find_user(&name)
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: REGISTER_SUCCESS before the row is visible"));
        assert_eq!(stored.username, name);
        assert_eq!(stored.public_key, identity.public_key_b64());
        assert!(stored.password_hash.starts_with("$argon2id$"));
    }
}

both_stores!(register_success_only_after_commit);

// ----- failures look alike ---------------------------------------------------

fn wrong_password_and_unknown_user_look_the_same(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    register(&server, "alice");
    let mut replies = Vec::new();
    for (name, password) in [("alice", "wrong password"), ("nobody", "wrong password")] {
        let mut conn = connect(&server);
        let reply = ask(
            &mut conn,
            &json!({"type": "LOGIN", "username": name, "password": password,
                    "new_public_key": Identity::generate().public_key_b64()}),
        );
        assert_eq!(auth_status(&reply).0, "LOGIN_FAILED", "{name}: {reply:?}");
        assert_closed_by_server(&mut conn);
        replies.push(reply);
    }
    assert_eq!(replies[0], replies[1], "the answers differ");
    // A failed password login does not replace the key.
    let stored = server.store.find_user("alice").unwrap().unwrap();
    let (reply, _) = challenge_login(&server, "alice", &Identity::generate());
    assert_login_failed(&reply, "Invalid signature");
    let (reply2, _) = challenge_login(&server, "nobody", &Identity::generate());
    assert_eq!(reply, reply2, "challenge failures differ");
    assert_eq!(
        server.store.find_user("alice").unwrap().unwrap().public_key,
        stored.public_key
    );
    assert_server_works(&server);
}

both_stores!(wrong_password_and_unknown_user_look_the_same);

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn unknown_user_costs_as_much_as_a_wrong_password(backend: Backend) {
    let Some(server) =
        TestServer::start_with(backend, |config| config.hash = HashParams::default())
    else {
        return;
    };
    register(&server, "alice");
    let timed = |name: &str| {
        let mut conn = connect(&server);
        let started = Instant::now();
        let reply = ask(
            &mut conn,
            &json!({"type": "LOGIN", "username": name, "password": "wrong password"}),
        );
        let took = started.elapsed();
        assert_eq!(auth_status(&reply).0, "LOGIN_FAILED");
        took
    };
    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    for n in 0..7 {
        wrong.push(timed("alice"));
        unknown.push(timed(&format!("nobody{n}")));
    }
    let (wrong, unknown) = (median(wrong), median(unknown));
    eprintln!("median: wrong password {wrong:?}, unknown user {unknown:?}");
    assert!(
        unknown * 2 >= wrong,
        "unknown user answered faster ({unknown:?}) than half a wrong password ({wrong:?})"
    );
    assert_server_works(&server);
}

both_stores!(unknown_user_costs_as_much_as_a_wrong_password);

// ----- challenge login ------------------------------------------------------

fn challenge_for_unknown_user_looks_like_any_other(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    register(&server, "alice");
    let mut conn = connect(&server);
    let known = challenge(&mut conn, "alice");
    drop(conn);
    let mut conn = connect(&server);
    let unknown = challenge(&mut conn, "nobody");
    assert_ne!(known, unknown, "nonces must be fresh");
    let reply = respond(&mut conn, "nobody", &Identity::generate().sign(&unknown));
    assert_eq!(reply.0, "LOGIN_FAILED", "{reply:?}");
    assert_closed_by_server(&mut conn);
    assert_server_works(&server);
}

both_stores!(challenge_for_unknown_user_looks_like_any_other);

fn challenge_response_without_request(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let alice = register(&server, "alice");
    let mut conn = connect(&server);
    let reply = respond(&mut conn, "alice", &alice.sign(&[0u8; 32]));
    assert_login_failed(&reply, "No challenge pending");
    assert_closed_by_server(&mut conn);
    assert_server_works(&server);
}

both_stores!(challenge_response_without_request);

fn challenge_is_single_use_and_the_latest_counts(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let alice = register(&server, "alice");
    // A new request replaces the pending challenge: the older nonce is void.
    let mut conn = connect(&server);
    let first = challenge(&mut conn, "alice");
    let second = challenge(&mut conn, "alice");
    assert_ne!(first, second);
    let reply = respond(&mut conn, "alice", &alice.sign(&first));
    assert_login_failed(&reply, "Invalid signature");
    assert_closed_by_server(&mut conn);
    // A used challenge: a valid login, then the same response again on the
    // session, gets no second login.
    let mut conn = connect(&server);
    let nonce = challenge(&mut conn, "alice");
    let signature = alice.sign(&nonce);
    assert_eq!(respond(&mut conn, "alice", &signature).0, "LOGIN_SUCCESS");
    conn.send(
        &json!({"type": "LOGIN_CHALLENGE_RESPONSE", "username": "alice",
                      "signature": b64_encode(&signature)}),
    )
    .unwrap();
    let again = loop {
        let cmd = conn.recv(WAIT).unwrap().expect("an answer");
        if kind(&cmd) != "user_list_update" {
            break cmd;
        }
    };
    assert_eq!(kind(&again), "ERROR", "{again:?}");
    // Replaying that signature on a new connection with its own challenge fails.
    let mut other = connect(&server);
    challenge(&mut other, "alice");
    assert_login_failed(
        &respond(&mut other, "alice", &signature),
        "Invalid signature",
    );
    assert_closed_by_server(&mut other);
    // ... and without a challenge of its own too.
    let mut other = connect(&server);
    assert_login_failed(
        &respond(&mut other, "alice", &signature),
        "No challenge pending",
    );
    assert_server_works(&server);
}

both_stores!(challenge_is_single_use_and_the_latest_counts);

fn challenge_is_bound_to_its_connection(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let alice = register(&server, "alice");
    let mut a = connect(&server);
    let nonce_a = challenge(&mut a, "alice");
    // Another connection, with a challenge of its own, answers with a valid
    // signature over A's nonce: refused.
    let mut b = connect(&server);
    challenge(&mut b, "alice");
    assert_login_failed(
        &respond(&mut b, "alice", &alice.sign(&nonce_a)),
        "Invalid signature",
    );
    assert_closed_by_server(&mut b);
    // Without one of its own: no challenge pending.
    let mut c = connect(&server);
    assert_login_failed(
        &respond(&mut c, "alice", &alice.sign(&nonce_a)),
        "No challenge pending",
    );
    assert_closed_by_server(&mut c);
    // A's challenge was not touched by the others.
    assert_eq!(
        respond(&mut a, "alice", &alice.sign(&nonce_a)).0,
        "LOGIN_SUCCESS"
    );
    // A challenge for one name does not log in another.
    register(&server, "bob");
    let mut d = connect(&server);
    let nonce = challenge(&mut d, "bob");
    assert_eq!(
        respond(&mut d, "alice", &alice.sign(&nonce)).0,
        "LOGIN_FAILED"
    );
    assert_closed_by_server(&mut d);
    assert_server_works(&server);
}

both_stores!(challenge_is_bound_to_its_connection);

fn challenge_expires(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.challenge_lifetime = Duration::from_millis(300)
    }) else {
        return;
    };
    let alice = register(&server, "alice");
    let mut conn = connect(&server);
    let nonce = challenge(&mut conn, "alice");
    std::thread::sleep(Duration::from_millis(500));
    let reply = respond(&mut conn, "alice", &alice.sign(&nonce));
    assert_eq!(reply.0, "LOGIN_FAILED", "{reply:?}");
    assert_eq!(reply.1.as_deref(), Some("Challenge expired"));
    assert_closed_by_server(&mut conn);
    // In time, it works.
    let (reply, _conn) = challenge_login(&server, "alice", &alice);
    assert_eq!(reply.0, "LOGIN_SUCCESS", "{reply:?}");
    assert_server_works(&server);
}

both_stores!(challenge_expires);

// ----- signature oracle ------------------------------------------------------

/// Alice's live session sends an `E2E_AUTH` with `step` to bob, and bob has
/// received it (so the server has seen it).
fn alice_sends_auth_step(alice: &mut Client, bob: &mut Client, step: &str) {
    alice
        .send(&json!({"type": "E2E_AUTH", "to": "bob",
                      "payload": {"step": step, "payload": "opaque"}}))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "bob never got the {step}");
        let Some(cmd) = bob.connection().recv(WAIT).unwrap() else {
            continue;
        };
        if kind(&cmd) == "E2E_AUTH" && cmd["payload"]["step"] == step {
            assert_eq!(cmd["from"], "alice");
            return;
        }
    }
}

fn peer_signature_voids_a_pending_challenge(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let (mut alice, alice_id) = user(&server, "alice");
    let (mut bob, _) = user(&server, "bob");
    alice.wait_user_online("bob", WAIT).unwrap();
    for step in ["RESPONSE_A_CHALLENGE_B", "RESPONSE_B"] {
        let mut attacker = connect(&server);
        let nonce = challenge(&mut attacker, "alice");
        alice_sends_auth_step(&mut alice, &mut bob, step);
        // The oracle: alice's key signed the attacker's nonce.
        let reply = respond(&mut attacker, "alice", &alice_id.sign(&nonce));
        assert_login_failed(&reply, "Invalid signature");
        assert_closed_by_server(&mut attacker);
        // Alice's session is untouched.
        let users = current_user_list(&mut alice);
        assert_eq!(online_in(&users, "alice"), Some(true), "{step}: {users:?}");
        let events = alice.drain_events(Duration::from_millis(100)).unwrap();
        assert!(
            !events.iter().any(|e| matches!(e, Event::Error(_))),
            "{step}: {events:?}"
        );
    }
    // A signature sent before the challenge was issued does not void it.
    alice_sends_auth_step(&mut alice, &mut bob, "RESPONSE_B");
    let mut later = connect(&server);
    let nonce = challenge(&mut later, "alice");
    let reply = respond(&mut later, "alice", &alice_id.sign(&nonce));
    assert_eq!(reply.0, "LOGIN_SUCCESS", "{reply:?}");
    assert_server_works(&server);
}

both_stores!(peer_signature_voids_a_pending_challenge);

fn challenge_a_step_does_not_void(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let (mut alice, alice_id) = user(&server, "alice");
    let (mut bob, _) = user(&server, "bob");
    alice.wait_user_online("bob", WAIT).unwrap();
    let mut other = connect(&server);
    let nonce = challenge(&mut other, "alice");
    alice_sends_auth_step(&mut alice, &mut bob, "CHALLENGE_A");
    let reply = respond(&mut other, "alice", &alice_id.sign(&nonce));
    assert_eq!(reply.0, "LOGIN_SUCCESS", "{reply:?}");
}

both_stores!(challenge_a_step_does_not_void);

// ----- names -------------------------------------------------------------------

fn names_match_case_insensitively_and_keep_their_spelling(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let alice_id = register(&server, "Alice");
    let (mut bob, _) = user(&server, "bob");
    // Password login in another case.
    let mut conn = connect(&server);
    let reply = auth_status(&ask(
        &mut conn,
        &json!({"type": "LOGIN", "username": "ALICE", "password": password_of("Alice")}),
    ));
    assert_eq!(reply.0, "LOGIN_SUCCESS", "{reply:?}");
    drop(conn);
    // Challenge login in another case; messages from it carry the stored spelling.
    let mut alice = login(&server, "ALICE", &alice_id);
    bob.wait_user_online("Alice", WAIT).unwrap();
    let users = current_user_list(&mut bob);
    assert_eq!(online_in(&users, "Alice"), Some(true), "{users:?}");
    assert!(
        users.iter().all(|(u, _)| u != "ALICE" && u != "alice"),
        "{users:?}"
    );
    alice
        .send(&json!({"type": "E2E_MSG", "to": "BOB",
                      "payload": {"iv": "a", "ct": "b", "mac": "c"}}))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let relayed = loop {
        assert!(Instant::now() < deadline, "no message for bob");
        if let Some(cmd) = bob.connection().recv(WAIT).unwrap() {
            if kind(&cmd) == "E2E_MSG" {
                break cmd;
            }
        }
    };
    assert_eq!(relayed["from"], "Alice");
    assert_eq!(
        relayed["payload"],
        json!({"iv": "a", "ct": "b", "mac": "c"})
    );
    // Public key lookups return the stored spelling as well.
    bob.get_public_key("aLiCe").unwrap();
    let event = bob
        .wait_for(WAIT, |e| matches!(e, Event::PublicKey { .. }))
        .unwrap();
    assert_eq!(
        event,
        Event::PublicKey {
            username: "Alice".into(),
            public_key: alice_id.public_key_b64()
        }
    );
    // Non-ASCII names fold too.
    let unal = register(&server, "Ünal");
    let (reply, _conn) = challenge_login(&server, "üNAL", &unal);
    assert_eq!(reply.0, "LOGIN_SUCCESS", "{reply:?}");
    let mut conn = connect(&server);
    let reply = auth_status(&ask(
        &mut conn,
        &register_cmd("ÜNAL", &Identity::generate()),
    ));
    assert_eq!(reply.0, "REGISTER_FAILED:USERNAME_EXISTS", "{reply:?}");
}

both_stores!(names_match_case_insensitively_and_keep_their_spelling);

// ----- per-connection limits --------------------------------------------------

fn at_most_five_auth_commands_per_connection(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let mut conn = connect(&server);
    for _ in 0..5 {
        challenge(&mut conn, "alice");
    }
    let reply = auth_status(&ask(
        &mut conn,
        &register_cmd("late", &Identity::generate()),
    ));
    assert_eq!(reply.0, "SERVER_ERROR", "{reply:?}");
    assert!(reply.1.is_some_and(|m| !m.is_empty()));
    assert_closed_by_server(&mut conn);
    assert!(server.store.find_user("late").unwrap().is_none());
    assert_server_works(&server);
}

both_stores!(at_most_five_auth_commands_per_connection);

fn chat_commands_before_login_get_auth_response(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    register(&server, "bob");
    let mut conn = connect(&server);
    for command in [
        json!({"type": "REQUEST_USER_LIST"}),
        json!({"type": "E2E_MSG", "to": "bob", "payload": {"iv": "a", "ct": "b", "mac": "c"}}),
        json!({"type": "NO_SUCH_COMMAND"}),
    ] {
        let reply = ask(&mut conn, &command);
        let (status, message) = auth_status(&reply);
        assert_eq!(status, "SERVER_ERROR", "{command}: {reply:?}");
        assert!(message.is_some_and(|m| !m.is_empty()), "{reply:?}");
    }
    assert_eq!(server.store.count_offline("bob").unwrap(), 0);
    // Still usable for authentication.
    let name = common::fresh_name("late");
    let reply = auth_status(&ask(&mut conn, &register_cmd(&name, &Identity::generate())));
    assert_eq!(reply.0, "REGISTER_SUCCESS", "{reply:?}");
    assert_server_works(&server);
}

both_stores!(chat_commands_before_login_get_auth_response);

// ----- rehash ------------------------------------------------------------------

fn seed_server_hash_verifies_and_is_rehashed(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let vectors: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/protocol/vectors.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let phc = vectors["argon2"]["phc_from_seed_server"].as_str().unwrap();
    let password = vectors["argon2"]["password"].as_str().unwrap();
    let public_key = vectors["ed25519_login"]["public_key"].as_str().unwrap();
    let seed: [u8; 32] = b64_decode(vectors["ed25519_login"]["seed"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let identity = Identity::from_seed(seed);
    assert!(phc.starts_with("$argon2id$v=19$m=65536,t=3,p=4$"));
    server
        .store
        .create_user("seeduser", phc, public_key)
        .unwrap();

    // A wrong password does not rehash.
    let mut conn = connect(&server);
    let reply = auth_status(&ask(
        &mut conn,
        &json!({"type": "LOGIN", "username": "seeduser", "password": "wrong"}),
    ));
    assert_eq!(reply.0, "LOGIN_FAILED");
    assert_eq!(
        server
            .store
            .find_user("seeduser")
            .unwrap()
            .unwrap()
            .password_hash,
        phc
    );

    let mut conn = connect(&server);
    let reply = auth_status(&ask(
        &mut conn,
        &json!({"type": "LOGIN", "username": "seeduser", "password": password}),
    ));
    assert_eq!(reply.0, "LOGIN_SUCCESS", "{reply:?}");
    let stored = server.store.find_user("seeduser").unwrap().unwrap();
    assert!(
        stored
            .password_hash
            .starts_with("$argon2id$v=19$m=256,t=1,p=1$"),
        "not rehashed: {}",
        stored.password_hash
    );
    drop(conn);
    // The new hash verifies the same password.
    let mut conn = connect(&server);
    let reply = auth_status(&ask(
        &mut conn,
        &json!({"type": "LOGIN", "username": "SeedUser", "password": password}),
    ));
    assert_eq!(reply.0, "LOGIN_SUCCESS", "{reply:?}");
    drop(conn);
    // The vector's identity answers challenges.
    let (reply, _conn) = challenge_login(&server, "seeduser", &identity);
    assert_eq!(reply.0, "LOGIN_SUCCESS", "{reply:?}");
}

both_stores!(seed_server_hash_verifies_and_is_rehashed);

// ----- sessions -----------------------------------------------------------------

fn new_login_replaces_the_old_session(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let (mut old, alice_id) = user(&server, "alice");
    let (mut bob, _) = user(&server, "bob");
    bob.wait_user_online("alice", WAIT).unwrap();
    let mut new = login(&server, "alice", &alice_id);

    // The old connection: the notice, then the close.
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    loop {
        assert!(Instant::now() < deadline, "old session not closed");
        match old.connection().recv(WAIT) {
            Ok(Some(cmd)) => last = Some(cmd),
            Ok(None) => {}
            Err(_) => break,
        }
    }
    assert_eq!(
        last.map(Value::Object),
        Some(json!({"type": "ERROR", "message": "logged in elsewhere"})),
        "the last frame before the close"
    );
    assert!(old.connection().close_info().is_some());

    // The old disconnect does not take the new session offline.
    std::thread::sleep(Duration::from_millis(300));
    let users = current_user_list(&mut bob);
    assert_eq!(online_in(&users, "alice"), Some(true), "{users:?}");
    // The new session receives relays.
    bob.send(&json!({"type": "E2E_MSG", "to": "alice",
                     "payload": {"iv": "a", "ct": "b", "mac": "c"}}))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "the new session got no message");
        if let Some(cmd) = new.connection().recv(WAIT).unwrap() {
            if kind(&cmd) == "E2E_MSG" {
                assert_eq!(cmd["from"], "bob");
                break;
            }
        }
    }
    assert_eq!(server.store.count_offline("alice").unwrap(), 0);
}

both_stores!(new_login_replaces_the_old_session);

fn vanished_login_leaves_no_session(backend: Backend) {
    let Some(server) =
        TestServer::start_with(backend, |config| config.hash = HashParams::default())
    else {
        return;
    };
    let (mut bob, _) = user(&server, "bob");
    register(&server, "alice");
    for _ in 0..3 {
        let mut conn = connect(&server);
        conn.send(&json!({"type": "LOGIN", "username": "alice",
                          "password": password_of("alice")}))
            .unwrap();
        let socket = conn.websocket_mut().get_mut();
        socket2::SockRef::from(&*socket)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(conn); // RST while the server hashes
    }
    std::thread::sleep(Duration::from_millis(1000));
    let users = current_user_list(&mut bob);
    assert_eq!(online_in(&users, "alice"), Some(false), "{users:?}");
    // Alice can still log in normally and is then online.
    let (reply, _conn) = challenge_login(&server, "alice", &Identity::generate());
    assert_eq!(reply.0, "LOGIN_FAILED");
    let mut client = Client::connect(&server.url).unwrap();
    let reply = client
        .login_password("alice", &password_of("alice"), None)
        .unwrap();
    assert_eq!(reply.status, "LOGIN_SUCCESS");
    bob.wait_user_online("alice", WAIT).unwrap();
}

both_stores!(vanished_login_leaves_no_session);
