//! Local HTTP servers that speak the documented subset of Consul's KV API (recursive reads,
//! base64 values, blocking queries on `X-Consul-Index`) and Vault's KV v2 API (`X-Vault-Token`,
//! `data.data` and `data.metadata.version`). No Consul or Vault server can be installed on
//! the test machines; these follow the public API documentation.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Notify;

struct KvState {
    index: u64,
    keys: BTreeMap<String, String>,
    blocking_queries: usize,
}

/// A fake Consul agent's KV store.
pub struct FakeConsul {
    pub addr: SocketAddr,
    state: Arc<Mutex<KvState>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let h = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let h = h.clone();
                async move { Ok::<_, Infallible>(h(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

impl FakeConsul {
    pub async fn start() -> FakeConsul {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(KvState {
            index: 1,
            keys: BTreeMap::new(),
            blocking_queries: 0,
        }));
        let changed = Arc::new(Notify::new());
        let (s, c) = (state.clone(), changed.clone());
        let task = tokio::spawn(serve(listener, move |req: Request<Incoming>| {
            let (state, changed) = (s.clone(), c.clone());
            async move {
                let path = req.uri().path().to_owned();
                let query = req.uri().query().unwrap_or("").to_owned();
                let Some(prefix) = path.strip_prefix("/v1/kv/") else {
                    return Response::builder()
                        .status(404)
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                };
                // Blocking query: wait until the index moves past the one given, or `wait`.
                if let Some(index) =
                    query_param(&query, "index").and_then(|i| i.parse::<u64>().ok())
                {
                    let wait = query_param(&query, "wait")
                        .and_then(|w| w.strip_suffix('s'))
                        .and_then(|w| w.parse::<u64>().ok())
                        .unwrap_or(300);
                    state.lock().unwrap().blocking_queries += 1;
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
                    loop {
                        let notified = changed.notified();
                        if state.lock().unwrap().index > index {
                            break;
                        }
                        if tokio::time::timeout_at(deadline, notified).await.is_err() {
                            break;
                        }
                    }
                }
                let st = state.lock().unwrap();
                let recurse = query_param(&query, "recurse").is_some();
                let pairs: Vec<_> = st
                    .keys
                    .iter()
                    .filter(|(k, _)| {
                        if recurse {
                            k.starts_with(prefix)
                        } else {
                            *k == prefix
                        }
                    })
                    .map(|(k, v)| {
                        json!({
                            "LockIndex": 0, "Key": k, "Flags": 0,
                            "Value": base64::engine::general_purpose::STANDARD.encode(v),
                            "CreateIndex": 1, "ModifyIndex": st.index
                        })
                    })
                    .collect();
                let status = if pairs.is_empty() { 404 } else { 200 };
                let body = if pairs.is_empty() {
                    Vec::new()
                } else {
                    serde_json::to_vec(&pairs).unwrap()
                };
                Response::builder()
                    .status(status)
                    .header("X-Consul-Index", st.index.to_string())
                    .header("Content-Type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap()
            }
        }));
        FakeConsul {
            addr,
            state,
            changed,
            task,
        }
    }

    /// Writes a key (as `consul kv put` would), moving the index.
    pub fn put(&self, key: &str, value: &str) {
        let mut st = self.state.lock().unwrap();
        st.keys.insert(key.to_owned(), value.to_owned());
        st.index += 1;
        drop(st);
        self.changed.notify_waiters();
    }

    /// Deletes a key, moving the index.
    pub fn delete(&self, key: &str) {
        let mut st = self.state.lock().unwrap();
        st.keys.remove(key);
        st.index += 1;
        drop(st);
        self.changed.notify_waiters();
    }

    /// Blocking queries received so far.
    pub fn blocking_queries(&self) -> usize {
        self.state.lock().unwrap().blocking_queries
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct SecretState {
    version: u64,
    data: serde_json::Value,
}

/// A fake Vault server with one KV v2 mount.
pub struct FakeVault {
    pub addr: SocketAddr,
    state: Arc<Mutex<BTreeMap<String, SecretState>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeVault {
    /// A server that accepts only `token`, with a KV v2 engine mounted at `mount`.
    pub async fn start(token: &str, mount: &str) -> FakeVault {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<BTreeMap<String, SecretState>>> = Arc::default();
        let s = state.clone();
        let token = token.to_owned();
        let prefix = format!("/v1/{mount}/data/");
        let task = tokio::spawn(serve(listener, move |req: Request<Incoming>| {
            let (state, token, prefix) = (s.clone(), token.clone(), prefix.clone());
            async move {
                let respond = |status: u16, body: serde_json::Value| {
                    Response::builder()
                        .status(status)
                        .header("Content-Type", "application/json")
                        .body(Full::new(Bytes::from(body.to_string())))
                        .unwrap()
                };
                let given = req
                    .headers()
                    .get("X-Vault-Token")
                    .and_then(|v| v.to_str().ok());
                if given != Some(token.as_str()) {
                    return respond(403, json!({"errors": ["permission denied"]}));
                }
                let Some(path) = req.uri().path().strip_prefix(&prefix) else {
                    return respond(404, json!({"errors": []}));
                };
                match state.lock().unwrap().get(path) {
                    Some(s) => respond(
                        200,
                        json!({
                            "request_id": "fake", "lease_id": "", "renewable": false, "lease_duration": 0,
                            "data": {
                                "data": s.data,
                                "metadata": {"created_time": "2026-01-01T00:00:00Z", "deletion_time": "", "destroyed": false, "version": s.version}
                            }
                        }),
                    ),
                    None => respond(404, json!({"errors": []})),
                }
            }
        }));
        FakeVault { addr, state, task }
    }

    /// Writes a new version of a secret.
    pub fn put(&self, path: &str, data: serde_json::Value) {
        let mut st = self.state.lock().unwrap();
        let version = st.get(path).map(|s| s.version + 1).unwrap_or(1);
        st.insert(path.to_owned(), SecretState { version, data });
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeVault {
    fn drop(&mut self) {
        self.task.abort();
    }
}
