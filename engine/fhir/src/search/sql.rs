//! Criteria as SQL over the search tables. Each criterion becomes `alias.id IN (SELECT id
//! FROM search_x WHERE type = .. AND param = .. AND (value predicates ORed))`, so every
//! criterion is one index range scan whatever the backend.

use crate::datetime::{self, Range};
use crate::error::{FhirError, FhirResult};
use crate::extract::parse_reference;
use crate::normalize::fold;
use crate::registry::{ParamType, SearchParam};

use super::parse::{Criterion, Target, split_unescaped, unescape};

/// A value bound to the statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Text(String),
    Int(i64),
    Real(f64),
}

/// SQL under construction with its arguments, numbered `$1, $2...`.
#[derive(Debug, Default)]
pub struct Sql {
    pub text: String,
    pub args: Vec<Arg>,
}

impl Sql {
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Appends a placeholder bound to `arg`.
    pub fn arg(&mut self, arg: Arg) -> &mut Self {
        self.args.push(arg);
        let n = self.args.len();
        self.text.push_str(&format!("${n}"));
        self
    }

    pub fn text_arg(&mut self, s: impl Into<String>) -> &mut Self {
        self.arg(Arg::Text(s.into()))
    }

    pub fn int_arg(&mut self, v: i64) -> &mut Self {
        self.arg(Arg::Int(v))
    }
}

pub fn table(kind: ParamType) -> &'static str {
    match kind {
        ParamType::String => "search_string",
        ParamType::Token | ParamType::Uri => "search_token",
        ParamType::Reference => "search_reference",
        ParamType::Date => "search_date",
        ParamType::Quantity | ParamType::Number => "search_number",
        ParamType::Composite => unreachable!("composites are refused when parsed"),
    }
}

/// The first key after every string that starts with `prefix` (bytewise).
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

fn like_pattern(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// Comparison prefixes of date, number and quantity values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

fn prefix(value: &str) -> (Prefix, &str) {
    let table = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
        ("ap", Prefix::Ap),
    ];
    for (p, v) in table {
        if let Some(rest) = value.strip_prefix(p)
            && rest.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
        {
            return (v, rest);
        }
    }
    (Prefix::Eq, value)
}

/// Range comparison of an indexed `[low, high]` with a searched `[sl, sh]` (FHIR 3.1.1.5.5).
fn range_predicate(sql: &mut Sql, low: &str, high: &str, p: Prefix, s: Range) {
    let (sl, sh) = (s.low, s.high);
    match p {
        Prefix::Eq => sql
            .push(&format!("({low} >= "))
            .int_arg(sl)
            .push(&format!(" AND {high} <= "))
            .int_arg(sh)
            .push(")"),
        Prefix::Ne => sql
            .push(&format!("NOT ({low} >= "))
            .int_arg(sl)
            .push(&format!(" AND {high} <= "))
            .int_arg(sh)
            .push(")"),
        Prefix::Lt => sql.push(&format!("{low} < ")).int_arg(sl),
        Prefix::Le => sql.push(&format!("{low} <= ")).int_arg(sh),
        Prefix::Gt => sql.push(&format!("{high} > ")).int_arg(sh),
        Prefix::Ge => sql.push(&format!("{high} >= ")).int_arg(sl),
        Prefix::Sa => sql.push(&format!("{low} > ")).int_arg(sh),
        Prefix::Eb => sql.push(&format!("{high} < ")).int_arg(sl),
        Prefix::Ap => {
            // Within a tenth of the distance to now, at least a day.
            let gap = (datetime::now_micros() - sl).abs() / 10;
            let d = gap.max(86_400_000_000);
            sql.push(&format!("({low} <= "))
                .int_arg(sh.saturating_add(d))
                .push(&format!(" AND {high} >= "))
                .int_arg(sl.saturating_sub(d))
                .push(")")
        }
    };
}

