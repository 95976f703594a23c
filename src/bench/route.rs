//! `route`: K sender->receiver pairs; each sender streams M `E2E_MSG`s with a
//! raw JSON payload `{"ts","seq","pad"}` (the server relays payloads
//! opaquely), keeping at most W in flight. One thread per pair drives both
//! connections: it tops the window up on the sender's (messages queued,
//! then written together) and reads what reached the receiver's.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
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

/// How long a receiver's read after the first of a turn waits for a message.
const FOLLOW_UP: Duration = Duration::from_millis(1);

/// How often a pair looks for frames on its sender's connection.
const SENDER_CHECK: Duration = Duration::from_millis(5);

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

/// What the threads of a run (one per pair) share.
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
    /// Runs one pair on one thread: fills the window on the sender's
    /// connection (queued, then written together), reads what has come on
    /// the receiver's, and so on until every message has come or none came
    /// for `IDLE`.
    fn run_pair(&self, pair: usize, tx: &mut Client, rx: &mut Client, to: &str) -> Received {
        let mut tally = Tally::new(self.msgs);
        if let Err(e) = self.exchange(pair, tx, rx, to, &mut tally) {
            self.errors
                .lock()
                .unwrap()
                .push(format!("pair {pair}: {e}"));
        }
        tally.got.renewals = rx.connection().renewals_completed();
        tally.got
    }

    fn exchange(
        &self,
        pair: usize,
        tx: &mut Client,
        rx: &mut Client,
        to: &str,
        tally: &mut Tally,
    ) -> Result<()> {
        let to = serde_json::to_string(to)?;
        let mut text = String::with_capacity(self.pad.len() + 128);
        let mut sent = 0;
        let mut sender_checked = Instant::now();
        // When the receiver last got one of our messages (other frames,
        // such as user lists, do not count).
        let mut progress_at = Instant::now();
        while tally.got.unique < self.msgs {
            let queued_from = sent;
            while sent < self.msgs && sent - tally.got.unique < self.window {
                self.write_message(&mut text, &to, sent);
                tx.connection().queue_sealed_text(&text)?;
                sent += 1;
            }
            if sent > queued_from {
                tx.connection().flush()?;
            }
            // One message (waiting for it), then whatever the socket already
            // holds. Only the first read may wait long: if what is left is a
            // renewal frame and every message sent has come, a long wait for
            // a message would wait for one the sender has not been given.
            let mut wait = IDLE;
            loop {
                let text = rx.connection().recv_text(wait)?;
                wait = FOLLOW_UP;
                if text.is_some_and(|text| tally.record(&text, self.epoch)) {
                    self.counts[pair].fetch_add(1, Ordering::Relaxed);
                    progress_at = Instant::now();
                } else if progress_at.elapsed() >= IDLE {
                    bail!(
                        "no message for {IDLE:?} after {} of {sent} sent (lost?); {}",
                        tally.got.unique,
                        channel_states(tx, rx)
                    );
                }
                if !readable(rx) {
                    break;
                }
            }
            // The sender's own connection gets little (a renewal now and
            // then): look at it every few milliseconds.
            if sender_checked.elapsed() >= SENDER_CHECK {
                while readable(tx) {
                    tx.connection().recv(Duration::from_millis(1))?;
                }
                sender_checked = Instant::now();
            }
        }
        Ok(())
    }

    /// The text of message `seq`, stamped now.
    fn write_message(&self, text: &mut String, to_json: &str, seq: u64) {
        let ts = self.epoch.elapsed().as_nanos() as u64;
        text.clear();
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            r#"{{"type":"E2E_MSG","to":{to_json},"payload":{{"ts":{ts},"seq":{seq},"pad":"{}"}}}}"#,
            self.pad
        );
    }
}

/// Where both connections of a stuck pair stand in their key renewals.
fn channel_states(tx: &mut Client, rx: &mut Client) -> String {
    let state = |client: &mut Client| {
        let channel = client.connection().channel();
        format!(
            "{} renewals{}",
            channel.renewals_completed(),
            if channel.renewal_in_flight() {
                ", one in flight"
            } else {
                ""
            }
        )
    };
    format!("sender {}, receiver {}", state(tx), state(rx))
}

/// What a pair's receiver has seen so far.
struct Tally {
    got: Received,
    seen: Vec<bool>,
    max_seq: Option<u64>,
}

impl Tally {
    fn new(msgs: u64) -> Tally {
        Tally {
            got: Received {
                latencies_ns: Vec::with_capacity(msgs as usize),
                ..Received::default()
            },
            seen: vec![false; msgs as usize],
            max_seq: None,
        }
    }

