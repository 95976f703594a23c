//! Optional TLS on the chat port (`TLS_CERT` / `TLS_KEY`): with a
//! self-signed certificate made here by rcgen, clients that trust it log in
//! and chat over `wss://` (bursts included, which leave decrypted plaintext
//! buffered inside rustls), HTTPS answers `/healthz`, and a client that
//! does not trust the certificate, or speaks plain `ws://`, gets nowhere
//! while the server keeps serving.

mod cli_support;
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use chat_server::client::identity::Identity;
use chat_server::client::{Client, ConnectOptions, RekeyPolicy};
use chat_server::config::TlsFiles;
use common::{password_of, Backend, TestServer, WAIT};

/// A certificate for `localhost` and its key, as PEM files in a temp dir.
struct SelfSigned {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl SelfSigned {
    fn generate(tag: &str) -> SelfSigned {
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let dir = std::env::temp_dir().join(format!("chat_tls_{}_{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, generated.cert.pem()).expect("cert written");
        std::fs::write(&key, generated.signing_key.serialize_pem()).expect("key written");
        SelfSigned { dir, cert, key }
    }

    fn trusting_options(&self) -> ConnectOptions {
        ConnectOptions {
            tls: Some(chat_server::tls::client_config(&self.cert).expect("CA file loads")),
            ..ConnectOptions::default()
        }
    }
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_server(certificate: &SelfSigned) -> (TestServer, String) {
    let files = TlsFiles {
        cert: certificate.cert.clone(),
        key: certificate.key.clone(),
    };
    let server = TestServer::start_with(Backend::Sqlite, |config| config.tls = Some(files))
        .expect("server starts");
    let port = server.url.rsplit(':').next().expect("port").to_owned();
    let url = format!("wss://localhost:{port}");
    (server, url)
}

/// Registers and logs in `name` over `wss://`.
fn tls_user(url: &str, options: &ConnectOptions, name: &str) -> Client {
    let identity = Identity::generate();
    let mut client = Client::connect_with(url, options).expect("wss connect");
    let reply = client
        .register(name, &password_of(name), &identity)
        .expect("register reply");
    assert!(reply.is_success(), "{reply:?}");
    client.close();
    let mut client = Client::connect_with(url, options).expect("wss connect");
    let reply = client
        .login_challenge(name, &identity)
        .expect("login reply");
    assert!(reply.is_success(), "{reply:?}");
    client.open_home().expect("home");
    client
}

#[test]
fn clients_log_in_and_chat_over_wss() {
    let certificate = SelfSigned::generate("chat");
    let (server, url) = tls_server(&certificate);
    let options = certificate.trusting_options();
    let mut alice = tls_user(&url, &options, "alice");
    let mut bob = tls_user(&url, &options, "bob");
    alice.wait_user_online("bob", WAIT).expect("bob online");
    Client::pair_e2ee(&mut alice, &mut bob, WAIT).expect("peer handshake");
    alice.send_message("bob", "hello over TLS").expect("send");
    assert_eq!(
        bob.wait_message_from("alice", WAIT).expect("message"),
        "hello over TLS"
    );
    bob.send_message("alice", "and back").expect("send");
    assert_eq!(
        alice.wait_message_from("bob", WAIT).expect("message"),
        "and back"
    );
    // A burst: many frames arrive in few TLS reads; none may be left
    // waiting in rustls while the session sleeps in poll. (No end-to-end
    // re-key in the middle: alice does not read during the burst, so she
    // would never see bob's answer.)
    alice.set_rekey_policy(RekeyPolicy::Never);
    bob.set_rekey_policy(RekeyPolicy::Never);
    for n in 0..60 {
        alice
            .send_message("bob", &format!("burst {n}"))
            .expect("send");
    }
    for n in 0..60 {
        assert_eq!(
            bob.wait_message_from("alice", WAIT)
                .unwrap_or_else(|e| panic!("burst {n}: {e}")),
            format!("burst {n}")
        );
    }
    drop(server);
}

#[test]
fn https_answers_and_untrusted_or_plain_clients_fail() {
    let certificate = SelfSigned::generate("https");
    let (server, url) = tls_server(&certificate);
    let address = server.url.trim_start_matches("ws://").to_owned();

    // HTTPS on the same port.
    let config = chat_server::tls::client_config(&certificate.cert).expect("CA file loads");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let connection = rustls::ClientConnection::new(config, name).expect("TLS client");
    let tcp = TcpStream::connect(&address).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut https = rustls::StreamOwned::new(connection, tcp);
    https
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut answer = Vec::new();
    let _ = https.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");

    // A client trusting another certificate refuses the server's.
    let stranger = SelfSigned::generate("stranger");
    assert!(Client::connect_with(&url, &stranger.trusting_options()).is_err());
    // Plain ws:// to a TLS port does not get a WebSocket.
    let plain = Client::connect_with(&server.url, &ConnectOptions::default());
    assert!(plain.is_err());
    // wss:// with no CA at all is refused by the client before connecting.
    let unset = ConnectOptions::default();
    if std::env::var_os(chat_server::client::connection::CA_FILE_ENV).is_none() {
        assert!(Client::connect_with(&url, &unset).is_err());
    }

    // And the server still serves trusted clients.
    let options = certificate.trusting_options();
    let mut carol = tls_user(&url, &options, "carol");
    carol
        .wait_user_online("carol", WAIT)
        .expect("carol sees herself");
}

/// chat_client over wss:// with --ca-file: registers, logs in and sends a
/// message that a library client receives; without the CA it cannot connect.
#[test]
fn chat_client_uses_wss_with_a_ca_file() {
    use cli_support::{cli, expect_code, password, run, Running, TempDir};

    let certificate = SelfSigned::generate("cli");
    let (_server, url) = tls_server(&certificate);
    let ca = certificate.cert.to_string_lossy().into_owned();
    let options = certificate.trusting_options();
    let mut bob = tls_user(&url, &options, "bob");

    let dir = TempDir::new("tls_alice");
    let registered = run(
        cli(
            &url,
            &dir,
            &["--ca-file", &ca, "register", "alice", "--password-stdin"],
        ),
        &password("alice"),
    );
    expect_code(&registered, 0);
    // bob answers alice's end-to-end handshake while he waits.
    let sending = Running::start(
        cli(
            &url,
            &dir,
            &["--ca-file", &ca, "send", "--to", "bob", "hi over wss"],
        ),
        "",
    );
    assert_eq!(
        bob.wait_message_from("alice", Duration::from_secs(20))
            .expect("message"),
        "hi over wss"
    );
    expect_code(&sending.finish(), 0);

    let other = TempDir::new("tls_nobody");
    let mut without_ca = cli(&url, &other, &["register", "carol", "--password-stdin"]);
    without_ca.env_remove("CHAT_CA_FILE");
    let refused = run(without_ca, &password("carol"));
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--ca-file"),
        "{refused:?}"
    );
}

/// A missing certificate file stops the binary with one line naming it.
#[test]
fn a_missing_certificate_is_a_one_line_error() {
    let db = std::env::temp_dir().join(format!("chat_tls_missing_{}.db", std::process::id()));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chat_server"))
        .current_dir(std::env::temp_dir())
        .env_remove("DATABASE_URL")
        .env_remove("DB_HOST")
        .args(["--bind", "127.0.0.1:0", "--sqlite"])
        .arg(&db)
        .args([
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .output()
        .expect("the binary runs");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("chat_server: cannot read /nonexistent/cert.pem"),
        "{stderr}"
    );
}
