//! Settings: command-line flags, environment and `.env`, validated once into a
//! [`Config`]. A flag beats the environment, which beats `.env` (dotenvy never
//! overrides a variable that is already set). A bad value is a [`ConfigError`]
//! whose one-line message names the setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use crate::channel::RenewalPolicy;
use crate::rate::{BucketSettings, RateSettings};
use crate::throttle::ThrottleSettings;

/// Command line of the `chat_server` binary.
#[derive(Debug, Parser)]
#[command(
    name = "chat_server",
    version,
    about = "End-to-end encrypted chat relay"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    /// An admin command to run on the store instead of the server.
    #[command(subcommand)]
    pub command: Option<crate::admin::AdminCommand>,
}

/// Every setting, as flag and environment variable.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address and port to listen on.
    #[arg(long, env = "CHAT_BIND", default_value = "0.0.0.0:12345")]
    pub bind: String,

    /// MySQL/MariaDB URL (mysql://user:password@host:port/database); beats DB_*.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub db_url: Option<String>,
    /// MySQL host (the seed server's setting); MySQL is used when this or DATABASE_URL is set.
    #[arg(long, env = "DB_HOST")]
    pub db_host: Option<String>,
    /// MySQL port.
    #[arg(long, env = "DB_PORT", default_value = "3306")]
    pub db_port: String,
    /// MySQL database name.
    #[arg(long, env = "DB_DATABASE", default_value = "chat_seguro")]
    pub db_database: String,
    /// MySQL user.
    #[arg(long, env = "DB_USER", default_value = "root")]
    pub db_user: String,
    /// MySQL password.
    #[arg(
        long,
        env = "DB_PASSWORD",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub db_password: String,
    /// Most pooled MySQL connections.
    #[arg(long, env = "CHAT_DB_POOL_MAX", default_value = "16")]
    pub db_pool_max: String,

    /// SQLite file used when no MySQL is configured.
    #[arg(
        long = "sqlite",
        env = "CHAT_SQLITE_PATH",
        default_value = "chat_server.db"
    )]
    pub sqlite_path: PathBuf,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "CHAT_LOG", default_value = "info")]
    pub log_level: String,

    /// Fewest frames the server sends before it renews a connection's keys.
    #[arg(long, env = "CHAT_RENEW_MIN_FRAMES", default_value = "50")]
    pub renew_min_frames: String,
    /// Most frames the server sends before it renews a connection's keys.
    #[arg(long, env = "CHAT_RENEW_MAX_FRAMES", default_value = "100")]
    pub renew_max_frames: String,
    /// Shortest time between key renewals, in seconds.
    #[arg(long, env = "CHAT_RENEW_MIN_SECS", default_value = "1800")]
    pub renew_min_secs: String,
    /// Longest time between key renewals, in seconds.
    #[arg(long, env = "CHAT_RENEW_MAX_SECS", default_value = "3600")]
    pub renew_max_secs: String,
    /// How long output waits after a renewal response, in ms (0: no hold).
    #[arg(long, env = "CHAT_RENEW_HOLD_MS", default_value = "200")]
    pub renew_hold_ms: String,

    /// Argon2id memory cost of new password hashes, in KiB.
    #[arg(long, env = "CHAT_ARGON2_M_KIB", default_value = "19456")]
    pub argon2_m_kib: String,
    /// Argon2id iterations of new password hashes.
    #[arg(long, env = "CHAT_ARGON2_T", default_value = "2")]
    pub argon2_t: String,
    /// Argon2id parallelism of new password hashes.
    #[arg(long, env = "CHAT_ARGON2_P", default_value = "1")]
    pub argon2_p: String,

    /// Largest WebSocket message after login, in bytes.
    #[arg(long, env = "CHAT_MAX_MESSAGE_BYTES", default_value = "262144")]
    pub max_message_bytes: String,
    /// Largest WebSocket message before login, in bytes.
    #[arg(long, env = "CHAT_MAX_AUTH_MESSAGE_BYTES", default_value = "8192")]
    pub max_auth_message_bytes: String,
    /// Messages that may wait for one slow recipient before it is disconnected.
    #[arg(long, env = "CHAT_OUTBOX_CAPACITY", default_value = "1024")]
    pub outbox_capacity: String,
    /// Shortest wait that coalesces presence changes into one broadcast, in ms.
    #[arg(long, env = "CHAT_PRESENCE_WINDOW_MS", default_value = "100")]
    pub presence_window_ms: String,
    /// Presence traffic budget in bytes per second; the coalescing window grows to keep within it.
    #[arg(long, env = "CHAT_PRESENCE_BUDGET", default_value = "100000000")]
    pub presence_budget: String,
    /// Presence changes within one coalescing window from which a user-list
    /// request waits for that window's broadcast (a login burst); 0 = never.
    #[arg(long, env = "CHAT_LIST_BURST", default_value = "32")]
    pub list_burst: String,

    /// Seconds between WebSocket pings the server sends to a logged-in client.
    #[arg(long, env = "CHAT_PING_INTERVAL_SECS", default_value = "30")]
    pub ping_interval_secs: String,
    /// Seconds without any frame or pong from a logged-in client before it is closed.
    #[arg(long, env = "CHAT_IDLE_TIMEOUT_SECS", default_value = "600")]
    pub idle_timeout_secs: String,
    /// Seconds of TCP silence before the kernel sends keepalive probes.
    #[arg(long, env = "CHAT_TCP_KEEPALIVE_SECS", default_value = "60")]
    pub tcp_keepalive_secs: String,
    /// Seconds sent data may stay unacknowledged before the kernel drops the connection (TCP_USER_TIMEOUT).
    #[arg(long, env = "CHAT_TCP_USER_TIMEOUT_SECS", default_value = "120")]
    pub tcp_user_timeout_secs: String,
    /// Seconds a client has for the WebSocket upgrade plus HANDSHAKE_START (a deadline, not per read).
    #[arg(long, env = "CHAT_HANDSHAKE_TIMEOUT_SECS", default_value = "10")]
    pub handshake_timeout_secs: String,
    /// Seconds a client has for each auth command after the handshake (the first, and each next one).
    #[arg(long, env = "CHAT_AUTH_TIMEOUT_SECS", default_value = "60")]
    pub auth_timeout_secs: String,
    /// Most client connections at once; 0: computed at start from the descriptor limit and the thread budget.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value = "0")]
    pub max_connections: String,
    /// Most client connections at once from one IP address.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_ADDRESS", default_value = "256")]
    pub max_connections_per_address: String,
    /// Most argon2 hashes computed at once; 0: the number of CPU cores.
    #[arg(long, env = "CHAT_ARGON2_CONCURRENCY", default_value = "0")]
    pub argon2_concurrency: String,
    /// Password logins/registrations that may wait for an argon2 turn; beyond, SERVER_ERROR "server busy".
    #[arg(long, env = "CHAT_ARGON2_QUEUE", default_value = "64")]
    pub argon2_queue: String,

    /// Failed logins allowed per username and per (non-loopback) address before lock-outs start.
    #[arg(long, env = "CHAT_LOGIN_FREE_FAILURES", default_value = "5")]
    pub login_free_failures: String,
    /// Failed logins (and registrations) allowed per loopback address before lock-outs start.
    #[arg(long, env = "CHAT_LOOPBACK_FREE_FAILURES", default_value = "1000")]
    pub loopback_free_failures: String,
    /// Registrations allowed per (non-loopback) address before lock-outs start.
    #[arg(long, env = "CHAT_REGISTRATIONS_PER_ADDRESS", default_value = "20")]
    pub registrations_per_address: String,
    /// Longest login lock-out, in seconds (it doubles from 1 s with each further failure).
    #[arg(long, env = "CHAT_LOGIN_LOCKOUT_MAX_SECS", default_value = "300")]
    pub login_lockout_max_secs: String,
    /// Most entries in each throttle table (usernames, addresses); beyond, the oldest is evicted.
    #[arg(long, env = "CHAT_THROTTLE_TABLE_SIZE", default_value = "100000")]
    pub throttle_table_size: String,

    /// Chat commands per second one logged-in connection may send (token bucket rate).
    #[arg(long, env = "CHAT_RATE_LIMIT_PER_SEC", default_value = "100")]
    pub rate_limit_per_sec: String,
    /// Largest burst of chat commands (token bucket size).
    #[arg(long, env = "CHAT_RATE_LIMIT_BURST", default_value = "200")]
    pub rate_limit_burst: String,
    /// Typing notices per second (their own bucket).
    #[arg(long, env = "CHAT_TYPING_RATE_PER_SEC", default_value = "10")]
    pub typing_rate_per_sec: String,
    /// Largest burst of typing notices.
    #[arg(long, env = "CHAT_TYPING_RATE_BURST", default_value = "20")]
    pub typing_rate_burst: String,
    /// Commands over the limit, after the "rate limit exceeded" notice, before the connection is closed (1008).
    #[arg(long, env = "CHAT_RATE_LIMIT_STRIKES", default_value = "100")]
    pub rate_limit_strikes: String,

    /// Most offline messages stored for one recipient; beyond, the sender gets ERROR "mailbox full".
    #[arg(long, env = "CHAT_OFFLINE_QUOTA", default_value = "10000")]
    pub offline_quota: String,
    /// Age after which offline messages are deleted (30d, 12h, 90m, 45s); 0: never.
    #[arg(long, env = "CHAT_OFFLINE_MAX_AGE", default_value = "30d")]
    pub offline_max_age: String,
    /// Serve GET /metrics to every address, not only to loopback (true or false).
    #[arg(long, env = "CHAT_METRICS_PUBLIC", default_value = "false")]
    pub metrics_public: String,

    /// PEM certificate chain: with TLS_KEY, the port speaks TLS (wss:// and HTTPS).
    #[arg(long, env = "TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, env = "TLS_KEY", hide_env_values = true)]
    pub tls_key: Option<PathBuf>,
}

