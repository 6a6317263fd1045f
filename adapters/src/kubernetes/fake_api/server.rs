//! HTTP routing of the fake API server: the paths, query parameters, bodies and status
//! codes of the real one, for the calls the adapter makes.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::exec;
use super::selector::{ParsedFieldSelector, ParsedLabelSelector};
use super::store::{self, type_info, ApiError, RecordedRequest, Store, PODS};

/// The response body type: whole JSON documents or a watch stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// What every request handler shares.
#[derive(Clone)]
pub struct Shared {
    /// The cluster state.
    pub store: Arc<Mutex<Store>>,
    /// Cancelled when the server shuts down; ends watches and exec sessions.
    pub shutdown: CancellationToken,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
}

/// A JSON response.
pub fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("valid response")
}

/// A `Status` error response.
pub fn error_response(e: &ApiError) -> Response<Body> {
    json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.status(),
    )
}

fn not_served() -> ApiError {
    ApiError {
        code: 404,
        reason: "NotFound",
        message: "the server could not find the requested resource".into(),
        details: None,
    }
}

/// A served path: (plural, namespace, name, subresource).
type Route<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// Handles one request.
pub async fn handle(shared: Shared, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let path = req.uri().path().to_owned();
    shared
        .store
        .lock()
        .expect("store lock")
        .record(RecordedRequest {
            method: req.method().to_string(),
            path: path.clone(),
            query: query.clone(),
        });
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    // (plural, namespace, name, subresource)
    let route: Option<Route<'_>> = match segs.as_slice() {
        ["version"] => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({
                    "major": "1", "minor": "33", "gitVersion": "v1.33.0-ire-fake",
                    "gitCommit": "0000000000000000000000000000000000000000",
                    "gitTreeState": "clean", "buildDate": "2025-04-23T00:00:00Z",
                    "goVersion": "go1.24.2", "compiler": "gc", "platform": "linux/amd64",
                }),
            ))
        }
        ["apis", "metrics.k8s.io", "v1beta1"] => {
            let served = shared.store.lock().expect("store lock").metrics_served;
            if !served {
                return Ok(error_response(&not_served()));
            }
            return Ok(json_response(
                StatusCode::OK,
                &json!({
                    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "metrics.k8s.io/v1beta1",
                    "resources": [
                        {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
                        {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
                    ],
                }),
            ));
        }
        ["apis", "metrics.k8s.io", "v1beta1", "namespaces", ns, "pods"] => {
            let store = shared.store.lock().expect("store lock");
            if !store.metrics_served {
                return Ok(error_response(&not_served()));
            }
            let labels = match ParsedLabelSelector::parse(&q("labelSelector").unwrap_or_default()) {
                Ok(s) => s,
                Err(e) => {
                    return Ok(error_response(&ApiError::bad_request(format!(
                        "unable to parse requirement: {e}"
                    ))))
                }
            };
            let limit = q("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .filter(|l| *l > 0);
            let r = store.list(
                PODS,
                Some(ns),
                &labels,
                &Default::default(),
                limit,
                q("continue").as_deref(),
            );
            return Ok(match r {
                Ok((pods, cont, rv)) => {
                    let items: Vec<Value> = pods
                        .iter()
                        .filter_map(|p| store.pod_metrics(ns, &store::name_of(p)).ok())
                        .map(strip_type)
                        .collect();
                    let mut meta = json!({"resourceVersion": rv.to_string()});
                    if let Some(c) = cont {
                        meta["continue"] = json!(c);
                    }
                    json_response(
                        StatusCode::OK,
                        &json!({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": meta, "items": items}),
                    )
                }
                Err(e) => error_response(&e),
            });
        }
        ["apis", "metrics.k8s.io", "v1beta1", "namespaces", ns, "pods", name] => {
            let store = shared.store.lock().expect("store lock");
            if !store.metrics_served {
                return Ok(error_response(&not_served()));
            }
            return Ok(match store.pod_metrics(ns, name) {
                Ok(m) => json_response(StatusCode::OK, &m),
                Err(e) => error_response(&e),
            });
        }
        ["api", "v1", plural] => Some((plural, None, None, None)),
        ["api", "v1", "namespaces", ns, plural] => Some((plural, Some(ns), None, None)),
        ["api", "v1", "namespaces", ns, plural, name] => Some((plural, Some(ns), Some(name), None)),
        ["api", "v1", "namespaces", ns, plural, name, sub] => {
            Some((plural, Some(ns), Some(name), Some(sub)))
        }
        ["apis", "apps", "v1", plural] => Some((plural, None, None, None)),
        ["apis", "apps", "v1", "namespaces", ns, plural] => Some((plural, Some(ns), None, None)),
        ["apis", "apps", "v1", "namespaces", ns, plural, name] => {
            Some((plural, Some(ns), Some(name), None))
        }
        ["apis", "apps", "v1", "namespaces", ns, plural, name, sub] => {
            Some((plural, Some(ns), Some(name), Some(sub)))
        }
        _ => None,
    };
    let Some((plural, ns, name, sub)) = route else {
        return Ok(error_response(&not_served()));
    };
    let Some(info) = type_info(plural) else {
        return Ok(error_response(&not_served()));
    };
    // The core group serves pods only; apps serves the workloads only.
    if (info.api_version == "v1") != path.starts_with("/api/") {
        return Ok(error_response(&not_served()));
    }
    let plural = info.plural;
    let method = req.method().clone();
    match (method, ns, name, sub) {
        (Method::GET, ns, None, None) => {
            let labels = match ParsedLabelSelector::parse(&q("labelSelector").unwrap_or_default()) {
                Ok(s) => s,
                Err(e) => {
                    return Ok(error_response(&ApiError::bad_request(format!(
                        "unable to parse requirement: {e}"
                    ))))
                }
            };
            let fields =
                match ParsedFieldSelector::parse(&q("fieldSelector").unwrap_or_default(), plural) {
                    Ok(s) => s,
                    Err(e) => return Ok(error_response(&ApiError::bad_request(e))),
                };
            if matches!(q("watch").as_deref(), Some("true" | "1")) {
                let rv = q("resourceVersion").filter(|v| !v.is_empty() && v != "0");
                let rv = match rv.map(|v| v.parse::<u64>()) {
                    None => None,
                    Some(Ok(v)) => Some(v),
                    Some(Err(_)) => {
                        return Ok(error_response(&ApiError::bad_request(
                            "invalid resource version",
                        )))
                    }
                };
                let timeout = q("timeoutSeconds")
                    .and_then(|t| t.parse().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(Duration::from_secs(1800));
                let bookmarks = q("allowWatchBookmarks").as_deref() == Some("true");
                return Ok(watch(
                    shared,
                    plural,
                    ns.map(str::to_owned),
                    labels,
                    fields,
                    rv,
                    timeout,
                    bookmarks,
                ));
            }
            let limit = q("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .filter(|l| *l > 0);
            let store = shared.store.lock().expect("store lock");
            match store.list(
                plural,
                ns,
                &labels,
                &fields,
                limit,
                q("continue").as_deref(),
            ) {
                Ok((items, cont, rv)) => {
                    let items: Vec<Value> = items.into_iter().map(strip_type).collect();
                    let mut meta = json!({"resourceVersion": rv.to_string()});
                    if let Some(c) = cont {
                        meta["continue"] = json!(c);
                    }
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({"kind": format!("{}List", info.kind), "apiVersion": info.api_version, "metadata": meta, "items": items}),
                    ))
                }
                Err(e) => Ok(error_response(&e)),
            }
        }
        (Method::POST, Some(ns), None, None) => {
            let body = match read_json(req).await {
                Ok(b) => b,
                Err(e) => return Ok(error_response(&e)),
            };
            let r = shared
                .store
                .lock()
                .expect("store lock")
                .create(plural, ns, body);
            Ok(match r {
                Ok(o) => json_response(StatusCode::CREATED, &o),
                Err(e) => error_response(&e),
            })
        }
        (Method::GET, Some(ns), Some(name), None) => {
            let r = shared
                .store
                .lock()
                .expect("store lock")
                .get(plural, ns, name);
            Ok(match r {
                Ok(o) => json_response(StatusCode::OK, &o),
                Err(e) => error_response(&e),
            })
        }
        (Method::DELETE, Some(ns), Some(name), None) => {
            let grace_q = q("gracePeriodSeconds").and_then(|g| g.parse::<i64>().ok());
            let body = read_json(req).await.unwrap_or(Value::Null);
            let grace = body["gracePeriodSeconds"].as_i64().or(grace_q);
            let r = shared
                .store
                .lock()
                .expect("store lock")
                .delete(plural, ns, name, grace);
            match r {
                Ok((obj, pending)) => {
                    if let Some(grace) = pending {
                        let (ns, name) = (ns.to_owned(), name.to_owned());
                        let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_owned();
                        let store = shared.store.clone();
                        let shutdown = shared.shutdown.clone();
                        // The kubelet finishes the delete once the grace period is over.
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(grace as u64)) => {
                                    store.lock().expect("store lock").finish_delete(&ns, &name, &uid);
                                }
                                _ = shutdown.cancelled() => {}
                            }
                        });
                    }
                    Ok(json_response(StatusCode::OK, &obj))
                }
                Err(e) => Ok(error_response(&e)),
            }
        }
        (Method::PUT, Some(ns), Some(name), Some("ephemeralcontainers")) if plural == PODS => {
            let body = match read_json(req).await {
                Ok(b) => b,
                Err(e) => return Ok(error_response(&e)),
            };
            let r = shared
                .store
                .lock()
                .expect("store lock")
                .replace_ephemeral(ns, name, body);
            Ok(match r {
                Ok(o) => json_response(StatusCode::OK, &o),
                Err(e) => error_response(&e),
            })
        }
        (Method::GET, Some(ns), Some(name), Some("ephemeralcontainers")) if plural == PODS => {
            let r = shared
                .store
                .lock()
                .expect("store lock")
                .get(plural, ns, name);
            Ok(match r {
                Ok(o) => json_response(StatusCode::OK, &o),
                Err(e) => error_response(&e),
            })
        }
        (Method::PUT, Some(ns), Some(name), None) => {
            let body = match read_json(req).await {
                Ok(b) => b,
                Err(e) => return Ok(error_response(&e)),
            };
            let r = shared
                .store
                .lock()
                .expect("store lock")
                .replace(plural, ns, name, body);
            Ok(match r {
                Ok(o) => json_response(StatusCode::OK, &o),
                Err(e) => error_response(&e),
            })
        }
        (Method::PATCH, Some(ns), Some(name), sub) => {
            let ct = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if ct != "application/merge-patch+json" {
                return Ok(error_response(&ApiError {
                    code: 415,
                    reason: "UnsupportedMediaType",
                    message: format!("the fake API server accepts merge patches only, not {ct:?}"),
                    details: None,
                }));
            }
            let patch = match read_json(req).await {
                Ok(b) => b,
                Err(e) => return Ok(error_response(&e)),
            };
            let mut store = shared.store.lock().expect("store lock");
            let r = match sub {
                None => store.merge_patch(plural, ns, name, &patch),
                Some("scale") if plural != PODS => {
                    let replicas = patch["spec"]["replicas"].clone();
                    store
                        .merge_patch(plural, ns, name, &json!({"spec": {"replicas": replicas}}))
                        .map(|o| scale_of(&o))
                }
                Some(_) => Err(not_served()),
            };
            Ok(match r {
                Ok(o) => json_response(StatusCode::OK, &o),
                Err(e) => error_response(&e),
            })
        }
        (Method::GET, Some(ns), Some(name), Some("scale")) if plural != PODS => {
            let r = shared
                .store
                .lock()
                .expect("store lock")
                .get(plural, ns, name);
            Ok(match r {
                Ok(o) => json_response(StatusCode::OK, &scale_of(&o)),
                Err(e) => error_response(&e),
            })
        }
        (Method::GET | Method::POST, Some(ns), Some(name), Some("exec")) if plural == PODS => {
            let (ns, name) = (ns.to_owned(), name.to_owned());
            Ok(exec::upgrade(shared, req, &ns, &name, &query))
        }
        _ => Ok(error_response(&ApiError {
            code: 405,
            reason: "MethodNotAllowed",
            message: "the server does not allow this method on the requested resource".into(),
            details: None,
        })),
    }
}

