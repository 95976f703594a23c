//! `offline --msgs M`: one sender stores M messages for a registered but
//! offline recipient; then the recipient logs in and fetches them. The
//! sender gets no acknowledgement per message: after the last one it sends an
//! `E2E_AUTH` to the offline recipient, whose `ERROR` answer comes back
//! through the same outbox, after every store of that sender's messages
//! (stores run in order in the sender's connection thread).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::args::OfflineArgs;
use super::route::login;
use super::stats::{register_all, round, run_prefix, Progress};
use crate::client::ConnectOptions;

const WAIT: Duration = Duration::from_secs(60);

pub fn run(url: &str, args: &OfflineArgs) -> Result<Value> {
    let m = args.msgs;
    let prefix = run_prefix("o");
    let names = vec![format!("{prefix}s"), format!("{prefix}r")];
    let (users, _) = register_all(url, &names, 2, "offline: register")?;
    let options = ConnectOptions::default();
    let mut tx = login(url, &users[0], &options)?;
    let to = users[1].name.clone();
    // Let the login's own user list arrive first.
    let _ = tx.connection().recv(Duration::from_millis(200));
    let pad = "x".repeat(args.size);
    let start = Instant::now();
    let progress = Progress::new("offline: send", m as usize);
    for seq in 0..m {
        let cmd = json!({"type": "E2E_MSG", "to": to, "payload": {"seq": seq, "pad": pad}});
        tx.connection().send(&cmd)?;
        progress.tick(seq as usize + 1);
    }
    progress.finish();
    let sent_secs = start.elapsed().as_secs_f64();
    // Marker: signalling to an offline user is answered with ERROR, after
    // the stores queued before it.
    tx.connection()
        .send(&json!({"type": "E2E_AUTH", "to": to, "payload": {}}))?;
    let deadline = Instant::now() + WAIT;
    let mut store_errors = 0u64;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(cmd) = tx.connection().recv(left)? else {
            bail!("no ERROR marker from the server within {WAIT:?}");
        };
        if cmd.get("type").and_then(Value::as_str) == Some("ERROR") {
            let msg = cmd["message"].as_str().unwrap_or_default().to_lowercase();
            if msg.contains("store") || msg.contains("large") {
                store_errors += 1;
                continue;
            }
            break;
        }
    }
    let stored_secs = start.elapsed().as_secs_f64();
    // The recipient logs in and fetches.
    let mut rx = login(url, &users[1], &options)?;
    let fetch_start = Instant::now();
    rx.request_offline_messages()?;
    let mut next = 0u64;
    let mut received = 0u64;
    let mut out_of_order = 0u64;
    let mut duplicates = 0u64;
    let mut seen = vec![false; m as usize];
    while received < m {
        let cmd = match rx.connection().recv(Duration::from_secs(10))? {
            Some(c) => c,
            None => break,
        };
        if cmd.get("type").and_then(Value::as_str) != Some("E2E_MSG") {
            continue;
        }
        let seq = cmd["payload"]["seq"]
            .as_u64()
            .ok_or_else(|| anyhow!("E2E_MSG without a seq"))?;
        match seen.get_mut(seq as usize) {
            Some(false) => {
                seen[seq as usize] = true;
                received += 1;
            }
            _ => {
                duplicates += 1;
                continue;
            }
        }
        if seq != next {
            out_of_order += 1;
        }
        next = seq + 1;
    }
    let fetch_secs = fetch_start.elapsed().as_secs_f64();
    // Anything extra within a short while is a duplicate.
    while let Some(cmd) = rx.connection().recv(Duration::from_millis(300))? {
        if cmd.get("type").and_then(Value::as_str) == Some("E2E_MSG") {
            duplicates += 1;
        }
    }
    let lost = m - received;
    let store_rate = m as f64 / stored_secs.max(1e-9);
    println!(
        "offline: {m} msgs of {} B: sent in {sent_secs:.3} s, all stored after {stored_secs:.3} s = {store_rate:.0} msgs/s",
        args.size
    );
    println!(
        "  fetch at login: {received} in {:.1} ms; lost {lost}, duplicated {duplicates}, out of order {out_of_order}, store errors {store_errors}",
        fetch_secs * 1000.0
    );
    tx.close();
    rx.close();
    Ok(json!({
        "scenario": "offline",
        "msgs": m,
        "size": args.size,
        "send_secs": round(sent_secs * 1000.0) / 1000.0,
        "stored_secs": round(stored_secs * 1000.0) / 1000.0,
        "store_msgs_per_sec": round(store_rate),
        "fetched": received,
        "fetch_ms": round(fetch_secs * 1000.0),
        "lost": lost,
        "duplicated": duplicates,
        "out_of_order": out_of_order,
        "store_errors": store_errors,
    }))
}
