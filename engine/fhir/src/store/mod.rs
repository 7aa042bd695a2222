//! Versioned FHIR resources on SQLite or PostgreSQL through one code path (sqlx `Any`,
//! runtime queries with `$n` parameters, which both backends accept).
//!
//! Writes are serialised (an in-process lock; on PostgreSQL also an advisory lock, so several
//! servers on one database commit one at a time) which makes `seq`, the change number, follow
//! commit order: the change feed never sees number 8 before 7 is committed.

mod index;
mod pending;
mod schema;

pub use pending::Head;

use std::sync::Arc;

use serde_json::{Value, json};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::datetime::{instant, now_micros};
use crate::error::{FhirError, FhirResult};
use crate::extract;
use pending::{HistoryRow, Key, Pending};

/// Encryption of payloads at rest. The engine gives its AES-256-GCM cipher; `aad` binds a
/// sealed payload to its resource version so blobs cannot be swapped between rows.
pub trait Sealer: Send + Sync {
    fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8>;
    fn open(&self, blob: &[u8], aad: &[u8]) -> anyhow::Result<Vec<u8>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// One version of a resource as stored.
#[derive(Debug, Clone)]
pub struct Stored {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub last_updated: i64,
    /// The change number of this version.
    pub seq: i64,
    /// `POST`, `PUT`, `PATCH` or `DELETE`: how this version came to be.
    pub method: String,
    /// None for a deletion.
    pub body: Option<Value>,
}

impl Stored {
    pub fn deleted(&self) -> bool {
        self.body.is_none()
    }

    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }

    /// `Type/id/_history/v`.
    pub fn versioned_ref(&self) -> String {
        format!(
            "{}/{}/_history/{}",
            self.resource_type, self.id, self.version
        )
    }
}

fn aad(t: &str, id: &str, version: i64) -> Vec<u8> {
    format!("{t}/{id}/{version}").into_bytes()
}

pub struct Store {
    pool: AnyPool,
    /// Where writes go. On SQLite one connection with a large page cache: writes are one at a
    /// time anyway, and the index pages they update stay in that cache instead of being read
    /// again by whichever pooled connection the next write takes. On PostgreSQL, `pool`.
    writer: AnyPool,
    backend: Backend,
    sealer: Arc<dyn Sealer>,
    write_lock: Arc<Mutex<()>>,
    /// The last committed change number, for the change feed's subscribers.
    committed: watch::Sender<i64>,
}

/// A pool of at most `max` connections; on SQLite each with `cache_mb` MB of page cache.
async fn connect(
    url: &str,
    backend: Backend,
    max: u32,
    cache_mb: i64,
) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(max)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // Durable commits (FULL), readers never blocked by the writer (WAL).
                    // Pages are read through a memory map shared by the connections (the OS
                    // page cache) as well as each connection's own cache.
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                         PRAGMA busy_timeout = 10000; PRAGMA cache_size = -{}; \
                         PRAGMA mmap_size = 4294967296;",
                        cache_mb * 1024
                    )))
                    .execute(conn)
                    .await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
}

