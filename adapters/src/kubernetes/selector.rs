//! Translating ire's filters into what the API server filters itself: a label selector
//! string and a field selector. Whatever cannot be sent is checked client-side with
//! [`ResourceFilter::matches`], so the server-side part only ever narrows to a superset.

use ire_core::{Error, LabelSelector, Operator, ResourceFilter, Result};

use super::convert::{pod_phase, WorkloadKind, POD_PHASES};

/// The selectors sent with a list or watch of one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSelectors {
    /// `labelSelector`, when the filter has label requirements.
    pub label_selector: Option<String>,
    /// `fieldSelector`, when names or phases can be selected by the server.
    pub field_selector: Option<String>,
    /// The filter's phases exclude every object of this kind: no request is needed.
    pub matches_nothing: bool,
}

/// The Kubernetes label selector string for ire's label selector, `None` when empty.
///
/// `Equals` and match labels become `k=v`, `NotEquals` `k!=v`, `In` `k in (a,b)`, `NotIn`
/// `k notin (a,b)`, `Exists` `k` and `DoesNotExist` `!k`. Keys and values that no Kubernetes
/// label can have are an error naming them.
pub fn label_selector_string(selector: &LabelSelector) -> Result<Option<String>> {
    selector.validate()?;
    let mut parts = Vec::new();
    for (k, v) in &selector.match_labels {
        check_key(k)?;
        check_value(k, v)?;
        parts.push(format!("{k}={v}"));
    }
    for e in &selector.match_expressions {
        check_key(&e.key)?;
        for v in &e.values {
            check_value(&e.key, v)?;
        }
        let k = &e.key;
        parts.push(match e.operator {
            Operator::Equals => format!("{k}={}", e.values[0]),
            Operator::NotEquals => format!("{k}!={}", e.values[0]),
            Operator::In => format!("{k} in ({})", e.values.join(",")),
            Operator::NotIn => format!("{k} notin ({})", e.values.join(",")),
            Operator::Exists => k.clone(),
            Operator::DoesNotExist => format!("!{k}"),
        });
    }
    Ok((!parts.is_empty()).then(|| parts.join(",")))
}

/// Label requirements that hold for every match: the top-level selector and those of
/// `all` sub-filters (an AND), recursively. `any` and `not` stay client-side.
fn conjunctive_labels(filter: &ResourceFilter, out: &mut LabelSelector) {
    for (k, v) in &filter.label_selector.match_labels {
        out.match_expressions
            .push(ire_core::SelectorRequirement::new(
                k.clone(),
                Operator::Equals,
                [v.clone()],
            ));
    }
    out.match_expressions
        .extend(filter.label_selector.match_expressions.iter().cloned());
    for f in &filter.all {
        conjunctive_labels(f, out);
    }
}

/// The selectors for listing or watching `kind` with `filter`.
pub fn server_selectors(filter: &ResourceFilter, kind: WorkloadKind) -> Result<ServerSelectors> {
    filter.validate()?;
    let mut labels = LabelSelector::default();
    conjunctive_labels(filter, &mut labels);
    let label_selector = label_selector_string(&labels)?;
    let mut fields = Vec::new();
    if let [name] = filter.names.as_slice() {
        if !name.contains(['*', '?']) {
            fields.push(format!("metadata.name={name}"));
        }
    }
    let mut matches_nothing = false;
    if kind == WorkloadKind::Pod && !filter.statuses.is_empty() {
        let wanted: Vec<&str> = POD_PHASES
            .iter()
            .copied()
            .filter(|p| filter.statuses.iter().any(|s| s == pod_phase(Some(p))))
            .collect();
        match wanted.as_slice() {
            [] => matches_nothing = true,
            [one] => fields.push(format!("status.phase={one}")),
            // No OR in field selectors: exclude the phases that are not wanted.
            _ => fields.extend(
                POD_PHASES
                    .iter()
                    .filter(|p| !wanted.contains(p))
                    .map(|p| format!("status.phase!={p}")),
            ),
        }
    }
    Ok(ServerSelectors {
        label_selector,
        field_selector: (!fields.is_empty()).then(|| fields.join(",")),
        matches_nothing,
    })
}

fn label_error(what: &str, v: &str, why: &str) -> Error {
    Error::invalid("label selector", format!("{what} {v:?} {why}"))
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn check_key(k: &str) -> Result<()> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            });
        if !ok {
            return Err(label_error(
                "key",
                k,
                "has a prefix that is not a DNS subdomain",
            ));
        }
    }
    if !is_label_name(name) {
        return Err(label_error(
            "key",
            k,
            "is not a Kubernetes label key (at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends)",
        ));
    }
    Ok(())
}

fn check_value(k: &str, v: &str) -> Result<()> {
    if !v.is_empty() && !is_label_name(v) {
        return Err(label_error(
            &format!("value of {k:?}:"),
            v,
            "is not a Kubernetes label value (at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ire_core::SelectorRequirement;

    #[test]
    fn every_operator_is_translated() {
        let f = ResourceFilter::everything()
            .with_label("app", "web")
            .with_expression(SelectorRequirement::new("tier", Operator::In, ["a", "b"]))
            .with_expression(SelectorRequirement::new("env", Operator::NotIn, ["prod"]))
            .with_expression(SelectorRequirement::new(
                "x",
                Operator::Exists,
                Vec::<String>::new(),
            ))
            .with_expression(SelectorRequirement::new(
                "y",
                Operator::DoesNotExist,
                Vec::<String>::new(),
            ))
            .with_expression(SelectorRequirement::new("z", Operator::NotEquals, ["1"]))
            .with_expression(SelectorRequirement::new("w", Operator::Equals, ["2"]));
        let s = server_selectors(&f, WorkloadKind::Pod).unwrap();
        assert_eq!(
            s.label_selector.as_deref(),
            Some("app=web,tier in (a,b),env notin (prod),x,!y,z!=1,w=2")
        );
        assert_eq!(s.field_selector, None);
    }

    #[test]
    fn exact_name_and_phases_become_field_selectors() {
        let f = ResourceFilter::everything()
            .with_name("web-0")
            .with_status("running");
        let s = server_selectors(&f, WorkloadKind::Pod).unwrap();
        assert_eq!(
            s.field_selector.as_deref(),
            Some("metadata.name=web-0,status.phase=Running")
        );
        let f = ResourceFilter::everything()
            .with_name("web-*")
            .with_status("running")
            .with_status("pending");
        let s = server_selectors(&f, WorkloadKind::Pod).unwrap();
        assert_eq!(
            s.field_selector.as_deref(),
            Some("status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown")
        );
        let f = ResourceFilter::everything().with_status("paused");
        assert!(
            server_selectors(&f, WorkloadKind::Pod)
                .unwrap()
                .matches_nothing
        );
    }

    #[test]
    fn invalid_label_value_is_an_error_naming_it() {
        let f = ResourceFilter::everything().with_label("app", "a b");
        let e = server_selectors(&f, WorkloadKind::Pod).unwrap_err();
        assert!(e.to_string().contains("\"a b\""), "{e}");
    }
}
