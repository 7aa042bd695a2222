//! FHIR search on the store: criteria, sort, keyset paging, `_include`/`_revinclude`.
//!
//! Pages are cut by key, not by offset: the `next` link carries the sort values and id of the
//! last resource shown, so resources created or deleted meanwhile never shift a page (no
//! resource is shown twice or skipped because others changed).

pub mod parse;
pub mod sql;

use std::collections::{BTreeMap, HashSet};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sqlx::any::AnyArguments;
use sqlx::query::Query as SqlxQuery;
use sqlx::{AnyConnection, Row};

use crate::error::{FhirError, FhirResult};
use crate::store::{Store, Stored};
pub use parse::{Include, Query, Summary};
use sql::{Arg, SortKind, Sql};

/// A page of results.
#[derive(Debug, Default)]
pub struct Page {
    pub matches: Vec<Stored>,
    pub included: Vec<Stored>,
    pub total: Option<i64>,
    /// Cursor of the next page, when there is one.
    pub next: Option<String>,
}

fn bind<'q>(
    mut q: SqlxQuery<'q, sqlx::Any, AnyArguments>,
    args: &'q [Arg],
) -> SqlxQuery<'q, sqlx::Any, AnyArguments> {
    for a in args {
        q = match a {
            Arg::Text(s) => q.bind(s.as_str()),
            Arg::Int(i) => q.bind(*i),
            Arg::Real(f) => q.bind(*f),
        };
    }
    q
}

/// `WHERE` of a search: type, not deleted, every criterion.
fn filter(q: &Query) -> FhirResult<Sql> {
    let mut s = Sql::default();
    s.push("r.type = ")
        .text_arg(q.resource_type.clone())
        .push(" AND r.deleted = 0");
    for c in &q.criteria {
        s.push(" AND ");
        sql::criterion(&mut s, &q.resource_type, "r", c)?;
    }
    Ok(s)
}

fn bad_cursor() -> FhirError {
    FhirError::invalid("_cursor is not one this server gave (or the sort changed)")
}

fn decode_cursor(text: &str, kinds: &[SortKind]) -> FhirResult<(Vec<Arg>, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad_cursor())?;
    let Ok(Value::Array(mut items)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(bad_cursor());
    };
    if items.len() != kinds.len() + 1 {
        return Err(bad_cursor());
    }
    let id = items
        .pop()
        .and_then(|v| v.as_str().map(String::from))
        .ok_or_else(bad_cursor)?;
    let args = items
        .iter()
        .zip(kinds)
        .map(|(v, k)| match k {
            SortKind::Text => v.as_str().map(|s| Arg::Text(s.to_string())),
            SortKind::Int => v.as_i64().map(Arg::Int),
            SortKind::Real => v.as_f64().map(Arg::Real),
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(bad_cursor)?;
    Ok((args, id))
}

fn encode_cursor(row: &sqlx::any::AnyRow, kinds: &[SortKind]) -> FhirResult<String> {
    let mut items = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        let col = format!("k{i}");
        items.push(match k {
            SortKind::Text => json!(row.try_get::<String, _>(col.as_str())?),
            SortKind::Int => json!(row.try_get::<i64, _>(col.as_str())?),
            SortKind::Real => json!(row.try_get::<f64, _>(col.as_str())?),
        });
    }
    items.push(json!(row.try_get::<String, _>("id")?));
    Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&items).expect("JSON")))
}

/// Keyset condition: rows strictly after the cursor in the sort order.
fn after_cursor(s: &mut Sql, desc: &[bool], values: Vec<Arg>, id: String) {
    // (k0 > a) OR (k0 = a AND k1 > b) OR ... OR (all equal AND id > c)
    s.push("(");
    let n = values.len();
    for i in 0..=n {
        if i > 0 {
            s.push(" OR ");
        }
        s.push("(");
        for (j, v) in values.iter().take(i).enumerate() {
            s.push(&format!("k{j} = ")).arg(v.clone()).push(" AND ");
        }
        if i < n {
            let op = if desc[i] { "<" } else { ">" };
            s.push(&format!("k{i} {op} ")).arg(values[i].clone());
        } else {
            s.push("id > ").text_arg(id.clone());
        }
        s.push(")");
    }
    s.push(")");
}