impl Store {
    /// Connects (creating an SQLite file if needed) and brings the schema up to date.
    pub async fn open(url: &str, sealer: Arc<dyn Sealer>) -> anyhow::Result<Self> {
        let backend = Backend::of_url(url).ok_or_else(|| {
            anyhow::anyhow!("database URL must start with sqlite: or postgres://")
        })?;
        sqlx::any::install_default_drivers();
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let pool = connect(
            &url,
            backend,
            if backend == Backend::Sqlite { 4 } else { 8 },
            32,
        )
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the FHIR store ({}): {e}", backend.name()))?;
        schema::migrate(&pool, backend)
            .await
            .map_err(|e| anyhow::anyhow!("migrating the FHIR store: {e}"))?;
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM history")
            .fetch_one(&pool)
            .await?;
        let writer = match backend {
            Backend::Sqlite => connect(&url, backend, 1, 256).await?,
            Backend::Postgres => pool.clone(),
        };
        Ok(Self {
            pool,
            writer,
            backend,
            sealer,
            write_lock: Arc::new(Mutex::new(())),
            committed: watch::channel(last).0,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Watch the last committed change number.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.committed.subscribe()
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    fn decode(&self, row: &AnyRow) -> FhirResult<Stored> {
        let resource_type: String = row.try_get("type")?;
        let id: String = row.try_get("id")?;
        let version: i64 = row.try_get("version")?;
        let payload: Option<Vec<u8>> = row.try_get("payload")?;
        let body = match payload {
            None => None,
            Some(blob) => {
                let plain = self
                    .sealer
                    .open(&blob, &aad(&resource_type, &id, version))
                    .map_err(|e| FhirError::internal(format!("{resource_type}/{id}: {e}")))?;
                Some(serde_json::from_slice(&plain).map_err(|e| {
                    FhirError::internal(format!(
                        "{resource_type}/{id}: stored JSON unreadable: {e}"
                    ))
                })?)
            }
        };
        Ok(Stored {
            resource_type,
            id,
            version,
            last_updated: row.try_get("last_updated")?,
            seq: row.try_get("seq")?,
            method: row.try_get("method")?,
            body,
        })
    }

    pub(crate) fn decode_all(&self, rows: &[AnyRow]) -> FhirResult<Vec<Stored>> {
        rows.iter().map(|r| self.decode(r)).collect()
    }

    /// The current version, deleted or not; None when the resource never existed.
    pub async fn current(&self, t: &str, id: &str) -> FhirResult<Option<Stored>> {
        let row = sqlx::query(CURRENT)
            .bind(t)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| self.decode(&r)).transpose()
    }

    /// `read`: 404 when unknown, 410 when deleted.
    pub async fn read(&self, t: &str, id: &str) -> FhirResult<Stored> {
        live(self.current(t, id).await?, t, id)
    }

    pub async fn vread(&self, t: &str, id: &str, version: i64) -> FhirResult<Stored> {
        let row = sqlx::query(
            "SELECT seq, type, id, version, last_updated, method, payload FROM history \
             WHERE type = $1 AND id = $2 AND version = $3",
        )
        .bind(t)
        .bind(id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Err(FhirError::not_found(format!(
                "{t}/{id} has no version {version}"
            ))),
            Some(r) => {
                let s = self.decode(&r)?;
                if s.deleted() {
                    Err(FhirError::gone(format!(
                        "{t}/{id} version {version} is a deletion"
                    )))
                } else {
                    Ok(s)
                }
            }
        }
    }

    /// Versions, newest first: of one resource, of a type, or of everything. `before` is an
    /// exclusive upper bound on the change number (paging), `since` a lower bound on time.
    pub async fn history(
        &self,
        t: Option<&str>,
        id: Option<&str>,
        since: Option<i64>,
        before: Option<i64>,
        count: i64,
    ) -> FhirResult<Vec<Stored>> {
        let rows = sqlx::query(
            "SELECT seq, type, id, version, last_updated, method, payload FROM history \
             WHERE ($1 IS NULL OR type = $1) AND ($2 IS NULL OR id = $2) \
             AND last_updated >= $3 AND seq < $4 ORDER BY seq DESC LIMIT $5",
        )
        .bind(t)
        .bind(id)
        .bind(since.unwrap_or(i64::MIN))
        .bind(before.unwrap_or(i64::MAX))
        .bind(count)
        .fetch_all(&self.pool)
        .await?;
        self.decode_all(&rows)
    }

    /// Committed changes after `seq`, oldest first: the change feed.
    pub async fn changes_after(&self, seq: i64, limit: i64) -> FhirResult<Vec<Stored>> {
        let rows = sqlx::query(
            "SELECT seq, type, id, version, last_updated, method, payload FROM history \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        self.decode_all(&rows)
    }

    /// Starts a write transaction. Writes are serialised; see the module comment.
    pub async fn begin(&self) -> FhirResult<WriteTx<'_>> {
        let guard = self.write_lock.clone().lock_owned().await;
        let mut tx = self.writer.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7306)")
                .execute(&mut *tx)
                .await?;
        }
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM history")
            .fetch_one(&mut *tx)
            .await?;
        Ok(WriteTx {
            store: self,
            tx,
            _guard: guard,
            next_seq: last + 1,
            now: now_micros(),
            pending: Pending::default(),
        })
    }
}

const CURRENT: &str = "SELECT h.seq, h.type, h.id, h.version, h.last_updated, h.method, h.payload \
     FROM resources r JOIN history h ON h.type = r.type AND h.id = r.id AND h.version = r.version \
     WHERE r.type = $1 AND r.id = $2";

fn live(current: Option<Stored>, t: &str, id: &str) -> FhirResult<Stored> {
    match current {
        None => Err(FhirError::not_found(format!("{t}/{id} is not known"))),
        Some(s) if s.deleted() => Err(FhirError::gone(format!(
            "{t}/{id} was deleted (version {})",
            s.version
        ))),
        Some(s) => Ok(s),
    }
}

/// What a write must find: `If-Match` on a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Any,
    Version(i64),
}

/// An open write transaction: nothing is visible to others before `commit`, and dropping it
/// without committing leaves nothing behind. Writes are buffered (see `pending`) and sent in
/// bulk before anything reads the database and at commit.
pub struct WriteTx<'s> {
    store: &'s Store,
    tx: Transaction<'static, sqlx::Any>,
    _guard: OwnedMutexGuard<()>,
    next_seq: i64,
    now: i64,
    pending: Pending,
}

fn key(t: &str, id: &str) -> Key {
    (t.to_string(), id.to_string())
}

impl<'s> WriteTx<'s> {
    /// The transaction's connection, with every buffered write sent: for queries that must
    /// see them (search, conditional matches).
    pub async fn connection(&mut self) -> FhirResult<&mut sqlx::AnyConnection> {
        self.flush().await?;
        Ok(&mut self.tx)
    }

