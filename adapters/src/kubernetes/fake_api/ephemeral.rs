//! Ephemeral containers: the `pods/ephemeralcontainers` subresource, checked as the real API
//! server checks it (only `spec.ephemeralContainers` changes, existing ones are immutable and
//! never removed, names are unique in the pod), and what the fake kubelet does with them.
//!
//! The fake kubelet never runs an ephemeral container's command (it would run on this
//! machine, not in a pod): a test says what becomes of each new one ([`Fate`], default
//! running) and what an exec into one answers ([`ExecOutcome`], default exit 0).

use std::sync::Arc;

use serde_json::{json, Value};

use super::store::{now, ApiError, PODS};

/// What becomes of a new ephemeral container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// It runs (until a test or an exec ends it).
    Running,
    /// It ran and exited with this code and termination message.
    Terminated {
        /// Exit code.
        exit_code: i32,
        /// What it wrote to its termination log.
        message: String,
    },
}

/// What an exec into an ephemeral container answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutcome {
    /// The command's exit code.
    pub exit_code: i32,
    /// Its standard output.
    pub stdout: String,
    /// The container's fate after the command (a command that stops its main process).
    pub then: Option<Fate>,
}

/// Decides the fate of a new ephemeral container from its spec.
pub type FateHook = Arc<dyn Fn(&Value) -> Fate + Send + Sync>;
/// Answers an exec into an ephemeral container: (container name, command).
pub type ExecHook = Arc<dyn Fn(&str, &[String]) -> ExecOutcome + Send + Sync>;

/// The fake kubelet's behaviour for ephemeral containers.
#[derive(Clone, Default)]
pub struct Behavior {
    /// The fate of new containers (default: running).
    pub fate: Option<FateHook>,
    /// The answer to execs (default: exit 0, no output).
    pub exec: Option<ExecHook>,
}

/// The status the kubelet reports for a container with this fate.
pub fn status(container: &Value, fate: &Fate) -> Value {
    let state = match fate {
        Fate::Running => json!({"running": {"startedAt": now()}}),
        Fate::Terminated { exit_code, message } => json!({"terminated": {
            "exitCode": exit_code,
            "reason": if *exit_code == 0 { "Completed" } else { "Error" },
            "message": message,
            "startedAt": now(),
            "finishedAt": now(),
        }}),
    };
    json!({
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": false,
        "restartCount": 0,
        "state": state,
    })
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// Checks a replacement of `old`'s ephemeral containers; returns the new containers.
pub fn check(old: &Value, new: &Value) -> Result<Vec<Value>, ApiError> {
    let name = old["metadata"]["name"].as_str().unwrap_or("");
    let invalid = |m: String| ApiError::invalid(PODS, name, m);
    let mut old_spec = old["spec"].clone();
    let mut new_spec = new["spec"].clone();
    let old_eph = old_spec["ephemeralContainers"].take();
    let new_eph = new_spec["ephemeralContainers"].take();
    if old_spec != new_spec {
        return Err(invalid(
            "spec: Forbidden: only spec.ephemeralContainers may change through the \
             ephemeralcontainers subresource"
                .into(),
        ));
    }
    let old_list: Vec<Value> = old_eph.as_array().cloned().unwrap_or_default();
    let new_list: Vec<Value> = new_eph.as_array().cloned().unwrap_or_default();
    for o in &old_list {
        match new_list.iter().find(|n| n["name"] == o["name"]) {
            None => {
                return Err(invalid(format!(
                    "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"{}\" may not be removed",
                    o["name"].as_str().unwrap_or("")
                )))
            }
            Some(n) if n != o => {
                return Err(invalid(format!(
                    "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"{}\" may not be changed",
                    o["name"].as_str().unwrap_or("")
                )))
            }
            Some(_) => {}
        }
    }
    let mut taken = names(&old["spec"]["containers"]);
    taken.extend(names(&old["spec"]["initContainers"]));
    taken.extend(names(&old_eph));
    let mut added = Vec::new();
    for (i, c) in new_list.iter().enumerate() {
        let n = c["name"].as_str().unwrap_or("");
        if old_list.iter().any(|o| o["name"] == c["name"]) {
            continue;
        }
        if n.is_empty() || c["image"].as_str().unwrap_or("").is_empty() {
            return Err(invalid(format!(
                "spec.ephemeralContainers[{i}]: Required value: name and image"
            )));
        }
        if taken.iter().any(|t| t == n) {
            return Err(invalid(format!(
                "spec.ephemeralContainers[{i}].name: Duplicate value: \"{n}\""
            )));
        }
        taken.push(n.to_owned());
        added.push(c.clone());
    }
    Ok(added)
}

/// Sets the state of `container` in the pod's ephemeral container statuses.
pub fn set_state(pod: &mut Value, container: &str, fate: &Fate) -> bool {
    let Some(spec) = pod["spec"]["ephemeralContainers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == container))
        .cloned()
    else {
        return false;
    };
    let s = status(&spec, fate);
    let statuses = &mut pod["status"]["ephemeralContainerStatuses"];
    if !statuses.is_array() {
        *statuses = json!([]);
    }
    let list = statuses.as_array_mut().expect("an array");
    match list.iter_mut().find(|x| x["name"] == container) {
        Some(x) => *x = s,
        None => list.push(s),
    }
    true
}

/// True when `container` is one of the pod's ephemeral containers and is running.
pub fn is_running(pod: &Value, container: &str) -> Option<bool> {
    let known = names(&pod["spec"]["ephemeralContainers"])
        .iter()
        .any(|n| n == container);
    if !known {
        return None;
    }
    Some(
        pod["status"]["ephemeralContainerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["name"] == container && !s["state"]["running"].is_null()),
    )
}
