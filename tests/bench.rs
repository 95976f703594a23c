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
    assert!(v["bytes_read_by_held_clients"].as_u64().unwrap() > 0, "{v}");
    assert!(
        v["lists_settled_secs_after_last_login"].is_f64(),
        "the drain saw the held clients' lists: {v}"
    );
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

#[test]
fn mixed_scenario() {
    let server = server();
    let pid = std::process::id().to_string();
    let v = bench(
        &server,
        &[
            "mixed",
            "--users",
            "8",
            "--ramp-secs",
            "0.5",
            "--secs",
            "2",
            "--rate",
            "4",
            "--drops",
            "2",
            "--server-pid",
            &pid,
        ],
    );
    assert_eq!(v["scenario"], "mixed");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicated"], 0, "{v}");
    // Eight first logins and two returns after a drop.
    assert_eq!(v["logins"], 10, "{v}");
    assert_eq!(v["drops"], 2, "{v}");
    let sent = v["sent"].as_u64().unwrap();
    assert!(sent > 0, "{v}");
    let delivered = v["delivered"].as_u64().unwrap();
    let lost_at_a_drop = v["lost_at_a_drop"].as_u64().unwrap();
    assert_eq!(delivered + lost_at_a_drop, sent, "{v}");
    assert!(v["typing_seen"].as_u64().unwrap() > 0, "{v}");
    assert!(v["latency"]["p99_us"].as_f64().unwrap() > 0.0, "{v}");
}

/// Reads an SVG file the bench drew and checks a person would see a chart:
/// an SVG document with its title, axis labels and drawn shapes.
fn assert_chart(path: &std::path::Path, title_part: &str, shape: &str) {
    let svg = std::fs::read_to_string(path).expect("the SVG file exists");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains(title_part), "no title {title_part:?}");
    assert!(svg.contains("<text"), "no labels");
    assert!(svg.matches(shape).count() >= 2, "no {shape} drawn");
}

#[test]
fn route_and_hold_draw_plots() {
    let server = server();
    let dir = std::env::temp_dir().join(format!("chat_bench_plot_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let route_svg = dir.join("route.svg");
    let v = bench(
        &server,
        &[
            "route",
            "--pairs",
            "1",
            "--msgs",
            "200",
            "--window",
            "4",
            "--plot",
            route_svg.to_str().unwrap(),
        ],
    );
    assert_eq!(v["lost"], 0, "{v}");
    assert_chart(&route_svg, "route: 1 pairs", "<rect");
    assert!(std::fs::read_to_string(&route_svg).unwrap().contains("p99"));
    let hold_svg = dir.join("hold.svg");
    let v = bench(
        &server,
        &[
            "hold",
            "--users",
            "6",
            "--threads",
            "2",
            "--plot",
            hold_svg.to_str().unwrap(),
        ],
    );
    assert_eq!(v["connected"], 6, "{v}");
    assert_chart(&hold_svg, "hold: 6 users logged in", "<polyline");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plot_refuses_a_file_it_cannot_draw() {
    let server = server();
    let out = Command::new(env!("CARGO_BIN_EXE_chat_bench"))
        .args([
            "--url",
            &server.url,
            "route",
            "--msgs",
            "5",
            "--plot",
            "x.png",
        ])
        .output()
        .expect("chat_bench runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only .svg"));
}
