//! The web client in a real browser: a server on port 0 serves the page, and
//! `web/tests/browser.mjs` (playwright-core driving Debian's chromium) runs
//! the scenarios of issue 6 against it, with the crate's own client as the
//! Rust peer (an echo bot). Without node, chromium or `web/node_modules` the
//! test says why and skips, unless `CHAT_TEST_REQUIRE_BROWSER=1` (CI).
//! Screenshots land in `<target>/tmp/web-client/`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use chat_server::client::Event;
use common::{assert_server_works, user, Backend, TestServer};

const REQUIRE: &str = "CHAT_TEST_REQUIRE_BROWSER";

fn chromium() -> PathBuf {
    std::env::var_os("CHAT_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Why the browser test cannot run here, if it cannot.
fn missing_tools(web: &Path) -> Option<String> {
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|out| out.status.success()) {
        return Some("node is not installed".into());
    }
    if !web.join("node_modules/playwright-core").is_dir() {
        return Some("web/node_modules is missing (run `npm ci` in web/)".into());
    }
    if !chromium().exists() {
        return Some(format!("{} is missing", chromium().display()));
    }
    None
}

/// Until `stop`: answers "greet <name>" by writing "hello from rust" to
/// <name> (a session the bot starts), and any other message with
/// "echo: <text>". Returns what it received.
fn echo_bot(mut client: chat_server::client::Client, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut received = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match client.next_event(Duration::from_millis(200)) {
            Ok(Some(Event::Message { from, text })) => {
                match text.strip_prefix("greet ") {
                    Some(name) => client.send_message(name, "hello from rust"),
                    None => client.send_message(&from, &format!("echo: {text}")),
                }
                .expect("bot answer");
                received.push(text);
            }
            Ok(_) => {}
            Err(error) => panic!("echo bot lost its connection: {error}"),
        }
    }
    received
}

/// The `web/` folder, or `None` (with the reason printed) when the tools
/// the web client's tests need are missing and not required.
fn web_dir_with_tools() -> Option<PathBuf> {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    if let Some(why) = missing_tools(&web) {
        assert!(
            std::env::var(REQUIRE).as_deref() != Ok("1"),
            "{REQUIRE}=1 but the browser test cannot run: {why}"
        );
        eprintln!("skipping the web client test: {why}");
        return None;
    }
    Some(web)
}

#[test]
fn the_web_client_crypto_passes_its_node_tests() {
    let Some(web) = web_dir_with_tools() else {
        return;
    };
    let output = Command::new("node")
        .args(["--test", "tests/"])
        .current_dir(&web)
        .output()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
}

#[test]
fn the_web_client_chats_with_browsers_and_the_rust_client() {
    let Some(web) = web_dir_with_tools() else {
        return;
    };
    // Channel keys are renewed every few frames, so the page renews many times.
    let server = TestServer::start_with(Backend::Sqlite, |config| {
        config.renewal.min_frames = 3;
        config.renewal.max_frames = 6;
    })
    .expect("sqlite server");
    let http_url = server.url.replacen("ws://", "http://", 1) + "/";
    let bot_name = common::fresh_name("rustbot");
    let (bot, _identity) = user(&server, &bot_name);
    let stop = Arc::new(AtomicBool::new(false));
    let bot_thread = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || echo_bot(bot, stop))
    };
    let artefacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-client");
    let output = Command::new("node")
        .arg(web.join("tests/browser.mjs"))
        .arg(&http_url)
        .arg(&bot_name)
        .arg(&artefacts)
        .output()
        .expect("run node");
    stop.store(true, Ordering::Relaxed);
    let received = bot_thread.join().expect("echo bot");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "browser scenarios failed (screenshots in {}):\n{stdout}\n{stderr}",
        artefacts.display()
    );
    assert!(stdout.contains("browser scenarios passed"), "{stdout}");
    assert_eq!(received.len(), 3, "{received:?}");
    assert_eq!(received[0], "hello bot from the browser");
    assert!(received[1].starts_with("greet "), "{received:?}");
    assert_eq!(received[2], "hi rust");
    println!("screenshots: {}", artefacts.display());
}

/// One raw HTTP exchange with the chat port.
fn http_get(server: &TestServer, request: &str) -> String {
    let address = server.url.trim_start_matches("ws://");
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("answer");
    String::from_utf8_lossy(&answer).into_owned()
}

fn header_value<'a>(answer: &'a str, name: &str) -> &'a str {
    answer
        .lines()
        .take_while(|line| !line.is_empty())
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
        .unwrap_or_default()
}

#[test]
fn the_page_is_served_on_the_chat_port_and_revalidated_with_its_etag() {
    let server = TestServer::start(Backend::Sqlite).expect("sqlite server");
    let page = http_get(&server, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert_eq!(
        header_value(&page, "Content-Type"),
        "text/html; charset=utf-8"
    );
    assert!(header_value(&page, "Content-Security-Policy").contains("default-src 'self'"));
    assert!(page.contains("<title>Secure chat</title>"));

    let script = http_get(&server, "GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        header_value(&script, "Content-Type"),
        "text/javascript; charset=utf-8"
    );
    let etag = header_value(&script, "ETag").to_string();
    let again = http_get(
        &server,
        &format!("GET /app.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n"),
    );
    assert!(
        again.starts_with("HTTP/1.1 304 Not Modified\r\n"),
        "{again}"
    );
    assert!(again.ends_with("\r\n\r\n"), "a 304 has no body: {again}");

    let head = http_get(&server, "HEAD /style.css HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");

    assert_server_works(&server);
}
