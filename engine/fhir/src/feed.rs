//! The change feed: every committed change, in commit order, to subscribers that keep a
//! durable cursor (`feed_cursors`) and may filter with FHIR search criteria
//! (`MedicationRequest?status=active&intent=order`). Outbound channels build on it.

use std::sync::Arc;

use sqlx::Row;
use tokio::sync::watch;

use crate::error::{FhirError, FhirResult};
use crate::search;
use crate::store::{Store, Stored};

/// Reads subscription criteria, `Type` or `Type?params`, into the type and the query: the
/// type must be a resource type and the query one the search understands (strictly: an
/// unknown parameter is an error, not a subscription to everything).
pub fn parse_criteria(criteria: &str) -> FhirResult<(String, String)> {
    let (t, q) = criteria.split_once('?').unwrap_or((criteria, ""));
    crate::types::check_type(t).map_err(|e| FhirError::invalid(e.diagnostics))?;
    if !q.is_empty() {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        search::parse::parse(t, &pairs, true)?;
    }
    Ok((t.to_string(), q.to_string()))
}

/// A named subscriber. Changes before its cursor are never delivered again once acknowledged;
/// changes after it are delivered at least once (after a crash, since the last `ack`).
pub struct Feed {
    store: Arc<Store>,
    name: String,
    criteria: Option<(String, String)>,
    cursor: i64,
    committed: watch::Receiver<i64>,
}

impl Feed {
    /// Opens (or resumes) the subscriber `name`. `criteria` is `Type` or `Type?params`; a new
    /// subscriber starts at `start` (0: from the first change ever), recorded as its cursor.
    pub async fn open(
        store: Arc<Store>,
        name: &str,
        criteria: Option<&str>,
        start: i64,
    ) -> FhirResult<Self> {
        let criteria = criteria.map(parse_criteria).transpose()?;
        let row = sqlx::query("SELECT seq FROM feed_cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(store.pool())
            .await?;
        let cursor = match &row {
            Some(r) => r.try_get::<i64, _>(0)?,
            None => start,
        };
        let committed = store.subscribe();
        let feed = Self {
            store,
            name: name.to_string(),
            criteria,
            cursor,
            committed,
        };
        // A new subscriber's start is made durable at once: a start relative to the store's
        // state ("from now") would otherwise move if the process stopped before the first ack.
        if row.is_none() {
            feed.ack().await?;
        }
        Ok(feed)
    }

    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    async fn wanted(&self, change: &Stored) -> FhirResult<bool> {
        let Some((t, q)) = &self.criteria else {
            return Ok(true);
        };
        if &change.resource_type != t {
            return Ok(false);
        }
        if q.is_empty() {
            return Ok(true);
        }
        if change.deleted() {
            return Ok(false);
        }
        let criteria = format!("{q}&_id={}", change.id);
        let mut conn = self.store.pool().acquire().await?;
        Ok(!search::matching(&self.store, &mut conn, t, &criteria)
            .await?
            .is_empty())
    }

    /// The next changes after the cursor that match, waiting until there is at least one
    /// committed change to look at. Moves the in-memory cursor; `ack` makes it durable.
    pub async fn next(&mut self, max: i64) -> FhirResult<Vec<Stored>> {
        loop {
            let changes = self.store.changes_after(self.cursor, max).await?;
            if changes.is_empty() {
                self.committed
                    .wait_for(|last| *last > self.cursor)
                    .await
                    .map_err(|_| FhirError::internal("the store was closed"))?;
                continue;
            }
            let mut out = Vec::new();
            for c in changes {
                self.cursor = c.seq;
                if self.wanted(&c).await? {
                    out.push(c);
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Records that everything up to the current cursor has been handled.
    pub async fn ack(&self) -> FhirResult<()> {
        // In a write transaction of the store, like every write: on SQLite, a write from
        // another connection between a writer's first read and its first write fails that
        // writer at once ("database is locked": its snapshot is stale).
        let mut tx = self.store.begin().await?;
        sqlx::query(
            "INSERT INTO feed_cursors (name, seq) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
        )
        .bind(&self.name)
        .bind(self.cursor)
        .execute(tx.connection().await?)
        .await?;
        tx.commit().await
    }
}
