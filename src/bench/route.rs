//! `route`: K sender->receiver pairs; each sender streams M `E2E_MSG`s with a
//! raw JSON payload `{"ts","seq","pad"}` (the server relays payloads
//! opaquely), keeping at most W in flight, gated on the receiver's count.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use super::args::RouteArgs;
use super::plot;
use super::stats::{
    own_cpu_secs, register_all, round, run_prefix, BenchUser, Percentiles, ProcSample, Progress,
};
use crate::client::{Client, ClientRenewalMode, ConnectOptions};

/// How long a receiver waits for the next message before calling it lost.
const IDLE: Duration = Duration::from_secs(10);

/// What one receiver saw.
#[derive(Default)]
struct Received {
    latencies_ns: Vec<u64>,
    unique: u64,
    duplicates: u64,
    reordered: u64,
    renewals: u64,
    last_at: Option<Instant>,
}

/// What the sender and receiver threads of a run share.
struct Stream<'a> {
    /// Messages each receiver has seen (unique), by pair.
    counts: &'a [AtomicU64],
    errors: &'a Mutex<Vec<String>>,
    epoch: Instant,
    msgs: u64,
    window: u64,
    pad: &'a str,
}

/// The part of a relayed message a receiver reads (the rest is skipped).
#[derive(Deserialize)]
struct Relayed<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    payload: Option<Stamp>,
}

#[derive(Deserialize)]
struct Stamp {
    ts: u64,
    seq: u64,
}

impl Stream<'_> {
    fn delivered(&self, pair: usize) -> u64 {
        self.counts[pair].load(Ordering::Acquire)
    }

    /// Streams the pair's messages, keeping at most `window` undelivered.
    /// Messages are queued and written together when the window is full
    /// (or at the end), as a pipelining client would.
    fn send_all(&self, pair: usize, tx: &mut Client, to: &str) -> Result<()> {
        let to = serde_json::to_string(to)?;
        let mut text = String::with_capacity(self.pad.len() + 128);
        for seq in 0..self.msgs {
            if seq - self.delivered(pair) >= self.window {
                tx.connection().flush()?;
                self.wait_for_room(pair, tx, seq)?;
            }
            let ts = self.epoch.elapsed().as_nanos() as u64;
            text.clear();
            write!(
                text,
                r#"{{"type":"E2E_MSG","to":{to},"payload":{{"ts":{ts},"seq":{seq},"pad":"{}"}}}}"#,
                self.pad
            )?;
            tx.connection().queue_sealed_text(&text)?;
        }
        Ok(tx.connection().flush()?)
    }

    /// Waits until the receiver has seen enough of our messages to send
    /// `seq`, reading our own connection meanwhile (renewals, user lists).
    fn wait_for_room(&self, pair: usize, tx: &mut Client, seq: u64) -> Result<()> {
        let mut seen_count = self.delivered(pair);
        let mut progress_at = Instant::now();
        while seq - self.delivered(pair) >= self.window {
            let now_count = self.delivered(pair);
            if now_count != seen_count {
                (seen_count, progress_at) = (now_count, Instant::now());
            } else if progress_at.elapsed() >= IDLE {
                return Err(anyhow!(
                    "window stuck at seq {seq} for {IDLE:?} (messages lost?)"
                ));
            }
            if readable(tx) {
                tx.connection().recv(Duration::from_millis(1))?;
            } else {
                // The receiver unparks us at each message.
                std::thread::park_timeout(Duration::from_millis(2));
            }
        }
        Ok(())
    }

    /// Reads the pair's messages until all have come (or none for `IDLE`).
    fn receive_all(&self, pair: usize, rx: &mut Client, sender: &Thread) -> Received {
        let mut got = Received {
            latencies_ns: Vec::with_capacity(self.msgs as usize),
            ..Received::default()
        };
        let mut seen = vec![false; self.msgs as usize];
        let mut max_seq: Option<u64> = None;
        while got.unique < self.msgs {
            let text = match rx.connection().recv_text(IDLE) {
                Ok(Some(text)) => text,
                Ok(None) => break,
                Err(e) => {
                    self.errors
                        .lock()
                        .unwrap()
                        .push(format!("receiver {pair}: {e}"));
                    break;
                }
            };
            let Ok(Relayed {
                kind,
                payload: Some(Stamp { ts, seq }),
            }) = serde_json::from_str(&text)
            else {
                continue;
            };
            if kind != "E2E_MSG" {
                continue;
            }
            let now = self.epoch.elapsed().as_nanos() as u64;
            got.latencies_ns.push(now.saturating_sub(ts));
            got.last_at = Some(Instant::now());
            match seen.get_mut(seq as usize) {
                Some(true) | None => got.duplicates += 1,
                Some(slot) => {
                    *slot = true;
                    got.unique += 1;
                    if max_seq.is_some_and(|m| seq < m) {
                        got.reordered += 1;
                    }
                    max_seq = Some(max_seq.map_or(seq, |m| m.max(seq)));
                    self.counts[pair].fetch_add(1, Ordering::Release);
                    sender.unpark();
                }
            }
        }
        got.renewals = rx.connection().renewals_completed();
        got
    }
}

