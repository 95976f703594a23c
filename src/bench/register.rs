//! `register --users N`: registrations per second and their latency.

use std::time::Instant;

use anyhow::Result;
use serde_json::{json, Value};

use super::args::RegisterArgs;
use super::stats::{register_all, round, run_prefix, Percentiles};

pub fn run(url: &str, args: &RegisterArgs) -> Result<Value> {
    let prefix = run_prefix("r");
    let names: Vec<String> = (0..args.users).map(|i| format!("{prefix}{i}")).collect();
    let start = Instant::now();
    let (_, mut latencies) = register_all(url, &names, args.threads, "register")?;
    let secs = start.elapsed().as_secs_f64();
    let rate = args.users as f64 / secs;
    let p = Percentiles::of(&mut latencies);
    println!(
        "register: {} users with {} threads in {secs:.2} s: {rate:.1}/s; latency {}",
        args.users,
        args.threads,
        p.human()
    );
    Ok(json!({
        "scenario": "register",
        "users": args.users,
        "threads": args.threads,
        "secs": round(secs * 1000.0) / 1000.0,
        "registrations_per_sec": round(rate),
        "latency": p.json(),
    }))
}
