//! `mixed`: a classroom-like run. N users log in one by one over a ramp,
//! then each chats with random classmates: a typing notice, then an
//! `E2E_MSG` (raw JSON payload `{"ts","seq","pad"}`), at a few messages per
//! second, with random gaps. Some users drop their connection without a
//! goodbye (a phone losing its network) and come back a moment later; a
//! message for a user who is away waits in the offline store and arrives
//! at the next login (the client opens its home screen, which asks for it).
//!
//! Reported: delivery latency percentiles (messages to a logged-in
//! recipient apart from those that waited for their recipient's login),
//! login latency, typing notices seen, and everything that went wrong: `ERROR` frames, failed logins,
//! broken connections, duplicates, and messages never delivered. A message
//! lost with a socket that vanished (sent within a second of its sender's
//! or recipient's drop: unread bytes die with the connection) is counted
//! apart: no server can deliver what a vanished client never read or sent.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::Rng;
use serde_json::{json, Value};

use super::args::MixedArgs;
use super::route::login;
use super::stats::{register_all, round, run_prefix, BenchUser, Percentiles, ProcSample, Progress};
use crate::client::{Client, ConnectOptions};

/// How long after the run the users keep reading, waiting for the last
/// messages (and the offline ones of users who came back).
const DRAIN: Duration = Duration::from_secs(10);

/// The drain ends early once nothing was delivered for this long.
const STALL: Duration = Duration::from_secs(2);

/// A message lost with a sender or recipient that dropped this close to
/// its sending counts as lost at the drop.
const DROP_WINDOW: Duration = Duration::from_secs(1);

/// The shared, read-only plan of a run.
struct Plan<'a> {
    url: &'a str,
    users: &'a [BenchUser],
    index: HashMap<String, usize>,
    args: &'a MixedArgs,
    options: ConnectOptions,
    epoch: Instant,
    /// When every user stops sending.
    stop_at: Instant,
    /// Messages sent and delivered so far (for the drain and the progress).
    sent: AtomicU64,
    delivered: AtomicU64,
    pad: String,
}

/// One message as sent.
struct Sent {
    to: usize,
    seq: u64,
    at: Instant,
}

/// What one simulated user did and saw.
#[derive(Default)]
struct UserLog {
    sent: Vec<Sent>,
    /// (sender, seq) of every message received.
    received: HashSet<(usize, u64)>,
    /// Latencies of messages sent while this session was logged in.
    latencies_ns: Vec<u64>,
    /// Latencies of messages sent before it logged in (they waited in the
    /// offline store, or in the hand-over of a dropped session).
    stored_latencies_ns: Vec<u64>,
    /// When the current session started, in ns since the epoch.
    session_start_ns: u64,
    login_ns: Vec<u64>,
    /// When each login completed.
    logged_in: Vec<Instant>,
    duplicates: u64,
    typing_seen: u64,
    drops: Vec<Instant>,
    errors: Vec<String>,
}

pub fn run(url: &str, args: &MixedArgs) -> Result<Value> {
    let n = args.users.max(2);
    let prefix = run_prefix("m");
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let (users, _) = register_all(url, &names, args.register_threads, "mixed: register")?;
    let index = users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.name.to_lowercase(), i))
        .collect();
    let before = args.server_pid.map(ProcSample::read).transpose()?;
    let epoch = Instant::now();
    let plan = Plan {
        url,
        users: &users,
        index,
        args,
        options: ConnectOptions::default(),
        epoch,
        stop_at: epoch + Duration::from_secs_f64(args.ramp_secs + args.secs),
        sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        pad: "x".repeat(args.size),
    };
    let droppers = pick_droppers(n, args.drops);
    let logs: Mutex<Vec<(usize, UserLog)>> = Mutex::new(Vec::with_capacity(n));
    let run_secs = args.ramp_secs + args.secs;
    std::thread::scope(|s| {
        for i in 0..n {
            let (plan, logs) = (&plan, &logs);
            let drops = droppers.contains(&i);
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn_scoped(s, move || {
                    let log = run_user(plan, i, drops);
                    logs.lock().unwrap().push((i, log));
                })
                .expect("a thread per simulated user");
        }
        let progress = Progress::new("mixed: seconds", run_secs.ceil() as usize);
        while logs.lock().unwrap().len() < n {
            std::thread::sleep(Duration::from_millis(200));
            let elapsed = epoch.elapsed().as_secs_f64().min(run_secs);
            progress.tick(elapsed as usize);
        }
        progress.finish();
    });
    let server = args.server_pid.map(ProcSample::read).transpose()?;
    let mut logs = logs.into_inner().unwrap();
    logs.sort_by_key(|(i, _)| *i);
    let logs: Vec<UserLog> = logs.into_iter().map(|(_, log)| log).collect();
    Ok(report(args, n, &logs, epoch, before.zip(server)))
}

