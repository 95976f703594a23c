//! `hold --users N`: registers N fresh users, then challenge-logs them all in
//! with a pool of login threads and keeps the connections open (the
//! `Client`s stay alive in a `Vec`). Like real apps they take what the
//! server sends (user lists): one drain thread reads their sockets raw and
//! throws the bytes away (no decoding: the bench's two cores could not open
//! every list), so the server's memory is not inflated by lists piling up
//! for clients that never read (`--no-drain` measures that worst case). A
//! few observer clients, logged in first, read presence and time when they
//! see everyone.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use super::args::HoldArgs;
use super::plot;
use super::route::login;
use super::stats::{register_all, round, run_prefix, Percentiles, ProcSample, Progress};
use crate::client::{Client, ConnectOptions};

/// What one observer saw.
struct Observed {
    /// When it first saw all N users online (None: never).
    converged_at: Option<Instant>,
    list_frames: u64,
    list_bytes: u64,
}

pub fn run(url: &str, args: &HoldArgs) -> Result<Value> {
    if let Some(path) = &args.plot {
        plot::check_path(path)?;
    }
    let n = args.users;
    let prefix = run_prefix("h");
    let names: Vec<String> = (0..n + args.observers)
        .map(|i| format!("{prefix}{i}"))
        .collect();
    let reg_start = Instant::now();
    let (users, _) = register_all(url, &names, args.register_threads, "hold: register")?;
    let reg_secs = reg_start.elapsed().as_secs_f64();
    let (watchers, users) = users.split_at(args.observers);
    let targets: HashSet<String> = users.iter().map(|u| u.name.to_lowercase()).collect();
    let options = ConnectOptions::default();
    let mut observers = Vec::new();
    for w in watchers {
        let mut c = login(url, w, &options)?;
        c.open_home()?;
        observers.push(c);
    }
    let stop = AtomicBool::new(false);
    let converged = AtomicUsize::new(0);
    let observed = Mutex::new(Vec::new());
    let clients: Mutex<Vec<Client>> = Mutex::new(Vec::with_capacity(n));
    // Sockets of held clients the drain thread reads (closed only after it
    // stopped: the clients outlive the scope).
    let drained: Mutex<Vec<i32>> = Mutex::new(Vec::with_capacity(n));
    let latencies = Mutex::new(Vec::with_capacity(n));
    // When each login completed, seconds after `start`.
    let done_at = Mutex::new(Vec::with_capacity(n));
    let failures = Mutex::new(Vec::<String>::new());
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let start = Instant::now();
    let mut last_login = start;
    let converge_timeout = Duration::from_secs(args.converge_timeout);
    // What the drain thread read from the held clients' sockets, in bytes.
    let drained_bytes = AtomicU64::new(0);
    // When the drain thread last read a user list's worth of bytes (ns
    // after `start`): when the last held client got its last list.
    let last_list_read = AtomicU64::new(0);
    std::thread::scope(|s| {
        for mut obs in observers.drain(..) {
            let (stop, observed, targets, converged) = (&stop, &observed, &targets, &converged);
            s.spawn(move || {
                let mut seen = Observed {
                    converged_at: None,
                    list_frames: 0,
                    list_bytes: 0,
                };
                while !stop.load(Ordering::Relaxed) {
                    let cmd = match obs.connection().recv(Duration::from_millis(50)) {
                        Ok(Some(c)) => c,
                        Ok(None) => continue,
                        Err(_) => break,
                    };
                    if cmd.get("type").and_then(Value::as_str) != Some("user_list_update") {
                        continue;
                    }
                    seen.list_frames += 1;
                    let online = cmd["users"].as_array().map_or(0, |list| {
                        list.iter()
                            .filter(|u| {
                                u["isOnline"].as_bool() == Some(true)
                                    && u["username"]
                                        .as_str()
                                        .is_some_and(|n| targets.contains(&n.to_lowercase()))
                            })
                            .count()
                    });
                    let bytes = Value::Object(cmd).to_string().len() as u64;
                    seen.list_bytes += bytes;
                    if online == targets.len() && seen.converged_at.is_none() {
                        seen.converged_at = Some(Instant::now());
                        converged.fetch_add(1, Ordering::Relaxed);
                    }
                }
                observed.lock().unwrap().push(seen);
                obs.close();
            });
        }
        s.spawn(|| {
            let seen = Drained {
                bytes: &drained_bytes,
                last_list_read: &last_list_read,
                start,
            };
            drain_sockets(&drained, &stop, &seen)
        });
        let progress = Progress::new("hold: login", n);
        std::thread::scope(|p| {
            for _ in 0..args.threads.max(1) {
                p.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= users.len() {
                        return;
                    }
                    let t = Instant::now();
                    // Like the mobile client: log in, then open the home
                    // screen (user list, offline messages).
                    match login(url, &users[i], &options).and_then(|mut c| {
                        c.open_home()?;
                        Ok(c)
                    }) {
                        Ok(mut c) => {
                            latencies
                                .lock()
                                .unwrap()
                                .push(t.elapsed().as_nanos() as u64);
                            done_at.lock().unwrap().push(start.elapsed().as_secs_f64());
                            if args.drain {
                                drained.lock().unwrap().push(raw_fd(&mut c));
                            }
                            clients.lock().unwrap().push(c);
                        }
                        Err(e) => failures.lock().unwrap().push(format!("{e:#}")),
                    }
                    progress.tick(done.fetch_add(1, Ordering::Relaxed) + 1);
                });
            }
        });
        last_login = Instant::now();
        progress.finish();
        // Wait for the observers to converge, then for the held clients'
        // lists to stop coming, or the timeout.
        let deadline = last_login + converge_timeout;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let quiet = start
                .elapsed()
                .saturating_sub(Duration::from_nanos(last_list_read.load(Ordering::Relaxed)));
            let drain_done = !args.drain || quiet >= LISTS_SETTLED_AFTER;
            if converged.load(Ordering::Relaxed) >= args.observers && drain_done {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let login_secs = last_login.duration_since(start).as_secs_f64();
    // Zero: the drain read no list (or did not run, `--no-drain`).
    let last_read = last_list_read.load(Ordering::Relaxed);
    let settled_secs =
        (last_read != 0).then(|| Duration::from_nanos(last_read).as_secs_f64() - login_secs);
    let failures = failures.into_inner().unwrap();
    let connected = clients.lock().unwrap().len();
    let server = args.server_pid.map(ProcSample::read).transpose()?;
    let mut lat = latencies.into_inner().unwrap();
    let p = Percentiles::of(&mut lat);
    let observed = observed.into_inner().unwrap();
    let converge: Vec<Option<f64>> = observed
        .iter()
        .map(|o| {
            o.converged_at
                .map(|t| t.saturating_duration_since(last_login).as_secs_f64())
        })
        .collect();
    let worst = if converge.iter().all(Option::is_some) {
        converge.iter().flatten().cloned().fold(0.0, f64::max)
    } else {
        f64::NAN
    };
    let frames: u64 = observed.iter().map(|o| o.list_frames).sum();
    let bytes: u64 = observed.iter().map(|o| o.list_bytes).sum();
    let per_obs_bytes = bytes / observed.len().max(1) as u64;
    let rate = connected as f64 / login_secs.max(1e-9);
    println!(
        "hold: {connected}/{n} users logged in ({} failed) in {login_secs:.2} s = {rate:.0} logins/s ({} threads); registration took {reg_secs:.1} s",
        failures.len(),
        args.threads
    );
    println!("  login latency {}", p.human());
    println!(
        "  observers saw everyone online {} after the last login; user_list_update per observer: {} frames, {} bytes",
        if worst.is_nan() { "NEVER (timeout)".to_string() } else { format!("{worst:.3} s") },
        frames / observed.len().max(1) as u64,
        per_obs_bytes
    );
    let mut out = json!({
        "scenario": "hold",
        "users": n,
        "connected": connected,
        "failed": failures.len(),
        "first_failures": failures.iter().take(3).collect::<Vec<_>>(),
        "login_secs": round(login_secs * 1000.0) / 1000.0,
        "logins_per_sec": round(rate),
        "login_latency": p.json(),
        "converged_secs_after_last_login": if worst.is_nan() { Value::Null } else { json!(round(worst * 1000.0) / 1000.0) },
        "observers": observed.len(),
        "list_frames_per_observer": frames / observed.len().max(1) as u64,
        "list_bytes_per_observer": per_obs_bytes,
        "list_bytes_all_clients_estimate": per_obs_bytes * (n + args.observers) as u64,
        "bytes_read_by_held_clients": drained_bytes.load(Ordering::Relaxed),
    });
    if let Some(settled) = settled_secs {
        println!(
            "  held clients read {} bytes in all after their login (raw WebSocket bytes, user lists nearly all of it); the last list reached them {settled:.3} s after the last login",
            drained_bytes.load(Ordering::Relaxed)
        );
        out["lists_settled_secs_after_last_login"] = json!(round(settled * 1000.0) / 1000.0);
    }
    if let Some(sv) = server {
        println!(
            "  server once connected: RSS {} MiB, {} threads",
            sv.rss_kib / 1024,
            sv.threads
        );
        out["server_rss_kib"] = json!(sv.rss_kib);
        out["server_threads"] = json!(sv.threads);
    }
    if let Some(path) = &args.plot {
        let title = format!("hold: {connected} users logged in, {rate:.0} logins/s");
        plot::logins_over_time(path, &title, &done_at.into_inner().unwrap())?;
        println!("  logins over time drawn to {}", path.display());
    }
    // Dropping the clients closes their sockets (no close handshake: fast).
    drop(clients);
    Ok(out)
}

/// The raw descriptor of a client's socket.
fn raw_fd(client: &mut Client) -> i32 {
    use std::os::fd::AsRawFd;
    client.connection().websocket_mut().get_ref().as_raw_fd()
}

/// A read this big is (part of) a sealed frame, not a ping (2 bytes): a
/// held client is sent user lists, and the answer to its mailbox request
/// right after its login.
const LIST_READ_BYTES: isize = 100;

/// How long the held clients must have read no list for their lists to
/// count as settled.
const LISTS_SETTLED_AFTER: Duration = Duration::from_secs(2);

/// What the drain thread counts.
struct Drained<'a> {
    bytes: &'a AtomicU64,
    /// Nanoseconds after `start` of the last read of [`LIST_READ_BYTES`]
    /// or more.
    last_list_read: &'a AtomicU64,
    start: Instant,
}

