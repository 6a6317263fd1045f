//! The fake API server's objects, resource versions, watch history and a minimal
//! controller (workloads keep their pods at `spec.replicas`; a fake kubelet runs pods).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use super::selector::{ParsedFieldSelector, ParsedLabelSelector};

/// Pods, in the core group.
pub const PODS: &str = "pods";
/// Deployments, in apps/v1.
pub const DEPLOYMENTS: &str = "deployments";
/// StatefulSets, in apps/v1.
pub const STATEFULSETS: &str = "statefulsets";

/// How a served resource type is named on the wire.
#[derive(Debug, Clone, Copy)]
pub struct TypeInfo {
    /// The URL plural.
    pub plural: &'static str,
    /// The object's `kind`.
    pub kind: &'static str,
    /// The object's `apiVersion`.
    pub api_version: &'static str,
}

/// The types this fake serves.
pub fn type_info(plural: &str) -> Option<TypeInfo> {
    match plural {
        PODS => Some(TypeInfo {
            plural: PODS,
            kind: "Pod",
            api_version: "v1",
        }),
        DEPLOYMENTS => Some(TypeInfo {
            plural: DEPLOYMENTS,
            kind: "Deployment",
            api_version: "apps/v1",
        }),
        STATEFULSETS => Some(TypeInfo {
            plural: STATEFULSETS,
            kind: "StatefulSet",
            api_version: "apps/v1",
        }),
        _ => None,
    }
}

/// An error answered as a `Status` object with an HTTP code.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// The `reason` field (NotFound, AlreadyExists, Conflict, Invalid, BadRequest, Expired...).
    pub reason: &'static str,
    /// Human-readable message, worded as the real API server words it.
    pub message: String,
    /// `details` (name and kind of the object).
    pub details: Option<Value>,
}

impl ApiError {
    /// `404 NotFound` for an object.
    pub fn not_found(plural: &str, name: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{plural} \"{name}\" not found"),
            details: Some(json!({"name": name, "kind": plural})),
        }
    }

    /// `400 BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    /// `422 Invalid`.
    pub fn invalid(plural: &str, name: &str, message: impl Into<String>) -> Self {
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{plural} \"{name}\" is invalid: {}", message.into()),
            details: Some(json!({"name": name, "kind": plural})),
        }
    }

    /// The `Status` object the real API server answers with.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// One change, as kept for watches.
#[derive(Debug)]
pub struct StoredEvent {
    /// The resource version the change produced.
    pub rv: u64,
    /// Which type changed.
    pub plural: &'static str,
    /// ADDED, MODIFIED or DELETED.
    pub type_: &'static str,
    /// The object after the change (its last state for DELETED).
    pub object: Value,
    /// The object before the change, for selector transitions.
    pub previous: Option<Value>,
}

/// A request the server received, for tests to check what the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

