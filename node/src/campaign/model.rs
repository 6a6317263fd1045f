//! The campaign file format: what an operator writes (see `docs/campaigns.md`).
//!
//! Every struct denies unknown fields, so a typo is an error naming the field and its line
//! rather than a setting silently ignored. Durations are humantime strings (`30s`, `1m30s`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use ire_core::{LabelSelector, Labels, ResourceFilter, SelectorRequirement};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A campaign: targets, steady-state probes, abort conditions and steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Campaign {
    /// The campaign's name (reports, the store).
    pub name: String,
    /// What it tests, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Named groups of resources the steps act on.
    pub targets: BTreeMap<String, Target>,
    /// Probes that must pass before the first step, and are watched during and after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steady_state: Vec<Probe>,
    /// Conditions that stop the campaign and revert every active fault.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abort_when: Vec<AbortCondition>,
    /// What the campaign does, in order (see [`Step::depends_on`]).
    pub steps: Vec<Step>,
    /// A cron expression (5 or 6 fields) for campaigns that run on a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Timing of the executor for this campaign.
    #[serde(default)]
    pub settings: Settings,
}

impl Campaign {
    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The steps a step waits for: its `depends-on`, or the step before it when absent.
    pub fn dependencies(&self, index: usize) -> Vec<String> {
        match &self.steps[index].depends_on {
            Some(d) => d.clone(),
            None if index == 0 => Vec::new(),
            None => vec![self.steps[index - 1].name.clone()],
        }
    }
}

/// How the executor paces a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Time between two rounds of steady-state probes while the campaign runs.
    #[serde(default = "defaults::probe_interval")]
    pub probe_interval: Dur,
    /// How long a task waits for a resource whose lease someone else holds.
    #[serde(default = "defaults::lock_wait")]
    pub lock_wait: Dur,
    /// Tasks of one step that run at once (0: all of them).
    #[serde(default)]
    pub max_parallel: usize,
    /// How long, after the last step, the report waits for faulted resources to recover.
    #[serde(default = "defaults::recovery_timeout")]
    pub recovery_timeout: Dur,
    /// The time limit of one task's plugin lifecycle (a timed fault adds its duration).
    #[serde(default = "defaults::task_timeout")]
    pub task_timeout: Dur,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            probe_interval: defaults::probe_interval(),
            lock_wait: defaults::lock_wait(),
            max_parallel: 0,
            recovery_timeout: defaults::recovery_timeout(),
            task_timeout: defaults::task_timeout(),
        }
    }
}

mod defaults {
    use super::Dur;
    use std::time::Duration;

    pub fn probe_interval() -> Dur {
        Dur(Duration::from_secs(1))
    }
    pub fn lock_wait() -> Dur {
        Dur(Duration::from_secs(30))
    }
    pub fn recovery_timeout() -> Dur {
        Dur(Duration::from_secs(60))
    }
    pub fn task_timeout() -> Dur {
        Dur(Duration::from_secs(120))
    }
    pub fn probe_timeout() -> Dur {
        Dur(Duration::from_secs(2))
    }
}

/// A group of resources: which adapter reaches them, which ones, how many, and with what
/// safety margin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Target {
    /// The adapter instance (a name from the node's config: `local`, `docker`, ...).
    pub adapter: String,
    /// Only nodes of this region act on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Which resources of the adapter belong to the target.
    #[serde(default)]
    pub selector: Selector,
    /// How many of the matched resources a step picks.
    #[serde(default)]
    pub mode: Mode,
    /// What must stay available while faults are injected.
    #[serde(default)]
    pub guard: Guard,
}

/// Which resources: every criterion must hold (labels, expressions), and for lists, any
/// element (names, kinds, phases).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Selector {
    /// Labels that must be present with these values.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Set-based requirements (`{key, operator: In|NotIn|Exists|DoesNotExist, values}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expressions: Vec<SelectorRequirement>,
    /// Name patterns with `*` and `?` wildcards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Resource kinds (`container`, `pod`, `process`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Phases (`running`, `paused`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<String>,
}

