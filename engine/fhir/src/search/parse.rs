//! A search URL's parameters, read: which are criteria (with their modifiers, chains and
//! prefixes) and which are result controls (`_count`, `_sort`, `_include`...).

use crate::error::{FhirError, FhirResult};
use crate::registry::{ParamType, SearchParam, registry};

/// One criterion: `name[:modifier][.chain]=v1,v2` (values ORed; repeated names ANDed).
#[derive(Debug, Clone)]
pub struct Criterion {
    pub target: Target,
    pub modifier: Option<String>,
    pub values: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Target {
    Id,
    LastUpdated,
    Param(SearchParam),
    /// `subject:Patient.name=x`: resources whose reference points at a `to` matching `then`.
    Chain {
        param: SearchParam,
        to: String,
        then: Box<Criterion>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    False,
    Count,
    Data,
    Text,
    True,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub source: String,
    pub param: String,
    pub target: Option<String>,
    pub iterate: bool,
}

#[derive(Debug, Clone)]
pub struct SortKey {
    pub target: Target,
    pub descending: bool,
}

#[derive(Debug, Clone)]
pub struct Query {
    pub resource_type: String,
    pub criteria: Vec<Criterion>,
    pub count: i64,
    pub sort: Vec<SortKey>,
    pub includes: Vec<Include>,
    pub revincludes: Vec<Include>,
    pub summary: Summary,
    pub elements: Option<Vec<String>>,
    pub total: bool,
    pub cursor: Option<String>,
    /// The parameters as understood, for the Bundle's `self` link.
    pub understood: Vec<(String, String)>,
    /// Parameters ignored (lenient handling), for the client to know.
    pub ignored: Vec<String>,
}

pub const DEFAULT_COUNT: i64 = 20;
pub const MAX_COUNT: i64 = 1000;

/// Splits on `sep` not preceded by a backslash (`\,` is a literal comma in FHIR search).
pub fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) if n == ',' || n == '|' || n == '$' || n == '\\' => {
                    parts.last_mut().unwrap().push('\\');
                    parts.last_mut().unwrap().push(n);
                }
                Some(n) => {
                    parts.last_mut().unwrap().push('\\');
                    parts.last_mut().unwrap().push(n);
                }
                None => parts.last_mut().unwrap().push('\\'),
            }
        } else if c == sep {
            parts.push(String::new());
        } else {
            parts.last_mut().unwrap().push(c);
        }
    }
    parts
}

/// Removes FHIR search escapes.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unknown(t: &str, name: &str) -> FhirError {
    FhirError::invalid(format!("`{name}` is not a search parameter of {t}"))
}

const MODIFIERS: &[(ParamType, &[&str])] = &[
    (ParamType::String, &["exact", "contains", "missing"]),
    (ParamType::Token, &["not", "text", "missing"]),
    (ParamType::Uri, &["below", "missing"]),
    (ParamType::Reference, &["identifier", "missing"]),
    (ParamType::Date, &["missing"]),
    (ParamType::Quantity, &["missing"]),
    (ParamType::Number, &["missing"]),
];

fn check_modifier(t: &str, p: &SearchParam, modifier: Option<&str>) -> FhirResult<()> {
    let Some(m) = modifier else { return Ok(()) };
    let allowed = MODIFIERS
        .iter()
        .find(|(k, _)| *k == p.kind)
        .map_or(&[][..], |(_, m)| m);
    if allowed.contains(&m) {
        return Ok(());
    }
    if p.kind == ParamType::Reference && crate::types::is_resource_type(m) {
        return Ok(());
    }
    Err(FhirError::not_supported(format!(
        "modifier `:{m}` is not supported on {t}.{} ({} parameter); supported: {}",
        p.code,
        p.kind.name(),
        allowed.join(", ")
    )))
}

