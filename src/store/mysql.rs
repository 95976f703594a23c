//! The MySQL / MariaDB backend of [`Store`]: connection settings
//! ([`MysqlSettings`], never showing the password), a bounded connection pool
//! with timeouts everywhere, schema creation from `sql/mysql.sql` (existing
//! Python-server databases are used unchanged), the offline-index check, and
//! the payload limit read from the real `conteudo` column.
//!
//! Case-insensitive matching is the column collation's: `userName = ?` and
//! `destinatario_username = ?` compare with the column's collation
//! (utf8mb4_unicode_ci for tables we create; a seed database keeps its own,
//! typically utf8mb4_general_ci). The `userName UNIQUE` index enforces
//! uniqueness with the same collation, and its duplicate-key error (1062) is
//! reported as [`StoreError::UsernameTaken`].

use std::fmt;
use std::time::Duration;

use ::mysql::prelude::Queryable;
use ::mysql::{
    Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, PooledConn, TxOpts, Value,
};

mod loan;

use loan::Loan;

use super::{
    delete_chunks, placeholders, DeletedUser, NewOffline, OfflineMessage, OfflineStats, Store,
    StoreError, UserRecord, UserSummary, PURGE_BATCH,
};

/// The schema applied at connect.
pub const SCHEMA: &str = include_str!("../../sql/mysql.sql");

/// TCP connect timeout for new pool connections.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Socket read and write timeout for every statement.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a free pooled connection.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(4);

/// Bytes kept free below `max_allowed_packet` for the rest of the INSERT.
const PACKET_MARGIN: u64 = 4096;
/// Name of the offline index we create when no index leads with the recipient.
const OFFLINE_INDEX: &str = "idx_mensagens_offline_destinatario";
/// VARCHAR(255) name columns of the seed schema.
const NAME_MAX_CHARS: usize = 255;

/// How to reach the database. `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlSettings {
    pub host: String,
    pub port: u16,
    pub database: String,
    /// Empty: no user name sent.
    pub user: String,
    /// Empty: no password.
    pub password: String,
}

impl MysqlSettings {
    /// Parses `mysql://user:pass@host:port/db` (user, password and port
    /// optional; percent-encoding is decoded). URL query parameters are
    /// ignored. The database name is required.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let opts =
            Opts::from_url(url).map_err(|e| StoreError::Config(format!("bad MySQL URL: {e}")))?;
        let database = opts
            .get_db_name()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| StoreError::Config("MySQL URL has no database name".into()))?
            .to_string();
        Ok(MysqlSettings {
            host: opts.get_ip_or_hostname().into_owned(),
            port: opts.get_tcp_port(),
            database,
            user: opts.get_user().unwrap_or("").to_string(),
            password: opts.get_pass().unwrap_or("").to_string(),
        })
    }

    fn builder(&self) -> OptsBuilder {
        OptsBuilder::new()
            .ip_or_hostname(Some(self.host.clone()))
            .tcp_port(self.port)
            // Talk to the configured address only: no silent switch to the
            // server's Unix socket, whose failures the timeouts do not cover.
            .prefer_socket(false)
            .user(non_empty(&self.user))
            .pass(non_empty(&self.password))
            .tcp_connect_timeout(Some(CONNECT_TIMEOUT))
            .read_timeout(Some(IO_TIMEOUT))
            .write_timeout(Some(IO_TIMEOUT))
    }

    /// Options for a connection to the server with no default database
    /// (used to create or drop databases, e.g. by tests).
    #[doc(hidden)]
    pub fn server_opts(&self) -> OptsBuilder {
        self.builder()
    }

    /// Options for a connection to `self.database`.
    #[doc(hidden)]
    pub fn database_opts(&self) -> OptsBuilder {
        self.builder().db_name(Some(self.database.clone()))
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl fmt::Display for MysqlSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mysql://")?;
        if !self.user.is_empty() {
            write!(f, "{}@", self.user)?;
        }
        write!(f, "{}:{}/{}", self.host, self.port, self.database)
    }
}

impl fmt::Debug for MysqlSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .finish()
    }
}

/// Size of the `conteudo` column, read at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PayloadLimit {
    /// Most bytes a payload may have (column size and packet size).
    max_bytes: u64,
    /// Most characters, for CHAR/VARCHAR columns only.
    max_chars: Option<u64>,
}

impl PayloadLimit {
    fn allows(&self, payload: &str) -> bool {
        if payload.len() as u64 > self.max_bytes {
            return false;
        }
        match self.max_chars {
            Some(max) => payload.chars().count() as u64 <= max,
            None => true,
        }
    }
}

