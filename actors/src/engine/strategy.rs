//! Built-in execution strategies: simple, retry with backoff, circuit breaker, rate limit.
//! Any other [`ExecutionStrategy`] plugs in the same way, through the request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ire_core::{
    Attempt, BackoffStrategy, Error, ExecutionResult, ExecutionStrategy, ExponentialBackoff, Result,
};
use tokio::time::Instant;

use crate::metric_names;

/// Runs the attempt once.
#[derive(Debug, Default, Clone, Copy)]
pub struct SimpleStrategy;

#[async_trait]
impl ExecutionStrategy for SimpleStrategy {
    async fn execute(&self, attempt: &dyn Attempt) -> Result<ExecutionResult> {
        attempt.run().await
    }

    fn name(&self) -> &str {
        "simple"
    }
}

/// Retries retryable failures with backoff, up to `max_retries` retries; fatal and
/// ignorable errors end it at once.
#[derive(Clone)]
pub struct RetryStrategy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The delay before each retry.
    pub backoff: Arc<dyn BackoffStrategy>,
}

impl std::fmt::Debug for RetryStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryStrategy")
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

impl RetryStrategy {
    /// Retries with the seed's exponential backoff (1 s, 2 s, 4 s ... capped at 60 s).
    pub fn exponential(max_retries: u32) -> Self {
        RetryStrategy {
            max_retries,
            backoff: Arc::new(ExponentialBackoff::default()),
        }
    }
}

#[async_trait]
impl ExecutionStrategy for RetryStrategy {
    async fn execute(&self, attempt: &dyn Attempt) -> Result<ExecutionResult> {
        let mut retry = 0u32;
        loop {
            match attempt.run().await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_retryable() && retry < self.max_retries => {
                    retry += 1;
                    let delay = self.backoff.next_delay(retry);
                    tracing::info!(
                        component = "engine",
                        plugin = %attempt.plugin().metadata().name,
                        resource_id = %attempt.resource().key,
                        retry,
                        delay_ms = delay.as_millis() as u64,
                        error = %e,
                        "retryable failure; retrying after backoff"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn name(&self) -> &str {
        "retry"
    }
}

/// Where a circuit breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Attempts run; consecutive failures are counted.
    Closed,
    /// Attempts are refused until the reset timeout has passed.
    Open,
    /// One trial attempt runs; its outcome closes or reopens the circuit.
    HalfOpen,
}

struct Circuit {
    state: CircuitState,
    failures: u32,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
}

/// Stops calling a plugin that keeps failing: after `failure_threshold` consecutive
/// failures the circuit opens and attempts are refused (`Unavailable`, without calling the
/// plugin) for `reset_timeout`; then one trial decides. Share one instance (an `Arc`) across
/// requests for the breaker to see them all.
pub struct CircuitBreakerStrategy {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// Each attempt's own time limit, if any (counted as a failure when exceeded).
    pub timeout: Option<Duration>,
    /// How long the circuit stays open.
    pub reset_timeout: Duration,
    circuit: Mutex<Circuit>,
}

impl std::fmt::Debug for CircuitBreakerStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerStrategy")
            .field("failure_threshold", &self.failure_threshold)
            .field("reset_timeout", &self.reset_timeout)
            .field("state", &self.state())
            .finish()
    }
}

impl CircuitBreakerStrategy {
    /// A closed breaker.
    pub fn new(failure_threshold: u32, timeout: Option<Duration>, reset_timeout: Duration) -> Self {
        CircuitBreakerStrategy {
            failure_threshold: failure_threshold.max(1),
            timeout,
            reset_timeout,
            circuit: Mutex::new(Circuit {
                state: CircuitState::Closed,
                failures: 0,
                opened_at: None,
                trial_in_flight: false,
            }),
        }
    }

    /// The circuit's state now.
    pub fn state(&self) -> CircuitState {
        let mut c = self.circuit.lock().expect("circuit lock");
        self.refresh(&mut c);
        c.state
    }

    fn refresh(&self, c: &mut Circuit) {
        if c.state == CircuitState::Open
            && c.opened_at
                .is_some_and(|t| t.elapsed() >= self.reset_timeout)
        {
            c.state = CircuitState::HalfOpen;
            c.trial_in_flight = false;
            transition(CircuitState::HalfOpen);
        }
    }

