//! The built-in health check strategies: http, tcp, exec, and status (the adapter's own
//! view, used when a resource configures no health check).
//!
//! A strategy answers `Ok(unhealthy)` when it could check and the resource failed the check
//! (refused connection, wrong status, non-zero exit); it answers `Err` only when it could not
//! check at all (no endpoint, malformed URL, unknown adapter).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use ire_core::{
    EnvironmentAdapter, Error, ExecOptions, HealthCheck, HealthCheckConfig, HealthCheckStrategy,
    HealthStatus, HealthStatusType, Resource, Result,
};

use super::http_client::{self, HttpUrl};

/// Annotation overriding the accepted HTTP status codes of one resource (`200,204`).
pub const EXPECTED_STATUS_ANNOTATION: &str = "ire.health/expected-status";
/// Annotation overriding the body substring one resource's HTTP check expects.
pub const EXPECTED_BODY_ANNOTATION: &str = "ire.health/expected-body";
/// Annotation overriding the exit code one resource's exec check expects.
pub const EXPECTED_EXIT_CODE_ANNOTATION: &str = "ire.health/expected-exit-code";

/// The adapters of the node, by instance name (the first segment of a resource key).
#[derive(Clone, Default)]
pub struct Adapters {
    inner: Arc<RwLock<BTreeMap<String, Arc<dyn EnvironmentAdapter>>>>,
}

impl std::fmt::Debug for Adapters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Adapters {
    /// No adapters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the adapter instance `name`.
    pub fn insert(&self, name: impl Into<String>, adapter: Arc<dyn EnvironmentAdapter>) {
        self.inner
            .write()
            .expect("adapters lock poisoned")
            .insert(name.into(), adapter);
    }

    /// The adapter instance names.
    pub fn names(&self) -> Vec<String> {
        self.inner
            .read()
            .expect("adapters lock poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// The adapter that reaches a resource.
    pub fn for_resource(&self, resource: &Resource) -> Result<Arc<dyn EnvironmentAdapter>> {
        let name = resource.key.adapter();
        self.inner
            .read()
            .expect("adapters lock poisoned")
            .get(name)
            .cloned()
            .ok_or_else(|| {
                Error::not_found("adapter", name).context(format!(
                    "resource {} (known adapters: {})",
                    resource.key,
                    self.names().join(", ")
                ))
            })
    }
}

fn config(resource: &Resource) -> Result<&HealthCheckConfig> {
    resource.spec.health_check.as_ref().ok_or_else(|| {
        Error::invalid(
            format!("resource {} spec.healthCheck", resource.key),
            "no health check configured",
        )
    })
}

fn endpoint<'a>(resource: &Resource, cfg: &'a HealthCheckConfig) -> Result<&'a str> {
    let e = cfg.endpoint.trim();
    if e.is_empty() {
        Err(Error::invalid(
            format!("resource {} spec.healthCheck.endpoint", resource.key),
            format!("the {} check needs an endpoint", cfg.type_),
        ))
    } else {
        Ok(e)
    }
}

fn status(name: &str, healthy: bool, message: String) -> HealthStatus {
    let s = if healthy {
        HealthStatusType::Healthy
    } else {
        HealthStatusType::Unhealthy
    };
    HealthStatus {
        status: s,
        message: message.clone(),
        checks: vec![HealthCheck {
            name: name.to_owned(),
            status: s,
            message,
        }],
    }
}

/// GETs the endpoint URL; healthy when the status is expected and the body contains the
/// expected text (the seed's HTTPHealthCheckStrategy).
#[derive(Debug, Clone, Default)]
pub struct HttpHealthCheck {
    /// Accepted status codes (empty: 200-399).
    pub expected_status_codes: Vec<u16>,
    /// Text the body must contain (empty: anything).
    pub expected_body: String,
}

