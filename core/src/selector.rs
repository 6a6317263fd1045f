//! Resource selection: label selectors, resource filters and their composition.
//!
//! Adapters push what they can to their server (label selectors, names) and use
//! [`ResourceFilter::matches`] for the rest. A filter that matches nothing yields an empty
//! list, never an error (seed property 92).

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::resource::{Labels, Resource};

/// A set-based label requirement's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operator {
    /// The label's value is one of `values`.
    #[serde(alias = "in")]
    In,
    /// The label is absent or its value is none of `values`.
    #[serde(alias = "notin", alias = "not-in")]
    NotIn,
    /// The label is present.
    #[serde(alias = "exists")]
    Exists,
    /// The label is absent.
    #[serde(alias = "does-not-exist", alias = "doesnotexist")]
    DoesNotExist,
    /// The label's value equals the single value.
    #[serde(alias = "equals", alias = "=", alias = "==")]
    Equals,
    /// The label is absent or its value differs from the single value.
    #[serde(alias = "not-equals", alias = "notequals", alias = "!=")]
    NotEquals,
}

/// One label requirement: `key operator values`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorRequirement {
    /// The label key.
    pub key: String,
    /// How the label is compared.
    pub operator: Operator,
    /// The values compared against (empty for Exists and DoesNotExist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl SelectorRequirement {
    /// A requirement `key operator values`.
    pub fn new<I, S>(key: impl Into<String>, operator: Operator, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        SelectorRequirement {
            key: key.into(),
            operator,
            values: values.into_iter().map(Into::into).collect(),
        }
    }

    /// Checks the value count against the operator.
    pub fn validate(&self) -> Result<(), Error> {
        let field = format!("expression {:?}", self.key);
        if self.key.is_empty() {
            return Err(Error::invalid("expression key", "must not be empty"));
        }
        match self.operator {
            Operator::In | Operator::NotIn if self.values.is_empty() => Err(Error::invalid(
                field,
                format!("{:?} needs at least one value", self.operator),
            )),
            Operator::Exists | Operator::DoesNotExist if !self.values.is_empty() => Err(
                Error::invalid(field, format!("{:?} takes no values", self.operator)),
            ),
            Operator::Equals | Operator::NotEquals if self.values.len() != 1 => {
                Err(Error::invalid(
                    field,
                    format!("{:?} takes exactly one value", self.operator),
                ))
            }
            _ => Ok(()),
        }
    }

    /// True when the labels satisfy the requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::Equals => value.is_some_and(|v| self.values.first() == Some(v)),
            Operator::NotEquals => value.is_none_or(|v| self.values.first() != Some(v)),
        }
    }
}

/// Equality labels and set-based expressions, all of which must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    #[serde(default, alias = "labels", skip_serializing_if = "Labels::is_empty")]
    pub match_labels: Labels,
    /// Set-based requirements.
    #[serde(default, alias = "expressions", skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
}

impl LabelSelector {
    /// True when no requirement is set (matches everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Checks every expression.
    pub fn validate(&self) -> Result<(), Error> {
        self.match_expressions
            .iter()
            .try_for_each(SelectorRequirement::validate)
    }

    /// True when the labels satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| e.matches(labels))
    }
}

/// Which resources an operation applies to, and which page of them.
///
/// Criteria combine with AND; `any` adds an OR over sub-filters and `not` a negation, so
/// every boolean combination can be written (seed property 90). Pagination applies to the
/// top-level filter only.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "FilterWire", into = "FilterWire")]
pub struct ResourceFilter {
    /// Label requirements.
    pub label_selector: LabelSelector,
    /// Kinds, any of which matches (empty: every kind).
    pub kinds: Vec<String>,
    /// Status phases, any of which matches (empty: every phase).
    pub statuses: Vec<String>,
    /// Name patterns with `*` and `?` wildcards, any of which matches (empty: every name).
    pub names: Vec<String>,
    /// Sub-filters that must all match.
    pub all: Vec<ResourceFilter>,
    /// Sub-filters of which at least one must match (empty: no constraint).
    pub any: Vec<ResourceFilter>,
    /// A sub-filter that must not match.
    pub not: Option<Box<ResourceFilter>>,
    /// At most this many results (None: no limit).
    pub limit: Option<usize>,
    /// Skip this many matching results first.
    pub offset: usize,
}

impl ResourceFilter {
    /// A filter that matches every resource.
    pub fn everything() -> Self {
        ResourceFilter::default()
    }