    fn admit(&self) -> Result<()> {
        let mut c = self.circuit.lock().expect("circuit lock");
        self.refresh(&mut c);
        match c.state {
            CircuitState::Closed => Ok(()),
            CircuitState::HalfOpen if !c.trial_in_flight => {
                c.trial_in_flight = true;
                Ok(())
            }
            _ => {
                let left = c
                    .opened_at
                    .map(|t| self.reset_timeout.saturating_sub(t.elapsed()))
                    .unwrap_or_default();
                Err(Error::Unavailable {
                    message: format!(
                        "circuit open after {} consecutive failures; next trial in {}",
                        c.failures,
                        humantime::format_duration(Duration::from_millis(left.as_millis() as u64))
                    ),
                    source: None,
                })
            }
        }
    }

    fn record(&self, ok: bool) {
        let mut c = self.circuit.lock().expect("circuit lock");
        if ok {
            if c.state != CircuitState::Closed {
                transition(CircuitState::Closed);
            }
            c.state = CircuitState::Closed;
            c.failures = 0;
            c.trial_in_flight = false;
            return;
        }
        c.failures += 1;
        let reopen = c.state == CircuitState::HalfOpen;
        if reopen || c.failures >= self.failure_threshold {
            if c.state != CircuitState::Open {
                transition(CircuitState::Open);
            }
            c.state = CircuitState::Open;
            c.opened_at = Some(Instant::now());
            c.trial_in_flight = false;
        }
    }
}

fn transition(to: CircuitState) {
    let label = match to {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half-open",
    };
    metrics::counter!(metric_names::ENGINE_CIRCUIT_TRANSITIONS_TOTAL, "state" => label)
        .increment(1);
}

#[async_trait]
impl ExecutionStrategy for CircuitBreakerStrategy {
    async fn execute(&self, attempt: &dyn Attempt) -> Result<ExecutionResult> {
        self.admit()?;
        let r = match self.timeout {
            Some(t) => match tokio::time::timeout(t, attempt.run()).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout {
                    operation: "circuit breaker attempt".into(),
                    after: t,
                }),
            },
            None => attempt.run().await,
        };
        // Only failures of the plugin count; a caller's cancellation says nothing about it.
        match &r {
            Ok(_) => self.record(true),
            Err(e) if matches!(e.root(), Error::Canceled { .. }) || e.is_ignorable() => {
                let mut c = self.circuit.lock().expect("circuit lock");
                c.trial_in_flight = false;
            }
            Err(_) => self.record(false),
        }
        r
    }

    fn name(&self) -> &str {
        "circuit-breaker"
    }
}

/// Lets at most `requests_per_second` attempts start per second (a token bucket holding up
/// to `burst` tokens); attempts beyond that wait for their turn.
pub struct RateLimitStrategy {
    /// Sustained rate.
    pub requests_per_second: u32,
    /// Attempts that may start at once after a quiet period.
    pub burst: u32,
    bucket: tokio::sync::Mutex<(f64, Instant)>,
}

impl std::fmt::Debug for RateLimitStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitStrategy")
            .field("requests_per_second", &self.requests_per_second)
            .field("burst", &self.burst)
            .finish()
    }
}

impl RateLimitStrategy {
    /// A limiter with a full bucket.
    pub fn new(requests_per_second: u32, burst: u32) -> Self {
        let burst = burst.max(1);
        RateLimitStrategy {
            requests_per_second: requests_per_second.max(1),
            burst,
            bucket: tokio::sync::Mutex::new((burst as f64, Instant::now())),
        }
    }

    async fn take(&self) {
        // The lock is held while waiting, so waiters are served in order.
        let mut b = self.bucket.lock().await;
        let rate = self.requests_per_second as f64;
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(self.burst as f64);
        b.1 = now;
        if b.0 < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - b.0) / rate);
            tokio::time::sleep(wait).await;
            b.0 = 1.0;
            b.1 = Instant::now();
        }
        b.0 -= 1.0;
    }
}

#[async_trait]
impl ExecutionStrategy for RateLimitStrategy {
    async fn execute(&self, attempt: &dyn Attempt) -> Result<ExecutionResult> {
        self.take().await;
        attempt.run().await
    }

    fn name(&self) -> &str {
        "rate-limit"
    }
}
