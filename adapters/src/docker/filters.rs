//! What of a [`ResourceFilter`] Docker can evaluate itself.
//!
//! Docker's list and event APIs filter by `label` (`k=v` or `k`), `name` (a regular
//! expression) and `status`. The adapter sends what maps exactly and always re-checks the
//! whole filter on what comes back, so pushing down can only save work, never change the
//! answer.

use std::collections::HashMap;

use ire_core::{Operator, ResourceFilter};

use super::convert::{states_of_phase, KIND_CONTAINER};

/// Docker filters for a list or event request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServerFilter {
    /// Filter name -> values (values of one name are OR-ed by Docker, names AND-ed).
    pub filters: HashMap<String, Vec<String>>,
    /// True when the filter can match nothing (a kind other than container, a phase
    /// Docker has no state for): no request is needed.
    pub matches_nothing: bool,
    /// True when Docker's answer is exactly the filter's answer, so Docker's `limit` can
    /// be used for the page.
    pub exact: bool,
}

/// Translates the top level of `filter` into Docker filters.
pub(crate) fn server_filter(filter: &ResourceFilter) -> ServerFilter {
    let mut out = ServerFilter {
        exact: true,
        ..Default::default()
    };
    let mut labels = Vec::new();
    for (k, v) in &filter.label_selector.match_labels {
        labels.push(format!("{k}={v}"));
    }
    for e in &filter.label_selector.match_expressions {
        match (e.operator, e.values.as_slice()) {
            (Operator::Exists, _) => labels.push(e.key.clone()),
            (Operator::Equals, [v]) | (Operator::In, [v]) => labels.push(format!("{}={v}", e.key)),
            _ => out.exact = false,
        }
    }
    if !labels.is_empty() {
        out.filters.insert("label".into(), labels);
    }

    if !filter.kinds.is_empty() && !filter.kinds.iter().any(|k| k == KIND_CONTAINER) {
        out.matches_nothing = true;
    }

    if !filter.statuses.is_empty() {
        let states: Vec<String> = filter
            .statuses
            .iter()
            .flat_map(|p| states_of_phase(p).iter().map(|s| (*s).to_owned()))
            .collect();
        if states.is_empty() {
            out.matches_nothing = true;
        } else {
            out.filters.insert("status".into(), states);
        }
        // The OOM-killed exited container is `failed` in ire but `exited` in Docker.
        out.exact = false;
    }

    if !filter.names.is_empty() {
        out.filters.insert(
            "name".into(),
            filter.names.iter().map(|p| name_regex(p)).collect(),
        );
    }

    if !filter.all.is_empty() || !filter.any.is_empty() || filter.not.is_some() {
        out.exact = false;
    }
    out
}

/// A wildcard pattern (`*`, `?`) as the anchored regular expression Docker's `name`
/// filter expects (Docker matches it against `/name`).
pub(crate) fn name_regex(pattern: &str) -> String {
    let mut re = String::from("^/?");
    for c in pattern.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => re.push(c),
            c => {
                re.push('\\');
                re.push(c);
            }
        }
    }
    re.push('$');
    re
}

#[cfg(test)]
mod tests {
    use super::*;
    use ire_core::SelectorRequirement;

    #[test]
    fn labels_names_and_statuses_are_pushed_down() {
        let f = ResourceFilter::everything()
            .with_label("tier", "cache")
            .with_expression(SelectorRequirement::new(
                "team",
                Operator::Exists,
                Vec::<String>::new(),
            ))
            .with_name("redis-*")
            .with_status("running");
        let s = server_filter(&f);
        let mut labels = s.filters["label"].clone();
        labels.sort();
        assert_eq!(labels, ["team", "tier=cache"]);
        assert_eq!(s.filters["name"], ["^/?redis-.*$"]);
        assert_eq!(s.filters["status"], ["running"]);
        assert!(!s.matches_nothing);
    }

    #[test]
    fn filters_docker_cannot_express_are_not_exact() {
        let f = ResourceFilter::everything().with_expression(SelectorRequirement::new(
            "tier",
            Operator::NotIn,
            ["cache"],
        ));
        assert!(!server_filter(&f).exact);
        assert!(server_filter(&ResourceFilter::everything().with_label("a", "b")).exact);
    }

    #[test]
    fn other_kinds_and_unknown_phases_match_nothing() {
        assert!(server_filter(&ResourceFilter::everything().with_kind("pod")).matches_nothing);
        assert!(server_filter(&ResourceFilter::everything().with_status("weird")).matches_nothing);
        assert!(
            !server_filter(&ResourceFilter::everything().with_kind("container")).matches_nothing
        );
    }

    #[test]
    fn regex_metacharacters_in_names_are_escaped() {
        assert_eq!(name_regex("a.b?"), "^/?a\\.b.$");
    }
}