impl HttpHealthCheck {
    fn accepted(&self, resource: &Resource) -> Result<Vec<u16>> {
        match resource.annotations.get(EXPECTED_STATUS_ANNOTATION) {
            Some(list) => list
                .split(',')
                .map(|c| {
                    c.trim().parse::<u16>().map_err(|_| {
                        Error::invalid(
                            format!(
                                "resource {} annotation {EXPECTED_STATUS_ANNOTATION}",
                                resource.key
                            ),
                            format!("{c:?} is not a status code"),
                        )
                    })
                })
                .collect(),
            None => Ok(self.expected_status_codes.clone()),
        }
    }
}

#[async_trait]
impl HealthCheckStrategy for HttpHealthCheck {
    async fn check(&self, resource: &Resource) -> Result<HealthStatus> {
        let cfg = config(resource)?;
        let url = HttpUrl::parse(
            endpoint(resource, cfg)?,
            &format!("resource {} spec.healthCheck.endpoint", resource.key),
        )?;
        let accepted = self.accepted(resource)?;
        let body_needle = resource
            .annotations
            .get(EXPECTED_BODY_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| self.expected_body.clone());
        let resp = match http_client::get(&url, &[], cfg.timeout).await {
            Ok(r) => r,
            Err(e) => return Ok(status("http", false, e.chain_message())),
        };
        let status_ok = if accepted.is_empty() {
            (200..400).contains(&resp.status)
        } else {
            accepted.contains(&resp.status)
        };
        if !status_ok {
            return Ok(status(
                "http",
                false,
                format!(
                    "GET {} returned {}, expected {}",
                    url.as_string(),
                    resp.status,
                    if accepted.is_empty() {
                        "2xx or 3xx".to_owned()
                    } else {
                        format!("{accepted:?}")
                    }
                ),
            ));
        }
        if !body_needle.is_empty() && !String::from_utf8_lossy(&resp.body).contains(&body_needle) {
            return Ok(status(
                "http",
                false,
                format!(
                    "GET {} returned {} without {body_needle:?} in its body",
                    url.as_string(),
                    resp.status
                ),
            ));
        }
        Ok(status(
            "http",
            true,
            format!("GET {} returned {}", url.as_string(), resp.status),
        ))
    }

    fn name(&self) -> &str {
        "http"
    }
}

/// Opens a TCP connection to the endpoint (`host:port`); healthy when it connects (the
/// seed's TCPHealthCheckStrategy).
#[derive(Debug, Clone, Default)]
pub struct TcpHealthCheck {
    /// Time to connect (the health check's timeout when None).
    pub dial_timeout: Option<Duration>,
}

#[async_trait]
impl HealthCheckStrategy for TcpHealthCheck {
    async fn check(&self, resource: &Resource) -> Result<HealthStatus> {
        let cfg = config(resource)?;
        let addr = endpoint(resource, cfg)?;
        let addr = addr.strip_prefix("tcp://").unwrap_or(addr);
        let timeout = self.dial_timeout.unwrap_or(cfg.timeout);
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(status("tcp", true, format!("connected to {addr}"))),
            Ok(Err(e)) => Ok(status("tcp", false, format!("connecting to {addr}: {e}"))),
            Err(_) => Ok(status(
                "tcp",
                false,
                format!(
                    "connecting to {addr} timed out after {}",
                    humantime::format_duration(timeout)
                ),
            )),
        }
    }

    fn name(&self) -> &str {
        "tcp"
    }
}

/// Runs the endpoint as a command inside the resource through its adapter; healthy when it
/// exits with the expected code (the seed's ExecHealthCheckStrategy).
///
/// The command is split on whitespace, or given as a JSON array (`["sh","-c","test -f x"]`).
#[derive(Debug, Clone)]
pub struct ExecHealthCheck {
    /// The exit code of a healthy resource.
    pub expected_exit_code: i64,
    adapters: Adapters,
}

impl ExecHealthCheck {
    /// An exec check that expects exit code 0, reaching resources through `adapters`.
    pub fn new(adapters: Adapters) -> Self {
        ExecHealthCheck {
            expected_exit_code: 0,
            adapters,
        }
    }
}