/// Runs a search. `conn` may be a pooled connection or an open write transaction (whose own
/// uncommitted writes are then seen: conditional references inside a transaction Bundle).
pub async fn run(store: &Store, conn: &mut AnyConnection, q: &Query) -> FhirResult<Page> {
    let mut page = Page::default();
    let want_total = q.total || q.summary == Summary::Count;
    if want_total {
        let f = filter(q)?;
        let sql = format!("SELECT COUNT(*) FROM resources r WHERE {}", f.text);
        let n: i64 = bind(sqlx::query(sqlx::AssertSqlSafe(sql)), &f.args)
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        page.total = Some(n);
    }
    if q.summary == Summary::Count || q.count == 0 {
        return Ok(page);
    }

    let mut s = Sql::default();
    s.push("SELECT * FROM (SELECT r.id AS id");
    let mut kinds = Vec::new();
    let mut desc = Vec::new();
    for (i, key) in q.sort.iter().enumerate() {
        s.push(", ");
        kinds.push(sql::sort_expression(
            &mut s,
            &q.resource_type,
            &key.target,
            key.descending,
        ));
        desc.push(key.descending);
        s.push(&format!(" AS k{i}"));
    }
    let f = filter(q)?;
    // Renumber the filter's placeholders after the sort keys' ones.
    let offset = s.args.len();
    s.push(" FROM resources r WHERE ");
    s.push(&renumber(&f.text, offset));
    s.args.extend(f.args);
    s.push(") q");
    if let Some(cursor) = &q.cursor {
        let (values, id) = decode_cursor(cursor, &kinds)?;
        s.push(" WHERE ");
        after_cursor(&mut s, &desc, values, id);
    }
    s.push(" ORDER BY ");
    for (i, d) in desc.iter().enumerate() {
        s.push(&format!("k{i}{}, ", if *d { " DESC" } else { "" }));
    }
    s.push("id LIMIT ").int_arg(q.count + 1);
    let rows = bind(sqlx::query(sqlx::AssertSqlSafe(s.text.clone())), &s.args)
        .fetch_all(&mut *conn)
        .await?;
    let more = rows.len() as i64 > q.count;
    let shown = &rows[..rows.len().min(q.count as usize)];
    if more && let Some(last) = shown.last() {
        page.next = Some(encode_cursor(last, &kinds)?);
    }
    let ids: Vec<String> = shown
        .iter()
        .map(|r| r.try_get::<String, _>("id"))
        .collect::<Result<_, _>>()?;
    let keys: Vec<(String, String)> = ids
        .iter()
        .map(|id| (q.resource_type.clone(), id.clone()))
        .collect();
    page.matches = fetch(store, conn, &keys).await?;
    if page.total.is_none() && q.cursor.is_none() && !more {
        page.total = Some(page.matches.len() as i64);
    }
    page.included = includes(store, conn, q, &page.matches).await?;
    Ok(page)
}