/// A setting that failed validation; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub reason: String,
}

/// Where users and offline messages live.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Mysql(MysqlConfig),
    Sqlite(PathBuf),
}

/// MySQL connection settings. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlConfig {
    /// `mysql://` URL, with the password inside if any.
    pub url: String,
    pub pool_max: usize,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Mysql(mysql) => write!(f, "Mysql(pool_max={})", mysql.pool_max),
            StoreConfig::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
        }
    }
}

/// Argon2id parameters for new password hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams {
            memory_kib: 19456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Validated settings of one server.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub store: StoreConfig,
    pub log_level: log::LevelFilter,
    pub renewal: RenewalPolicy,
    pub hash: HashParams,
    pub max_message_bytes: usize,
    pub max_auth_message_bytes: usize,
    pub outbox_capacity: usize,
    pub presence_window: Duration,
    pub presence_budget: u64,
    pub list_burst: usize,
    /// How long relays wait for a new session's first command (PROTOCOL.md 3).
    pub ready_timeout: Duration,
    /// How long a login challenge stays valid.
    pub challenge_lifetime: Duration,
    /// Interval of server WebSocket pings in the session loop.
    pub ping_interval: Duration,
    /// A session with no frame and no pong for this long is closed.
    pub idle_timeout: Duration,
    /// TCP keepalive idle time (probes every third of it, 3 probes).
    pub tcp_keepalive: Duration,
    /// `TCP_USER_TIMEOUT` of accepted sockets.
    pub tcp_user_timeout: Duration,
    /// Deadline of the WebSocket upgrade plus `HANDSHAKE_START`.
    pub handshake_timeout: Duration,
    /// Deadline of each auth command, counted from the handshake or the
    /// previous answer.
    pub auth_timeout: Duration,
    /// Most connections at once; 0: computed at start (see
    /// [`crate::server::default_max_connections`]).
    pub max_connections: usize,
    /// Most connections at once from one IP address.
    pub max_connections_per_address: usize,
    /// Most argon2 hashes at once (0 in the settings: CPU cores).
    pub hash_concurrency: usize,
    /// Waiters for an argon2 turn; beyond them, "server busy".
    pub hash_queue: usize,
    /// Login and registration throttling.
    pub throttle: ThrottleSettings,
    /// Per-connection command rate limit after login.
    pub rate: RateSettings,
    /// Most offline messages stored for one recipient.
    pub offline_quota: u64,
    /// Offline messages older than this are purged in the background;
    /// `None`: kept until delivered.
    pub offline_max_age: Option<Duration>,
    /// Whether `GET /metrics` answers addresses other than loopback.
    pub metrics_public: bool,
    /// TLS certificate chain and key files; `None`: plain TCP.
    pub tls: Option<TlsFiles>,
}

