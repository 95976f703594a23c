//! The server: opens the store, starts the dispatcher thread, binds the
//! `TcpListener` and spawns one OS thread per accepted client (see
//! [`crate::connection`]).
//!
//! Threads are spawned with `thread::Builder` and a small, stated stack
//! ([`CONNECTION_STACK_BYTES`]); a refused spawn refuses that connection and
//! never takes the server down. A panic in a connection thread is caught,
//! logged, and reported to the dispatcher as a closed connection, so it
//! leaves no dead session behind.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{error, info, warn};
use prometheus::IntGauge;

use crate::config::{Config, StoreConfig};
use crate::connection::offline::OfflineClaims;
use crate::connection::{self, Services};
use crate::dispatcher::{ConnId, Dispatcher, DispatcherSettings, Envelope};
use crate::expiry::Expiry;
use crate::gate::Gate;
use crate::http::Router;
use crate::monitoring::{HealthHandler, MeteredStore, Metrics, MetricsHandler};
use crate::password::{PasswordError, PasswordHasher};
use crate::presence::Coalescing;
use crate::quota::MailboxQuota;
use crate::store::{MysqlSettings, MysqlStore, SqliteStore};
use crate::store::{Store, StoreError};
use crate::throttle::AuthThrottle;
use crate::web::WebClient;

/// The plain-HTTP handlers of the chat port: the web client's page and
/// assets, `/healthz` and `/metrics`.
fn http_router(store: &Arc<dyn Store>, metrics: &Metrics, metrics_public: bool) -> Router {
    let mut router = Router::new();
    router.add(WebClient::new());
    router.add(HealthHandler::new(store.clone()));
    router.add(MetricsHandler::new(metrics.clone(), metrics_public));
    router
}

/// Stack of a connection thread. Release builds need little (argon2 and
/// JSON work on the heap); debug builds get more for their bigger frames.
pub const CONNECTION_STACK_BYTES: usize = if cfg!(debug_assertions) {
    1024 * 1024
} else {
    256 * 1024
};

/// Envelopes that may wait for the dispatcher; a full queue makes
/// connection threads wait (backpressure), never the dispatcher. The queue
/// is a ring that every envelope walks through, whatever its occupancy: a
/// small one stays in the CPU's cache (65,536 slots, 7.5 MB, missed it on
/// every send and receive: ~4% of the server's routing time).
const DISPATCH_QUEUE: usize = 4_096;

/// How long `shutdown` waits for connection threads to finish.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("password hashing: {0}")]
    Password(#[from] PasswordError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A running server.
pub struct ServerHandle {
    local_addr: SocketAddr,
    store_name: String,
    stopping: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    dispatcher: Sender<Envelope>,
    accept_thread: Option<JoinHandle<()>>,
    dispatcher_thread: Option<JoinHandle<()>>,
    /// The offline expiry thread (stops when dropped).
    _expiry: Option<Expiry>,
}

/// Opens the configured store.
pub fn open_store(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config {
        StoreConfig::Mysql(mysql) => {
            let settings = MysqlSettings::from_url(&mysql.url)?;
            Arc::new(MysqlStore::connect(&settings, mysql.pool_max)?)
        }
        StoreConfig::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
    })
}

impl ServerHandle {
    /// Starts a server with `config` on a store opened from it.
    pub fn start(config: Config) -> Result<ServerHandle, ServerError> {
        let store = open_store(&config.store)?;
        ServerHandle::start_with_store(config, store)
    }