fn date_value(code: &str, v: &str) -> FhirResult<(Prefix, Range)> {
    let (p, rest) = prefix(v);
    let r = datetime::parse(rest).ok_or_else(|| {
        FhirError::invalid(format!(
            "{code}={v}: `{rest}` is not a date (expected e.g. 2024, 2024-03-05 or 2024-03-05T10:00:00Z, with an optional prefix eq, ne, gt, lt, ge, le, sa, eb, ap)"
        ))
    })?;
    Ok((p, r))
}

/// `5.4` is searched as [5.35, 5.45): the precision of the value as written.
fn number_range(text: &str) -> Option<(f64, f64, f64)> {
    let v: f64 = text.parse().ok()?;
    if !v.is_finite() {
        return None;
    }
    let decimals = text.split_once('.').map_or(0, |(_, f)| {
        f.chars().take_while(char::is_ascii_digit).count()
    });
    let half = 0.5 * 10f64.powi(-(decimals as i32));
    Some((v, v - half, v + half))
}

fn number_predicate(sql: &mut Sql, code: &str, v: &str, quantity: bool) -> FhirResult<()> {
    let (p, rest) = prefix(v);
    let parts: Vec<String> = if quantity {
        split_unescaped(rest, '|')
            .iter()
            .map(|s| unescape(s))
            .collect()
    } else {
        vec![rest.to_string()]
    };
    let (value, lo, hi) = number_range(&parts[0])
        .ok_or_else(|| FhirError::invalid(format!("{code}={v}: `{}` is not a number", parts[0])))?;
    sql.push("(");
    match p {
        Prefix::Eq => sql
            .push("value >= ")
            .arg(Arg::Real(lo))
            .push(" AND value < ")
            .arg(Arg::Real(hi)),
        Prefix::Ne => sql
            .push("NOT (value >= ")
            .arg(Arg::Real(lo))
            .push(" AND value < ")
            .arg(Arg::Real(hi))
            .push(")"),
        Prefix::Lt | Prefix::Eb => sql.push("value < ").arg(Arg::Real(value)),
        Prefix::Le => sql.push("value <= ").arg(Arg::Real(value)),
        Prefix::Gt | Prefix::Sa => sql.push("value > ").arg(Arg::Real(value)),
        Prefix::Ge => sql.push("value >= ").arg(Arg::Real(value)),
        Prefix::Ap => {
            let d = (value * 0.1).abs();
            sql.push("value >= ")
                .arg(Arg::Real(value - d))
                .push(" AND value <= ")
                .arg(Arg::Real(value + d))
        }
    };
    if let Some(system) = parts.get(1).filter(|s| !s.is_empty()) {
        sql.push(" AND system = ").text_arg(system.clone());
    }
    if let Some(unit) = parts.get(2).filter(|s| !s.is_empty()) {
        sql.push(" AND code = ").text_arg(unit.clone());
    }
    sql.push(")");
    Ok(())
}

fn token_predicate(sql: &mut Sql, modifier: Option<&str>, v: &str) {
    if modifier == Some("text") {
        let f = fold(&unescape(v));
        sql.push("(text >= ")
            .text_arg(f.clone())
            .push(" AND text < ")
            .text_arg(prefix_end(&f))
            .push(")");
        return;
    }
    let parts = split_unescaped(v, '|');
    match &parts[..] {
        [code] => {
            sql.push("code = ").text_arg(unescape(code));
        }
        [system, code] if code.is_empty() => {
            sql.push("system = ").text_arg(unescape(system));
        }
        [system, code] => {
            sql.push("(code = ")
                .text_arg(unescape(code))
                .push(" AND system = ")
                .text_arg(unescape(system))
                .push(")");
        }
        _ => {
            sql.push("code = ").text_arg(unescape(v));
        }
    }
}