/// [`Store`] on MySQL or MariaDB through a bounded `mysql::Pool`.
pub struct MysqlStore {
    pool: Pool,
    /// Most connections the pool opens.
    pool_max: usize,
    settings: MysqlSettings,
    limit: PayloadLimit,
    /// The id step between the rows of one multi-row `INSERT`, when the
    /// server hands out consecutive ids for it (`innodb_autoinc_lock_mode`
    /// 0 or 1); `None` (lock mode 2): one row per statement.
    batch_id_step: Option<u64>,
}

impl fmt::Debug for MysqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlStore")
            .field("settings", &self.settings)
            .field("limit", &self.limit)
            .finish()
    }
}

impl MysqlStore {
    /// Connects (at most [`CONNECT_TIMEOUT`] per attempt), creates missing
    /// tables and the offline index, and reads the payload limit.
    /// `pool_max` bounds the number of open connections (at least 1).
    pub fn connect(settings: &MysqlSettings, pool_max: usize) -> Result<Self, StoreError> {
        let max = pool_max.max(1);
        let constraints = PoolConstraints::new(max.min(2), max)
            .ok_or_else(|| StoreError::Config(format!("invalid MySQL pool size {pool_max}")))?;
        let opts = settings.database_opts().pool_opts(
            PoolOpts::default()
                .with_constraints(constraints)
                // Keep the per-connection prepared statement cache: we never
                // change session state, so resetting buys nothing.
                .with_reset_connection(false)
                // No `COM_PING` before every statement: a checkout looks at
                // the socket instead (`loan.rs`), where it can.
                .with_check_health(!cfg!(unix)),
        );
        let pool = Pool::new(opts).map_err(|e| {
            let err = map_err(e);
            match err {
                StoreError::Unavailable(m) => {
                    StoreError::Unavailable(format!("cannot connect to {settings}: {m}"))
                }
                other => StoreError::Backend(format!("cannot connect to {settings}: {other}")),
            }
        })?;
        let mut store = MysqlStore {
            pool,
            pool_max: max,
            settings: settings.clone(),
            limit: PayloadLimit {
                max_bytes: 0,
                max_chars: Some(0),
            },
            batch_id_step: None,
        };
        let mut conn = store.conn()?;
        apply_schema(&mut conn)?;
        ensure_offline_index(&mut conn)?;
        check_username_collation(&mut conn)?;
        store.limit = read_payload_limit(&mut conn)?;
        store.batch_id_step = read_batch_id_step(&mut conn)?;
        log::info!(
            "MySQL store {}: offline payload limit {} bytes",
            store.settings,
            store.limit.max_bytes
        );
        Ok(store)
    }

    /// Largest payload (in bytes) `store_offline` accepts.
    pub fn max_payload_bytes(&self) -> u64 {
        self.limit.max_bytes
    }

    /// A live pooled connection. Each connection the pool holds may have
    /// been closed by the server (after a restart, all of them): those are
    /// dropped, and past `pool_max` of them a new one is the last try.
    fn conn(&self) -> Result<Loan, StoreError> {
        for _ in 0..=self.pool_max {
            let conn = self.pool.try_get_conn(ACQUIRE_TIMEOUT).map_err(map_err)?;
            if let Some(loan) = Loan::check_out(conn) {
                return Ok(loan);
            }
        }
        Err(StoreError::Unavailable(
            "every MySQL connection taken had been closed by the server".into(),
        ))
    }
}

/// Rows per multi-row `INSERT` at most (batches are cut into power-of-two
/// pieces, so only a handful of statements is ever prepared).
const INSERT_ROWS: usize = 64;

/// See [`MysqlStore::batch_id_step`].
fn read_batch_id_step(conn: &mut PooledConn) -> Result<Option<u64>, StoreError> {
    let row: Option<(Option<u64>, u64)> = conn
        .query_first("SELECT @@innodb_autoinc_lock_mode, @@auto_increment_increment")
        .map_err(map_err)?;
    Ok(match row {
        Some((Some(mode), step)) if mode < 2 && step > 0 => Some(step),
        _ => None,
    })
}