    /// Adds a required label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.label_selector
            .match_labels
            .insert(key.into(), value.into());
        self
    }

    /// Adds a label expression.
    pub fn with_expression(mut self, requirement: SelectorRequirement) -> Self {
        self.label_selector.match_expressions.push(requirement);
        self
    }

    /// Adds an accepted kind.
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kinds.push(kind.into());
        self
    }

    /// Adds an accepted phase.
    pub fn with_status(mut self, phase: impl Into<String>) -> Self {
        self.statuses.push(phase.into());
        self
    }

    /// Adds an accepted name pattern.
    pub fn with_name(mut self, pattern: impl Into<String>) -> Self {
        self.names.push(pattern.into());
        self
    }

    /// Sets the page.
    pub fn page(mut self, offset: usize, limit: Option<usize>) -> Self {
        self.offset = offset;
        self.limit = limit;
        self
    }

    /// Checks every expression, recursively.
    pub fn validate(&self) -> Result<(), Error> {
        self.label_selector.validate()?;
        for (i, f) in self.all.iter().enumerate() {
            f.validate().map_err(|e| e.context(format!("all[{i}]")))?;
        }
        for (i, f) in self.any.iter().enumerate() {
            f.validate().map_err(|e| e.context(format!("any[{i}]")))?;
        }
        if let Some(n) = &self.not {
            n.validate().map_err(|e| e.context("not"))?;
        }
        Ok(())
    }

    /// True when the resource meets every criterion (pagination aside).
    pub fn matches(&self, r: &Resource) -> bool {
        self.label_selector.matches(&r.labels)
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == &r.kind))
            && (self.statuses.is_empty() || self.statuses.iter().any(|s| s == &r.status.phase))
            && (self.names.is_empty() || self.names.iter().any(|p| wildcard_match(p, &r.name)))
            && self.all.iter().all(|f| f.matches(r))
            && (self.any.is_empty() || self.any.iter().any(|f| f.matches(r)))
            && self.not.as_ref().is_none_or(|f| !f.matches(r))
    }

    /// The same filter without its page, for asking a server for everything that matches.
    pub fn without_page(&self) -> Self {
        ResourceFilter {
            limit: None,
            offset: 0,
            ..self.clone()
        }
    }

    /// Filters and paginates resources an adapter could not filter on its server.
    pub fn apply<I: IntoIterator<Item = Resource>>(&self, resources: I) -> Vec<Resource> {
        let matching = resources.into_iter().filter(|r| self.matches(r));
        crate::page::paginate(matching, self.offset, self.limit)
    }
}

/// Matches `name` against `pattern` where `*` is any run and `?` any one character.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // Position of the last `*` and the name index it was tried at, for backtracking.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The serialized shape of a filter: flat, as campaign files write selectors.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterWire {
    #[serde(
        default,
        alias = "matchLabels",
        skip_serializing_if = "Labels::is_empty"
    )]
    labels: Labels,
    #[serde(
        default,
        alias = "matchExpressions",
        skip_serializing_if = "Vec::is_empty"
    )]
    expressions: Vec<SelectorRequirement>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    kinds: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    statuses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    all: Vec<ResourceFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    any: Vec<ResourceFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not: Option<Box<ResourceFilter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
    #[serde(default, skip_serializing_if = "is_zero")]
    offset: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl TryFrom<FilterWire> for ResourceFilter {
    type Error = Error;
    fn try_from(w: FilterWire) -> Result<Self, Error> {
        let f = ResourceFilter {
            label_selector: LabelSelector {
                match_labels: w.labels,
                match_expressions: w.expressions,
            },
            kinds: w.kinds,
            statuses: w.statuses,
            names: w.names,
            all: w.all,
            any: w.any,
            not: w.not,
            limit: w.limit,
            offset: w.offset,
        };
        f.validate()?;
        Ok(f)
    }
}

impl From<ResourceFilter> for FilterWire {
    fn from(f: ResourceFilter) -> Self {
        FilterWire {
            labels: f.label_selector.match_labels,
            expressions: f.label_selector.match_expressions,
            kinds: f.kinds,
            statuses: f.statuses,
            names: f.names,
            all: f.all,
            any: f.any,
            not: f.not,
            limit: f.limit,
            offset: f.offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("redis-*", "redis-1"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("r?d*s", "redis"));
        assert!(wildcard_match("*a*b*c", "xxaxxbxxc"));
        assert!(!wildcard_match("redis-*", "api-1"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(wildcard_match("exact", "exact"));
        assert!(!wildcard_match("exact", "exactly"));
    }

    #[test]
    fn requirement_validation_names_the_key() {
        let e = SelectorRequirement::new("tier", Operator::In, Vec::<String>::new())
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("tier"), "{e}");
        assert!(SelectorRequirement::new("x", Operator::Exists, ["a"])
            .validate()
            .is_err());
        assert!(SelectorRequirement::new("x", Operator::Equals, ["a", "b"])
            .validate()
            .is_err());
        assert!(SelectorRequirement::new("x", Operator::NotEquals, ["a"])
            .validate()
            .is_ok());
    }

    #[test]
    fn unknown_field_is_rejected() {
        let e = serde_json::from_str::<ResourceFilter>(r#"{"lables": {"a": "b"}}"#).unwrap_err();
        assert!(e.to_string().contains("lables"), "{e}");
    }
}
