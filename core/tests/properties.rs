//! Property tests of the model and selectors: seed properties 6-10 and 89-93.

use ire_core::testsuite::strategies::*;
use ire_core::*;
use proptest::prelude::*;

/// The reference semantics of one requirement, written independently of the crate's.
fn reference_requirement(r: &SelectorRequirement, labels: &Labels) -> bool {
    let v = labels.get(&r.key);
    match r.operator {
        Operator::In => matches!(v, Some(v) if r.values.contains(v)),
        Operator::NotIn => !matches!(v, Some(v) if r.values.contains(v)),
        Operator::Exists => v.is_some(),
        Operator::DoesNotExist => v.is_none(),
        Operator::Equals => v == r.values.first(),
        Operator::NotEquals => v != r.values.first(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// p6, p8, p10: a resource with any free-form kind, phase and metadata survives JSON
    /// and YAML unchanged.
    #[test]
    fn resource_round_trips_through_json_and_yaml(r in resource()) {
        let json = serde_json::to_string(&r).unwrap();
        prop_assert_eq!(&serde_json::from_str::<Resource>(&json).unwrap(), &r);
        let yaml = serde_yaml_ng::to_string(&r).unwrap();
        prop_assert_eq!(&serde_yaml_ng::from_str::<Resource>(&yaml).unwrap(), &r);
    }

    /// p8: any metadata key-value pair is kept.
    #[test]
    fn metadata_keeps_any_pair(mut r in resource(), k in "[a-zA-Z0-9._/-]{1,20}", v in any::<i64>()) {
        r.metadata.insert(k.clone(), serde_json::json!({"v": v}));
        let back: Resource = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        prop_assert_eq!(back.metadata.get(&k), Some(&serde_json::json!({"v": v})));
    }

    /// p9: the status has the same four-part shape whatever the phase.
    #[test]
    fn status_shape_is_the_same_for_every_phase(r in resource()) {
        let v = serde_json::to_value(&r.status).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        prop_assert_eq!(keys, ["conditions", "message", "phase", "reason"]);
    }

    /// p91: every operator behaves as its reference semantics.
    #[test]
    fn requirements_follow_their_operator(req in requirement(), l in labels()) {
        prop_assert_eq!(req.matches(&l), reference_requirement(&req, &l));
    }

    /// p89: a filter with several criteria matches exactly when each criterion alone does.
    #[test]
    fn criteria_combine_with_and(f in resource_filter(), r in resource()) {
        let only = |g: ResourceFilter| g.matches(&r);
        let parts = [
            only(ResourceFilter { label_selector: f.label_selector.clone(), ..Default::default() }),
            only(ResourceFilter { kinds: f.kinds.clone(), ..Default::default() }),
            only(ResourceFilter { statuses: f.statuses.clone(), ..Default::default() }),
            only(ResourceFilter { names: f.names.clone(), ..Default::default() }),
            only(ResourceFilter { all: f.all.clone(), ..Default::default() }),
            only(ResourceFilter { any: f.any.clone(), ..Default::default() }),
            only(ResourceFilter { not: f.not.clone(), ..Default::default() }),
        ];
        prop_assert_eq!(f.matches(&r), parts.iter().all(|p| *p));
    }

    /// p90: all is AND, any is OR, not is NOT.
    #[test]
    fn composition_is_boolean_logic(a in resource_filter(), b in resource_filter(), r in resource()) {
        let (ma, mb) = (a.matches(&r), b.matches(&r));
        let all = ResourceFilter { all: vec![a.clone(), b.clone()], ..Default::default() };
        let any = ResourceFilter { any: vec![a.clone(), b.clone()], ..Default::default() };
        let not = ResourceFilter { not: Some(Box::new(a.clone())), ..Default::default() };
        prop_assert_eq!(all.matches(&r), ma && mb);
        prop_assert_eq!(any.matches(&r), ma || mb);
        prop_assert_eq!(not.matches(&r), !ma);
    }

    /// p92 and p94: apply returns exactly the matching resources, paged, and an empty list
    /// when nothing matches.
    #[test]
    fn apply_filters_then_pages(f in resource_filter(), rs in proptest::collection::vec(resource(), 0..30)) {
        let matching: Vec<Resource> = rs.iter().filter(|r| f.matches(r)).cloned().collect();
        let page = f.apply(rs.clone());
        let end = f.limit.map_or(matching.len(), |l| (f.offset + l).min(matching.len()));
        let expected: &[Resource] = if f.offset >= matching.len() { &[] } else { &matching[f.offset..end] };
        prop_assert_eq!(page.as_slice(), expected);
    }

    /// p93: a filter survives JSON and YAML with every criterion.
    #[test]
    fn filter_round_trips_through_json_and_yaml(f in resource_filter()) {
        let json = serde_json::to_string(&f).unwrap();
        prop_assert_eq!(&serde_json::from_str::<ResourceFilter>(&json).unwrap(), &f);
        let yaml = serde_yaml_ng::to_string(&f).unwrap();
        prop_assert_eq!(&serde_yaml_ng::from_str::<ResourceFilter>(&yaml).unwrap(), &f);
    }

    /// p83: a snapshot survives its byte form.
    #[test]
    fn snapshot_round_trips_through_bytes(r in resource(), state in any::<(u32, String, bool)>()) {
        let s = Snapshot::new("kill", &r, &state).unwrap();
        let back = Snapshot::from_bytes(&s.to_bytes().unwrap()).unwrap();
        prop_assert_eq!(back.state_as::<(u32, String, bool)>().unwrap(), state);
        prop_assert_eq!(back, s);
    }

    /// p68: context never changes an error's class.
    #[test]
    fn context_keeps_the_class(layers in proptest::collection::vec("[a-z ]{1,10}", 0..5), which in 0..4u8) {
        let base = match which {
            0 => Error::not_found("resource", "x"),
            1 => Error::Conflict { message: "held".into() },
            2 => Error::AlreadyDone { message: "stopped".into() },
            _ => Error::invalid("f", "bad"),
        };
        let class = base.class();
        let wrapped = layers.iter().fold(base, |e, c| e.context(c.clone()));
        prop_assert_eq!(wrapped.class(), class);
    }
}

#[test]
fn a_campaign_style_selector_parses_with_yaml() {
    let yaml = r#"
labels: {app: redis}
expressions:
  - {key: tier, operator: In, values: [cache]}
  - {key: canary, operator: DoesNotExist}
names: ["redis-*"]
"#;
    let f: ResourceFilter = serde_yaml_ng::from_str(yaml).unwrap();
    assert_eq!(
        f.label_selector.match_labels.get("app").map(String::as_str),
        Some("redis")
    );
    assert_eq!(f.label_selector.match_expressions.len(), 2);
    assert_eq!(f.names, ["redis-*"]);
}

#[test]
fn a_typo_in_a_selector_names_the_field_and_line() {
    let yaml = "labels: {app: redis}\nexpresions: []\n";
    let e = serde_yaml_ng::from_str::<ResourceFilter>(yaml).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("expresions"), "{msg}");
    assert!(msg.contains("line 2"), "{msg}");
}

#[test]
fn an_invalid_expression_is_rejected_at_parse_time() {
    let yaml = "expressions: [{key: tier, operator: In}]\n";
    let e = serde_yaml_ng::from_str::<ResourceFilter>(yaml).unwrap_err();
    assert!(e.to_string().contains("tier"), "{e}");
}