/// Inserts `rows` with one statement; returns their ids (consecutive by
/// `step` from the first, see [`MysqlStore::batch_id_step`]).
fn insert_rows(
    tx: &mut ::mysql::Transaction<'_>,
    rows: &[NewOffline<'_>],
    step: u64,
) -> Result<Vec<i64>, StoreError> {
    let sql = format!(
        "INSERT INTO mensagens_offline (remetente_username, destinatario_username, conteudo) \
         VALUES {}",
        vec!["(?, ?, ?)"; rows.len()].join(", ")
    );
    let params: Vec<Value> = rows
        .iter()
        .flat_map(|m| [m.sender.into(), m.recipient.into(), m.payload.into()])
        .collect();
    tx.exec_drop(sql, Params::Positional(params))
        .map_err(map_err)?;
    let first = tx
        .last_insert_id()
        .ok_or_else(|| StoreError::Backend("no id for the offline rows".into()))?;
    (0..rows.len() as u64)
        .map(|i| {
            i64::try_from(first + i * step)
                .map_err(|_| StoreError::Backend("offline id out of range".into()))
        })
        .collect()
}

/// Lengths of the pieces a run of `n` rows is inserted in: full
/// [`INSERT_ROWS`] pieces, then the binary digits of the rest.
fn insert_pieces(n: usize) -> Vec<usize> {
    let mut pieces = vec![INSERT_ROWS; n / INSERT_ROWS];
    let rest = n % INSERT_ROWS;
    let mut bit = INSERT_ROWS;
    while bit > 0 {
        bit /= 2;
        if rest & bit != 0 {
            pieces.push(bit);
        }
    }
    pieces
}

/// Runs each statement of the schema script.
fn apply_schema(conn: &mut PooledConn) -> Result<(), StoreError> {
    for stmt in split_sql(SCHEMA) {
        conn.query_drop(&stmt)
            .map_err(|e| with_context(map_err(e), "applying sql/mysql.sql"))?;
    }
    Ok(())
}

/// Creates the offline index unless some index already starts with
/// `destinatario_username` (portable: MySQL 8 has no `CREATE INDEX IF NOT EXISTS`).
fn ensure_offline_index(conn: &mut PooledConn) -> Result<(), StoreError> {
    let existing: Option<u64> = conn
        .query_first(
            "SELECT COUNT(*) FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name = 'mensagens_offline' \
             AND column_name = 'destinatario_username' AND seq_in_index = 1",
        )
        .map_err(map_err)?;
    if existing.unwrap_or(0) > 0 {
        return Ok(());
    }
    log::info!("creating index {OFFLINE_INDEX} on mensagens_offline(destinatario_username)");
    match conn.query_drop(format!(
        "CREATE INDEX {OFFLINE_INDEX} ON mensagens_offline (destinatario_username)"
    )) {
        Ok(()) => Ok(()),
        // Duplicate key name: another server created it meanwhile.
        Err(::mysql::Error::MySqlError(e)) if e.code == 1061 => {
            log::warn!("index {OFFLINE_INDEX} already exists: {}", e.message);
            Ok(())
        }
        Err(e) => Err(with_context(map_err(e), "creating the offline index")),
    }
}

/// Warns when `usuarios.userName` compares case-sensitively.
fn check_username_collation(conn: &mut PooledConn) -> Result<(), StoreError> {
    let collation: Option<Option<String>> = conn
        .query_first(
            "SELECT collation_name FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = 'usuarios' \
             AND column_name = 'userName'",
        )
        .map_err(map_err)?;
    if let Some(Some(c)) = collation {
        if c.ends_with("_bin") || c.ends_with("_cs") {
            log::warn!("usuarios.userName uses collation {c}: names will match case-sensitively");
        }
    }
    Ok(())
}

/// Reads the size of `mensagens_offline.conteudo` and `max_allowed_packet`.
fn read_payload_limit(conn: &mut PooledConn) -> Result<PayloadLimit, StoreError> {
    let row: Option<(String, Option<u64>, Option<u64>)> = conn
        .query_first(
            "SELECT LOWER(data_type), character_maximum_length, character_octet_length \
             FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = 'mensagens_offline' \
             AND column_name = 'conteudo'",
        )
        .map_err(map_err)?;
    let (data_type, max_len, octets) = row.ok_or_else(|| {
        StoreError::Backend("mensagens_offline.conteudo not found in information_schema".into())
    })?;
    let max_bytes = match (octets, data_type.as_str()) {
        (Some(n), _) => n,
        (None, "tinytext") => 255,
        (None, "text") => 65_535,
        (None, "mediumtext") => 16_777_215,
        (None, "longtext") => 4_294_967_295,
        (None, other) => {
            log::warn!(
                "mensagens_offline.conteudo has type {other} of unknown size; assuming 65535 bytes"
            );
            65_535
        }
    };
    let max_chars = match data_type.as_str() {
        "varchar" | "char" => max_len,
        _ => None,
    };
    let packet: Option<u64> = conn
        .query_first("SELECT @@max_allowed_packet")
        .map_err(map_err)?;
    let packet_room = packet
        .unwrap_or(4 * 1024 * 1024)
        .saturating_sub(PACKET_MARGIN);
    if packet_room < max_bytes {
        log::info!(
            "max_allowed_packet limits offline payloads to {packet_room} bytes \
             (column {data_type} holds {max_bytes})"
        );
    }
    Ok(PayloadLimit {
        max_bytes: max_bytes.min(packet_room),
        max_chars,
    })
}

/// Splits a SQL script into statements on `;`, skipping `--`/`#` line
/// comments and `/* */` comments, and honouring quotes (with backslash
/// escapes inside quotes).
pub(crate) fn split_sql(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = script.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                cur.push(c);
                while let Some(d) = chars.next() {
                    cur.push(d);
                    if d == '\\' && c != '`' {
                        if let Some(e) = chars.next() {
                            cur.push(e);
                        }
                    } else if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        cur.push('\n');
                        break;
                    }
                }
            }
            '#' => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        cur.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
                cur.push(' ');
            }
            ';' => {
                let stmt = cur.trim();
                if !stmt.is_empty() {
                    out.push(stmt.to_string());
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    let stmt = cur.trim();
    if !stmt.is_empty() {
        out.push(stmt.to_string());
    }
    out
}

/// Server error codes meaning "not reachable now" rather than "bad request".
const UNAVAILABLE_CODES: &[u16] = &[
    1040, // too many connections
    1044, // access denied for database
    1045, // access denied for user
    1049, // unknown database
    1053, // server shutdown in progress
    1205, // lock wait timeout
    1213, // deadlock
    1290, // read-only
    1317, // query interrupted
    1792, // read-only transaction
    1927, // connection killed (MariaDB)
    1969, // max_statement_time exceeded (MariaDB)
    3024, // max_execution_time exceeded (MySQL)
];

/// Maps a driver error; a lost connection also makes the current loan drop
/// it.
fn map_err(e: ::mysql::Error) -> StoreError {
    if e.is_connectivity_error() {
        loan::note_connection_lost();
    }
    classify(e)
}

fn classify(e: ::mysql::Error) -> StoreError {
    match &e {
        ::mysql::Error::MySqlError(me) => match me.code {
            1406 => StoreError::PayloadTooLarge,
            c if UNAVAILABLE_CODES.contains(&c) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Backend(e.to_string()),
        },
        _ if e.is_connectivity_error() => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Backend(e.to_string()),
    }
}

fn with_context(err: StoreError, what: &str) -> StoreError {
    match err {
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("{what}: {m}")),
        StoreError::Backend(m) => StoreError::Backend(format!("{what}: {m}")),
        other => other,
    }
}

