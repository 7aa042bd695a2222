//! Search index rows of the current versions: removed and rewritten with each version.

use sqlx::AnyConnection;
use sqlx::any::AnyArguments;
use sqlx::query::Query;

use crate::extract::{IndexRow, IndexValue};

const TABLES: [&str; 5] = [
    "search_string",
    "search_token",
    "search_reference",
    "search_date",
    "search_number",
];

pub async fn clear(conn: &mut AnyConnection, t: &str, id: &str) -> Result<(), sqlx::Error> {
    for table in TABLES {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE type = $1 AND id = $2"
        )))
        .bind(t)
        .bind(id)
        .persistent(true)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Rows per INSERT statement: few round trips, well under both backends' parameter limits.
const CHUNK: usize = 64;

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

fn insert_sql(table: &Table, rows: usize) -> String {
    let width = 3 + table.columns.len();
    let mut sql = format!(
        "INSERT INTO {} (type, id, param, {}) VALUES ",
        table.name,
        table.columns.join(", ")
    );
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * width + c + 1));
        }
        sql.push(')');
    }
    sql
}

pub async fn insert(
    conn: &mut AnyConnection,
    t: &str,
    id: &str,
    rows: &[IndexRow],
) -> Result<(), sqlx::Error> {
    for table in [&STRING, &TOKEN, &REFERENCE, &DATE, &NUMBER] {
        let mine: Vec<&IndexRow> = rows
            .iter()
            .filter(|r| table_of(&r.value).name == table.name)
            .collect();
        for chunk in mine.chunks(CHUNK) {
            let sql = insert_sql(table, chunk.len());
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk {
                q = (table.bind)(q.bind(t).bind(id).bind(row.param.as_str()), &row.value);
            }
            q.execute(&mut *conn).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_insert_numbers_parameters() {
        assert_eq!(
            insert_sql(&DATE, 2),
            "INSERT INTO search_date (type, id, param, low, high) VALUES \
             ($1, $2, $3, $4, $5), ($6, $7, $8, $9, $10)"
        );
    }
}