/// Logs `user` in with the challenge, with the given renewal mode.
pub fn login(url: &str, user: &BenchUser, options: &ConnectOptions) -> Result<Client> {
    let mut client =
        Client::connect_with(url, options).with_context(|| format!("connect for {}", user.name))?;
    client
        .login_challenge(&user.name, &user.identity)
        .with_context(|| format!("login {}", user.name))?
        .into_result()
        .map_err(|e| anyhow!("login {}: {e}", user.name))?;
    Ok(client)
}

pub fn run(url: &str, args: &RouteArgs) -> Result<Value> {
    if let Some(path) = &args.plot {
        plot::check_path(path)?;
    }
    let k = args.pairs.max(1);
    let options = ConnectOptions {
        renewal: if args.mobile_like {
            ClientRenewalMode::MobileLike
        } else {
            ClientRenewalMode::Immediate
        },
        ..ConnectOptions::default()
    };
    let prefix = run_prefix("p");
    let names: Vec<String> = (0..k)
        .flat_map(|i| [format!("{prefix}s{i}"), format!("{prefix}r{i}")])
        .collect();
    let (users, _) = register_all(url, &names, 4, "route: register")?;
    // Receivers first, so that every message finds its recipient online.
    // Each asks for the user list after login, like the mobile client's home
    // screen: relays to a session wait for its first chat command.
    let mut receivers = Vec::with_capacity(k);
    for i in 0..k {
        let mut c = login(url, &users[2 * i + 1], &options)?;
        c.request_user_list()?;
        receivers.push(c);
    }
    let mut senders = Vec::with_capacity(k);
    for i in 0..k {
        let mut c = login(url, &users[2 * i], &options)?;
        c.request_user_list()?;
        senders.push(c);
    }
    let pad = "x".repeat(args.size);
    let counts: Vec<AtomicU64> = (0..k).map(|_| AtomicU64::new(0)).collect();
    let results: Mutex<Vec<Received>> = Mutex::new(Vec::new());
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let barrier = Barrier::new(2 * k + 1);
    let epoch = Instant::now();
    let total = args.msgs * k as u64;
    let before = args.server_pid.map(ProcSample::read).transpose()?;
    let own_before = own_cpu_secs();
    let mut start = Instant::now();
    let stream = Stream {
        counts: &counts,
        errors: &errors,
        epoch,
        msgs: args.msgs,
        window: args.window.max(1),
        pad: &pad,
    };
    std::thread::scope(|s| {
        let mut sender_threads = Vec::with_capacity(k);
        for (i, mut tx) in senders.drain(..).enumerate() {
            let (stream, barrier) = (&stream, &barrier);
            let to = users[2 * i + 1].name.clone();
            let handle = s.spawn(move || {
                barrier.wait();
                if let Err(e) = stream.send_all(i, &mut tx, &to) {
                    stream
                        .errors
                        .lock()
                        .unwrap()
                        .push(format!("sender {i}: {e}"));
                    return;
                }
                // Stay connected until our receiver has everything (or gives up).
                let deadline = Instant::now() + IDLE;
                while stream.delivered(i) < stream.msgs && Instant::now() < deadline {
                    let _ = tx.connection().recv(Duration::from_millis(5));
                }
            });
            sender_threads.push(handle.thread().clone());
        }
        for (i, mut rx) in receivers.drain(..).enumerate() {
            let (stream, results, barrier) = (&stream, &results, &barrier);
            let sender = sender_threads[i].clone();
            s.spawn(move || {
                barrier.wait();
                let got = stream.receive_all(i, &mut rx, &sender);
                results.lock().unwrap().push(got);
                drop(rx); // no close handshake: fast, and never blocks the report
            });
        }
        barrier.wait();
        start = Instant::now();
        let progress = Progress::new("route", total as usize);
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let done: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            progress.tick(done as usize);
            if done >= total || results.lock().unwrap().len() == k {
                break;
            }
        }
        progress.finish();
    });
    let results = results.into_inner().unwrap();
    let end = results
        .iter()
        .filter_map(|r| r.last_at)
        .max()
        .unwrap_or_else(Instant::now);
    let after = args.server_pid.map(ProcSample::read).transpose()?;
    let own_cpu = own_cpu_secs() - own_before;
    let secs = end.saturating_duration_since(start).as_secs_f64().max(1e-9);
    let delivered: u64 = results.iter().map(|r| r.unique).sum();
    let duplicates: u64 = results.iter().map(|r| r.duplicates).sum();
    let reordered: u64 = results.iter().map(|r| r.reordered).sum();
    let renewals: u64 = results.iter().map(|r| r.renewals).sum();
    let lost = total - delivered;
    let mut lat: Vec<u64> = results.into_iter().flat_map(|r| r.latencies_ns).collect();
    let p = Percentiles::of(&mut lat);
    let rate = delivered as f64 / secs;
    println!(
        "route: {k} pairs x {} msgs, {} B, window {}, {}: {delivered} delivered in {secs:.2} s = {rate:.0} msgs/s",
        args.msgs,
        args.size,
        args.window,
        if args.mobile_like { "mobile-like renewals" } else { "immediate renewals" }
    );
    println!("  latency {}", p.human());
    println!("  lost {lost}, duplicated {duplicates}, reordered {reordered}; receiver renewals {renewals}; bench CPU {own_cpu:.2} s");
    if let Some(path) = &args.plot {
        let title = format!(
            "route: {k} pairs, window {}, {} B: {delivered} messages, {rate:.0} msgs/s",
            args.window, args.size
        );
        plot::latency_histogram(path, &title, &lat)?;
        println!("  latency histogram drawn to {}", path.display());
    }
    let mut out = json!({
        "scenario": "route",
        "pairs": k,
        "msgs_per_pair": args.msgs,
        "size": args.size,
        "window": args.window,
        "mobile_like": args.mobile_like,
        "secs": round(secs * 1000.0) / 1000.0,
        "delivered": delivered,
        "msgs_per_sec": round(rate),
        "latency": p.json(),
        "lost": lost,
        "duplicated": duplicates,
        "reordered": reordered,
        "renewals_completed": renewals,
        "bench_cpu_secs": round(own_cpu * 100.0) / 100.0,
        "errors": errors.into_inner().unwrap(),
    });
    if let (Some(b), Some(a)) = (before, after) {
        let cpu = a.cpu_secs - b.cpu_secs;
        let per_msg_us = cpu * 1e6 / delivered.max(1) as f64;
        println!(
            "  server: {cpu:.2} CPU s = {per_msg_us:.2} us/msg; RSS {} MiB, {} threads",
            a.rss_kib / 1024,
            a.threads
        );
        out["server_cpu_secs"] = json!(round(cpu * 100.0) / 100.0);
        out["server_cpu_us_per_msg"] = json!(round(per_msg_us * 10.0) / 10.0);
        out["server_rss_kib"] = json!(a.rss_kib);
        out["server_threads"] = json!(a.threads);
    }
    Ok(out)
}

/// Whether the client's socket has bytes to read (a zero-timeout poll(2)).
fn readable(client: &mut Client) -> bool {
    use std::os::fd::AsRawFd;
    let fd = client.connection().websocket_mut().get_ref().as_raw_fd();
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents != 0
}
