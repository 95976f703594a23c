-- Schema for the SQLite store (applied by src/store/sqlite.rs at open).
--
-- Same table and column names as the MySQL seed schema, plus one key column
-- per table for case-insensitive matching:
--
--   usuarios.name_key               = userName.to_lowercase()
--   mensagens_offline.recipient_key = destinatario_username.to_lowercase()
--
-- The key is computed in Rust with `str::to_lowercase()` (Unicode default
-- lowercase mapping, locale-independent; e.g. "ÉLODIE" -> "élodie",
-- "ΣΑΣ" -> "σας"), because SQLite's NOCASE only folds ASCII. Every lookup by
-- name goes through the key column, and `name_key UNIQUE` makes the database
-- itself reject a name that differs from an existing one only in case.
--
-- AUTOINCREMENT guarantees ids are never reused, even after the highest row is
-- deleted, so `id > after_id` cursors over the offline queue stay correct.

CREATE TABLE IF NOT EXISTS usuarios (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    userName TEXT NOT NULL UNIQUE,
    senha TEXT NOT NULL,
    public_key TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS mensagens_offline (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    remetente_username TEXT NOT NULL,
    destinatario_username TEXT NOT NULL,
    recipient_key TEXT NOT NULL,
    conteudo TEXT NOT NULL,
    data_envio TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_mensagens_offline_recipient
    ON mensagens_offline (recipient_key, id);
