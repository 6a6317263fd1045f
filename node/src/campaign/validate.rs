//! Semantic checks of a parsed campaign: every problem is reported (not just the first),
//! each with the field path and its line and column in the file.
//!
//! What is checked: names (unique, non-empty), every target's adapter (when the node's
//! adapters are known) and selector, blast-radius values in range, guards, probes (exactly
//! one kind each, well-formed addresses), abort conditions naming known probes, steps (a
//! known plugin and target, a config the plugin accepts, `depends-on` naming known steps
//! without a cycle, `duration` only on sustained faults, `retries` only with `on-error:
//! retry`), and the schedule (a cron expression croner parses).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ire_core::{AdapterInfo, Error, Plugin, PluginRegistry};

use super::model::{AbortCondition, Campaign, MinAvailable, Mode, OnError, Probe};
use super::parse::{Diagnostic, Source};

/// What validation checks against: the node's plugins, and its adapters when known.
pub struct Context<'a> {
    /// The plugins the node runs.
    pub plugins: &'a dyn PluginRegistry,
    /// Adapter instances by name, with what they can do (None: not checked, e.g. when
    /// validating without a node config).
    pub adapters: Option<&'a BTreeMap<String, AdapterInfo>>,
}

/// The plugin-level property the campaign format needs: does the plugin leave something
/// active to revert (a sustained fault), or not (an action)?
pub fn is_sustained(plugin: &dyn Plugin) -> bool {
    crate::catalog::is_sustained(&plugin.metadata())
}

/// Checks a campaign; an empty list means it is valid.
pub fn validate(source: &Source, c: &Campaign, ctx: &Context<'_>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut err = |field: String, message: String| out.push(source.diagnostic(&field, message));

    if c.name.trim().is_empty() {
        err("name".into(), "must not be empty".into());
    }
    if c.targets.is_empty() {
        err("targets".into(), "at least one target is needed".into());
    }
    for (name, t) in &c.targets {
        let at = format!("targets.{name}");
        if !valid_name(name) {
            err(
                at.clone(),
                "a target name is letters, digits, - and _".into(),
            );
        }
        match ctx.adapters {
            Some(adapters) if !adapters.contains_key(&t.adapter) => err(
                format!("{at}.adapter"),
                format!(
                    "unknown adapter {:?}; the node has {}",
                    t.adapter,
                    list(adapters.keys())
                ),
            ),
            _ => {}
        }
        if t.adapter.trim().is_empty() {
            err(format!("{at}.adapter"), "must not be empty".into());
        }
        for (i, e) in t.selector.expressions.iter().enumerate() {
            if let Err(e) = e.validate() {
                err(format!("{at}.selector.expressions[{i}]"), message_of(&e));
            }
        }
        match t.mode {
            Mode::Fixed(0) => err(
                format!("{at}.mode.fixed"),
                "must be at least 1 (a step that acts on nothing does nothing)".into(),
            ),
            Mode::FixedPercent(p) if !(p > 0.0 && p <= 100.0) => err(
                format!("{at}.mode.fixed-percent"),
                format!("{p} is out of range: a percent in (0, 100]"),
            ),
            Mode::RandomMaxPercent(p) if !(p > 0.0 && p <= 100.0) => err(
                format!("{at}.mode.random-max-percent"),
                format!("{p} is out of range: a percent in (0, 100]"),
            ),
            _ => {}
        }
        if let Some(MinAvailable::Percent(p)) = t.guard.min_available {
            if !(0.0..=100.0).contains(&p) {
                err(
                    format!("{at}.guard.min-available"),
                    format!("{p}% is out of range: a percent in [0, 100]"),
                );
            }
        }
    }

    let probes = check_probes(c, &mut err);
    for (i, a) in c.abort_when.iter().enumerate() {
        if let AbortCondition::ProbeFails(p) = a {
            if !probes.contains(p.probe.as_str()) {
                err(
                    format!("abort-when[{i}].probe-fails.probe"),
                    format!(
                        "unknown probe {:?}; the steady-state probes are {}",
                        p.probe,
                        list(probes.iter())
                    ),
                );
            }
        }
        if matches!(a, AbortCondition::SteadyStateFailsFor(_)) && c.steady_state.is_empty() {
            err(
                format!("abort-when[{i}]"),
                "steady-state-fails-for needs steady-state probes".into(),
            );
        }
    }

    check_steps(c, ctx, &mut err);

    if let Some(s) = &c.schedule {
        if let Err(e) = crate::campaign::schedule::parse_cron(s) {
            err("schedule".into(), e);
        }
    }
    if c.settings.probe_interval.get().is_zero() {
        err(
            "settings.probe-interval".into(),
            "must be more than zero".into(),
        );
    }
    if c.settings.task_timeout.get().is_zero() {
        err(
            "settings.task-timeout".into(),
            "must be more than zero".into(),
        );
    }
    out
}

