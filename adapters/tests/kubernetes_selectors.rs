//! The label selector string the adapter sends selects, on the API server, exactly what
//! ire's selector selects (checked against the fake server's parser of the Kubernetes
//! selector grammar).

use std::collections::BTreeMap;

use ire_adapters::kubernetes::fake_api::ParsedLabelSelector;
use ire_adapters::kubernetes::label_selector_string;
use ire_core::{LabelSelector, Operator, SelectorRequirement};
use proptest::prelude::*;

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["app", "tier", "example.com/team", "env"]).prop_map(String::from)
}

fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "web", "v1.2", "x_y"]).prop_map(String::from)
}

fn requirement() -> impl Strategy<Value = SelectorRequirement> {
    (key(), 0..6usize, prop::collection::vec(value(), 1..3)).prop_map(|(k, op, vals)| {
        let op = [
            Operator::In,
            Operator::NotIn,
            Operator::Exists,
            Operator::DoesNotExist,
            Operator::Equals,
            Operator::NotEquals,
        ][op];
        let values = match op {
            Operator::Exists | Operator::DoesNotExist => Vec::new(),
            Operator::Equals | Operator::NotEquals => vals[..1].to_vec(),
            _ => vals,
        };
        SelectorRequirement::new(k, op, values)
    })
}

fn selector() -> impl Strategy<Value = LabelSelector> {
    (
        prop::collection::btree_map(key(), value(), 0..2),
        prop::collection::vec(requirement(), 0..4),
    )
        .prop_map(|(match_labels, match_expressions)| LabelSelector {
            match_labels,
            match_expressions,
        })
}

proptest! {
    #[test]
    fn server_side_label_selection_equals_ire_selection(
        sel in selector(),
        labels in prop::collection::btree_map(key(), value(), 0..4),
    ) {
        let labels: BTreeMap<String, String> = labels;
        let server = match label_selector_string(&sel).unwrap() {
            Some(s) => ParsedLabelSelector::parse(&s).unwrap(),
            None => ParsedLabelSelector::default(),
        };
        prop_assert_eq!(server.matches(&labels), sel.matches(&labels));
    }
}