/// Refuses names the VARCHAR(255) columns could not hold (never truncate).
fn check_name(field: &str, value: &str) -> Result<(), StoreError> {
    if value.chars().count() > NAME_MAX_CHARS {
        return Err(StoreError::Backend(format!(
            "{field} longer than {NAME_MAX_CHARS} characters"
        )));
    }
    Ok(())
}

impl Store for MysqlStore {
    fn backend_name(&self) -> String {
        self.settings.to_string()
    }

    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        public_key: &str,
    ) -> Result<(), StoreError> {
        check_name("username", username)?;
        check_name("password hash", password_hash)?;
        let mut conn = self.conn()?;
        match conn.exec_drop(
            "INSERT INTO usuarios (userName, senha, public_key) VALUES (?, ?, ?)",
            (username, password_hash, public_key),
        ) {
            Ok(()) => Ok(()),
            Err(::mysql::Error::MySqlError(e)) if e.code == 1062 => Err(StoreError::UsernameTaken),
            Err(e) => Err(map_err(e)),
        }
    }

    fn find_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let mut conn = self.conn()?;
        let row: Option<(i64, String, String, String)> = conn
            .exec_first(
                "SELECT id, userName, senha, public_key FROM usuarios WHERE userName = ? \
                 ORDER BY id LIMIT 1",
                (username,),
            )
            .map_err(map_err)?;
        Ok(
            row.map(|(id, username, password_hash, public_key)| UserRecord {
                id,
                username,
                password_hash,
                public_key,
            }),
        )
    }

    fn set_password_hash(&self, user_id: i64, password_hash: &str) -> Result<(), StoreError> {
        check_name("password hash", password_hash)?;
        let mut conn = self.conn()?;
        conn.exec_drop(
            "UPDATE usuarios SET senha = ? WHERE id = ?",
            (password_hash, user_id),
        )
        .map_err(map_err)
    }

    fn set_public_key(&self, user_id: i64, public_key: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.exec_drop(
            "UPDATE usuarios SET public_key = ? WHERE id = ?",
            (public_key, user_id),
        )
        .map_err(map_err)
    }

    fn all_usernames(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        conn.query("SELECT userName FROM usuarios ORDER BY id")
            .map_err(map_err)
    }

    fn store_offline(
        &self,
        sender: &str,
        recipient: &str,
        payload: &str,
    ) -> Result<i64, StoreError> {
        if !self.limit.allows(payload) {
            return Err(StoreError::PayloadTooLarge);
        }
        check_name("sender", sender)?;
        check_name("recipient", recipient)?;
        let mut conn = self.conn()?;
        conn.exec_drop(
            "INSERT INTO mensagens_offline (remetente_username, destinatario_username, conteudo) \
             VALUES (?, ?, ?)",
            (sender, recipient, payload),
        )
        .map_err(map_err)?;
        i64::try_from(conn.last_insert_id())
            .map_err(|_| StoreError::Backend("offline id out of range".into()))
    }

    fn store_offline_batch(
        &self,
        msgs: &[NewOffline<'_>],
    ) -> Result<Vec<Result<i64, StoreError>>, StoreError> {
        for m in msgs {
            check_name("sender", m.sender)?;
            check_name("recipient", m.recipient)?;
        }
        let mut out: Vec<Result<i64, StoreError>> = Vec::with_capacity(msgs.len());
        if msgs.iter().all(|m| !self.limit.allows(m.payload)) {
            out.extend(msgs.iter().map(|_| Err(StoreError::PayloadTooLarge)));
            return Ok(out);
        }
        let mut conn = self.conn()?;
        let mut tx = conn.start_transaction(TxOpts::default()).map_err(map_err)?;
        if let Some(step) = self.batch_id_step {
            let fits: Vec<NewOffline<'_>> = msgs
                .iter()
                .filter(|m| self.limit.allows(m.payload))
                .copied()
                .collect();
            let mut ids = Vec::with_capacity(fits.len());
            let mut at = 0;
            for piece in insert_pieces(fits.len()) {
                ids.extend(insert_rows(&mut tx, &fits[at..at + piece], step)?);
                at += piece;
            }
            tx.commit().map_err(map_err)?;
            let mut ids = ids.into_iter();
            return Ok(msgs
                .iter()
                .map(|m| match self.limit.allows(m.payload) {
                    true => ids
                        .next()
                        .ok_or_else(|| StoreError::Backend("offline ids missing".into())),
                    false => Err(StoreError::PayloadTooLarge),
                })
                .collect());
        }
        for m in msgs {
            if !self.limit.allows(m.payload) {
                out.push(Err(StoreError::PayloadTooLarge));
                continue;
            }
            // One row per statement: LAST_INSERT_ID of a multi-row INSERT
            // names only the first row, and later ids are not guaranteed
            // consecutive (innodb_autoinc_lock_mode=2).
            tx.exec_drop(
                "INSERT INTO mensagens_offline \
                 (remetente_username, destinatario_username, conteudo) VALUES (?, ?, ?)",
                (m.sender, m.recipient, m.payload),
            )
            .map_err(map_err)?;
            let id = tx
                .last_insert_id()
                .and_then(|id| i64::try_from(id).ok())
                .ok_or_else(|| StoreError::Backend("no id for the offline row".into()))?;
            out.push(Ok(id));
        }
        tx.commit().map_err(map_err)?;
        Ok(out)
    }

    fn fetch_offline(
        &self,
        recipient: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<OfflineMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn()?;
        let rows: Vec<(i64, String, String)> = conn
            .exec(
                "SELECT id, remetente_username, conteudo FROM mensagens_offline \
                 WHERE destinatario_username = ? AND id > ? ORDER BY id LIMIT ?",
                (recipient, after_id, limit as u64),
            )
            .map_err(map_err)?;
        Ok(rows
            .into_iter()
            .map(|(id, sender, payload)| OfflineMessage {
                id,
                sender,
                payload,
            })
            .collect())
    }

    fn delete_offline(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        for chunk in delete_chunks(ids) {
            let sql = format!(
                "DELETE FROM mensagens_offline WHERE id IN ({})",
                placeholders(chunk.len())
            );
            let params = Params::Positional(chunk.into_iter().map(Value::from).collect());
            conn.exec_drop(sql, params).map_err(map_err)?;
        }
        Ok(())
    }

    fn count_offline(&self, recipient: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn()?;
        let n: Option<u64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM mensagens_offline WHERE destinatario_username = ?",
                (recipient,),
            )
            .map_err(map_err)?;
        Ok(n.unwrap_or(0))
    }

    fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.query_drop("SELECT 1").map_err(map_err)
    }

    fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<(String, bool, u64)> = conn
            .query(
                "SELECT u.userName, u.public_key <> '', \
                 (SELECT COUNT(*) FROM mensagens_offline m \
                  WHERE m.destinatario_username = u.userName) \
                 FROM usuarios u ORDER BY u.id",
            )
            .map_err(map_err)?;
        Ok(rows
            .into_iter()
            .map(|(username, has_key, offline_waiting)| UserSummary {
                username,
                has_key,
                offline_waiting,
            })
            .collect())
    }

    fn delete_user(&self, username: &str) -> Result<Option<DeletedUser>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.start_transaction(TxOpts::default()).map_err(map_err)?;
        let row: Option<(i64, String)> = tx
            .exec_first(
                "SELECT id, userName FROM usuarios WHERE userName = ? \
                 ORDER BY id LIMIT 1 FOR UPDATE",
                (username,),
            )
            .map_err(map_err)?;
        let Some((id, username)) = row else {
            return Ok(None);
        };
        tx.exec_drop(
            "DELETE FROM mensagens_offline WHERE destinatario_username = ?",
            (&username,),
        )
        .map_err(map_err)?;
        let offline_deleted = tx.affected_rows();
        tx.exec_drop("DELETE FROM usuarios WHERE id = ?", (id,))
            .map_err(map_err)?;
        tx.commit().map_err(map_err)?;
        Ok(Some(DeletedUser {
            username,
            offline_deleted,
        }))
    }

    fn reset_public_key(&self, username: &str) -> Result<Option<String>, StoreError> {
        let Some(user) = self.find_user(username)? else {
            return Ok(None);
        };
        self.set_public_key(user.id, "")?;
        Ok(Some(user.username))
    }

    fn offline_stats(&self) -> Result<OfflineStats, StoreError> {
        let mut conn = self.conn()?;
        let totals: Option<(u64, Option<i64>)> = conn
            .query_first(
                "SELECT COUNT(*), TIMESTAMPDIFF(SECOND, MIN(data_envio), CURRENT_TIMESTAMP) \
                 FROM mensagens_offline",
            )
            .map_err(map_err)?;
        let (total, oldest) = totals.unwrap_or((0, None));
        let per_recipient: Vec<(String, u64)> = conn
            .query(
                "SELECT MIN(destinatario_username), COUNT(*) AS n FROM mensagens_offline \
                 GROUP BY destinatario_username ORDER BY n DESC, 1",
            )
            .map_err(map_err)?;
        Ok(OfflineStats {
            total,
            per_recipient,
            oldest_age_secs: oldest.map(|secs| u64::try_from(secs).unwrap_or(0)),
        })
    }

    fn purge_offline_older_than(&self, age: Duration) -> Result<u64, StoreError> {
        let mut conn = self.conn()?;
        let mut purged = 0u64;
        loop {
            // Oldest rows have the smallest ids: each batch finds its rows
            // at the start of the primary key (data_envio has no index).
            conn.exec_drop(
                "DELETE FROM mensagens_offline \
                 WHERE data_envio < CURRENT_TIMESTAMP - INTERVAL ? SECOND \
                 ORDER BY id LIMIT ?",
                (age.as_secs(), PURGE_BATCH as u64),
            )
            .map_err(map_err)?;
            let deleted = conn.affected_rows();
            purged += deleted;
            if deleted < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;
    use crate::store::testdb::{mysql_test_db, SEED_SCHEMA};

    #[test]
    fn settings_from_url_and_redaction() {
        let s =
            MysqlSettings::from_url("mysql://chat:s%40cret@db.example:3307/chat_seguro").unwrap();
        assert_eq!(s.host, "db.example");
        assert_eq!(s.port, 3307);
        assert_eq!(s.user, "chat");
        assert_eq!(s.password, "s@cret");
        assert_eq!(s.database, "chat_seguro");
        assert_eq!(s.to_string(), "mysql://chat@db.example:3307/chat_seguro");
        assert!(!format!("{s:?}").contains("cret"));
        assert!(format!("{s:?}").contains("<redacted>"));

        let d = MysqlSettings::from_url("mysql://127.0.0.1/x").unwrap();
        assert_eq!(d.port, 3306);
        assert_eq!(d.user, "");
        assert_eq!(d.to_string(), "mysql://127.0.0.1:3306/x");

        assert!(matches!(
            MysqlSettings::from_url("mysql://root@127.0.0.1:3306"),
            Err(StoreError::Config(_))
        ));
        assert!(matches!(
            MysqlSettings::from_url("postgres://x/y"),
            Err(StoreError::Config(_))
        ));
    }

    #[test]
    fn split_sql_handles_comments_and_quotes() {
        let stmts = split_sql(
            "-- a; comment\nCREATE TABLE a (x TEXT DEFAULT 'x;y');\n\
             /* b; */ INSERT INTO a VALUES ('it''s; \\' ok');# c;\nSELECT 1",
        );
        assert_eq!(
            stmts,
            vec![
                "CREATE TABLE a (x TEXT DEFAULT 'x;y')".to_string(),
                "INSERT INTO a VALUES ('it''s; \\' ok')".to_string(),
                "SELECT 1".to_string(),
            ]
        );
        let schema = split_sql(SCHEMA);
        assert_eq!(schema.len(), 2);
        assert!(schema
            .iter()
            .all(|s| s.starts_with("CREATE TABLE IF NOT EXISTS")));
    }

    #[test]
    fn unreachable_server_is_unavailable() {
        // Port 1 on localhost: connection refused at once.
        let s = MysqlSettings::from_url("mysql://root@127.0.0.1:1/x").unwrap();
        match MysqlStore::connect(&s, 2) {
            Err(StoreError::Unavailable(m)) => assert!(m.contains("127.0.0.1:1"), "{m}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn mysql_fresh_database_conformance() {
        let Some(db) = mysql_test_db() else { return };
        let store = MysqlStore::connect(&db.settings, 4).unwrap();
        assert_eq!(store.backend_name(), db.settings.to_string());
        conformance::run(&store);
        // New tables: MEDIUMTEXT, an index on the recipient, unicode_ci.
        let (ty, coll): (String, String) = db
            .query_first(
                "SELECT LOWER(data_type), collation_name FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = 'mensagens_offline' \
                 AND column_name = 'conteudo'",
            )
            .unwrap();
        assert_eq!(ty, "mediumtext");
        assert_eq!(coll, "utf8mb4_unicode_ci");
        let idx: u64 = db
            .query_first(
                "SELECT COUNT(*) FROM information_schema.statistics \
                 WHERE table_schema = DATABASE() AND table_name = 'mensagens_offline' \
                 AND column_name = 'destinatario_username'",
            )
            .unwrap();
        assert_eq!(idx, 1);
        // Reconnecting applies the schema again without creating a second index.
        let again = MysqlStore::connect(&db.settings, 2).unwrap();
        assert_eq!(again.find_user("ALICE").unwrap().unwrap().username, "Alice");
        let idx: u64 = db
            .query_first(
                "SELECT COUNT(*) FROM information_schema.statistics \
                 WHERE table_schema = DATABASE() AND table_name = 'mensagens_offline' \
                 AND column_name = 'destinatario_username'",
            )
            .unwrap();
        assert_eq!(idx, 1);
    }

    #[test]
    fn mysql_seed_database_works_unchanged() {
        let Some(db) = mysql_test_db() else { return };
        for stmt in SEED_SCHEMA {
            db.exec(stmt);
        }
        // Rows written by the Python server, in another case than queried.
        db.exec(
            "INSERT INTO usuarios (userName, senha, public_key) \
             VALUES ('Bob', '$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA', 'QkVFRg==')",
        );
        db.exec(
            "INSERT INTO mensagens_offline (remetente_username, destinatario_username, conteudo) \
             VALUES ('carol', 'BOB', '{\"iv\":\"x\"}')",
        );
        let store = MysqlStore::connect(&db.settings, 2).unwrap();
        let bob = store.find_user("bOB").unwrap().unwrap();
        assert_eq!(bob.username, "Bob");
        assert_eq!(bob.public_key, "QkVFRg==");
        assert!(bob.password_hash.starts_with("$argon2id$"));
        assert_eq!(store.count_offline("Bob").unwrap(), 1);
        let msgs = store.fetch_offline("Bob", 0, 10).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].sender, "carol");
        assert_eq!(msgs[0].payload, "{\"iv\":\"x\"}");
        store.delete_offline(&[msgs[0].id]).unwrap();
        db.exec("DELETE FROM usuarios");

        // The seed table stays TEXT and limits payloads to 65,535 bytes.
        assert_eq!(store.max_payload_bytes(), 65_535);
        let big = "x".repeat(70_000);
        assert!(matches!(
            store.store_offline("a", "b", &big),
            Err(StoreError::PayloadTooLarge)
        ));
        let fits = "y".repeat(65_535);
        let id = store.store_offline("a", "b", &fits).unwrap();
        assert_eq!(
            store.fetch_offline("b", id - 1, 1).unwrap()[0].payload,
            fits
        );
        store.delete_offline(&[id]).unwrap();
        let ty: String = db
            .query_first(
                "SELECT LOWER(data_type) FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = 'mensagens_offline' \
                 AND column_name = 'conteudo'",
            )
            .unwrap();
        assert_eq!(ty, "text");

        // And the whole suite passes on the seed schema.
        conformance::run(&store);
    }

    #[test]
    fn mysql_fresh_database_accepts_large_payload() {
        let Some(db) = mysql_test_db() else { return };
        let store = MysqlStore::connect(&db.settings, 2).unwrap();
        assert!(store.max_payload_bytes() > 1_000_000);
        let big = "x".repeat(70_000);
        let id = store.store_offline("a", "b", &big).unwrap();
        let mib = "z".repeat(1 << 20);
        let id2 = store.store_offline("a", "b", &mib).unwrap();
        let got = store.fetch_offline("B", 0, 10).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].id, got[0].payload.len()), (id, 70_000));
        assert_eq!((got[1].id, got[1].payload.len()), (id2, 1 << 20));
        let too_big = "x".repeat(store.max_payload_bytes() as usize + 1);
        assert!(matches!(
            store.store_offline("a", "b", &too_big),
            Err(StoreError::PayloadTooLarge)
        ));
    }

    /// A loan whose statement lost its connection drops it: the next
    /// checkout gets another connection. A healthy loan's connection is
    /// used again.
    #[test]
    fn a_connection_lost_during_a_loan_is_not_used_again() {
        let Some(db) = mysql_test_db() else { return };
        let store = MysqlStore::connect(&db.settings, 1).unwrap();
        let first = store.conn().unwrap().connection_id();
        assert_eq!(store.conn().unwrap().connection_id(), first, "reused");
        {
            let _loan = store.conn().unwrap();
            let lost = ::mysql::Error::IoError(std::io::ErrorKind::TimedOut.into());
            assert!(matches!(map_err(lost), StoreError::Unavailable(_)));
        }
        let next = store.conn().unwrap().connection_id();
        assert_ne!(next, first, "the lost connection was handed out again");
        assert_eq!(store.find_user("nobody").unwrap(), None);
    }
}

