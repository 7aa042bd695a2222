//! `${VAR}` and `${VAR:-default}` in channel values, so one file serves test, training and
//! production.

/// Replaces variables from `lookup`. Returns the names of unset variables without default.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => missing.push(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

pub fn from_env(text: &str) -> Result<String, Vec<String>> {
    interpolate(text, |name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_defaults_and_missing() {
        let env = |n: &str| (n == "HOST").then(|| "lab:2575".to_string());
        assert_eq!(interpolate("${HOST}", env).unwrap(), "lab:2575");
        assert_eq!(interpolate("a/${DIR:-out}/b", env).unwrap(), "a/out/b");
        assert_eq!(
            interpolate("${NOPE}-${ALSO}", env).unwrap_err(),
            vec!["NOPE", "ALSO"]
        );
        assert_eq!(
            interpolate("plain ${unclosed", env).unwrap(),
            "plain ${unclosed"
        );
    }
}
