//! Vocabulary lookups (`lookup: NAME`): FHIR ConceptMap JSON files, or CSV tables with a
//! `source,target` header (and optionally `display` and `system` columns), loaded from a
//! directory. The name is the ConceptMap's `id` (for JSON) or the file name without
//! extension (for CSV).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub code: String,
    pub display: Option<String>,
    pub system: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ConceptMap {
    pub name: String,
    entries: HashMap<String, Target>,
}

impl ConceptMap {
    pub fn lookup(&self, code: &str) -> Option<&Target> {
        self.entries.get(code)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A FHIR ConceptMap: every `group.element.code` to its first target that is not
    /// `unmatched`/`disjoint`.
    pub fn from_fhir(json: &Value) -> Result<ConceptMap, String> {
        if json.get("resourceType").and_then(Value::as_str) != Some("ConceptMap") {
            return Err("not a FHIR ConceptMap (resourceType)".into());
        }
        let name = json
            .get("id")
            .and_then(Value::as_str)
            .ok_or("the ConceptMap has no id: lookups name it by its id")?
            .to_string();
        let mut entries = HashMap::new();
        for group in json
            .get("group")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let system = group.get("target").and_then(Value::as_str);
            for element in group
                .get("element")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(code) = element.get("code").and_then(Value::as_str) else {
                    continue;
                };
                let target = element
                    .get("target")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|t| {
                        !matches!(
                            t.get("equivalence").and_then(Value::as_str),
                            Some("unmatched" | "disjoint")
                        ) && t.get("code").is_some()
                    });
                if let Some(t) = target {
                    entries.entry(code.to_string()).or_insert(Target {
                        code: t["code"].as_str().unwrap_or_default().to_string(),
                        display: t.get("display").and_then(Value::as_str).map(String::from),
                        system: system.map(String::from),
                    });
                }
            }
        }
        Ok(ConceptMap { name, entries })
    }

    pub fn from_csv(name: &str, text: &str) -> Result<ConceptMap, String> {
        let mut reader = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let headers = reader.headers().map_err(|e| e.to_string())?.clone();
        let col = |n: &str| headers.iter().position(|h| h == n);
        let (Some(source), Some(target)) = (col("source"), col("target")) else {
            return Err("a CSV ConceptMap needs a `source,target` header".into());
        };
        let (display, system) = (col("display"), col("system"));
        let mut entries = HashMap::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| format!("row {}: {e}", i + 2))?;
            let get = |c: Option<usize>| {
                c.and_then(|c| record.get(c))
                    .filter(|v| !v.is_empty())
                    .map(String::from)
            };
            let (Some(s), Some(t)) = (get(Some(source)), get(Some(target))) else {
                return Err(format!("row {}: source and target are required", i + 2));
            };
            entries.insert(
                s,
                Target {
                    code: t,
                    display: get(display),
                    system: get(system),
                },
            );
        }
        Ok(ConceptMap {
            name: name.to_string(),
            entries,
        })
    }
}

/// Loads every `*.json` and `*.csv` of a directory; problems are (file, message).
pub fn load_dir(
    dir: &Path,
) -> (
    HashMap<String, ConceptMap>,
    Vec<(std::path::PathBuf, String)>,
) {
    let mut maps = HashMap::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (maps, problems);
    };
    let mut files: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    for file in files {
        let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "json" | "csv") {
            continue;
        }
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                problems.push((file, e.to_string()));
                continue;
            }
        };
        let loaded = if ext == "json" {
            serde_json::from_str::<Value>(&text)
                .map_err(|e| e.to_string())
                .and_then(|v| ConceptMap::from_fhir(&v))
        } else {
            let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            ConceptMap::from_csv(stem, &text)
        };
        match loaded {
            Ok(map) => {
                if maps.contains_key(&map.name) {
                    problems.push((file, format!("ConceptMap `{}` is defined twice", map.name)));
                } else {
                    maps.insert(map.name.clone(), map);
                }
            }
            Err(e) => problems.push((file, e)),
        }
    }
    (maps, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fhir_and_csv() {
        let m = ConceptMap::from_fhir(&json!({
            "resourceType": "ConceptMap", "id": "sex",
            "group": [{"target": "http://hl7.org/fhir/administrative-gender", "element": [
                {"code": "F", "target": [{"code": "female", "equivalence": "equivalent"}]},
                {"code": "X", "target": [{"code": "other", "equivalence": "unmatched"}]}
            ]}]
        }))
        .unwrap();
        assert_eq!(m.lookup("F").unwrap().code, "female");
        assert!(m.lookup("X").is_none());
        let c = ConceptMap::from_csv(
            "class",
            "# patient class\nsource,target,display\nI, IMP ,inpatient\n",
        )
        .unwrap();
        assert_eq!(c.lookup("I").unwrap().code, "IMP");
        assert_eq!(c.lookup("I").unwrap().display.as_deref(), Some("inpatient"));
        assert!(ConceptMap::from_csv("x", "a,b\n1,2\n").is_err());
    }
}
