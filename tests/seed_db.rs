//! A database made by the Python server (the seed schema, its argon2
//! parameters, its rows) works unchanged. MySQL only.

mod common;

use chat_server::client::identity::Identity;
use chat_server::client::Client;
use chat_server::crypto::b64_decode;
use chat_server::store::testdb::{mysql_test_db, SEED_SCHEMA};
use common::{TestServer, WAIT};
use serde_json::{json, Value};

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/protocol/vectors.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A seed database with `Maria` (seed hash, vector identity key) and `joao`,
/// and one offline message from joao to Maria stored the Python way.
fn seed_server() -> Option<(TestServer, Identity)> {
    let db = mysql_test_db()?;
    for statement in SEED_SCHEMA {
        db.exec(statement);
    }
    let vectors = vectors();
    let phc = vectors["argon2"]["phc_from_seed_server"].as_str().unwrap();
    let public_key = vectors["ed25519_login"]["public_key"].as_str().unwrap();
    let seed: [u8; 32] = b64_decode(vectors["ed25519_login"]["seed"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    db.exec(&format!(
        "INSERT INTO usuarios (userName, senha, public_key) VALUES ('Maria', '{phc}', '{public_key}'), ('joao', '{phc}', '{public_key}')"
    ));
    db.exec(
        "INSERT INTO mensagens_offline (remetente_username, destinatario_username, conteudo) \
         VALUES ('joao', 'maria', '{\"iv\": \"aXY=\", \"ct\": \"Y3Q=\", \"mac\": \"bWFj\"}')",
    );
    let server = TestServer::start_on_mysql(db, |_| {});
    Some((server, Identity::from_seed(seed)))
}

#[test]
fn seed_users_log_in_and_get_their_offline_messages() {
    let Some((server, maria)) = seed_server() else {
        return;
    };
    let mut client = Client::connect(&server.url).unwrap();
    let reply = client.login_challenge("maria", &maria).unwrap();
    assert!(
        reply.is_success(),
        "challenge login on a seed row: {reply:?}"
    );
    client
        .send(&json!({"type": "REQUEST_OFFLINE_MESSAGES"}))
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let message = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let command = client
            .connection()
            .recv(left)
            .unwrap()
            .expect("offline message");
        if command["type"] == "E2E_MSG" {
            break command;
        }
    };
    assert_eq!(message["from"], "joao");
    assert_eq!(
        message["payload"],
        json!({"iv": "aXY=", "ct": "Y3Q=", "mac": "bWFj"}),
        "stored JSON text parsed back into an object"
    );
    let mysql = server.mysql.as_ref().unwrap();
    // Deleted once written to the socket (just after we read it).
    let deadline = std::time::Instant::now() + WAIT;
    while mysql.query_first::<u64>("SELECT COUNT(*) FROM mensagens_offline") != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "not deleted once delivered"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn seed_password_hash_verifies_and_is_upgraded() {
    let Some((server, _)) = seed_server() else {
        return;
    };
    let password = vectors()["argon2"]["password"].as_str().unwrap().to_owned();
    let mut client = Client::connect(&server.url).unwrap();
    let new_key = Identity::generate();
    let reply = client
        .login_password("Maria", &password, Some(&new_key))
        .unwrap();
    assert!(reply.is_success(), "{reply:?}");
    let mysql = server.mysql.as_ref().unwrap();
    let hash: Option<String> =
        mysql.query_first("SELECT senha FROM usuarios WHERE userName = 'Maria'");
    let hash = hash.unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=256,t=1,p=1$"),
        "rehashed with the configured parameters: {hash}"
    );
    let key: Option<String> =
        mysql.query_first("SELECT public_key FROM usuarios WHERE userName = 'Maria'");
    assert_eq!(key.unwrap(), new_key.public_key_b64());
    // The upgraded hash still verifies.
    let mut again = Client::connect(&server.url).unwrap();
    assert!(again
        .login_password("maria", &password, None)
        .unwrap()
        .is_success());
}

#[test]
fn payload_too_large_for_a_seed_text_column_is_refused() {
    let Some((server, _)) = seed_server() else {
        return;
    };
    let (mut alice, _) = common::user(&server, "alice");
    let big = "x".repeat(70_000);
    alice
        .send(&json!({"type": "E2E_MSG", "to": "joao", "payload": {"ct": big}}))
        .unwrap();
    assert_eq!(
        alice.wait_error(WAIT).unwrap(),
        "payload too large for the offline store"
    );
    let mysql = server.mysql.as_ref().unwrap();
    let rows: Option<u64> = mysql
        .query_first("SELECT COUNT(*) FROM mensagens_offline WHERE destinatario_username = 'joao'");
    assert_eq!(rows, Some(0), "refused, not truncated");
    let type_now: Option<String> = mysql.query_first(
        "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME = 'mensagens_offline' AND COLUMN_NAME = 'conteudo'",
    );
    assert_eq!(
        type_now.as_deref(),
        Some("text"),
        "the seed table is unchanged"
    );
}
