//! Search parameters: which parameter codes each resource type has, their kind, and where in
//! the resource their values live. Loaded from `schemas/fhir/search-parameters.csv` (the R4
//! definitions, expressions reduced to plain element paths).

use std::collections::HashMap;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Token,
    Reference,
    Date,
    Quantity,
    Number,
    Uri,
    Composite,
}

impl ParamType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => Self::String,
            "token" => Self::Token,
            "reference" => Self::Reference,
            "date" => Self::Date,
            "quantity" => Self::Quantity,
            "number" => Self::Number,
            "uri" => Self::Uri,
            "composite" => Self::Composite,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Token => "token",
            Self::Reference => "reference",
            Self::Date => "date",
            Self::Quantity => "quantity",
            Self::Number => "number",
            Self::Uri => "uri",
            Self::Composite => "composite",
        }
    }
}

/// One step of an element path: `name`, `value[x]` (any choice type), or
/// `telecom[system=phone]` (only the elements whose child has that value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub choice: bool,
    pub filter: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct SearchParam {
    /// The resource type, or `Resource` for the parameters every type has.
    pub resource: String,
    pub code: String,
    pub kind: ParamType,
    /// Alternative paths, each a list of steps from the resource root.
    pub paths: Vec<Vec<Step>>,
    /// For references: the types the parameter may point to (empty: any).
    pub targets: Vec<String>,
    /// For composites: the component parameter codes.
    pub components: Vec<String>,
}

impl SearchParam {
    /// Whether the store indexes this parameter (composites are searched through their
    /// components, which the store does not combine yet).
    pub fn searchable(&self) -> bool {
        self.kind != ParamType::Composite
    }
}

pub struct Registry {
    /// Each type's parameters (`Resource`: the common ones). Looked up by a scan: a type has
    /// at most a few dozen, and the index hot path then allocates nothing.
    by_type: HashMap<String, Vec<SearchParam>>,
}

fn parse_step(text: &str) -> Option<Step> {
    let (name, rest) = match text.find('[') {
        Some(i) => (&text[..i], Some(text[i + 1..].strip_suffix(']')?)),
        None => (text, None),
    };
    if name.is_empty() {
        return None;
    }
    let (choice, filter) = match rest {
        None => (false, None),
        Some("x") => (true, None),
        Some(f) => {
            let (k, v) = f.split_once('=')?;
            (false, Some((k.to_string(), v.to_string())))
        }
    };
    Some(Step {
        name: name.to_string(),
        choice,
        filter,
    })
}

fn parse_path(text: &str) -> Option<Vec<Step>> {
    text.split('.').map(parse_step).collect()
}

impl Registry {
    pub fn parse(csv: &str) -> Result<Self, String> {
        let mut by_type: HashMap<String, Vec<SearchParam>> = HashMap::new();
        let mut header_seen = false;
        for (n, line) in csv.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !header_seen {
                header_seen = true;
                continue;
            }
            let cols: Vec<&str> = line.split(',').collect();
            let [resource, code, kind, paths, targets] = cols[..] else {
                return Err(format!("line {}: expected 5 columns", n + 1));
            };
            if paths.starts_with('~') {
                continue; // not expressible as element paths: not indexed
            }
            let kind = ParamType::parse(kind)
                .ok_or_else(|| format!("line {}: unknown type `{kind}`", n + 1))?;
            let (paths, components) = if kind == ParamType::Composite {
                (Vec::new(), paths.split('$').map(String::from).collect())
            } else {
                let paths = paths
                    .split('|')
                    .map(|p| parse_path(p.trim()))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| format!("line {}: bad path `{paths}`", n + 1))?;
                (paths, Vec::new())
            };
            let param = SearchParam {
                resource: resource.to_string(),
                code: code.to_string(),
                kind,
                paths,
                targets: targets
                    .split('|')
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect(),
                components,
            };
            let own = by_type.entry(resource.to_string()).or_default();
            if own.iter().any(|p| p.code == param.code) {
                return Err(format!("line {}: {resource}.{code} defined twice", n + 1));
            }
            own.push(param);
        }
        Ok(Self { by_type })
    }

    pub fn get(&self, resource: &str, code: &str) -> Option<&SearchParam> {
        self.of_type(resource).find(|p| p.code == code)
    }

    /// The parameters of a type, its own and the common ones.
    pub fn of_type<'a>(&'a self, resource: &str) -> impl Iterator<Item = &'a SearchParam> + 'a {
        let own = self.by_type.get(resource).into_iter().flatten();
        let common = self.by_type.get("Resource").into_iter().flatten();
        own.chain(common)
    }
}

/// The R4 search parameters the store knows.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        Registry::parse(include_str!("../../../schemas/fhir/search-parameters.csv"))
            .expect("schemas/fhir/search-parameters.csv is checked by the tests")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_table_loads() {
        let r = registry();
        let family = r.get("Patient", "family").unwrap();
        assert_eq!(family.kind, ParamType::String);
        let patient = r.get("Observation", "patient").unwrap();
        assert_eq!(patient.kind, ParamType::Reference);
        assert_eq!(patient.targets, ["Patient"]);
        assert!(
            r.get("Observation", "_tag").is_some(),
            "common parameters apply"
        );
        assert!(r.get("Patient", "nope").is_none());
        assert!(r.of_type("Patient").any(|p| p.code == "birthdate"));
        let date = r.get("Observation", "date").unwrap();
        assert!(date.paths[0][0].choice);
    }

    #[test]
    fn steps() {
        let s = parse_step("telecom[system=phone]").unwrap();
        assert_eq!(s.filter, Some(("system".into(), "phone".into())));
        assert!(parse_step("value[x]").unwrap().choice);
        assert!(parse_step("").is_none());
        assert!(parse_step("a[b").is_none());
        assert!(Registry::parse("h\nPatient,x,nope,name,\n").is_err());
        assert!(Registry::parse("h\nPatient,x,string\n").is_err());
        assert!(Registry::parse("h\nPatient,x,string,name,\nPatient,x,string,name,\n").is_err());
    }
}