fn check_probes(c: &Campaign, err: &mut impl FnMut(String, String)) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, p) in c.steady_state.iter().enumerate() {
        let at = format!("steady-state[{i}]");
        if p.name.trim().is_empty() {
            err(format!("{at}.name"), "must not be empty".into());
        } else if !names.insert(p.name.clone()) {
            err(
                format!("{at}.name"),
                format!("probe {:?} is defined twice", p.name),
            );
        }
        check_probe(c, p, &at, err);
    }
    names
}

fn check_probe(c: &Campaign, p: &Probe, at: &str, err: &mut impl FnMut(String, String)) {
    let kinds = [p.http.is_some(), p.tcp.is_some(), p.exec.is_some()]
        .iter()
        .filter(|k| **k)
        .count();
    if kinds != 1 {
        err(
            at.to_owned(),
            format!("a probe has exactly one of http, tcp or exec ({kinds} given)"),
        );
    }
    if let Some(h) = &p.http {
        if let Err(m) = crate::campaign::probes::parse_http_url(&h.url) {
            err(format!("{at}.http.url"), m);
        }
    }
    if let Some(t) = &p.tcp {
        if crate::campaign::probes::split_host_port(&t.address).is_none() {
            err(
                format!("{at}.tcp.address"),
                format!("{:?} is not host:port", t.address),
            );
        }
    }
    if let Some(e) = &p.exec {
        if e.command.argv().iter().all(|w| w.trim().is_empty()) {
            err(format!("{at}.exec.command"), "must not be empty".into());
        }
        if let Some(t) = &e.target {
            if !c.targets.contains_key(t) {
                err(
                    format!("{at}.exec.target"),
                    format!(
                        "unknown target {t:?}; the targets are {}",
                        list(c.targets.keys())
                    ),
                );
            }
        }
    }
}

