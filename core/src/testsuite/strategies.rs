//! proptest strategies for the model: resources, selectors and filters.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

use crate::resource::{Labels, Resource, ResourceKey, ResourceSpec, ResourceStatus};
use crate::selector::{LabelSelector, Operator, ResourceFilter, SelectorRequirement};

/// Label keys drawn from a small set, so that generated selectors and resources overlap.
pub fn label_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["app", "tier", "zone", "team", "env"]).prop_map(String::from)
}

/// Label values drawn from a small set.
pub fn label_value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "cache", "web"]).prop_map(String::from)
}

/// Label maps.
pub fn labels() -> impl Strategy<Value = Labels> {
    btree_map(label_key(), label_value(), 0..4)
}

/// Free-form kinds and phases, including ones no adapter uses today (property 10).
pub fn free_form() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["container", "pod", "process", "vm", "task"])
            .prop_map(String::from),
        "[a-z][a-z0-9-]{0,12}",
    ]
}

/// Valid operators with a matching number of values.
pub fn requirement() -> impl Strategy<Value = SelectorRequirement> {
    (label_key(), 0..6u8, vec(label_value(), 1..3)).prop_map(|(key, op, values)| {
        let (operator, values) = match op {
            0 => (Operator::In, values),
            1 => (Operator::NotIn, values),
            2 => (Operator::Exists, vec![]),
            3 => (Operator::DoesNotExist, vec![]),
            4 => (Operator::Equals, vec![values[0].clone()]),
            _ => (Operator::NotEquals, vec![values[0].clone()]),
        };
        SelectorRequirement {
            key,
            operator,
            values,
        }
    })
}

/// Label selectors.
pub fn label_selector() -> impl Strategy<Value = LabelSelector> {
    (
        btree_map(label_key(), label_value(), 0..2),
        vec(requirement(), 0..3),
    )
        .prop_map(|(m, e)| LabelSelector {
            match_labels: m,
            match_expressions: e,
        })
}

fn name_pattern() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["redis-*", "*-1", "api-?", "*", "web-0", "r*s*"])
        .prop_map(String::from)
}

fn flat_filter() -> impl Strategy<Value = ResourceFilter> {
    (
        label_selector(),
        vec(free_form(), 0..2),
        vec(free_form(), 0..2),
        vec(name_pattern(), 0..2),
    )
        .prop_map(|(label_selector, kinds, statuses, names)| ResourceFilter {
            label_selector,
            kinds,
            statuses,
            names,
            ..Default::default()
        })
}

/// Filters with nested all/any/not composition and optional pagination.
pub fn resource_filter() -> impl Strategy<Value = ResourceFilter> {
    let leaf = flat_filter();
    let tree = leaf.prop_recursive(3, 12, 3, |inner| {
        (
            flat_filter(),
            vec(inner.clone(), 0..3),
            vec(inner.clone(), 0..3),
            prop::option::of(inner),
        )
            .prop_map(|(mut f, all, any, not)| {
                f.all = all;
                f.any = any;
                f.not = not.map(Box::new);
                f
            })
    });
    (tree, prop::option::of(0..20usize), 0..5usize).prop_map(|(mut f, limit, offset)| {
        f.limit = limit;
        f.offset = offset;
        f
    })
}

fn resource_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "redis-1", "redis-2", "api-1", "api-x", "web-0", "rosas",
    ])
    .prop_map(String::from)
}

/// Resources with overlapping labels, names, kinds and phases.
pub fn resource() -> impl Strategy<Value = Resource> {
    (
        resource_name(),
        "[a-f0-9]{8}",
        free_form(),
        free_form(),
        labels(),
        labels(),
        btree_map(
            "[a-z]{1,8}",
            any::<i64>().prop_map(serde_json::Value::from),
            0..3,
        ),
    )
        .prop_map(
            |(name, id, kind, phase, labels, annotations, metadata)| Resource {
                key: ResourceKey::new("gen", ["ns", &name]).expect("valid key"),
                id,
                name,
                kind,
                labels,
                annotations,
                status: ResourceStatus {
                    phase,
                    ..Default::default()
                },
                spec: ResourceSpec::default(),
                metadata,
            },
        )
}
