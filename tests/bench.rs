//! `chat_bench` at a tiny size against an in-process server, so the bench
//! cannot rot: each scenario runs for about a second and its JSON line is
//! checked (zero loss, duplication and reordering).

mod common;

use std::process::Command;

use common::{Backend, TestServer};
use serde_json::Value;

/// Runs `chat_bench --url <server> <args>` and returns its JSON line.
fn bench(server: &TestServer, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_chat_bench"))
        .arg("--url")
        .arg(&server.url)
        .args(args)
        .output()
        .expect("chat_bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chat_bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().expect("a JSON line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// A test server tuned for load as BENCHMARKS.md says: the per-connection
/// command rate limit (100/s by default, for people) raised out of the way.
fn server() -> TestServer {
    TestServer::start_with(Backend::Sqlite, |config| {
        config.rate.commands.per_sec = 1_000_000.0;
        config.rate.commands.burst = 1_000_000.0;
    })
    .expect("SQLite test server")
}

#[test]
fn register_scenario() {
    let server = server();
    let v = bench(&server, &["register", "--users", "6", "--threads", "2"]);
    assert_eq!(v["scenario"], "register");
    assert_eq!(v["users"], 6);
    assert!(v["registrations_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["latency"]["p99_us"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn route_scenario() {
    let server = server();
    let pid = std::process::id().to_string();
    let v = bench(
        &server,
        &[
            "route",
            "--pairs",
            "2",
            "--msgs",
            "300",
            "--size",
            "64",
            "--window",
            "8",
            "--server-pid",
            &pid,
        ],
    );
    assert_eq!(v["delivered"], 600, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicated"], 0, "{v}");
    assert_eq!(v["reordered"], 0, "{v}");
    // 300 frames to each receiver: renewals after 50-100 frames each.
    assert!(v["renewals_completed"].as_u64().unwrap() >= 2, "{v}");
    assert!(v["server_cpu_us_per_msg"].as_f64().is_some(), "{v}");
    assert!(v["server_threads"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn route_scenario_mobile_like() {
    let server = server();
    let v = bench(
        &server,
        &[
            "route",
            "--pairs",
            "1",
            "--msgs",
            "150",
            "--window",
            "4",
            "--mobile-like",
        ],
    );
    assert_eq!(v["delivered"], 150, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicated"], 0, "{v}");
    assert_eq!(v["reordered"], 0, "{v}");
    assert_eq!(v["mobile_like"], true, "{v}");
}

#[test]
fn hold_scenario() {
    let server = server();
    let pid = std::process::id().to_string();
    let v = bench(
        &server,
        &[
            "hold",
            "--users",
            "12",
            "--threads",
            "4",
            "--converge-timeout",
            "20",
            "--server-pid",
            &pid,
        ],
    );
    assert_eq!(v["connected"], 12, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    assert!(v["converged_secs_after_last_login"].is_number(), "{v}");
    assert!(v["list_bytes_per_observer"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn offline_scenario() {
    let server = server();
    let v = bench(&server, &["offline", "--msgs", "40", "--size", "32"]);
    assert_eq!(v["fetched"], 40, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicated"], 0, "{v}");
    assert_eq!(v["out_of_order"], 0, "{v}");
    assert_eq!(v["store_errors"], 0, "{v}");
}