/// Splits an exec endpoint into argv.
pub fn parse_command(resource: &Resource, endpoint: &str) -> Result<Vec<String>> {
    let argv: Vec<String> = if endpoint.starts_with('[') {
        serde_json::from_str(endpoint).map_err(|e| {
            Error::invalid(
                format!("resource {} spec.healthCheck.endpoint", resource.key),
                format!("not a JSON array of strings: {e}"),
            )
        })?
    } else {
        endpoint.split_whitespace().map(str::to_owned).collect()
    };
    if argv.is_empty() {
        return Err(Error::invalid(
            format!("resource {} spec.healthCheck.endpoint", resource.key),
            "empty command",
        ));
    }
    Ok(argv)
}

#[async_trait]
impl HealthCheckStrategy for ExecHealthCheck {
    async fn check(&self, resource: &Resource) -> Result<HealthStatus> {
        let cfg = config(resource)?;
        let argv = parse_command(resource, endpoint(resource, cfg)?)?;
        let expected = match resource.annotations.get(EXPECTED_EXIT_CODE_ANNOTATION) {
            Some(v) => v.trim().parse().map_err(|_| {
                Error::invalid(
                    format!(
                        "resource {} annotation {EXPECTED_EXIT_CODE_ANNOTATION}",
                        resource.key
                    ),
                    format!("{v:?} is not an integer"),
                )
            })?,
            None => self.expected_exit_code,
        };
        let adapter = self.adapters.for_resource(resource)?;
        let options = ExecOptions {
            timeout: Some(cfg.timeout),
            ..Default::default()
        };
        let id = if resource.id.is_empty() {
            resource.key.as_str()
        } else {
            resource.id.as_str()
        };
        match adapter.exec_in_resource(id, &argv, &options).await {
            Ok(r) if r.exit_code == expected => Ok(status(
                "exec",
                true,
                format!("{} exited with {}", argv.join(" "), r.exit_code),
            )),
            Ok(r) => Ok(status(
                "exec",
                false,
                format!(
                    "{} exited with {}, expected {expected}: {}",
                    argv.join(" "),
                    r.exit_code,
                    r.stderr_text().trim()
                ),
            )),
            // The command could not run in the resource (stopped, gone): that is unhealthy,
            // unless the adapter cannot exec at all, which is a configuration error.
            Err(e) if matches!(e.root(), Error::Unsupported { .. }) => Err(e),
            Err(e) => Ok(status("exec", false, e.chain_message())),
        }
    }

    fn name(&self) -> &str {
        "exec"
    }
}

/// The adapter's own view: healthy when the resource is running and no `Ready` or
/// `Healthy` condition says `False`.
#[derive(Debug, Clone)]
pub struct StatusHealthCheck {
    adapters: Adapters,
}

impl StatusHealthCheck {
    /// A status check reaching resources through `adapters`.
    pub fn new(adapters: Adapters) -> Self {
        StatusHealthCheck { adapters }
    }
}

#[async_trait]
impl HealthCheckStrategy for StatusHealthCheck {
    async fn check(&self, resource: &Resource) -> Result<HealthStatus> {
        let adapter = self.adapters.for_resource(resource)?;
        let current = match adapter.get_resource(resource.key.as_str()).await {
            Ok(r) => r,
            Err(e) if matches!(e.root(), Error::NotFound { .. }) => {
                return Ok(status(
                    "status",
                    false,
                    format!("{} not found", resource.key),
                ))
            }
            Err(e) => return Err(e),
        };
        if !current.is_running() {
            return Ok(status(
                "status",
                false,
                format!("{} is {}", resource.key, current.status.phase),
            ));
        }
        for c in ["Ready", "Healthy"] {
            if let Some(cond) = current.condition(c) {
                if cond.status.eq_ignore_ascii_case("false") {
                    return Ok(status(
                        "status",
                        false,
                        format!("{} condition {c} is False: {}", resource.key, cond.message),
                    ));
                }
            }
        }
        Ok(status(
            "status",
            true,
            format!("{} is running", resource.key),
        ))
    }

    fn name(&self) -> &str {
        "status"
    }
}