fn check_steps(c: &Campaign, ctx: &Context<'_>, err: &mut impl FnMut(String, String)) {
    if c.steps.is_empty() {
        err("steps".into(), "at least one step is needed".into());
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in c.steps.iter().enumerate() {
        if s.name.trim().is_empty() {
            err(format!("steps[{i}].name"), "must not be empty".into());
        } else if let Some(first) = names.insert(&s.name, i) {
            err(
                format!("steps[{i}].name"),
                format!("step {:?} is already steps[{first}]", s.name),
            );
        }
    }
    for (i, s) in c.steps.iter().enumerate() {
        let at = format!("steps[{i}]");
        let plugin: Option<Arc<dyn Plugin>> = match ctx.plugins.get(&s.plugin) {
            Ok(p) => Some(p),
            Err(_) => {
                let known = ctx
                    .plugins
                    .list(&Default::default())
                    .map(|ms| ms.into_iter().map(|m| m.name).collect::<Vec<_>>())
                    .unwrap_or_default();
                err(
                    format!("{at}.plugin"),
                    format!(
                        "unknown plugin {:?}; the node has {}",
                        s.plugin,
                        list(known.iter())
                    ),
                );
                None
            }
        };
        let target = c.targets.get(&s.target);
        if target.is_none() {
            err(
                format!("{at}.target"),
                format!(
                    "unknown target {:?}; the targets are {}",
                    s.target,
                    list(c.targets.keys())
                ),
            );
        }
        if let Some(p) = &plugin {
            let config = ire_core::PluginConfig(s.config.clone());
            if let Err(e) = p.validate_config(&config) {
                let field = config_field(&e)
                    .map(|f| format!("{at}.config.{f}"))
                    .unwrap_or_else(|| format!("{at}.config"));
                err(field, message_of(&e));
            }
            if let (Some(d), false) = (s.duration, is_sustained(p.as_ref())) {
                err(
                    format!("{at}.duration"),
                    format!(
                        "plugin {} is an action (nothing stays to revert); duration {d} applies to sustained faults",
                        s.plugin
                    ),
                );
            }
            if let (Some(t), Some(adapters)) = (target, ctx.adapters) {
                if let Some(info) = adapters.get(&t.adapter) {
                    let md = p.metadata();
                    let missing: Vec<&String> = md
                        .required_capabilities
                        .iter()
                        .filter(|c| c.as_str() != ire_core::plugin::requirement::ADMIN)
                        .filter(|c| !info.has_capability(c))
                        .collect();
                    if !missing.is_empty() {
                        err(
                            format!("{at}.plugin"),
                            format!(
                                "plugin {} needs {} from its adapter; adapter {} ({}) offers {}",
                                s.plugin,
                                list(missing.iter()),
                                t.adapter,
                                info.environment,
                                list(info.capabilities.iter())
                            ),
                        );
                    }
                }
            }
        }
        if let Some(d) = s.duration {
            if d.get().is_zero() {
                err(format!("{at}.duration"), "must be more than zero".into());
            }
        }
        if let Some(t) = s.timeout {
            if t.get().is_zero() {
                err(format!("{at}.timeout"), "must be more than zero".into());
            }
        }
        if s.retries.is_some() && s.on_error != OnError::Retry {
            err(
                format!("{at}.retries"),
                "retries apply only with on-error: retry".into(),
            );
        }
        if let Some(deps) = &s.depends_on {
            for (j, d) in deps.iter().enumerate() {
                if d == &s.name {
                    err(
                        format!("{at}.depends-on[{j}]"),
                        "a step cannot depend on itself".into(),
                    );
                } else if !names.contains_key(d.as_str()) {
                    err(
                        format!("{at}.depends-on[{j}]"),
                        format!("unknown step {d:?}; the steps are {}", list(names.keys())),
                    );
                }
            }
        }
    }
    if let Some(cycle) = find_cycle(c) {
        let first = cycle[0].clone();
        let i = c.steps.iter().position(|s| s.name == first).unwrap_or(0);
        err(
            format!("steps[{i}].depends-on"),
            format!("depends-on forms a cycle: {}", cycle.join(" -> ")),
        );
    }
}

/// A cycle among the steps' dependencies, as `a -> b -> a`.
fn find_cycle(c: &Campaign) -> Option<Vec<String>> {
    let names: BTreeSet<&str> = c.steps.iter().map(|s| s.name.as_str()).collect();
    let graph: BTreeMap<String, Vec<String>> = c
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let deps = c
                .dependencies(i)
                .into_iter()
                .filter(|d| names.contains(d.as_str()) && d != &s.name)
                .collect();
            (s.name.clone(), deps)
        })
        .collect();
    ire_actors::registry::find_cycle(&graph)
}

/// A field path inside a plugin's config named by its validation error, when it names one
/// (`config of plugin kill field signal`, `config.latency`, a JSON pointer `/latency`).
fn config_field(e: &Error) -> Option<String> {
    let Error::Invalid { field, .. } = e.root() else {
        return None;
    };
    let f = field.trim();
    let f = f
        .rsplit_once(" field ")
        .map(|(_, path)| path)
        .or_else(|| f.strip_prefix("config."))
        .or_else(|| f.strip_prefix('/'))
        .filter(|r| !r.is_empty() && *r != ".")?;
    Some(f.trim_start_matches('/').replace('/', "."))
}

fn message_of(e: &Error) -> String {
    e.chain_message()
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn list<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: std::fmt::Display,
{
    let v: Vec<String> = items.into_iter().map(|s| s.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Parses and validates: the campaign, or every problem found.
pub fn check(
    source: &Source,
    ctx: &Context<'_>,
) -> std::result::Result<Campaign, super::parse::Diagnostics> {
    let campaign = super::parse::parse(source).map_err(|d| super::parse::Diagnostics(vec![d]))?;
    let problems = validate(source, &campaign, ctx);
    if problems.is_empty() {
        Ok(campaign)
    } else {
        Err(super::parse::Diagnostics(problems))
    }
}