/// Where the server's TLS certificate and key are (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// Loads `.env` (if present) and parses flags from the process arguments.
    /// Clap prints `--help`/`--version` and usage errors itself.
    pub fn load() -> Result<Config, ConfigError> {
        Ok(Config::load_with_command()?.0)
    }

    /// Like [`Config::load`], also returning the admin subcommand, if any.
    pub fn load_with_command() -> Result<(Config, Option<crate::admin::AdminCommand>), ConfigError>
    {
        let _ = dotenvy::dotenv();
        let cli = Cli::parse();
        Ok((Config::from_settings(&cli.settings)?, cli.command))
    }

    /// A config for tests and embedding: defaults, SQLite at `sqlite_path`.
    pub fn for_sqlite(sqlite_path: PathBuf) -> Config {
        let settings = Cli::parse_from(["chat_server", "--bind", "127.0.0.1:0"]).settings;
        let mut config = Config::from_settings(&settings).expect("defaults are valid");
        config.store = StoreConfig::Sqlite(sqlite_path);
        config
    }

    /// Validates raw settings.
    pub fn from_settings(settings: &Settings) -> Result<Config, ConfigError> {
        let renewal = RenewalPolicy {
            min_frames: parse("CHAT_RENEW_MIN_FRAMES", &settings.renew_min_frames)?,
            max_frames: parse("CHAT_RENEW_MAX_FRAMES", &settings.renew_max_frames)?,
            min_secs: parse("CHAT_RENEW_MIN_SECS", &settings.renew_min_secs)?,
            max_secs: parse("CHAT_RENEW_MAX_SECS", &settings.renew_max_secs)?,
            hold: Duration::from_millis(parse("CHAT_RENEW_HOLD_MS", &settings.renew_hold_ms)?),
        };
        renewal.validate().map_err(|error| ConfigError {
            setting: "CHAT_RENEW_*",
            reason: error.to_string(),
        })?;
        let config = Config {
            bind: parse("CHAT_BIND", &settings.bind)?,
            store: store_config(settings)?,
            log_level: parse("CHAT_LOG", &settings.log_level)?,
            renewal,
            hash: hash_params(settings)?,
            max_message_bytes: positive("CHAT_MAX_MESSAGE_BYTES", &settings.max_message_bytes)?,
            max_auth_message_bytes: positive(
                "CHAT_MAX_AUTH_MESSAGE_BYTES",
                &settings.max_auth_message_bytes,
            )?,
            outbox_capacity: positive("CHAT_OUTBOX_CAPACITY", &settings.outbox_capacity)?,
            presence_window: Duration::from_millis(parse(
                "CHAT_PRESENCE_WINDOW_MS",
                &settings.presence_window_ms,
            )?),
            presence_budget: positive("CHAT_PRESENCE_BUDGET", &settings.presence_budget)?,
            list_burst: parse("CHAT_LIST_BURST", &settings.list_burst)?,
            ready_timeout: Duration::from_secs(5),
            challenge_lifetime: Duration::from_secs(60),
            ping_interval: seconds("CHAT_PING_INTERVAL_SECS", &settings.ping_interval_secs)?,
            idle_timeout: seconds("CHAT_IDLE_TIMEOUT_SECS", &settings.idle_timeout_secs)?,
            tcp_keepalive: seconds("CHAT_TCP_KEEPALIVE_SECS", &settings.tcp_keepalive_secs)?,
            tcp_user_timeout: seconds(
                "CHAT_TCP_USER_TIMEOUT_SECS",
                &settings.tcp_user_timeout_secs,
            )?,
            handshake_timeout: seconds(
                "CHAT_HANDSHAKE_TIMEOUT_SECS",
                &settings.handshake_timeout_secs,
            )?,
            auth_timeout: seconds("CHAT_AUTH_TIMEOUT_SECS", &settings.auth_timeout_secs)?,
            max_connections: parse("CHAT_MAX_CONNECTIONS", &settings.max_connections)?,
            max_connections_per_address: positive(
                "CHAT_MAX_CONNECTIONS_PER_ADDRESS",
                &settings.max_connections_per_address,
            )?,
            hash_concurrency: match parse("CHAT_ARGON2_CONCURRENCY", &settings.argon2_concurrency)?
            {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n => n,
            },
            hash_queue: parse("CHAT_ARGON2_QUEUE", &settings.argon2_queue)?,
            throttle: ThrottleSettings {
                free_failures: positive("CHAT_LOGIN_FREE_FAILURES", &settings.login_free_failures)?,
                loopback_free_failures: positive(
                    "CHAT_LOOPBACK_FREE_FAILURES",
                    &settings.loopback_free_failures,
                )?,
                free_registrations: positive(
                    "CHAT_REGISTRATIONS_PER_ADDRESS",
                    &settings.registrations_per_address,
                )?,
                max_lockout: seconds(
                    "CHAT_LOGIN_LOCKOUT_MAX_SECS",
                    &settings.login_lockout_max_secs,
                )?,
                table_capacity: positive(
                    "CHAT_THROTTLE_TABLE_SIZE",
                    &settings.throttle_table_size,
                )?,
            },
            rate: RateSettings {
                commands: BucketSettings {
                    per_sec: tokens("CHAT_RATE_LIMIT_PER_SEC", &settings.rate_limit_per_sec, 0.0)?,
                    burst: tokens("CHAT_RATE_LIMIT_BURST", &settings.rate_limit_burst, 1.0)?,
                },
                typing: BucketSettings {
                    per_sec: tokens(
                        "CHAT_TYPING_RATE_PER_SEC",
                        &settings.typing_rate_per_sec,
                        0.0,
                    )?,
                    burst: tokens("CHAT_TYPING_RATE_BURST", &settings.typing_rate_burst, 1.0)?,
                },
                strikes: parse("CHAT_RATE_LIMIT_STRIKES", &settings.rate_limit_strikes)?,
            },
            offline_quota: positive("CHAT_OFFLINE_QUOTA", &settings.offline_quota)?,
            offline_max_age: match parse_age(&settings.offline_max_age) {
                Ok(age) if age.is_zero() => None,
                Ok(age) => Some(age),
                Err(reason) => {
                    return Err(ConfigError {
                        setting: "CHAT_OFFLINE_MAX_AGE",
                        reason,
                    })
                }
            },
            metrics_public: parse("CHAT_METRICS_PUBLIC", &settings.metrics_public)?,
            tls: tls_files(settings)?,
        };
        Ok(config)
    }
}

