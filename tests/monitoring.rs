//! `GET /healthz` and `GET /metrics` as a monitoring system sees them: the
//! health check flips to 503 when the database goes away and back to 200
//! when it returns; the metrics count a scripted chat session exactly, on
//! both stores; connections refused at accept are counted by reason.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_server::client::identity::Identity;
use chat_server::client::Client;
use chat_server::store::testdb::mysql_test_db;
use chat_server::store::{MysqlStore, Store};
use common::proxy::Proxy;
use common::{login, password_of, register, test_config, user, Backend, TestServer, WAIT};

/// Sends `GET path` and returns the status code and the body.
fn get(server: &TestServer, path: &str) -> (u16, String) {
    try_get(server, path).expect("an HTTP answer")
}

fn try_get(server: &TestServer, path: &str) -> std::io::Result<(u16, String)> {
    let address = server.url.trim_start_matches("ws://");
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    // A connection refused at accept is closed without an answer.
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("no status line: {answer:?}"),
            )
        })?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The scraped metrics.
struct Scrape(String);

impl Scrape {
    fn take(server: &TestServer) -> Scrape {
        let (status, body) = get(server, "/metrics");
        assert_eq!(status, 200, "{body}");
        Scrape(body)
    }

    /// The value of the sample `series` (name plus labels, as printed);
    /// 0 when absent (a labelled counter appears with its first count).
    fn value(&self, series: &str) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse().expect("a number"))
            })
            .unwrap_or(0.0)
    }
}

/// Scrapes until `series` has `expected` (the dispatcher and closing
/// threads update some values just after the client sees the effect).
fn wait_for_value(server: &TestServer, series: &str, expected: f64) -> Scrape {
    wait_until(server, series, &format!("{expected}"), |value| {
        value == expected
    })
}

/// Scrapes until `series` is at least `least`.
fn wait_for_at_least(server: &TestServer, series: &str, least: f64) -> Scrape {
    wait_until(server, series, &format!("at least {least}"), |value| {
        value >= least
    })
}