type ObjKey = (&'static str, String, String);

/// Everything the fake API server knows.
pub struct Store {
    rv: u64,
    objects: BTreeMap<ObjKey, Value>,
    history: VecDeque<Arc<StoredEvent>>,
    history_cap: usize,
    /// Watches and continue tokens older than this get `410 Gone`.
    compacted_before: u64,
    events: broadcast::Sender<Arc<StoredEvent>>,
    requests: VecDeque<RecordedRequest>,
    /// Whether metrics.k8s.io is served (metrics-server installed).
    pub metrics_served: bool,
    pod_metrics: HashMap<(String, String), (String, String)>,
    signals: HashMap<(String, String), Vec<i32>>,
    counter: u64,
    watch_reset: tokio_util::sync::CancellationToken,
    /// What the fake kubelet does with ephemeral containers.
    pub ephemeral: super::ephemeral::Behavior,
}

/// Bounded request log, so a benchmark of many requests does not grow it without end.
const REQUEST_LOG_CAP: usize = 4096;

impl Store {
    /// An empty cluster.
    pub fn new(history_cap: usize) -> Self {
        let (events, _) = broadcast::channel(4096);
        Store {
            rv: 1000,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_cap,
            compacted_before: 0,
            events,
            requests: VecDeque::new(),
            metrics_served: true,
            pod_metrics: HashMap::new(),
            signals: HashMap::new(),
            counter: 0,
            watch_reset: tokio_util::sync::CancellationToken::new(),
            ephemeral: Default::default(),
        }
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Subscribes to changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.events.subscribe()
    }

    /// Records a request.
    pub fn record(&mut self, r: RecordedRequest) {
        if self.requests.len() == REQUEST_LOG_CAP {
            self.requests.pop_front();
        }
        self.requests.push_back(r);
    }

    /// The recorded requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.iter().cloned().collect()
    }

    /// Forgets the watch history: older resource versions now answer `410 Gone`.
    /// Open watches end too (as when an API server restarts), so clients resume from an
    /// expired version.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_before = self.rv + 1;
        self.watch_reset.cancel();
        self.watch_reset = tokio_util::sync::CancellationToken::new();
    }

    /// Cancelled when the watches open now must end.
    pub fn watch_reset(&self) -> tokio_util::sync::CancellationToken {
        self.watch_reset.clone()
    }

    /// Events after `rv` for a watch, or `None` when `rv` is too old (410 Gone).
    pub fn history_since(&self, rv: u64) -> Option<Vec<Arc<StoredEvent>>> {
        // Every event after `compacted_before - 1` is still kept.
        if rv + 1 < self.compacted_before {
            return None;
        }
        Some(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn unique(&mut self) -> String {
        self.counter += 1;
        let u = uuid::Uuid::new_v4().simple().to_string();
        format!("{}{:x}", &u[..5], self.counter % 16)
    }

    fn emit(
        &mut self,
        plural: &'static str,
        type_: &'static str,
        object: Value,
        previous: Option<Value>,
    ) {
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.rv);
        let ev = Arc::new(StoredEvent {
            rv,
            plural,
            type_,
            object,
            previous,
        });
        if self.history.len() == self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.compacted_before = self.compacted_before.max(old.rv + 1);
            }
        }
        self.history.push_back(ev.clone());
        // No receiver is fine: nobody watches.
        let _ = self.events.send(ev);
    }

    /// Stores a changed object under a new resource version and tells the watches.
    fn commit(&mut self, plural: &'static str, mut obj: Value, type_: &'static str) -> Value {
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = (plural, ns_of(&obj), name_of(&obj));
        let previous = self.objects.insert(key, obj.clone());
        self.emit(plural, type_, obj.clone(), previous);
        obj
    }

    /// One object.
    pub fn get(&self, plural: &'static str, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&(plural, ns.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(plural, name))
    }

    /// One page of a list: items, the continue token, and the list's resource version.
    #[allow(clippy::too_many_arguments)]
    pub fn list(
        &self,
        plural: &'static str,
        ns: Option<&str>,
        labels: &ParsedLabelSelector,
        fields: &ParsedFieldSelector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>, u64), ApiError> {
        use std::ops::Bound;
        let (list_rv, start) = match continue_token {
            Some(t) => {
                let (rv, rest) = t.split_once(':').ok_or_else(|| {
                    ApiError::bad_request(format!("continue key is not valid: {t:?}"))
                })?;
                let rv: u64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("continue key is not valid: {t:?}"))
                })?;
                if rv + 1 < self.compacted_before {
                    return Err(ApiError {
                        code: 410,
                        reason: "Expired",
                        message: "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
                        details: None,
                    });
                }
                let (ns, name) = rest.split_once('/').ok_or_else(|| {
                    ApiError::bad_request(format!("continue key is not valid: {t:?}"))
                })?;
                (
                    rv,
                    Bound::Excluded((plural, ns.to_owned(), name.to_owned())),
                )
            }
            None => (
                self.rv,
                Bound::Included((plural, ns.unwrap_or("").to_owned(), String::new())),
            ),
        };
        let mut items = Vec::new();
        let mut next = None;
        for ((p, ons, _), obj) in self.objects.range((start, Bound::Unbounded)) {
            if *p != plural {
                break;
            }
            if let Some(ns) = ns {
                if ons.as_str() > ns {
                    break;
                }
                if ons != ns {
                    continue;
                }
            }
            if !labels.matches(&labels_of(obj)) || !fields.matches(obj) {
                continue;
            }
            if limit.is_some_and(|l| items.len() == l) {
                // There is at least one more: the token points after the last one served.
                let last: &Value = items.last().expect("limit > 0");
                next = Some(format!("{list_rv}:{}/{}", ns_of(last), name_of(last)));
                break;
            }
            items.push(obj.clone());
        }
        Ok((items, next, list_rv))
    }

    /// Creates an object (`generateName` honoured), as the API server and kubelet would.
    pub fn create(
        &mut self,
        plural: &'static str,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let info = type_info(plural).expect("served type");
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        let mut name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
        if name.is_empty() {
            let prefix = obj["metadata"]["generateName"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    plural,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
            name = format!("{prefix}{}", self.unique());
        }
        if !valid_dns_name(&name) {
            return Err(ApiError::invalid(
                plural,
                &name,
                format!("metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"),
            ));
        }
        if self
            .objects
            .contains_key(&(plural, ns.to_owned(), name.clone()))
        {
            return Err(ApiError {
                code: 409,
                reason: "AlreadyExists",
                message: format!("{plural} \"{name}\" already exists"),
                details: Some(json!({"name": name, "kind": plural})),
            });
        }
        let containers = if plural == PODS {
            &obj["spec"]["containers"]
        } else {
            &obj["spec"]["template"]["spec"]["containers"]
        };
        if containers.as_array().is_none_or(|c| c.is_empty()) {
            return Err(ApiError::invalid(
                plural,
                &name,
                "spec.containers: Required value",
            ));
        }
        obj["apiVersion"] = json!(info.api_version);
        obj["kind"] = json!(info.kind);
        let meta = &mut obj["metadata"];
        meta["name"] = json!(name);
        meta["namespace"] = json!(ns);
        meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
        meta["creationTimestamp"] = json!(now());
        meta["generation"] = json!(1);
        if plural == PODS {
            run_pod(&mut obj);
        }
        let created = self.commit(plural, obj, "ADDED");
        if plural != PODS {
            self.reconcile(plural, ns, &name);
            return self.get(plural, ns, &name);
        }
        Ok(created)
    }

    /// Deletes an object. Pods with a grace period are marked terminating and returned
    /// with the period, for the caller to finish the delete when it has passed.
    pub fn delete(
        &mut self,
        plural: &'static str,
        ns: &str,
        name: &str,
        grace: Option<i64>,
    ) -> Result<(Value, Option<i64>), ApiError> {
        let obj = self.get(plural, ns, name)?;
        if plural == PODS {
            let grace = grace
                .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30);
            if grace > 0 {
                if obj["metadata"]["deletionTimestamp"].is_string() {
                    return Ok((obj, None));
                }
                let mut obj = obj;
                obj["metadata"]["deletionTimestamp"] = json!(now());
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                let obj = self.commit(plural, obj, "MODIFIED");
                return Ok((obj, Some(grace)));
            }
        }
        Ok((self.remove(plural, ns, name).expect("exists"), None))
    }

    /// Finishes a graceful pod delete, if the same pod (same uid) is still there.
    pub fn finish_delete(&mut self, ns: &str, name: &str, uid: &str) {
        let same = self
            .objects
            .get(&(PODS, ns.to_owned(), name.to_owned()))
            .is_some_and(|o| o["metadata"]["uid"] == uid);
        if same {
            self.remove(PODS, ns, name);
        }
    }

    fn remove(&mut self, plural: &'static str, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .remove(&(plural, ns.to_owned(), name.to_owned()))?;
        let rv = self.next_rv();
        let previous = obj.clone();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.emit(plural, "DELETED", obj.clone(), Some(previous));
        if plural == PODS {
            if let Some((owner_plural, owner)) = owner_of(&obj) {
                self.reconcile(owner_plural, ns, &owner);
            }
        } else {
            // Background propagation: the workload's pods go with it.
            let uid = obj["metadata"]["uid"].clone();
            let owned: Vec<String> = self
                .pods_in(ns)
                .filter(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid)
                .map(name_of)
                .collect();
            for p in owned {
                self.remove(PODS, ns, &p);
            }
        }
        Some(obj)
    }

    /// Replaces an object (PUT), checking `resourceVersion` and what may change.
    pub fn replace(
        &mut self,
        plural: &'static str,
        ns: &str,
        name: &str,
        new: Value,
    ) -> Result<Value, ApiError> {
        let old = self.get(plural, ns, name)?;
        if let Some(rv) = new["metadata"]["resourceVersion"].as_str() {
            if Some(rv) != old["metadata"]["resourceVersion"].as_str() {
                return Err(ApiError {
                    code: 409,
                    reason: "Conflict",
                    message: format!("Operation cannot be fulfilled on {plural} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
                    details: Some(json!({"name": name, "kind": plural})),
                });
            }
        }
        self.update(plural, ns, name, old, new)
    }

    /// Replaces a pod's ephemeral containers (PUT `pods/<name>/ephemeralcontainers`); the
    /// fake kubelet gives each new one its fate.
    pub fn replace_ephemeral(
        &mut self,
        ns: &str,
        name: &str,
        new: Value,
    ) -> Result<Value, ApiError> {
        let old = self.get(PODS, ns, name)?;
        if let Some(rv) = new["metadata"]["resourceVersion"].as_str() {
            if Some(rv) != old["metadata"]["resourceVersion"].as_str() {
                return Err(ApiError {
                    code: 409,
                    reason: "Conflict",
                    message: format!("Operation cannot be fulfilled on pods \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
                    details: Some(json!({"name": name, "kind": PODS})),
                });
            }
        }
        let added = super::ephemeral::check(&old, &new)?;
        let mut pod = old;
        pod["spec"]["ephemeralContainers"] = new["spec"]["ephemeralContainers"].clone();
        for c in &added {
            let fate = match &self.ephemeral.fate {
                Some(f) => f(c),
                None => super::ephemeral::Fate::Running,
            };
            super::ephemeral::set_state(&mut pod, c["name"].as_str().unwrap_or(""), &fate);
        }
        Ok(self.commit(PODS, pod, "MODIFIED"))
    }

    /// Sets an ephemeral container's state (it exited, or crashed).
    pub fn set_ephemeral_state(
        &mut self,
        ns: &str,
        name: &str,
        container: &str,
        fate: &super::ephemeral::Fate,
    ) -> Result<(), ApiError> {
        let mut pod = self.get(PODS, ns, name)?;
        if !super::ephemeral::set_state(&mut pod, container, fate) {
            return Err(ApiError::bad_request(format!(
                "pod {name} has no ephemeral container {container}"
            )));
        }
        self.commit(PODS, pod, "MODIFIED");
        Ok(())
    }

    /// Applies a JSON merge patch (RFC 7386).
    pub fn merge_patch(
        &mut self,
        plural: &'static str,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        let old = self.get(plural, ns, name)?;
        let mut new = old.clone();
        merge(&mut new, patch);
        self.update(plural, ns, name, old, new)
    }

    fn update(
        &mut self,
        plural: &'static str,
        ns: &str,
        name: &str,
        old: Value,
        mut new: Value,
    ) -> Result<Value, ApiError> {
        // Identity and server-set fields cannot be changed by a client.
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "ownerReferences",
        ] {
            new["metadata"][f] = old["metadata"][f].clone();
        }
        if let Some(m) = new["metadata"].as_object_mut() {
            m.retain(|_, v| !v.is_null());
        }
        new["status"] = old["status"].clone();
        if plural == PODS {
            let strip = |v: &Value| {
                let mut s = v["spec"].clone();
                if let Some(cs) = s["containers"].as_array_mut() {
                    for c in cs {
                        c["image"] = Value::Null;
                    }
                }
                s
            };
            if strip(&old) != strip(&new) {
                return Err(ApiError::invalid(
                    plural,
                    name,
                    "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                ));
            }
        } else {
            if new["spec"]["replicas"].as_i64().is_some_and(|r| r < 0) {
                return Err(ApiError::invalid(
                    plural,
                    name,
                    "spec.replicas: Invalid value: must be greater than or equal to 0",
                ));
            }
            if new["spec"] != old["spec"] {
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                new["metadata"]["generation"] = json!(generation);
            }
        }
        if new == old {
            return Ok(old);
        }
        let template_changed = plural != PODS && new["spec"]["template"] != old["spec"]["template"];
        let uid = old["metadata"]["uid"].clone();
        let updated = self.commit(plural, new, "MODIFIED");
        if plural != PODS {
            if template_changed {
                // A rollout: every pod of the old template is replaced.
                let old_pods: Vec<String> = self
                    .pods_in(ns)
                    .filter(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid)
                    .map(name_of)
                    .collect();
                for p in old_pods {
                    if let Some(mut o) = self.objects.remove(&(PODS, ns.to_owned(), p.clone())) {
                        let prev = o.clone();
                        let rv = self.next_rv();
                        o["metadata"]["resourceVersion"] = json!(rv.to_string());
                        self.emit(PODS, "DELETED", o, Some(prev));
                    }
                }
            }
            self.reconcile(plural, ns, name);
            return self.get(plural, ns, name);
        }
        Ok(updated)
    }

    fn pods_in<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .range((PODS, ns.to_owned(), String::new())..)
            .take_while(move |((p, n, _), _)| *p == PODS && n == ns)
            .map(|(_, v)| v)
    }

    /// The workload controller: creates or removes pods until `spec.replicas` run, and
    /// updates the workload's status.
    pub fn reconcile(&mut self, plural: &'static str, ns: &str, name: &str) {
        let Ok(workload) = self.get(plural, ns, name) else {
            return;
        };
        let uid = workload["metadata"]["uid"].clone();
        let desired = workload["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        let mut owned: Vec<Value> = self
            .pods_in(ns)
            .filter(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid)
            .cloned()
            .collect();
        let live = |p: &Value| !p["metadata"]["deletionTimestamp"].is_string();
        let stateful = plural == STATEFULSETS;
        // Statefulset pods are named by ordinal; missing ordinals are filled first.
        owned.sort_by_key(|p| ordinal(&name_of(p), name));
        let live_count = owned.iter().filter(|p| live(p)).count();
        if live_count > desired {
            let mut extra: Vec<String> = owned.iter().filter(|p| live(p)).map(name_of).collect();
            extra.drain(..desired);
            for p in extra.into_iter().rev() {
                self.remove(PODS, ns, &p);
            }
        } else {
            let hash = pod_template_hash(&workload);
            let mut ordinal_next = 0usize;
            for _ in live_count..desired {
                let pod_name = if stateful {
                    loop {
                        let candidate = format!("{name}-{ordinal_next}");
                        ordinal_next += 1;
                        if !self
                            .objects
                            .contains_key(&(PODS, ns.to_owned(), candidate.clone()))
                        {
                            break candidate;
                        }
                    }
                } else {
                    format!("{name}-{hash}-{}", self.unique())
                };
                let mut meta = workload["spec"]["template"]["metadata"].clone();
                if !meta.is_object() {
                    meta = json!({});
                }
                meta["name"] = json!(pod_name);
                let (owner_kind, owner_name) = if stateful {
                    meta["labels"]["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
                    ("StatefulSet", name.to_owned())
                } else {
                    meta["labels"]["pod-template-hash"] = json!(hash);
                    ("ReplicaSet", format!("{name}-{hash}"))
                };
                meta["ownerReferences"] = json!([{
                    "apiVersion": "apps/v1",
                    "kind": owner_kind,
                    "name": owner_name,
                    "uid": uid,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }]);
                let pod = json!({"metadata": meta, "spec": workload["spec"]["template"]["spec"]});
                // Owner and template were validated when the workload was created.
                let _ = self.create(PODS, ns, pod);
            }
        }
        let running = self
            .pods_in(ns)
            .filter(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid && live(p))
            .count();
        let mut updated = workload.clone();
        updated["status"] = json!({
            "observedGeneration": workload["metadata"]["generation"],
            "replicas": running,
            "readyReplicas": running,
            "availableReplicas": running,
            "updatedReplicas": running,
        });
        if updated["status"] != workload["status"] {
            self.commit(plural, updated, "MODIFIED");
        }
    }

    /// The fake kubelet received a signal for the pod's main process; a terminating
    /// signal restarts its container (restartCount + 1).
    pub fn signal(&mut self, ns: &str, name: &str, signal: i32) -> Result<(), ApiError> {
        let mut pod = self.get(PODS, ns, name)?;
        self.signals
            .entry((ns.to_owned(), name.to_owned()))
            .or_default()
            .push(signal);
        if [1, 2, 3, 6, 15].contains(&signal) {
            let rc = pod["status"]["containerStatuses"][0]["restartCount"]
                .as_i64()
                .unwrap_or(0);
            pod["status"]["containerStatuses"][0]["restartCount"] = json!(rc + 1);
            pod["status"]["containerStatuses"][0]["lastState"] = json!({"terminated": {"exitCode": 128 + signal, "reason": "Error", "finishedAt": now()}});
            self.commit(PODS, pod, "MODIFIED");
        }
        Ok(())
    }

    /// Signals the fake kubelet delivered to a pod's main process.
    pub fn signals_of(&self, ns: &str, name: &str) -> Vec<i32> {
        self.signals
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Sets what metrics-server reports for a pod (CPU and memory quantities).
    pub fn set_pod_metrics(&mut self, ns: &str, name: &str, cpu: &str, memory: &str) {
        self.pod_metrics.insert(
            (ns.to_owned(), name.to_owned()),
            (cpu.to_owned(), memory.to_owned()),
        );
    }

    /// The metrics.k8s.io `PodMetrics` of a pod.
    pub fn pod_metrics(&self, ns: &str, name: &str) -> Result<Value, ApiError> {
        let pod = self.get(PODS, ns, name).map_err(|_| ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("podmetrics.metrics.k8s.io \"{ns}/{name}\" not found"),
            details: Some(json!({"name": name, "group": "metrics.k8s.io", "kind": "pods"})),
        })?;
        let (cpu, mem) = self
            .pod_metrics
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
            .unwrap_or_else(|| ("0".into(), "0".into()));
        let containers: Vec<Value> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| {
                // The whole usage is reported on the first container.
                let (cpu, mem) = if i == 0 {
                    (cpu.as_str(), mem.as_str())
                } else {
                    ("0", "0")
                };
                json!({"name": c["name"], "usage": {"cpu": cpu, "memory": mem}})
            })
            .collect();
        Ok(json!({
            "kind": "PodMetrics",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": now(), "labels": pod["metadata"]["labels"]},
            "timestamp": now(),
            "window": "15s",
            "containers": containers,
        }))
    }

    /// Sets a pod's phase (as its kubelet would report it).
    pub fn set_pod_phase(&mut self, ns: &str, name: &str, phase: &str) -> Result<(), ApiError> {
        let mut pod = self.get(PODS, ns, name)?;
        pod["status"]["phase"] = json!(phase);
        let ready = if phase == "Running" { "True" } else { "False" };
        pod["status"]["conditions"] =
            json!([{"type": "Ready", "status": ready, "lastTransitionTime": now()}]);
        self.commit(PODS, pod, "MODIFIED");
        Ok(())
    }

    /// Sets a pod's `terminationGracePeriodSeconds` (as if it had been created with it).
    pub fn set_pod_grace(&mut self, ns: &str, name: &str, secs: i64) -> Result<(), ApiError> {
        let mut pod = self.get(PODS, ns, name)?;
        pod["spec"]["terminationGracePeriodSeconds"] = json!(secs);
        self.commit(PODS, pod, "MODIFIED");
        Ok(())
    }

    /// Changes a pod's labels.
    pub fn set_pod_labels(
        &mut self,
        ns: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        let mut pod = self.get(PODS, ns, name)?;
        pod["metadata"]["labels"] = json!(labels);
        self.commit(PODS, pod, "MODIFIED");
        Ok(())
    }
}

/// The fake kubelet starts a pod at once: Running, Ready, on `fake-node`.
fn run_pod(pod: &mut Value) {
    let statuses: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": now()}},
            })
        })
        .collect();
    if pod["spec"]["nodeName"].is_null() {
        pod["spec"]["nodeName"] = json!("fake-node");
    }
    pod["status"] = json!({
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()},
            {"type": "Ready", "status": "True", "lastTransitionTime": now()},
        ],
        "podIP": "10.0.0.1",
        "hostIP": "192.168.0.1",
        "startTime": now(),
        "containerStatuses": statuses,
    });
}

/// RFC 3339 with seconds, as the API server writes timestamps.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The namespace of an object.
pub fn ns_of(obj: &Value) -> String {
    obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// The name of an object.
pub fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap_or("").to_owned()
}

/// The labels of an object.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn owner_of(pod: &Value) -> Option<(&'static str, String)> {
    let owner = &pod["metadata"]["ownerReferences"][0];
    let name = owner["name"].as_str()?;
    match owner["kind"].as_str()? {
        "StatefulSet" => Some((STATEFULSETS, name.to_owned())),
        // The fake has no ReplicaSet objects: `<deployment>-<hash>` names the deployment.
        "ReplicaSet" => Some((DEPLOYMENTS, name.rsplit_once('-')?.0.to_owned())),
        _ => None,
    }
}

fn ordinal(pod: &str, workload: &str) -> usize {
    pod.strip_prefix(workload)
        .and_then(|s| s.strip_prefix('-'))
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX)
}

fn pod_template_hash(workload: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    workload["spec"]["template"].to_string().hash(&mut h);
    format!("{:010x}", h.finish() & 0xff_ffff_ffff)
}

fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}