fn tls_files(settings: &Settings) -> Result<Option<TlsFiles>, ConfigError> {
    let present = |path: &Option<PathBuf>| path.clone().filter(|p| !p.as_os_str().is_empty());
    match (present(&settings.tls_cert), present(&settings.tls_key)) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (Some(_), None) => Err(ConfigError {
            setting: "TLS_KEY",
            reason: "TLS_CERT is set, so TLS_KEY must be too".into(),
        }),
        (None, Some(_)) => Err(ConfigError {
            setting: "TLS_CERT",
            reason: "TLS_KEY is set, so TLS_CERT must be too".into(),
        }),
    }
}

fn store_config(settings: &Settings) -> Result<StoreConfig, ConfigError> {
    let pool_max = positive("CHAT_DB_POOL_MAX", &settings.db_pool_max)?;
    let url = match (&settings.db_url, &settings.db_host) {
        (Some(url), _) if !url.is_empty() => {
            if !url.starts_with("mysql://") {
                return Err(ConfigError {
                    setting: "DATABASE_URL",
                    reason: "must start with mysql://".into(),
                });
            }
            url.clone()
        }
        (_, Some(host)) if !host.is_empty() => {
            let port: u16 = parse("DB_PORT", &settings.db_port)?;
            mysql_url(settings, host, port)
        }
        _ => return Ok(StoreConfig::Sqlite(settings.sqlite_path.clone())),
    };
    Ok(StoreConfig::Mysql(MysqlConfig { url, pool_max }))
}