fn reference_predicate(
    sql: &mut Sql,
    p: &SearchParam,
    modifier: Option<&str>,
    v: &str,
) -> FhirResult<()> {
    let v = unescape(v);
    if let Some((t, id)) = parse_reference(&v) {
        if let Some(m) = modifier
            && m != t
        {
            return Err(FhirError::invalid(format!(
                "{}:{m}={v}: the reference is to a {t}",
                p.code
            )));
        }
        sql.push("(target_type = ")
            .text_arg(t)
            .push(" AND target_id = ")
            .text_arg(id)
            .push(")");
    } else if v.contains(':') || v.contains('/') {
        // A canonical or absolute URL not of this server: matched as written.
        sql.push("url = ").text_arg(v);
    } else {
        crate::types::check_id(&v)?;
        let t = modifier
            .map(String::from)
            .or_else(|| (p.targets.len() == 1).then(|| p.targets[0].clone()));
        match t {
            Some(t) => sql
                .push("(target_type = ")
                .text_arg(t)
                .push(" AND target_id = ")
                .text_arg(v)
                .push(")"),
            None => sql.push("target_id = ").text_arg(v),
        };
    }
    Ok(())
}

fn value_predicate(
    sql: &mut Sql,
    p: &SearchParam,
    modifier: Option<&str>,
    v: &str,
) -> FhirResult<()> {
    match p.kind {
        ParamType::String => {
            let text = unescape(v);
            match modifier {
                Some("exact") => {
                    sql.push("exact = ").text_arg(text);
                }
                Some("contains") => {
                    sql.push("value LIKE ")
                        .text_arg(like_pattern(&fold(&text)))
                        .push(" ESCAPE '\\'");
                }
                _ => {
                    let f = fold(&text);
                    sql.push("(value >= ")
                        .text_arg(f.clone())
                        .push(" AND value < ")
                        .text_arg(prefix_end(&f))
                        .push(")");
                }
            }
        }
        ParamType::Token => token_predicate(sql, modifier.filter(|m| *m == "text"), v),
        ParamType::Uri => {
            let u = unescape(v);
            if modifier == Some("below") {
                sql.push("(code >= ")
                    .text_arg(u.clone())
                    .push(" AND code < ")
                    .text_arg(prefix_end(&u))
                    .push(")");
            } else {
                sql.push("code = ").text_arg(u);
            }
        }
        ParamType::Reference => reference_predicate(sql, p, modifier, v)?,
        ParamType::Date => {
            let (pre, r) = date_value(&p.code, v)?;
            range_predicate(sql, "low", "high", pre, r);
        }
        ParamType::Quantity => number_predicate(sql, &p.code, v, true)?,
        ParamType::Number => number_predicate(sql, &p.code, v, false)?,
        ParamType::Composite => unreachable!(),
    }
    Ok(())
}

fn missing(value: &str, name: &str) -> FhirResult<bool> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(FhirError::invalid(format!(
            "{name}:missing={value}: expected true or false"
        ))),
    }
}