    /// Starts a server on an already opened store.
    pub fn start_with_store(
        config: Config,
        store: Arc<dyn Store>,
    ) -> Result<ServerHandle, ServerError> {
        let tls = match &config.tls {
            Some(files) => {
                let tls = crate::tls::server_config(&files.cert, &files.key)?;
                info!(
                    "TLS on (wss:// and https://), certificate {}",
                    files.cert.display()
                );
                Some(tls)
            }
            None => None,
        };
        let metrics = Metrics::new();
        let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store, metrics.clone()));
        let usernames = store.all_usernames()?;
        let passwords = PasswordHasher::new(config.hash, config.hash_concurrency)?;
        let listener = TcpListener::bind(config.bind).map_err(|source| ServerError::Bind {
            addr: config.bind,
            source,
        })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.bind,
            source,
        })?;
        let (dispatcher_tx, inbox) = crossbeam_channel::bounded(DISPATCH_QUEUE);
        let settings = DispatcherSettings {
            ready_timeout: config.ready_timeout,
            pending_limit: config.outbox_capacity,
            presence: Coalescing {
                base_window: config.presence_window,
                budget_bytes_per_sec: config.presence_budget,
                burst_changes: config.list_burst,
            },
            metrics: metrics.clone(),
        };
        let registered = usernames.len();
        let dispatcher = Dispatcher::new(inbox, usernames, settings);
        let dispatcher_thread = thread::Builder::new()
            .name("dispatcher".into())
            .spawn(move || dispatcher.run())
            .map_err(ServerError::Thread)?;
        let store_name = store.backend_name();
        let expiry = match config.offline_max_age {
            Some(age) => Some(Expiry::start(store.clone(), age).map_err(ServerError::Thread)?),
            None => None,
        };
        let hash_gate = Gate::new(config.hash_concurrency, config.hash_queue);
        let throttle = AuthThrottle::new(config.throttle);
        let mailboxes = MailboxQuota::new(config.offline_quota);
        let http = http_router(&store, &metrics, config.metrics_public);
        let services = Arc::new(Services {
            mailboxes,
            throttle,
            hash_gate,
            list_gate: Gate::new(list_sealers(), usize::MAX),
            config,
            store,
            dispatcher: dispatcher_tx.clone(),
            passwords,
            offline_claims: OfflineClaims::default(),
            http,
            metrics,
            tls,
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let max_total = match services.config.max_connections {
            0 => default_max_connections(),
            configured => configured,
        };
        info!(
            "connection limits: {max_total} in total, {} per address",
            services.config.max_connections_per_address
        );
        let acceptor = Acceptor {
            listener,
            limits: Arc::new(Limits {
                max_total,
                max_per_address: services.config.max_connections_per_address,
                active: active.clone(),
                per_address: Mutex::new(HashMap::new()),
                open: services.metrics.connections_open.clone(),
            }),
            services,
            stopping: stopping.clone(),
            next_conn: AtomicU64::new(1),
        };
        let accept_thread = thread::Builder::new()
            .name("accept".into())
            .spawn(move || acceptor.run())
            .map_err(ServerError::Thread)?;
        info!("chat_server listening on {local_addr}, store {store_name}, {registered} registered users");
        Ok(ServerHandle {
            local_addr,
            store_name,
            stopping,
            active,
            dispatcher: dispatcher_tx,
            accept_thread: Some(accept_thread),
            dispatcher_thread: Some(dispatcher_thread),
            _expiry: expiry,
        })
    }

    /// The address the server listens on (the real port when bound to 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The store, as named in the start log line.
    pub fn store_name(&self) -> &str {
        &self.store_name
    }

    /// Connection threads running now.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Blocks until the accept loop ends (it runs until `shutdown`).
    pub fn wait(mut self) {
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }

    /// Stops accepting, asks every connection to close (their undelivered
    /// messages go to the offline store) and waits a few seconds for them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.local_addr, Duration::from_secs(1));
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
        let _ = self.dispatcher.send(Envelope::Shutdown);
        if let Some(thread) = self.dispatcher_thread.take() {
            let _ = thread.join();
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while self.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if self.dispatcher_thread.is_some() {
            self.stop();
        }
    }
}

/// The accept loop.
struct Acceptor {
    listener: TcpListener,
    services: Arc<Services>,
    stopping: Arc<AtomicBool>,
    limits: Arc<Limits>,
    next_conn: AtomicU64,
}

/// Connection counts, checked at accept before a thread is spawned.
struct Limits {
    max_total: usize,
    max_per_address: usize,
    active: Arc<AtomicUsize>,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    /// The `connections_open` gauge, kept equal to `active`.
    open: IntGauge,
}

/// Why a connection was refused at accept.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("{0} connections open, the limit")]
    Total(usize),
    #[error("{0} connections open from this address, the limit")]
    PerAddress(usize),
}