/// Which users drop once during the run.
fn pick_droppers(n: usize, drops: usize) -> HashSet<usize> {
    let mut rng = rand::thread_rng();
    let mut chosen = HashSet::new();
    while chosen.len() < drops.min(n) {
        chosen.insert(rng.gen_range(0..n));
    }
    chosen
}

/// One simulated user, from its login to the end of the drain.
fn run_user(plan: &Plan<'_>, me: usize, drops: bool) -> UserLog {
    let mut log = UserLog::default();
    let mut rng = rand::thread_rng();
    let n = plan.users.len();
    // Logins trickle in over the ramp.
    let login_at = plan.epoch + Duration::from_secs_f64(plan.args.ramp_secs * me as f64 / n as f64);
    std::thread::sleep(login_at.saturating_duration_since(Instant::now()));
    let Some(mut client) = connect(plan, me, &mut log) else {
        return log;
    };
    let mut drop_at = drops.then(|| {
        let span = plan.stop_at.saturating_duration_since(Instant::now());
        Instant::now() + span.mul_f64(rng.gen_range(0.2..0.8))
    });
    let mut next_send = Instant::now() + gap(plan.args.rate, &mut rng);
    let mut seq = 0u64;
    while Instant::now() < plan.stop_at {
        if drop_at.is_some_and(|t| Instant::now() >= t) {
            drop_at = None;
            log.drops.push(Instant::now());
            drop(client); // no close frame: the network is gone
            std::thread::sleep(Duration::from_millis(rng.gen_range(300..1500)));
            match connect(plan, me, &mut log) {
                Some(c) => client = c,
                None => return log,
            }
            continue;
        }
        if Instant::now() >= next_send {
            let mut to = rng.gen_range(0..n - 1);
            if to >= me {
                to += 1;
            }
            if let Err(e) = send_one(plan, &mut client, to, seq) {
                log.errors.push(format!("user {me}: send: {e:#}"));
                return log;
            }
            log.sent.push(Sent {
                to,
                seq,
                at: Instant::now(),
            });
            plan.sent.fetch_add(1, Ordering::Relaxed);
            seq += 1;
            next_send += gap(plan.args.rate, &mut rng);
        }
        let wait = next_send
            .min(plan.stop_at)
            .min(drop_at.unwrap_or(plan.stop_at))
            .saturating_duration_since(Instant::now());
        if !receive(
            plan,
            &mut client,
            wait.max(Duration::from_millis(1)),
            &mut log,
        ) {
            return log;
        }
    }
    // Drain: keep reading until everything sent has arrived, or nothing
    // more arrives for a while (what was lost at a drop never will).
    let drain_until = plan.stop_at + DRAIN;
    let (mut seen, mut progress_at) = (plan.delivered.load(Ordering::Relaxed), Instant::now());
    while Instant::now() < drain_until && progress_at.elapsed() < STALL {
        let delivered = plan.delivered.load(Ordering::Relaxed);
        // Every send was counted by then (none starts after `stop_at`).
        let all_counted = Instant::now() >= plan.stop_at + Duration::from_millis(500);
        if all_counted && delivered >= plan.sent.load(Ordering::Relaxed) {
            break;
        }
        if delivered != seen {
            (seen, progress_at) = (delivered, Instant::now());
        }
        if !receive(plan, &mut client, Duration::from_millis(50), &mut log) {
            break;
        }
    }
    client.close();
    log
}