impl Selector {
    /// The adapter filter this selector stands for.
    pub fn to_filter(&self) -> ResourceFilter {
        ResourceFilter {
            label_selector: LabelSelector {
                match_labels: self.labels.clone(),
                match_expressions: self.expressions.clone(),
            },
            kinds: self.kinds.clone(),
            statuses: self.phases.clone(),
            names: self.names.clone(),
            ..ResourceFilter::default()
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (k, v) in &self.labels {
            parts.push(format!("{k}={v}"));
        }
        for e in &self.expressions {
            parts.push(format!("{} {:?} {:?}", e.key, e.operator, e.values));
        }
        if !self.names.is_empty() {
            parts.push(format!("names {:?}", self.names));
        }
        if !self.kinds.is_empty() {
            parts.push(format!("kinds {:?}", self.kinds));
        }
        if !self.phases.is_empty() {
            parts.push(format!("phases {:?}", self.phases));
        }
        if parts.is_empty() {
            f.write_str("everything")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// The blast radius: how many of the matched resources a step acts on. Written `one`,
/// `all`, `{fixed: N}`, `{fixed-percent: P}` or `{random-max-percent: P}`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One resource, picked at random.
    #[default]
    One,
    /// Every matched resource.
    All,
    /// N resources, picked at random (fewer when fewer match).
    Fixed(u32),
    /// P percent of the matched resources, rounded down, at least one (see `docs/campaigns.md`).
    FixedPercent(f64),
    /// A random number of resources between one and P percent of the matched ones, rounded
    /// down (none when P percent is less than one resource).
    RandomMaxPercent(f64),
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Mode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one, all, {fixed: N}, {fixed-percent: P} or {random-max-percent: P}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Mode, E> {
                match v {
                    "one" => Ok(Mode::One),
                    "all" => Ok(Mode::All),
                    "fixed" | "fixed-percent" | "random-max-percent" => {
                        Err(E::custom(format!("{v} needs a value: {{{v}: N}}")))
                    }
                    other => Err(E::unknown_variant(
                        other,
                        &["one", "all", "fixed", "fixed-percent", "random-max-percent"],
                    )),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Mode, A::Error> {
                use serde::de::Error;
                let Some(key) = map.next_key::<String>()? else {
                    return Err(A::Error::custom("an empty mapping is not a mode"));
                };
                let mode = match key.as_str() {
                    "fixed" => Mode::Fixed(map.next_value()?),
                    "fixed-percent" => Mode::FixedPercent(map.next_value()?),
                    "random-max-percent" => Mode::RandomMaxPercent(map.next_value()?),
                    other => {
                        return Err(A::Error::unknown_variant(
                            other,
                            &["fixed", "fixed-percent", "random-max-percent"],
                        ))
                    }
                };
                if map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(A::Error::custom("a mode has exactly one key"));
                }
                Ok(mode)
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::One => f.write_str("one"),
            Mode::All => f.write_str("all"),
            Mode::Fixed(n) => write!(f, "fixed {n}"),
            Mode::FixedPercent(p) => write!(f, "fixed-percent {p}%"),
            Mode::RandomMaxPercent(p) => write!(f, "random-max-percent {p}%"),
        }
    }
}

/// The safety margin of a target.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Guard {
    /// Resources of the target that must stay healthy and unfaulted: a count (`2`) or a
    /// percent of the matched resources (`"50%"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<MinAvailable>,
}

/// `min-available`: a count or a percent of the matched resources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinAvailable {
    /// At least this many.
    Count(u32),
    /// At least this percent, rounded up.
    Percent(f64),
}

impl MinAvailable {
    /// The count for a target of `matched` resources (a percent is rounded up: the margin
    /// never shrinks by rounding).
    pub fn resolve(self, matched: usize) -> usize {
        match self {
            MinAvailable::Count(n) => n as usize,
            MinAvailable::Percent(p) => ((matched as f64) * p / 100.0).ceil() as usize,
        }
    }
}

impl fmt::Display for MinAvailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MinAvailable::Count(n) => write!(f, "{n}"),
            MinAvailable::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for MinAvailable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MinAvailable::Count(n) => s.serialize_u32(*n),
            MinAvailable::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for MinAvailable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = MinAvailable;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a count (2) or a percent (\"50%\")")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<MinAvailable, E> {
                u32::try_from(v)
                    .map(MinAvailable::Count)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<MinAvailable, E> {
                if v < 0 {
                    return Err(E::custom(format!("{v} is negative")));
                }
                self.visit_u64(v as u64)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MinAvailable, E> {
                let p = v
                    .trim()
                    .strip_suffix('%')
                    .and_then(|n| n.trim().parse::<f64>().ok())
                    .ok_or_else(|| {
                        E::custom(format!(
                            "{v:?} is neither a count nor a percent like \"50%\""
                        ))
                    })?;
                Ok(MinAvailable::Percent(p))
            }
        }
        d.deserialize_any(V)
    }
}

/// A steady-state probe: exactly one of `http`, `tcp` or `exec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Probe {
    /// Unique name among the probes.
    pub name: String,
    /// An HTTP request that must answer with an expected status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// A TCP connection that must open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    /// A command that must exit with the expected code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecProbe>,
}

/// An HTTP probe (plain `http://`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpProbe {
    /// The URL.
    pub url: String,
    /// The expected status codes (default: any 2xx or 3xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusCodes>,
    /// Text the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// How long the request may take.
    #[serde(default = "defaults::probe_timeout")]
    pub timeout: Dur,
}

/// One expected status code or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatusCodes {
    /// One code.
    One(u16),
    /// Any of these.
    Any(Vec<u16>),
}

impl StatusCodes {
    /// True when `code` is expected.
    pub fn accepts(&self, code: u16) -> bool {
        match self {
            StatusCodes::One(c) => *c == code,
            StatusCodes::Any(cs) => cs.contains(&code),
        }
    }
}

