//! Shared helpers: percentiles over a sorted `Vec`, `/proc/<pid>` figures,
//! unique user names, and a registration pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

use crate::client::{Client, Identity};

/// Latency percentiles in microseconds (input: nanoseconds, any order).
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub count: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Percentiles {
    /// Sorts `samples_ns` and picks the nearest-rank percentiles.
    pub fn of(samples_ns: &mut [u64]) -> Percentiles {
        if samples_ns.is_empty() {
            return Percentiles::default();
        }
        samples_ns.sort_unstable();
        let n = samples_ns.len();
        let at = |p: f64| {
            let rank = ((p / 100.0) * n as f64).ceil() as usize;
            samples_ns[rank.clamp(1, n) - 1] as f64 / 1000.0
        };
        Percentiles {
            count: n,
            p50_us: at(50.0),
            p90_us: at(90.0),
            p99_us: at(99.0),
            max_us: samples_ns[n - 1] as f64 / 1000.0,
        }
    }

    pub fn json(&self) -> Value {
        json!({"p50_us": round(self.p50_us), "p90_us": round(self.p90_us),
               "p99_us": round(self.p99_us), "max_us": round(self.max_us)})
    }

    pub fn human(&self) -> String {
        format!(
            "p50 {} p90 {} p99 {} max {}",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.max_us)
        )
    }
}

fn ms(us: f64) -> String {
    format!("{:.3} ms", us / 1000.0)
}

/// Rounds to one decimal for the JSON line.
pub fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// CPU time, RSS and threads of a process, from `/proc/<pid>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    pub cpu_secs: f64,
    pub rss_kib: u64,
    pub threads: u64,
}

impl ProcSample {
    pub fn read(pid: u32) -> Result<ProcSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // Fields after "(comm) ": state is index 0, utime 11, stime 12.
        let rest = stat
            .rsplit_once(") ")
            .map(|(_, r)| r)
            .ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<f64> {
            Ok(fields
                .get(i)
                .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
                .parse::<f64>()?)
        };
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let cpu_secs = (ticks(11)? + ticks(12)?) / hz;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(ProcSample {
            cpu_secs,
            rss_kib: field("VmRSS:"),
            threads: field("Threads:"),
        })
    }
}

/// CPU seconds (user + system) used by this process so far.
pub fn own_cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Raises this process's descriptor limit (soft to hard): the bench holds
/// one socket per simulated client.
pub fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the valid struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// A user-name prefix unique to this run (names stay valid: no spaces).
pub fn run_prefix(scenario: &str) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "b{scenario}{}x{}_",
        t.as_millis() % 100_000_000,
        std::process::id()
    )
}

/// The password of a bench user.
pub fn password_of(name: &str) -> String {
    format!("bench password {name}")
}

/// A registered bench user.
#[derive(Clone)]
pub struct BenchUser {
    pub name: String,
    pub identity: Identity,
}

/// Registers one user on its own connection; returns how long the
/// `REGISTER` round trip took.
pub fn register_one(url: &str, name: &str, identity: &Identity) -> Result<Duration> {
    let mut client = Client::connect(url).with_context(|| format!("connect for {name}"))?;
    let t = Instant::now();
    let reply = client
        .register(name, &password_of(name), identity)
        .with_context(|| format!("register {name}"))?;
    let took = t.elapsed();
    client.close();
    reply
        .into_result()
        .map_err(|e| anyhow!("register {name}: {e}"))?;
    Ok(took)
}

/// Registers `names` with `threads` workers; returns the users (in the
/// order of `names`) and each registration's latency in nanoseconds.
pub fn register_all(
    url: &str,
    names: &[String],
    threads: usize,
    label: &str,
) -> Result<(Vec<BenchUser>, Vec<u64>)> {
    let users: Vec<BenchUser> = names
        .iter()
        .map(|n| BenchUser {
            name: n.clone(),
            identity: Identity::generate(),
        })
        .collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::with_capacity(names.len()));
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let progress = Progress::new(label, names.len());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users.len() || failure.lock().unwrap().is_some() {
                    return;
                }
                match register_one(url, &users[i].name, &users[i].identity) {
                    Ok(d) => latencies.lock().unwrap().push(d.as_nanos() as u64),
                    Err(e) => {
                        failure.lock().unwrap().get_or_insert(e);
                        return;
                    }
                }
                progress.tick(done.fetch_add(1, Ordering::Relaxed) + 1);
            });
        }
    });
    progress.finish();
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    Ok((users, latencies.into_inner().unwrap()))
}

/// A progress line on stderr, at most twice a second.
pub struct Progress {
    label: String,
    total: usize,
    start: Instant,
    last: Mutex<Instant>,
}

impl Progress {
    pub fn new(label: &str, total: usize) -> Progress {
        Progress {
            label: label.to_string(),
            total,
            start: Instant::now(),
            last: Mutex::new(Instant::now()),
        }
    }

    pub fn tick(&self, done: usize) {
        let mut last = self.last.lock().unwrap();
        if last.elapsed() >= Duration::from_millis(500) {
            *last = Instant::now();
            eprint!(
                "\r{}: {done}/{} ({:.1} s)   ",
                self.label,
                self.total,
                self.start.elapsed().as_secs_f64()
            );
        }
    }

    pub fn finish(&self) {
        if self.start.elapsed() >= Duration::from_millis(500) {
            eprintln!(
                "\r{}: {}/{} ({:.1} s)   ",
                self.label,
                self.total,
                self.total,
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}