/// Appends the condition of one criterion on resources of type `t` aliased `alias`.
pub fn criterion(sql: &mut Sql, t: &str, alias: &str, c: &Criterion) -> FhirResult<()> {
    let modifier = c.modifier.as_deref();
    match &c.target {
        Target::Id => {
            if modifier == Some("missing") {
                // Every resource has an id.
                sql.push(if missing(&c.values[0], "_id")? {
                    "1 = 0"
                } else {
                    "1 = 1"
                });
                return Ok(());
            }
            sql.push(&format!("{alias}.id IN ("));
            for (i, v) in c.values.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.text_arg(unescape(v));
            }
            sql.push(")");
        }
        Target::LastUpdated => {
            sql.push("(");
            for (i, v) in c.values.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                let (pre, r) = date_value("_lastUpdated", v)?;
                let col = format!("{alias}.last_updated");
                range_predicate(sql, &col, &col, pre, r);
            }
            sql.push(")");
        }
        Target::Param(p) => {
            let table = table(p.kind);
            if modifier == Some("missing") {
                let absent = missing(&c.values[0], &p.code)?;
                sql.push(&format!(
                    "{alias}.id {}IN (SELECT id FROM {table} WHERE type = ",
                    if absent { "NOT " } else { "" }
                ))
                .text_arg(t)
                .push(" AND param = ")
                .text_arg(p.code.clone())
                .push(")");
                return Ok(());
            }
            let (negate, modifier) = match modifier {
                Some("not") => (true, None),
                m => (false, m),
            };
            if modifier == Some("identifier") {
                sql.push(&format!(
                    "{alias}.id IN (SELECT id FROM search_token WHERE type = "
                ))
                .text_arg(t)
                .push(" AND param = ")
                .text_arg(format!("{}:identifier", p.code))
                .push(" AND (");
                for (i, v) in c.values.iter().enumerate() {
                    if i > 0 {
                        sql.push(" OR ");
                    }
                    token_predicate(sql, None, v);
                }
                sql.push("))");
                return Ok(());
            }
            sql.push(&format!(
                "{alias}.id {}IN (SELECT id FROM {table} WHERE type = ",
                if negate { "NOT " } else { "" }
            ))
            .text_arg(t)
            .push(" AND param = ")
            .text_arg(p.code.clone())
            .push(" AND (");
            for (i, v) in c.values.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                value_predicate(sql, p, modifier, v)?;
            }
            sql.push("))");
        }
        Target::Chain { param, to, then } => {
            let inner = format!("{alias}c");
            sql.push(&format!(
                "{alias}.id IN (SELECT id FROM search_reference WHERE type = "
            ))
            .text_arg(t)
            .push(" AND param = ")
            .text_arg(param.code.clone())
            .push(" AND target_type = ")
            .text_arg(to.clone())
            .push(&format!(
                " AND target_id IN (SELECT {inner}.id FROM resources {inner} WHERE {inner}.type = "
            ))
            .text_arg(to.clone())
            .push(&format!(" AND {inner}.deleted = 0 AND "));
            criterion(sql, to, &inner, then)?;
            sql.push("))");
        }
    }
    Ok(())
}

/// The expression a sort key orders by, with NULLs replaced so that keyset paging has a
/// total order: resources without the value come first (ascending).
pub fn sort_expression(sql: &mut Sql, t: &str, target: &Target, descending: bool) -> SortKind {
    match target {
        Target::Id => {
            sql.push("r.id");
            SortKind::Text
        }
        Target::LastUpdated => {
            sql.push("r.last_updated");
            SortKind::Int
        }
        Target::Param(p) => {
            let (column, kind, none) = match p.kind {
                ParamType::String => ("value", SortKind::Text, "''"),
                ParamType::Token | ParamType::Uri => ("code", SortKind::Text, "''"),
                ParamType::Reference => ("url", SortKind::Text, "''"),
                ParamType::Date => (
                    if descending { "high" } else { "low" },
                    SortKind::Int,
                    "-9223372036854775808",
                ),
                _ => ("value", SortKind::Real, "-1e308"),
            };
            let agg = if descending { "MAX" } else { "MIN" };
            sql.push(&format!(
                "COALESCE((SELECT {agg}({column}) FROM {} s WHERE s.type = ",
                table(p.kind)
            ))
            .text_arg(t)
            .push(" AND s.id = r.id AND s.param = ")
            .text_arg(p.code.clone())
            .push(&format!("), {none})"));
            kind
        }
        Target::Chain { .. } => unreachable!("sort keys are never chains"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKind {
    Text,
    Int,
    Real,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_of_numbers() {
        let (v, lo, hi) = number_range("5.4").unwrap();
        assert_eq!(v, 5.4);
        assert!((lo - 5.35).abs() < 1e-9 && (hi - 5.45).abs() < 1e-9);
        let (_, lo, hi) = number_range("100").unwrap();
        assert_eq!((lo, hi), (99.5, 100.5));
        assert!(number_range("abc").is_none());
        assert!(number_range("NaN").is_none());
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix("ge2024"), (Prefix::Ge, "2024"));
        assert_eq!(prefix("2024"), (Prefix::Eq, "2024"));
        assert_eq!(prefix("ne-5"), (Prefix::Ne, "-5"));
        assert_eq!(prefix("gettysburg"), (Prefix::Eq, "gettysburg"));
    }

    #[test]
    fn like_escapes() {
        assert_eq!(like_pattern("50%_a"), "%50\\%\\_a%");
    }
}
