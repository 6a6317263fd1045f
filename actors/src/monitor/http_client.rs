//! A lean HTTP/1.1 client over hyper (already in the tree through kube and bollard): one
//! connection per request, no pool, plain `http://` only. Used by the http health check and
//! by the Consul and Vault config providers.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use ire_core::{Error, Result};
use tokio::net::TcpStream;

/// Responses larger than this are refused.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl HttpResponse {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A parsed `http://host:port/path?query` URL.
#[derive(Debug, Clone)]
pub struct HttpUrl {
    host: String,
    port: u16,
    authority: String,
    path_and_query: String,
}

impl HttpUrl {
    /// Parses an http URL; `what` names the setting it came from, for errors.
    pub fn parse(url: &str, what: &str) -> Result<HttpUrl> {
        let uri: Uri = url
            .parse()
            .map_err(|e| Error::invalid(what, format!("{url:?} is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(Error::unsupported(
                    format!("https URL {url:?} in {what}"),
                    "ire's built-in HTTP client (plain http only; put TLS in front or use a custom strategy)",
                ))
            }
            _ => return Err(Error::invalid(what, format!("{url:?} must start with http://"))),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| Error::invalid(what, format!("{url:?} has no host")))?;
        Ok(HttpUrl {
            host: authority.host().trim_matches(['[', ']']).to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path_and_query: uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".into()),
        })
    }

    /// The same server with another path and query.
    pub fn with_path(&self, path_and_query: &str) -> HttpUrl {
        HttpUrl {
            path_and_query: path_and_query.to_owned(),
            ..self.clone()
        }
    }

    /// The URL as text.
    pub fn as_string(&self) -> String {
        format!("http://{}{}", self.authority, self.path_and_query)
    }
}

fn io_err(url: &HttpUrl, e: impl Into<ire_core::BoxError>) -> Error {
    Error::unavailable(format!("GET {}", url.as_string()), e)
}

/// Sends one request and reads the response within `timeout`.
pub async fn request(
    method: Method,
    url: &HttpUrl,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<HttpResponse> {
    let work = async {
        let stream = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| io_err(url, e))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| io_err(url, e))?;
        // The connection task ends when the response has been read and the sender dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(url.path_and_query.as_str())
            .header(HOST, url.authority.as_str());
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| Error::invalid(format!("header {k:?}"), e.to_string()))?;
            let value = HeaderValue::from_str(v)
                .map_err(|e| Error::invalid(format!("header {k:?}"), e.to_string()))?;
            req = req.header(name, value);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| {
                Error::invalid(format!("request to {}", url.as_string()), e.to_string())
            })?;
        let resp = sender.send_request(req).await.map_err(|e| io_err(url, e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| io_err(url, e))?
            .to_bytes();
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| Error::Timeout {
            operation: format!("HTTP request to {}", url.as_string()),
            after: timeout,
        })?
}

/// A GET.
pub async fn get(
    url: &HttpUrl,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<HttpResponse> {
    request(Method::GET, url, headers, None, timeout).await
}