/// Reads one criterion name (`subject:Patient.name:exact`) on type `t`.
fn criterion(t: &str, name: &str, values: Vec<String>, depth: usize) -> FhirResult<Criterion> {
    // The chain splits at the first dot: `subject:Patient.organization.name`.
    if let Some((head, rest)) = name.split_once('.') {
        if depth >= 3 {
            return Err(FhirError::not_supported(
                "chains are limited to three links",
            ));
        }
        let (code, type_modifier) = match head.split_once(':') {
            Some((c, m)) => (c, Some(m)),
            None => (head, None),
        };
        let param = registry().get(t, code).ok_or_else(|| unknown(t, code))?;
        if param.kind != ParamType::Reference {
            return Err(FhirError::invalid(format!(
                "`{code}` of {t} is not a reference: it cannot be chained"
            )));
        }
        let to = match type_modifier {
            Some(m) if crate::types::is_resource_type(m) => m.to_string(),
            Some(m) => {
                return Err(FhirError::invalid(format!(
                    "`{m}` in `{head}` is not a resource type"
                )));
            }
            None if param.targets.len() == 1 => param.targets[0].clone(),
            None => {
                return Err(FhirError::invalid(format!(
                    "`{code}` of {t} may point to {}: say which, e.g. `{code}:{}.{rest}`",
                    param.targets.join(", "),
                    param.targets.first().map_or("Patient", String::as_str)
                )));
            }
        };
        let then = criterion(&to, rest, values, depth + 1)?;
        return Ok(Criterion {
            target: Target::Chain {
                param: param.clone(),
                to,
                then: Box::new(then),
            },
            modifier: None,
            values: Vec::new(),
        });
    }
    let (code, modifier) = match name.split_once(':') {
        Some((c, m)) => (c, Some(m.to_string())),
        None => (name, None),
    };
    let target = match code {
        "_id" => Target::Id,
        "_lastUpdated" => Target::LastUpdated,
        _ => {
            let p = registry().get(t, code).ok_or_else(|| unknown(t, code))?;
            if !p.searchable() {
                return Err(FhirError::not_supported(format!(
                    "{t}.{code} is a composite parameter, not supported yet: search its parts"
                )));
            }
            check_modifier(t, p, modifier.as_deref())?;
            Target::Param(p.clone())
        }
    };
    if matches!(target, Target::Id | Target::LastUpdated)
        && let Some(m) = &modifier
        && m != "missing"
    {
        return Err(FhirError::not_supported(format!(
            "modifier `:{m}` is not supported on {code}"
        )));
    }
    if values.iter().all(|v| v.is_empty()) {
        return Err(FhirError::invalid(format!("`{name}` has no value")));
    }
    Ok(Criterion {
        target,
        modifier,
        values,
    })
}

fn include(value: &str, rev: bool, iterate: bool) -> FhirResult<Include> {
    let parts: Vec<&str> = value.split(':').collect();
    let what = if rev { "_revinclude" } else { "_include" };
    let (source, param, target) = match parts[..] {
        [s, p] => (s, p, None),
        [s, p, t] => (s, p, Some(t.to_string())),
        _ => {
            return Err(FhirError::invalid(format!(
                "{what}={value}: expected Type:parameter[:TargetType]"
            )));
        }
    };
    crate::types::check_type(source).map_err(|e| FhirError::invalid(e.diagnostics))?;
    if param != "*" {
        let p = registry()
            .get(source, param)
            .ok_or_else(|| unknown(source, param))?;
        if p.kind != ParamType::Reference {
            return Err(FhirError::invalid(format!(
                "{what}={value}: {source}.{param} is not a reference parameter"
            )));
        }
    }
    Ok(Include {
        source: source.to_string(),
        param: param.to_string(),
        target,
        iterate,
    })
}

fn sort_key(t: &str, key: &str) -> FhirResult<SortKey> {
    let (descending, code) = match key.strip_prefix('-') {
        Some(c) => (true, c),
        None => (false, key),
    };
    let target = match code {
        "_id" => Target::Id,
        "_lastUpdated" => Target::LastUpdated,
        _ => {
            let p = registry().get(t, code).ok_or_else(|| unknown(t, code))?;
            if !p.searchable() {
                return Err(FhirError::not_supported(format!("cannot sort by {code}")));
            }
            Target::Param(p.clone())
        }
    };
    Ok(SortKey { target, descending })
}

/// Control parameters the server understands but that are not criteria.
const IGNORED_CONTROLS: [&str; 2] = ["_format", "_pretty"];

