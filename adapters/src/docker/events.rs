//! Watching containers through Docker's event stream (no polling).
//!
//! One `/events` request per watch, filtered by Docker to container events of the actions
//! that change a container and to the filter's labels. The phase reported comes from the
//! event itself (a `die` is reported as stopped even when a restart policy has already
//! restarted the container by the time it is inspected), so no death is missed.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use chrono::Utc;
use futures::StreamExt;
use ire_core::resource::phase;
use ire_core::{Labels, ResourceEvent, ResourceEventType, ResourceFilter, Result};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::convert::{to_resource, ContainerView};
use super::filters::server_filter;

/// The container actions that change what a resource looks like.
const ACTIONS: &[&str] = &[
    "create",
    "start",
    "restart",
    "die",
    "stop",
    "kill",
    "pause",
    "unpause",
    "destroy",
    "oom",
    "rename",
    "update",
    "health_status",
];

/// Event attributes that are not container labels.
const NON_LABEL_ATTRIBUTES: &[&str] = &["name", "image", "exitCode", "signal", "oldName"];

/// How many times a broken event stream is reopened (with `since`) before the watch
/// reports the error and ends.
const MAX_RECONNECTS: u32 = 5;

/// What a watch needs, moved into its task.
pub(crate) struct Watch {
    pub docker: Docker,
    pub adapter: String,
    pub filter: ResourceFilter,
    pub cancel: CancellationToken,
    /// The daemon's clock when the watch was asked for, as `secs.nanos`: events from then
    /// on are delivered even if the request reaches the daemon a little later.
    pub since: String,
}

/// Runs the watch until the receiver is dropped, the adapter is closed, or the stream
/// breaks for good; events go to `tx`.
pub(crate) async fn run(w: Watch, tx: mpsc::Sender<Result<ResourceEvent>>) {
    let server = server_filter(&w.filter);
    let mut filters: HashMap<String, Vec<String>> = HashMap::new();
    filters.insert("type".into(), vec!["container".into()]);
    filters.insert(
        "event".into(),
        ACTIONS.iter().map(|a| (*a).to_owned()).collect(),
    );
    if let Some(labels) = server.filters.get("label") {
        filters.insert("label".into(), labels.clone());
    }
    let filter = w.filter.without_page();
    let mut since = w.since.clone();
    let mut last_nano: i64 = 0;
    let mut failures = 0u32;
    loop {
        let opts = EventsOptions {
            since: Some(since.clone()),
            until: None,
            filters: Some(filters.clone()),
        };
        let mut events = w.docker.events(Some(opts));
        let err = loop {
            let next = tokio::select! {
                _ = w.cancel.cancelled() => return,
                _ = tx.closed() => return,
                next = events.next() => next,
            };
            match next {
                None => break None,
                Some(Err(e)) => break Some(e),
                Some(Ok(ev)) => {
                    failures = 0;
                    let nano = ev.time_nano.unwrap_or(0);
                    // A reopened stream replays from `since`: skip what was delivered.
                    if nano != 0 && nano <= last_nano {
                        continue;
                    }
                    last_nano = last_nano.max(nano);
                    if let Some(event) = to_event(&w, ev).await {
                        if filter.matches(&event.resource) {
                            crate::telemetry::watch_event(
                                super::ENVIRONMENT,
                                &w.adapter,
                                event.type_,
                            );
                            if tx.send(Ok(event)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        };
        failures += 1;
        if last_nano > 0 {
            since = format!(
                "{}.{:09}",
                last_nano / 1_000_000_000,
                last_nano % 1_000_000_000
            );
        }
        if failures > MAX_RECONNECTS {
            let e = match err {
                Some(e) => super::error::from_bollard(e, "event stream", "/events"),
                None => ire_core::Error::unavailable(
                    "docker event stream",
                    std::io::Error::other("the daemon closed the event stream"),
                ),
            };
            let _ = tx.send(Err(e)).await;
            return;
        }
        tracing::warn!(component = "docker-adapter", failures, error = ?err, "event stream broke; reopening");
        crate::telemetry::watch_reconnect(super::ENVIRONMENT, &w.adapter);
        tokio::select! {
            _ = w.cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))) => {}
        }
    }
}

/// The resource event for one Docker event, or `None` for an event of no container.
async fn to_event(w: &Watch, ev: EventMessage) -> Option<ResourceEvent> {
    let action = ev.action.clone().unwrap_or_default();
    let actor = ev.actor.clone().unwrap_or_default();
    let id = actor.id.clone()?;
    let attrs = actor.attributes.clone().unwrap_or_default();
    // `health_status: healthy` -> `health_status`.
    let verb = action
        .split(':')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();

    let type_ = match verb.as_str() {
        "create" => ResourceEventType::Added,
        "destroy" => ResourceEventType::Deleted,
        _ => ResourceEventType::Modified,
    };
    let mut view = if verb == "destroy" {
        None
    } else {
        w.docker
            .inspect_container(&id, None)
            .await
            .ok()
            .map(ContainerView::from)
    };
    let inspected = view.is_some();
    let view = view.get_or_insert_with(|| view_from_attributes(&id, &attrs));
    if let Some(code) = attrs.get("exitCode").and_then(|c| c.parse().ok()) {
        view.exit_code = Some(code);
    }
    let mut resource = match to_resource(&w.adapter, view.clone()) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(component = "docker-adapter", resource_id = %id, error = %e, "event of a container without a valid key");
            return None;
        }
    };
    let forced_phase = match verb.as_str() {
        "create" => Some(phase::PENDING),
        "start" | "restart" | "unpause" => Some(phase::RUNNING),
        "pause" => Some(phase::PAUSED),
        "die" | "stop" => Some(phase::STOPPED),
        "destroy" => Some(phase::DELETED),
        _ if !inspected => Some(phase::UNKNOWN),
        _ => None,
    };
    if let Some(p) = forced_phase {
        resource.status.phase = p.to_owned();
    }
    if verb == "die" {
        if let Some(code) = view.exit_code {
            resource.status.reason = format!("ExitCode{code}");
        }
    }
    if verb == "oom" {
        resource.status.reason = "OOMKilled".into();
    }
    resource
        .annotations
        .insert("docker.event".into(), action.clone());
    Some(ResourceEvent {
        type_,
        resource,
        observed_at: Utc::now(),
    })
}

/// A container as far as an event's attributes describe it (all labels, name, image).
fn view_from_attributes(id: &str, attrs: &HashMap<String, String>) -> ContainerView {
    let labels: Labels = attrs
        .iter()
        .filter(|(k, _)| !NON_LABEL_ATTRIBUTES.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    ContainerView {
        id: id.to_owned(),
        name: attrs.get("name").cloned().unwrap_or_else(|| id.to_owned()),
        image: attrs.get("image").cloned().unwrap_or_default(),
        labels,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_become_labels_without_docker_fields() {
        let attrs: HashMap<String, String> = [
            ("name", "shop_redis_1"),
            ("image", "redis"),
            ("exitCode", "137"),
            ("com.docker.compose.project", "shop"),
            ("tier", "cache"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let v = view_from_attributes("abc", &attrs);
        assert_eq!(v.name, "shop_redis_1");
        assert_eq!(v.image, "redis");
        assert_eq!(v.labels.len(), 2);
        assert_eq!(v.labels["tier"], "cache");
    }
}