fn wait_until(
    server: &TestServer,
    series: &str,
    expected: &str,
    good: impl Fn(f64) -> bool,
) -> Scrape {
    let deadline = Instant::now() + WAIT;
    loop {
        let scrape = Scrape::take(server);
        let value = scrape.value(series);
        if good(value) {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {value}, expected {expected}\n{}",
            scrape.0
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metrics_count_a_scripted_session(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let fresh = Scrape::take(&server);
    assert_eq!(fresh.value("chat_users_online"), 0.0);
    assert_eq!(fresh.value("chat_frames_in_total"), 0.0);
    assert!(fresh.0.contains("# TYPE chat_store_seconds histogram"));

    let (mut alice, _) = user(&server, "alice");
    let bob_id = register(&server, "bob");
    let mut bob = login(&server, "bob", &bob_id);
    let mut wrong = Client::connect(&server.url).expect("connect");
    let reply = wrong
        .login_password("alice", "not the password", Some(&Identity::generate()))
        .expect("reply");
    assert!(!reply.is_success());
    let dup = Client::connect(&server.url)
        .expect("connect")
        .register("Alice", &password_of("x"), &Identity::generate())
        .expect("reply");
    assert!(!dup.is_success());
    Client::pair_e2ee(&mut alice, &mut bob, WAIT).expect("peer handshake");
    // Two users online; alice, bob and this scrape's own connection open.
    wait_for_value(&server, "chat_connections_open", 3.0);
    let before = wait_for_value(&server, "chat_users_online", 2.0);

    for n in 0..3 {
        alice
            .send_message("bob", &format!("hello {n}"))
            .expect("send");
        assert_eq!(
            bob.wait_message_from("alice", WAIT).expect("message"),
            format!("hello {n}")
        );
    }
    let after = Scrape::take(&server);
    for series in [
        "chat_messages_routed_total",
        "chat_frames_in_total",
        "chat_frames_out_total",
    ] {
        assert_eq!(
            after.value(series) - before.value(series),
            3.0,
            "{series}\n{}",
            after.0
        );
    }

    // Two messages while bob is away are stored, then delivered.
    bob.close();
    alice.wait_user_offline("bob", WAIT).expect("bob offline");
    // Alice learnt it from a broadcast list sealed and sent to her.
    for series in [
        "chat_presence_broadcasts_total",
        "chat_user_lists_sent_total",
    ] {
        wait_for_at_least(&server, series, before.value(series) + 1.0);
    }
    for n in 0..2 {
        alice
            .send_message("bob", &format!("later {n}"))
            .expect("send");
    }
    wait_for_value(&server, "chat_offline_stored_total", 2.0);
    bob.reconnect(&server.url).expect("reconnect");
    let reply = bob.login_challenge("bob", &bob_id).expect("reply");
    assert!(reply.is_success(), "{reply:?}");
    bob.open_home().expect("home");
    for n in 0..2 {
        assert_eq!(
            bob.wait_message_from("alice", WAIT)
                .expect("offline message"),
            format!("later {n}")
        );
    }
    let end = wait_for_value(&server, "chat_offline_delivered_total", 2.0);

    let auth = |kind: &str, result: &str| {
        end.value(&format!(
            "chat_auth_total{{kind=\"{kind}\",result=\"{result}\"}}"
        ))
    };
    assert_eq!(auth("register", "success"), 2.0);
    assert_eq!(auth("register", "username_exists"), 1.0);
    assert_eq!(auth("challenge", "success"), 3.0);
    assert_eq!(auth("password", "failure"), 1.0);
    assert_eq!(auth("password", "success"), 0.0);
    assert_eq!(end.value("chat_renegotiations_total"), 0.0);
    assert_eq!(end.value("chat_offline_stored_total"), 2.0);
    assert!(end.value("chat_store_seconds_count{operation=\"find_user\"}") >= 4.0);
    // Stored one by one or in a group commit.
    let offline_writes = end.value("chat_store_seconds_count{operation=\"store_offline\"}")
        + end.value("chat_store_seconds_count{operation=\"store_offline_batch\"}");
    assert!((1.0..=2.0).contains(&offline_writes), "{}", end.0);
    assert!(end.value("chat_store_seconds_bucket{operation=\"find_user\",le=\"+Inf\"}") >= 4.0);
}

both_stores!(metrics_count_a_scripted_session);

/// Renewals of the channel keys are counted (the server renews after
/// every few frames here).
#[test]
fn renegotiations_are_counted() {
    let Some(server) = TestServer::start_with(Backend::Sqlite, |config| {
        config.renewal.min_frames = 3;
        config.renewal.max_frames = 3;
    }) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    let (mut bob, _) = user(&server, "bob");
    Client::pair_e2ee(&mut alice, &mut bob, WAIT).expect("peer handshake");
    for n in 0..10 {
        alice.send_message("bob", &format!("{n}")).expect("send");
        bob.wait_message_from("alice", WAIT).expect("message");
    }
    let scrape = Scrape::take(&server);
    assert!(
        scrape.value("chat_renegotiations_total") >= 2.0,
        "{}",
        scrape.0
    );
}

/// A connection over the per-address limit is refused and counted.
#[test]
fn rejected_connections_are_counted_by_reason() {
    let Some(server) = TestServer::start_with(Backend::Sqlite, |config| {
        config.max_connections_per_address = 1;
    }) else {
        return;
    };
    let address = server.url.trim_start_matches("ws://").to_owned();
    let holder = TcpStream::connect(&address).expect("connect");
    // Wait until the holder is admitted, then a second one is refused.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut extra = TcpStream::connect(&address).expect("connect");
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut byte = [0u8; 1];
        // Refused: closed at once without an answer.
        if matches!(extra.read(&mut byte), Ok(0)) {
            break;
        }
        assert!(Instant::now() < deadline, "never refused");
    }
    drop(holder);
    // Until the holder's thread has ended, the scrape itself may be refused.
    let deadline = Instant::now() + WAIT;
    let body = loop {
        match try_get(&server, "/metrics") {
            Ok((200, body)) => break body,
            other => assert!(Instant::now() < deadline, "no metrics: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let scrape = Scrape(body);
    assert!(
        scrape.value("chat_rejected_connections_total{reason=\"per_address_limit\"}") >= 1.0,
        "{}",
        scrape.0
    );
    assert_eq!(
        scrape.value("chat_rejected_connections_total{reason=\"total_limit\"}"),
        0.0
    );
}

/// Metrics are for loopback only by default; health answers everyone.
#[test]
fn health_answers_ok_while_the_store_answers() {
    let Some(server) = TestServer::start(Backend::Sqlite) else {
        return;
    };
    assert_eq!(get(&server, "/healthz"), (200, "ok\n".to_string()));
}

/// `/healthz` says 503 while the database is unreachable and 200 again once
/// it is back, without a restart.
#[test]
fn health_flips_when_the_database_goes_away_and_back() {
    let Some(db) = mysql_test_db() else { return };
    let proxy = Proxy::start(format!("{}:{}", db.settings.host, db.settings.port));
    let mut settings = db.settings.clone();
    settings.host = "127.0.0.1".into();
    settings.port = proxy.port;
    let store: Arc<dyn Store> = Arc::new(MysqlStore::connect(&settings, 4).expect("store"));
    let server = TestServer::start_on(test_config(), store, Some(db), None).expect("server");
    assert_eq!(get(&server, "/healthz").0, 200);

    proxy.cut();
    let (status, body) = get(&server, "/healthz");
    assert_eq!((status, body.as_str()), (503, "store unavailable\n"));

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&server, "/healthz").0 != 200 {
        assert!(Instant::now() < deadline, "health never recovered");
        std::thread::sleep(Duration::from_millis(200));
    }
}