#[cfg(test)]
mod piece_tests {
    use super::*;

    #[test]
    fn insert_pieces_are_powers_of_two_summing_to_n() {
        assert!(insert_pieces(0).is_empty());
        assert_eq!(insert_pieces(1), vec![1]);
        assert_eq!(insert_pieces(45), vec![32, 8, 4, 1]);
        assert_eq!(insert_pieces(200), vec![64, 64, 64, 8]);
        for n in 0..300 {
            let pieces = insert_pieces(n);
            assert_eq!(pieces.iter().sum::<usize>(), n);
            assert!(pieces
                .iter()
                .all(|p| p.is_power_of_two() && *p <= INSERT_ROWS));
        }
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use crate::store::testdb::mysql_test_db;
    use std::time::Instant;

    /// `cargo test --release --lib mysql_offline_throughput -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn mysql_offline_throughput() {
        let Some(db) = mysql_test_db() else { return };
        let store = MysqlStore::connect(&db.settings, 8).unwrap();
        let payload = format!(
            "{{\"iv\":\"{}\",\"ct\":\"{}\"}}",
            "a".repeat(24),
            "b".repeat(300)
        );
        for threads in [1usize, 4, 8] {
            let per = 2000;
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..threads {
                    let store = &store;
                    let payload = &payload;
                    s.spawn(move || {
                        for _ in 0..per {
                            store
                                .store_offline(&format!("s{t}"), "Target", payload)
                                .unwrap();
                        }
                    });
                }
            });
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "{threads} threads: {:.0} store_offline/s",
                (threads * per) as f64 / secs
            );
        }
        for batch in [16usize, 64, 256] {
            let total = 20_000;
            let names: Vec<String> = (0..batch).map(|i| format!("s{i}")).collect();
            let msgs: Vec<NewOffline<'_>> = names
                .iter()
                .map(|n| NewOffline {
                    sender: n,
                    recipient: "Target",
                    payload: &payload,
                })
                .collect();
            let start = Instant::now();
            for _ in 0..total / batch {
                store.store_offline_batch(&msgs).unwrap();
            }
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "1 thread, batches of {batch}: {:.0} msgs/s",
                (total / batch * batch) as f64 / secs
            );
        }
    }
}