/// Shifts `$n` placeholders by `offset` (the filter was built on its own).
fn renumber(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c == '$' {
            let mut n = String::new();
            while let Some((_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                n.push(*d);
                chars.next();
            }
            match n.parse::<usize>() {
                Ok(v) => out.push_str(&format!("${}", v + offset)),
                Err(_) => out.push('$'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Groups `(type, id)` keys by type.
pub fn by_type(keys: &[(String, String)]) -> BTreeMap<&str, Vec<&str>> {
    let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (t, id) in keys {
        out.entry(t.as_str()).or_default().push(id.as_str());
    }
    out
}

/// Runs a query whose two columns are a resource type and id.
async fn keys_of(conn: &mut AnyConnection, s: &Sql) -> FhirResult<Vec<(String, String)>> {
    let rows = bind(sqlx::query(sqlx::AssertSqlSafe(s.text.clone())), &s.args)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
        .collect()
}

/// Current, non-deleted versions of the given resources, in the order given.
pub async fn fetch(
    store: &Store,
    conn: &mut AnyConnection,
    keys: &[(String, String)],
) -> FhirResult<Vec<Stored>> {
    let mut found = Vec::new();
    for (t, ids) in by_type(keys) {
        for chunk in ids.chunks(500) {
            let mut s = Sql::default();
            s.push(
                "SELECT h.seq, h.type, h.id, h.version, h.last_updated, h.method, h.payload \
                 FROM resources r JOIN history h ON h.type = r.type AND h.id = r.id \
                 AND h.version = r.version WHERE r.deleted = 0 AND r.type = ",
            )
            .text_arg(t);
            in_list(&mut s, "r.id", chunk);
            let rows = bind(sqlx::query(sqlx::AssertSqlSafe(s.text.clone())), &s.args)
                .fetch_all(&mut *conn)
                .await?;
            found.extend(store.decode_all(&rows)?);
        }
    }
    let order: BTreeMap<(&str, &str), usize> = keys
        .iter()
        .enumerate()
        .map(|(i, (t, id))| ((t.as_str(), id.as_str()), i))
        .collect();
    found.sort_by_key(|s| {
        order
            .get(&(s.resource_type.as_str(), s.id.as_str()))
            .copied()
    });
    Ok(found)
}

const MAX_INCLUDED: i64 = 1000;

/// What resources of type `source` point to, through `param` (None: any reference),
/// restricted to targets of type `target` when given.
pub async fn targets_of(
    conn: &mut AnyConnection,
    source: &str,
    ids: &[&str],
    param: Option<&str>,
    target: Option<&str>,
) -> FhirResult<Vec<(String, String)>> {
    let mut s = Sql::default();
    s.push("SELECT DISTINCT target_type, target_id FROM search_reference WHERE type = ")
        .text_arg(source)
        .push(" AND target_type IS NOT NULL");
    if let Some(p) = param {
        s.push(" AND param = ").text_arg(p);
    }
    if let Some(t) = target {
        s.push(" AND target_type = ").text_arg(t);
    }
    in_list(&mut s, "id", ids);
    s.push(" LIMIT ").int_arg(MAX_INCLUDED);
    keys_of(conn, &s).await
}

/// `_include`/`_revinclude` parameter: `*` means any.
fn param_filter(param: &str) -> Option<&str> {
    (param != "*").then_some(param)
}

/// Resources of `_include` (what the matches point to) and `_revinclude` (what points to
/// them); `:iterate` ones are applied again to what was included, up to three rounds.
async fn includes(
    store: &Store,
    conn: &mut AnyConnection,
    q: &Query,
    matches: &[Stored],
) -> FhirResult<Vec<Stored>> {
    if q.includes.is_empty() && q.revincludes.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen: HashSet<(String, String)> = matches
        .iter()
        .map(|m| (m.resource_type.clone(), m.id.clone()))
        .collect();
    let mut frontier: Vec<(String, String)> = seen.iter().cloned().collect();
    let mut out = Vec::new();
    for round in 0..3 {
        let mut wanted = Vec::new();
        let frontier_by_type = by_type(&frontier);
        let active = |inc: &&Include| round == 0 || inc.iterate;
        for inc in q.includes.iter().filter(active) {
            if let Some(ids) = frontier_by_type.get(inc.source.as_str()) {
                let found = targets_of(
                    conn,
                    &inc.source,
                    ids,
                    param_filter(&inc.param),
                    inc.target.as_deref(),
                );
                wanted.extend(found.await?);
            }
        }
        for inc in q.revincludes.iter().filter(active) {
            for (t, ids) in &frontier_by_type {
                if inc.target.as_deref().is_some_and(|want| want != *t) {
                    continue;
                }
                let mut s = Sql::default();
                s.push("SELECT DISTINCT type, id FROM search_reference WHERE type = ")
                    .text_arg(inc.source.clone())
                    .push(" AND target_type = ")
                    .text_arg(*t);
                if let Some(p) = param_filter(&inc.param) {
                    s.push(" AND param = ").text_arg(p);
                }
                in_list(&mut s, "target_id", ids);
                s.push(" LIMIT ").int_arg(MAX_INCLUDED);
                wanted.extend(keys_of(conn, &s).await?);
            }
        }
        wanted.retain(|k| seen.insert(k.clone()));
        if wanted.is_empty() {
            break;
        }
        let got = fetch(store, conn, &wanted).await?;
        frontier = got
            .iter()
            .map(|s| (s.resource_type.clone(), s.id.clone()))
            .collect();
        out.extend(got);
    }
    Ok(out)
}

fn in_list(s: &mut Sql, column: &str, ids: &[&str]) {
    s.push(&format!(" AND {column} IN ("));
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        s.text_arg(*id);
    }
    s.push(")");
}

/// The resources of type `t` matching `criteria` (a query string such as
/// `identifier=urn:oid:1.2|123`), at most two (enough to tell none, one and several):
/// conditional create, update, delete and references.
pub async fn matching(
    store: &Store,
    conn: &mut AnyConnection,
    t: &str,
    criteria: &str,
) -> FhirResult<Vec<Stored>> {
    matching_at_most(store, conn, t, criteria, 2).await
}

/// The resources of type `t` matching `criteria`, at most `count`.
pub async fn matching_at_most(
    store: &Store,
    conn: &mut AnyConnection,
    t: &str,
    criteria: &str,
    count: i64,
) -> FhirResult<Vec<Stored>> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(criteria.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.is_empty() {
        return Err(FhirError::invalid(format!(
            "conditional criteria `{criteria}` select nothing: give at least one parameter"
        )));
    }
    let mut q = parse::parse(t, &pairs, true)?;
    q.count = count;
    q.includes.clear();
    q.revincludes.clear();
    Ok(run(store, conn, &q).await?.matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_shift() {
        assert_eq!(renumber("a = $1 AND b = $12", 3), "a = $4 AND b = $15");
        assert_eq!(renumber("x", 0), "x");
    }

    #[test]
    fn cursors_roundtrip_and_reject_forgeries() {
        let kinds = [SortKind::Text, SortKind::Int];
        let raw = URL_SAFE_NO_PAD.encode(br#"["dupont", 12, "p1"]"#);
        let (args, id) = decode_cursor(&raw, &kinds).unwrap();
        assert_eq!(args, vec![Arg::Text("dupont".into()), Arg::Int(12)]);
        assert_eq!(id, "p1");
        assert!(decode_cursor("!!", &kinds).is_err());
        assert!(decode_cursor(&raw, &[SortKind::Text]).is_err());
    }
}