fn mysql_url(settings: &Settings, host: &str, port: u16) -> String {
    let credentials = if settings.db_password.is_empty() {
        percent_encode(&settings.db_user)
    } else {
        format!(
            "{}:{}",
            percent_encode(&settings.db_user),
            percent_encode(&settings.db_password)
        )
    };
    format!(
        "mysql://{credentials}@{host}:{port}/{}",
        percent_encode(&settings.db_database)
    )
}

/// Percent-encodes everything but unreserved URL characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn hash_params(settings: &Settings) -> Result<HashParams, ConfigError> {
    let params = HashParams {
        memory_kib: positive("CHAT_ARGON2_M_KIB", &settings.argon2_m_kib)?,
        iterations: positive("CHAT_ARGON2_T", &settings.argon2_t)?,
        parallelism: positive("CHAT_ARGON2_P", &settings.argon2_p)?,
    };
    if params.memory_kib < 8 * params.parallelism {
        return Err(ConfigError {
            setting: "CHAT_ARGON2_M_KIB",
            reason: "must be at least 8 x CHAT_ARGON2_P".into(),
        });
    }
    Ok(params)
}

fn parse<T: std::str::FromStr>(setting: &'static str, raw: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    raw.trim().parse().map_err(|error: T::Err| ConfigError {
        setting,
        reason: format!("{raw:?}: {error}"),
    })
}