    /// Counts one received command; true if it was a new message of ours.
    fn record(&mut self, text: &str, epoch: Instant) -> bool {
        let Ok(Relayed {
            kind,
            payload: Some(Stamp { ts, seq }),
        }) = serde_json::from_str(text)
        else {
            return false;
        };
        if kind != "E2E_MSG" {
            return false;
        }
        let now = epoch.elapsed().as_nanos() as u64;
        let got = &mut self.got;
        got.latencies_ns.push(now.saturating_sub(ts));
        got.last_at = Some(Instant::now());
        match self.seen.get_mut(seq as usize) {
            Some(true) | None => {
                got.duplicates += 1;
                false
            }
            Some(slot) => {
                *slot = true;
                got.unique += 1;
                if self.max_seq.is_some_and(|m| seq < m) {
                    got.reordered += 1;
                }
                self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
                true
            }
        }
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
    let barrier = Barrier::new(k + 1);
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
        for (i, (mut tx, mut rx)) in senders.drain(..).zip(receivers.drain(..)).enumerate() {
            let (stream, results, barrier) = (&stream, &results, &barrier);
            let to = users[2 * i + 1].name.clone();
            s.spawn(move || {
                barrier.wait();
                let got = stream.run_pair(i, &mut tx, &mut rx, &to);
                results.lock().unwrap().push(got);
                // No close handshake: fast, and never blocks the report.
                drop((tx, rx));
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
    let errors = errors.into_inner().unwrap();
    for error in &errors {
        println!("  error: {error}");
    }
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
        "errors": errors,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{Inbound, RenewalPolicy, ServerChannel};
    use crate::protocol::{self, ChatCommand};
    use std::net::{TcpListener, TcpStream};
    use tungstenite::{Message, WebSocket};

    /// One side of the scripted server: the upgrade and the channel
    /// handshake.
    fn accept(listener: &TcpListener) -> (WebSocket<TcpStream>, ServerChannel) {
        let (stream, _) = listener.accept().unwrap();
        let mut ws = tungstenite::accept(stream).unwrap();
        let Message::Text(start) = ws.read().unwrap() else {
            panic!("no HANDSHAKE_START");
        };
        let policy = RenewalPolicy::default();
        let (channel, response) =
            ServerChannel::accept_handshake(&start, policy, Instant::now()).unwrap();
        ws.send(Message::Text(response)).unwrap();
        (ws, channel)
    }

    /// A relay server that follows each relayed message, in the same write,
    /// with a renegotiation frame bigger than a socket read of the client's
    /// (4 KiB): after reading the message, the receiver's socket still
    /// holds the rest of that frame.
    fn scripted_server(listener: TcpListener, msgs: u64) {
        let (mut rx, mut rx_channel) = accept(&listener);
        let (mut tx, mut tx_channel) = accept(&listener);
        let control = format!(
            r#"{{"type":"RENEGOTIATE_NOTE","pad":"{}"}}"#,
            "x".repeat(12_000)
        );
        for _ in 0..msgs {
            let Message::Text(frame) = tx.read().unwrap() else {
                panic!("not a text frame");
            };
            let now = Instant::now();
            let Ok(Inbound::Routed(ChatCommand::Relay { kind, payload, .. })) =
                tx_channel.open(&frame, now)
            else {
                panic!("not a relay");
            };
            let relayed = protocol::relay(kind, "sender", &payload);
            rx.write(Message::Text(rx_channel.seal(&relayed, now)))
                .unwrap();
            rx.write(Message::Text(rx_channel.seal(&control, now)))
                .unwrap();
            rx.flush().unwrap();
        }
        // Hold the connections until the client is done with them.
        let _ = rx.read();
    }

    #[test]
    fn a_renewal_frame_left_in_the_socket_does_not_stall_a_pair() {
        let msgs = 3;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || scripted_server(listener, msgs));
        let options = ConnectOptions::default();
        let mut rx = Client::connect_with(&url, &options).unwrap();
        let mut tx = Client::connect_with(&url, &options).unwrap();
        let counts = [AtomicU64::new(0)];
        let errors = Mutex::new(Vec::new());
        let stream = Stream {
            counts: &counts,
            errors: &errors,
            epoch: Instant::now(),
            msgs,
            window: 1,
            pad: "x",
        };
        let got = stream.run_pair(0, &mut tx, &mut rx, "receiver");
        // Before the fix: "no message for 10s after 1 of 1 sent (lost?)".
        assert_eq!(errors.into_inner().unwrap(), Vec::<String>::new());
        assert_eq!(got.unique, msgs);
        rx.close();
        server.join().unwrap();
    }
}
