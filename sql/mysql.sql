-- Schema for the MySQL / MariaDB store (applied by src/store/mysql.rs at connect).
--
-- Same tables and columns as the Python server's seed schema, so a database
-- created for it works unchanged: these statements are all
-- `CREATE TABLE IF NOT EXISTS`, and nothing here alters an existing table.
--
-- Differences for databases created by us:
--   * `conteudo` is MEDIUMTEXT (16 MiB - 1 bytes) instead of TEXT (65,535
--     bytes). The store reads the real column size from information_schema at
--     connect and refuses larger payloads itself; MySQL never truncates.
--   * Character set utf8mb4 with collation utf8mb4_unicode_ci (case- and
--     accent-insensitive, UCA 4.0.0, available on MariaDB >= 10.x and MySQL
--     5.5+ / 8.x). `userName UNIQUE` therefore rejects a name differing only
--     in case, and `userName = ?` / `destinatario_username = ?` match
--     case-insensitively. (A seed database keeps its own collation, typically
--     utf8mb4_general_ci, which is case-insensitive as well.)
--   * An index on mensagens_offline(destinatario_username). It is NOT created
--     here: `CREATE INDEX IF NOT EXISTS` is MariaDB-only (MySQL 8 rejects it),
--     so the store checks information_schema.statistics for any index whose
--     first column is destinatario_username and creates
--     idx_mensagens_offline_destinatario only when none exists.
--
-- Statements are separated by `;` at the end of a line; the loader skips
-- `--` comments and honours quotes.

CREATE TABLE IF NOT EXISTS usuarios (
    id INT AUTO_INCREMENT PRIMARY KEY,
    userName VARCHAR(255) NOT NULL UNIQUE,
    senha VARCHAR(255) NOT NULL,
    public_key TEXT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS mensagens_offline (
    id INT AUTO_INCREMENT PRIMARY KEY,
    remetente_username VARCHAR(255) NOT NULL,
    destinatario_username VARCHAR(255) NOT NULL,
    conteudo MEDIUMTEXT NOT NULL,
    data_envio TIMESTAMP DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