/// Reads the parameters of a search on `t`. With `strict`, an unknown or unsupported
/// parameter is an error; otherwise it is skipped and listed in `ignored`.
pub fn parse(t: &str, pairs: &[(String, String)], strict: bool) -> FhirResult<Query> {
    let mut q = Query {
        resource_type: t.to_string(),
        criteria: Vec::new(),
        count: DEFAULT_COUNT,
        sort: Vec::new(),
        includes: Vec::new(),
        revincludes: Vec::new(),
        summary: Summary::False,
        elements: None,
        total: false,
        cursor: None,
        understood: Vec::new(),
        ignored: Vec::new(),
    };
    for (name, value) in pairs {
        let mut keep = true;
        let result: FhirResult<()> = (|| {
            match name.as_str() {
                "_count" => {
                    let n: i64 = value.parse().map_err(|_| {
                        FhirError::invalid(format!("_count={value} is not a number"))
                    })?;
                    if n < 0 {
                        return Err(FhirError::invalid("_count cannot be negative"));
                    }
                    q.count = n.min(MAX_COUNT);
                }
                "_sort" => {
                    for key in value.split(',').filter(|k| !k.is_empty()) {
                        q.sort.push(sort_key(t, key)?);
                    }
                }
                "_include" | "_include:iterate" | "_include:recurse" => {
                    q.includes.push(include(value, false, name != "_include")?);
                }
                "_revinclude" | "_revinclude:iterate" | "_revinclude:recurse" => {
                    q.revincludes
                        .push(include(value, true, name != "_revinclude")?);
                }
                "_summary" => {
                    q.summary = match value.as_str() {
                        "false" => Summary::False,
                        "count" => Summary::Count,
                        "data" => Summary::Data,
                        "text" => Summary::Text,
                        "true" => Summary::True,
                        _ => {
                            return Err(FhirError::invalid(format!(
                                "_summary={value}: expected true, false, count, data or text"
                            )));
                        }
                    }
                }
                "_elements" => {
                    q.elements = Some(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|e| !e.is_empty())
                            .map(String::from)
                            .collect(),
                    )
                }
                "_total" => {
                    q.total = match value.as_str() {
                        "accurate" => true,
                        "none" | "estimate" => false,
                        _ => {
                            return Err(FhirError::invalid(format!(
                                "_total={value}: expected none, estimate or accurate"
                            )));
                        }
                    }
                }
                "_cursor" => {
                    q.cursor = Some(value.clone());
                    keep = false;
                }
                n if IGNORED_CONTROLS.contains(&n) => keep = false,
                _ => {
                    let values = split_unescaped(value, ',');
                    q.criteria.push(criterion(t, name, values, 0)?);
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) if keep => q.understood.push((name.clone(), value.clone())),
            Ok(()) => {}
            Err(e) if strict => return Err(e),
            Err(e) => q.ignored.push(e.diagnostics),
        }
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn criteria_and_controls() {
        let q = parse(
            "Observation",
            &pairs(&[
                ("code", "http://loinc.org|8867-4,1234-5"),
                ("subject:Patient.name", "dupont"),
                ("_count", "5"),
                ("_sort", "-date"),
                ("_include", "Observation:subject"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(q.criteria.len(), 2);
        assert_eq!(q.criteria[0].values.len(), 2);
        assert!(matches!(&q.criteria[1].target, Target::Chain { to, .. } if to == "Patient"));
        assert_eq!(q.count, 5);
        assert!(q.sort[0].descending);
        assert_eq!(q.includes[0].param, "subject");
    }

    #[test]
    fn strict_refuses_what_lenient_ignores() {
        let p = pairs(&[("nonsense", "1"), ("name", "x")]);
        assert_eq!(parse("Patient", &p, true).unwrap_err().status, 400);
        let q = parse("Patient", &p, false).unwrap();
        assert_eq!(q.criteria.len(), 1);
        assert_eq!(q.ignored.len(), 1);
        for bad in [
            ("_count", "x"),
            ("name:below", "x"),
            ("_summary", "maybe"),
            ("_include", "Patient"),
            ("general-practitioner.name", "x"),
        ] {
            assert!(parse("Patient", &pairs(&[bad]), true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(split_unescaped(r"a\,b,c", ','), vec![r"a\,b", "c"]);
        assert_eq!(unescape(r"a\,b\|c"), "a,b|c");
    }
}