/// A random gap between two messages, `rate` per second on average.
fn gap(rate: f64, rng: &mut impl Rng) -> Duration {
    let mean = 1.0 / rate.max(0.001);
    Duration::from_secs_f64(mean * rng.gen_range(0.5..1.5))
}

/// Logs `me` in and opens the home screen (user list, offline messages).
fn connect(plan: &Plan<'_>, me: usize, log: &mut UserLog) -> Option<Client> {
    let start = Instant::now();
    let result = login(plan.url, &plan.users[me], &plan.options).and_then(|mut c| {
        c.open_home()?;
        Ok(c)
    });
    match result {
        Ok(client) => {
            log.login_ns.push(start.elapsed().as_nanos() as u64);
            log.session_start_ns = plan.epoch.elapsed().as_nanos() as u64;
            log.logged_in.push(Instant::now());
            Some(client)
        }
        Err(e) => {
            log.errors.push(format!("user {me}: login: {e:#}"));
            None
        }
    }
}

/// A typing notice, then the message, then the end of typing.
fn send_one(plan: &Plan<'_>, client: &mut Client, to: usize, seq: u64) -> Result<()> {
    let name = &plan.users[to].name;
    client.typing(name, true)?;
    let ts = plan.epoch.elapsed().as_nanos() as u64;
    client.connection().send(&json!({
        "type": "E2E_MSG",
        "to": name,
        "payload": {"ts": ts, "seq": seq, "pad": plan.pad},
    }))?;
    client.typing(name, false)?;
    Ok(())
}

/// Reads for up to `wait`; false when the connection broke.
fn receive(plan: &Plan<'_>, client: &mut Client, wait: Duration, log: &mut UserLog) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let cmd = match client.connection().recv(left) {
            Ok(Some(cmd)) => cmd,
            Ok(None) => return true,
            Err(e) => {
                log.errors.push(format!("receive: {e:#}"));
                return false;
            }
        };
        match cmd.get("type").and_then(Value::as_str) {
            Some("E2E_MSG") => on_message(plan, &cmd, log),
            Some("TYPING_STATUS_UPDATE") => log.typing_seen += 1,
            Some("ERROR") => log
                .errors
                .push(format!("ERROR: {}", cmd["message"].as_str().unwrap_or("?"))),
            _ => {}
        }
        if left.is_zero() {
            return true;
        }
    }
}

fn on_message(plan: &Plan<'_>, cmd: &serde_json::Map<String, Value>, log: &mut UserLog) {
    let now = plan.epoch.elapsed().as_nanos() as u64;
    let from = cmd
        .get("from")
        .and_then(Value::as_str)
        .and_then(|name| plan.index.get(&name.to_lowercase()));
    let payload = &cmd["payload"];
    let (Some(&from), Some(ts), Some(seq)) =
        (from, payload["ts"].as_u64(), payload["seq"].as_u64())
    else {
        log.errors.push("E2E_MSG without from/ts/seq".into());
        return;
    };
    if log.received.insert((from, seq)) {
        let latency = now.saturating_sub(ts);
        if ts < log.session_start_ns {
            log.stored_latencies_ns.push(latency);
        } else {
            log.latencies_ns.push(latency);
        }
        plan.delivered.fetch_add(1, Ordering::Relaxed);
    } else {
        log.duplicates += 1;
    }
}

/// Messages never delivered: how many were lost at a drop of their sender
/// or recipient, and a description of each other one.
fn undelivered(logs: &[UserLog], epoch: Instant) -> (u64, Vec<String>) {
    let near_a_drop = |log: &UserLog, at: Instant| {
        log.drops.iter().any(|&d| {
            let apart = if d >= at { d - at } else { at - d };
            apart <= DROP_WINDOW
        })
    };
    let secs = |t: &Instant| format!("{:.3}", t.saturating_duration_since(epoch).as_secs_f64());
    let (mut at_drop, mut lost) = (0, Vec::new());
    for (from, log) in logs.iter().enumerate() {
        for sent in &log.sent {
            let recipient = &logs[sent.to];
            if recipient.received.contains(&(from, sent.seq)) {
                continue;
            }
            if near_a_drop(recipient, sent.at) || near_a_drop(log, sent.at) {
                at_drop += 1;
            } else {
                let logins: Vec<String> = recipient.logged_in.iter().map(secs).collect();
                lost.push(format!(
                    "user {from} seq {} to user {} sent at {} s (recipient logged in at {} s)",
                    sent.seq,
                    sent.to,
                    secs(&sent.at),
                    logins.join(", ")
                ));
            }
        }
    }
    (at_drop, lost)
}

