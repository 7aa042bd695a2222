//! Tables of the store, the same on SQLite and PostgreSQL (types spelled per backend).
//!
//! `resources` holds the current version of each resource, `history` every version with its
//! sealed payload (the current one included, so a payload is written once); `seq` numbers
//! changes in commit order and is the change feed's cursor. The `search_*` tables index the
//! current, non-deleted versions: their values are kept in clear (that is what makes them
//! searchable), the resources themselves only encrypted.

use sqlx::AnyPool;

use super::Backend;

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE resources (
    type         {text} NOT NULL,
    id           {text} NOT NULL,
    version      BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    deleted      BIGINT NOT NULL,
    PRIMARY KEY (type, id)
);
CREATE INDEX resources_updated ON resources (type, last_updated);
CREATE TABLE history (
    seq          BIGINT PRIMARY KEY,
    type         {text} NOT NULL,
    id           {text} NOT NULL,
    version      BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    method       {text} NOT NULL,
    payload      {blob}
);
CREATE UNIQUE INDEX history_version ON history (type, id, version);
CREATE INDEX history_updated ON history (last_updated);
CREATE TABLE search_string (
    type {text} NOT NULL, id {text} NOT NULL, param {text} NOT NULL,
    value {text} NOT NULL, exact {text} NOT NULL
);
CREATE INDEX search_string_value ON search_string (type, param, value);
CREATE INDEX search_string_resource ON search_string (type, id);
CREATE TABLE search_token (
    type {text} NOT NULL, id {text} NOT NULL, param {text} NOT NULL,
    system {text} NOT NULL, code {text} NOT NULL, text {text} NOT NULL
);
CREATE INDEX search_token_code ON search_token (type, param, code, system);
CREATE INDEX search_token_resource ON search_token (type, id);
CREATE TABLE search_reference (
    type {text} NOT NULL, id {text} NOT NULL, param {text} NOT NULL,
    target_type {text}, target_id {text}, url {text} NOT NULL
);
CREATE INDEX search_reference_target ON search_reference (target_type, target_id, type, param);
CREATE INDEX search_reference_resource ON search_reference (type, id);
CREATE TABLE search_date (
    type {text} NOT NULL, id {text} NOT NULL, param {text} NOT NULL,
    low BIGINT NOT NULL, high BIGINT NOT NULL
);
CREATE INDEX search_date_low ON search_date (type, param, low);
CREATE INDEX search_date_resource ON search_date (type, id);
CREATE TABLE search_number (
    type {text} NOT NULL, id {text} NOT NULL, param {text} NOT NULL,
    value {real} NOT NULL, system {text} NOT NULL, code {text} NOT NULL
);
CREATE INDEX search_number_value ON search_number (type, param, value);
CREATE INDEX search_number_resource ON search_number (type, id);
CREATE TABLE feed_cursors (
    name {text} PRIMARY KEY,
    seq  BIGINT NOT NULL
);
"#];

fn spell(sql: &str, backend: Backend) -> String {
    let (text, blob, real) = match backend {
        // Bytewise order on both: prefix searches are range scans on the same index.
        Backend::Postgres => (r#"TEXT COLLATE "C""#, "BYTEA", "DOUBLE PRECISION"),
        Backend::Sqlite => ("TEXT", "BLOB", "REAL"),
    };
    sql.replace("{text}", text)
        .replace("{blob}", blob)
        .replace("{real}", real)
}

/// Brings the schema to the latest version; each migration runs in its own transaction.
pub async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if backend == Backend::Postgres {
        // Two servers starting together on one database: one migrates, the other waits
        // (even creating the version table concurrently fails on PostgreSQL).
        sqlx::query("SELECT pg_advisory_xact_lock(7305)")
            .execute(&mut *tx)
            .await?;
    }
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS fhir_schema (version BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let current: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM fhir_schema")
        .fetch_one(&mut *tx)
        .await?;
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(spell(sql, backend)))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO fhir_schema (version) VALUES ($1)")
            .bind(n as i64 + 1)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}
