//! The change feed: every committed change, in commit order, to subscribers that keep a
//! durable cursor (`feed_cursors`) and may filter with FHIR search criteria
//! (`MedicationRequest?status=active&intent=order`). Outbound channels build on it.

use std::collections::HashSet;
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

    /// The changes that match the criteria, in their order. One search for the whole batch
    /// (`criteria&_id=a,b,...`): a search per change cost more than the rest of an outbound
    /// channel's work on it (the token index is read whole by each search).
    async fn wanted(&self, changes: Vec<Stored>) -> FhirResult<Vec<Stored>> {
        let Some((t, q)) = &self.criteria else {
            return Ok(changes);
        };
        let of_type = changes.into_iter().filter(|c| &c.resource_type == t);
        if q.is_empty() {
            return Ok(of_type.collect());
        }
        // A deletion matches no criteria: there is nothing left to match.
        let candidates: Vec<Stored> = of_type.filter(|c| !c.deleted()).collect();
        let mut ids: Vec<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(candidates);
        }
        // Ids are [A-Za-z0-9-.]: nothing in them to escape in a token list.
        let criteria = format!("{q}&_id={}", ids.join(","));
        let mut conn = self.store.pool().acquire().await?;
        let found: HashSet<String> =
            search::matching_at_most(&self.store, &mut conn, t, &criteria, ids.len() as i64)
                .await?
                .into_iter()
                .map(|s| s.id)
                .collect();
        Ok(candidates
            .into_iter()
            .filter(|c| found.contains(&c.id))
            .collect())
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
            let last = changes.last().map(|c| c.seq);
            let out = self.wanted(changes).await?;
            if let Some(seq) = last {
                self.cursor = seq;
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
