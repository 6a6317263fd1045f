//! Malformed campaigns: each is refused with the line, column, field and message that
//! point at the mistake, and every problem of a file is reported, not just the first.

use std::collections::BTreeMap;

use ire_actors::registry::DefaultPluginRegistry;
use ire_core::{AdapterInfo, PluginRegistry};
use ire_node::campaign::validate::{check, Context};
use ire_node::campaign::Source;
use ire_node::config::NodeConfig;

/// The node's real plugin catalog and two adapters (`local`: processes, `docker`).
async fn context() -> (DefaultPluginRegistry, BTreeMap<String, AdapterInfo>) {
    let registry = DefaultPluginRegistry::new();
    ire_node::catalog::register(&registry, &Default::default())
        .await
        .expect("the catalog registers");
    let mut config = NodeConfig::defaults();
    config.adapters.insert(
        "docker".into(),
        ire_node::config::AdapterSection {
            type_: "docker".into(),
            config: Default::default(),
            optional: false,
        },
    );
    (registry, ire_node::wiring::static_adapter_infos(&config))
}

/// One malformed campaign and the first problem expected.
struct Case {
    what: &'static str,
    yaml: &'static str,
    line: usize,
    column: usize,
    field: &'static str,
    message: &'static str,
}

const HEAD: &str = "name: c\ntargets:\n  web: {adapter: local, selector: {labels: {tier: web}}}\n";

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "a YAML syntax error",
            yaml: "name: c\ntargets:\n  web: {adapter: local\nsteps: []\n",
            line: 4,
            column: 6,
            field: "targets.web",
            message: "did not find expected ',' or '}'",
        },
        Case {
            what: "an unknown top-level field",
            yaml: "name: c\nstesp: []\n",
            line: 2,
            column: 1,
            field: "stesp",
            message: "unknown field `stesp`, expected one of `name`",
        },
        Case {
            what: "an unknown field in a target",
            yaml: "name: c\ntargets:\n  web:\n    adaptr: local\nsteps: []\n",
            line: 4,
            column: 5,
            field: "targets.web.adaptr",
            message: "unknown field `adaptr`, expected one of `adapter`",
        },
        Case {
            what: "a duration that does not parse",
            yaml: "name: c\ntargets: {web: {adapter: local}}\nsteps:\n  - name: p\n    plugin: pause\n    target: web\n    duration: 3 fortnights\n",
            line: 7,
            column: 15,
            field: "steps[0].duration",
            message: "\"3 fortnights\" is not a duration",
        },
        Case {
            what: "a duration without a unit",
            yaml: "name: c\ntargets: {web: {adapter: local}}\nsteps:\n  - {name: p, plugin: pause, target: web, duration: 30}\n",
            line: 4,
            column: 53,
            field: "steps[0].duration",
            message: "30 has no unit",
        },
        Case {
            what: "an unknown mode",
            yaml: "name: c\ntargets:\n  web: {adapter: local, mode: some}\nsteps: []\n",
            line: 3,
            column: 31,
            field: "targets.web.mode",
            message: "unknown variant `some`",
        },
        Case {
            what: "a list where a mapping belongs",
            yaml: "name: c\ntargets:\n  - web\nsteps: []\n",
            line: 3,
            column: 3,
            field: "targets",
            message: "invalid type: sequence, expected a map",
        },
        Case {
            what: "an unknown selector operator",
            yaml: "name: c\ntargets:\n  web:\n    adapter: local\n    selector:\n      expressions: [{key: tier, operator: Near, values: [a]}]\nsteps: []\n",
            line: 6,
            column: 43,
            field: "targets.web.selector.expressions[0].operator",
            message: "unknown variant `Near`",
        },
        Case {
            what: "an unknown plugin",
            yaml: "name: c\ntargets:\n  web: {adapter: local}\nsteps:\n  - name: break-it\n    plugin: explode\n    target: web\n",
            line: 6,
            column: 13,
            field: "steps[0].plugin",
            message: "unknown plugin \"explode\"",
        },
        Case {
            what: "an unknown target",
            yaml: "name: c\ntargets:\n  web: {adapter: local}\nsteps:\n  - name: k\n    plugin: kill\n    target: wbe\n",
            line: 7,
            column: 13,
            field: "steps[0].target",
            message: "unknown target \"wbe\"; the targets are web",
        },
        Case {
            what: "an unknown adapter",
            yaml: "name: c\ntargets:\n  web: {adapter: vmware}\nsteps:\n  - {name: k, plugin: kill, target: web}\n",
            line: 3,
            column: 18,
            field: "targets.web.adapter",
            message: "unknown adapter \"vmware\"; the node has docker, local",
        },
        Case {
            what: "a config the plugin's schema refuses",
            yaml: "name: c\ntargets:\n  web: {adapter: local}\nsteps:\n  - name: k\n    plugin: kill\n    target: web\n    config:\n      signal: SIGNOPE\n",
            line: 9,
            column: 15,
            field: "steps[0].config.signal",
            message: "SIGNOPE",
        },
        Case {
            what: "a cycle in depends-on",
            yaml: "name: c\ntargets:\n  web: {adapter: local}\nsteps:\n  - {name: a, plugin: kill, target: web, depends-on: [b]}\n  - {name: b, plugin: kill, target: web, depends-on: [a]}\n",
            line: 5,
            column: 54,
            field: "steps[0].depends-on",
            message: "depends-on forms a cycle: a -> b -> a",
        },
        Case {
            what: "a dependency on an unknown step",
            yaml: "name: c\ntargets:\n  web: {adapter: local}\nsteps:\n  - {name: a, plugin: kill, target: web, depends-on: [z]}\n",
            line: 5,
            column: 55,
            field: "steps[0].depends-on[0]",
            message: "unknown step \"z\"",
        },
        Case {
            what: "a percent out of range",
            yaml: "name: c\ntargets:\n  web:\n    adapter: local\n    mode: {fixed-percent: 150}\nsteps:\n  - {name: k, plugin: kill, target: web}\n",
            line: 5,
            column: 27,
            field: "targets.web.mode.fixed-percent",
            message: "150 is out of range",
        },
        Case {
            what: "fixed: 0",
            yaml: "name: c\ntargets:\n  web:\n    adapter: local\n    mode: {fixed: 0}\nsteps:\n  - {name: k, plugin: kill, target: web}\n",
            line: 5,
            column: 19,
            field: "targets.web.mode.fixed",
            message: "must be at least 1",
        },
        Case {
            what: "a step name used twice",
            yaml: "name: c\ntargets:\n  web: {adapter: local}\nsteps:\n  - {name: k, plugin: kill, target: web}\n  - {name: k, plugin: kill, target: web}\n",
            line: 6,
            column: 12,
            field: "steps[1].name",
            message: "step \"k\" is already steps[0]",
        },
        Case {
            what: "a duration on an action",
            yaml: "name: c\ntargets:\n  web: {adapter: local}\nsteps:\n  - {name: k, plugin: kill, target: web, duration: 10s}\n",
            line: 5,
            column: 52,
            field: "steps[0].duration",
            message: "plugin kill is an action",
        },
        Case {
            what: "retries without on-error: retry",
            yaml: "name: c\ntargets:\n  web: {adapter: local}\nsteps:\n  - {name: k, plugin: kill, target: web, retries: 3}\n",
            line: 5,
            column: 51,
            field: "steps[0].retries",
            message: "retries apply only with on-error: retry",
        },
        Case {
            what: "a probe of two kinds",
            yaml: "name: c\ntargets:\n  web: {adapter: local}\nsteady-state:\n  - name: api\n    http: {url: \"http://127.0.0.1:1/\"}\n    tcp: {address: \"127.0.0.1:1\"}\nsteps:\n  - {name: k, plugin: kill, target: web}\n",
            line: 5,
            column: 5,
            field: "steady-state[0]",
            message: "exactly one of http, tcp or exec (2 given)",
        },
        Case {
            what: "an abort condition on an unknown probe",
            yaml: "name: c\ntargets:\n  web: {adapter: local}\nsteady-state:\n  - {name: api, tcp: {address: \"127.0.0.1:1\"}}\nabort-when:\n  - probe-fails: {probe: apu, for: 5s}\nsteps:\n  - {name: k, plugin: kill, target: web}\n",
            line: 7,
            column: 26,
            field: "abort-when[0].probe-fails.probe",
            message: "unknown probe \"apu\"",
        },
        Case {
            what: "a schedule that is not cron",
            yaml: "name: c\ntargets:\n  web: {adapter: local}\nsteps:\n  - {name: k, plugin: kill, target: web}\nschedule: every night\n",
            line: 6,
            column: 11,
            field: "schedule",
            message: "\"every night\" is not a cron expression",
        },
        Case {
            what: "a plugin the adapter cannot serve",
            yaml: "name: c\ntargets:\n  web: {adapter: local}\nsteps:\n  - name: slow\n    plugin: scale\n    target: web\n    duration: 5s\n    config: {replicas: 0}\n",
            line: 6,
            column: 13,
            field: "steps[0].plugin",
            message: "plugin scale needs scale from its adapter",
        },
    ]
}