fn report(
    args: &MixedArgs,
    n: usize,
    logs: &[UserLog],
    epoch: Instant,
    server: Option<(ProcSample, ProcSample)>,
) -> Value {
    let sent: u64 = logs.iter().map(|l| l.sent.len() as u64).sum();
    let delivered: u64 = logs.iter().map(|l| l.received.len() as u64).sum();
    let duplicates: u64 = logs.iter().map(|l| l.duplicates).sum();
    let typing: u64 = logs.iter().map(|l| l.typing_seen).sum();
    let drops: usize = logs.iter().map(|l| l.drops.len()).sum();
    let logins: usize = logs.iter().map(|l| l.login_ns.len()).sum();
    let (lost_at_drop, lost_list) = undelivered(logs, epoch);
    let lost = lost_list.len();
    let errors: Vec<&String> = logs.iter().flat_map(|l| &l.errors).collect();
    let mut lat: Vec<u64> = logs.iter().flat_map(|l| l.latencies_ns.clone()).collect();
    let p = Percentiles::of(&mut lat);
    let mut stored: Vec<u64> = logs
        .iter()
        .flat_map(|l| l.stored_latencies_ns.clone())
        .collect();
    let stored_p = Percentiles::of(&mut stored);
    let mut login_lat: Vec<u64> = logs.iter().flat_map(|l| l.login_ns.clone()).collect();
    let login_p = Percentiles::of(&mut login_lat);
    println!(
        "mixed: {n} users over a {:.0} s ramp + {:.0} s at {} msgs/s each: {sent} sent, {delivered} delivered, {typing} typing notices seen",
        args.ramp_secs, args.secs, args.rate
    );
    println!("  delivery latency, recipient online: {}", p.human());
    println!(
        "  {} messages sent before their recipient logged in (offline store): {}",
        stored_p.count,
        stored_p.human()
    );
    println!(
        "  logins {logins} ({drops} after a drop), login latency {}",
        login_p.human()
    );
    println!(
        "  errors {}, duplicated {duplicates}, lost {lost}, lost at a drop {lost_at_drop}",
        errors.len()
    );
    for e in errors.iter().take(5) {
        println!("    {e}");
    }
    for l in lost_list.iter().take(5) {
        println!("    lost: {l}");
    }
    let mut out = json!({
        "scenario": "mixed",
        "users": n,
        "ramp_secs": args.ramp_secs,
        "secs": args.secs,
        "rate_per_user": args.rate,
        "sent": sent,
        "delivered": delivered,
        "latency": p.json(),
        "from_offline_store": stored_p.count,
        "from_offline_store_latency": stored_p.json(),
        "logins": logins,
        "drops": drops,
        "login_latency": login_p.json(),
        "typing_seen": typing,
        "duplicated": duplicates,
        "lost": lost,
        "lost_at_a_drop": lost_at_drop,
        "errors": errors.len(),
        "first_errors": errors.iter().take(5).collect::<Vec<_>>(),
        "first_lost": lost_list.iter().take(5).collect::<Vec<_>>(),
    });
    if let Some((b, a)) = server {
        let cpu = a.cpu_secs - b.cpu_secs;
        println!(
            "  server: {cpu:.2} CPU s; RSS {} MiB, {} threads",
            a.rss_kib / 1024,
            a.threads
        );
        out["server_cpu_secs"] = json!(round(cpu * 100.0) / 100.0);
        out["server_rss_kib"] = json!(a.rss_kib);
        out["server_threads"] = json!(a.threads);
    }
    out
}