fn positive<T>(setting: &'static str, raw: &str) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + Default,
    T::Err: std::fmt::Display,
{
    let value: T = parse(setting, raw)?;
    if value <= T::default() {
        return Err(ConfigError {
            setting,
            reason: format!("{raw:?}: must be greater than zero"),
        });
    }
    Ok(value)
}

/// A finite number of tokens (or tokens per second) above `floor` (a
/// floor of 1 is allowed itself, 0 is not).
fn tokens(setting: &'static str, raw: &str, floor: f64) -> Result<f64, ConfigError> {
    let value: f64 = parse(setting, raw)?;
    let ok = value.is_finite() && (value > floor || (floor >= 1.0 && value == floor));
    if !ok {
        return Err(ConfigError {
            setting,
            reason: format!("{raw:?}: must be a finite number of at least {floor} (and above 0)"),
        });
    }
    Ok(value)
}

/// An age such as `30d`, `12h`, `90m`, `45s` or `45` (seconds).
pub fn parse_age(raw: &str) -> Result<Duration, String> {
    let text = raw.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let unit_secs: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{raw:?}: use a number with s, m, h or d, e.g. 30d")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{raw:?}: use a number with s, m, h or d, e.g. 30d"))?;
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{raw:?}: too large"))
}

/// A positive number of seconds.
fn seconds(setting: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(positive::<u64>(setting, raw)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Settings {
        let mut argv = vec!["chat_server"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("flags parse").settings
    }

    #[test]
    fn defaults_use_sqlite_and_the_documented_values() {
        let config = Config::from_settings(&settings(&["--sqlite", "x.db"])).unwrap();
        assert_eq!(config.store, StoreConfig::Sqlite(PathBuf::from("x.db")));
        assert_eq!(config.renewal.min_frames, 50);
        assert_eq!(config.renewal.max_secs, 3600);
        assert_eq!(config.renewal.hold, Duration::from_millis(200));
        assert_eq!(config.hash, HashParams::default());
        assert_eq!(config.throttle.free_failures, 5);
        assert_eq!(config.throttle.loopback_free_failures, 1000);
        assert_eq!(config.throttle.free_registrations, 20);
        assert_eq!(config.throttle.max_lockout, Duration::from_secs(300));
        assert_eq!(config.throttle.table_capacity, 100_000);
        assert_eq!(config.rate.commands.per_sec, 100.0);
        assert_eq!(config.rate.commands.burst, 200.0);
        assert_eq!(config.rate.typing.per_sec, 10.0);
        assert_eq!(config.rate.typing.burst, 20.0);
        assert_eq!(config.rate.strikes, 100);
        assert_eq!(config.offline_quota, 10_000);
        assert_eq!(
            config.offline_max_age,
            Some(Duration::from_secs(30 * 86_400))
        );
    }

    #[test]
    fn tls_needs_both_files() {
        let config = Config::from_settings(&settings(&[])).unwrap();
        assert_eq!(config.tls, None);
        let config =
            Config::from_settings(&settings(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]))
                .unwrap();
        assert_eq!(
            config.tls,
            Some(TlsFiles {
                cert: PathBuf::from("c.pem"),
                key: PathBuf::from("k.pem")
            })
        );
        let error = Config::from_settings(&settings(&["--tls-cert", "c.pem"])).unwrap_err();
        assert_eq!(error.setting, "TLS_KEY");
        let error = Config::from_settings(&settings(&["--tls-key", "k.pem"])).unwrap_err();
        assert_eq!(error.setting, "TLS_CERT");
    }

    #[test]
    fn offline_max_age_takes_units_and_zero_turns_it_off() {
        assert_eq!(parse_age("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_age(" 12h "), Ok(Duration::from_secs(43_200)));
        assert!(parse_age("3w").is_err());
        assert!(parse_age("d").is_err());
        assert!(parse_age("-1d").is_err());
        let config = Config::from_settings(&settings(&["--offline-max-age", "0"])).unwrap();
        assert_eq!(config.offline_max_age, None);
        let error = Config::from_settings(&settings(&["--offline-max-age", "soon"])).unwrap_err();
        assert_eq!(error.setting, "CHAT_OFFLINE_MAX_AGE");
    }

    #[test]
    fn bad_abuse_limits_name_the_setting() {
        for (flag, value, setting) in [
            ("--rate-limit-burst", "0.5", "CHAT_RATE_LIMIT_BURST"),
            ("--rate-limit-per-sec", "NaN", "CHAT_RATE_LIMIT_PER_SEC"),
            ("--typing-rate-per-sec", "inf", "CHAT_TYPING_RATE_PER_SEC"),
            ("--offline-quota", "0", "CHAT_OFFLINE_QUOTA"),
            ("--login-free-failures", "0", "CHAT_LOGIN_FREE_FAILURES"),
            ("--throttle-table-size", "x", "CHAT_THROTTLE_TABLE_SIZE"),
        ] {
            let error = Config::from_settings(&settings(&[flag, value])).unwrap_err();
            assert_eq!(error.setting, setting, "{flag} {value}");
        }
        let config = Config::from_settings(&settings(&["--rate-limit-burst", "1"])).unwrap();
        assert_eq!(config.rate.commands.burst, 1.0);
    }

    #[test]
    fn seed_db_settings_become_a_mysql_url() {
        let config = Config::from_settings(&settings(&[
            "--db-host",
            "db.local",
            "--db-user",
            "chat",
            "--db-password",
            "p@ss word",
            "--db-database",
            "chat_seguro",
        ]))
        .unwrap();
        match config.store {
            StoreConfig::Mysql(mysql) => assert_eq!(
                mysql.url,
                "mysql://chat:p%40ss%20word@db.local:3306/chat_seguro"
            ),
            other => panic!("expected MySQL, got {other:?}"),
        }
    }

    #[test]
    fn bad_values_name_their_setting() {
        let error = Config::from_settings(&settings(&["--bind", "nowhere"])).unwrap_err();
        assert_eq!(error.setting, "CHAT_BIND");
        let error = Config::from_settings(&settings(&["--renew-min-frames", "many"])).unwrap_err();
        assert_eq!(error.setting, "CHAT_RENEW_MIN_FRAMES");
        let error = Config::from_settings(&settings(&[
            "--renew-min-frames",
            "90",
            "--renew-max-frames",
            "10",
        ]))
        .unwrap_err();
        assert!(error.to_string().contains("CHAT_RENEW"), "{error}");
        let error = Config::from_settings(&settings(&["--db-url", "postgres://x"])).unwrap_err();
        assert_eq!(error.setting, "DATABASE_URL");
        let error = Config::from_settings(&settings(&["--log-level", "loud"])).unwrap_err();
        assert_eq!(error.setting, "CHAT_LOG");
    }
}