#[tokio::test]
async fn every_malformed_campaign_names_its_line_field_and_message() {
    let (registry, adapters) = context().await;
    let ctx = Context {
        plugins: &registry,
        adapters: Some(&adapters),
    };
    let mut failures = Vec::new();
    for case in cases() {
        let source = Source::new("bad.yaml", case.yaml);
        let errors = match check(&source, &ctx) {
            Ok(_) => {
                failures.push(format!("{}: accepted", case.what));
                continue;
            }
            Err(d) => d.0,
        };
        // The problem this case is about (a file may have others, reported too).
        let Some(e) = errors.iter().find(|e| e.field == case.field) else {
            failures.push(format!(
                "{}: no problem at {:?} (all: {errors:?})",
                case.what, case.field
            ));
            continue;
        };
        let ok = e.file == "bad.yaml"
            && e.line == Some(case.line)
            && e.column == Some(case.column)
            && e.field == case.field
            && e.message.contains(case.message);
        if !ok {
            failures.push(format!(
                "{}: expected {}:{} {:?} containing {:?}, got {} (all: {:?})",
                case.what, case.line, case.column, case.field, case.message, e, errors
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn every_problem_of_a_file_is_reported() {
    let (registry, adapters) = context().await;
    let ctx = Context {
        plugins: &registry,
        adapters: Some(&adapters),
    };
    let yaml = format!(
        "{HEAD}steps:\n  - {{name: a, plugin: explode, target: web}}\n  - {{name: b, plugin: kill, target: nowhere}}\n  - {{name: c, plugin: kill, target: web, depends-on: [zz]}}\n"
    );
    let errors = check(&Source::new("many.yaml", yaml), &ctx).unwrap_err().0;
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "steps[0].plugin",
            "steps[1].target",
            "steps[2].depends-on[0]"
        ],
        "{errors:?}"
    );
    let lines: Vec<Option<usize>> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [Some(5), Some(6), Some(7)]);
    // Displayed as file:line:column: field: message, one per line.
    let text = ire_node::campaign::Diagnostics(errors).to_string();
    assert!(text.starts_with("many.yaml:5:"), "{text}");
    assert_eq!(text.lines().count(), 3);
}

#[tokio::test]
async fn the_example_campaigns_are_valid() {
    let (registry, mut adapters) = context().await;
    let mut k8s = NodeConfig::defaults();
    k8s.adapters.insert(
        "k8s".into(),
        ire_node::config::AdapterSection {
            type_: "kubernetes".into(),
            config: Default::default(),
            optional: false,
        },
    );
    adapters.extend(ire_node::wiring::static_adapter_infos(&k8s));
    let ctx = Context {
        plugins: &registry,
        adapters: Some(&adapters),
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with("campaign.yaml") {
            let source = Source::read(&path).unwrap();
            if let Err(d) = check(&source, &ctx) {
                panic!("{d}");
            }
            seen += 1;
        }
    }
    assert!(seen >= 3, "examples/*.yaml: {seen} files");
    assert!(registry.get("kill").is_ok());
}
