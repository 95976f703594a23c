//! The server: opens the store, starts the dispatcher thread, binds the
//! `TcpListener` and spawns one OS thread per accepted client (see
//! [`crate::connection`]).
//!
//! Threads are spawned with `thread::Builder` and a small, stated stack
//! ([`CONNECTION_STACK_BYTES`]); a refused spawn refuses that connection and
//! never takes the server down. A panic in a connection thread is caught,
//! logged, and reported to the dispatcher as a closed connection, so it
//! leaves no dead session behind.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{error, info, warn};

use crate::config::{Config, StoreConfig};
use crate::connection::offline::OfflineClaims;
use crate::connection::{self, Services};
use crate::dispatcher::{ConnId, Dispatcher, DispatcherSettings, Envelope};
use crate::password::{PasswordError, PasswordHasher};
use crate::store::{MysqlSettings, MysqlStore, SqliteStore};
use crate::store::{Store, StoreError};

/// Stack of a connection thread. Release builds need little (argon2 and
/// JSON work on the heap); debug builds get more for their bigger frames.
pub const CONNECTION_STACK_BYTES: usize = if cfg!(debug_assertions) {
    1024 * 1024
} else {
    256 * 1024
};

/// Envelopes that may wait for the dispatcher; a full queue makes
/// connection threads wait (backpressure), never the dispatcher.
const DISPATCH_QUEUE: usize = 65_536;

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
        let usernames = store.all_usernames()?;
        let passwords = PasswordHasher::new(config.hash)?;
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
            presence_window: config.presence_window,
            presence_budget: config.presence_budget,
        };
        let registered = usernames.len();
        let dispatcher = Dispatcher::new(inbox, usernames, settings);
        let dispatcher_thread = thread::Builder::new()
            .name("dispatcher".into())
            .spawn(move || dispatcher.run())
            .map_err(ServerError::Thread)?;
        let store_name = store.backend_name();
        let services = Arc::new(Services {
            config,
            store,
            dispatcher: dispatcher_tx.clone(),
            passwords,
            offline_claims: OfflineClaims::default(),
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let acceptor = Acceptor {
            listener,
            services,
            stopping: stopping.clone(),
            active: active.clone(),
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
    active: Arc<AtomicUsize>,
    next_conn: AtomicU64,
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

    fn spawn(&self, stream: TcpStream, peer: SocketAddr) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let services = self.services.clone();
        let active = self.active.clone();
        active.fetch_add(1, Ordering::SeqCst);
        let spawned = thread::Builder::new()
            .name(format!("conn-{conn}"))
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || {
                run_connection(stream, peer, conn, &services);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(error) = spawned {
            self.active.fetch_sub(1, Ordering::SeqCst);
            warn!("{peer}: connection refused, no thread: {error}");
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