    async fn flush(&mut self) -> FhirResult<()> {
        self.pending
            .flush(&mut self.tx, self.store.backend, self.now)
            .await?;
        Ok(())
    }

    /// The store, for as long as the transaction may live (not tied to this borrow).
    pub fn store(&self) -> &'s Store {
        self.store
    }

    pub async fn current(&mut self, t: &str, id: &str) -> FhirResult<Option<Stored>> {
        if self.pending.holds(&key(t, id)) {
            self.flush().await?;
        }
        let row = sqlx::query(CURRENT)
            .bind(t)
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| self.store.decode(&r)).transpose()
    }

    pub async fn read(&mut self, t: &str, id: &str) -> FhirResult<Stored> {
        let current = self.current(t, id).await?;
        live(current, t, id)
    }

    /// The version and deletion state of `t/id` as this transaction sees it, without reading
    /// the payload; None when it never existed.
    pub async fn head(&mut self, t: &str, id: &str) -> FhirResult<Option<Head>> {
        let k = key(t, id);
        if let Some(known) = self.pending.head(&k) {
            return Ok(known);
        }
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT version, deleted FROM resources WHERE type = $1 AND id = $2")
                .bind(t)
                .bind(id)
                .fetch_optional(&mut *self.tx)
                .await?;
        let head = row.map(|(version, deleted)| Head {
            version,
            deleted: deleted != 0,
        });
        self.pending.learn(k, head);
        Ok(head)
    }

    /// Tells the transaction that `t/id` does not exist, sparing a lookup: for ids the server
    /// has just made.
    pub(crate) fn fresh(&mut self, t: &str, id: &str) {
        self.pending.learn(key(t, id), None);
    }

    /// Writes a new version of `t/id` (the first one when it does not exist): sets `id` and
    /// `meta.versionId`/`meta.lastUpdated`, indexes it and records the change.
    pub async fn put(
        &mut self,
        t: &str,
        id: &str,
        mut body: Value,
        method: &str,
        expect: Expect,
    ) -> FhirResult<Stored> {
        crate::types::check_resource(&body, Some(t))?;
        crate::types::check_id(id)?;
        let previous = self.head(t, id).await?.map(|h| h.version);
        if let Expect::Version(want) = expect
            && previous != Some(want)
        {
            return Err(FhirError::precondition(format!(
                "{t}/{id} is at version {}, not {want} (If-Match)",
                previous.map_or("none".to_string(), |v| v.to_string())
            )));
        }
        let version = previous.unwrap_or(0) + 1;
        let rows = extract::index(t, &body)?;
        body["id"] = json!(id);
        let meta = body
            .as_object_mut()
            .expect("checked above")
            .entry("meta")
            .or_insert_with(|| json!({}));
        meta["versionId"] = json!(version.to_string());
        meta["lastUpdated"] = json!(instant(self.now));
        let plain = serde_json::to_vec(&body).expect("a JSON value always serialises");
        let payload = self.store.sealer.seal(&plain, &aad(t, id, version));
        let seq = self.record(t, id, version, method, Some(payload), rows);
        Ok(Stored {
            resource_type: t.to_string(),
            id: id.to_string(),
            version,
            last_updated: self.now,
            seq,
            method: method.to_string(),
            body: Some(body),
        })
    }

    /// Deletes `t/id` (a new, empty version; history kept). None when there was nothing to
    /// delete (unknown or already deleted): FHIR delete is idempotent.
    pub async fn delete(
        &mut self,
        t: &str,
        id: &str,
        expect: Expect,
    ) -> FhirResult<Option<Stored>> {
        let Some(current) = self.head(t, id).await? else {
            return Ok(None);
        };
        if let Expect::Version(want) = expect
            && current.version != want
        {
            return Err(FhirError::precondition(format!(
                "{t}/{id} is at version {}, not {want} (If-Match)",
                current.version
            )));
        }
        if current.deleted {
            return Ok(None);
        }
        let version = current.version + 1;
        let seq = self.record(t, id, version, "DELETE", None, Vec::new());
        Ok(Some(Stored {
            resource_type: t.to_string(),
            id: id.to_string(),
            version,
            last_updated: self.now,
            seq,
            method: "DELETE".into(),
            body: None,
        }))
    }

    fn record(
        &mut self,
        t: &str,
        id: &str,
        version: i64,
        method: &str,
        payload: Option<Vec<u8>>,
        rows: Vec<extract::IndexRow>,
    ) -> i64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.write(
            HistoryRow {
                seq,
                key: key(t, id),
                version,
                method: method.to_string(),
                payload,
            },
            rows,
        );
        seq
    }

    /// Makes every write of the transaction visible at once, and tells the change feed.
    pub async fn commit(mut self) -> FhirResult<()> {
        self.flush().await?;
        let last = self.next_seq - 1;
        self.tx.commit().await?;
        self.store.committed.send_if_modified(|v| {
            let newer = last > *v;
            if newer {
                *v = last;
            }
            newer
        });
        Ok(())
    }
}
