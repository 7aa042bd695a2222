//! Search index rows of the current versions: removed and rewritten with each version.

use sqlx::AnyConnection;
use sqlx::any::AnyArguments;
use sqlx::query::Query;

use super::Backend;
use super::pending::{Key, PARAMS, placeholder, values_sql};
use crate::extract::{IndexRow, IndexValue};

const TABLES: [&str; 5] = [
    "search_string",
    "search_token",
    "search_reference",
    "search_date",
    "search_number",
];

/// Removes the index rows of these resources: one statement per table and type.
pub async fn clear(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &[&Key],
) -> Result<(), sqlx::Error> {
    let mut by_type: Vec<(&str, Vec<&str>)> = Vec::new();
    for (t, id) in keys {
        match by_type.iter_mut().find(|(bt, _)| bt == t) {
            Some((_, ids)) => ids.push(id),
            None => by_type.push((t, vec![id])),
        }
    }
    for (t, ids) in &by_type {
        for chunk in ids.chunks(PARAMS - 1) {
            let first = placeholder(backend, 1);
            let list = (2..chunk.len() + 2)
                .map(|n| placeholder(backend, n))
                .collect::<Vec<_>>()
                .join(", ");
            for table in TABLES {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE type = {first} AND id IN ({list})"
                )))
                .bind(*t);
                for id in chunk {
                    q = q.bind(*id);
                }
                q.execute(&mut *conn).await?;
            }
        }
    }
    Ok(())
}

type AnyQuery<'q> = Query<'q, sqlx::Any, AnyArguments>;

/// One table's share of the rows: the columns after (type, id, param), and how to bind a
/// row's values to them.
struct Table {
    name: &'static str,
    columns: &'static [&'static str],
    bind: for<'q> fn(AnyQuery<'q>, &'q IndexValue) -> AnyQuery<'q>,
}

const STRING: Table = Table {
    name: "search_string",
    columns: &["value", "exact"],
    bind: |q, v| match v {
        IndexValue::String { value, exact } => q.bind(value.as_str()).bind(exact.as_str()),
        _ => unreachable!(),
    },
};

const TOKEN: Table = Table {
    name: "search_token",
    columns: &["system", "code", "text"],
    bind: |q, v| match v {
        IndexValue::Token { system, code, text } => q
            .bind(system.as_str())
            .bind(code.as_str())
            .bind(text.as_str()),
        _ => unreachable!(),
    },
};

const REFERENCE: Table = Table {
    name: "search_reference",
    columns: &["target_type", "target_id", "url"],
    bind: |q, v| match v {
        IndexValue::Reference { target, url } => q
            .bind(target.as_ref().map(|t| t.0.as_str()))
            .bind(target.as_ref().map(|t| t.1.as_str()))
            .bind(url.as_str()),
        _ => unreachable!(),
    },
};

const DATE: Table = Table {
    name: "search_date",
    columns: &["low", "high"],
    bind: |q, v| match v {
        IndexValue::Date(r) => q.bind(r.low).bind(r.high),
        _ => unreachable!(),
    },
};

const NUMBER: Table = Table {
    name: "search_number",
    columns: &["value", "system", "code"],
    bind: |q, v| match v {
        IndexValue::Number {
            value,
            system,
            code,
        } => q.bind(*value).bind(system.as_str()).bind(code.as_str()),
        _ => unreachable!(),
    },
};

fn table_of(v: &IndexValue) -> &'static Table {
    match v {
        IndexValue::String { .. } => &STRING,
        IndexValue::Token { .. } => &TOKEN,
        IndexValue::Reference { .. } => &REFERENCE,
        IndexValue::Date(_) => &DATE,
        IndexValue::Number { .. } => &NUMBER,
    }
}

/// Writes index rows of any number of resources: one statement per table (per parameter
/// budget).
pub async fn insert(
    conn: &mut AnyConnection,
    backend: Backend,
    rows: &[(&Key, &IndexRow)],
) -> Result<(), sqlx::Error> {
    for table in [&STRING, &TOKEN, &REFERENCE, &DATE, &NUMBER] {
        let mine: Vec<&(&Key, &IndexRow)> = rows
            .iter()
            .filter(|(_, r)| table_of(&r.value).name == table.name)
            .collect();
        let width = 3 + table.columns.len();
        let head = format!(
            "INSERT INTO {} (type, id, param, {})",
            table.name,
            table.columns.join(", ")
        );
        for chunk in mine.chunks(PARAMS / width) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(values_sql(
                backend,
                &head,
                width,
                chunk.len(),
            )));
            for (key, row) in chunk {
                q = (table.bind)(
                    q.bind(key.0.as_str())
                        .bind(key.1.as_str())
                        .bind(row.param.as_str()),
                    &row.value,
                );
            }
            q.execute(&mut *conn).await?;
        }
    }
    Ok(())
}