impl Refusal {
    /// The `reason` label of the rejected connections metric.
    fn label(&self) -> &'static str {
        match self {
            Refusal::Total(_) => "total_limit",
            Refusal::PerAddress(_) => "per_address_limit",
        }
    }
}

impl Limits {
    /// Takes a slot for a connection from `address`, released on drop.
    fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Slot, Refusal> {
        let mut per_address = self
            .per_address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let total = self.active.load(Ordering::SeqCst);
        if total >= self.max_total {
            return Err(Refusal::Total(total));
        }
        let from_address = per_address.entry(address).or_insert(0);
        if *from_address >= self.max_per_address {
            return Err(Refusal::PerAddress(*from_address));
        }
        *from_address += 1;
        self.active.fetch_add(1, Ordering::SeqCst);
        self.open.inc();
        Ok(Slot {
            limits: self.clone(),
            address,
        })
    }
}

/// One admitted connection; dropping it (thread end, panic or a refused
/// spawn) frees its place.
struct Slot {
    limits: Arc<Limits>,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_address = self
            .limits
            .per_address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = per_address.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_address.remove(&self.address);
            }
        }
        self.limits.active.fetch_sub(1, Ordering::SeqCst);
        self.limits.open.dec();
    }
}

/// Connection threads that may seal a user list at once: two per core
/// (sealing is CPU work; more at once only adds sealed copies in memory).
fn list_sealers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

/// The default connection limit: raises the soft descriptor limit to the
/// hard one, then takes the smaller of the descriptor budget (one per
/// connection, its socket: wake-ups are signals, see [`crate::waker`]) and
/// the thread budget (the smaller of `vm.max_map_count / 4`, about four
/// mappings per thread, and `kernel.threads-max`), each less a reserve for
/// the server itself.
pub fn default_max_connections() -> usize {
    const RESERVE: usize = 64;
    let descriptors = raise_descriptor_limit();
    let by_descriptors = descriptors.saturating_sub(RESERVE);
    let map_count = read_proc_number("/proc/sys/vm/max_map_count").map(|maps| maps / 4);
    let threads_max = read_proc_number("/proc/sys/kernel/threads-max");
    let by_threads = match (map_count, threads_max) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => 16_000,
    }
    .saturating_sub(RESERVE);
    let limit = by_descriptors.min(by_threads).max(1);
    info!(
        "default connection limit {limit}: {descriptors} descriptors allow {by_descriptors}, thread budget {by_threads}"
    );
    limit
}

/// Raises `RLIMIT_NOFILE`'s soft limit to its hard limit; returns the soft
/// limit in force afterwards.
fn raise_descriptor_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the valid struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            warn!("could not raise the descriptor limit to {}", limit.rlim_max);
        }
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

fn read_proc_number(path: &str) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Acceptor {
    fn run(self) {
        loop {
            let accepted = self.listener.accept();
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            match accepted {
                Ok((stream, peer)) => self.spawn(stream, peer),
                Err(error) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    warn!("accept failed: {error}");
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Checks the connection limits, then spawns the connection's thread.
    /// A refused socket is closed at once (dropped), with a log line.
    fn spawn(&self, stream: TcpStream, peer: SocketAddr) {
        let slot = match self.limits.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                warn!("{peer}: connection refused at accept: {refusal}");
                self.services.metrics.count_rejected(refusal.label());
                return;
            }
        };
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let services = self.services.clone();
        let spawned = thread::Builder::new()
            .name(format!("conn-{conn}"))
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || {
                run_connection(stream, peer, conn, &services);
                drop(slot);
            });
        if let Err(error) = spawned {
            warn!("{peer}: connection refused, no thread: {error}");
            self.services.metrics.count_rejected("no_thread");
        }
    }
}

/// Runs one connection; a panic ends only this connection.
fn run_connection(stream: TcpStream, peer: SocketAddr, conn: ConnId, services: &Services) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        connection::serve(stream, peer, conn, services)
    }));
    if outcome.is_err() {
        error!("{peer}: connection thread panicked; connection dropped");
        let (done, _wait) = crossbeam_channel::bounded(1);
        let unsent = Vec::new();
        let _ = services
            .dispatcher
            .send(Envelope::Closed { conn, unsent, done });
    }
}
