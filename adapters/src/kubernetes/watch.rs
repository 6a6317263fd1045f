//! Watching with kube-runtime's `watcher` (seed property 97): the API server's watch
//! stream, resumed from the last resource version, relisting (page by page) when the
//! version has expired, with bookmarks, and retried with backoff.
//!
//! The initial list only primes the watch: `watch_resources` returns once it is done, and
//! the stream then reports changes. After a relist, the difference with what was known is
//! reported (added, modified, and deleted objects), so nothing is missed across a gap.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::time::Duration;

use chrono::Utc;
use futures::stream::{self, BoxStream, StreamExt};
use ire_core::{
    Error, Resource, ResourceEvent, ResourceEventStream, ResourceEventType, ResourceFilter, Result,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use serde::de::DeserializeOwned;

use super::convert::{
    deployment_to_resource, pod_to_resource, statefulset_to_resource, WorkloadKind,
};
use super::pages::kinds_for;
use super::selector::server_selectors;
use super::Inner;

/// How long the initial list of a watch may take.
const INITIAL_LIST_TIMEOUT: Duration = Duration::from_secs(60);

type Convert<K> = fn(&str, &K) -> Result<Resource>;

/// What a watch has seen, by UID, to turn watcher events into changes.
struct WatchState<K> {
    adapter: String,
    filter: ResourceFilter,
    convert: Convert<K>,
    known: HashMap<String, Resource>,
    relisting: Option<HashSet<String>>,
    primed: bool,
}

impl<K> WatchState<K> {
    fn event(type_: ResourceEventType, resource: Resource) -> ResourceEvent {
        ResourceEvent {
            type_,
            resource,
            observed_at: Utc::now(),
        }
    }

    fn resource(&self, obj: &K) -> Option<Resource> {
        match (self.convert)(&self.adapter, obj) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(component = "kubernetes-adapter", error = %e, "skipping an object the adapter cannot map");
                None
            }
        }
    }

    /// A create or update: Added, Modified, or Deleted when it no longer matches.
    fn upsert(&mut self, r: Resource, out: &mut Vec<ResourceEvent>) {
        let matches = self.filter.matches(&r);
        match (self.known.contains_key(&r.id), matches) {
            (false, false) => {}
            (true, false) => {
                self.known.remove(&r.id);
                out.push(Self::event(ResourceEventType::Deleted, r));
            }
            (known, true) => {
                let unchanged = self.known.get(&r.id).is_some_and(|old| {
                    old.metadata.get("resourceVersion") == r.metadata.get("resourceVersion")
                });
                self.known.insert(r.id.clone(), r.clone());
                if !unchanged {
                    let t = if known {
                        ResourceEventType::Modified
                    } else {
                        ResourceEventType::Added
                    };
                    out.push(Self::event(t, r));
                }
            }
        }
    }

    fn apply(&mut self, ev: Event<K>) -> Vec<ResourceEvent> {
        let mut out = Vec::new();
        match ev {
            Event::Init => self.relisting = Some(HashSet::new()),
            Event::InitApply(obj) => {
                if let Some(r) = self.resource(&obj) {
                    if let Some(seen) = self.relisting.as_mut() {
                        seen.insert(r.id.clone());
                    }
                    if self.primed {
                        self.upsert(r, &mut out);
                    } else if self.filter.matches(&r) {
                        self.known.insert(r.id.clone(), r);
                    }
                }
            }
            Event::InitDone => {
                if let Some(seen) = self.relisting.take() {
                    if self.primed {
                        let gone: Vec<String> = self
                            .known
                            .keys()
                            .filter(|id| !seen.contains(*id))
                            .cloned()
                            .collect();
                        for id in gone {
                            if let Some(r) = self.known.remove(&id) {
                                out.push(Self::event(ResourceEventType::Deleted, r));
                            }
                        }
                    }
                }
                self.primed = true;
            }
            Event::Apply(obj) => {
                if let Some(r) = self.resource(&obj) {
                    self.upsert(r, &mut out);
                }
            }
            Event::Delete(obj) => {
                if let Some(r) = self.resource(&obj) {
                    let known = self.known.remove(&r.id).is_some();
                    if known || self.filter.matches(&r) {
                        out.push(Self::event(ResourceEventType::Deleted, r));
                    }
                }
            }
        }
        out
    }
}

fn watch_error(e: watcher::Error) -> Error {
    Error::unavailable("watching the Kubernetes API server", e)
}

/// A primed watch of one kind.
async fn watch_kind<K>(
    inner: &Inner,
    kind: WorkloadKind,
    filter: &ResourceFilter,
    convert: Convert<K>,
) -> Result<BoxStream<'static, ResourceEvent>>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    let sel = server_selectors(filter, kind)?;
    if sel.matches_nothing {
        return Ok(stream::empty().boxed());
    }
    let config = watcher::Config {
        label_selector: sel.label_selector,
        field_selector: sel.field_selector,
        page_size: Some(inner.page_size),
        ..watcher::Config::default()
    };
    let mut raw = watcher(inner.api::<K>(inner.list_scope()), config)
        .default_backoff()
        .boxed();
    let mut state = WatchState {
        adapter: inner.name.clone(),
        filter: filter.clone(),
        convert,
        known: HashMap::new(),
        relisting: None,
        primed: false,
    };
    let primed = tokio::time::timeout(INITIAL_LIST_TIMEOUT, async {
        loop {
            match raw.next().await {
                Some(Ok(ev)) => {
                    let done = matches!(ev, Event::InitDone);
                    state.apply(ev);
                    if done {
                        return Ok(());
                    }
                }
                Some(Err(e)) => return Err(watch_error(e)),
                None => {
                    return Err(Error::unavailable(
                        "watching the Kubernetes API server",
                        std::io::Error::other("the watch ended during its initial list"),
                    ))
                }
            }
        }
    })
    .await;
    match primed {
        Ok(r) => r?,
        Err(_) => {
            return Err(Error::Timeout {
                operation: format!("initial list of a {} watch", kind.as_str()),
                after: INITIAL_LIST_TIMEOUT,
            })
        }
    }
    let adapter = inner.name.clone();
    Ok(raw
        .filter_map(move |ev| {
            let out = match ev {
                Ok(ev) => state.apply(ev),
                Err(e) => {
                    // The watcher retries with backoff and relists if needed; the relist's
                    // difference is reported, so the stream goes on.
                    tracing::warn!(component = "kubernetes-adapter", adapter = %adapter, error = %e, "watch interrupted; retrying");
                    Vec::new()
                }
            };
            futures::future::ready(Some(stream::iter(out)))
        })
        .flatten()
        .boxed())
}

impl Inner {
    /// A watch of every kind the filter lists, returned once each is primed.
    pub(crate) async fn watch(&self, filter: &ResourceFilter) -> Result<ResourceEventStream> {
        let mut streams = Vec::new();
        for kind in kinds_for(filter) {
            let s = match kind {
                WorkloadKind::Pod => watch_kind::<Pod>(self, kind, filter, pod_to_resource).await?,
                WorkloadKind::Deployment => {
                    watch_kind::<Deployment>(self, kind, filter, deployment_to_resource).await?
                }
                WorkloadKind::StatefulSet => {
                    watch_kind::<StatefulSet>(self, kind, filter, statefulset_to_resource).await?
                }
            };
            streams.push(s);
        }
        let closed = self.closed.clone();
        Ok(stream::select_all(streams)
            .map(Ok)
            .take_until(async move { closed.cancelled().await })
            .boxed())
    }
}
