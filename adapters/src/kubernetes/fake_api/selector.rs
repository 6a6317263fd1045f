//! The API server's side of selectors: parsing `labelSelector` and `fieldSelector` query
//! parameters with the grammar of `k8s.io/apimachinery/pkg/labels` and `.../fields`.

use std::collections::BTreeMap;

use serde_json::Value;

/// One parsed label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Exists(String),
    DoesNotExist(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedLabelSelector(Vec<LabelRequirement>);

impl ParsedLabelSelector {
    /// Parses the selector syntax (`a=b,c!=d,e in (f,g),h notin (i),j,!k`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top_level(s)? {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(ParsedLabelSelector(reqs))
    }

    /// True when the labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            LabelRequirement::Exists(k) => labels.contains_key(k),
            LabelRequirement::DoesNotExist(k) => !labels.contains_key(k),
            LabelRequirement::Equals(k, v) => labels.get(k) == Some(v),
            LabelRequirement::NotEquals(k, v) => labels.get(k) != Some(v),
            LabelRequirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            LabelRequirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        })
    }
}

/// Splits on commas that are not inside `( )`.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("unbalanced ')' at {i} in {s:?}"));
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced '(' in {s:?}"));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<LabelRequirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(LabelRequirement::DoesNotExist(valid_key(key.trim())?));
    }
    for (op, build) in [
        (
            "!=",
            LabelRequirement::NotEquals as fn(String, String) -> LabelRequirement,
        ),
        ("==", LabelRequirement::Equals),
        ("=", LabelRequirement::Equals),
    ] {
        if let Some((k, v)) = part.split_once(op) {
            return Ok(build(valid_key(k.trim())?, valid_value(v.trim())?));
        }
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = valid_key(words[0])?;
        let rest = words[1].trim();
        let (op, list) = if let Some(l) = rest.strip_prefix("notin") {
            ("notin", l)
        } else if let Some(l) = rest.strip_prefix("in") {
            ("in", l)
        } else {
            return Err(format!("unknown operator in {part:?}"));
        };
        let list = list.trim();
        let inner = list
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(|| format!("expected a ( ) value list in {part:?}"))?;
        let values = inner
            .split(',')
            .map(|v| valid_value(v.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if values.is_empty() || values.iter().all(String::is_empty) {
            return Err(format!("{op} needs at least one value in {part:?}"));
        }
        return Ok(if op == "in" {
            LabelRequirement::In(key, values)
        } else {
            LabelRequirement::NotIn(key, values)
        });
    }
    Ok(LabelRequirement::Exists(valid_key(part)?))
}

fn valid_key(k: &str) -> Result<String, String> {
    let name = k.rsplit('/').next().unwrap_or_default();
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!("invalid label key {k:?}"));
    }
    Ok(k.to_owned())
}

fn valid_value(v: &str) -> Result<String, String> {
    if v.len() > 63
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!("invalid label value {v:?}"));
    }
    Ok(v.to_owned())
}

/// A parsed `fieldSelector`: `field=value`, `field==value`, `field!=value`, comma-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedFieldSelector(Vec<(String, bool, String)>);

impl ParsedFieldSelector {
    /// Parses the selector, accepting only the fields the API server supports for `plural`.
    pub fn parse(s: &str, plural: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: {part:?}; can't understand"));
            };
            let field = field.trim();
            let supported = match plural {
                "pods" => [
                    "metadata.name",
                    "metadata.namespace",
                    "status.phase",
                    "spec.nodeName",
                    "status.podIP",
                    "spec.restartPolicy",
                ]
                .contains(&field),
                _ => ["metadata.name", "metadata.namespace"].contains(&field),
            };
            if !supported {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(ParsedFieldSelector(reqs))
    }

    /// True when the object's fields satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let mut cur = obj;
            for seg in field.split('.') {
                cur = cur.get(seg).unwrap_or(&Value::Null);
            }
            let actual = cur.as_str().unwrap_or("");
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn label_selector_grammar_is_parsed() {
        let s =
            ParsedLabelSelector::parse("app=web,tier in (a, b),!gone,env notin (prod),x").unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "b"), ("x", "")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c"), ("x", "")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("x", ""),
            ("gone", "1")
        ])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("x", ""),
            ("env", "prod")
        ])));
        assert!(ParsedLabelSelector::parse("a in (b").is_err());
        assert!(ParsedLabelSelector::parse("a in ()").is_err());
        assert!(ParsedLabelSelector::parse("a=b c").is_err());
    }

    #[test]
    fn unsupported_field_is_rejected_like_the_api_server() {
        let e = ParsedFieldSelector::parse("spec.image=x", "pods").unwrap_err();
        assert!(e.contains("field label not supported"), "{e}");
        let f = ParsedFieldSelector::parse("status.phase!=Failed,metadata.name=a", "pods").unwrap();
        assert!(f.matches(
            &serde_json::json!({"metadata": {"name": "a"}, "status": {"phase": "Running"}})
        ));
        assert!(!f.matches(
            &serde_json::json!({"metadata": {"name": "a"}, "status": {"phase": "Failed"}})
        ));
    }
}
