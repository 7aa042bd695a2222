//! Several SQL statements sent to SQLite as one query.
//!
//! Each query is a round trip between the writer task and sqlx's database thread (two thread
//! wake-ups); on a busy two-core machine that costs as much as the statement itself. SQLite
//! prepares and runs the statements of one query in turn, and sqlx binds the positional
//! parameters across them in order, so a whole batch of writes, `COMMIT` included, travels
//! in one round trip. If a statement fails, the ones after it do not run.

use anyhow::Result;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

pub(super) struct Script {
    query: QueryBuilder<Sqlite>,
    statements: usize,
}

impl Script {
    pub fn new() -> Self {
        Self {
            query: QueryBuilder::new(""),
            statements: 0,
        }
    }

    /// Starts a statement with `sql`; the rest of it (values, binds) is pushed on the
    /// returned builder.
    pub fn statement(&mut self, sql: &str) -> &mut QueryBuilder<Sqlite> {
        if self.statements > 0 {
            self.query.push(";\n");
        }
        self.statements += 1;
        self.query.push(sql);
        &mut self.query
    }

    fn is_empty(&self) -> bool {
        self.statements == 0
    }

    /// Runs every statement; the script is empty again afterwards.
    pub async fn run(&mut self, conn: &mut SqliteConnection) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let mut script = std::mem::replace(self, Script::new());
        // Cached (prepared once): a script's text depends only on how many rows of each kind
        // it carries, so a steady load repeats a handful of texts.
        script.query.build().execute(conn).await?;
        Ok(())
    }
}

/// Pushes `(id, id, ...)`, the ids bound, closing an `IN (` list the caller opened.
pub(super) fn push_ids(q: &mut QueryBuilder<Sqlite>, ids: &[i64]) {
    let mut sep = q.separated(", ");
    for id in ids {
        sep.push_bind(*id);
    }
    q.push(")");
}