/// A TCP probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TcpProbe {
    /// `host:port`.
    pub address: String,
    /// How long the connection may take to open.
    #[serde(default = "defaults::probe_timeout")]
    pub timeout: Dur,
}

/// A command probe: run on the node, or in every resource of a target through its adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExecProbe {
    /// The program and its arguments (a single string runs through `sh -c`).
    pub command: Command,
    /// The exit code that means healthy.
    #[serde(default)]
    pub exit_code: i32,
    /// Run inside each resource of this target instead of on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// How long the command may take.
    #[serde(default = "defaults::probe_timeout")]
    pub timeout: Dur,
}

/// A command: a list of words, or one string for `sh -c`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Command {
    /// Run through `sh -c`.
    Shell(String),
    /// The program and its arguments.
    Argv(Vec<String>),
}

impl Command {
    /// The words to run.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
            Command::Argv(v) => v.clone(),
        }
    }
}

/// When the campaign stops early: every active fault is then reverted at once. Written
/// as a mapping with one key: `steady-state-fails-for: 30s`, `probe-fails: {probe: api,
/// for: 10s}` or `failed-tasks-over: 3`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AbortCondition {
    /// Some steady-state probe has failed without a pass for this long (`0s`: at once).
    SteadyStateFailsFor(Dur),
    /// The named probe has failed without a pass for this long.
    ProbeFails(ProbeFails),
    /// More than this many tasks of the campaign failed.
    FailedTasksOver(u32),
}

impl<'de> Deserialize<'de> for AbortCondition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const KINDS: &[&str] = &["steady-state-fails-for", "probe-fails", "failed-tasks-over"];
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AbortCondition;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a mapping with one of steady-state-fails-for, probe-fails, failed-tasks-over",
                )
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<AbortCondition, A::Error> {
                use serde::de::Error;
                let Some(key) = map.next_key::<String>()? else {
                    return Err(A::Error::custom(
                        "an empty mapping is not an abort condition",
                    ));
                };
                let c = match key.as_str() {
                    "steady-state-fails-for" => {
                        AbortCondition::SteadyStateFailsFor(map.next_value()?)
                    }
                    "probe-fails" => AbortCondition::ProbeFails(map.next_value()?),
                    "failed-tasks-over" => AbortCondition::FailedTasksOver(map.next_value()?),
                    other => return Err(A::Error::unknown_variant(other, KINDS)),
                };
                if map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(A::Error::custom("an abort condition has exactly one key"));
                }
                Ok(c)
            }
        }
        d.deserialize_map(V)
    }
}

/// `probe-fails: {probe: NAME, for: 10s}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProbeFails {
    /// The probe's name.
    pub probe: String,
    /// How long it must fail without a pass.
    #[serde(rename = "for", default = "zero")]
    pub for_: Dur,
}

fn zero() -> Dur {
    Dur(Duration::ZERO)
}

/// One step: a plugin run on the resources of a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Step {
    /// Unique name among the steps.
    pub name: String,
    /// The plugin (`kill`, `pause`, `network-delay`, `wait-healthy`, ...).
    pub plugin: String,
    /// The target it acts on.
    pub target: String,
    /// The plugin's config (checked against its schema).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub config: serde_json::Value,
    /// A sustained fault is held this long, then reverted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Dur>,
    /// Steps that must end first. Absent: the step before this one. `[]`: none (the step
    /// starts with the campaign).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
    /// When it runs, given how its dependencies ended.
    #[serde(default)]
    pub when: When,
    /// What its failure leads to.
    #[serde(default)]
    pub on_error: OnError,
    /// With `on-error: retry`: how many times failed tasks are tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Overrides the campaign's `settings.task-timeout` for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
}

impl Step {
    /// Retries for `on-error: retry` (2 when not given).
    pub fn retry_count(&self) -> u32 {
        match self.on_error {
            OnError::Retry => self.retries.unwrap_or(2),
            _ => 0,
        }
    }
}

/// When a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    /// Whatever its dependencies did.
    Always,
    /// When every dependency succeeded (or was skipped).
    #[default]
    OnSuccess,
    /// When some dependency failed.
    OnFailure,
}

/// What a failed step leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Record the failure; dependents decide with `when`.
    Continue,
    /// Stop the campaign and revert every active fault.
    #[default]
    Abort,
    /// Run the failed tasks again (`retries` times), then abort.
    Retry,
    /// Revert what the completed steps did, newest first, and stop.
    Rollback,
}

/// A duration written as humantime (`30s`, `1m30s`, `250ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s, 1m30s or 250ms")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                humantime::parse_duration(v.trim()).map(Dur).map_err(|e| {
                    E::custom(format!(
                        "{v:?} is not a duration ({e}); write e.g. 30s, 1m30s or 250ms"
                    ))
                })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "{v} has no unit; write e.g. {v}s or {v}ms"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                Err(E::custom(format!("{v} is not a duration; write e.g. 30s")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "{v} has no unit; write e.g. 1.5s as 1500ms"
                )))
            }
        }
        d.deserialize_any(V)
    }
}