/// The autoscaling/v1 `Scale` of a workload.
fn scale_of(o: &Value) -> Value {
    let selector = o["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": o["metadata"]["name"], "namespace": o["metadata"]["namespace"],
            "uid": o["metadata"]["uid"], "resourceVersion": o["metadata"]["resourceVersion"],
            "creationTimestamp": o["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": o["spec"]["replicas"]},
        "status": {"replicas": o["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// List items carry no `kind`/`apiVersion`, as in the real API's typed lists.
fn strip_type(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    v
}

async fn read_json(req: Request<Incoming>) -> Result<Value, ApiError> {
    let bytes = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?
        .to_bytes();
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

fn watch_line(type_: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": type_, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// A watch: newline-delimited `WatchEvent`s, from the history after `rv` (or a synthetic
/// ADDED per existing object when no version is given), then live, with BOOKMARKs.
#[allow(clippy::too_many_arguments)]
fn watch(
    shared: Shared,
    plural: &'static str,
    ns: Option<String>,
    labels: ParsedLabelSelector,
    fields: ParsedFieldSelector,
    rv: Option<u64>,
    timeout: Duration,
    bookmarks: bool,
) -> Response<Body> {
    let info = type_info(plural).expect("served type");
    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    let matches = move |o: &Value| {
        ns.as_deref().is_none_or(|n| store::ns_of(o) == n)
            && labels.matches(&store::labels_of(o))
            && fields.matches(o)
    };
    let (backlog, mut sub, mut last_rv, reset) = {
        let store = shared.store.lock().expect("store lock");
        let reset = store.watch_reset();
        let sub = store.subscribe();
        let current = store.resource_version();
        match rv {
            None => {
                let (items, _, _) = store
                    .list(
                        plural,
                        None,
                        &Default::default(),
                        &Default::default(),
                        None,
                        None,
                    )
                    .expect("unpaged list");
                let lines: Vec<Bytes> = items
                    .iter()
                    .filter(|o| matches(o))
                    .map(|o| watch_line("ADDED", o))
                    .collect();
                (Ok(lines), sub, current, reset)
            }
            Some(rv) => match store.history_since(rv) {
                Some(events) => {
                    let lines = events
                        .iter()
                        .filter(|e| e.plural == plural)
                        .filter_map(|e| translate(e, &matches))
                        .collect();
                    (Ok(lines), sub, current, reset)
                }
                None => (Err((rv, current)), sub, current, reset),
            },
        }
    };
    let shutdown = shared.shutdown.clone();
    let interval = shared.bookmark_interval;
    tokio::spawn(async move {
        let lines = match backlog {
            Ok(lines) => lines,
            Err((rv, current)) => {
                let status = ApiError {
                    code: 410,
                    reason: "Expired",
                    message: format!("too old resource version: {rv} ({current})"),
                    details: None,
                }
                .status();
                let _ = tx.send(watch_line("ERROR", &status)).await;
                return;
            }
        };
        for l in lines {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            let line = tokio::select! {
                ev = sub.recv() => match ev {
                    Ok(ev) => {
                        last_rv = last_rv.max(ev.rv);
                        if ev.plural != plural { continue; }
                        match translate(&ev, &matches) { Some(l) => l, None => continue }
                    }
                    // Too slow a reader: end the watch; the client resumes from its last
                    // version (or relists after a 410).
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick(), if bookmarks => watch_line("BOOKMARK", &json!({
                    "kind": info.kind, "apiVersion": info.api_version,
                    "metadata": {"resourceVersion": last_rv.to_string()},
                })),
                _ = &mut deadline => return,
                _ = shutdown.cancelled() => return,
                _ = reset.cancelled() => return,
                _ = tx.closed() => return,
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    let body = StreamBody::new(futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|o| o.map(|b| Ok::<_, Infallible>(Frame::data(b))))
    }));
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.boxed())
        .expect("valid response")
}

/// The watch event a change is, seen through a watch's selectors: an object that starts
/// matching is ADDED, one that stops matching is DELETED.
fn translate(ev: &store::StoredEvent, matches: &impl Fn(&Value) -> bool) -> Option<Bytes> {
    let now = matches(&ev.object);
    let before = ev.previous.as_ref().is_some_and(matches);
    let type_ = match (ev.type_, before, now) {
        ("DELETED", true, _) | ("DELETED", _, true) => "DELETED",
        ("DELETED", false, false) => return None,
        (_, false, true) => "ADDED",
        (_, true, true) => "MODIFIED",
        (_, true, false) => "DELETED",
        (_, false, false) => return None,
    };
    Some(watch_line(type_, &ev.object))
}
