//! A real HTTP server on 127.0.0.1:0 for tests, whose answers can be changed while it runs.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What the server answers to a request: (status, headers, body).
pub type Handler =
    Arc<dyn Fn(&Request<Incoming>) -> (u16, Vec<(String, String)>, String) + Send + Sync>;

/// A running server.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    handler: Arc<Mutex<Handler>>,
    /// Requests served, as "METHOD path?query".
    pub requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Starts a server answering with `handler`.
    pub async fn start(handler: Handler) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(Mutex::new(handler));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (h, r) = (handler.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (h, r) = (h.clone(), r.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (h, r) = (h.clone(), r.clone());
                        async move {
                            r.lock().unwrap().push(format!(
                                "{} {}",
                                req.method(),
                                req.uri()
                                    .path_and_query()
                                    .map(|p| p.as_str())
                                    .unwrap_or("/")
                            ));
                            let f = h.lock().unwrap().clone();
                            let (status, headers, body) = f(&req);
                            let mut resp = Response::builder().status(status);
                            for (k, v) in headers {
                                resp = resp.header(k, v);
                            }
                            Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(body))).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        TestServer {
            addr,
            handler,
            requests,
            task,
        }
    }

    /// A server that answers every request with `status` and `body`.
    pub async fn fixed(status: u16, body: &str) -> TestServer {
        let body = body.to_owned();
        Self::start(Arc::new(move |_| (status, vec![], body.clone()))).await
    }

    /// Changes the answers.
    pub fn set_handler(&self, handler: Handler) {
        *self.handler.lock().unwrap() = handler;
    }

    /// Answers every request with `status` and `body` from now on.
    pub fn set_fixed(&self, status: u16, body: &str) {
        let body = body.to_owned();
        self.set_handler(Arc::new(move |_| (status, vec![], body.clone())));
    }

    /// The URL of a path on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Requests served so far.
    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