/// Reads and discards whatever arrives on the sockets in `fds` until `stop`,
/// counting into `seen`. Waits with epoll: polling 10,000 descriptors on
/// every turn took a tenth of the box during a login storm.
fn drain_sockets(fds: &Mutex<Vec<i32>>, stop: &AtomicBool, seen: &Drained) {
    // SAFETY: plain syscall; the descriptor is closed below.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        eprintln!(
            "hold: epoll_create1 failed: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let mut buffer = vec![0u8; 256 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut watched = 0;
    while !stop.load(Ordering::Relaxed) {
        {
            let fds = fds.lock().unwrap();
            for &fd in &fds[watched..] {
                let mut event = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: fd as u64,
                };
                // SAFETY: registers a live socket of a held client.
                unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) };
            }
            watched = fds.len();
        }
        // SAFETY: `events` is a live array of the given length.
        let ready =
            unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, 50) };
        for event in events.iter().take(ready.max(0) as usize) {
            let fd = event.u64 as i32;
            if !drain_one(fd, &mut buffer, seen) {
                // SAFETY: stops watching a socket at end of stream.
                unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
            }
        }
    }
    // SAFETY: our own epoll descriptor, closed once.
    unsafe { libc::close(epoll) };
}

/// Non-blocking reads from `fd` until it is empty; false at end of stream
/// or on an error (that client is left alone from then on).
fn drain_one(fd: i32, buffer: &mut [u8], seen: &Drained) -> bool {
    loop {
        // SAFETY: reads into our own buffer of the given length.
        let got = unsafe {
            libc::recv(
                fd,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if got == 0 {
            return false;
        }
        if got < 0 {
            return std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock;
        }
        seen.bytes.fetch_add(got as u64, Ordering::Relaxed);
        if got >= LIST_READ_BYTES {
            let at = seen.start.elapsed().as_nanos() as u64;
            seen.last_list_read.store(at, Ordering::Relaxed);
        }
    }
}
